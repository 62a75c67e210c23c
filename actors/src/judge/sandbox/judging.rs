//! Turns a job into sandboxed runs and their results into a verdict: the stdin wire format of
//! `runner.py`, output comparison, and the nonce check of assert-style tests.

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
        let stdin = runner_input(config.max_processes, &job.source, "", "-", &case.input);
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
        let nonce = format!("{:032x}", rand::random::<u128>());
        let stdin = runner_input(config.max_processes, &job.source, &job.tests, &nonce, "");
        let result = sandbox
            .run(stdin)
            .map(|output| check_tests(&output, &nonce));
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

/// The runner's stdin: header line, source, tests, then the program's own input.
pub(crate) fn runner_input(
    max_processes: u64,
    source: &str,
    tests: &str,
    nonce: &str,
    input: &str,
) -> Vec<u8> {
    let header = format!(
        "R1 {max_processes} {} {} {nonce}\n",
        source.len(),
        tests.len()
    );
    [
        header.as_bytes(),
        source.as_bytes(),
        tests.as_bytes(),
        input.as_bytes(),
    ]
    .concat()
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
        CheckResult::Fail(
            CodeOutcome::Unproven,
            "exited with status 0 before the tests ran to their end".into(),
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
        let bytes = runner_input(16, "print(1)", "assert 1", "ab", "in");
        assert_eq!(bytes, b"R1 16 8 8 ab\nprint(1)assert 1in".to_vec());
        let multibyte = runner_input(16, "é", "", "-", "");
        assert_eq!(multibyte, "R1 16 2 0 -\né".as_bytes().to_vec());
    }
}
