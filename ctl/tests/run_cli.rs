//! `r1ctl run` as a user runs it, on a tiny config file so it takes seconds: progress on stderr,
//! the table or the report JSON on stdout, the run directory filled, exit 0; a bad config or an
//! unknown key is exit 2 with a message naming it.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// A few seconds' worth of the default run: a smaller model and a few steps of each stage.
const TINY: &str = r#"
seed = 3
time_budget_secs = 0

[model]
hidden_size = 32
intermediate_size = 64
num_layers = 1
num_heads = 2
num_kv_heads = 1

[sft]
examples = 16
steps = 3
batch_size = 4
warmup_steps = 1

[grpo]
steps = 2
prompts_per_step = 2
group_size = 4
max_new_tokens = 24

[eval]
problems = 4
samples = 2
"#;

/// Exit code, stdout and stderr of `r1ctl run ARGS`.
fn r1ctl_run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .arg("run")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("r1ctl did not start: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_tiny_run_prints_progress_a_table_and_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), TINY);
    let run_dir = dir.path().join("run");
    let run_dir_arg = run_dir.to_string_lossy().into_owned();
    let (code, stdout, stderr) = r1ctl_run(&["--config", &config, "--dir", &run_dir_arg]);
    assert_eq!(code, 0, "stderr: {stderr}");
    for line in [
        "Sft:",
        "sft 3/3",
        "EvalBefore",
        "grpo 2/2",
        "EvalAfter",
        "Save:",
    ] {
        assert!(stderr.contains(line), "no `{line}` progress in:\n{stderr}");
    }
    assert!(stdout.contains("cold start (SFT)") && stdout.contains("after GRPO"));
    let checkpoint = run_dir.join("final");
    assert!(
        stdout.contains(&format!("checkpoint: {}", checkpoint.display())),
        "{stdout}"
    );
    assert!(checkpoint.join("model.safetensors").is_file());
    assert!(run_dir.join("report.json").is_file());
}

#[test]
fn json_output_is_the_report_and_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), TINY);
    let run_dir = dir.path().join("run").to_string_lossy().into_owned();
    let (code, stdout, stderr) = r1ctl_run(&[
        "--config", &config, "--dir", &run_dir, "--seed", "9", "-o", "json",
    ]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["config"]["seed"], 9);
    assert_eq!(report["config"]["model"]["hidden_size"], 32);
    assert!(report["before"]["accuracy"].is_number() && report["after"]["format_rate"].is_number());
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/report.json")).unwrap())
            .unwrap();
    assert_eq!(written, report);
}

#[test]
fn bad_configs_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run").to_string_lossy().into_owned();
    let unknown = write_config(dir.path(), "[grpo]\nstep = 3\n");
    let (code, _, stderr) = r1ctl_run(&["--config", &unknown, "--dir", &run_dir]);
    assert_eq!(code, 2);
    assert!(stderr.contains("step"), "{stderr}");
    let invalid = write_config(dir.path(), "[grpo]\ngroup_size = 1\n");
    let (code, _, stderr) = r1ctl_run(&["--config", &invalid, "--dir", &run_dir]);
    assert_eq!(code, 2);
    assert!(stderr.contains("grpo.group_size"), "{stderr}");
    assert!(
        !Path::new(&run_dir).exists(),
        "nothing written for a bad config"
    );
}

#[test]
fn print_config_shows_the_documented_defaults_as_toml() {
    let (code, stdout, stderr) = r1ctl_run(&["--print-config", "--seed", "5"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("seed = 5"), "{stdout}");
    for section in ["[model]", "[task]", "[sft]", "[grpo]", "[eval]"] {
        assert!(stdout.contains(section), "{stdout}");
    }
}

#[test]
fn the_smollm2_recipe_is_built_in_and_names_what_it_lacks() {
    // The recipe's settings, printed as a config a user can copy.
    let (code, stdout, stderr) = r1ctl_run(&["--recipe", "smollm2", "--print-config"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    for line in [
        "model_dir = \"models/smollm2\"",
        "template = \"chatml\"",
        "op = \"multiply\"",
        "base = true",
    ] {
        assert!(stdout.contains(line), "{line} not in\n{stdout}");
    }
    // Without its model, the run stops before writing anything, naming the directory.
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run").to_string_lossy().into_owned();
    let missing = dir.path().join("no-model").to_string_lossy().into_owned();
    let (code, _, stderr) = r1ctl_run(&[
        "--recipe",
        "smollm2",
        "--model-dir",
        &missing,
        "--dir",
        &run_dir,
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains(&missing), "{stderr}");
    // An unknown recipe lists the known ones; a recipe and a config file do not mix.
    let (code, _, stderr) = r1ctl_run(&["--recipe", "gpt5", "--print-config"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("known: smollm2"), "{stderr}");
    let config = write_config(dir.path(), "seed = 1\n");
    let (code, _, stderr) = r1ctl_run(&["--recipe", "smollm2", "--config", &config]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--config"), "{stderr}");
}
