//! One sandboxed run: starts bubblewrap with the isolation flags and rlimits, feeds stdin, reads
//! stdout and stderr up to a cap, and kills the whole process group on timeout or overflow.
//!
//! Isolation (all or nothing: a flag bubblewrap cannot honour fails the run, never weakens it):
//! new user, pid, network, ipc, uts and cgroup namespaces; no further user namespaces inside; a
//! read-only root holding only `read_only_paths`, four device nodes and a size-capped private
//! /tmp (no /proc); a new session; an empty environment; `--die-with-parent`; the syscall filter
//! of `seccomp.rs`; and a fresh, empty session keyring, joined just before bubblewrap starts
//! (keyrings are not namespaced, so without it every run would share the judge's). As root,
//! bubblewrap itself is started under an unprivileged uid, because root ignores RLIMIT_NPROC.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};

use super::seccomp::{compiled_filters, KEYCTL_JOIN_SESSION_KEYRING};
use super::{SandboxConfig, SandboxError};

/// The trusted Python prologue, run by the interpreter before the candidate's code.
const RUNNER: &str = include_str!("runner.py");

/// How long to wait for a killed sandbox to close its pipes and exit before giving up on it.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How long a run the judge no longer needs may take to end by itself before it is killed: the
/// solution's half of an assert-style job exits as soon as the tests close their channel.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// How a sandboxed run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunEnd {
    /// bubblewrap exited with this code: the interpreter's exit code, `128 + signal` when the
    /// interpreter was killed, or 1 when bubblewrap itself failed.
    Exited(i32),
    /// The wall-clock limit passed; the process group was killed.
    TimedOut,
    /// stdout or stderr went past the cap; the process group was killed.
    OutputOverflow,
    /// The judge asked the run to stop (its verdict no longer depended on it) and it did not end
    /// within `STOP_GRACE`; the process group was killed.
    Stopped,
}

/// What one sandboxed run produced.
#[derive(Debug, Clone)]
pub(crate) struct RunOutput {
    /// How the run ended.
    pub end: RunEnd,
    /// Captured stdout, at most `max_output_bytes`.
    pub stdout: Vec<u8>,
    /// Captured stderr, at most `max_output_bytes`.
    pub stderr: Vec<u8>,
}

/// A ready-to-use bubblewrap command line and the limits each run gets.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    /// Absolute path of bubblewrap.
    bwrap: PathBuf,
    /// Every argument of bubblewrap, the interpreter and the runner; the same for every run.
    args: Vec<OsString>,
    /// Host uid and gid to start bubblewrap under, when the judge runs as root.
    drop_to: Option<(u32, u32)>,
    /// The compiled syscall filters (`seccomp.rs`), handed to each run on fresh descriptors.
    filters: Vec<Vec<u8>>,
    /// The limits and caps of one run.
    config: SandboxConfig,
}

/// What `collect` gathered from one run's helper threads.
struct Collected {
    /// Set when the judge ended the run (timeout, overflow); `None` means "use the exit status".
    end: Option<RunEnd>,
    /// Captured stdout.
    stdout: Vec<u8>,
    /// Captured stderr.
    stderr: Vec<u8>,
}

/// Which pipe a reader thread drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// What the helper threads of one run report to it.
enum Event {
    /// A pipe reached end of file, or went over the cap (`overflowed`).
    Drained {
        stream: Stream,
        bytes: Vec<u8>,
        overflowed: bool,
    },
    /// bubblewrap exited; it is left unreaped so its pid, and so its process group, stay ours.
    Exited,
}

impl Sandbox {
    /// Builds the command line. `bwrap` must already be an absolute path.
    pub(crate) fn new(bwrap: PathBuf, config: &SandboxConfig) -> Result<Self, SandboxError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let running_as_root = unsafe { libc::geteuid() } == 0;
        let drop_to = running_as_root.then_some((config.unprivileged_uid, config.unprivileged_gid));
        if drop_to.is_some_and(|(uid, gid)| uid == 0 || gid == 0) {
            return Err(SandboxError::Config(
                "unprivileged_uid and unprivileged_gid must not be 0: root ignores RLIMIT_NPROC"
                    .into(),
            ));
        }
        let mut args: Vec<OsString> = [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--hostname",
            "r1-sandbox",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        for path in &config.read_only_paths {
            push_read_only(&mut args, path)?;
        }
        // No /proc: the interpreter does not need it, and without it there is no view of other
        // processes' fds or memory, and nothing that fails where a container forbids mounting it.
        for device in ["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"] {
            args.extend(["--dev-bind", device, device].map(OsString::from));
        }
        args.extend(
            [
                "--size",
                &config.tmp_bytes.to_string(),
                "--tmpfs",
                "/tmp",
                "--remount-ro",
                "/",
                "--chdir",
                "/tmp",
                "--die-with-parent",
                "--new-session",
                "--clearenv",
                "--setenv",
                "PATH",
                "/usr/bin:/bin",
                "--setenv",
                "HOME",
                "/tmp",
                "--setenv",
                "LANG",
                "C.UTF-8",
                "--",
            ]
            .map(OsString::from),
        );
        args.push(config.python.clone().into_os_string());
        args.extend(["-I", "-B", "-c", RUNNER].map(OsString::from));
        Ok(Self {
            bwrap,
            args,
            drop_to,
            filters: compiled_filters()?,
            config: config.clone(),
        })
    }

