//! Limits and paths of the code sandbox: what a candidate program may use before it is stopped.

use std::path::PathBuf;
use std::time::Duration;

/// How the code judge runs candidate programs. Every limit applies to one sandboxed run (one test
/// case, or the assert-style tests), not to a whole job.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// The bubblewrap binary; a bare name is looked up in `PATH` once, when the judge starts.
    pub bwrap: PathBuf,
    /// The Python interpreter run inside the sandbox. It must live under one of
    /// `read_only_paths`, because nothing else of the host is visible in there (a pyenv shim
    /// under /root is not).
    pub python: PathBuf,
    /// Host directories and files the sandbox sees read-only, at the same path: what the
    /// interpreter needs to start, and nothing that holds secrets (not /root, /home, /work).
    /// Paths that do not exist are skipped; symbolic links are recreated as links.
    pub read_only_paths: Vec<PathBuf>,
    /// How many sandboxes may run at once: the judge's worker threads.
    pub workers: usize,
    /// Wall-clock limit of one run; past it the run's whole process group is killed.
    pub wall_timeout: Duration,
    /// CPU-time limit of each sandboxed process (RLIMIT_CPU), in seconds.
    pub cpu_seconds: u64,
    /// Address-space limit of each sandboxed process (RLIMIT_AS), in bytes.
    pub memory_bytes: u64,
    /// Processes and threads one sandbox may hold (RLIMIT_NPROC inside its user namespace); this
    /// is what keeps a fork bomb bounded.
    pub max_processes: u64,
    /// Open file descriptors per process (RLIMIT_NOFILE).
    pub max_open_files: u64,
    /// Largest file a process may write (RLIMIT_FSIZE), in bytes.
    pub max_file_bytes: u64,
    /// Size of the private /tmp, in bytes: the only writable place, bounded so that many small
    /// files cannot fill the host's memory.
    pub tmp_bytes: u64,
    /// Bytes read from each of stdout and stderr; one more byte kills the run as an overflow.
    /// Also the longest message between an assert-style job's solution and its tests: a longer
    /// result fails the job.
    pub max_output_bytes: usize,
    /// Longest candidate source accepted, in bytes; longer code scores 0 without running.
    pub max_source_bytes: usize,
    /// When the judge runs as root, the host uid and gid bubblewrap is started under. Root is
    /// exempt from RLIMIT_NPROC, so a sandbox started by root could fork without bound.
    pub unprivileged_uid: u32,
    /// See `unprivileged_uid`.
    pub unprivileged_gid: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            bwrap: PathBuf::from("bwrap"),
            python: PathBuf::from("/usr/bin/python3"),
            read_only_paths: [
                "/usr",
                "/bin",
                "/sbin",
                "/lib",
                "/lib64",
                "/lib32",
                "/etc/ld.so.cache",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            workers,
            wall_timeout: Duration::from_secs(10),
            cpu_seconds: 10,
            memory_bytes: 1 << 30,
            max_processes: 32,
            max_open_files: 64,
            max_file_bytes: 16 << 20,
            tmp_bytes: 64 << 20,
            max_output_bytes: 1 << 20,
            max_source_bytes: 256 << 10,
            unprivileged_uid: 65534,
            unprivileged_gid: 65534,
        }
    }
}

impl SandboxConfig {
    /// A small, fast configuration for tests: short timeouts, small limits, two workers.
    pub fn for_tests() -> Self {
        Self {
            workers: 2,
            wall_timeout: Duration::from_secs(2),
            cpu_seconds: 2,
            memory_bytes: 256 << 20,
            max_processes: 16,
            max_output_bytes: 64 << 10,
            tmp_bytes: 8 << 20,
            max_file_bytes: 1 << 20,
            ..Self::default()
        }
    }
}
