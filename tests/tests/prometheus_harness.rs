//! A real Prometheus scrapes `Metrics::render()` through bearer-token auth, and every query of
//! the shipped Grafana dashboard returns data.
//!
//! The scrape target is a tiny HTTP server in this test (std `TcpListener` thread) that serves
//! `/metrics` only with the right token (401 otherwise), while a second thread keeps recording
//! learner steps, as a training run would. The same harness points at a real r1d once it serves
//! `/metrics`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use r1_actors::judge::sandbox::JudgeCounts;
use r1_daemon::metrics::{ComponentStat, Metrics, RewardModelStat, StepMetrics, CONTENT_TYPE};
use r1_kernels::device::memory::{DeviceEstimate, MemoryPart};
use r1_kernels::device::{Device, MemoryEstimate, Placement};
use r1_tests::{dashboard_queries, http_get, Prometheus};
use serde_json::Value;

/// The KL value every step reports, so the test can look for it in Prometheus.
const KL: f64 = 0.0123;

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A learner step of `run`, its numbers varying with `step` the way a run's do.
fn step(run: &str, step: u64) -> StepMetrics {
    let t = step as f64;
    StepMetrics {
        run: run.into(),
        stage: "r1-zero".into(),
        step,
        reward_mean: 0.5 + 0.01 * t,
        reward_std: 0.3,
        components: ["accuracy", "format", "language"]
            .iter()
            .map(|name| ComponentStat {
                name: (*name).into(),
                mean: 0.4,
                std: 0.2,
            })
            .collect(),
        accuracy: 0.25 + 0.01 * t,
        kl: KL,
        entropy: 1.5,
        clip_fraction: 0.02,
        grad_norm: 0.9,
        lr: 3e-6,
        loss: 0.01,
        completion_len_mean: 200.0 + t,
        completion_len_max: 512.0,
        truncated_fraction: 0.05,
        zero_std_fraction: 0.1,
        reflection_rate: 0.02,
        phases: vec![
            ("sample".into(), 0.6 + 0.01 * (step % 5) as f64),
            ("judge".into(), 0.1),
            ("learn".into(), 0.3),
            ("checkpoint".into(), 0.05),
        ],
        step_seconds: 1.05,
        tokens_generated: 4096,
        tokens_trained: 5120,
        reward_models: vec![
            RewardModelStat {
                name: "helpfulness".into(),
                mean: 0.75,
                std: 0.5,
                decided_share: 0.5,
            },
            RewardModelStat {
                name: "harmlessness".into(),
                mean: -0.25,
                std: 0.125,
                decided_share: 0.25,
            },
        ],
        preference: Some((true, 0.5)),
    }
}

/// The scrape target: serves `metrics.render()` at `/metrics` to holders of `token` while a
/// second thread records steps; both stop on drop.
struct TargetServer {
    /// Where Prometheus scrapes it.
    address: SocketAddr,
    /// Tells both threads to end.
    stop: Arc<AtomicBool>,
    /// The server and the step recorder, joined on drop.
    threads: Vec<JoinHandle<()>>,
}

impl TargetServer {
    fn start(metrics: Arc<Metrics>, token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the target server");
        let address = listener.local_addr().expect("target address");
        let stop = Arc::new(AtomicBool::new(false));
        let expected = format!("Bearer {token}");
        let serve = {
            let (stop, metrics) = (Arc::clone(&stop), Arc::clone(&metrics));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        answer(stream, &metrics, &expected);
                    }
                }
            })
        };
        let train = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                metrics.set_run_state("alpha", "running");
                metrics.set_run_state("beta", "queued");
                // Where alpha runs and what each device holds, as r1d records at its start.
                let placement = Placement {
                    sampler: Device::Cuda(1),
                    learners: vec![Device::Cuda(0)],
                    ..Placement::default()
                };
                let estimate = MemoryEstimate {
                    devices: vec![DeviceEstimate {
                        device: Device::Cuda(0),
                        parts: vec![MemoryPart {
                            category: "weights".into(),
                            bytes: (1u64 << 30) as f64,
                        }],
                    }],
                };
                metrics.set_run_devices("alpha", &placement, &estimate);
                let mut judged = JudgeCounts::default();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    metrics.observe_step(&step("alpha", n));
                    judged.runs += 3;
                    judged.passes += 2;
                    judged.wrong_answers += 1;
                    metrics.sync_sandbox(&judged);
                    if n % 5 == 1 {
                        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                        metrics.observe_checkpoint("alpha", n, now.as_secs_f64(), 1 << 24);
                    }
                    if n % 7 == 0 {
                        metrics.observe_reward_timeout("accuracy");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            address,
            stop,
            threads: vec![serve, train],
        }
    }
}

impl Drop for TargetServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.address);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Answers one HTTP request: 200 with the exposition for `GET /metrics` with the right token,
/// 401 without it, 404 elsewhere. Records the request in the metrics, as r1d's middleware does.
fn answer(mut stream: TcpStream, metrics: &Metrics, expected_authorization: &str) {
    let started = Instant::now();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or_default();
    let authorized = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("authorization") && value.trim() == expected_authorization
        })
    });
    let (status, content_type, body) = match (path, authorized) {
        ("/metrics", true) => (200, CONTENT_TYPE, metrics.render()),
        ("/metrics", false) => (401, "text/plain", "bearer token required\n".to_owned()),
        _ => (404, "text/plain", "not found\n".to_owned()),
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    metrics.observe_http("/metrics", "GET", status, started.elapsed().as_secs_f64());
}

