//! `r1ctl samples|steps|report RUN_DIR`: an in-process run's records read from its output
//! directory — the table and `-o json` of a daemon run's, `--limit` and `--after` honoured — its
//! charts rewritten, an eval run's samples with their verdicts, and clear answers for a directory
//! without records and a path that is not there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use r1_config::testkit::JobToml;
use r1_kernels::model::tiny::TinyModel;

fn model(dir: &Path) -> PathBuf {
    let path = dir.join("model");
    TinyModel::byte().seed(1).save(&path).unwrap();
    path
}

fn config(dir: &Path, stage: &str, model: &Path, output: &Path) -> PathBuf {
    JobToml::grpo(model, 3)
        .set("run", "name", "records")
        .set("run", "stage", stage)
        .set_path("run", "output_dir", output)
        .set("data", "train_size", 16)
        .set("data", "test_size", 3)
        .without("learner.schedule")
        .without("checkpoint")
        .set("eval", "samples", 2)
        .write(&dir.join(format!("{stage}.toml")))
        .unwrap()
}

fn r1ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .args(args)
        .env("R1_STATE_DIR", "/nonexistent-r1d-state")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(out: &Output) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(out)).unwrap()
}

#[test]
fn an_in_process_runs_samples_steps_and_charts_are_read_from_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let run = dir.path().join("grpo-run");
    let trained = r1ctl(&[
        "train",
        config(dir.path(), "grpo", &model, &run).to_str().unwrap(),
    ]);
    ok(&trained);
    // The run says where its records are and what reads them.
    let said = String::from_utf8_lossy(&trained.stderr);
    assert!(
        said.contains(&format!("`r1ctl samples {}`", run.display())),
        "{said}"
    );
    let run_arg = run.to_str().unwrap();

    // One sample per group (2 prompts a step), 3 steps; --limit keeps the newest, newest last.
    let all = json(&r1ctl(&[
        "samples", run_arg, "--limit", "100", "-o", "json",
    ]));
    let numbers: Vec<u64> = all.iter().map(|s| s["step"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 1, 2, 2, 3, 3]);
    let two = json(&r1ctl(&["samples", run_arg, "--limit", "2", "-o", "json"]));
    assert_eq!(two, all[4..].to_vec());
    for s in &all {
        for field in [
            "step",
            "prompt",
            "completion",
            "reward",
            "accuracy",
            "format",
        ] {
            assert!(s.get(field).is_some(), "no {field} in {s}");
        }
    }
    let table = ok(&r1ctl(&["samples", run_arg, "--limit", "1"]));
    assert!(table.starts_with("── step 3  reward "), "{table}");
    assert!(table.contains("\nprompt:     "), "{table}");
    assert!(table.contains("\ncompletion: "), "{table}");

    let steps = json(&r1ctl(&["steps", run_arg, "-o", "json"]));
    let numbers: Vec<u64> = steps.iter().map(|s| s["step"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    let table = ok(&r1ctl(&["steps", run_arg, "--after", "1", "--limit", "1"]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].trim_start().starts_with("STEP"), "{table}");
    assert!(rows[1].trim_start().starts_with("2 "), "{table}");

    // The charts exist after the run; `report` rewrites them and names them.
    let kl = std::fs::read(run.join("kl.svg")).unwrap();
    std::fs::remove_file(run.join("kl.svg")).unwrap();
    let printed = ok(&r1ctl(&["report", run_arg]));
    let names: Vec<&str> = printed.lines().collect();
    assert_eq!(names.len(), 5, "{printed}");
    assert!(
        names.contains(&run.join("kl.svg").to_str().unwrap()),
        "{printed}"
    );
    assert_eq!(std::fs::read(run.join("kl.svg")).unwrap(), kl);

    // A directory without records, a path that is not there.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for command in ["samples", "steps", "report"] {
        let out = r1ctl(&[command, empty.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("has no") && stderr.contains("r1ctl train"),
            "{stderr}"
        );
    }
    let out = r1ctl(&["samples", dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such run directory"));
}

#[test]
fn an_eval_run_writes_every_sample_with_its_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let run = dir.path().join("eval-run");
    ok(&r1ctl(&[
        "train",
        config(dir.path(), "eval", &model, &run).to_str().unwrap(),
    ]));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 3 held-out problems × 2 samples, each with where it came from and its verdict.
    assert_eq!(lines.len(), 6);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["sample"].as_u64(), Some(i as u64 % 2), "{l}");
        let correct = l["correct"].as_bool().unwrap();
        assert_eq!(correct, l["accuracy"].as_f64() == Some(1.0), "{l}");
        assert!(l["prompt"].as_str().is_some_and(|p| !p.is_empty()), "{l}");
    }
    let shown = json(&r1ctl(&[
        "samples",
        run.to_str().unwrap(),
        "--limit",
        "10",
        "-o",
        "json",
    ]));
    assert_eq!(shown.len(), 6);
}
