//! A real `r1d` driven over HTTP and through `r1ctl`: a run from start to finish with pause,
//! resume and stop; every bad request gets a JSON error with the right status; r1ctl's exit codes;
//! SIGTERM checkpoints and exits 0, and the next daemon resumes the run.

mod common;

use std::time::Duration;

use common::{job_config, preference_job_config, Daemon};
use r1_config::testkit::JobToml;
use serde_json::json;

fn code(e: (u16, serde_json::Value)) -> (u16, String) {
    let code = e.1["error"]["code"].as_str().unwrap_or("?").to_string();
    assert!(
        e.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {}",
        e.1
    );
    (e.0, code)
}

#[test]
fn the_api_runs_a_stage_and_refuses_bad_requests_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 12, 3);
    let d = Daemon::start(&dir.path().join("state"));

    // The token file is private; /healthz is open, everything else needs the token.
    let mode = std::fs::metadata(d.state.join("token")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    assert!(ureq::get(&d.url("/healthz")).call().is_ok());
    for path in ["/metrics", "/v1/runs"] {
        match ureq::get(&d.url(path)).call() {
            Err(ureq::Error::Status(401, r)) => {
                let body: serde_json::Value = r.into_json().unwrap();
                assert_eq!(body["error"]["code"], "unauthorized");
            }
            other => panic!("{path} without a token: {other:?}"),
        }
        let wrong = ureq::get(&d.url(path))
            .set("Authorization", "Bearer wrong-token-wrong-token")
            .call();
        assert!(matches!(wrong, Err(ureq::Error::Status(401, _))));
    }

    // Malformed JSON, unknown fields, oversize bodies, bad TOML (with its line), unknown runs/routes.
    let raw = ureq::post(&d.url("/v1/runs"))
        .set("Authorization", &format!("Bearer {}", d.token))
        .set("Content-Type", "application/json")
        .send_string("{not json");
    match raw {
        Err(ureq::Error::Status(400, r)) => {
            let body: serde_json::Value = r.into_json().unwrap();
            assert_eq!(body["error"]["code"], "bad_request");
        }
        other => panic!("malformed JSON: {other:?}"),
    }
    let big = "x".repeat(2 << 20);
    assert_eq!(
        code(
            d.post("/v1/runs", &json!({"config_toml": big}))
                .unwrap_err()
        ),
        (413, "payload_too_large".into())
    );
    assert_eq!(
        code(d.post("/v1/runs", &json!({"config": "x"})).unwrap_err()),
        (400, "bad_request".into())
    );
    let bad = d
        .post(
            "/v1/runs",
            &json!({"config_toml": "[run]\nname = \"x\"\nstage = \"grpo\"\nbogus = 1\n", "source": "bad.toml"}),
        )
        .unwrap_err();
    let message = bad.1["error"]["message"].as_str().unwrap().to_string();
    assert_eq!(bad.0, 400);
    assert!(
        message.contains("bad.toml:") && message.contains("bogus"),
        "{message}"
    );
    assert_eq!(
        code(d.get("/v1/runs/run-9999").unwrap_err()),
        (404, "not_found".into())
    );
    assert_eq!(
        code(d.get("/v1/nothing-here").unwrap_err()),
        (404, "not_found".into())
    );

    // A run: start, pause, resume; a second run is refused while it is active.
    let id = d.start_run(&config);
    assert_eq!(id, "run-0001");
    let again = d
        .post(
            "/v1/runs",
            &json!({"config_toml": std::fs::read_to_string(&config).unwrap()}),
        )
        .unwrap_err();
    assert_eq!(code(again), (409, "conflict".into()));
    d.wait_for(&id, Duration::from_secs(60), |r| {
        r["step"].as_u64() >= Some(1)
    });
    let out = d.r1ctl(&["pause".as_ref(), id.as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paused = d.wait_for(&id, Duration::from_secs(60), |r| r["state"] == "paused");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.run(&id)["step"],
        paused["step"],
        "a paused run takes no steps"
    );
    // Resuming a running run is a negative answer: exit code 1.
    let out = d.r1ctl(&["resume".as_ref(), id.as_ref()]);
    assert!(out.status.success());
    d.wait_for(&id, Duration::from_secs(60), |r| r["state"] != "paused");
    let out = d.r1ctl(&["resume".as_ref(), id.as_ref()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `r1ctl watch` follows it to the end.
    let out = d.r1ctl(&[
        "watch".as_ref(),
        id.as_ref(),
        "--interval".as_ref(),
        "0.05".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = d.run(&id);
    assert_eq!(done["state"], "finished");
    assert_eq!(done["step"], 12);

    // Steps 1..=12, each once; samples; checkpoints (keep_last 3: 6, 9, 12).
    let steps = d.get(&format!("/v1/runs/{id}/steps?limit=1000")).unwrap();
    let numbers: Vec<u64> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=12).collect::<Vec<_>>());
    let out = d.r1ctl(&[
        "samples".as_ref(),
        id.as_ref(),
        "-o".as_ref(),
        "json".as_ref(),
    ]);
    let samples: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(samples.as_array().unwrap().len(), 5);
    let out = d.r1ctl(&[
        "ckpt".as_ref(),
        "list".as_ref(),
        id.as_ref(),
        "-o".as_ref(),
        "json".as_ref(),
    ]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, [6, 9, 12]);

    // Export the last checkpoint as a HF folder: it loads, and equals the checkpoint's weights.
    let export = dir.path().join("export");
    let out = d.r1ctl(&[
        "ckpt".as_ref(),
        "export".as_ref(),
        id.as_ref(),
        "12".as_ref(),
        export.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = r1_kernels::model::load_model_dir(&export).unwrap();
    let original = r1_kernels::model::load_model_dir(
        &d.state
            .join("runs")
            .join(&id)
            .join("checkpoints/step-00000012"),
    )
    .unwrap();
    assert!(exported.params == original.params);

    // Evaluate through r1ctl: numbers in [0, 1], k and problems as asked.
    let out = d.r1ctl(&[
        "eval".as_ref(),
        id.as_ref(),
        "--k".as_ref(),
        "2".as_ref(),
        "--problems".as_ref(),
        "4".as_ref(),
        "-o".as_ref(),
        "json".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["step"], 12);
    assert_eq!(report["k"], 2);
    assert_eq!(report["problems"], 4);
    let pass = report["pass_at_1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&pass));
    assert_eq!(
        d.get(&format!("/v1/runs/{id}/evals"))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A finished run cannot be paused (exit 1); an unknown one is not found (exit 1).
    assert_eq!(
        d.r1ctl(&["pause".as_ref(), id.as_ref()]).status.code(),
        Some(1)
    );
    assert_eq!(
        d.r1ctl(&["status".as_ref(), "run-0042".as_ref()])
            .status
            .code(),
        Some(1)
    );

    // A second run now starts, and stop ends it early with a checkpoint of its last step.
    let config2 = job_config(&dir.path().join("second"), 400, 1000);
    let id2 = {
        std::fs::create_dir_all(dir.path().join("second")).unwrap();
        d.start_run(&config2)
    };
    assert_eq!(id2, "run-0002");
    d.wait_for(&id2, Duration::from_secs(60), |r| {
        r["step"].as_u64() >= Some(2)
    });
    let out = d.r1ctl(&["stop".as_ref(), id2.as_ref()]);
    assert!(out.status.success());
    let stopped = d.wait_for(&id2, Duration::from_secs(60), |r| r["state"] == "stopped");
    let step = stopped["step"].as_u64().unwrap();
    assert!(step < 400);
    let ckpts = d.get(&format!("/v1/runs/{id2}/checkpoints")).unwrap();
    assert_eq!(ckpts.as_array().unwrap().last().unwrap()["step"], step);

    // `list` shows both; a table goes to stdout.
    let out = d.r1ctl(&["list".as_ref()]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("run-0001") && table.contains("finished") && table.contains("stopped"),
        "{table}"
    );

    // Unreachable daemon: exit code 3.
    let (status, took) = d.terminate();
    assert!(status.success());
    assert!(took < Duration::from_secs(30));
    let out = std::process::Command::new(common::bin("r1ctl"))
        .args(["list", "--addr", "127.0.0.1:1"])
        .env("R1_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_checkpoints_and_exits_zero_and_the_next_daemon_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 30, 1000);
    let state = dir.path().join("state");
    let d = Daemon::start(&state);
    let id = d.start_run(&config);
    let seen = d.wait_for(&id, Duration::from_secs(60), |r| {
        r["step"].as_u64() >= Some(3)
    });
    let (status, took) = d.terminate();
    assert!(status.success(), "r1d exited with {status}");
    assert!(took < Duration::from_secs(30), "shutdown took {took:?}");

    // The shutdown wrote a checkpoint of the step it reached, and the run is still resumable.
    let d = Daemon::start(&state);
    let run = d.run(&id);
    let checkpoints = d.get(&format!("/v1/runs/{id}/checkpoints")).unwrap();
    let last = checkpoints
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .expect("a checkpoint at shutdown");
    assert!(last["step"].as_u64().unwrap() >= seen["step"].as_u64().unwrap());
    assert_ne!(run["state"], "stopped");
    common::finishes_resumed(&d, &id, 30);
    let steps = d.get(&format!("/v1/runs/{id}/steps?limit=1000")).unwrap();
    assert_eq!(steps.as_array().unwrap().len(), 30);
}

#[test]
fn the_best_checkpoint_by_evaluation_survives_pruning() {
    let dir = tempfile::tempdir().unwrap();
    // A checkpoint every 2 steps, the newest 3 kept.
    let config = job_config(dir.path(), 400, 2);
    let d = Daemon::start(&dir.path().join("state"));
    let id = d.start_run(&config);
    d.wait_for(&id, Duration::from_secs(60), |r| {
        r["step"].as_u64() >= Some(2)
    });
    // Paused, so the oldest checkpoint stays put while it is evaluated.
    assert!(d.r1ctl(&["pause".as_ref(), id.as_ref()]).status.success());
    d.wait_for(&id, Duration::from_secs(60), |r| r["state"] == "paused");
    let oldest = d.get(&format!("/v1/runs/{id}/checkpoints")).unwrap()[0]["step"]
        .as_u64()
        .unwrap();
    let report = d
        .post(
            &format!("/v1/runs/{id}/eval"),
            &json!({"step": oldest, "k": 1, "problems": 2}),
        )
        .unwrap();
    assert_eq!(report["step"], oldest);
    assert!(d.r1ctl(&["resume".as_ref(), id.as_ref()]).status.success());
    // Well past the point where it would have been pruned.
    d.wait_for(&id, Duration::from_secs(120), |r| {
        r["step"].as_u64() >= Some(oldest + 12)
    });
    let checkpoints = d.get(&format!("/v1/runs/{id}/checkpoints")).unwrap();
    let steps: Vec<u64> = checkpoints
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps[0], oldest,
        "the evaluated checkpoint was pruned: {steps:?}"
    );
    assert!(
        steps.len() <= 4 && steps.iter().skip(1).all(|s| *s > oldest + 6),
        "{steps:?}"
    );
    assert!(d
        .state
        .join(format!(
            "runs/{id}/checkpoints/step-{oldest:08}/model.safetensors"
        ))
        .is_file());
    assert!(d.r1ctl(&["stop".as_ref(), id.as_ref()]).status.success());
}

#[test]
fn r1d_tells_systemd_ready_after_resumed_runs_load_and_stopping_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 400, 2);
    let state = dir.path().join("state");
    // A run to resume, so READY has a model load to wait for.
    let d = Daemon::start(&state);
    let id = d.start_run(&config);
    d.wait_for(&id, Duration::from_secs(60), |r| {
        r["step"].as_u64() >= Some(2)
    });
    let (status, _) = d.terminate();
    assert!(status.success());

    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let _ = std::fs::remove_file(state.join("r1d.addr"));
    let mut child = std::process::Command::new(common::bin("r1d"))
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("no READY from r1d");
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(message.contains("READY=1"), "{message}");
    // By READY the resumed run has loaded: its state is past `starting`.
    let addr = std::fs::read_to_string(state.join("r1d.addr")).unwrap();
    let token = std::fs::read_to_string(state.join("token")).unwrap();
    let run: serde_json::Value = ureq::get(&format!("http://{}/v1/runs/{id}", addr.trim()))
        .set("Authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_ne!(run["state"], "starting", "{run}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut stopping = false;
    while let Ok(n) = socket.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING from r1d");
    assert!(child.wait().unwrap().success());
}

#[test]
fn r1d_runs_the_preference_stage_with_its_reward_models_and_refuses_bad_ones_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = preference_job_config(dir.path(), 4, 2);
    let text = std::fs::read_to_string(&config).unwrap();
    let d = Daemon::start(&dir.path().join("state"));

    // A missing reward-model directory and a general prompt without its field: 400s naming the
    // key and the file, before the run gets an id.
    let helpful = dir.path().join("helpful").display().to_string();
    let missing = text.replace(&helpful, "/nowhere/helpful");
    let (status, body) = d
        .post(
            "/v1/runs",
            &json!({"config_toml": missing, "source": "pref.toml"}),
        )
        .unwrap_err();
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(status, 400);
    assert!(
        message.contains("preference.reward_models[0]: reward model `helpful`")
            && message.contains("/nowhere/helpful"),
        "{message}"
    );
    std::fs::write(
        dir.path().join("bad-general.jsonl"),
        "{\"prompt\": \"hi\"}\n{\"request\": \"bye\"}\n",
    )
    .unwrap();
    let general = dir.path().join("general.jsonl").display().to_string();
    let bad_prompts = text.replace(
        &general,
        &dir.path().join("bad-general.jsonl").display().to_string(),
    );
    let (status, body) = d
        .post("/v1/runs", &json!({"config_toml": bad_prompts}))
        .unwrap_err();
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(status, 400);
    assert!(
        message.contains("bad-general.jsonl:2") && message.contains("no `prompt` field"),
        "{message}"
    );
    assert!(d.get("/v1/runs").unwrap().as_array().unwrap().is_empty());

    // The run: every step records the rule accuracy and each reward model's numbers.
    let id = d.start_run(&config);
    assert_eq!(d.run(&id)["stage"], "preference");
    d.wait_for(&id, Duration::from_secs(120), |r| r["state"] == "finished");
    let steps = d.get(&format!("/v1/runs/{id}/steps")).unwrap();
    let steps = steps.as_array().unwrap();
    assert_eq!(steps.len(), 4);
    for (i, s) in steps.iter().enumerate() {
        let p = &s["preference"];
        assert_eq!(p["preference_on"], i >= 1, "{s}");
        assert_eq!(
            (p["reasoning_groups"].as_u64(), p["general_groups"].as_u64()),
            (Some(2), Some(2))
        );
        let models: Vec<&str> = p["reward_models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(models, ["helpful", "harmless"]);
    }
    let samples = d.get(&format!("/v1/runs/{id}/samples")).unwrap();
    let prompts: Vec<&str> = samples
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["prompt"].as_str().unwrap())
        .collect();
    assert!(
        prompts
            .iter()
            .any(|p| p.starts_with("say ") || p.starts_with("thank ")),
        "{prompts:?}"
    );
    // The checkpoint holds the reward normaliser's moments (exact resume).
    let checkpoints = d.get(&format!("/v1/runs/{id}/checkpoints")).unwrap();
    let last = checkpoints.as_array().unwrap().last().unwrap();
    let trainer: serde_json::Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(last["path"].as_str().unwrap()).join("trainer.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        trainer["state"]["reward_normaliser"].is_object(),
        "{trainer}"
    );

    let metrics = ureq::get(&d.url("/metrics"))
        .set("Authorization", &format!("Bearer {}", d.token))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for series in [
        format!("r1_reward_model_score_mean{{model=\"helpful\",run=\"{id}\"}}"),
        format!("r1_reward_model_decided_ratio{{model=\"harmless\",run=\"{id}\"}}"),
        format!("r1_preference_active{{run=\"{id}\"}} 1"),
        format!("r1_run_stage{{run=\"{id}\",stage=\"preference\"}} 1"),
    ] {
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
}

#[test]
fn r1d_with_dynamic_sampling_ends_with_the_weights_r1ctl_train_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 4, 2);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_batch = 4\n", "max_batch = 4\ndynamic_sampling = 2\n");
    std::fs::write(&config, &text).unwrap();

    let d = Daemon::start(&dir.path().join("state"));
    let id = d.start_run(&config);
    d.wait_for(&id, Duration::from_secs(120), |r| r["state"] == "finished");
    let steps = d.get(&format!("/v1/runs/{id}/steps")).unwrap();
    let steps = steps.as_array().unwrap();
    assert_eq!(steps.len(), 4);
    let resampled: u64 = steps
        .iter()
        .map(|s| s["report"]["dynamic"]["resampled_groups"].as_u64().unwrap())
        .sum();
    assert!(
        resampled > 0,
        "a random tiny model leaves groups flat: {steps:?}"
    );
    let cursor = steps[3]["data_cursor"].as_u64().unwrap();
    assert_eq!(
        cursor,
        8 + resampled,
        "the cursor counts every prompt sampled"
    );

    // The same config in-process.
    let in_process = common::train_in_process(&config, dir.path(), "runs/e2e/final");
    let daemon = d.last_checkpoint(&id);
    assert_eq!(daemon.state.step, 4);
    assert_eq!(daemon.state.data_cursor, cursor);
    assert!(
        daemon.model.params == in_process.params,
        "r1d and r1ctl train took different steps"
    );
}

#[test]
fn a_preference_run_stopped_by_sigterm_resumes_to_the_weights_r1ctl_train_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let config = preference_job_config(dir.path(), 6, 2);
    let state = dir.path().join("state");
    let d = Daemon::start(&state);
    let id = d.start_run(&config);
    d.wait_for(&id, Duration::from_secs(120), |r| {
        r["step"].as_u64() >= Some(2)
    });
    let (status, _) = d.terminate();
    assert!(status.success(), "r1d exited with {status}");

    // The next daemon resumes the run (weights, optimizer, the reward normaliser's moments).
    let d = Daemon::start(&state);
    common::finishes_resumed_on_r1ctl_train_weights(&d, &id, &config, dir.path(), 6);
}

#[test]
fn runs_queued_behind_the_active_one_start_in_order_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 8, 4);
    let text = std::fs::read_to_string(&config).unwrap();
    let state = dir.path().join("state");
    let d = Daemon::start(&state);
    let first = d.start_run(&config);

    // Without --queue a second run is refused and the message says how to queue it.
    let refused = d
        .post("/v1/runs", &json!({"config_toml": text}))
        .unwrap_err();
    let message = refused.1["error"]["message"].as_str().unwrap().to_string();
    assert_eq!(refused.0, 409);
    assert!(message.contains("--queue"), "{message}");
    // A bad config is refused even when queued: it is checked now, not when its turn comes.
    let bad = d
        .post(
            "/v1/runs",
            &json!({"config_toml": text.replace("arithmetic", "nosuchtask"), "queue": true}),
        )
        .unwrap_err();
    assert_eq!(bad.0, 400, "{}", bad.1);

    let queue = |d: &Daemon| {
        let out = d.r1ctl(&["start".as_ref(), "--queue".as_ref(), config.as_os_str()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("queued"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let second = queue(&d);
    let third = queue(&d);
    let fourth = queue(&d);
    assert_eq!(d.run(&second)["state"], "queued");
    // A queued run can be taken out of the queue, not paused.
    assert_eq!(
        code(
            d.post(&format!("/v1/runs/{third}/pause"), &json!({}))
                .unwrap_err()
        ),
        (409, "conflict".into())
    );
    let out = d.r1ctl(&["stop".as_ref(), third.as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.run(&third)["state"], "stopped");

    // A restart while the first runs: it resumes, the queue keeps its order.
    d.wait_for(&first, Duration::from_secs(60), |r| {
        r["step"].as_u64() >= Some(2)
    });
    let (status, _) = d.terminate();
    assert!(status.success());
    let d = Daemon::start(&state);
    assert_eq!(d.run(&second)["state"], "queued");
    d.wait_for(&first, Duration::from_secs(120), |r| {
        r["state"] == "finished"
    });
    d.wait_for(&second, Duration::from_secs(120), |r| {
        r["state"] == "finished"
    });
    let last = d.wait_for(&fourth, Duration::from_secs(120), |r| {
        r["state"] == "finished"
    });
    assert_eq!(last["step"], 8);
    assert_eq!(
        d.run(&third)["step"],
        0,
        "a run taken out of the queue never ran"
    );
    // They ran one after another: each started after the one before it finished.
    let finished = |id: &str| d.run(id)["updated_unix"].as_f64().unwrap();
    let created_steps = |id: &str| {
        d.get(&format!("/v1/runs/{id}/steps"))
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(
        (
            created_steps(&first),
            created_steps(&second),
            created_steps(&fourth)
        ),
        (8, 8, 8)
    );
    assert!(finished(&first) <= finished(&second) && finished(&second) <= finished(&fourth));
}

/// A config for a stage without GRPO steps on `model`, with `tables` appended.
fn stage_config(
    dir: &std::path::Path,
    name: &str,
    stage: &str,
    model: &std::path::Path,
    tables: &str,
) -> std::path::PathBuf {
    JobToml::stage(stage, model)
        .set("run", "name", name)
        .set("run", "seed", 1)
        .set("run", "output_dir", format!("runs/{name}"))
        .set("data", "kind", "jsonl")
        .set("data", "path", "q.jsonl")
        .set("sampling", "temperature", 0.0)
        .set("sampling", "max_new_tokens", 40)
        .append(tables)
        .write(&dir.join(format!("{name}.toml")))
        .unwrap()
}

/// A tiny model, an SFT set that teaches "7?" → 7 (`sft.jsonl`) and two prompts to judge against
/// (`q.jsonl`: answers 7 and 8) in `dir`; returns the model directory.
fn sft_workspace(dir: &std::path::Path) -> std::path::PathBuf {
    let model = common::tiny_model(dir);
    let line = r#"{"prompt": "7?", "response": "<think>7</think><answer>7</answer>"}"#;
    std::fs::write(dir.join("sft.jsonl"), format!("{line}\n").repeat(8)).unwrap();
    std::fs::write(
        dir.join("q.jsonl"),
        "{\"prompt\": \"7?\", \"answer\": \"7\"}\n{\"prompt\": \"7?\", \"answer\": \"8\"}\n",
    )
    .unwrap();
    model
}

#[test]
fn r1d_runs_sft_with_pause_and_resume_then_rejection_and_eval_from_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let d_path = dir.path();
    let model = sft_workspace(d_path);
    // Relative paths (sft.jsonl, q.jsonl) resolve against the folder r1ctl start runs in.
    let sft = stage_config(
        d_path,
        "sft",
        "sft",
        &model,
        "[sft]\ndata = \"sft.jsonl\"\nepochs = 60\nbatch_size = 4\npack_length = 128\nlr = 3e-3\nwarmup_steps = 2\n\n\
         [checkpoint]\nevery_steps = 10\nkeep_last = 2\n",
    );
    let d = Daemon::start(&d_path.join("state"));
    let start = |config: &std::path::Path| d.start_run_from(config, d_path);
    let id = start(&sft);
    assert_eq!(d.run(&id)["stage"], "sft");
    d.wait_for(&id, Duration::from_secs(60), |r| {
        r["step"].as_u64() >= Some(5)
    });
    let out = d.r1ctl(&["pause".as_ref(), id.as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paused = d.wait_for(&id, Duration::from_secs(60), |r| r["state"] == "paused");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.run(&id)["step"],
        paused["step"],
        "a paused stage takes no steps"
    );
    assert!(paused["step"].as_u64().unwrap() < 120, "{paused}");
    let out = d.r1ctl(&["resume".as_ref(), id.as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = d.wait_for(&id, Duration::from_secs(120), |r| r["state"] == "finished");
    assert_eq!(
        (done["step"].as_u64(), done["total_steps"].as_u64()),
        (Some(120), Some(120))
    );
    assert!(
        done["message"].as_str().unwrap().contains("step 120/120"),
        "{done}"
    );
    let checkpoints = d.get(&format!("/v1/runs/{id}/checkpoints")).unwrap();
    let steps: Vec<u64> = checkpoints
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [110, 120]);
    let metrics = ureq::get(&d.url("/metrics"))
        .set("Authorization", &format!("Bearer {}", d.token))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for series in [
        format!("r1_run_stage{{run=\"{id}\",stage=\"sft\"}} 1"),
        format!("r1_step{{run=\"{id}\"}} 120"),
        format!("r1_loss{{run=\"{id}\"}}"),
    ] {
        assert!(metrics.contains(&series), "{series} missing");
    }

    // The same config in-process: paused and resumed, r1d took the same steps.
    let in_process = common::train_in_process(&sft, d_path, "runs/sft/final");
    let teacher = std::path::Path::new(done["output_dir"].as_str().unwrap()).join("final");
    let daemon = r1_kernels::model::load_model_dir(&teacher).unwrap();
    assert!(
        daemon.params == in_process.params,
        "r1d and r1ctl train took different steps"
    );

    // Rejection sampling and evaluation of that model, through r1d.
    let rejection = stage_config(
        d_path,
        "rejection",
        "rejection",
        &teacher,
        "[rejection]\nsamples_per_prompt = 2\nkeep_per_prompt = 1\n",
    );
    let id = start(&rejection);
    let done = d.wait_for(&id, Duration::from_secs(60), |r| r["state"] == "finished");
    assert!(
        done["message"].as_str().unwrap().contains("kept 1 of 4"),
        "{done}"
    );
    assert!(std::path::Path::new(done["output_dir"].as_str().unwrap())
        .join("sft.jsonl")
        .is_file());
    let eval = stage_config(d_path, "eval", "eval", &teacher, "[eval]\ngreedy = true\n");
    let id = start(&eval);
    let done = d.wait_for(&id, Duration::from_secs(60), |r| r["state"] == "finished");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(done["output_dir"].as_str().unwrap()).join("eval.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(report["datasets"][0]["scores"]["pass_at_1"], 0.5);

    // A missing SFT set is a 400 before the run gets an id.
    let missing = stage_config(
        d_path,
        "missing",
        "sft",
        &model,
        "[sft]\ndata = \"nowhere.jsonl\"\n",
    );
    let (status, body) = d
        .post(
            "/v1/runs",
            &json!({"config_toml": std::fs::read_to_string(&missing).unwrap(), "base_dir": d_path}),
        )
        .unwrap_err();
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sft.data"),
        "{body}"
    );
}

#[test]
fn an_sft_run_killed_with_sigkill_resumes_from_its_checkpoint_to_r1ctl_trains_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d_path = dir.path();
    let (sft, state, id, seen) = sft_run_killed_at(d_path, 2, 50);
    eprintln!("killed at step {}", seen["step"]);
    assert!(
        seen["step"].as_u64() < Some(200) && seen["state"] != "finished",
        "the run ended before the kill: {seen}"
    );

    let d = Daemon::start(&state);
    let done = d.wait_for(&id, Duration::from_secs(120), |r| r["state"] == "finished");
    assert_eq!(done["step"], 200);
    assert_final_weights_equal_r1ctl_train(
        &done,
        &sft,
        d_path,
        "the killed and resumed SFT run ended with other weights",
    );
}

/// A GRPO config for `dir` whose `[data]` reads the JSONL file `data` (the built-in task
/// otherwise).
fn jsonl_job(dir: &std::path::Path, data: &std::path::Path) -> String {
    let text = std::fs::read_to_string(job_config(dir, 4, 2)).unwrap();
    text.replace(
        "kind = \"builtin\"\ntask = \"arithmetic\"\ntrain_size = 32\ntest_size = 8\n",
        &format!("kind = \"jsonl\"\npath = \"{}\"\n", data.display()),
    )
}

fn mkfifo(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// The newest checkpoint folder under `root` (`step-NNNNNNNN`).
fn newest_checkpoint(root: &std::path::Path) -> std::path::PathBuf {
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-") && !n.contains('.'))
        })
        .collect();
    dirs.sort();
    dirs.pop().expect("a checkpoint")
}

/// Cuts a checkpoint's weights in half: its checksum no longer verifies.
fn damage(checkpoint: &std::path::Path) {
    let weights = checkpoint.join("model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

#[test]
fn idle_connections_cannot_starve_a_runs_checkpoint_writes() {
    use std::net::{SocketAddr, TcpStream};
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 400, 10);
    let state = dir.path().join("state");
    // r1d starts with a soft limit of 128 descriptors (the hard limit as it is): few enough that
    // a bounded number of idle clients would exhaust them if r1d neither raised the limit nor
    // capped its connections.
    let d = Daemon::start_with(&state, &[], Some(128));
    let id = d.start_run(&config);
    let root = std::path::Path::new(d.run(&id)["output_dir"].as_str().unwrap()).join("checkpoints");
    let written = |root: &std::path::Path| {
        std::fs::read_dir(root).map_or(Vec::new(), |entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.contains('.'))
                .collect::<Vec<_>>()
        })
    };
    let addr: SocketAddr = d.addr.parse().unwrap();

    // 40 new idle connections (loopback, never sending a byte) every 0.25 s, each held 3 s: up
    // to ~500 at once, for 6 s (and on until two more checkpoints were written, at most 40 s).
    let mut seen: std::collections::HashSet<String> = written(&root).into_iter().collect();
    let before = seen.len();
    let began = Instant::now();
    let mut idle: std::collections::VecDeque<(Instant, TcpStream)> = Default::default();
    let mut opened = 0usize;
    while began.elapsed() < Duration::from_secs(6)
        || (began.elapsed() < Duration::from_secs(40) && seen.len() < before + 2)
    {
        seen.extend(written(&root));
        for _ in 0..40 {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(50)) {
                idle.push_back((Instant::now(), s));
                opened += 1;
            }
        }
        while idle
            .front()
            .is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(3))
        {
            idle.pop_front();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    seen.extend(written(&root));
    let during = seen.len();
    drop(idle);
    eprintln!(
        "{opened} idle connections in {:.1}s; checkpoints {before} -> {during}",
        began.elapsed().as_secs_f64()
    );
    assert!(opened >= 300, "only {opened} connections were made");

    let done = d.wait_for(&id, Duration::from_secs(180), |r| {
        r["state"] == "finished" || r["state"] == "failed"
    });
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["step"], 400);
    assert!(
        during >= before + 2,
        "no checkpoint was written during the flood"
    );
    assert!(ureq::get(&d.url("/healthz")).call().is_ok());
}

#[test]
fn a_failed_run_resumes_from_its_last_good_checkpoint_to_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 6, 2);
    let state = dir.path().join("state");
    let d = Daemon::start(&state);
    // A file where the step-4 checkpoint goes: that write fails (not a transient error), and
    // the run fails with its step-2 checkpoint intact.
    let root = state.join("runs/run-0001/checkpoints");
    std::fs::create_dir_all(&root).unwrap();
    let blocker = root.join("step-00000004");
    std::fs::write(&blocker, "in the way").unwrap();
    let id = d.start_run(&config);
    assert_eq!(id, "run-0001");
    let failed = d.wait_for(&id, Duration::from_secs(120), |r| {
        r["state"] == "failed" || r["state"] == "finished"
    });
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap_or("")
            .contains("step-00000004"),
        "{failed}"
    );

    // The cause gone, `r1ctl resume` restarts it from step 2; it ends as if never interrupted.
    std::fs::remove_file(&blocker).unwrap();
    let out = d.r1ctl(&["resume".as_ref(), id.as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = d.wait_for(&id, Duration::from_secs(120), |r| {
        r["state"] == "finished" || r["state"] == "failed"
    });
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["step"], 6);
    let steps = d.get(&format!("/v1/runs/{id}/steps")).unwrap();
    let numbers: Vec<u64> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6], "each step recorded once");
    let in_process = common::train_in_process(&config, dir.path(), "runs/e2e/final");
    let daemon = d.last_checkpoint(&id);
    assert_eq!(daemon.state.step, 6);
    assert!(
        daemon.model.params == in_process.params,
        "the failed and resumed run ended with other weights"
    );
    // A finished run is not resumed: a negative answer.
    let out = d.r1ctl(&["resume".as_ref(), id.as_ref()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn an_sft_run_in_r1d_resumes_past_a_damaged_newest_checkpoint_to_r1ctl_trains_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d_path = dir.path();
    let (sft, state, id, seen) = sft_run_killed_at(d_path, 3, 45);
    assert_ne!(seen["state"], "finished", "{seen}");
    let root = std::path::Path::new(seen["output_dir"].as_str().unwrap()).join("checkpoints");
    let newest = newest_checkpoint(&root);
    damage(&newest);
    eprintln!("damaged {}", newest.display());

    // The next r1d resumes from the checkpoint before it, takes the same steps again, saves
    // over the damaged folder and ends with r1ctl train's weights.
    let d = Daemon::start(&state);
    let done = d.wait_for(&id, Duration::from_secs(120), |r| {
        r["state"] == "finished" || r["state"] == "failed"
    });
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["step"], 200);
    assert_final_weights_equal_r1ctl_train(
        &done,
        &sft,
        d_path,
        "the resumed SFT run ended with other weights",
    );
}

#[test]
fn r1ctl_train_grpo_resumes_past_a_damaged_newest_checkpoint_to_the_uninterrupted_weights() {
    let train = |dir: &std::path::Path, config: &std::path::Path, extra: &[&str]| {
        let out = std::process::Command::new(common::bin("r1ctl"))
            .arg("train")
            .arg(config)
            .args(extra)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "r1ctl train: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let interrupted = tempfile::tempdir().unwrap();
    let config = job_config(interrupted.path(), 8, 2);
    train(interrupted.path(), &config, &["--steps", "6"]);
    let root = interrupted.path().join("runs/e2e/checkpoints");
    let newest = newest_checkpoint(&root);
    assert!(newest.ends_with("step-00000006"), "{}", newest.display());
    damage(&newest);
    train(interrupted.path(), &config, &[]);
    assert!(r1_actors::keeper::load_checkpoint(&newest).is_ok());
    let resumed =
        r1_kernels::model::load_model_dir(&interrupted.path().join("runs/e2e/final")).unwrap();

    let straight = tempfile::tempdir().unwrap();
    let config = job_config(straight.path(), 8, 2);
    let uninterrupted = common::train_in_process(&config, straight.path(), "runs/e2e/final");
    assert!(
        resumed.params == uninterrupted.params,
        "the run resumed past a damaged checkpoint ended with other weights"
    );
}

#[test]
fn paths_that_block_or_never_end_are_refused_and_r1d_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let d = Daemon::start_with(&state, &["--max-data-bytes", "4096"], None);
    // Bounded: on a daemon that reads a FIFO on its event loop this answers never.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let start = |toml: &str| -> (u16, String) {
        let r = agent
            .post(&d.url("/v1/runs"))
            .set("Authorization", &format!("Bearer {}", d.token))
            .send_json(json!({"config_toml": toml, "source": "job.toml"}));
        match r {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("no answer from r1d: {e}"),
        }
    };

    let fifo = dir.path().join("prompts.jsonl");
    mkfifo(&fifo);
    let (status, body) = start(&jsonl_job(dir.path(), &fifo));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("data.path") && body.contains("FIFO"),
        "{body}"
    );

    let (status, body) = start(&jsonl_job(dir.path(), std::path::Path::new("/dev/zero")));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("/dev/zero") && body.contains("not a regular file"),
        "{body}"
    );

    let big = dir.path().join("big.jsonl");
    let line = "{\"prompt\": \"1+1?\", \"answer\": \"2\"}\n";
    std::fs::write(&big, line.repeat(200)).unwrap();
    let (status, body) = start(&jsonl_job(dir.path(), &big));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("--max-data-bytes") && body.contains("big.jsonl"),
        "{body}"
    );

    // A model whose weights are a FIFO: refused before the loader could block on it.
    let pipe_model = dir.path().join("pipe-model");
    std::fs::create_dir(&pipe_model).unwrap();
    let model = dir.path().join("model");
    std::fs::copy(model.join("config.json"), pipe_model.join("config.json")).unwrap();
    mkfifo(&pipe_model.join("model.safetensors"));
    let piped = std::fs::read_to_string(dir.path().join("job.toml"))
        .unwrap()
        .replace(
            &model.display().to_string(),
            &pipe_model.display().to_string(),
        );
    let (status, body) = start(&piped);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("model.safetensors") && body.contains("FIFO"),
        "{body}"
    );

    // /stop and /healthz answer throughout; a good run starts.
    assert!(ureq::get(&d.url("/healthz")).call().is_ok());
    let config = job_config(dir.path(), 200, 1000);
    let id = d.start_run(&config);
    d.wait_for(&id, Duration::from_secs(60), |r| r["state"] == "running");

    // The weights become a FIFO while r1d is down: the next r1d fails that run with the
    // reason instead of hanging on it in "starting" for ever, and takes new runs.
    d.kill9();
    let weights = model.join("model.safetensors");
    std::fs::remove_file(&weights).unwrap();
    mkfifo(&weights);
    let d = Daemon::start(&state);
    let failed = d.wait_for(&id, Duration::from_secs(30), |r| r["state"] == "failed");
    let message = failed["message"].as_str().unwrap_or("");
    assert!(
        message.contains("model.safetensors") && message.contains("FIFO"),
        "{failed}"
    );
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let id = d.start_run(&job_config(&other, 2, 2));
    d.wait_for(&id, Duration::from_secs(60), |r| r["state"] == "finished");
}

