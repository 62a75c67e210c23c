//! Turns a job into sandboxed runs and their results into a verdict: the stdin wire format of
//! `runner.py`, output comparison, and assert-style tests as two sandboxes (the candidate's
//! functions in one, the tests and the nonce proof in the other) joined by two pipes.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crossbeam::channel;

use super::bwrap::{RunEnd, RunOutput, Sandbox};
use super::{CodeJob, CodeOutcome, CodeVerdict, SandboxConfig, SandboxError};

/// `128 + SIGXCPU`: bubblewrap's exit code when the interpreter hit RLIMIT_CPU.
const EXIT_CPU_LIMIT: i32 = 128 + libc::SIGXCPU;

/// The outcome of one check (one sandboxed run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckResult {
    /// The check passed.
    Pass,
    /// The check failed, with why and a detail for logs.
    Fail(CodeOutcome, String),
}

/// Judges `job`: each case, then the assert-style tests, stopping at the first failure.
pub(crate) fn judge_job(sandbox: &Sandbox, config: &SandboxConfig, job: &CodeJob) -> CodeVerdict {
    let has_tests = job.has_tests();
    let checks_total = job.checks_total();
    if checks_total == 0 {
        return CodeVerdict::zero(
            CodeOutcome::Rejected,
            0,
            "the job has no test cases and no tests: nothing proves it correct".into(),
        );
    }
    if job.source.len() > config.max_source_bytes {
        return CodeVerdict::zero(
            CodeOutcome::Rejected,
            checks_total,
            format!(
                "source is {} bytes, over the {}-byte limit",
                job.source.len(),
                config.max_source_bytes
            ),
        );
    }
    let mut checks_passed = 0;
    for (index, case) in job.cases.iter().enumerate() {
        let stdin = RunnerInput {
            input: &case.input,
            ..RunnerInput::new(RunnerMode::Run, config, &job.source)
        }
        .bytes();
        let result = sandbox
            .run(stdin)
            .map(|output| check_case(&output, &case.expected_output));
        if let Some(verdict) = failed(
            result,
            checks_passed,
            checks_total,
            &format!("case {index}"),
        ) {
            return verdict;
        }
        checks_passed += 1;
    }
    if has_tests {
        let result = run_tests(sandbox, config, job);
        if let Some(verdict) = failed(result, checks_passed, checks_total, "tests") {
            return verdict;
        }
        checks_passed += 1;
    }
    CodeVerdict {
        reward: 1.0,
        outcome: CodeOutcome::Passed,
        checks_passed,
        checks_total,
        detail: String::new(),
    }
}

/// The verdict for a failed check, or `None` when it passed.
fn failed(
    result: Result<CheckResult, SandboxError>,
    checks_passed: usize,
    checks_total: usize,
    check: &str,
) -> Option<CodeVerdict> {
    let (outcome, detail) = match result {
        Ok(CheckResult::Pass) => return None,
        Ok(CheckResult::Fail(outcome, detail)) => (outcome, detail),
        Err(error) => (CodeOutcome::SandboxError, error.to_string()),
    };
    Some(CodeVerdict {
        reward: 0.0,
        outcome,
        checks_passed,
        checks_total,
        detail: format!("{check}: {detail}"),
    })
}

