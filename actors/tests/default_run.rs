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

/// `../shared/fixtures` (or `R1_FIXTURES`).
fn fixtures() -> std::path::PathBuf {
    std::env::var_os("R1_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
        })
}

/// The recipe path on a model directory: a small Qwen2 with the real Qwen3 tokenizer (ChatML,
/// `<|im_end|>` its end of turn), the multiplication task. The base model is evaluated, the
/// cold-start model kept, and every evaluation's and step's samples written where `r1ctl
/// samples` reads them.
#[test]
fn a_model_directory_runs_the_recipe_with_its_own_tokenizer_and_writes_samples() {
    use r1_actors::report::{read_samples, read_steps};
    use r1_actors::stages::default_run::{TaskConfig, TaskOp};
    use r1_kernels::model::tiny::TinyModel;
    use r1_kernels::model::Architecture;

    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    let im_end = 151_645;
    TinyModel::engine(Architecture::Qwen2)
        .hidden(16)
        .heads(2, 1)
        .intermediate(32)
        .layers(1)
        .vocab(151_669)
        .positions(256)
        .special(im_end, None)
        .seed(3)
        .save(&model_dir)
        .unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(
            fixtures().join("tokenizers/qwen3").join(file),
            model_dir.join(file),
        )
        .unwrap();
    }

    let mut config = DefaultRunConfig::tiny();
    config.model_dir = Some(model_dir.clone());
    config.task = TaskConfig {
        op: TaskOp::Multiply,
        min_digits: 2,
        max_digits: 3,
        dropped_carry_fraction: 0.0,
        broken_format_fraction: 0.0,
    };
    config.eval.base = true;
    config.grpo.max_new_tokens = 16;
    let run_dir = dir.path().join("run");
    let mut stages = Vec::new();
    let report = run_default(&config, &run_dir, &mut |p| {
        if let Progress::Stage { stage, detail, .. } = p {
            stages.push((stage, detail));
        }
    })
    .unwrap();

    assert_eq!(stages[0].0, StageName::Setup);
    assert!(
        stages[0].1.contains(&model_dir.display().to_string())
            && stages[0].1.contains("2-3 digit times one digit"),
        "{}",
        stages[0].1
    );
    assert_eq!(stages[1].0, StageName::EvalBase);
    let base = report
        .base
        .expect("eval.base asks for the base model's figures");
    assert_eq!(
        (base.problems, base.samples),
        (config.eval.problems, config.eval.samples)
    );
    // The model directory's shape, not the tiny default's.
    assert_eq!(
        report.parameters,
        load_model_dir(&model_dir).unwrap().layout.total
    );
    let cold_start = load_model_dir(&report.cold_start).unwrap();
    assert_eq!(cold_start.config.vocab_size, 151_669);
    // Both saved models carry the tokenizer they were trained with.
    for saved in [&report.cold_start, &report.checkpoint] {
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            assert_eq!(
                std::fs::read(saved.join(file)).unwrap(),
                std::fs::read(model_dir.join(file)).unwrap(),
                "{}/{file}",
                saved.display()
            );
        }
    }

    // Every held-out sample of each evaluation, and the kept rollouts of each GRPO step.
    let per_eval = config.eval.problems * config.eval.samples;
    for which in ["base", "cold-start", "rl"] {
        let samples = read_samples(&run_dir.join("eval").join(which)).unwrap();
        assert_eq!(samples.len(), per_eval, "{which}");
        assert!(samples.iter().all(|s| s.prompt.contains('*')), "{which}");
    }
    let steps = read_steps(&run_dir).unwrap();
    assert_eq!(steps.len(), config.grpo.steps);
    let samples = read_samples(&run_dir).unwrap();
    assert_eq!(
        samples.len(),
        config.grpo.steps * config.grpo.prompts_per_step.min(4)
    );
    // report.json names the base figures; the eval chart has a bar group for each model.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("report.json")).unwrap())
            .unwrap();
    assert!(json["base"]["accuracy"].is_number());
    let eval = std::fs::read_to_string(run_dir.join("eval.svg")).unwrap();
    assert!(
        eval.contains(">base<"),
        "eval.svg lacks the base model's bars"
    );
    // Each bar group is named after the model it scored: GRPO started from the cold start.
    for (label, present) in [
        ("cold start", true),
        ("after RL", true),
        ("before RL", false),
    ] {
        assert_eq!(
            eval.contains(&format!(">{label}<")),
            present,
            "eval.svg and the {label:?} bars"
        );
    }

    // Seeded and repeatable: the same config gives the same figures and the same samples.
    let again_dir = dir.path().join("again");
    let again = run_default(&config, &again_dir, &mut |_| {}).unwrap();
    assert_eq!(again.base, report.base);
    assert_eq!(again.deterministic_part(), report.deterministic_part());
    for file in ["samples.jsonl", "eval/rl/samples.jsonl"] {
        assert_eq!(
            std::fs::read(run_dir.join(file)).unwrap(),
            std::fs::read(again_dir.join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn a_missing_model_directory_is_named() {
    let mut config = DefaultRunConfig::tiny();
    config.model_dir = Some("/nonexistent/model".into());
    let dir = tempfile::tempdir().unwrap();
    let err = run_default(&config, dir.path(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/model"), "{err}");
}
