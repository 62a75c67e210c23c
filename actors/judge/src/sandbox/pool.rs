//! The code judge: a fixed pool of worker threads, each running one sandbox at a time, fed by a
//! crossbeam channel. The pool size is the concurrency limit; jobs queue behind it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{self, Receiver, Sender};

use super::bwrap::{RunEnd, RunOutput, Sandbox};
use super::judging::{judge_job, RunnerInput, RunnerMode};
use super::seccomp::session_keyring;
use super::{CodeJob, CodeOutcome, CodeVerdict, SandboxConfig, SandboxError};

/// The self-test every judge runs before accepting jobs: each check names an isolation property
/// that, when missing, is printed; a fully isolated sandbox prints only the marker and "ok".
/// `{syscalls}` is replaced by [`syscall_checks`].
const PROBE: &str = r#"
import ctypes, errno, os, socket
missing = []
try:
    open("/usr/r1-probe", "w")
    missing.append("read-only-root")
except OSError:
    pass
if [name for _, name in socket.if_nameindex()] != ["lo"]:
    missing.append("network-namespace")
if any(os.path.exists(p) for p in ("/root", "/home", "/work")):
    missing.append("host-directories-hidden")
if os.getuid() == 0:
    missing.append("unprivileged-uid")
forked = 0
try:
    for _ in range(8):
        if os.fork() == 0:
            os._exit(0)
        forked += 1
except OSError:
    pass
if forked >= 8:
    missing.append("process-limit")
libc = ctypes.CDLL(None, use_errno=True)
def fails_with(code, number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(arg) for arg in args])
    return result == -1 and ctypes.get_errno() == code
if not all([{syscalls}]):
    missing.append("syscall-filter")
print("R1-PROBE", " ".join(missing) or "ok")
"#;

/// The keyring half of the self-test, run without the syscall filter (which would refuse the
/// keyctl it needs): the sandbox's session keyring must be a new, empty one, never the judge's
/// (`{judge}`, -1 when it has none). Keyrings the kernel refuses outright are unreachable: ok.
const KEYRING_PROBE: &str = r#"
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def keyctl(*args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long({keyctl}), *[ctypes.c_long(arg) for arg in args])
    return result, ctypes.get_errno()
serial, error = keyctl(0, -3, 0)
if serial == -1:
    print("R1-KEYRING", "ok" if error in (errno.ENOSYS, errno.EPERM) else "error-%d" % error)
elif serial == {judge}:
    print("R1-KEYRING", "shared-session-keyring")
else:
    size, error = keyctl(11, serial, 0, 0)
    print("R1-KEYRING", "ok" if size == 0 else "non-empty-session-keyring")
"#;

/// Python expressions, each true when one representative of the syscall filter's rules is in
/// force: denied with EPERM (keyctl, userfaultfd, unshare, an x32 call) and clone3 with ENOSYS.
/// Each call is harmless when the filter is missing.
fn syscall_checks() -> String {
    let mut checks = vec![
        format!("fails_with(errno.EPERM, {}, 0, -3, 0)", libc::SYS_keyctl),
        // UFFD_USER_MODE_ONLY: an unprivileged userfaultfd. Not ptrace: PTRACE_TRACEME would
        // stop an unfiltered probe at its next signal instead of reporting the filter missing.
        format!("fails_with(errno.EPERM, {}, 1)", libc::SYS_userfaultfd),
        format!(
            "fails_with(errno.EPERM, {}, {})",
            libc::SYS_unshare,
            libc::CLONE_NEWUSER
        ),
        format!("fails_with(errno.ENOSYS, {}, 0, 0)", libc::SYS_clone3),
    ];
    #[cfg(target_arch = "x86_64")]
    checks.push(format!(
        "fails_with(errno.EPERM, {})",
        super::seccomp::X32_SYSCALL_BIT + libc::SYS_getpid
    ));
    checks.join(", ")
}

/// Process limit the self-test runs under; it tries to fork twice as many children.
const PROBE_PROCESSES: u64 = 4;

