//! `Metrics::render` as a scraper sees it: every value under its documented name and labels,
//! and the exposition clean by Prometheus' own linter, `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use r1_actors::judge::sandbox::JudgeCounts;
use r1_daemon::metrics::{
    ComponentStat, Metrics, RewardModelStat, StepMetrics, RUN_STATES, SANDBOX_OUTCOMES,
};
use r1_kernels::device::memory::{DeviceEstimate, MemoryPart};
use r1_kernels::device::{Device, MemoryEstimate, Placement};

/// One sample line of the text format: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    /// Metric name, with `_bucket`/`_sum`/`_count` for histogram lines.
    name: String,
    /// Label names and values, unescaped.
    labels: BTreeMap<String, String>,
    /// The sample value (NaN and ±Inf included).
    value: f64,
}

/// Parses the sample lines of a text exposition (comments skipped), panicking with the line on
/// anything malformed: malformed output is exactly what these tests exist to catch.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("malformed sample line: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (_, c) = chars.next()?;
            match c {
                '}' => break,
                ',' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
        let consumed = chars.next().map_or(inner.len(), |(at, _)| at);
        rest = &inner[consumed..];
    }
    let value = match rest.trim() {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The value of the one sample named `name` with exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == wanted)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one sample {name}{wanted:?}, found {found:?}"
    );
    found[0].value
}

/// The `# HELP` and `# TYPE` lines of `name`.
fn help_and_type(text: &str, name: &str) -> (String, String) {
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{prefix} {name} ")))
            .unwrap_or_else(|| panic!("no {prefix} line for {name}"))
            .to_owned()
    };
    (find("# HELP"), find("# TYPE"))
}

