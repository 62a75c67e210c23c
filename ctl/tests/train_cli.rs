//! `r1ctl train`: a GRPO stage from a job config, checkpointing as it goes; a run stopped and
//! started again (a new process, resuming from its checkpoint) ends with the same weights as one
//! that ran straight through.

use std::path::Path;
use std::process::Command;

use r1_config::testkit::JobToml;
use r1_kernels::model::tiny::TinyModel;

/// Three GRPO steps on `model`, writing to `output`, a checkpoint each step.
fn job(model: &Path, output: &Path) -> JobToml {
    JobToml::grpo(model, 3)
        .set_path("run", "output_dir", output)
        .set("data", "train_size", 16)
        .unset("data", "test_size")
}

fn write_config(dir: &Path, model: &Path, output: &Path) -> std::path::PathBuf {
    job(model, output).write(&dir.join("job.toml")).unwrap()
}

fn train(config: &Path, steps: Option<u64>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_r1ctl"));
    cmd.arg("train").arg(config);
    if let Some(s) = steps {
        cmd.args(["--steps", &s.to_string()]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_stopped_and_resumed_run_ends_with_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    TinyModel::byte().seed(1).save(&model_dir).unwrap();

    let straight = write_config(dir.path(), &model_dir, &dir.path().join("straight"));
    let out = train(&straight, None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("step")).count(),
        3,
        "{text}"
    );

    let split_dir = dir.path().join("split");
    std::fs::create_dir_all(&split_dir).unwrap();
    let split = write_config(&split_dir, &model_dir, &dir.path().join("resumed"));
    train(&split, Some(2));
    let out = train(&split, None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming at step 2"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("step")).count(),
        1,
        "only step 3 is left: {text}"
    );

    let final_a = std::fs::read(
        dir.path()
            .join("straight/checkpoints/step-00000003/model.safetensors"),
    )
    .unwrap();
    let final_b = std::fs::read(
        dir.path()
            .join("resumed/checkpoints/step-00000003/model.safetensors"),
    )
    .unwrap();
    assert!(
        final_a == final_b,
        "the resumed run's weights differ from the straight run's"
    );
    // keep_last = 2: step 1 was pruned.
    assert!(!dir
        .path()
        .join("straight/checkpoints/step-00000001")
        .exists());
}

#[test]
fn bad_configs_and_changed_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[run]\nname = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .arg("train")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.toml:2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let model_dir = dir.path().join("model");
    TinyModel::byte().seed(1).save(&model_dir).unwrap();
    let output = dir.path().join("run");
    let path = write_config(dir.path(), &model_dir, &output);
    train(&path, Some(1));
    job(&model_dir, &output)
        .set("learner.schedule", "peak_lr", 2e-3)
        .write(&path)
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .arg("train")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("different config"));
}

#[test]
fn ctrl_c_stops_after_the_step_with_a_checkpoint_and_the_run_resumes_from_it() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    TinyModel::byte().seed(1).save(&model_dir).unwrap();
    let path = write_config(dir.path(), &model_dir, &dir.path().join("out"));
    // Many steps, no checkpoint before the stop.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("steps = 3\n", "steps = 100000\n")
        .replace("every_steps = 1\n", "every_steps = 100000\n");
    std::fs::write(&path, text).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .arg("train")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut steps = 0;
    while steps < 2 {
        let line = lines.next().expect("r1ctl train ended early").unwrap();
        steps += usize::from(line.starts_with("step"));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{rest:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopped on request"), "{stderr}");
    // The stop wrote a checkpoint of the last step taken; the next run resumes from it.
    let checkpoints: Vec<_> = std::fs::read_dir(dir.path().join("out/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    let step: u64 = checkpoints[0].trim_start_matches("step-").parse().unwrap();
    assert!(step >= 2);
    let out = train(&path, Some(step + 1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("resuming at step {step}")),
        "{stderr}"
    );
}

#[test]
fn absurd_sizes_and_a_model_too_big_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    TinyModel::byte().seed(1).save(&model_dir).unwrap();
    let job = write_config(dir.path(), &model_dir, &dir.path().join("run"));
    let text = std::fs::read_to_string(&job).unwrap();
    let refused = |text: String, key: &str| {
        std::fs::write(&job, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
            .arg("train")
            .arg(&job)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
        stderr
    };
    refused(
        text.replace("group_size = 2", "group_size = 1000000000000"),
        "learner.group_size",
    );
    refused(
        text.replace("prompts_per_step = 2", "prompts_per_step = 1000000000"),
        "grpo.prompts_per_step",
    );
    // The model directory's config.json asks for a 1e12-token vocabulary.
    let path = model_dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["vocab_size"] = 1_000_000_000_000u64.into();
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let stderr = refused(text, "vocab_size");
    assert!(stderr.contains("would need"), "{stderr}");
    assert!(!dir.path().join("run").exists(), "nothing was written");
}

/// The tiny model's weights at `run`'s step-3 checkpoint.
fn step3_weights(run: &Path) -> Vec<f32> {
    r1_kernels::model::load_model_dir(&run.join("checkpoints/step-00000003"))
        .unwrap()
        .params
}

#[test]
fn devices_learners_two_trains_data_parallel_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    TinyModel::byte().seed(1).save(&model_dir).unwrap();
    let single = dir.path().join("single");
    train(
        &job(&model_dir, &single)
            .write(&dir.path().join("single.toml"))
            .unwrap(),
        None,
    );

    // Two replicas with ZeRO-1, straight through and stopped after step 1 then resumed.
    let parallel = |output: &Path, name: &str| {
        job(&model_dir, output)
            .set("devices", "learners", 2)
            .set("devices", "shard_optimizer", true)
            .write(&dir.path().join(name))
            .unwrap()
    };
    let straight = dir.path().join("dp-straight");
    let out = train(&parallel(&straight, "dp-straight.toml"), None);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(
            "2 data-parallel learner replicas on cpu, cpu, AdamW moments sharded (ZeRO-1)"
        ),
        "{log}"
    );
    let resumed = dir.path().join("dp-resumed");
    let config = parallel(&resumed, "dp-resumed.toml");
    train(&config, Some(1));
    train(&config, None);

    let (a, b) = (step3_weights(&straight), step3_weights(&resumed));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "the resumed data-parallel run differs from the straight one"
    );
    // The same training as the single learner: its weights within float rounding (on this
    // random tiny model most groups score alike, so the numeric comparison of summed gradients
    // lives in actors/tests/data_parallel.rs, on rollouts with rewards that differ).
    let one = step3_weights(&single);
    let off = one
        .iter()
        .zip(&a)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        off <= 1e-4,
        "the data-parallel run is {off} away from the single learner"
    );
}
