//! Sizes and memory against a real `r1d`: absurd sizes in a job config or a model's config.json
//! are 400s naming the key (the daemon stays up); a run whose model turns absurd while r1d is
//! down fails alone when resumed; a run during whose resume r1d goes down three times is failed
//! instead of resumed a fourth time (the crash-loop guard); and under an address-space limit
//! (`ulimit -v`, set with prlimit on the running daemon) a model too big to train is refused with
//! the figures while the daemon keeps answering.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use common::{job_config, Daemon};
use r1_kernels::bench::builtin_config;
use r1_kernels::model::{ModelConfig, ParamLayout};

/// `model/config.json` under `dir`, with `key` set to `value`, in a copy of the tiny model at
/// `dir/<name>`; returns the copy's path.
fn absurd_model(dir: &Path, name: &str, key: &str, value: u64) -> PathBuf {
    let from = dir.join("model");
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for file in ["model.safetensors", "config.json"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    set_config_key(&to, key, value);
    to
}

fn set_config_key(model: &Path, key: &str, value: u64) {
    let path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config[key] = json!(value);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

fn message(body: &serde_json::Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn absurd_sizes_are_refused_with_a_400_naming_the_key_and_r1d_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 2, 1);
    let text = std::fs::read_to_string(&config).unwrap();
    let d = Daemon::start(&dir.path().join("state"));

    for (from, to, key) in [
        (
            "group_size = 2",
            "group_size = 1000000000000",
            "learner.group_size",
        ),
        (
            "prompts_per_step = 2",
            "prompts_per_step = 1000000000",
            "grpo.prompts_per_step",
        ),
        (
            "max_completion_length = 8",
            "max_completion_length = 0",
            "learner.grpo.max_completion_length",
        ),
        (
            "min_lr_ratio = 1.0",
            "min_lr_ratio = nan",
            "learner.schedule.min_lr_ratio",
        ),
    ] {
        let (status, body) = d
            .post(
                "/v1/runs",
                &json!({"config_toml": text.replace(from, to), "source": "big.toml"}),
            )
            .unwrap_err();
        assert_eq!(status, 400, "{key}: {body}");
        assert!(message(&body).contains(key), "{key}: {body}");
    }

    let model = dir.path().join("model").display().to_string();
    for (key, value) in [
        ("vocab_size", 1_000_000_000_000u64),
        ("vocab_size", 1_000_000_000),
        ("num_hidden_layers", 10_000_000),
        ("num_hidden_layers", 1_000_000_000),
        ("intermediate_size", 1_000_000_000_000),
        ("head_dim", 1_000_000),
    ] {
        let absurd = absurd_model(dir.path(), &format!("{key}-{value}"), key, value);
        let (status, body) = d
            .post(
                "/v1/runs",
                &json!({"config_toml": text.replace(&model, &absurd.display().to_string())}),
            )
            .unwrap_err();
        assert_eq!(status, 400, "{key} = {value}: {body}");
        let m = message(&body);
        assert!(
            m.contains("model.path") && m.contains(key) && m.contains("would need"),
            "{key} = {value}: {m}"
        );
    }

    // A data file with nothing in it: refused now, naming the file, not at step 1.
    std::fs::write(dir.path().join("empty.jsonl"), "").unwrap();
    let empty = text.replace(
        "kind = \"builtin\"\ntask = \"arithmetic\"\ntrain_size = 32\ntest_size = 8",
        &format!(
            "kind = \"jsonl\"\npath = \"{}\"",
            dir.path().join("empty.jsonl").display()
        ),
    );
    assert_ne!(empty, text);
    let (status, body) = d
        .post("/v1/runs", &json!({"config_toml": empty}))
        .unwrap_err();
    assert_eq!(status, 400, "{body}");
    assert!(
        message(&body).contains("empty.jsonl") && message(&body).contains("data.path"),
        "{body}"
    );

    // Still up, and a sound config starts.
    assert!(ureq::get(&d.url("/healthz")).call().is_ok());
    let run = d.post("/v1/runs", &json!({"config_toml": text})).unwrap();
    assert_eq!(run["id"], "run-0001", "{run}");
}

#[test]
fn a_run_whose_model_became_absurd_while_r1d_was_down_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    // No checkpoint before the kill: the resume loads the model directory again.
    let config = job_config(dir.path(), 400, 1000);
    let state = dir.path().join("state");
    let d = Daemon::start(&state);
    let id = d.start_run(&config);
    d.wait_for(&id, Duration::from_secs(120), |r| {
        r["step"].as_u64().unwrap_or(0) >= 2
    });
    d.kill9();
    set_config_key(&dir.path().join("model"), "vocab_size", 1_000_000_000_000);

    let d = Daemon::start(&state);
    let run = d.wait_for(&id, Duration::from_secs(60), |r| r["state"] == "failed");
    let m = run["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("vocab_size") && m.contains("would need"),
        "{run}"
    );
    assert!(ureq::get(&d.url("/healthz")).call().is_ok());
    assert_eq!(d.get("/v1/runs").unwrap().as_array().unwrap().len(), 1);
}