/// Judges candidate programs in bubblewrap, at most `workers` at a time.
///
/// Never panics and never returns an error for a job: whatever goes wrong scores 0 and is
/// counted in [`JudgeCounts`]. Dropping the judge finishes the queued jobs and joins the workers.
pub struct CodeJudge {
    /// The worker threads' shared state.
    shared: Arc<Shared>,
    /// Where jobs are queued; `None` only while dropping, so the workers see the end.
    queue: Option<Sender<Work>>,
    /// Joined on drop: the graceful end of the pool.
    workers: Vec<JoinHandle<()>>,
}

/// What the workers share.
struct Shared {
    /// The command line and limits of every run.
    sandbox: Sandbox,
    /// The configuration the judge was built with.
    config: SandboxConfig,
    /// Running totals, read by [`CodeJudge::counts`].
    counters: Counters,
}

/// A queued job and where its verdict goes.
type Work = (CodeJob, Sender<CodeVerdict>);

/// Totals since the judge started, for metrics and alerts: a rising `sandbox_errors` means the
/// machine, not the model, is failing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JudgeCounts {
    /// Jobs judged.
    pub runs: u64,
    /// Jobs that passed (reward 1).
    pub passes: u64,
    /// Jobs whose output differed from the expected output.
    pub wrong_answers: u64,
    /// Jobs whose program or tests raised or exited non-zero.
    pub runtime_errors: u64,
    /// Jobs that exited before the assert-style tests finished.
    pub unproven: u64,
    /// Jobs stopped by the wall-clock or CPU limit.
    pub timeouts: u64,
    /// Jobs stopped for writing too much output.
    pub output_overflows: u64,
    /// Jobs scored 0 because the sandbox itself failed.
    pub sandbox_errors: u64,
    /// Jobs refused without running (no tests, source too long).
    pub rejected: u64,
}

/// The atomic twin of [`JudgeCounts`], updated by the workers.
#[derive(Debug, Default)]
struct Counters {
    runs: AtomicU64,
    passes: AtomicU64,
    wrong_answers: AtomicU64,
    runtime_errors: AtomicU64,
    unproven: AtomicU64,
    timeouts: AtomicU64,
    output_overflows: AtomicU64,
    sandbox_errors: AtomicU64,
    rejected: AtomicU64,
}

impl Counters {
    fn record(&self, outcome: CodeOutcome) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            CodeOutcome::Passed => &self.passes,
            CodeOutcome::WrongAnswer => &self.wrong_answers,
            CodeOutcome::RuntimeError => &self.runtime_errors,
            CodeOutcome::Unproven => &self.unproven,
            CodeOutcome::TimedOut => &self.timeouts,
            CodeOutcome::OutputOverflow => &self.output_overflows,
            CodeOutcome::SandboxError => &self.sandbox_errors,
            CodeOutcome::Rejected => &self.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> JudgeCounts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        JudgeCounts {
            runs: read(&self.runs),
            passes: read(&self.passes),
            wrong_answers: read(&self.wrong_answers),
            runtime_errors: read(&self.runtime_errors),
            unproven: read(&self.unproven),
            timeouts: read(&self.timeouts),
            output_overflows: read(&self.output_overflows),
            sandbox_errors: read(&self.sandbox_errors),
            rejected: read(&self.rejected),
        }
    }
}

