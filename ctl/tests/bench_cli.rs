//! `r1ctl bench` as a user runs it: a built-in shape, JSON output, a baseline file, bad arguments.

use std::process::Command;

fn r1ctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_r1ctl"))
}

#[test]
fn bench_prints_every_measurement_as_json() {
    let out = r1ctl()
        .args([
            "bench",
            "tiny-qwen2",
            "-b",
            "2",
            "-t",
            "32",
            "-r",
            "1",
            "--decode-tokens",
            "4",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = json["r1"]["rows"].as_array().unwrap();
    let tests: Vec<&str> = rows.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["train", "prefill", "decode", "decode", "grpo"]);
    for row in rows {
        assert!(
            row["tokens_per_s"].as_f64().unwrap() > 0.0 && row["gflops"].as_f64().unwrap() > 0.0
        );
    }
    assert!(json["r1"]["gemm_peak_gflops"].as_f64().unwrap() > 0.0);
    assert!(json["baseline"].is_null());
}

#[test]
fn bench_shows_the_baseline_beside_our_figures() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("torch.json");
    std::fs::write(&baseline, "warning: noise\n{\"torch\": \"2.15\", \"train_tokens_per_s\": 100.0, \"prefill_tokens_per_s\": 200.0, \"decode_tokens_per_s\": 50.0}\n").unwrap();
    let out = r1ctl()
        .args([
            "bench",
            "tiny-qwen2",
            "-b",
            "1",
            "-t",
            "16",
            "-r",
            "1",
            "--tests",
            "train,prefill",
            "--baseline",
        ])
        .arg(&baseline)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("torch 2.15"), "{table}");
    let train = table.lines().find(|l| l.starts_with("train")).unwrap();
    assert!(train.contains("100.0") && train.contains('x'), "{train}");
    assert!(
        !table.lines().any(|l| l.starts_with("decode")),
        "only the asked tests run"
    );
}

#[test]
fn bad_arguments_exit_with_status_2_and_say_why() {
    let out = r1ctl().args(["bench", "no-such-model"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("neither a model directory nor a built-in shape"));
    let out = r1ctl()
        .args(["bench", "tiny-qwen2", "--tests", "fly"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown test"));
    let out = r1ctl()
        .args(["bench", "tiny-qwen2", "-b", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
