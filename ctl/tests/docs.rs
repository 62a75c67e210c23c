//! Docs that cannot go stale: every ```` ```console ```` block in README.md and docs/*.md is run
//! by this test, against the built `r1ctl` and `r1d`, and its output compared with what the block
//! shows. A doc change that breaks a command fails `cargo test` (and so scripts/test.sh and CI).
//!
//! The format (trycmd's, read by our own extractor because the blocks also start a daemon in the
//! background and share a folder from block to block):
//! - `$ COMMAND` runs COMMAND in bash; the lines after it, up to the next `$ ` line or the end of
//!   the block, are its expected output (stdout and stderr merged).
//! - A line that is exactly `...` matches any number of lines; `[..]` inside a line matches any
//!   text on that line. Trailing blank lines are ignored.
//! - A last expected line `? N` means the command exits with status N (default 0).
//! - ```` ```console no-run ```` marks a block shown but not run (too long for CI: a real model, a
//!   download, minutes of training); the test prints how many commands it ran and skipped.
//!
//! Every file's blocks run in order in one temporary folder holding a copy of `config/`, with the
//! binaries first on `PATH`, `R1_STATE_DIR` pointing into the folder, and `HOME` inside it; a
//! process a block starts in the background (`r1d &`) is killed when the file is done.
//! Running only this test needs both binaries built: `cargo build -p r1-ctl -p r1-daemon --bins`
//! (the test profile builds r1ctl; `cargo test --workspace` builds r1d too).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One `$ COMMAND` of a block and what the doc says it prints.
#[derive(Debug, Clone, PartialEq)]
struct DocCommand {
    /// The shell command.
    command: String,
    /// The expected output lines (wildcards kept).
    expected: Vec<String>,
    /// The expected exit status.
    status: i32,
    /// Where it is written, for the failure message: `file:line`.
    place: String,
}

/// The commands of one document: those to run, and how many are shown but not run.
#[derive(Debug, Default)]
struct DocScript {
    run: Vec<DocCommand>,
    skipped: usize,
}

