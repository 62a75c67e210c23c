//! `r1ctl judge` as a user runs it: the real binary on JSONL files and stdin, checking the printed
//! rewards, the reasons for every 0, the errors for bad lines, and the exit codes.
//!
//! The code line needs bubblewrap; CI installs it with scripts/install-deps.sh, and there the code
//! line must pass. Elsewhere a sandbox that cannot start must score the line 0 with the reason
//! (fail closed), and the test says it skipped the pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The example file shipped in config/examples and shown in docs/rewards.md.
fn example_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/judge.jsonl")
}

/// What one run printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `r1ctl judge ARGS`, feeding `stdin`.
fn judge(args: &[&str], stdin: &str) -> Run {
    judge_with_env(args, stdin, &[])
}

/// Runs `r1ctl judge ARGS` with extra environment variables, feeding `stdin`.
fn judge_with_env(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .arg("judge")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| panic!("r1ctl did not start: {e}"));
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .unwrap_or_else(|e| panic!("writing r1ctl's stdin: {e}"));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("r1ctl did not finish: {e}"));
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The JSON objects of a `-o json` run, one per scored line.
fn json_rows(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

fn num(row: &Value, pointer: &str) -> f64 {
    row.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {row}"))
}

fn text<'a>(row: &'a Value, pointer: &str) -> &'a str {
    row.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A JSONL file with `lines`, kept alive as long as the handle.
fn jsonl(lines: &[&str]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("temp file: {e}"));
    for line in lines {
        writeln!(file, "{line}").unwrap_or_else(|e| panic!("writing temp file: {e}"));
    }
    file
}

#[test]
fn the_example_file_scores_as_documented() {
    let path = example_file();
    let run = judge(&[path.to_str().unwrap_or_default(), "-o", "json"], "");
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let rows = json_rows(&run);
    assert_eq!(rows.len(), 11, "{}", run.stdout);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(num(row, "/line") as usize, i + 1);
        // Every 0 has its reason.
        for component in ["accuracy", "format"] {
            let reward = num(row, &format!("/{component}/reward"));
            let why = row.pointer(&format!("/{component}/why"));
            assert_eq!(
                reward == 0.0,
                why.is_some_and(Value::is_string),
                "line {}: {row}",
                i + 1
            );
        }
    }
    // (task, accuracy, format, total, a piece of the reason) per line; code is checked below.
    let expected = [
        ("math", 1.0, 1.0, 2.0, ""),
        (
            "math",
            0.0,
            1.0,
            1.0,
            "\"41\" is not equivalent to the gold answer \"42\"",
        ),
        ("math", 1.0, 1.0, 2.0, ""),
        ("countdown", 1.0, 1.0, 2.0, ""),
        (
            "countdown",
            0.0,
            1.0,
            1.0,
            "uses the numbers [2, 2, 6], but must use [2, 6, 6]",
        ),
        ("arithmetic", 1.0, 1.0, 2.0, ""),
        ("arithmetic", 0.0, 1.0, 1.0, "arithmetic: 1571 is not 1517"),
        (
            "math",
            0.0,
            0.0,
            0.0,
            "format: <answer> inside the think block",
        ),
        ("math", 0.0, 0.0, 0.0, "format: the think block is empty"),
        (
            "math",
            1.0,
            1.0,
            2.0,
            "language: 2 of 7 chain-of-thought words are english (5 chinese)",
        ),
    ];
    for (row, (task, accuracy, format, total, why)) in rows.iter().zip(expected) {
        let line = num(row, "/line");
        assert_eq!(text(row, "/task"), task, "line {line}");
        assert_eq!(num(row, "/accuracy/reward"), accuracy, "line {line}: {row}");
        assert_eq!(num(row, "/format/reward"), format, "line {line}: {row}");
        assert_eq!(num(row, "/total"), total, "line {line}: {row}");
        let reasons: Vec<&str> = row["why"]
            .as_array()
            .map(|reasons| reasons.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if why.is_empty() {
            assert!(reasons.is_empty(), "line {line}: {reasons:?}");
        } else {
            assert!(
                reasons.iter().any(|r| r.contains(why)),
                "line {line}: {reasons:?}"
            );
        }
    }
    // The language line: the share is reported even at weight 0, and does not change the total.
    assert!((num(&rows[9], "/language/share") - 2.0 / 7.0).abs() < 1e-6);
    assert_eq!(text(&rows[2], "/extracted"), "\\{3, 2\\}");
    assert_eq!(text(&rows[5], "/extracted"), "5,000");

    let code = &rows[10];
    assert_eq!(text(code, "/task"), "code");
    assert_eq!(
        text(code, "/extracted"),
        "a, b = map(int, input().split())\nprint(a + b)\n"
    );
    if num(code, "/accuracy/reward") == 1.0 {
        assert_eq!(text(code, "/code/outcome"), "Passed");
        assert_eq!(num(code, "/code/checks_passed"), 2.0);
        assert_eq!(num(code, "/total"), 2.0);
    } else {
        // Only a sandbox that cannot start may fail this line, and never in CI.
        let why = text(code, "/accuracy/why");
        assert_eq!(text(code, "/code/outcome"), "SandboxError", "{why}");
        assert!(why.contains("code sandbox unavailable"), "{why}");
        assert!(
            std::env::var_os("CI").is_none(),
            "the sandbox must work in CI: {why}"
        );
        eprintln!("SKIPPED the passing code check: {why}");
    }
}

