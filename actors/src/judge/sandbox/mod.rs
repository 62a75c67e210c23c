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
//! - **assert-style tests** (`tests`): Python run after the candidate's code, in the same
//!   namespace (so it can call the candidate's functions), in one more sandboxed run. A test
//!   fails by raising. The pass is proven by a per-run nonce: the judge draws 128 random bits,
//!   hands them to the trusted runner (`runner.py`) on stdin together with the tests, and the
//!   runner swaps stdin for /dev/null before any candidate code runs. The runner writes the nonce
//!   as the last line of stdout only after the solution and the tests ran to their end; the judge
//!   accepts exactly that nonce, with exit status 0. Exiting early (`exit(0)`, `os._exit(0)`,
//!   `SystemExit`), printing look-alike lines, killing the runner or its parent, closing or
//!   `dup2`-ing fds, monkeypatching builtins/os/sys, or tracing over asserts all leave the proof
//!   unwritten or the tests failing.
//!
//!   What this cannot stop: the tests share a process with the candidate, so a candidate written
//!   against this runner could dig the nonce or the tests' expected values out of interpreter
//!   memory (frames, ctypes), or return objects whose `__eq__` always says yes. Write assert tests with exact types
//!   (`assert type(r) is int and r == 3`) and prefer stdin/stdout cases where cheating matters.
//!
//! # Isolation
//! Every run is a fresh bubblewrap sandbox (see `bwrap.rs`): no network (own network namespace
//! with only a loopback nobody listens on), own pid, ipc, uts, user and cgroup namespaces, no
//! nested user namespaces, a read-only root holding only [`SandboxConfig::read_only_paths`]
//! (/usr and its links, the loader cache; never /root, /home, /work), no /proc, a size-capped
//! private /tmp, an empty environment, a new session, `--die-with-parent`. Limits: CPU time,
//! address space, open files, file size (rlimits), processes (RLIMIT_NPROC, counted per sandbox
//! because each has its own user namespace), stdout and stderr bytes, and a wall clock after
//! which the run's process group is SIGKILLed and reaped. Root ignores RLIMIT_NPROC, so a judge
//! running as root starts bubblewrap as [`SandboxConfig::unprivileged_uid`]. [`CodeJudge::new`]
//! runs a self-test of these properties and refuses to start when one is missing.
//!
//! A job scores 1.0 when every case and the tests pass, else 0.0 (rule rewards are binary, as in
//! DeepSeek-R1); cases run in order and the first failure ends the job. Any failure of the sandbox
//! itself scores 0 and is counted, never raised: see [`CodeJudge`] and [`JudgeCounts`].

mod bwrap;
mod config;
mod judging;
mod pool;

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
    /// Assert-style Python run after `source` in the same namespace; empty for none.
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
    /// The assert-style run exited without the runner's proof: the candidate left early.
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
    /// Checks the job holds: its cases, plus one when it has assert-style tests.
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