fn step(run: &str, step: u64) -> StepMetrics {
    StepMetrics {
        run: run.into(),
        stage: "r1-zero".into(),
        step,
        reward_mean: 0.625,
        reward_std: 0.25,
        components: vec![
            ComponentStat {
                name: "accuracy".into(),
                mean: 0.5,
                std: 0.5,
            },
            ComponentStat {
                name: "format".into(),
                mean: 0.125,
                std: 0.0625,
            },
        ],
        accuracy: 0.5,
        kl: 0.0012,
        entropy: 1.75,
        clip_fraction: 0.03125,
        grad_norm: 0.875,
        lr: 3e-6,
        loss: -0.015625,
        completion_len_mean: 312.5,
        completion_len_max: 1024.0,
        truncated_fraction: 0.0625,
        zero_std_fraction: 0.1875,
        reflection_rate: 0.09375,
        phases: vec![
            ("sample".into(), 1.5),
            ("judge".into(), 0.25),
            ("learn".into(), 2.0),
        ],
        step_seconds: 3.75,
        tokens_generated: 10_000,
        tokens_trained: 12_500,
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

#[test]
fn a_step_lands_under_its_documented_names_and_labels() {
    let metrics = Metrics::new("9.8.7");
    metrics.observe_step(&step("alpha", 41));
    metrics.observe_step(&step("alpha", 42));
    let text = metrics.render();
    let s = parse(&text);
    let run = [("run", "alpha")];

    assert_eq!(value(&s, "r1_steps_total", &run), 2.0);
    assert_eq!(value(&s, "r1_step", &run), 42.0);
    assert_eq!(value(&s, "r1_tokens_generated_total", &run), 20_000.0);
    assert_eq!(value(&s, "r1_tokens_trained_total", &run), 25_000.0);
    let stats = [
        ("r1_reward_mean", 0.625),
        ("r1_reward_std", 0.25),
        ("r1_accuracy_ratio", 0.5),
        ("r1_kl_divergence", 0.0012),
        ("r1_policy_entropy", 1.75),
        ("r1_clip_ratio", 0.03125),
        ("r1_grad_norm", 0.875),
        ("r1_learning_rate", 3e-6),
        ("r1_loss", -0.015625),
        ("r1_completion_length_mean_tokens", 312.5),
        ("r1_completion_length_max_tokens", 1024.0),
        ("r1_truncated_ratio", 0.0625),
        ("r1_zero_std_group_ratio", 0.1875),
        ("r1_reflection_ratio", 0.09375),
    ];
    for (name, expected) in stats {
        assert_eq!(value(&s, name, &run), expected, "{name}");
        let (help, kind) = help_and_type(&text, name);
        assert_eq!(kind, "gauge", "{name}");
        assert!(help.len() > 10, "{name} has help text");
    }
    let accuracy = [("run", "alpha"), ("component", "accuracy")];
    let format = [("run", "alpha"), ("component", "format")];
    assert_eq!(value(&s, "r1_reward_component_mean", &accuracy), 0.5);
    assert_eq!(value(&s, "r1_reward_component_std", &format), 0.0625);
    // A preference step's reward models, each under its name.
    let helpful = [("run", "alpha"), ("model", "helpfulness")];
    let harmless = [("run", "alpha"), ("model", "harmlessness")];
    assert_eq!(value(&s, "r1_reward_model_score_mean", &helpful), 0.75);
    assert_eq!(value(&s, "r1_reward_model_score_std", &harmless), 0.125);
    assert_eq!(value(&s, "r1_reward_model_decided_ratio", &harmless), 0.25);
    assert_eq!(value(&s, "r1_preference_reward", &run), 0.5);
    assert_eq!(value(&s, "r1_preference_active", &run), 1.0);
    assert_eq!(
        value(
            &s,
            "r1_run_stage",
            &[("run", "alpha"), ("stage", "r1-zero")]
        ),
        1.0
    );

    // Histograms: two steps of 3.75 s; each phase twice.
    assert_eq!(value(&s, "r1_step_duration_seconds_count", &run), 2.0);
    assert_eq!(value(&s, "r1_step_duration_seconds_sum", &run), 7.5);
    assert_eq!(
        value(
            &s,
            "r1_step_duration_seconds_bucket",
            &[("run", "alpha"), ("le", "+Inf")]
        ),
        2.0
    );
    let learn = [("run", "alpha"), ("phase", "learn")];
    assert_eq!(value(&s, "r1_phase_duration_seconds_sum", &learn), 4.0);
    assert_eq!(value(&s, "r1_phase_duration_seconds_count", &learn), 2.0);
    // 2.0 s lies in the bucket whose bound is 2.56 s, not in the one below it (1.28 s).
    let bucket = |le: &str| {
        value(
            &s,
            "r1_phase_duration_seconds_bucket",
            &[("run", "alpha"), ("phase", "learn"), ("le", le)],
        )
    };
    assert_eq!(bucket("1.28"), 0.0);
    assert_eq!(bucket("2.56"), 2.0);
    assert_eq!(
        help_and_type(&text, "r1_phase_duration_seconds").1,
        "histogram"
    );

    // The last step's wall-clock time is recent.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = value(&s, "r1_last_step_timestamp_seconds", &run);
    assert!((now - last).abs() < 60.0, "last step at {last}, now {now}");
}

#[test]
fn build_info_names_the_version() {
    let metrics = Metrics::new("1.2.3");
    let s = parse(&metrics.render());
    let info: Vec<&Sample> = s.iter().filter(|x| x.name == "r1_build_info").collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].value, 1.0);
    assert_eq!(info[0].labels["version"], "1.2.3");
    assert_eq!(info[0].labels["arch"], std::env::consts::ARCH);
    assert!(value(&s, "r1_start_time_seconds", &[]) > 1.7e9);
}

#[test]
fn a_stage_change_moves_the_one_hot_stage() {
    let metrics = Metrics::new("0");
    metrics.observe_step(&step("r", 1));
    let mut next = step("r", 2);
    next.stage = "reasoning-rl".into();
    metrics.observe_step(&next);
    let s = parse(&metrics.render());
    let stages: Vec<&Sample> = s.iter().filter(|x| x.name == "r1_run_stage").collect();
    assert_eq!(stages.len(), 1, "{stages:?}");
    assert_eq!(stages[0].labels["stage"], "reasoning-rl");
}

#[test]
fn every_state_a_run_is_recorded_in_is_a_known_state() {
    use r1_daemon::api::RunState;
    // `Suspended` is never recorded (the run keeps the state it had); every other one is, and
    // `/metrics` must know it (a run loading its model is `starting`).
    for state in [
        RunState::Queued,
        RunState::Starting,
        RunState::Running,
        RunState::Paused,
        RunState::Stopping,
        RunState::Stopped,
        RunState::Finished,
        RunState::Failed,
    ] {
        assert!(RUN_STATES.contains(&state.name()), "{}", state.name());
    }
    let metrics = Metrics::new("0");
    metrics.set_run_state("gamma", "starting");
    let s = parse(&metrics.render());
    assert_eq!(
        value(
            &s,
            "r1_run_state",
            &[("run", "gamma"), ("state", "starting")]
        ),
        1.0
    );
}