fn write_token(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("token");
    // A trailing newline, as `echo` or an editor would leave: Prometheus trims it.
    std::fs::write(&path, format!("{token}\n")).expect("writing the token file");
    path
}

#[test]
fn prometheus_scrapes_r1_metrics_and_every_dashboard_query_has_data() {
    let token = "r1-test-token-3f9c";
    let metrics = Arc::new(Metrics::new("0.1.0"));
    let target = TargetServer::start(Arc::clone(&metrics), token);
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = write_token(dir.path(), token);

    // The target itself: 401 without the token, the exposition with it.
    let (status, _) = http_get(target.address, "/metrics", None).expect("GET /metrics");
    assert_eq!(status, 401);
    let (status, body) = http_get(target.address, "/metrics", Some(token)).expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(body.contains("r1_build_info"), "{body}");

    let prometheus = Prometheus::start(target.address, &token_file)
        .unwrap_or_else(|e| panic!("starting prometheus: {e}"));
    prometheus
        .wait_until_scraped(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));

    let up = prometheus
        .query(r#"up{job="r1d"}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(
        up[0].1,
        1.0,
        "scrape failed: {:?}",
        prometheus.scrape_error()
    );
    assert_eq!(
        prometheus.scrape_error().unwrap_or_else(|e| panic!("{e}")),
        None
    );

    let kl = prometheus
        .query(r#"r1_kl_divergence{run="alpha"}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kl.len(), 1, "{kl:?}");
    assert_eq!(kl[0].1, KL);
    assert_eq!(kl[0].0["job"], "r1d");

    let dashboard = repo_file("config/grafana/r1.json");
    let exprs = dashboard_queries(&dashboard).unwrap_or_else(|e| panic!("{e}"));
    assert!(exprs.len() >= 30, "{} queries", exprs.len());
    // rate() needs two scrapes in its window; give the run a few seconds, then every panel
    // must show a finite number.
    prometheus
        .wait_for_dashboard_data(&dashboard, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));

    // The run selector's query: both runs, the queued one before its first step.
    let runs = prometheus
        .query("group by (run) (r1_steps_total)")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<&str> = runs.iter().map(|(l, _)| l["run"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["alpha", "beta"]);

    // Counters arrive whole: every step generated 4096 tokens, as scraped at the same instant.
    let per_step = prometheus
        .query(r#"r1_tokens_generated_total{run="alpha"} / r1_steps_total{run="alpha"}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(per_step.len(), 1, "{per_step:?}");
    assert_eq!(per_step[0].1, 4096.0);
    // And the throughput panel's rate() is positive once two scrapes are in its window.
    let generated = prometheus
        .query(r#"sum(rate(r1_tokens_generated_total{run="alpha"}[1m]))"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(generated[0].1 > 0.0, "{generated:?}");
}

#[test]
fn a_wrong_token_is_refused_and_prometheus_reports_the_target_down() {
    let metrics = Arc::new(Metrics::new("0.1.0"));
    let target = TargetServer::start(metrics, "the-right-token");
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = write_token(dir.path(), "a-wrong-token");
    let prometheus = Prometheus::start(target.address, &token_file)
        .unwrap_or_else(|e| panic!("starting prometheus: {e}"));
    prometheus
        .wait_until_scraped(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let up = prometheus
        .query(r#"up{job="r1d"}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].1, 0.0);
    let error = prometheus
        .scrape_error()
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a failed scrape has an error");
    assert!(error.contains("401"), "{error}");
    let leaked = prometheus
        .query("r1_build_info")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        leaked.is_empty(),
        "metrics scraped without the token: {leaked:?}"
    );
}

#[test]
fn the_dashboard_has_the_documented_layout() {
    let path = repo_file("config/grafana/r1.json");
    let text = std::fs::read_to_string(&path).expect("reading the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    let run = variable("run");
    assert_eq!(run["definition"], "label_values(r1_steps_total, run)");
    assert_eq!(run["includeAll"], true);
    assert_eq!(run["allValue"], ".*");

    let panels = dashboard["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "Health",
            "Learning",
            "\"Aha\" telemetry",
            "Throughput",
            "Phases",
            "Sandbox",
            "Checkpoints",
            "Preference RL (reward models)",
            "Devices"
        ]
    );
    let mut ids = std::collections::HashSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        let grid = &panel["gridPos"];
        let right = grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap();
        assert!(right <= 24, "{title} is wider than the dashboard");
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            panel["description"].as_str().is_some_and(|d| d.len() > 20),
            "{title} says what it shows"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            // "All" and multi-select make $run a regex: it must be matched with =~.
            assert!(!expr.contains("run=\"$run\""), "{title}: {expr}");
        }
    }
}

/// The shipped scrape config is valid for Prometheus' own checker once its token file exists.
#[test]
fn the_shipped_prometheus_config_checks_clean() {
    let shipped = std::fs::read_to_string(repo_file("config/prometheus/prometheus.yml"))
        .expect("reading config/prometheus/prometheus.yml");
    for needed in [
        "job_name: r1d",
        "scrape_interval: 5s",
        "type: Bearer",
        "credentials_file: /var/lib/r1d/token",
        "127.0.0.1:7878",
    ] {
        assert!(shipped.contains(needed), "prometheus.yml lacks {needed}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let token = write_token(dir.path(), "t");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        shipped.replace("/var/lib/r1d/token", token.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not runnable ({e}): run scripts/install-deps.sh (Debian's `prometheus` package)")
        });
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
