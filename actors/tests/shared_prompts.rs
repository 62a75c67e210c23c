//! Shared prompts in the GRPO learner (`LearnerConfig::share_prompts`): the completions of a group
//! trained over one copy of their prompt give the step that one rollout per row gives — the
//! same loss, statistics and gradients, up to the order floats are summed in — while the engine
//! computes fewer positions. Checked on Qwen2, Llama and Qwen3 shapes, with every option that
//! changes which passes run: the on-policy shortcut, π_old recomputed over two minibatches, the
//! reference's KL, GSPO with the bias-corrected KL, a bf16 sampler's per-sequence correction.

use r1_actors::learner::{GrpoLearner, GrpoStepStats, LearnerConfig, OldLogp, Rollout};
use r1_kernels::bench::builtin_config;
use r1_kernels::model::{Architecture, Model, ModelConfig};
use r1_kernels::train::{GrpoConfig, ImportanceSamplingLevel, LossAgg, LrSchedule, SamplerIsMode};

fn shapes() -> Vec<(&'static str, ModelConfig)> {
    let qwen2 = builtin_config("tiny-qwen2").expect("built-in shape");
    vec![
        ("qwen2", qwen2.clone()),
        (
            "llama",
            ModelConfig {
                architecture: Architecture::Llama,
                attention_bias: false,
                tie_word_embeddings: false,
                ..qwen2.clone()
            },
        ),
        (
            "qwen3",
            ModelConfig {
                architecture: Architecture::Qwen3,
                attention_bias: false,
                ..qwen2
            },
        ),
    ]
}

/// Three groups of four: prompts of different lengths, completions of different lengths within
/// each group (so rows are padded and branches differ), rewards that differ within each group.
/// With `sampler`, each completion token carries a sampler log-prob near the policy's.
fn rollouts(sampler: bool) -> Vec<Rollout> {
    (0..12u32)
        .map(|i| {
            let group = i / 4;
            let prompt: Vec<u32> = (0..5 + 2 * group)
                .map(|k| 3 + (7 * k + group) % 200)
                .collect();
            let completion: Vec<u32> = (0..2 + (i * 5) % 7)
                .map(|k| 20 + (i * 13 + k * 3) % 230)
                .collect();
            Rollout {
                sampler_logp: if sampler {
                    completion
                        .iter()
                        .map(|&id| -5.5 - 0.01 * (id % 7) as f32)
                        .collect()
                } else {
                    Vec::new()
                },
                prompt_ids: prompt,
                completion_ids: completion,
                reward: ((i * 7) % 5) as f64,
                truncated: false,
            }
        })
        .collect()
}

struct Case {
    name: &'static str,
    config: LearnerConfig,
    sampler: bool,
}

fn cases() -> Vec<Case> {
    let base = LearnerConfig {
        grpo: GrpoConfig {
            beta: 0.0,
            loss_agg: LossAgg::SeqMeanTokenMean,
            max_completion_length: 8,
            ..GrpoConfig::default()
        },
        group_size: 4,
        minibatches: 1,
        epochs: 1,
        // A small step and no clipping: the first moment after one optimizer step is
        // (1 − β₁) · the gradient itself.
        schedule: LrSchedule::constant(1e-6),
        max_grad_norm: 0.0,
        ref_refresh_steps: 0,
        ..LearnerConfig::default()
    };
    vec![
        Case {
            name: "on-policy",
            config: base.clone(),
            sampler: false,
        },
        Case {
            name: "two minibatches with the reference",
            config: LearnerConfig {
                grpo: GrpoConfig {
                    beta: 0.04,
                    ..base.grpo
                },
                minibatches: 2,
                ..base.clone()
            },
            sampler: false,
        },
        Case {
            name: "GSPO, bias-corrected KL",
            config: LearnerConfig {
                grpo: GrpoConfig {
                    beta: 0.04,
                    importance_sampling_level: ImportanceSamplingLevel::Sequence,
                    use_bias_correction_kl: true,
                    ..base.grpo
                },
                ..base.clone()
            },
            sampler: false,
        },
        Case {
            name: "bf16 sampler, per-sequence correction",
            config: LearnerConfig {
                grpo: GrpoConfig {
                    sampler_is_mode: SamplerIsMode::SequenceTruncate,
                    ..base.grpo
                },
                ..base.clone()
            },
            sampler: true,
        },
    ]
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-4 * b.abs().max(1e-3),
        "{what}: shared {a} vs per row {b}"
    );
}