#[test]
fn run_state_is_one_hot_and_lists_the_run() {
    let metrics = Metrics::new("0");
    metrics.set_run_state("beta", "running");
    metrics.set_run_state("beta", "paused");
    let s = parse(&metrics.render());
    for state in RUN_STATES {
        let expected = if state == "paused" { 1.0 } else { 0.0 };
        assert_eq!(
            value(&s, "r1_run_state", &[("run", "beta"), ("state", state)]),
            expected,
            "{state}"
        );
    }
    // The dashboard's run selector reads r1_steps_total: the run is there before any step.
    assert_eq!(value(&s, "r1_steps_total", &[("run", "beta")]), 0.0);

    // An unknown state is exported as no state, never as a stale one.
    metrics.set_run_state("beta", "exploded");
    let s = parse(&metrics.render());
    let ones: Vec<&Sample> = s
        .iter()
        .filter(|x| x.name == "r1_run_state" && x.value != 0.0)
        .collect();
    assert!(ones.is_empty(), "{ones:?}");
}

#[test]
fn checkpoints_timeouts_and_http_requests_are_counted() {
    let metrics = Metrics::new("0");
    metrics.observe_checkpoint("gamma", 100, 1_800_000_000.0, 4096);
    metrics.observe_checkpoint("gamma", 200, 1_800_000_600.5, 8192);
    metrics.observe_reward_timeout("accuracy");
    metrics.observe_reward_timeout("accuracy");
    metrics.observe_reward_timeout("language");
    metrics.observe_http("/runs/{id}", "GET", 200, 0.002);
    metrics.observe_http("/runs/{id}", "GET", 200, 0.004);
    metrics.observe_http("/runs", "POST", 401, 0.001);
    let s = parse(&metrics.render());
    let run = [("run", "gamma")];
    assert_eq!(value(&s, "r1_checkpoints_total", &run), 2.0);
    assert_eq!(
        value(&s, "r1_checkpoint_last_timestamp_seconds", &run),
        1_800_000_600.5
    );
    assert_eq!(value(&s, "r1_checkpoint_last_step", &run), 200.0);
    assert_eq!(value(&s, "r1_checkpoint_last_size_bytes", &run), 8192.0);
    assert_eq!(
        value(&s, "r1_reward_timeouts_total", &[("component", "accuracy")]),
        2.0
    );
    assert_eq!(
        value(&s, "r1_reward_timeouts_total", &[("component", "language")]),
        1.0
    );
    let get = [
        ("route", "/runs/{id}"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert_eq!(value(&s, "r1_http_requests_total", &get), 2.0);
    let denied = [("route", "/runs"), ("method", "POST"), ("status", "401")];
    assert_eq!(value(&s, "r1_http_requests_total", &denied), 1.0);
    let timing = [("route", "/runs/{id}"), ("method", "GET")];
    assert_eq!(
        value(&s, "r1_http_request_duration_seconds_count", &timing),
        2.0
    );
    assert!((value(&s, "r1_http_request_duration_seconds_sum", &timing) - 0.006).abs() < 1e-12);
}

#[test]
fn sandbox_totals_become_monotonic_counters_per_outcome() {
    let metrics = Metrics::new("0");
    let first = JudgeCounts {
        runs: 10,
        passes: 6,
        wrong_answers: 2,
        runtime_errors: 1,
        timeouts: 1,
        ..JudgeCounts::default()
    };
    metrics.sync_sandbox(&first);
    metrics.sync_sandbox(&first); // nothing new: nothing added
    let later = JudgeCounts {
        runs: 13,
        passes: 8,
        sandbox_errors: 1,
        ..first
    };
    metrics.sync_sandbox(&later);
    let s = parse(&metrics.render());
    let outcome = |o: &str| value(&s, "r1_sandbox_runs_total", &[("outcome", o)]);
    assert_eq!(outcome("passed"), 8.0);
    assert_eq!(outcome("wrong_answer"), 2.0);
    assert_eq!(outcome("runtime_error"), 1.0);
    assert_eq!(outcome("timed_out"), 1.0);
    assert_eq!(outcome("sandbox_error"), 1.0);
    // Every outcome exists from the first sync, so rate() panels have data at once.
    for o in SANDBOX_OUTCOMES {
        assert!(outcome(o) >= 0.0);
    }

    // A replaced judge counts from 0 again: its totals are added, the counter never falls.
    let restarted = JudgeCounts {
        runs: 3,
        passes: 3,
        ..JudgeCounts::default()
    };
    metrics.sync_sandbox(&restarted);
    let s = parse(&metrics.render());
    assert_eq!(
        value(&s, "r1_sandbox_runs_total", &[("outcome", "passed")]),
        11.0
    );
    assert_eq!(
        value(&s, "r1_sandbox_runs_total", &[("outcome", "wrong_answer")]),
        2.0
    );
}

#[test]
fn bad_durations_are_skipped_and_bad_stats_are_shown() {
    let metrics = Metrics::new("0");
    let mut broken = step("delta", 1);
    broken.step_seconds = f64::NAN;
    broken.phases = vec![("sample".into(), -1.0), ("learn".into(), f64::INFINITY)];
    broken.loss = f64::NAN;
    metrics.observe_step(&broken);
    metrics.observe_http("/healthz", "GET", 200, -0.5);
    let s = parse(&metrics.render());
    let run = [("run", "delta")];
    assert!(value(&s, "r1_loss", &run).is_nan(), "a NaN loss is news");
    assert!(!s
        .iter()
        .any(|x| x.name.starts_with("r1_step_duration_seconds")
            || x.name.starts_with("r1_phase_duration_seconds")
            || x.name.starts_with("r1_http_request_duration_seconds")));
    assert_eq!(value(&s, "r1_steps_total", &run), 1.0);
}

#[test]
fn forget_run_removes_only_that_run() {
    let metrics = Metrics::new("0");
    metrics.set_run_state("keep", "running");
    metrics.observe_step(&step("keep", 1));
    metrics.set_run_state("drop", "finished");
    metrics.observe_step(&step("drop", 1));
    metrics.observe_checkpoint("drop", 1, 1_800_000_000.0, 1);
    metrics.forget_run("drop");
    let s = parse(&metrics.render());
    let left: Vec<&Sample> = s
        .iter()
        .filter(|x| x.labels.get("run").map(String::as_str) == Some("drop"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(value(&s, "r1_step", &[("run", "keep")]), 1.0);
    // A forgotten run that comes back starts clean, with its stage exported again.
    metrics.observe_step(&step("drop", 2));
    let s = parse(&metrics.render());
    assert_eq!(
        value(&s, "r1_run_stage", &[("run", "drop"), ("stage", "r1-zero")]),
        1.0
    );
}

#[test]
fn every_metric_has_help_text() {
    let metrics = Metrics::new("0");
    populate(&metrics);
    let text = metrics.render();
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(typed.len() >= 30, "{} metric families", typed.len());
    for name in typed {
        assert!(name.starts_with("r1_"), "{name} lacks the r1_ prefix");
        let (help, _) = help_and_type(&text, name);
        assert!(!help.trim().is_empty(), "{name} has empty help");
    }
}

/// Calls every recording method, so every family has at least one series.
fn populate(metrics: &Metrics) {
    // Where alpha runs and what its device holds, as r1d records when a run starts (before its steps).
    let estimate = MemoryEstimate {
        devices: vec![DeviceEstimate {
            device: Device::Cpu,
            parts: vec![MemoryPart {
                category: "weights".into(),
                bytes: (1u64 << 20) as f64,
            }],
        }],
    };
    metrics.set_run_devices("alpha", &Placement::default(), &estimate);
    metrics.set_run_state("alpha", "running");
    metrics.observe_step(&step("alpha", 1));
    metrics.observe_checkpoint("alpha", 1, 1_800_000_000.0, 1 << 20);
    metrics.observe_reward_timeout("accuracy");
    metrics.sync_sandbox(&JudgeCounts {
        runs: 2,
        passes: 1,
        timeouts: 1,
        ..JudgeCounts::default()
    });
    metrics.observe_http("/metrics", "GET", 200, 0.003);
}

#[test]
fn promtool_check_metrics_is_clean() {
    let metrics = Metrics::new("0.1.0");
    populate(&metrics);
    let text = metrics.render();
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => panic!(
            "promtool not runnable ({error}): run scripts/install-deps.sh, which installs \
             Debian's `prometheus` package (scripts/test.sh does it first)"
        ),
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("writing the exposition to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}",
        out.status
    );
}

/// docs/observability.md's metric table names exactly the families r1d exports, with their types.
#[test]
fn the_documented_metric_table_matches_the_exposition() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/observability.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut documented = BTreeMap::new();
    for row in doc.lines().filter(|l| l.starts_with("| `r1_")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let kind = cells[2].to_owned();
        for name in cells[1].split(',') {
            documented.insert(name.trim().trim_matches('`').to_owned(), kind.clone());
        }
    }
    let metrics = Metrics::new("0");
    populate(&metrics);
    let exported: BTreeMap<String, String> = metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect();
    assert_eq!(documented, exported, "{} vs render()", path.display());
}