#[test]
fn the_table_shows_one_row_per_line_with_the_reasons() {
    let path = example_file();
    let run = judge(&[path.to_str().unwrap_or_default()], "");
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 12, "a header and 11 rows:\n{}", run.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "line",
            "task",
            "extracted",
            "acc",
            "fmt",
            "lang",
            "total",
            "why"
        ]
    );
    let row = |n: usize| -> Vec<&str> { lines[n].split_whitespace().collect() };
    assert_eq!(
        row(1),
        ["1", "math", "42", "1.00", "1.00", "-", "2.00", "-"]
    );
    assert_eq!(row(4)[..7], ["4", "countdown", "(6", "-", "2)", "*", "6"]);
    assert!(
        lines[2].ends_with("1.00  accuracy: \"41\" is not equivalent to the gold answer \"42\""),
        "{}",
        lines[2]
    );
    assert!(
        lines[9].contains("format: the think block is empty"),
        "{}",
        lines[9]
    );
    assert!(lines[10].contains("0.29"), "language share: {}", lines[10]);
    // The code source is flattened onto one line and cut.
    assert!(
        lines[11].contains("a, b = map(int, input()…"),
        "{}",
        lines[11]
    );
}

#[test]
fn bad_lines_are_named_and_the_others_still_scored() {
    let file = jsonl(&[
        r#"{"completion": "<think>x</think><answer>1</answer>", "answer": "1"}"#,
        r#"{"completion": "<think>x</think>"#,
        r#"{"answer": "1"}"#,
        r#"{"completion": "x", "anwser": "1"}"#,
        r#"{"completion": ["x"]}"#,
        "",
        r#"{"completion": "x", "task": "countdown"}"#,
        r#"{"completion": "<think>y</think><answer>2</answer>", "answer": "3"}"#,
    ]);
    let path = file.path().to_str().unwrap_or_default();
    let run = judge(&[path, "-o", "json"], "");
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    let rows = json_rows(&run);
    let scored: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (num(r, "/line"), num(r, "/total")))
        .collect();
    assert_eq!(scored, [(1.0, 2.0), (8.0, 1.0)]);
    let errors: Vec<&str> = run.stderr.lines().collect();
    let expected = [
        format!("r1ctl judge: {path}:2: column 32: invalid JSON: EOF while parsing"),
        format!("r1ctl judge: {path}:3: column 15: missing field `completion`"),
        format!("r1ctl judge: {path}:4: column 28: unknown field `anwser`, expected one of"),
        format!("r1ctl judge: {path}:5: column 15: invalid type: sequence, expected a string"),
        format!("r1ctl judge: {path}:7: a countdown item needs `numbers`"),
        "r1ctl judge: 5 of 7 lines could not be scored".to_string(),
    ];
    assert_eq!(errors.len(), expected.len(), "{}", run.stderr);
    for (error, expected) in errors.iter().zip(&expected) {
        assert!(
            error.starts_with(expected.as_str()),
            "{error}\nexpected {expected}"
        );
    }
}

#[test]
fn stdin_is_read_with_a_dash_or_no_file() {
    let line =
        r#"{"completion": "<think>x</think><answer>7</answer>", "numbers": [3, 4], "target": 7}"#;
    for args in [&["-", "-o", "json"][..], &["-o", "json"][..]] {
        let run = judge(args, line);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        let rows = json_rows(&run);
        assert_eq!(rows.len(), 1);
        assert_eq!(text(&rows[0], "/task"), "countdown");
        assert_eq!(
            text(&rows[0], "/accuracy/why"),
            "countdown: uses the numbers [7], but must use [3, 4] each exactly once"
        );
    }
    let run = judge(&[], "{not json\n");
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("r1ctl judge: <stdin>:1: column 2: invalid JSON"),
        "{}",
        run.stderr
    );
}

