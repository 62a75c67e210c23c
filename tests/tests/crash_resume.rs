//! The crash test: a run whose `r1d` is killed with SIGKILL at random moments (at least 10 times)
//! and restarted each time ends with the same weights, bit for bit, as a run that was never
//! interrupted; no step is recorded twice; the state store opens cleanly after every kill; and a
//! damaged newest checkpoint is skipped in favour of the one before.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{job_config, sha256, Daemon};

const STEPS: u64 = 60;

/// xorshift: the kill moments; the seed is printed so a failure can be replayed.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % max
    }
}

fn final_weights(d: &Daemon, id: &str) -> String {
    let run = d.run(id);
    sha256(
        &std::path::Path::new(run["output_dir"].as_str().unwrap())
            .join(format!("checkpoints/step-{STEPS:08}/model.safetensors")),
    )
}

/// Per step: the numbers that must not depend on interruptions (timings and memory excluded: the
/// peak resident set is the process's, and a learner's arena holds the largest shape it has seen
/// since it started).
fn step_numbers(d: &Daemon, id: &str) -> Vec<(u64, String)> {
    d.get(&format!("/v1/runs/{id}/steps?limit=10000"))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut report = s["report"].clone();
            report["phases"] = serde_json::Value::Null;
            report["memory"] = serde_json::Value::Null;
            (s["step"].as_u64().unwrap(), report.to_string())
        })
        .collect()
}

#[test]
fn sigkill_at_random_moments_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), STEPS, 2);

    // The reference: the same job, never interrupted.
    let reference = Daemon::start(&dir.path().join("reference"));
    let ref_id = reference.start_run(&config);
    reference.wait_for(&ref_id, Duration::from_secs(300), |r| {
        r["state"] == "finished"
    });
    let want_weights = final_weights(&reference, &ref_id);
    let want_steps = step_numbers(&reference, &ref_id);
    assert_eq!(want_steps.len() as u64, STEPS);
    drop(reference);

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill moments seed: {seed}");
    let mut moments = Moments(seed);
    let state = dir.path().join("crashing");
    let mut d = Daemon::start(&state);
    let id = d.start_run(&config);
    let mut kills = 0;
    let mut last_step = 0;
    let began = Instant::now();
    loop {
        // Let it make progress, then kill it at a random moment (mid-step, mid-checkpoint…).
        let run = d.wait_for(&id, Duration::from_secs(120), |r| {
            r["state"] == "finished" || r["step"].as_u64().unwrap() > last_step
        });
        if run["state"] == "finished" {
            break;
        }
        last_step = run["step"].as_u64().unwrap();
        if kills >= 10 && last_step >= STEPS / 2 {
            // Enough kills; let it finish.
            d.wait_for(&id, Duration::from_secs(300), |r| r["state"] == "finished");
            break;
        }
        std::thread::sleep(Duration::from_millis(moments.next_ms(120)));
        d.kill9();
        kills += 1;
        // The store opens cleanly and the run resumes from its last recorded checkpoint.
        d = Daemon::start(&state);
        let run = d.run(&id);
        assert!(
            !matches!(run["state"].as_str(), Some("failed" | "stopped")),
            "after kill {kills}: {run}"
        );
        last_step = last_step.min(run["step"].as_u64().unwrap());
        assert!(
            began.elapsed() < Duration::from_secs(600),
            "the run makes no progress"
        );
    }
    assert!(
        kills >= 10,
        "only {kills} kills before the run finished; make it longer"
    );
    eprintln!("{kills} kills");

    assert_eq!(
        final_weights(&d, &id),
        want_weights,
        "weights differ after {kills} kills"
    );
    let got_steps = step_numbers(&d, &id);
    let numbers: Vec<u64> = got_steps.iter().map(|s| s.0).collect();
    assert_eq!(
        numbers,
        (1..=STEPS).collect::<Vec<_>>(),
        "a step recorded twice or missing"
    );
    assert_eq!(
        got_steps, want_steps,
        "step statistics differ from the uninterrupted run"
    );
}

#[test]
fn a_damaged_newest_checkpoint_is_skipped_for_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), 400, 2);
    let state = dir.path().join("state");
    let d = Daemon::start(&state);
    let id = d.start_run(&config);
    d.wait_for(&id, Duration::from_secs(60), |r| {
        r["step"].as_u64() >= Some(6)
    });
    let out = d.r1ctl(&["pause".as_ref(), id.as_ref()]);
    assert!(out.status.success());
    d.wait_for(&id, Duration::from_secs(60), |r| r["state"] == "paused");
    let checkpoints = d.get(&format!("/v1/runs/{id}/checkpoints")).unwrap();
    let list = checkpoints.as_array().unwrap();
    let newest = list.last().unwrap().clone();
    let previous = list[list.len() - 2]["step"].as_u64().unwrap();
    d.kill9();

    // Flip a byte in the newest checkpoint's weights.
    let file = std::path::Path::new(newest["path"].as_str().unwrap()).join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(&file, bytes).unwrap();

    let d = Daemon::start(&state);
    let run = d.wait_for(&id, Duration::from_secs(60), |r| {
        r["state"] == "paused" && r["message"].as_str().is_some_and(|m| m.contains("skipped"))
    });
    assert_eq!(run["step"].as_u64().unwrap(), previous, "{run}");
    let message = run["message"].as_str().unwrap_or("");
    assert!(message.contains("skipped damaged checkpoint"), "{message}");
    // It resumes from there, taking the lost steps again.
    assert!(d.r1ctl(&["resume".as_ref(), id.as_ref()]).status.success());
    d.wait_for(&id, Duration::from_secs(60), |r| {
        r["step"].as_u64() > newest["step"].as_u64()
    });
}