/// Reads the ```` ```console ```` blocks of a Markdown text.
fn parse(markdown: &str, file: &str) -> Result<DocScript, String> {
    let mut script = DocScript::default();
    let mut lines = markdown.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```console") else {
            continue;
        };
        let no_run = match info.trim() {
            "" => false,
            "no-run" => true,
            other => return Err(format!("{file}: unknown console block option `{other}`")),
        };
        let mut current: Option<DocCommand> = None;
        let mut block = Vec::new();
        let mut closed = false;
        for (n, line) in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                closed = true;
                break;
            }
            if let Some(command) = line.strip_prefix("$ ") {
                block.extend(current.take());
                current = Some(DocCommand {
                    command: command.to_string(),
                    expected: Vec::new(),
                    status: 0,
                    place: format!("{file}:{}", n + 1),
                });
            } else if let Some(c) = current.as_mut() {
                c.expected.push(line.to_string());
            } else if !line.trim().is_empty() {
                return Err(format!(
                    "{file}:{}: output before any `$ ` command in a console block",
                    n + 1
                ));
            }
        }
        if !closed {
            return Err(format!("{file}: a console block is not closed"));
        }
        block.extend(current.take());
        for c in &mut block {
            while c.expected.last().is_some_and(|l| l.trim().is_empty()) {
                c.expected.pop();
            }
            if let Some(status) = c.expected.last().and_then(|l| l.strip_prefix("? ")) {
                c.status = status
                    .trim()
                    .parse()
                    .map_err(|_| format!("{}: `? {status}` is not an exit status", c.place))?;
                c.expected.pop();
            }
        }
        if no_run {
            script.skipped += block.len();
        } else {
            script.run.extend(block);
        }
    }
    Ok(script)
}

/// Whether `line` matches `pattern`, where `[..]` matches any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether the output lines match the expected ones (`...` lines match any run of lines).
fn output_matches(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, more)| line_matches(first, line) && output_matches(rest, more)),
    }
}

/// The marker printed after each command, with its status, to split bash's output.
const MARK: &str = "\u{1e}R1DOC-END";

/// The repository root (this crate's parent folder).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ctl/ has a parent")
        .to_path_buf()
}

/// Runs a document's commands in one bash in `dir`; returns each command's output and status.
fn run_script(script: &DocScript, dir: &Path, bin_dir: &Path) -> Vec<(String, i32)> {
    let mut text = String::from("exec 2>&1\n");
    for c in &script.run {
        // `{ … ; }` keeps `cd` and `export` in force for the commands after it.
        text += &format!(
            "{{\n{}\n}} </dev/null\nprintf '\\n{MARK} %d\\n' $?\n",
            c.command
        );
    }
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new("bash")
            .args(["--noprofile", "--norc", "-c", &text])
            .current_dir(dir)
            .env("PATH", path)
            .env("HOME", dir.join("home"))
            .env("R1_STATE_DIR", dir.join("r1d"))
            .env("NO_COLOR", "1")
            .env_remove("R1_ADDR")
            .env_remove("R1_TOKEN_FILE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("bash runs")
    };
    // Read on a thread: a process left in the background (r1d) holds the pipe open after bash
    // exits, so the end of the output is bash's exit, not the pipe's end.
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).map(|_| out)
    });
    let _ = child.wait();
    // Whatever the commands left in the background ends with them.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let out = reader
        .join()
        .expect("the reader thread")
        .expect("reading the commands' output");
    let mut results = Vec::new();
    let mut rest = out.as_str();
    while let Some(at) = rest.find(MARK) {
        let output = rest[..at].strip_suffix('\n').unwrap_or(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let end = after.find('\n').unwrap_or(after.len());
        let status = after[..end].trim().parse().unwrap_or(-1);
        results.push((output.to_string(), status));
        rest = after.get(end + 1..).unwrap_or("");
    }
    results
}

/// Checks one document: every failure, described (the command, where it is, expected, actual).
fn check(script: &DocScript, dir: &Path, bin_dir: &Path) -> Vec<String> {
    let results = run_script(script, dir, bin_dir);
    let mut failures = Vec::new();
    for (i, c) in script.run.iter().enumerate() {
        let Some((output, status)) = results.get(i) else {
            failures.push(format!("{}: `{}` never ran", c.place, c.command));
            continue;
        };
        let lines: Vec<&str> = output.lines().collect();
        let mut lines = lines.as_slice();
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines = &lines[..lines.len() - 1];
        }
        if *status != c.status || !output_matches(&c.expected, lines) {
            failures.push(format!(
                "{}: `{}`\n  expected (exit {}):\n{}\n  got (exit {status}):\n{}",
                c.place,
                c.command,
                c.status,
                c.expected.join("\n"),
                output
            ));
        }
    }
    failures
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A fresh folder for one document: `config/` copied, `home/` for HOME.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("config"), &dir.path().join("config"));
    std::fs::create_dir_all(dir.path().join("home")).unwrap();
    dir
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_r1ctl"))
        .parent()
        .expect("the binary's folder")
        .to_path_buf()
}

#[test]
fn every_console_block_in_the_docs_runs_as_shown() {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let bins = bin_dir();
    let (mut ran, mut skipped, mut failures) = (0, 0, Vec::new());
    for file in &files {
        let name = file.strip_prefix(repo()).unwrap().display().to_string();
        let script =
            parse(&std::fs::read_to_string(file).unwrap(), &name).unwrap_or_else(|e| panic!("{e}"));
        skipped += script.skipped;
        if script.run.is_empty() {
            continue;
        }
        let needs_r1d = script.run.iter().any(|c| c.command.contains("r1d"));
        assert!(
            !needs_r1d || bins.join("r1d").is_file(),
            "{name} starts r1d, which is not built: cargo build -p r1-daemon --bins"
        );
        let dir = workspace();
        let found = check(&script, dir.path(), &bins);
        eprintln!(
            "docs: {name}: {} commands run, {} failed, {} shown but not run",
            script.run.len(),
            found.len(),
            script.skipped
        );
        ran += script.run.len();
        failures.extend(found);
    }
    eprintln!(
        "docs: {ran} documented commands run, {skipped} marked no-run, {} failed",
        failures.len()
    );
    assert!(ran > 0, "no console blocks found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every `r1ctl …` invocation written in a `sh` block (the README's `cargo run … --` and
/// `target/release/r1ctl` forms): its subcommand path and the `--flags` it uses.
fn sh_invocations(markdown: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let mut found = Vec::new();
    let mut in_sh = false;
    for line in markdown.lines() {
        let t = line.trim_start();
        if t.starts_with("```") {
            in_sh = !in_sh && t == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        // Commands, not their trailing comments; several may share a line (`a; b && c`).
        let code = line.split(" #").next().unwrap_or("");
        for part in code.split([';', '&', '|']) {
            let words: Vec<&str> = part.split_whitespace().collect();
            let start = words.iter().position(|w| {
                w.ends_with("/r1ctl") || *w == "r1ctl" || *w == "--" && words.contains(&"r1-ctl")
            });
            let Some(start) = start else { continue };
            let args = &words[start + 1..];
            let mut path = Vec::new();
            for w in args.iter().take_while(|w| !w.starts_with('-')) {
                // Subcommands are lower-case words; the first argument that is not one ends them.
                if path.len() < 2 && w.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                    path.push(w.to_string());
                } else {
                    break;
                }
            }
            let flags = args
                .iter()
                .filter(|w| w.starts_with("--") && w.len() > 2)
                .map(|w| w.split('=').next().unwrap_or(w).to_string())
                .collect();
            found.push((path, flags));
        }
    }
    found
}

