//! The daemon's view of devices: `GET /v1/devices` lists this machine's devices with memory (and
//! why CUDA is unavailable), a job asking for a GPU this machine lacks is refused by
//! `POST /v1/runs` and `r1ctl start` with a 400 naming the key, before the run gets an id, and
//! data-parallel learner replicas (`[devices] learners = N`) train in r1d as in `r1ctl train`.

mod common;

use std::time::{Duration, Instant};

use common::{job_config, Daemon};

#[test]
fn devices_are_listed_and_a_missing_gpu_is_refused_before_a_run_id_exists() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("state"));
    let list = r1_kernels::device::list();

    let devices = d.get("/v1/devices").unwrap();
    let body: r1_daemon::api::DevicesResponse = serde_json::from_value(devices.clone()).unwrap();
    assert_eq!(body.devices[0].device, "cpu", "{devices}");
    assert!(body.devices[0].total_bytes > 0, "{devices}");
    assert_eq!(body.devices.len(), list.devices.len(), "{devices}");
    assert_eq!(
        body.cuda_unavailable.is_some(),
        list.cuda_count() == 0,
        "{devices}"
    );
    assert_eq!(body.nccl_unavailable, list.nccl_unavailable, "{devices}");
    // The token is required, as on every route but /healthz.
    let status = ureq::get(&d.url("/v1/devices")).call().unwrap_err();
    assert!(matches!(status, ureq::Error::Status(401, _)), "{status:?}");

    if list.cuda_count() > 0 {
        eprintln!("skipped the refusal: this machine has a GPU");
        return;
    }
    let config = job_config(dir.path(), 2, 1);
    let text = std::fs::read_to_string(&config).unwrap() + "\n[devices]\nlearner = \"cuda:0\"\n";
    std::fs::write(&config, &text).unwrap();
    let (status, body) = d
        .post(
            "/v1/runs",
            &serde_json::json!({"config_toml": text, "source": "gpu.toml"}),
        )
        .unwrap_err();
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "gpu.toml: devices.learner: cuda:0 was asked for, but this machine has no usable GPU"
        ),
        "{message}"
    );
    let out = d.r1ctl(&["start".as_ref(), config.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("devices.learner: cuda:0 was asked for"),
        "{stderr}"
    );
    // No run was created by either.
    let runs = d.get("/v1/runs").unwrap();
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
}

#[test]
fn data_parallel_learners_in_r1d_survive_a_sigkill_and_reach_r1ctl_train_s_weights() {
    // `[devices] learners = 2` with ZeRO-1: r1d's learner actor holds two replicas. Killed with
    // SIGKILL after its first checkpoint and started again, the run ends on the weights
    // `r1ctl train` reaches with the same two replicas, bit for bit.
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 8, 2);
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[devices]\nlearners = 2\nshard_optimizer = true\n";
    std::fs::write(&config, &text).unwrap();
    let state = dir.path().join("state");
    let d = Daemon::start(&state);
    let id = d.start_run(&config);
    // Killed as soon as its first checkpoint is recorded (the run has 8 steps).
    let began = Instant::now();
    while d
        .get(&format!("/v1/runs/{id}/checkpoints"))
        .unwrap()
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(began.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    d.kill9();

    let d = Daemon::start(&state);
    common::finishes_resumed_on_r1ctl_train_weights(&d, &id, &config, dir.path(), 8);
}