/// Runs the assert-style tests: the candidate's source in one sandbox serving calls to its
/// functions, the tests in another where no candidate code ever runs, the two joined by a
/// request pipe and a reply pipe. The verdict is the tests' run (nonce proof and all); the
/// solution's run only explains a failure (it crashed, overflowed, ran out of time).
fn run_tests(
    sandbox: &Sandbox,
    config: &SandboxConfig,
    job: &CodeJob,
) -> Result<CheckResult, SandboxError> {
    let pipe = || {
        std::io::pipe()
            .map(|(read, write)| (OwnedFd::from(read), OwnedFd::from(write)))
            .map_err(|source| SandboxError::Io {
                what: "creating the pipes between the solution and the tests".into(),
                source,
            })
    };
    let (requests_read, requests_write) = pipe()?;
    let (replies_read, replies_write) = pipe()?;
    let nonce = format!("{:032x}", rand::random::<u128>());
    let solution_stdin = RunnerInput {
        channel: Some((requests_read.as_raw_fd(), replies_write.as_raw_fd())),
        ..RunnerInput::new(RunnerMode::Serve, config, &job.source)
    }
    .bytes();
    let tests_stdin = RunnerInput {
        channel: Some((replies_read.as_raw_fd(), requests_write.as_raw_fd())),
        token: &nonce,
        ..RunnerInput::new(RunnerMode::Tests, config, &job.tests)
    }
    .bytes();
    // Dropped when the tests ended: the solution then gets a short grace to exit by itself.
    let (stop_solution, solution_stop) = channel::bounded::<()>(0);
    std::thread::scope(|scope| {
        let solution = std::thread::Builder::new()
            .name("sandbox-solution".into())
            .spawn_scoped(scope, move || {
                let channel = vec![requests_read, replies_write];
                sandbox.run_with(solution_stdin, channel, Some(&solution_stop))
            })
            .map_err(|source| SandboxError::Io {
                what: "starting the solution's thread".into(),
                source,
            })?;
        let tests = sandbox.run_with(tests_stdin, vec![replies_read, requests_write], None);
        drop(stop_solution);
        let solution = solution.join().unwrap_or(Err(SandboxError::Unreaped));
        tests_verdict(&tests?, solution, &nonce)
    })
}

/// The verdict of an assert-style job from its two runs: the tests' proof decides a pass; a
/// failure is explained by the tests' own limits first, then by how the solution ended.
fn tests_verdict(
    tests: &RunOutput,
    solution: Result<RunOutput, SandboxError>,
    nonce: &str,
) -> Result<CheckResult, SandboxError> {
    let (outcome, detail) = match check_tests(tests, nonce) {
        CheckResult::Pass => return Ok(CheckResult::Pass),
        CheckResult::Fail(outcome, detail) => (outcome, detail),
    };
    if matches!(
        outcome,
        CodeOutcome::TimedOut | CodeOutcome::OutputOverflow | CodeOutcome::SandboxError
    ) {
        return Ok(CheckResult::Fail(outcome, detail));
    }
    let solution = solution?;
    match abnormal_end(&solution) {
        Some(CheckResult::Fail(why, solution_detail)) if solution.end != RunEnd::Stopped => Ok(
            CheckResult::Fail(why, format!("the solution: {solution_detail}")),
        ),
        _ => Ok(CheckResult::Fail(outcome, detail)),
    }
}

/// What `runner.py` does with its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunnerMode {
    /// A stdin/stdout case: the payload is the source, run as `__main__` on the case's input.
    Run,
    /// The candidate's half of assert-style tests: run the source, then answer calls.
    Serve,
    /// The verdict's half: run the tests (the payload) against proxies of the served functions.
    Tests,
}

/// The runner's stdin: one header line, the payload, then (run mode) the program's own input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunnerInput<'a> {
    /// What the runner does.
    pub mode: RunnerMode,
    /// RLIMIT_NPROC the runner sets inside the sandbox's user namespace.
    pub max_processes: u64,
    /// The call channel's descriptors (read, write) in serve and tests modes.
    pub channel: Option<(RawFd, RawFd)>,
    /// Longest message on the channel, in bytes; a longer one breaks it.
    pub max_message: usize,
    /// The proof token the tests' runner prints when they ran to their end; "-" elsewhere.
    pub token: &'a str,
    /// The source (run, serve) or the tests (tests).
    pub payload: &'a str,
    /// The case's input, after the payload on the same stdin (run mode).
    pub input: &'a str,
}

impl<'a> RunnerInput<'a> {
    /// `payload` in `mode` with the limits of `config`, no channel, token or input.
    pub(crate) fn new(mode: RunnerMode, config: &SandboxConfig, payload: &'a str) -> Self {
        Self {
            mode,
            max_processes: config.max_processes,
            channel: None,
            max_message: config.max_output_bytes,
            token: "-",
            payload,
            input: "",
        }
    }

    /// The bytes written to the runner's stdin.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mode = match self.mode {
            RunnerMode::Run => "run",
            RunnerMode::Serve => "serve",
            RunnerMode::Tests => "tests",
        };
        let (read, write) = self.channel.unwrap_or((-1, -1));
        let header = format!(
            "R1 {mode} {} {read} {write} {} {} {}\n",
            self.max_processes,
            self.max_message,
            self.token,
            self.payload.len()
        );
        [
            header.as_bytes(),
            self.payload.as_bytes(),
            self.input.as_bytes(),
        ]
        .concat()
    }
}

