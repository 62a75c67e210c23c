//! `r1ctl devices` and the `[devices]` table through `r1ctl train`: the machine's devices as a
//! table and as JSON; a config asking for a GPU this machine lacks refused by `train` and
//! `train --check` before anything runs; `auto` falling back to the CPU and saying so; the
//! memory estimate by device in `train --check`; an over-size run refused under
//! `R1_DEVICE_MEMORY_LIMIT` with its figures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use r1_kernels::bench::builtin_config;
use r1_kernels::device;
use r1_kernels::model::{save_model_dir, Model};

fn r1ctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_r1ctl"));
    cmd.args(args).env_remove(device::memory::MEMORY_LIMIT_VAR);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tiny GRPO job config in `dir` with `devices` as its `[devices]` table (empty: none).
fn job(dir: &Path, devices: &str) -> PathBuf {
    let model = dir.join("model");
    if !model.exists() {
        save_model_dir(
            &Model::random(builtin_config("tiny-qwen2").unwrap(), 1, 0.05),
            &model,
        )
        .unwrap();
    }
    let text = format!(
        "[run]\nname = \"tiny\"\nstage = \"grpo\"\noutput_dir = \"{out}\"\n\n[model]\npath = \"{model}\"\ntokenizer = \"byte\"\n\n[data]\nkind = \"builtin\"\ntask = \"arithmetic\"\ntrain_size = 8\n\n[sampling]\nmax_new_tokens = 8\n\n[learner]\ngroup_size = 2\nminibatches = 1\n\n[grpo]\nsteps = 1\nprompts_per_step = 2\nmax_batch = 4\n{devices}",
        out = dir.join("out").display(),
        model = model.display(),
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn devices_lists_the_cpu_with_memory_and_says_why_there_is_no_gpu() {
    let list = device::list();
    let out = r1ctl(&["devices"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("DEVICE") && lines[0].contains("TOTAL") && lines[0].contains("FREE"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("cpu ") && lines[1].contains("GiB"),
        "{stdout}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("cuda:")).count(),
        list.cuda_count(),
        "{stdout}"
    );
    if let Some(why) = &list.cuda_unavailable {
        assert!(
            stdout.contains(&format!("no CUDA device: {why}")),
            "{stdout}"
        );
    }

    let out = r1ctl(&["devices", "-o", "json"], &[]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["devices"][0]["device"], "cpu");
    assert!(json["devices"][0]["total_bytes"].as_u64().unwrap() > 0);
    assert_eq!(json["cuda_unavailable"].is_string(), list.cuda_count() == 0);
    // Without a GPU there is no NCCL either, and the list says why.
    if list.cuda_count() == 0 {
        assert!(
            json["nccl_unavailable"]
                .as_str()
                .is_some_and(|why| why.starts_with("no CUDA device")),
            "{json}"
        );
    }
    // The same shape as r1d's GET /v1/devices.
    let api: r1_api::DevicesResponse = serde_json::from_value(json).unwrap();
    assert_eq!(api.devices.len(), list.devices.len());
}

#[test]
fn a_gpu_this_machine_lacks_is_refused_before_anything_runs() {
    if device::list().cuda_count() > 0 {
        eprintln!("skipped: this machine has a GPU");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = job(dir.path(), "\n[devices]\nsampler = \"cuda:0\"\n");
    for args in [vec!["train", "--check"], vec!["train"]] {
        let mut args = args.clone();
        let path = config.display().to_string();
        args.push(&path);
        let out = r1ctl(&args, &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(
                "devices.sampler: cuda:0 was asked for, but this machine has no usable GPU"
            ),
            "{args:?}: {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(
            !dir.path().join("out").exists(),
            "{args:?}: nothing was written"
        );
    }
}

#[test]
fn check_shows_where_auto_went_and_the_estimate_by_device() {
    let dir = tempfile::tempdir().unwrap();
    let config = job(dir.path(), "");
    let path = config.display().to_string();
    let out = r1ctl(&["train", "--check", &path], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    if device::list().cuda_count() == 0 {
        assert!(
            stderr.contains("r1ctl train: device auto: no GPU found (")
                && stderr.contains("running on the CPU"),
            "{stderr}"
        );
        assert!(
            stderr.contains("r1ctl train: devices: sampler cpu, learner cpu, reward models cpu"),
            "{stderr}"
        );
        assert!(
            stderr.contains("r1ctl train: memory on cpu: ")
                && stderr.contains("AdamW moments")
                && stderr.contains("activations")
                && stderr.contains("KV cache"),
            "{stderr}"
        );
    }
    // The job printed back carries the table with every default.
    assert!(
        stdout.contains("[devices]") && stdout.contains("learners = 1"),
        "{stdout}"
    );

    // R1_DEVICE_MEMORY_LIMIT = 1 MiB: refused with the figures by category.
    let out = r1ctl(
        &["train", "--check", &path],
        &[(device::memory::MEMORY_LIMIT_VAR, "1MiB")],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("does not fit on ")
            && stderr.contains("weights ")
            && stderr.contains("1.0 MiB available (R1_DEVICE_MEMORY_LIMIT)"),
        "{stderr}"
    );
    let out = r1ctl(
        &["train", "--check", &path],
        &[(device::memory::MEMORY_LIMIT_VAR, "lots")],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("R1_DEVICE_MEMORY_LIMIT=\"lots\" is not a size"),
        "{stderr}"
    );
}