#[test]
fn parallel_checkpoint_downloads_stream_with_bounded_memory() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 2, 2);
    let d = Daemon::start_with(&dir.path().join("state"), &["--max-downloads", "4"], None);
    let id = d.start_run(&config);
    d.wait_for(&id, Duration::from_secs(60), |r| r["state"] == "finished");
    let checkpoints = d.get(&format!("/v1/runs/{id}/checkpoints")).unwrap();
    let path = std::path::Path::new(checkpoints[0]["path"].as_str().unwrap()).to_path_buf();
    // A 16 MiB optimizer file (a real one is gigabytes), in place of the tiny model's.
    let big: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(path.join("optimizer.safetensors"), &big).unwrap();
    let want = common::sha256(&path.join("optimizer.safetensors"));
    let url = d.url(&format!(
        "/v1/runs/{id}/checkpoints/2/files/optimizer.safetensors"
    ));
    let pid = d.child.id();
    let (_, peak_before) = common::rss_kib(pid);

    // 24 clients at once, each reading slowly: they all hold their response until every one
    // has an answer.
    let clients = 24;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (url, token, barrier) = (url.clone(), d.token.clone(), barrier.clone());
            std::thread::spawn(move || {
                match ureq::get(&url)
                    .set("Authorization", &format!("Bearer {token}"))
                    .call()
                {
                    Ok(r) => {
                        let mut reader = r.into_reader();
                        let mut body = vec![0u8; 64 << 10];
                        reader.read_exact(&mut body).unwrap();
                        barrier.wait();
                        std::thread::sleep(Duration::from_millis(300));
                        reader.read_to_end(&mut body).unwrap();
                        use sha2::{Digest, Sha256};
                        let got: String = Sha256::digest(&body)
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        Ok(got)
                    }
                    Err(ureq::Error::Status(code, r)) => {
                        let retry = r.header("Retry-After").map(str::to_string);
                        let body: serde_json::Value = r.into_json().unwrap();
                        barrier.wait();
                        Err((
                            code,
                            body["error"]["code"].as_str().unwrap_or("").to_string(),
                            retry,
                        ))
                    }
                    Err(e) => panic!("download: {e}"),
                }
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let (_, peak_after) = common::rss_kib(pid);
    let served: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!(
        "{} served, {} refused; peak RSS {peak_before} -> {peak_after} KiB",
        served.len(),
        refused.len()
    );
    assert_eq!(served.len(), 4, "downloads at once are bounded");
    assert!(served.iter().all(|h| **h == want), "content intact");
    for (code, name, retry) in &refused {
        assert_eq!(
            (*code, name.as_str(), retry.as_deref()),
            (503, "busy", Some("1"))
        );
    }
    assert!(
        peak_after < peak_before + 48 * 1024,
        "r1d's peak memory grew from {peak_before} to {peak_after} KiB serving 16 MiB files"
    );
    // The slots are given back: a later download is served whole.
    let again = ureq::get(&url)
        .set("Authorization", &format!("Bearer {}", d.token))
        .call()
        .unwrap();
    assert_eq!(again.header("Content-Length"), Some("16777216"));
    let mut body = Vec::new();
    again.into_reader().read_to_end(&mut body).unwrap();
    assert!(body == big);
}

/// Runs `r1d ARGS` for at most 10 s (an r1d that starts serves until killed); its exit status
/// (`None`: still running, killed) and stderr.
fn r1d_briefly(args: &[&std::ffi::OsStr]) -> (Option<std::process::ExitStatus>, String) {
    let mut child = std::process::Command::new(common::bin("r1d"))
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("STATE_DIRECTORY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let began = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if began.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn r1d_refuses_a_remote_address_a_shared_token_and_a_shared_or_foreign_state_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let os = |s: &str| std::ffi::OsString::from(s);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;

    // Every interface: refused without --allow-remote (nothing is bound), naming the way out.
    let state = dir.path().join("state");
    let (status, stderr) = r1d_briefly(&[
        &os("--listen"),
        &os("0.0.0.0:0"),
        &os("--state-dir"),
        state.as_os_str(),
    ]);
    assert!(
        status.is_some_and(|s| !s.success()),
        "r1d served 0.0.0.0: {stderr}"
    );
    assert!(
        stderr.contains("--allow-remote") && stderr.contains("TLS"),
        "{stderr}"
    );

    // A /tmp-like shared folder: refused, and left exactly as it was.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (status, stderr) = r1d_briefly(&[
        &os("--listen"),
        &os("127.0.0.1:0"),
        &os("--state-dir"),
        shared.as_os_str(),
    ]);
    assert!(status.is_some_and(|s| !s.success()), "{stderr}");
    assert!(
        stderr.contains(&shared.display().to_string())
            && stderr.contains("writable by group or others"),
        "{stderr}"
    );
    assert_eq!(
        mode(&shared),
        0o1777,
        "r1d changed the mode of an existing folder"
    );
    assert!(!shared.join("token").exists());

    // A folder of another user: refused.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = std::ffi::CString::new(foreign.to_str().unwrap()).unwrap();
    assert_eq!(
        unsafe { libc::chown(c.as_ptr(), 65534, 65534) },
        0,
        "chown (tests run as root)"
    );
    let (status, stderr) = r1d_briefly(&[
        &os("--listen"),
        &os("127.0.0.1:0"),
        &os("--state-dir"),
        foreign.as_os_str(),
    ]);
    assert!(status.is_some_and(|s| !s.success()), "{stderr}");
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
    assert_eq!(mode(&foreign), 0o755);

    // A token file others can read: refused, naming the file and the fix.
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, stderr) = r1d_briefly(&[
        &os("--listen"),
        &os("127.0.0.1:0"),
        &os("--state-dir"),
        state.as_os_str(),
        &os("--token-file"),
        token.as_os_str(),
    ]);
    assert!(status.is_some_and(|s| !s.success()), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod 600 {}", token.display())),
        "{stderr}"
    );

    // A missing state folder is created private; the daemon then starts.
    assert_eq!(mode(&state) & 0o077, 0, "{:o}", mode(&state));
    let d = Daemon::start(&state);
    assert!(ureq::get(&d.url("/healthz")).call().is_ok());
}