/// Judges one stdin/stdout case from its run.
pub(crate) fn check_case(output: &RunOutput, expected: &str) -> CheckResult {
    if let Some(failure) = abnormal_end(output) {
        return failure;
    }
    let actual = String::from_utf8_lossy(&output.stdout);
    if normalize(&actual) == normalize(expected) {
        CheckResult::Pass
    } else {
        CheckResult::Fail(
            CodeOutcome::WrongAnswer,
            format!("expected {:?}, got {:?}", tail(expected), tail(&actual)),
        )
    }
}

/// Judges the assert-style run: it passed only if it printed exactly `nonce` as its last line.
pub(crate) fn check_tests(output: &RunOutput, nonce: &str) -> CheckResult {
    if let Some(failure) = abnormal_end(output) {
        return failure;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last_line = stdout
        .lines()
        .map(str::trim_end)
        .rfind(|line| !line.is_empty());
    if last_line == Some(nonce) {
        CheckResult::Pass
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        CheckResult::Fail(
            CodeOutcome::Unproven,
            format!(
                "exited with status 0 before the tests ran to their end: {}",
                tail(&stderr)
            ),
        )
    }
}

/// A failure for every way a run can end other than exit status 0.
fn abnormal_end(output: &RunOutput) -> Option<CheckResult> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (outcome, detail) = match output.end {
        RunEnd::Exited(0) => return None,
        RunEnd::TimedOut => (CodeOutcome::TimedOut, "wall-clock limit".to_string()),
        RunEnd::OutputOverflow => (CodeOutcome::OutputOverflow, "output limit".to_string()),
        RunEnd::Stopped => (
            CodeOutcome::RuntimeError,
            "stopped by the judge once it was no longer needed".to_string(),
        ),
        RunEnd::Exited(EXIT_CPU_LIMIT) => (CodeOutcome::TimedOut, "CPU-time limit".to_string()),
        // bubblewrap reports its own failures as status 1 with a "bwrap:" message, before the
        // interpreter ever printed. A candidate can imitate that only to score 0 anyway.
        RunEnd::Exited(1) if stderr.starts_with("bwrap:") && output.stdout.is_empty() => (
            CodeOutcome::SandboxError,
            format!("bubblewrap failed: {}", tail(&stderr)),
        ),
        RunEnd::Exited(code) => (
            CodeOutcome::RuntimeError,
            format!("exit status {code}: {}", tail(&stderr)),
        ),
    };
    Some(CheckResult::Fail(outcome, detail))
}

