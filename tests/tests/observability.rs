//! A real Prometheus scrapes a real `r1d` during a run (bearer token from the daemon's token
//! file), `promtool check metrics` is clean on what r1d serves, and every query of the shipped
//! Grafana dashboard returns data.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{preference_job_config, Daemon};
use r1_tests::Prometheus;

#[test]
fn prometheus_scrapes_a_running_r1d_and_every_dashboard_query_has_data() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough to outlast the test; a checkpoint every 2 steps feeds the checkpoint panels.
    // A preference run: its steps feed the learning panels as any GRPO run's do, and its
    // reward models the preference panels.
    let config = preference_job_config(dir.path(), 100_000, 2);
    let d = Daemon::start(&dir.path().join("state"));
    let id = d.start_run(&config);
    d.wait_for(&id, Duration::from_secs(60), |r| {
        r["step"].as_u64() >= Some(2)
    });

    // What r1d serves passes promtool.
    let text = ureq::get(&d.url("/metrics"))
        .set("Authorization", &format!("Bearer {}", d.token))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(text.contains("r1_build_info"), "{text}");
    assert!(
        text.contains(&format!("r1_steps_total{{run=\"{id}\"}}")),
        "{text}"
    );
    for model in ["helpful", "harmless"] {
        assert!(
            text.contains(&format!(
                "r1_reward_model_score_mean{{model=\"{model}\",run=\"{id}\"}}"
            )),
            "{text}"
        );
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: run scripts/install-deps.sh");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let prometheus = Prometheus::start(d.addr.parse().unwrap(), &d.state.join("token")).unwrap();
    prometheus
        .wait_until_scraped(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", prometheus.log_tail()));
    let up = prometheus.query("up").unwrap();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0, "r1d is not up for Prometheus");
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/grafana/r1.json");
    prometheus
        .wait_for_dashboard_data(&dashboard, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e}"));
    let steps = prometheus
        .query(&format!("r1_steps_total{{run=\"{id}\"}}"))
        .unwrap();
    assert!(steps[0].1 >= 2.0, "{steps:?}");
    let out = d.r1ctl(&["stop".as_ref(), id.as_ref()]);
    assert!(out.status.success());
}
