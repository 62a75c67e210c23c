//! How r1ctl ends when things go wrong around its output (issue 18): a pipe whose reader has
//! gone (`r1ctl steps DIR | head -1`) ends it quietly with status 0, not a panic; an error in a
//! training step says each of its causes once.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use r1_kernels::bench::builtin_config;
use r1_kernels::model::{save_model_dir, Model};
use r1_kernels::tokenizer::ByteTokenizer;

/// A tiny byte-level model whose context holds `positions` tokens.
fn tiny_model(dir: &Path, positions: usize) -> PathBuf {
    let mut config = builtin_config("tiny-qwen2").unwrap();
    config.vocab_size = ByteTokenizer::VOCAB_SIZE;
    config.max_position_embeddings = positions;
    let model = dir.join("model");
    save_model_dir(&Model::random(config, 1, 0.05), &model).unwrap();
    model
}

/// A GRPO job on `model` over `data` (a JSONL file), `steps` steps, writing into `out`.
fn grpo_config(dir: &Path, model: &Path, data: &Path, steps: u64) -> PathBuf {
    let text = format!(
        r#"
[run]
name = "output"
stage = "grpo"
seed = 3
output_dir = "out"

[model]
path = "{model}"
template = "chatml"
tokenizer = "byte"

[data]
kind = "jsonl"
path = "{data}"

[sampling]
temperature = 1.0
max_new_tokens = 4

[learner]
group_size = 2
minibatches = 1

[learner.grpo]
beta = 0.01
max_completion_length = 4

[grpo]
steps = {steps}
prompts_per_step = 2
max_batch = 64

[checkpoint]
every_steps = 100000
keep_last = 2
"#,
        model = model.display(),
        data = data.display(),
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn r1ctl(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The write end of a pipe whose read end is already closed: the first write into it fails with
/// EPIPE, as `head -1` makes it fail once it has its line.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe {
        libc::close(fds[0]);
        Stdio::from(OwnedFd::from_raw_fd(fds[1]))
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_status_0() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 128);
    let data = dir.path().join("data.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\":\"1+1=\",\"answer\":\"2\"}\n{\"prompt\":\"2+2=\",\"answer\":\"4\"}\n",
    )
    .unwrap();
    let job = grpo_config(dir.path(), &model, &data, 2);
    let out = r1ctl(&["train", job.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));

    for args in [
        vec!["steps", "out"],
        vec!["steps", "out", "-o", "json"],
        vec!["samples", "out"],
        vec!["train", "--check", "job.toml"],
        vec!["--help"],
    ] {
        let run = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
            .args(&args)
            .current_dir(dir.path())
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = text(&run.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "r1ctl {args:?}: {err}"
        );
        assert_eq!(run.status.code(), Some(0), "r1ctl {args:?}: {err}");
    }
}

#[test]
fn a_failed_step_says_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // A context of 16 positions and a prompt of 40 bytes: the first step cannot run.
    let model = tiny_model(dir.path(), 16);
    let data = dir.path().join("data.jsonl");
    let long = "1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1=";
    std::fs::write(
        &data,
        format!("{{\"prompt\":\"{long}\",\"answer\":\"19\"}}\n").repeat(4),
    )
    .unwrap();
    let job = grpo_config(dir.path(), &model, &data, 2);
    let out = r1ctl(&["train", job.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    let last = err
        .lines()
        .rfind(|l| l.starts_with("r1ctl: "))
        .unwrap_or_else(|| panic!("{err}"));
    // It failed in a step (`StageError::At` says where, and carries the kernel's error as its
    // source too: anyhow's `{:#}` printed "step 1: invalid input: …: invalid input: …").
    assert!(last.starts_with("r1ctl: step 1: "), "{err}");
    assert_eq!(last.matches("invalid input").count(), 1, "{last}");
    // No part of the message comes twice: split at ": " and look for a repeated run of parts.
    let parts: Vec<&str> = last.trim_start_matches("r1ctl: ").split(": ").collect();
    for i in 0..parts.len() {
        for j in i + 1..parts.len() {
            assert!(
                parts[i] != parts[j] || parts[i].len() < 4,
                "`{}` twice in: {last}",
                parts[i]
            );
        }
    }
}
