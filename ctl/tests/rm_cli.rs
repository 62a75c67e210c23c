//! `r1ctl rm train` and `r1ctl rm score`: a tiny reward model trained from a config and pairs file
//! is written as a sequence-classification directory and ranks the pairs right; bad input exits 2
//! with the file and line named.

use std::path::Path;
use std::process::Command;

use r1_kernels::model::load_reward_model_dir;

fn write_job(dir: &Path, data: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"
name = "rm-test"
output_dir = "{out}"

[model]
init = {{ kind = "tiny", hidden_size = 32, num_layers = 1 }}
tokenizer = "byte"
pad_token_id = 257

[data]
kind = "pairs"
path = "{data}"
validation_fraction = 0.25

[train]
epochs = 3
batch_size = 8
lr = 2e-3
warmup_steps = 2
max_tokens = 64
"#,
        out = dir.join("out").display(),
        data = data.display()
    );
    let path = dir.join("rm.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn pairs(n: usize) -> String {
    let names = ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"];
    (0..n)
        .map(|i| {
            let name = names[i % names.len()];
            format!(
                "{{\"prompt\": \"greet {name}\", \"chosen\": \"Thanks, {name}!\", \"rejected\": \"Go away.\"}}\n"
            )
        })
        .collect()
}

#[test]
fn trains_saves_and_scores_a_tiny_reward_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.jsonl");
    std::fs::write(&data, pairs(64)).unwrap();
    let job = write_job(dir.path(), &data);
    let out = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .args(["rm", "train"])
        .arg(&job)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("validation accuracy"), "{stderr}");
    let model_dir = dir.path().join("out/final");
    let rm = load_reward_model_dir(&model_dir).unwrap();
    assert_eq!(rm.pad_token_id, Some(257));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["epochs"].as_array().unwrap().len(), 3);

    let out = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .args(["rm", "score"])
        .arg(&model_dir)
        .arg(&data)
        .args(["--tokenizer", "byte"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 64);
    assert!(lines
        .iter()
        .all(|l| l["chosen"].as_f64().unwrap() > l["rejected"].as_f64().unwrap()));
    assert!(stderr.contains("pairwise accuracy 100.0%"), "{stderr}");

    // The command config/examples/rm/tiny-pairs.toml documents, without --tokenizer: the directory
    // has no tokenizer.json and the byte vocabulary, so the byte tokenizer is inferred.
    let inferred = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .args(["rm", "score"])
        .arg(&model_dir)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        inferred.status.success(),
        "{}",
        String::from_utf8_lossy(&inferred.stderr)
    );
    assert_eq!(inferred.stdout, out.stdout);
}

#[test]
fn a_bad_pairs_file_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.jsonl");
    std::fs::write(
        &data,
        format!(
            "{}{{\"prompt\": \"p\", \"chosen\": \"x\", \"rejected\": \"x\"}}\n",
            pairs(3)
        ),
    )
    .unwrap();
    let job = write_job(dir.path(), &data);
    let out = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .args(["rm", "train"])
        .arg(&job)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pairs.jsonl:4") && stderr.contains("identical"),
        "{stderr}"
    );
}

/// Mean of the values after `key` in the step lines of `r1ctl train` output, over the first and
/// the last `k` steps.
fn start_end(out: &str, key: &str, k: usize) -> (f64, f64) {
    let values: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with("step"))
        .map(|l| {
            let rest = &l[l.find(key).unwrap_or_else(|| panic!("{key} in {l}")) + key.len()..];
            rest.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    assert!(values.len() >= 2 * k, "{out}");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    (mean(&values[..k]), mean(&values[values.len() - k..]))
}

/// The demo's stage run as a user runs the stage: the files `rm demo --keep` writes (policy,
/// reward models, prompts, preference.toml), then `r1ctl train preference.toml` from that folder —
/// the preference reward rises while rule accuracy on the reasoning prompts holds.
#[test]
fn the_demo_stage_from_its_files_raises_the_preference_reward_and_keeps_rule_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .args(["rm", "demo", "--steps", "0", "--keep"])
        .arg(&keep)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 0 steps train nothing and say so, instead of a curve of `-0.000 -> -0.000`.
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("0 steps, nothing trained"), "{printed}");
    assert!(!printed.contains("-0.000"), "{printed}");
    for file in [
        "policy/config.json",
        "helpfulness/config.json",
        "harmlessness/config.json",
        "additions.jsonl",
        "greetings.jsonl",
        "preference.toml",
    ] {
        assert!(keep.join(file).is_file(), "{file} missing");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_r1ctl"))
        .args(["train", "preference.toml"])
        .current_dir(&keep)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (p0, p1) = start_end(&stdout, "preference ", 3);
    let (a0, a1) = start_end(&stdout, "rule accuracy ", 3);
    eprintln!("preference reward {p0:+.3} -> {p1:+.3}; rule accuracy {a0:.3} -> {a1:.3}");
    assert!(p1 > p0 + 0.5, "preference reward {p0} -> {p1}\n{stdout}");
    assert!(a1 >= a0 - 0.05, "rule accuracy {a0} -> {a1}\n{stdout}");
    assert!(keep
        .join("runs/preference/final/model.safetensors")
        .is_file());
}