impl CodeJudge {
    /// Finds bubblewrap and the interpreter, runs the isolation self-test, and starts the
    /// workers. Fails, rather than run code less isolated, when any of that does not work.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        if config.workers == 0 {
            return Err(SandboxError::Config("workers must be at least 1".into()));
        }
        let bwrap = find_program(&config.bwrap)?;
        check_python(&config)?;
        let sandbox = Sandbox::new(bwrap, &config)?;
        self_test(&sandbox, &config)?;
        let shared = Arc::new(Shared {
            sandbox,
            config,
            counters: Counters::default(),
        });
        let (queue, jobs) = channel::unbounded::<Work>();
        let mut workers = Vec::with_capacity(shared.config.workers);
        for index in 0..shared.config.workers {
            let (shared, jobs) = (Arc::clone(&shared), jobs.clone());
            let worker = std::thread::Builder::new()
                .name(format!("code-judge-{index}"))
                .spawn(move || work(&shared, &jobs))
                .map_err(|source| SandboxError::Io {
                    what: format!("starting code judge worker {index}"),
                    source,
                })?;
            workers.push(worker);
        }
        tracing::info!(
            workers = shared.config.workers,
            "code judge ready: bubblewrap self-test passed"
        );
        Ok(Self {
            shared,
            queue: Some(queue),
            workers,
        })
    }

    /// Queues `job` and returns where its verdict will arrive; many submissions run
    /// concurrently, up to the worker count.
    pub fn submit(&self, job: CodeJob) -> Receiver<CodeVerdict> {
        let (reply, verdict) = channel::bounded(1);
        let checks_total = job.checks_total();
        let queued = self
            .queue
            .as_ref()
            .is_some_and(|queue| queue.send((job, reply.clone())).is_ok());
        if !queued {
            self.shared.counters.record(CodeOutcome::SandboxError);
            let _ = reply.send(CodeVerdict::zero(
                CodeOutcome::SandboxError,
                checks_total,
                "the judge's workers are gone".into(),
            ));
        }
        verdict
    }

    /// Judges `job` and waits for the verdict.
    pub fn run(&self, job: CodeJob) -> CodeVerdict {
        let checks_total = job.checks_total();
        self.submit(job).recv().unwrap_or_else(|_| {
            self.shared.counters.record(CodeOutcome::SandboxError);
            CodeVerdict::zero(
                CodeOutcome::SandboxError,
                checks_total,
                "a judge worker dropped the job".into(),
            )
        })
    }

    /// Judges all `jobs` concurrently and returns their verdicts in the same order.
    pub fn run_many(&self, jobs: Vec<CodeJob>) -> Vec<CodeVerdict> {
        let pending: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let checks_total = job.checks_total();
                (checks_total, self.submit(job))
            })
            .collect();
        pending
            .into_iter()
            .map(|(checks_total, verdict)| {
                verdict.recv().unwrap_or_else(|_| {
                    self.shared.counters.record(CodeOutcome::SandboxError);
                    CodeVerdict::zero(
                        CodeOutcome::SandboxError,
                        checks_total,
                        "a judge worker dropped the job".into(),
                    )
                })
            })
            .collect()
    }

    /// Totals since the judge started.
    pub fn counts(&self) -> JudgeCounts {
        self.shared.counters.snapshot()
    }

    /// The configuration the judge runs with.
    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }
}