    /// The same sandbox without the syscall filter: only for the self-test, which must call
    /// keyctl inside to see that the session keyring is fresh. Never for candidate code.
    pub(crate) fn without_syscall_filter(&self) -> Self {
        Self {
            filters: Vec::new(),
            ..self.clone()
        }
    }

    /// Runs the runner once with `stdin` as its standard input, and waits for it to end.
    ///
    /// Errors mean the sandbox itself failed (could not start, or would not die); the caller
    /// scores them 0.
    pub(crate) fn run(&self, stdin: Vec<u8>) -> Result<RunOutput, SandboxError> {
        self.run_with(stdin, Vec::new(), None)
    }

    /// [`Sandbox::run`], also handing `pass_fds` to the sandboxed program at the same numbers
    /// (they are closed here once it started), and ending the run `STOP_GRACE` after `stop`
    /// receives or disconnects.
    pub(crate) fn run_with(
        &self,
        stdin: Vec<u8>,
        pass_fds: Vec<OwnedFd>,
        stop: Option<&Receiver<()>>,
    ) -> Result<RunOutput, SandboxError> {
        let spawned = self.spawn(&pass_fds);
        // The child holds its own copies now; the judge's must go, or the other end of a pipe
        // would never see end of file when the sandbox exits.
        drop(pass_fds);
        let mut child = spawned?;
        let pid = child.id();
        let (tx, rx) = channel::unbounded();
        let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(input), Some(stdout), Some(stderr)) = pipes else {
            kill_group(pid);
            reap(&mut child);
            return Err(SandboxError::Io {
                what: "taking the sandbox's pipes".into(),
                source: std::io::Error::other("a pipe was not created"),
            });
        };
        if let Err(error) = self.start_helpers(pid, stdin, input, stdout, stderr, tx) {
            kill_group(pid);
            reap(&mut child);
            return Err(error);
        }
        let collected = self.collect(pid, &rx, stop);
        // Whatever happened, nothing of this run outlives it: the group is killed while its
        // leader is still an unreaped zombie, so the pid cannot have been reused.
        kill_group(pid);
        let reaped = reap(&mut child);
        let Collected {
            end,
            stdout,
            stderr,
        } = collected?;
        let end = match (end, reaped) {
            (Some(end), _) => end,
            (None, Some(code)) => RunEnd::Exited(code),
            (None, None) => return Err(SandboxError::Unreaped),
        };
        Ok(RunOutput {
            end,
            stdout,
            stderr,
        })
    }

    fn spawn(&self, pass_fds: &[OwnedFd]) -> Result<Child, SandboxError> {
        let config = &self.config;
        let limits = [
            (libc::RLIMIT_CPU, config.cpu_seconds, config.cpu_seconds + 1),
            (libc::RLIMIT_AS, config.memory_bytes, config.memory_bytes),
            (
                libc::RLIMIT_FSIZE,
                config.max_file_bytes,
                config.max_file_bytes,
            ),
            (
                libc::RLIMIT_NOFILE,
                config.max_open_files,
                config.max_open_files,
            ),
            (libc::RLIMIT_CORE, 0, 0),
        ]
        // Lowered to the judge's own hard limits where those are lower: an unprivileged process
        // can only lower limits, and a lower limit is still a limit.
        .map(|(resource, soft, hard)| {
            let mut current = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `current` is a valid, writable rlimit.
            if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
                return (resource, soft, hard);
            }
            let hard = hard.min(current.rlim_max);
            (resource, soft.min(hard), hard)
        });
        // One descriptor per filter, read (and closed) by bubblewrap, which installs the filters
        // just before it executes the interpreter.
        let filter_fds = self
            .filters
            .iter()
            .map(|program| filter_fd(program))
            .collect::<Result<Vec<_>, _>>()?;
        let inherited: Vec<RawFd> = filter_fds
            .iter()
            .chain(pass_fds)
            .map(AsRawFd::as_raw_fd)
            .collect();
        let mut command = Command::new(&self.bwrap);
        for fd in &filter_fds {
            command
                .arg("--add-seccomp-fd")
                .arg(fd.as_raw_fd().to_string());
        }
        command
            .args(&self.args)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some((uid, gid)) = self.drop_to {
            command.uid(uid).gid(gid);
        }
        // SAFETY: the closure only makes async-signal-safe system calls (setrlimit, fcntl,
        // keyctl) on values computed before the fork, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                for (resource, soft, hard) in limits {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(resource, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for &fd in &inherited {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                join_fresh_session_keyring()
            });
        }
        let child = command.spawn().map_err(|source| SandboxError::Io {
            what: format!(
                "starting {} (limits, a fresh session keyring, the filters)",
                self.bwrap.display()
            ),
            source,
        });
        drop(filter_fds);
        child
    }

    fn start_helpers(
        &self,
        pid: u32,
        stdin: Vec<u8>,
        input: std::process::ChildStdin,
        stdout: ChildStdout,
        stderr: ChildStderr,
        tx: Sender<Event>,
    ) -> Result<(), SandboxError> {
        let cap = self.config.max_output_bytes;
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(body)
                .map(drop)
                .map_err(|source| SandboxError::Io {
                    what: format!("starting the {name} thread"),
                    source,
                })
        };
        // stdin is written from its own thread: a program that does not read its input must not
        // block the judge on a full pipe.
        spawn("sandbox-stdin", Box::new(move || feed(input, &stdin)))?;
        let out_tx = tx.clone();
        spawn(
            "sandbox-stdout",
            Box::new(move || drain(Stream::Stdout, stdout, cap, &out_tx)),
        )?;
        let err_tx = tx.clone();
        spawn(
            "sandbox-stderr",
            Box::new(move || drain(Stream::Stderr, stderr, cap, &err_tx)),
        )?;
        spawn(
            "sandbox-wait",
            Box::new(move || {
                wait_without_reaping(pid);
                let _ = tx.send(Event::Exited);
            }),
        )?;
        Ok(())
    }

    /// Collects the helpers' events until both pipes are drained and bubblewrap exited, killing
    /// the group on timeout, overflow or a stop that outlasted its grace. `None` as the end means
    /// "use the exit status".
    fn collect(
        &self,
        pid: u32,
        rx: &Receiver<Event>,
        stop: Option<&Receiver<()>>,
    ) -> Result<Collected, SandboxError> {
        let never = channel::never::<()>();
        let mut stop = stop.unwrap_or(&never);
        let mut stopping = false;
        let mut deadline = Instant::now() + self.config.wall_timeout;
        let mut end = None;
        let (mut stdout, mut stderr) = (None, None);
        let mut exited = false;
        while stdout.is_none() || stderr.is_none() || !exited {
            let event = crossbeam::select! {
                recv(rx) -> event => event.map_err(|_| RecvTimeoutError::Disconnected),
                recv(stop) -> _ => {
                    // Asked once (a message or the sender dropped); from now on only the grace.
                    stop = &never;
                    if end.is_none() {
                        stopping = true;
                        deadline = deadline.min(Instant::now() + STOP_GRACE);
                    }
                    continue;
                }
                default(deadline.saturating_duration_since(Instant::now())) => {
                    Err(RecvTimeoutError::Timeout)
                }
            };
            match event {
                Ok(Event::Drained {
                    stream,
                    bytes,
                    overflowed,
                }) => {
                    if overflowed && end.is_none() {
                        end = Some(RunEnd::OutputOverflow);
                        kill_group(pid);
                        deadline = Instant::now() + KILL_GRACE;
                    }
                    match stream {
                        Stream::Stdout => stdout = Some(bytes),
                        Stream::Stderr => stderr = Some(bytes),
                    }
                }
                Ok(Event::Exited) => exited = true,
                Err(RecvTimeoutError::Timeout) if end.is_none() => {
                    end = Some(if stopping {
                        RunEnd::Stopped
                    } else {
                        RunEnd::TimedOut
                    });
                    kill_group(pid);
                    deadline = Instant::now() + KILL_GRACE;
                }
                Err(_) => return Err(SandboxError::Unreaped),
            }
        }
        Ok(Collected {
            end,
            stdout: stdout.unwrap_or_default(),
            stderr: stderr.unwrap_or_default(),
        })
    }
}