/// Starts the SFT run of [`sft_workspace`] (200 steps, a checkpoint every 20, the newest
/// `keep_last` kept) in a fresh r1d under `d_path/state` and SIGKILLs the daemon once the run
/// has reached `step`. Returns the config, the state dir, the run id and the run as last seen.
fn sft_run_killed_at(
    d_path: &std::path::Path,
    keep_last: u32,
    step: u64,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    String,
    serde_json::Value,
) {
    let model = sft_workspace(d_path);
    let sft = stage_config(
        d_path,
        "sft",
        "sft",
        &model,
        &format!(
            "[sft]\ndata = \"sft.jsonl\"\nepochs = 100\nbatch_size = 4\nlr = 3e-3\n\n\
             [checkpoint]\nevery_steps = 20\nkeep_last = {keep_last}\n"
        ),
    );
    let state = d_path.join("state");
    let d = Daemon::start(&state);
    let id = d.start_run_from(&sft, d_path);
    let seen = d.wait_for(&id, Duration::from_secs(60), |r| {
        r["step"].as_u64() >= Some(step)
    });
    d.kill9();
    (sft, state, id, seen)
}

/// Asserts that the finished run `done` wrote the same `final/` weights as `r1ctl train` on
/// the same config.
fn assert_final_weights_equal_r1ctl_train(
    done: &serde_json::Value,
    config: &std::path::Path,
    d_path: &std::path::Path,
    message: &str,
) {
    let in_process = common::train_in_process(config, d_path, "runs/sft/final");
    let daemon = r1_kernels::model::load_model_dir(
        &std::path::Path::new(done["output_dir"].as_str().unwrap()).join("final"),
    )
    .unwrap();
    assert!(daemon.params == in_process.params, "{message}");
}

