//! The preference-RL stage: on the tiny demo (two trained reward models, rule rewards for
//! additions) the preference reward rises while rule accuracy holds; and the step's wiring with
//! stand-in scorers — who gets which reward, what each model reads, when preference switches on,
//! which model decided each group.

use std::cell::RefCell;

use r1_actors::judge::format::FormatConfig;
use r1_actors::judge::reward::{CodeSandbox, RewardRules, RewardWeights};
use r1_actors::learner::{GrpoLearner, LearnerConfig};
use r1_actors::stages::preference::demo::{run_preference_demo, PreferenceDemoConfig};
use r1_actors::stages::preference::{
    Normalisation, PreferenceSettings, ResponseScorer, ResponseView, RewardModelUse,
    RewardNormaliser, StagePrompt,
};
use r1_actors::stages::{preference_step, StageSettings};
use r1_kernels::model::tiny::TinyModel;
use r1_kernels::model::{Architecture, Model};
use r1_kernels::sample::SamplingParams;
use r1_kernels::template::{PromptTemplate, TemplateKind};
use r1_kernels::tokenizer::{ByteTokenizer, Tokenizer};
use r1_kernels::train::{GrpoConfig, LrSchedule};

#[test]
fn preference_reward_rises_while_rule_accuracy_holds() {
    let start = std::time::Instant::now();
    let report = run_preference_demo(&PreferenceDemoConfig::default(), &mut |s| {
        eprintln!("{s:?}")
    })
    .unwrap();
    let (p0, p1) = report.start_end(3, |s| s.preference_reward);
    let (q0, q1) = report.start_end(3, |s| s.polite_share);
    let (a0, a1) = report.start_end(3, |s| s.rule_accuracy);
    eprintln!(
        "helpfulness acc {:.3}, harmlessness acc {:.3}; preference reward {p0:.3} -> {p1:.3}; \
         polite {q0:.3} -> {q1:.3}; rule accuracy {a0:.3} -> {a1:.3}; {:.1} s",
        report.helpfulness_accuracy,
        report.harmlessness_accuracy,
        start.elapsed().as_secs_f64()
    );
    assert!(report.helpfulness_accuracy >= 0.9);
    assert!(report.harmlessness_accuracy >= 0.9);
    assert!(p1 > p0 + 0.5, "preference reward {p0} -> {p1}");
    assert!(q1 > q0 + 0.3, "polite share {q0} -> {q1}");
    eprintln!(
        "rule accuracy on all additions (pass@1, 4 samples): {:.3} -> {:.3}",
        report.rule_accuracy_before, report.rule_accuracy_after
    );
    assert!(
        report.rule_accuracy_after >= report.rule_accuracy_before - 0.05,
        "rule accuracy fell: {} -> {}",
        report.rule_accuracy_before,
        report.rule_accuracy_after
    );
    assert!(
        report
            .steps
            .iter()
            .all(|s| !s.preference_on || s.decided.iter().sum::<f64>() <= 1.0 + 1e-9),
        "each group is decided by at most one model"
    );
}

/// Scores by a fixed rule and records what it was shown.
struct Rule {
    seen: RefCell<Vec<(String, String)>>,
    score: fn(&str) -> f32,
}

impl ResponseScorer for Rule {
    fn score(&self, items: &[(String, String)]) -> Result<Vec<f32>, String> {
        self.seen.borrow_mut().extend(items.iter().cloned());
        Ok(items.iter().map(|(_, r)| (self.score)(r)).collect())
    }
}

fn tiny_learner(g: usize) -> GrpoLearner {
    let config = TinyModel::engine(Architecture::Llama)
        .layers(1)
        .vocab(ByteTokenizer::VOCAB_SIZE)
        .positions(256)
        .special(ByteTokenizer::EOS, None)
        .with(|c| c.tie_word_embeddings = true)
        .into_config();
    GrpoLearner::new(
        Model::random(config, 5, 0.5),
        LearnerConfig {
            grpo: GrpoConfig {
                beta: 0.0,
                ..GrpoConfig::default()
            },
            group_size: g,
            minibatches: 1,
            schedule: LrSchedule::constant(1e-4),
            ..LearnerConfig::default()
        },
    )
}

