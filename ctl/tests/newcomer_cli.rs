//! What a newcomer meets first with `r1ctl` in-process (issue 18): the help text names every
//! stage and says what each exit status means; `train --check` validates and prints the job; a
//! path that does not resolve names the key and the folder it was resolved against; `--steps` is
//! refused where a stage takes no steps; Ctrl-C is acknowledged at once, a stopped run's summary
//! says `stopped:`, and a second Ctrl-C exits 130; a distill job with a missing student is refused
//! before the teacher samples anything.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use r1_config::testkit::JobToml;
use r1_kernels::model::tiny::TinyModel;

fn r1ctl(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    TinyModel::byte().seed(1).save(&model).unwrap();
    model
}

/// A GRPO job of `steps` steps on `model` (paths as given: relative ones resolve in the cwd).
fn grpo_config(dir: &Path, model: &str, steps: u64, prompts: usize, tokens: usize) -> PathBuf {
    JobToml::grpo(Path::new(model), steps)
        .set("data", "train_size", 64)
        .unset("data", "test_size")
        .tokens(tokens)
        .without("learner.schedule")
        .set("grpo", "prompts_per_step", prompts as i64)
        .set("grpo", "max_batch", 64)
        .set("checkpoint", "every_steps", 100_000)
        .write(&dir.join("job.toml"))
        .unwrap()
}

#[test]
fn help_names_every_stage_and_no_stale_plan() {
    let dir = tempfile::tempdir().unwrap();
    let top = text(&r1ctl(&["--help"], dir.path()).stdout);
    assert!(!top.contains("once r1d exists"), "{top}");
    assert!(top.contains("r1d"), "{top}");
    let train = text(&r1ctl(&["train", "--help"], dir.path()).stdout);
    assert!(train.contains("preference"), "{train}");
    assert!(
        train.contains("130"),
        "the second signal's exit status: {train}"
    );
    let help = text(&r1ctl(&["help"], dir.path()).stdout);
    for command in ["delete", "steps", "watch", "train"] {
        assert!(help.contains(command), "no `{command}` in:\n{help}");
    }
    let eval = text(&r1ctl(&["eval", "--help"], dir.path()).stdout);
    assert!(eval.contains("--seed"), "{eval}");
}

#[test]
fn a_missing_path_names_the_key_and_the_folder_it_resolved_against_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = grpo_config(dir.path(), "runs/default/final", 2, 2, 8);
    let out = r1ctl(&["train", config.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("model.path"), "{stderr}");
    let cwd = dir.path().canonicalize().unwrap();
    assert!(
        stderr.contains(&format!("resolve against {}", cwd.display())),
        "{stderr}"
    );
    assert!(stderr.contains("comments at the top of"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the cause once: {stderr}"
    );
}

#[test]
fn check_validates_and_prints_the_resolved_job_without_running() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    let config = grpo_config(dir.path(), "model", 2, 2, 8);
    let out = r1ctl(&["train", "--check", config.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: toml::Value = toml::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(printed["run"]["stage"].as_str(), Some("grpo"));
    assert_eq!(printed["grpo"]["steps"].as_integer(), Some(2));
    // Defaults are filled in: a key the file never set.
    assert!(printed["learner"]["schedule"].get("peak_lr").is_some());
    assert!(!dir.path().join("out").exists(), "--check ran the stage");
    // The printed job is itself a valid config.
    std::fs::write(dir.path().join("printed.toml"), text(&out.stdout)).unwrap();
    let again = r1ctl(&["train", "--check", "printed.toml"], dir.path());
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    // And a bad one is refused with the key.
    let bad = r1ctl(&["train", "--check", "missing.toml"], dir.path());
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn steps_is_refused_for_stages_without_steps() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    std::fs::write(
        dir.path().join("q.jsonl"),
        "{\"prompt\": \"7?\", \"answer\": \"7\"}\n",
    )
    .unwrap();
    for stage in ["eval", "rejection"] {
        let config = dir.path().join(format!("{stage}.toml"));
        std::fs::write(
            &config,
            format!(
                "[run]\nname = \"x\"\nstage = \"{stage}\"\noutput_dir = \"out-{stage}\"\n\n[model]\npath = \"model\"\ntemplate = \"chatml\"\ntokenizer = \"byte\"\n\n[data]\nkind = \"jsonl\"\npath = \"q.jsonl\"\n"
            ),
        )
        .unwrap();
        let out = r1ctl(
            &["train", config.to_str().unwrap(), "--steps", "3"],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(2), "{stage}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("--steps")
                && stderr.contains(&format!("the {stage} stage takes no steps")),
            "{stderr}"
        );
        assert!(!dir.path().join(format!("out-{stage}")).exists());
    }
}

#[test]
fn a_distill_job_with_a_missing_student_is_refused_before_the_teacher_samples() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    std::fs::write(
        dir.path().join("q.jsonl"),
        "{\"prompt\": \"7?\", \"answer\": \"7\"}\n",
    )
    .unwrap();
    let config = dir.path().join("distill.toml");
    std::fs::write(
        &config,
        "[run]\nname = \"d\"\nstage = \"distill\"\noutput_dir = \"out\"\n\n[model]\npath = \"model\"\ntemplate = \"chatml\"\ntokenizer = \"byte\"\n\n[data]\nkind = \"jsonl\"\npath = \"q.jsonl\"\n\n[distill]\nstudent = \"no-student\"\n",
    )
    .unwrap();
    let out = r1ctl(&["train", "distill.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("distill.student"), "{stderr}");
    assert!(
        !stderr.contains("sampled"),
        "the teacher sampled first: {stderr}"
    );
    assert!(!dir.path().join("out").exists());
}

/// Starts a long GRPO run, waits for its first step line, and returns the child and its stdout.
fn long_run(
    dir: &Path,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    tiny_model(dir);
    // Steps long enough (many prompts, long completions) that two signals land in one step.
    let config = grpo_config(dir, "model", 100_000, 32, 96);
    let mut child = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .arg("train")
        .arg(&config)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("r1ctl train ended early").unwrap();
        if line.starts_with("step") {
            break;
        }
    }
    (child, lines)
}

#[test]
fn ctrl_c_is_acknowledged_at_once_and_the_summary_says_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines) = long_run(dir.path());
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    // The acknowledgement comes before the step ends (the summary, on stdout, comes after).
    let first = stderr
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("stopping") || l.contains("stopped"))
        .expect("no acknowledgement");
    assert!(
        first.contains("stopping after the current step") && first.contains("Ctrl-C again"),
        "{first}"
    );
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{rest:?}");
    let summary = rest
        .iter()
        .find(|l| !l.starts_with("step"))
        .expect("a summary");
    assert!(summary.starts_with("stopped: step"), "{rest:?}");
    assert!(!rest.iter().any(|l| l.starts_with("done")), "{rest:?}");
}

#[test]
fn a_second_ctrl_c_exits_130_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _lines) = long_run(dir.path());
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    // Only after the first is seen: two signals pending at once are one to the kernel.
    stderr
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("stopping after the current step"))
        .expect("no acknowledgement");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = stderr.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("second signal")), "{rest:?}");
}