impl Drop for CodeJudge {
    fn drop(&mut self) {
        self.queue = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// A worker: judges queued jobs one at a time until the queue closes.
fn work(shared: &Shared, jobs: &Receiver<Work>) {
    for (job, reply) in jobs {
        let verdict = catch_unwind(AssertUnwindSafe(|| {
            judge_job(&shared.sandbox, &shared.config, &job)
        }))
        .unwrap_or_else(|_| {
            CodeVerdict::zero(
                CodeOutcome::SandboxError,
                job.checks_total(),
                "the judge panicked on this job".into(),
            )
        });
        shared.counters.record(verdict.outcome);
        if verdict.outcome == CodeOutcome::SandboxError {
            tracing::warn!(detail = %verdict.detail, "code sandbox failed; scored 0");
        }
        let _ = reply.send(verdict);
    }
}

/// Resolves `program` to an absolute path: as given when it has a slash, else through `PATH`.
fn find_program(program: &Path) -> Result<PathBuf, SandboxError> {
    let is_executable = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return if is_executable(program) {
            Ok(program.to_path_buf())
        } else {
            Err(SandboxError::BwrapNotFound {
                searched: program.display().to_string(),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_absolute() && is_executable(candidate))
        .ok_or_else(|| SandboxError::BwrapNotFound {
            searched: format!("{} in PATH={}", program.display(), path.to_string_lossy()),
        })
}

/// Checks that the interpreter exists and lies under a read-only path, the only places the
/// sandbox can see.
fn check_python(config: &SandboxConfig) -> Result<(), SandboxError> {
    let unusable = |reason: String| SandboxError::PythonUnusable {
        path: config.python.clone(),
        reason,
    };
    if !config.python.is_absolute() {
        return Err(unusable("the path must be absolute".into()));
    }
    let real = config
        .python
        .canonicalize()
        .map_err(|error| unusable(format!("not found: {error}")))?;
    // Both the path as configured and what it resolves to must be inside: the sandbox
    // recreates links like /bin -> usr/bin, so each hop must land on something bound.
    let roots = &config.read_only_paths;
    let visible = roots.iter().any(|root| config.python.starts_with(root))
        && roots
            .iter()
            .filter_map(|root| root.canonicalize().ok())
            .any(|root| real.starts_with(root));
    if visible {
        Ok(())
    } else {
        Err(unusable(format!(
            "it resolves to {}, outside read_only_paths {:?} (install Debian's python3: scripts/install-deps.sh)",
            real.display(),
            config.read_only_paths
        )))
    }
}

/// Runs `PROBE` and `KEYRING_PROBE` in sandboxes and fails unless every isolation property holds.
fn self_test(sandbox: &Sandbox, config: &SandboxConfig) -> Result<(), SandboxError> {
    let unavailable = |failed: String| SandboxError::IsolationUnavailable {
        failed,
        hint:
            "bubblewrap needs unprivileged user namespaces (sysctl user.max_user_namespaces > 0, \
               kernel.unprivileged_userns_clone=1 where it exists, \
               kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu); scripts/install-deps.sh \
               checks and fixes these. As root, bubblewrap runs as unprivileged_uid/gid \
               (default 65534), which must be mapped in the judge's own user namespace"
                .into(),
    };
    let probe = |sandbox: &Sandbox, source: &str| {
        let input = RunnerInput {
            max_processes: PROBE_PROCESSES,
            ..RunnerInput::new(RunnerMode::Run, config, source)
        };
        sandbox
            .run(input.bytes())
            .map_err(|error| unavailable(format!("the self-test sandbox did not run: {error}")))
    };
    let isolation = probe(sandbox, &PROBE.replace("{syscalls}", &syscall_checks()))?;
    probe_report(&isolation, "R1-PROBE").map_err(unavailable)?;
    let judge_keyring = session_keyring().unwrap_or(-1);
    let keyring = KEYRING_PROBE
        .replace("{keyctl}", &libc::SYS_keyctl.to_string())
        .replace("{judge}", &judge_keyring.to_string());
    let keyring = probe(&sandbox.without_syscall_filter(), &keyring)?;
    probe_report(&keyring, "R1-KEYRING").map_err(unavailable)
}

/// Ok when a probe printed `MARKER ok`, else what it reported missing, or how it ended.
fn probe_report(output: &RunOutput, marker: &str) -> Result<(), String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = stdout.trim().strip_prefix(marker).map(str::trim);
    match (output.end, report) {
        (RunEnd::Exited(0), Some("ok")) => Ok(()),
        (RunEnd::Exited(0), Some(missing)) => Err(format!("missing: {missing}")),
        (end, _) => Err(format!(
            "the self-test run ended with {end:?}: {} {}",
            stdout.trim(),
            stderr.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Writes an executable stand-in for bubblewrap into a directory every uid can enter (the
    /// judge starts it as an unprivileged uid when the tests run as root).
    fn fake_bwrap(dir: &tempfile::TempDir, script: &str) -> PathBuf {
        let path = dir.path().join("bwrap");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("the fake bwrap");
        for (target, mode) in [(dir.path(), 0o755), (path.as_path(), 0o755)] {
            std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
                .expect("permissions of the fake bwrap");
        }
        path
    }

    fn have_system_python() -> bool {
        Path::new("/usr/bin/python3").exists()
    }

    #[test]
    fn bubblewrap_refusing_namespaces_is_a_startup_error() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = SandboxConfig {
            bwrap: fake_bwrap(
                &dir,
                "echo 'bwrap: No permissions to create new namespace' >&2; exit 1",
            ),
            ..SandboxConfig::for_tests()
        };
        match CodeJudge::new(config) {
            Err(SandboxError::IsolationUnavailable { failed, .. }) => {
                assert!(failed.contains("No permissions"), "{failed}")
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("a judge started without namespaces"),
        }
    }

    #[test]
    fn a_bubblewrap_that_ignores_its_flags_is_caught_by_the_self_test() {
        if !have_system_python() {
            eprintln!("SKIPPED: /usr/bin/python3 is not installed; run scripts/install-deps.sh");
            return;
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        // Runs the interpreter on the host, skipping every isolation flag.
        let unsandboxed = "while [ \"$1\" != -- ]; do shift; done; shift; exec \"$@\"";
        let config = SandboxConfig {
            bwrap: fake_bwrap(&dir, unsandboxed),
            ..SandboxConfig::for_tests()
        };
        match CodeJudge::new(config) {
            Err(SandboxError::IsolationUnavailable { failed, .. }) => {
                assert!(failed.contains("missing:"), "{failed}");
                assert!(failed.contains("host-directories-hidden"), "{failed}");
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("a judge started on an unisolated sandbox"),
        }
    }

    #[test]
    fn a_bubblewrap_that_drops_the_syscall_filter_is_caught_by_the_self_test() {
        let Ok(real) = find_program(Path::new("bwrap")) else {
            eprintln!("SKIPPED: bubblewrap is not installed; run scripts/install-deps.sh");
            return;
        };
        if !have_system_python() {
            eprintln!("SKIPPED: /usr/bin/python3 is not installed; run scripts/install-deps.sh");
            return;
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        // Every other flag reaches the real bubblewrap; only the filters are left out.
        let unfiltered = format!(
            "skip=0\nfor arg; do\n  shift\n  if [ $skip = 1 ]; then skip=0; continue; fi\n  \
             if [ \"$arg\" = --add-seccomp-fd ]; then skip=1; continue; fi\n  \
             set -- \"$@\" \"$arg\"\ndone\nexec {} \"$@\"",
            real.display()
        );
        let config = SandboxConfig {
            bwrap: fake_bwrap(&dir, &unfiltered),
            ..SandboxConfig::for_tests()
        };
        match CodeJudge::new(config) {
            Err(SandboxError::IsolationUnavailable { failed, .. }) => {
                assert!(failed.contains("syscall-filter"), "{failed}");
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("a judge started without its syscall filter"),
        }
    }

    #[test]
    fn probe_reports_are_read_strictly() {
        let run = |end, stdout: &str| RunOutput {
            end,
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"bwrap: oops".to_vec(),
        };
        assert_eq!(
            probe_report(&run(RunEnd::Exited(0), "R1-KEYRING ok\n"), "R1-KEYRING"),
            Ok(())
        );
        let shared = probe_report(
            &run(RunEnd::Exited(0), "R1-KEYRING shared-session-keyring"),
            "R1-KEYRING",
        );
        assert_eq!(shared, Err("missing: shared-session-keyring".into()));
        let crashed = probe_report(&run(RunEnd::Exited(1), "R1-KEYRING ok"), "R1-KEYRING");
        assert!(crashed.is_err_and(|why| why.contains("oops")));
        assert!(probe_report(&run(RunEnd::Exited(0), ""), "R1-PROBE").is_err());
    }

    #[test]
    fn configuration_errors_are_named() {
        let no_workers = SandboxConfig {
            workers: 0,
            ..SandboxConfig::for_tests()
        };
        assert!(matches!(
            CodeJudge::new(no_workers),
            Err(SandboxError::Config(_))
        ));
        let relative_python = SandboxConfig {
            python: "python3".into(),
            bwrap: "/bin/sh".into(),
            ..SandboxConfig::for_tests()
        };
        assert!(matches!(
            CodeJudge::new(relative_python),
            Err(SandboxError::PythonUnusable { .. })
        ));
        assert!(matches!(
            find_program(Path::new("r1-no-such-program")),
            Err(SandboxError::BwrapNotFound { .. })
        ));
    }

    #[test]
    fn counters_count_each_outcome_once() {
        let counters = Counters::default();
        for outcome in [
            CodeOutcome::Passed,
            CodeOutcome::TimedOut,
            CodeOutcome::TimedOut,
            CodeOutcome::SandboxError,
        ] {
            counters.record(outcome);
        }
        let counts = counters.snapshot();
        assert_eq!(counts.runs, 4);
        assert_eq!(counts.passes, 1);
        assert_eq!(counts.timeouts, 2);
        assert_eq!(counts.sandbox_errors, 1);
        assert_eq!(counts.output_overflows, 0);
    }
}
