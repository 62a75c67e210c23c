//! Code reward: runs candidate Python from model output against test cases inside bubblewrap,
//! and scores 1 only when the tests provably passed. Code from a model never runs in-process.
//!
//! # Two kinds of tests
//! A [`CodeJob`] holds the candidate's source and either or both of:
//! - **stdin/stdout cases** ([`TestCase`]): each case is one sandboxed run with the case's
//!   `input` on stdin. The judge, outside the sandbox, compares the program's stdout with
//!   `expected_output` after trimming trailing whitespace from every line and dropping trailing
//!   blank lines; the program must also exit with status 0. The expected output never enters the
//!   sandbox, so there is nothing to read or forge: the proof is the output itself.
//! - **assert-style tests** (`tests`): Python that calls the candidate's functions and fails by
//!   raising. The verdict is computed in a process where no candidate code ever ran: each job
//!   runs two sandboxes at once, joined by a request pipe and a reply pipe (dedicated fds, so
//!   whatever the candidate prints cannot corrupt them).
//!   - The *solution* sandbox runs the candidate's source as `__main__` (stdin is /dev/null),
//!     then the trusted prologue (`runner.py`, mode `serve`) names the top-level callables and
//!     answers each call `{"call", "args", "kwargs"}` with the result as plain data, or with the
//!     exception's type name and message.
//!   - The *tests* sandbox (mode `tests`) binds each named function to a proxy that sends the
//!     call and decodes the reply into fresh built-in objects, runs the tests, and writes a
//!     per-run nonce (128 random bits from the judge, on stdin, which is then swapped for
//!     /dev/null) as its last line only when the tests ran to their end and the channel never
//!     broke. The judge accepts exactly that nonce with exit status 0.
//!
//!   Plain data is None, bool, int, float (nan and infinities tagged), str, bytes, list, tuple,
//!   dict, set and frozenset, of exact built-in types (`type(x) is int`: a subclass with a
//!   forged `__eq__` is refused), nested at most 100 deep, one message at most
//!   [`SandboxConfig::max_output_bytes`]. So reading the nonce from frames or the heap, emptying
//!   the tests, swapping `sys.modules` entries, patching `json`, and objects equal to everything
//!   all fail: none of it reaches the tests' process. A solution that dies, hangs, overflows or
//!   sends a malformed reply fails the job, even when the tests catch every exception; when it
//!   left before serving, the job is `Unproven`, or names the solution's crash.
//!
//!   Not covered, by design: tests that need the candidate's own objects (`isinstance` against
//!   a candidate class, methods of a returned instance, iterators and generators, functions
//!   passed as arguments, arguments mutated in place: arguments are copies), candidate
//!   constants and the modules it imported (only callables cross: the tests import what they
//!   use), functions named like a builtin (never proxied, so `len` in the tests stays Python's),
//!   and exceptions other than built-in ones (they arrive as `SolutionError("Name: message")`,
//!   as does StopIteration, which would otherwise end a `map` over the solution early). Write
//!   such checks as stdin/stdout cases.
//!
//! # Isolation
//! Every run is a fresh bubblewrap sandbox (see `bwrap.rs`): no network (own network namespace
//! with only a loopback nobody listens on), own pid, ipc, uts, user and cgroup namespaces, no
//! nested user namespaces, a read-only root holding only [`SandboxConfig::read_only_paths`]
//! (/usr and its links, the loader cache; never /root, /home, /work), no /proc, a size-capped
//! private /tmp, an empty environment, a new session, `--die-with-parent`. Kernel keyrings are
//! not namespaced, so each run also gets a fresh, empty session keyring, and a seccomp filter
//! (see `seccomp.rs`) refuses keyctl/add_key/request_key, ptrace and cross-process memory
//! access, bpf, perf, userfaultfd, io_uring, mounts, unshare/setns and namespace flags on clone,
//! module and kexec loading, and x32 calls with EPERM, clone3 with ENOSYS (glibc falls back to
//! clone), and kills a process making i386 calls. Limits: CPU time,
//! address space, open files, file size (rlimits), processes (RLIMIT_NPROC, counted per sandbox
//! because each has its own user namespace), stdout and stderr bytes, and a wall clock after
//! which the run's process group is SIGKILLed and reaped. Root ignores RLIMIT_NPROC, so a judge
//! running as root starts bubblewrap as [`SandboxConfig::unprivileged_uid`]. [`CodeJudge::new`]
//! runs a self-test of these properties (the filter's representative denials and the fresh
//! keyring included) and refuses to start when one is missing.
//!
//! A job scores 1.0 when every case and the tests pass, else 0.0 (rule rewards are binary, as in
//! DeepSeek-R1); cases run in order and the first failure ends the job. Any failure of the sandbox
//! itself scores 0 and is counted, never raised: see [`CodeJudge`] and [`JudgeCounts`].