fn settings(from_step: u64) -> PreferenceSettings {
    PreferenceSettings {
        stage: StageSettings {
            template: PromptTemplate::new(TemplateKind::ChatMl),
            sampling: SamplingParams {
                temperature: 1.0,
                max_new_tokens: 12,
                ..SamplingParams::default()
            },
            rules: RewardRules {
                weights: RewardWeights::R1_ZERO,
                format: FormatConfig {
                    prefilled_think: false,
                    ..FormatConfig::default()
                },
                ..RewardRules::default()
            },
            max_batch: 32,
        },
        reward_models: vec![
            RewardModelUse {
                name: "length".into(),
                view: ResponseView::Whole,
                weight: 2.0,
            },
            RewardModelUse {
                name: "constant".into(),
                view: ResponseView::Summary,
                weight: 1.0,
            },
        ],
        normalisation: Normalisation::Batch,
        preference_from_step: from_step,
    }
}

#[test]
fn general_prompts_go_to_the_reward_models_and_switch_on_at_the_configured_step() {
    let g = 4;
    let tokenizer = Tokenizer::byte();
    let task =
        r1_actors::data::builtin_task("arithmetic", 1, r1_actors::judge::tasks::Split::Train, 1)
            .unwrap()
            .remove(0);
    let prompts = vec![
        StagePrompt::task(&task),
        StagePrompt::General {
            prompt: "say hi".into(),
        },
        StagePrompt::General {
            prompt: "say bye".into(),
        },
    ];
    let length = Rule {
        seen: RefCell::new(Vec::new()),
        score: |r| r.len() as f32,
    };
    let constant = Rule {
        seen: RefCell::new(Vec::new()),
        score: |_| 3.0,
    };
    let scorers: [&dyn ResponseScorer; 2] = [&length, &constant];
    let mut learner = tiny_learner(g);
    let mut normaliser = RewardNormaliser::default();
    let settings = settings(1);
    let sandbox = CodeSandbox::unavailable("no code here");

    // Step 0: preference is off, yet the models score the general completions (for the curve).
    let off = preference_step(
        &mut learner,
        &tokenizer,
        &sandbox,
        &prompts,
        &settings,
        &scorers,
        &mut normaliser,
        0,
        7,
    )
    .unwrap();
    assert!(!off.stats.preference_on);
    assert_eq!(
        (off.stats.reasoning_groups, off.stats.general_groups),
        (1, 2)
    );
    let seen = length.seen.take();
    assert_eq!(seen.len(), 2 * g, "only general completions are scored");
    assert!(seen.iter().all(|(p, _)| p == "say hi" || p == "say bye"));
    assert_eq!(off.stats.reward_models[1].mean, 3.0);
    assert_eq!(off.stats.reward_models[1].std, 0.0);
    // Random completions vary in length, so the length model decides every group it can; the
    // constant model never does.
    assert_eq!(off.stats.reward_models[1].decided_share, 0.0);
    assert!(off.stats.reward_models[0].decided_share > 0.0);
    // No preference reward yet: the general groups have zero reward, the reasoning group is ruled.
    assert!(off.report.learner.frac_zero_std >= 2.0 / 3.0 - 1e-9);
    // The summary view of a completion without `</think>` is empty.
    for (_, summary) in constant.seen.take() {
        assert!(!summary.contains("<think>"));
    }

    let on = preference_step(
        &mut learner,
        &tokenizer,
        &sandbox,
        &prompts,
        &settings,
        &scorers,
        &mut normaliser,
        1,
        8,
    )
    .unwrap();
    assert!(on.stats.preference_on);
    // Preference reward = Σ weight · raw score: 2 · mean length + 1 · 3.
    let want = 2.0 * on.stats.reward_models[0].mean + 3.0;
    assert!((on.stats.preference_reward - want).abs() < 1e-9);

    // Scorer count must match the configured models.
    let err = preference_step(
        &mut learner,
        &tokenizer,
        &sandbox,
        &prompts,
        &settings,
        &scorers[..1],
        &mut normaliser,
        2,
        9,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("1 reward-model scorers for 2"), "{err}");
}