#[test]
fn every_r1ctl_command_and_flag_in_the_sh_blocks_exists() {
    let r1ctl = bin_dir().join("r1ctl");
    let help = |path: &[String]| {
        let out = Command::new(&r1ctl)
            .args(path)
            .arg("--help")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let mut files = vec![repo().join("README.md")];
    files.extend(
        std::fs::read_dir(repo().join("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    let (mut checked, mut failures) = (0, Vec::new());
    for file in files {
        for (mut path, flags) in sh_invocations(&std::fs::read_to_string(&file).unwrap()) {
            // `r1ctl ckpt export RUN …`: the second word is a subcommand only when help says so.
            while !path.is_empty() && !help(&path).0 {
                path.pop();
            }
            if path.is_empty() {
                continue;
            }
            let (_, text) = help(&path);
            for flag in &flags {
                checked += 1;
                if !text.contains(&format!("{flag} ")) && !text.contains(&format!("{flag}\n")) {
                    failures.push(format!(
                        "{}: `r1ctl {} {flag}`: no such flag",
                        file.display(),
                        path.join(" ")
                    ));
                }
            }
            checked += 1;
        }
    }
    eprintln!("docs: {checked} r1ctl commands and flags in sh blocks checked against --help");
    assert!(checked > 20, "too few r1ctl commands found: {checked}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_broken_example_fails_the_harness() {
    let dir = workspace();
    let doc = "\
Text.

```console
$ r1ctl --version
r1ctl [..]
$ echo one; echo two; echo three
one
...
three
$ r1ctl status --state-dir nowhere
...
? 2
```

```console no-run
$ r1ctl run
```
";
    let script = parse(doc, "good.md").unwrap();
    assert_eq!((script.run.len(), script.skipped), (3, 1));
    assert_eq!(script.run[2].status, 2);
    let failures = check(&script, dir.path(), &bin_dir());
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The same commands documented wrongly: a changed word, a wrong exit status, a missing line.
    for (broken, what) in [
        (doc.replace("echo one;", "echo uno;"), "changed output"),
        (doc.replace("? 2", "? 0"), "wrong exit status"),
        (doc.replace("r1ctl [..]", "r1d [..]"), "wrong program name"),
        (
            doc.replace(
                "$ echo one; echo two; echo three",
                "$ r1ctl no-such-command",
            ),
            "a command that does not exist",
        ),
    ] {
        let script = parse(&broken, "broken.md").unwrap();
        let failures = check(&script, dir.path(), &bin_dir());
        assert!(
            !failures.is_empty(),
            "{what}: the harness passed:\n{broken}"
        );
        assert!(failures[0].contains("broken.md:"), "{}", failures[0]);
    }
    assert!(parse("```console\n$ true\n", "open.md").is_err());
    assert!(parse("```console fast\n$ true\n```\n", "option.md").is_err());
}

#[test]
fn wildcards_match_what_they_say() {
    assert!(line_matches("a [..] c", "a b c"));
    assert!(line_matches("[..]", ""));
    assert!(line_matches("x[..]y[..]z", "x1y2z"));
    assert!(!line_matches("x[..]y[..]z", "x1z"));
    assert!(!line_matches("ab[..]ba", "aba"));
    let lines = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(output_matches(&lines(&["...", "end"]), &["a", "b", "end"]));
    assert!(!output_matches(&lines(&["...", "end"]), &["a", "end", "b"]));
    assert!(output_matches(&lines(&["..."]), &[]));
    assert!(!output_matches(&lines(&["a"]), &[]));
}
