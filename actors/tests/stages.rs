//! A GRPO stage step end to end in-process on the byte tokenizer and a tiny random model:
//! template → sampler → reward rules → learner, reproducible from its seed; and evaluation.

use r1_actors::judge::tasks::{arithmetic, Split};
use r1_actors::learner::{GrpoLearner, LearnerConfig};
use r1_actors::stages::{evaluate, grpo_step, StageSettings};
use r1_kernels::model::tiny::TinyModel;
use r1_kernels::sample::SamplingParams;
use r1_kernels::template::{PromptTemplate, TemplateKind};
use r1_kernels::tokenizer::Tokenizer;
use r1_kernels::train::{GrpoConfig, LrSchedule};

fn settings() -> StageSettings {
    StageSettings {
        template: PromptTemplate::new(TemplateKind::R1Zero),
        sampling: SamplingParams {
            temperature: 1.0,
            max_new_tokens: 24,
            ..Default::default()
        },
        rules: Default::default(),
        max_batch: 8,
    }
}

fn learner_config() -> LearnerConfig {
    LearnerConfig {
        grpo: GrpoConfig {
            beta: 0.01,
            max_completion_length: 24,
            ..GrpoConfig::default()
        },
        group_size: 4,
        minibatches: 2,
        schedule: LrSchedule::constant(1e-3),
        ..LearnerConfig::default()
    }
}

#[test]
fn a_grpo_step_samples_judges_and_learns_reproducibly() {
    let tokenizer = Tokenizer::byte();
    let problems = arithmetic::generate(5, Split::Train, 3).unwrap();
    let run = || {
        let mut learner = GrpoLearner::new(TinyModel::byte().seed(11).model(), learner_config());
        let report = grpo_step(&mut learner, &tokenizer, &problems, &settings(), 42).unwrap();
        (learner.policy.params, report)
    };
    let (params, report) = run();
    assert_eq!(report.learner.step, 1);
    assert_eq!(report.learner.optimizer_steps, 2);
    assert!(report.learner.completion_len_max <= 24);
    // A random model neither answers nor formats; the judge says so and the rewards are in range.
    assert!((0.0..=1.0).contains(&report.accuracy) && (0.0..=1.0).contains(&report.format));
    assert!((0.0..=1.0).contains(&report.reflection_rate));
    let (prompt, _completion, total) = report.sample.clone().unwrap();
    assert!(
        problems.iter().any(|p| p.prompt == prompt),
        "the sample shows the task's own prompt"
    );
    assert!((0.0..=2.0).contains(&total));
    let (again, report_again) = run();
    assert_eq!(
        report.deterministic(),
        report_again.deterministic(),
        "same seed, same step"
    );
    assert!(params
        .iter()
        .zip(&again)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn evaluation_reports_pass_at_1_and_cons_at_k() {
    let tokenizer = Tokenizer::byte();
    let problems = arithmetic::generate(9, Split::Test, 4).unwrap();
    let greedy = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 16,
        ..Default::default()
    };
    let eval = evaluate(
        &TinyModel::byte().seed(11).model(),
        &tokenizer,
        &problems,
        &settings(),
        greedy,
        2,
        0,
    )
    .unwrap();
    let scores = eval.scores;
    assert!((0.0..=1.0).contains(&eval.format_rate) && eval.mean_length <= 16.0);
    assert_eq!((scores.problems, scores.k), (4, 2));
    assert!((0.0..=1.0).contains(&scores.pass_at_1) && (0.0..=1.0).contains(&scores.cons_at_k));
}
