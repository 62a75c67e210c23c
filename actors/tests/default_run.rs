//! The embedded default run on its tiny test config: it completes, reports progress, writes
//! report.json and a checkpoint that loads, and the same seed gives the same numbers.

use r1_actors::stages::default_run::{run_default, DefaultRunConfig, Progress, StageName};
use r1_kernels::model::load_model_dir;

#[test]
fn the_tiny_default_run_reports_saves_and_repeats() {
    let config = DefaultRunConfig::tiny();
    let first_dir = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    let report = run_default(&config, first_dir.path(), &mut |p| events.push(p)).unwrap();

    // Progress: every stage announced in order, every SFT and GRPO step seen.
    let stages: Vec<StageName> = events
        .iter()
        .filter_map(|e| match e {
            Progress::Stage { stage, .. } => Some(*stage),
            _ => None,
        })
        .collect();
    assert_eq!(
        stages,
        [
            StageName::Setup,
            StageName::Sft,
            StageName::EvalBefore,
            StageName::Grpo,
            StageName::EvalAfter,
            StageName::Save
        ]
    );
    let grpo_steps = events
        .iter()
        .filter(|e| matches!(e, Progress::GrpoStep { .. }))
        .count();
    assert_eq!(grpo_steps, config.grpo.steps);
    assert_eq!(report.grpo.steps, config.grpo.steps);
    assert!(!report.grpo.stopped_by_time_budget);

    // The held-out numbers are shares over the configured evaluation.
    for scores in [report.before, report.after] {
        assert_eq!(
            (scores.problems, scores.samples),
            (config.eval.problems, config.eval.samples)
        );
        for share in [
            scores.accuracy,
            scores.cons_at_k,
            scores.format_rate,
            scores.truncated_rate,
        ] {
            assert!((0.0..=1.0).contains(&share), "{scores:?}");
        }
        assert!(
            scores.mean_length > 0.0 && scores.mean_length <= config.grpo.max_new_tokens as f64
        );
    }
    assert!(report.sft.first_loss.is_finite() && report.sft.last_loss.is_finite());

    // report.json holds the same report, with the fields a reader looks for.
    let text = std::fs::read_to_string(first_dir.path().join("report.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for side in ["before", "after"] {
        for field in ["accuracy", "format_rate", "mean_length", "cons_at_k"] {
            assert!(
                json[side][field].is_number(),
                "report.json lacks {side}.{field}"
            );
        }
    }
    for field in ["total_seconds", "eval_seconds", "checkpoint", "config"] {
        assert!(!json[field].is_null(), "report.json lacks {field}");
    }
    assert!(json["sft"]["seconds"].is_number() && json["grpo"]["seconds"].is_number());
    assert_eq!(json["config"]["seed"], config.seed);

    // The checkpoint is a model directory the engine loads back, with the trained weights.
    assert_eq!(report.checkpoint, first_dir.path().join("final"));
    let loaded = load_model_dir(&report.checkpoint).unwrap();
    assert_eq!(loaded.config.vocab_size, 264);
    assert_eq!(loaded.layout.total, report.parameters);

    // Same seed, same numbers.
    let second_dir = tempfile::tempdir().unwrap();
    let again = run_default(&config, second_dir.path(), &mut |_| {}).unwrap();
    assert_eq!(report.deterministic_part(), again.deterministic_part());
    let reloaded = load_model_dir(&again.checkpoint).unwrap();
    assert!(loaded
        .params
        .iter()
        .zip(&reloaded.params)
        .all(|(a, b)| a.to_bits() == b.to_bits()));

    // The SVG charts sit beside report.json: one point per GRPO step, the same bytes again.
    let chart =
        |dir: &std::path::Path, name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let reward = chart(first_dir.path(), "reward.svg");
    assert_eq!(reward.matches("class=\"series\"").count(), 3);
    assert_eq!(reward.matches(" L").count(), 3 * (report.grpo.steps - 1));
    for name in [
        "reward.svg",
        "response_length.svg",
        "reflection_rate.svg",
        "kl.svg",
        "entropy.svg",
        "eval.svg",
    ] {
        assert_eq!(
            chart(first_dir.path(), name),
            chart(second_dir.path(), name),
            "{name}"
        );
    }
}

#[test]
fn a_bad_config_is_refused_before_anything_is_written() {
    let mut config = DefaultRunConfig::tiny();
    config.eval.samples = 0;
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let err = run_default(&config, &run_dir, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("eval.samples"), "{err}");
    assert!(!run_dir.exists());
}

#[test]
fn the_time_budget_stops_grpo_and_the_report_says_so() {
    let mut config = DefaultRunConfig::tiny();
    // One second cannot hold another step plus the final evaluation's margin: GRPO stops after
    // its first step (the budget is checked from the second on, once a step has been timed).
    config.time_budget_secs = 1;
    config.grpo.steps = 50;
    let dir = tempfile::tempdir().unwrap();
    let report = run_default(&config, dir.path(), &mut |_| {}).unwrap();
    assert!(report.grpo.stopped_by_time_budget);
    assert_eq!((report.grpo.steps, report.grpo.steps_planned), (1, 50));
    assert!(dir.path().join("final/model.safetensors").is_file());
}