/// Output as compared: trailing whitespace trimmed from every line, trailing blank lines dropped.
pub(crate) fn normalize(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|line| line.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

/// The last 300 characters of `text`, for verdict details.
fn tail(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    chars[chars.len().saturating_sub(300)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(end: RunEnd, stdout: &str, stderr: &str) -> RunOutput {
        RunOutput {
            end,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn normalize_trims_line_ends_and_trailing_blank_lines() {
        assert_eq!(normalize("1 2  \r\n3\t\n\n\n"), "1 2\n3");
        assert_eq!(normalize("  lead\n"), "  lead");
        assert_ne!(normalize("a\n\nb"), normalize("a\nb"));
    }

    #[test]
    fn case_passes_on_equal_output_and_status_zero_only() {
        let ok = output(RunEnd::Exited(0), "3 \n", "");
        assert_eq!(check_case(&ok, "3"), CheckResult::Pass);
        let wrong = output(RunEnd::Exited(0), "4\n", "");
        assert!(matches!(
            check_case(&wrong, "3"),
            CheckResult::Fail(CodeOutcome::WrongAnswer, _)
        ));
        let crashed = output(RunEnd::Exited(1), "3\n", "Traceback");
        assert!(matches!(
            check_case(&crashed, "3"),
            CheckResult::Fail(CodeOutcome::RuntimeError, _)
        ));
    }

    #[test]
    fn limits_map_to_their_outcomes() {
        let cases = [
            (RunEnd::TimedOut, CodeOutcome::TimedOut),
            (RunEnd::Exited(EXIT_CPU_LIMIT), CodeOutcome::TimedOut),
            (RunEnd::OutputOverflow, CodeOutcome::OutputOverflow),
        ];
        for (end, outcome) in cases {
            let result = check_case(&output(end, "3", ""), "3");
            assert!(
                matches!(result, CheckResult::Fail(o, _) if o == outcome),
                "{end:?}"
            );
        }
        let bwrap_failed = output(RunEnd::Exited(1), "", "bwrap: clone: nope");
        assert!(matches!(
            check_case(&bwrap_failed, ""),
            CheckResult::Fail(CodeOutcome::SandboxError, _)
        ));
    }

    #[test]
    fn tests_pass_only_with_the_nonce_as_last_line() {
        let nonce = "0123456789abcdef0123456789abcdef";
        let proven = output(RunEnd::Exited(0), &format!("hello\n\n{nonce}\n"), "");
        assert_eq!(check_tests(&proven, nonce), CheckResult::Pass);
        let forged = output(
            RunEnd::Exited(0),
            "PASS\nffffffffffffffffffffffffffffffff\n",
            "",
        );
        assert!(matches!(
            check_tests(&forged, nonce),
            CheckResult::Fail(CodeOutcome::Unproven, _)
        ));
        let trailing = output(RunEnd::Exited(0), &format!("{nonce}\nmore\n"), "");
        assert!(matches!(
            check_tests(&trailing, nonce),
            CheckResult::Fail(..)
        ));
        let failed_after = output(RunEnd::Exited(1), &format!("{nonce}\n"), "");
        assert!(matches!(
            check_tests(&failed_after, nonce),
            CheckResult::Fail(CodeOutcome::RuntimeError, _)
        ));
    }

    #[test]
    fn runner_input_announces_exact_lengths() {
        let config = SandboxConfig {
            max_processes: 16,
            max_output_bytes: 100,
            ..SandboxConfig::for_tests()
        };
        let run = RunnerInput {
            input: "in",
            ..RunnerInput::new(RunnerMode::Run, &config, "print(1)")
        };
        assert_eq!(run.bytes(), b"R1 run 16 -1 -1 100 - 8\nprint(1)in".to_vec());
        let tests = RunnerInput {
            channel: Some((7, 9)),
            token: "ab",
            ..RunnerInput::new(RunnerMode::Tests, &config, "é")
        };
        assert_eq!(
            tests.bytes(),
            "R1 tests 16 7 9 100 ab 2\né".as_bytes().to_vec()
        );
    }

    #[test]
    fn the_tests_run_decides_and_the_solution_run_explains() {
        let nonce = "0123456789abcdef0123456789abcdef";
        let proven = output(RunEnd::Exited(0), &format!("{nonce}\n"), "");
        let crashed = || Ok(output(RunEnd::Exited(1), "", "ValueError: top level"));
        // A pass is the tests' proof alone, however the solution's process ended.
        assert_eq!(
            tests_verdict(&proven, crashed(), nonce).expect("a verdict"),
            CheckResult::Pass
        );
        let left = output(RunEnd::Exited(0), "", "r1: the solution ended");
        match tests_verdict(&left, crashed(), nonce).expect("a verdict") {
            CheckResult::Fail(CodeOutcome::RuntimeError, detail) => {
                assert!(detail.contains("ValueError: top level"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        let quiet = || Ok(output(RunEnd::Exited(0), "", ""));
        assert!(matches!(
            tests_verdict(&left, quiet(), nonce).expect("a verdict"),
            CheckResult::Fail(CodeOutcome::Unproven, _)
        ));
        // The tests' own limit names the failure, and a stopped solution explains nothing.
        let slow = output(RunEnd::TimedOut, "", "");
        assert!(matches!(
            tests_verdict(&slow, crashed(), nonce).expect("a verdict"),
            CheckResult::Fail(CodeOutcome::TimedOut, _)
        ));
        let failed = output(RunEnd::Exited(1), "", "AssertionError");
        let stopped = Ok(output(RunEnd::Stopped, "", ""));
        assert!(matches!(
            tests_verdict(&failed, stopped, nonce).expect("a verdict"),
            CheckResult::Fail(CodeOutcome::RuntimeError, detail) if detail.contains("AssertionError")
        ));
        assert!(tests_verdict(&failed, Err(SandboxError::Unreaped), nonce).is_err());
    }
}