/// A close-on-exec memory file holding one compiled filter, positioned at its start for
/// bubblewrap to read. Each run gets its own: the file offset is shared by every holder.
fn filter_fd(program: &[u8]) -> Result<OwnedFd, SandboxError> {
    let io = |source| SandboxError::Io {
        what: "writing the syscall filter to a memory file".into(),
        source,
    };
    // SAFETY: the name is a valid NUL-terminated string; the flags are plain integers.
    let fd = unsafe { libc::memfd_create(c"r1-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(program).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(file.into())
}

/// Replaces the calling process's session keyring with a new, empty, anonymous one, so that a
/// sandboxed program can neither read the judge's keys nor leave keys for a later run. Runs
/// between fork and exec. A kernel without keyrings (ENOSYS) has nothing to isolate.
fn join_fresh_session_keyring() -> std::io::Result<()> {
    // SAFETY: a NULL name asks for an anonymous keyring; no memory of ours is read or written.
    let joined = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if joined >= 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ENOSYS) {
        Ok(())
    } else {
        Err(error)
    }
}

/// Adds `path` to the sandbox read-only: a bind mount, or the same link for a symbolic link
/// (so /lib -> usr/lib stays a link into the already-bound /usr).
fn push_read_only(args: &mut Vec<OsString>, path: &Path) -> Result<(), SandboxError> {
    if !path.is_absolute() {
        return Err(SandboxError::Config(format!(
            "read_only_paths entry {} is not absolute",
            path.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = std::fs::read_link(path).map_err(|source| SandboxError::Io {
                what: format!("reading the link {}", path.display()),
                source,
            })?;
            args.extend([
                OsString::from("--symlink"),
                target.into_os_string(),
                path.as_os_str().to_owned(),
            ]);
        }
        Ok(_) => args.extend([
            OsString::from("--ro-bind"),
            path.as_os_str().to_owned(),
            path.as_os_str().to_owned(),
        ]),
        Err(_) => {}
    }
    Ok(())
}

/// Reads `pipe` to its end, keeping at most `cap` bytes; stops at the first byte over the cap so
/// that a flooding writer gets EPIPE instead of filling memory.
fn drain(stream: Stream, mut pipe: impl Read, cap: usize, tx: &Sender<Event>) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut overflowed = false;
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if bytes.len() + n > cap => {
                bytes.extend_from_slice(&chunk[..cap - bytes.len()]);
                overflowed = true;
                break;
            }
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = tx.send(Event::Drained {
        stream,
        bytes,
        overflowed,
    });
}

/// Blocks until process `pid` has exited, leaving it a zombie for `reap`.
fn wait_without_reaping(pid: libc::id_t) {
    loop {
        // SAFETY: siginfo_t is plain data that waitid fills; an all-zero value is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t; WNOWAIT leaves the child unreaped.
        let rc =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Sends SIGKILL to the process group led by `pid` (bubblewrap, and the pid-1 it forked, whose
/// death takes down everything in the sandbox's pid namespace).
fn kill_group(pid: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions; ESRCH (group already gone) is fine.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Reaps bubblewrap, giving up after `KILL_GRACE` (the process is then leaked, not waited on
/// forever). Returns its exit code, `128 + signal` when it was killed.
fn reap(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + KILL_GRACE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return status
                    .code()
                    .or_else(|| status.signal().map(|signal| 128 + signal))
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            _ => return None,
        }
    }
}

/// Writes `bytes` to the sandbox's stdin and closes it. Errors (the program exited without
/// reading its input) are expected and ignored.
fn feed(mut input: impl Write, bytes: &[u8]) {
    let _ = input.write_all(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_recreated_and_directories_bound_read_only() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("a directory");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("real", &link).expect("a link");
        let mut args = Vec::new();
        push_read_only(&mut args, &real).expect("a directory is accepted");
        push_read_only(&mut args, &link).expect("a link is accepted");
        push_read_only(&mut args, &dir.path().join("absent")).expect("absent paths are skipped");
        let expected: Vec<OsString> = vec![
            "--ro-bind".into(),
            real.clone().into_os_string(),
            real.into_os_string(),
            "--symlink".into(),
            "real".into(),
            link.into_os_string(),
        ];
        assert_eq!(args, expected);
        assert!(matches!(
            push_read_only(&mut args, Path::new("usr")),
            Err(SandboxError::Config(_))
        ));
    }

    #[test]
    fn root_never_runs_the_sandbox_as_root() {
        let config = SandboxConfig {
            unprivileged_uid: 0,
            ..SandboxConfig::for_tests()
        };
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        let result = Sandbox::new("/usr/bin/bwrap".into(), &config);
        assert_eq!(result.is_err(), as_root);
        let isolation = Sandbox::new("/usr/bin/bwrap".into(), &SandboxConfig::for_tests())
            .expect("the default configuration is valid");
        for flag in [
            "--unshare-net",
            "--unshare-pid",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--disable-userns",
        ] {
            assert!(isolation.args.iter().any(|arg| arg == flag), "{flag}");
        }
    }
}