mod bwrap;
mod config;
mod judging;
mod pool;
mod seccomp;

use std::path::PathBuf;

pub use config::SandboxConfig;
pub use pool::{CodeJudge, JudgeCounts};

/// One stdin/stdout test: the program reads `input` and must print `expected_output`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TestCase {
    /// Fed to the program on stdin.
    pub input: String,
    /// What the program must print; compared line by line with trailing whitespace trimmed.
    pub expected_output: String,
}

/// A candidate program and the tests it must pass.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CodeJob {
    /// The candidate's Python source, as extracted from the model's answer.
    pub source: String,
    /// stdin/stdout cases, each run in its own sandbox.
    pub cases: Vec<TestCase>,
    /// Assert-style Python that calls the functions `source` defines (through the channel to
    /// the solution's sandbox, see the module docs); empty for none.
    pub tests: String,
}

impl CodeJob {
    /// Whether the job has assert-style tests (blank `tests` count as none).
    pub fn has_tests(&self) -> bool {
        !self.tests.trim().is_empty()
    }

    /// Sandboxed checks the job needs: one per case, plus one for the assert-style tests.
    pub fn checks_total(&self) -> usize {
        self.cases.len() + usize::from(self.has_tests())
    }
}

/// Why a job scored what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CodeOutcome {
    /// Every case and the tests passed; the only outcome that scores.
    Passed,
    /// A case's output differed from the expected output.
    WrongAnswer,
    /// The program or the tests raised, or the program exited with a non-zero status.
    RuntimeError,
    /// The assert-style run exited without the runner's proof: the solution left before it
    /// served its functions.
    Unproven,
    /// A run passed the wall-clock or the CPU-time limit.
    TimedOut,
    /// A run wrote more than `max_output_bytes` to stdout or stderr.
    OutputOverflow,
    /// The sandbox itself failed (could not start, or would not die); scored 0 all the same.
    SandboxError,
    /// The job was not run: no tests at all, or source over `max_source_bytes`.
    Rejected,
}

/// The judge's answer for one [`CodeJob`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CodeVerdict {
    /// 1.0 when `outcome` is `Passed`, else 0.0.
    pub reward: f32,
    /// Why.
    pub outcome: CodeOutcome,
    /// Checks (cases, then the assert-style tests as one) that passed before the first failure.
    pub checks_passed: usize,
    /// Checks the job holds: its cases, plus one when it has assert-style tests (two sandboxes,
    /// one check).
    pub checks_total: usize,
    /// A short human-readable reason for logs: which check failed and the tail of its stderr.
    pub detail: String,
}

impl CodeVerdict {
    /// A verdict scoring 0 that never reached (or never finished) a sandboxed run.
    pub(crate) fn zero(outcome: CodeOutcome, checks_total: usize, detail: String) -> Self {
        Self {
            reward: 0.0,
            outcome,
            checks_passed: 0,
            checks_total,
            detail,
        }
    }
}

/// Why the judge could not start, or why one sandboxed run failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// bubblewrap is not installed or not on `PATH`.
    #[error("bubblewrap not found ({searched}); install it with scripts/install-deps.sh or `apt-get install bubblewrap`")]
    BwrapNotFound {
        /// What was looked for, and where.
        searched: String,
    },
    /// The configured interpreter is missing or would not be visible inside the sandbox.
    #[error("python interpreter {path} cannot be used in the sandbox: {reason}")]
    PythonUnusable {
        /// The configured `python`.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The startup self-test found an isolation property missing; the judge refuses to run code
    /// rather than run it less isolated.
    #[error("sandbox isolation unavailable on this machine ({failed}); refusing to run code unsandboxed. {hint}")]
    IsolationUnavailable {
        /// Which checks failed, or bubblewrap's own error.
        failed: String,
        /// What usually fixes it.
        hint: String,
    },
    /// A configuration value makes sandboxing impossible.
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
    /// An operating-system call around the sandbox failed.
    #[error("{what}: {source}")]
    Io {
        /// What the judge was doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A killed sandbox did not close its pipes or exit within the grace period.
    #[error("a killed sandbox did not exit within the grace period")]
    Unreaped,
}