/// `r1ctl ARGS` against `d` run from `cwd`: exit code, stdout, stderr.
fn r1ctl_in(d: &Daemon, cwd: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(common::bin("r1ctl"))
        .args(args)
        .env("R1_STATE_DIR", &d.state)
        .env_remove("R1_ADDR")
        .env_remove("R1_TOKEN_FILE")
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 18, through the daemon: a run that starts at once says `started` and is never `queued`;
/// `watch` redirected prints plain lines; `stop` on a queued run says what happened; `steps`,
/// `delete`, `eval --seed`/`--data` exist; a run trained on a file is not scored on its own
/// training lines; `ckpt export -o json` prints JSON; `samples` on an SFT run says why it is empty;
/// a path where a run id belongs is named as such; r1d's log has no colour codes when redirected;
/// a second r1d on the same state folder says so once.
#[test]
fn newcomer_paths_through_the_daemon_say_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let d_path = dir.path();
    let config = job_config(d_path, 6, 3);
    let state = d_path.join("state");
    let d = Daemon::start(&state);

    // Item 1: started at once → `starting`/`running`, never `queued`, in JSON and in words.
    let (code, stdout, stderr) = r1ctl_in(
        &d,
        d_path,
        &["start", "-o", "json", config.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    let info: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let id = info["id"].as_str().unwrap().to_string();
    assert_ne!(info["state"], "queued", "{info}");
    // Item 8: stop on a queued run says it was taken out of the queue, not "(was stopped)".
    let (code, queued, stderr) =
        r1ctl_in(&d, d_path, &["start", "--queue", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("queued"), "{stderr}");
    let queued = queued.trim().to_string();
    let (code, _, stderr) = r1ctl_in(&d, d_path, &["stop", &queued]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("is now stopped") && stderr.contains("taken out of the queue"),
        "{stderr}"
    );
    assert!(!stderr.contains("(was stopped)"), "{stderr}");

    // Item 2: watch, redirected, prints plain progress lines and the final state.
    let (code, watched, stderr) = r1ctl_in(&d, d_path, &["watch", &id, "--interval", "0.05"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        watched
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("{id} finished step 6/6"))),
        "{watched}"
    );
    assert!(!watched.contains('\u{1b}'), "{watched:?}");
    assert!(stderr.contains(&format!("run {id} finished")), "{stderr}");

    // Item 10: a stopped run continues on request (here the one taken out of the queue).
    let (code, _, stderr) = r1ctl_in(&d, d_path, &["resume", &queued]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("is starting again"), "{stderr}");
    let continued = d.wait_for(&queued, Duration::from_secs(120), |r| {
        r["state"] == "finished"
    });
    assert_eq!(continued["step"], 6);

    // Item 10: steps.
    let (code, steps, stderr) = r1ctl_in(&d, d_path, &["steps", &id, "--after", "4"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<&str> = steps.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{steps}");
    assert!(rows[0].trim_start().starts_with('5'), "{steps}");

    // Item 10: eval --seed is deterministic per seed and reported with what it scored.
    let eval = |seed: &str| {
        let (code, out, err) = r1ctl_in(
            &d,
            d_path,
            &[
                "eval",
                &id,
                "--k",
                "2",
                "--problems",
                "4",
                "--seed",
                seed,
                "-o",
                "json",
            ],
        );
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let (a, b) = (eval("7"), eval("7"));
    assert_eq!(a["pass_at_1"], b["pass_at_1"]);
    assert_eq!(a["mean_length"], b["mean_length"]);
    assert_eq!(
        a["dataset"], "held-out split of the built-in task arithmetic",
        "{a}"
    );

    // Item 9: ckpt export -o json prints what it wrote.
    let (code, exported, stderr) = r1ctl_in(
        &d,
        d_path,
        &["ckpt", "export", &id, "6", "exported", "-o", "json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let exported: serde_json::Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(exported["step"], 6);
    assert_eq!(exported["files"].as_array().unwrap().len(), 2);
    assert!(d_path.join("exported/model.safetensors").is_file());

    // Item 9: a path where a run id belongs (`samples` and `steps` read a run directory instead,
    // and say so when there is none).
    let (code, _, stderr) = r1ctl_in(&d, d_path, &["status", "runs/tiny-grpo"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("is not a run id"), "{stderr}");
    assert!(!stderr.contains("no route"), "{stderr}");
    let (code, _, stderr) = r1ctl_in(&d, d_path, &["samples", "runs/tiny-grpo"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no such run directory"), "{stderr}");
    assert!(!stderr.contains("no route"), "{stderr}");

    // Item 10: delete refuses an active run, removes an ended one and its folder.
    let output_dir = std::path::PathBuf::from(d.run(&id)["output_dir"].as_str().unwrap());
    assert!(output_dir.is_dir());
    let (code, _, stderr) = r1ctl_in(&d, d_path, &["delete", &id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("deleted {id}")), "{stderr}");
    assert!(!output_dir.exists());
    assert_eq!(d.get(&format!("/v1/runs/{id}")).unwrap_err().0, 404);
    assert_eq!(d.get(&format!("/v1/runs/{id}/steps")).unwrap_err().0, 404);

    // Items 3 and 9: an SFT run (trained on a file) — samples says why it is empty; eval is
    // refused without an eval set and scores the given one with it.
    let ws = d_path.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let model = sft_workspace(&ws);
    let sft = stage_config(
        &ws,
        "sft",
        "sft",
        &model,
        "[sft]\ndata = \"sft.jsonl\"\nepochs = 1\nbatch_size = 4\n\n[checkpoint]\nevery_steps = 1\nkeep_last = 2\n",
    );
    let sft_id = d.start_run_from(&sft, &ws);
    let status = d.wait_for(&sft_id, Duration::from_secs(120), |r| {
        r["state"] == "finished"
    });
    assert_eq!(status["stage"], "sft");
    let (code, out, stderr) = r1ctl_in(&d, &ws, &["samples", &sft_id]);
    assert_eq!((code, out.as_str()), (1, ""), "{stderr}");
    assert!(stderr.contains("is an sft run"), "{stderr}");
    let (code, _, stderr) = r1ctl_in(&d, &ws, &["eval", &sft_id, "--k", "1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no held-out split") && stderr.contains("--data"),
        "{stderr}"
    );
    let (code, out, stderr) =
        r1ctl_in(&d, &ws, &["eval", &sft_id, "--k", "1", "--data", "q.jsonl"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        out.starts_with(&format!(
            "scored on: eval set {}",
            ws.join("q.jsonl").display()
        )),
        "{out}"
    );
    // An eval run counts no steps: `-`, not `0/0`.
    let eval_config = stage_config(&ws, "ev", "eval", &model, "[eval]\ngreedy = true\n");
    let eval_id = d.start_run_from(&eval_config, &ws);
    d.wait_for(&eval_id, Duration::from_secs(120), |r| {
        r["state"] == "finished"
    });
    let (_, shown, _) = r1ctl_in(&d, &ws, &["status", &eval_id]);
    assert!(
        shown.contains("step       - (the eval stage counts no steps)"),
        "{shown}"
    );
    assert!(!shown.contains("0/0"), "{shown}");

    // Item 9: the log of a redirected r1d has no colour codes; a second r1d on the same state
    // folder says it is in use, once.
    let log = std::fs::read_to_string(state.with_extension("log")).unwrap();
    assert!(!log.contains('\u{1b}'), "{log:?}");
    let (status, stderr) = r1d_briefly(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("in use by another process").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("could not acquire lock"), "{stderr}");
}