#[test]
fn a_run_that_takes_r1d_down_three_times_while_resuming_is_failed_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 400, 1);
    // Long first steps after a resume (whole 200-token completions, 16 of them), so that a
    // kill right after the run starts loading lands before its first step.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "max_new_tokens = 8",
            "max_new_tokens = 200\nignore_eos = true",
        )
        .replace("max_completion_length = 8", "max_completion_length = 200")
        .replace("group_size = 2", "group_size = 4")
        .replace("prompts_per_step = 2", "prompts_per_step = 4")
        .replace("max_batch = 4", "max_batch = 16");
    std::fs::write(&config, text).unwrap();
    let state = dir.path().join("state");
    let d = Daemon::start(&state);
    let id = d.start_run(&config);
    d.wait_for(&id, Duration::from_secs(300), |r| {
        r["step"].as_u64().unwrap_or(0) >= 1
    });
    // A kill while the run trains normally is not a crash during resume.
    d.kill9();

    // Each restart: kill r1d as soon as the run reports that it is loading again (its record
    // is touched after the daemon started), i.e. during the resume.
    let mut kills = 0;
    let failed = loop {
        let spawned = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let d = Daemon::start(&state);
        let began = Instant::now();
        let run = loop {
            let run = d.run(&id);
            if run["state"] == "failed" || run["updated_unix"].as_f64().unwrap_or(0.0) > spawned {
                break run;
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "the run never resumed: {run}"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        if run["state"] == "failed" {
            break (d, run);
        }
        d.kill9();
        kills += 1;
        assert!(
            kills <= 10,
            "after {kills} kills during resume the run is still resumed: {run}"
        );
    };
    let (d, run) = failed;
    assert!(kills >= 3, "failed after only {kills} kills: {run}");
    let m = run["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("r1d went down 3 times") && m.contains("not resumed again"),
        "{run}"
    );
    // The daemon serves, and the failed run stays failed across a restart.
    assert!(ureq::get(&d.url("/healthz")).call().is_ok());
    let step = run["step"].as_u64().unwrap();
    drop(d);
    let d = Daemon::start(&state);
    std::thread::sleep(Duration::from_millis(500));
    let again = d.run(&id);
    assert_eq!(again["state"], "failed", "{again}");
    assert_eq!(again["step"].as_u64().unwrap(), step, "{again}");
}

/// A Qwen2 model directory of ~34M parameters whose weights file is sparse (bf16 zeros, written
/// without touching the disk): real shapes for every tensor, a few MiB on disk.
fn sparse_model(dir: &Path) -> PathBuf {
    let config = ModelConfig {
        hidden_size: 512,
        intermediate_size: 2048,
        num_layers: 4,
        num_heads: 8,
        num_kv_heads: 8,
        head_dim: 64,
        vocab_size: 16_384,
        tie_word_embeddings: false,
        max_position_embeddings: 512,
        ..builtin_config("tiny-qwen2").unwrap()
    };
    let layout = ParamLayout::new(&config);
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for slot in &layout.slots {
        let bytes = slot.len * 2;
        header.insert(
            slot.name.clone(),
            json!({"dtype": "BF16", "shape": slot.shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&header).unwrap();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let model = dir.join("big-model");
    std::fs::create_dir_all(&model).unwrap();
    let path = model.join("model.safetensors");
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(&header);
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((bytes.len() + offset) as u64).unwrap();
    std::fs::write(
        model.join("config.json"),
        serde_json::to_vec(&config.to_json()).unwrap(),
    )
    .unwrap();
    model
}

/// Bytes of address space the process maps now (`VmSize`).
fn vm_size(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn under_an_address_space_limit_a_model_too_big_is_refused_with_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 2, 1);
    let text = std::fs::read_to_string(&config).unwrap();
    let big = sparse_model(dir.path());
    let d = Daemon::start(&dir.path().join("state"));

    // `ulimit -v` on the running daemon: 512 MiB more than it maps now. The model needs ~0.7 GiB
    // to train (weights, gradients, two moments, the reference; the sampler decodes the
    // learner's weights).
    let limit = vm_size(d.child.id()) + (512 << 20);
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads one rlimit struct we own and writes nothing (old_limit is null).
    let r = unsafe {
        libc::prlimit(
            d.child.id() as libc::pid_t,
            libc::RLIMIT_AS,
            &rlimit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());

    let model = dir.path().join("model").display().to_string();
    let (status, body) = d
        .post(
            "/v1/runs",
            &json!({"config_toml": text.replace(&model, &big.display().to_string()), "source": "big.toml"}),
        )
        .unwrap_err();
    assert_eq!(status, 400, "{body}");
    let m = message(&body);
    assert!(
        m.contains("big.toml")
            && m.contains("model.path")
            && m.contains("needs ")
            && m.contains("available")
            && m.contains("RLIMIT_AS")
            && m.contains("AdamW moments"),
        "{m}"
    );
    // Still up: it answers the next requests.
    assert!(ureq::get(&d.url("/healthz")).call().is_ok());
    assert_eq!(d.get("/v1/runs").unwrap(), json!([]));
}