#[test]
fn options_set_the_rules_and_a_line_overrides_them() {
    let boxed = r#"{"completion": "Six sevens.</think>It is \\boxed{42}.", "answer": "42", "prompt": "What is 6 times 7?"}"#;
    let run = judge(&["-o", "json"], boxed);
    let row = &json_rows(&run)[0];
    assert_eq!(
        (num(row, "/accuracy/reward"), num(row, "/format/reward")),
        (0.0, 0.0)
    );

    let args = [
        "-o",
        "json",
        "--format-style",
        "boxed",
        "--prefilled-think",
        "--language-weight",
        "0.5",
        "--format-weight",
        "0.25",
    ];
    let run = judge(&args, boxed);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = &json_rows(&run)[0];
    assert_eq!(
        (num(row, "/accuracy/reward"), num(row, "/format/reward")),
        (1.0, 1.0)
    );
    assert_eq!(text(row, "/language/target"), "english");
    assert_eq!(row.pointer("/language/detected"), Some(&Value::Bool(true)));
    assert_eq!(num(row, "/total"), 1.0 + 0.25 + 0.5);

    // --extract free_text reads the stated answer; the line's own "extract" wins over it.
    let free =
        r#"{"completion": "Six sevens.</think>\\boxed{41}. The answer is 42.", "answer": "42"}"#;
    let mut args = vec!["-o", "json", "--format-style", "boxed", "--prefilled-think"];
    let run = judge(&args, free);
    assert_eq!(num(&json_rows(&run)[0], "/accuracy/reward"), 0.0);
    args.extend(["--extract", "free_text"]);
    let run = judge(&args, free);
    let row = &json_rows(&run)[0];
    assert_eq!(text(row, "/extracted"), "42");
    assert_eq!(num(row, "/accuracy/reward"), 1.0);
    let own = free.replace(r#""answer": "42""#, r#""answer": "42", "extract": "boxed""#);
    let run = judge(&args, &own);
    assert_eq!(text(&json_rows(&run)[0], "/extracted"), "41");

    // A hidden answer earns accuracy only with --accuracy-without-format.
    let hidden = r#"{"completion": "<think>It is <answer>42</answer></think>", "answer": "42"}"#;
    let run = judge(&["-o", "json", "--accuracy-without-format"], hidden);
    let row = &json_rows(&run)[0];
    assert_eq!(
        (num(row, "/accuracy/reward"), num(row, "/total")),
        (1.0, 1.0)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--extract", "sideways"][..],
        &["--format-style", "yaml"][..],
        &["--accuracy-weight", "NaN"][..],
        &["--code-timeout", "0"][..],
        &["/nonexistent/r1-judge.jsonl"][..],
    ] {
        let run = judge(args, "");
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty(), "{args:?} says why");
        assert_eq!(run.stdout, "", "{args:?}");
    }
    let run = judge(&["/nonexistent/r1-judge.jsonl"], "");
    assert!(
        run.stderr.contains("opening /nonexistent/r1-judge.jsonl"),
        "{}",
        run.stderr
    );
    let run = judge(&["--help"], "");
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("Exit status: 0 every line was scored; 2"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_docs_show_what_the_example_file_prints() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/rewards.md");
    let docs = std::fs::read_to_string(&docs).unwrap_or_else(|e| panic!("reading docs: {e}"));
    let command = "$ r1ctl judge config/examples/judge.jsonl\n";
    let shown = docs
        .split_once(command)
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .unwrap_or_else(|| panic!("docs/rewards.md shows no `{}` block", command.trim()));
    let path = example_file();
    let run = judge(&[path.to_str().unwrap_or_default()], "");
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    if run.stdout.contains("code sandbox unavailable") && std::env::var_os("CI").is_none() {
        eprintln!("SKIPPED: the docs show the code line passing; no sandbox here");
        return;
    }
    assert_eq!(
        run.stdout, shown,
        "update docs/rewards.md to what r1ctl prints"
    );
}

#[test]
fn code_without_bubblewrap_scores_zero_with_the_reason() {
    // An empty PATH hides bubblewrap: the sandbox cannot start, and the code line must fail
    // closed (0, with the reason) while the run itself succeeds.
    let line = r#"{"completion": "<think>sum</think><answer>```python\nprint(5)\n```</answer>", "tests": {"cases": [{"input": "", "expected_output": "5"}]}}"#;
    let run = judge_with_env(&["-o", "json", "-"], line, &[("PATH", "")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = json_rows(&run);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(num(row, "/accuracy/reward"), 0.0);
    assert_eq!(num(row, "/format/reward"), 1.0);
    assert_eq!(text(row, "/code/outcome"), "SandboxError");
    let why = text(row, "/accuracy/why");
    assert!(
        why.contains("code sandbox unavailable: bubblewrap not found"),
        "{why}"
    );
}

#[test]
fn a_line_that_is_not_utf8_is_named() {
    let mut file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("temp file: {e}"));
    file.write_all(b"{\"completion\": \"\xff\"}\n{\"completion\": \"<think>a</think><answer>1</answer>\", \"answer\": \"1\"}\n")
        .unwrap_or_else(|e| panic!("writing temp file: {e}"));
    let path = file.path().to_str().unwrap_or_default();
    let run = judge(&[path, "-o", "json"], "");
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with(&format!(
            "r1ctl judge: {path}:1: the line is not valid UTF-8"
        )),
        "{}",
        run.stderr
    );
    let rows = json_rows(&run);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (num(&rows[0], "/line"), num(&rows[0], "/total")),
        (2.0, 2.0)
    );
}