fn same_stats(a: &GrpoStepStats, b: &GrpoStepStats, what: &str) {
    close(a.loss, b.loss, &format!("{what}: loss"));
    close(a.grad_norm, b.grad_norm, &format!("{what}: grad norm"));
    close(a.kl, b.kl, &format!("{what}: kl"));
    close(a.entropy, b.entropy, &format!("{what}: entropy"));
    close(
        a.clip_low_fraction,
        b.clip_low_fraction,
        &format!("{what}: clip"),
    );
    match (a.sampler, b.sampler) {
        (Some(x), Some(y)) => {
            close(
                x.logp_diff_mean,
                y.logp_diff_mean,
                &format!("{what}: mismatch"),
            );
            close(x.is_mean, y.is_mean, &format!("{what}: sampler weights"));
        }
        (None, None) => {}
        _ => panic!("{what}: the mismatch figures are reported by one layout only"),
    }
}

#[test]
fn a_step_over_shared_prompts_is_the_step_over_one_rollout_per_row() {
    for (shape, model_config) in shapes() {
        for case in cases() {
            let what = format!("{shape}, {}", case.name);
            let model = Model::random(model_config.clone(), 5, 0.05);
            let shared_config = LearnerConfig {
                share_prompts: true,
                ..case.config.clone()
            };
            let plain_config = LearnerConfig {
                share_prompts: false,
                ..case.config.clone()
            };
            let mut shared = GrpoLearner::new(model.clone(), shared_config);
            let mut plain = GrpoLearner::new(model, plain_config);
            let batch = rollouts(case.sampler);
            let (a, phases_a) = shared.step_with(&batch, OldLogp::Auto).unwrap();
            let (b, phases_b) = plain.step_with(&batch, OldLogp::Auto).unwrap();
            assert!(
                phases_a.engine_tokens < phases_a.batch_tokens,
                "{what}: the shared layout computed {} of {} positions",
                phases_a.engine_tokens,
                phases_a.batch_tokens
            );
            assert_eq!(phases_b.engine_tokens, phases_b.batch_tokens, "{what}");
            assert_eq!(phases_a.batch_tokens, phases_b.batch_tokens, "{what}");
            same_stats(&a, &b, &what);
            assert!(a.grad_norm > 0.0, "{what}: no gradient");
            // The first moments hold the gradients (summed over minibatches): equal up to the
            // order of summation.
            let scale = plain
                .optimizer
                .m
                .iter()
                .fold(0f32, |acc, x| acc.max(x.abs()));
            let worst = shared
                .optimizer
                .m
                .iter()
                .zip(&plain.optimizer.m)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                scale > 0.0 && worst <= 2e-4 * scale,
                "{what}: gradients differ by {worst} (largest {scale})"
            );
        }
    }
}

#[test]
fn groups_without_a_common_prompt_are_trained_one_per_row() {
    let model = Model::random(builtin_config("tiny-qwen2").unwrap(), 5, 0.05);
    let mut batch = rollouts(false);
    for (i, r) in batch.iter_mut().enumerate() {
        r.prompt_ids.push(100 + i as u32);
    }
    let mut learner = GrpoLearner::new(
        model,
        LearnerConfig {
            group_size: 4,
            minibatches: 1,
            ..LearnerConfig::default()
        },
    );
    let (_, phases) = learner.step_with(&batch, OldLogp::Auto).unwrap();
    assert_eq!(phases.engine_tokens, phases.batch_tokens);
}
