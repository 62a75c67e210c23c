//! The on-policy shortcut of the GRPO learner: with one minibatch and one epoch the policy that
//! sampled is the policy being trained, so π_old is the training pass's own log-probs (detached)
//! instead of a second forward pass. The update must be the one the recompute path makes, and a
//! run that resumes from a checkpoint must still end bit-identical to one that never stopped.

use r1_actors::keeper::{checkpoint_dir, load_checkpoint, save_checkpoint, TrainerState};
use r1_actors::learner::{GrpoLearner, LearnerConfig, OldLogp, Rollout};
use r1_kernels::bench::builtin_config;
use r1_kernels::model::Model;
use r1_kernels::train::{GrpoConfig, LossAgg, LrSchedule};

fn config(beta: f64, minibatches: usize) -> LearnerConfig {
    LearnerConfig {
        grpo: GrpoConfig {
            beta,
            loss_agg: LossAgg::SeqMeanTokenMean,
            max_completion_length: 8,
            ..GrpoConfig::default()
        },
        group_size: 4,
        minibatches,
        epochs: 1,
        schedule: LrSchedule::constant(1e-2),
        ref_refresh_steps: 2,
        ..LearnerConfig::default()
    }
}

/// Two groups of four with completions of different lengths (so rows are padded) and rewards
/// that differ within each group and from step to step.
fn rollouts(step: u64) -> Vec<Rollout> {
    (0..8u32)
        .map(|i| Rollout {
            prompt_ids: vec![1 + (step as u32 % 5), 2, 3 + i / 4],
            completion_ids: (0..2 + (i % 3)).map(|k| 40 + i + k).collect(),
            reward: ((i as u64 + step) % 3) as f64,
            truncated: false,
            sampler_logp: Vec::new(),
        })
        .collect()
}

fn model() -> Model {
    Model::random(
        builtin_config("tiny-qwen2").expect("built-in shape"),
        11,
        0.05,
    )
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn the_shortcut_applies_only_to_one_minibatch_and_one_epoch() {
    let learner = GrpoLearner::new(model(), config(0.0, 1));
    assert!(learner.on_policy(8));
    let learner = GrpoLearner::new(model(), config(0.0, 2));
    assert!(!learner.on_policy(8));
    let learner = GrpoLearner::new(
        model(),
        LearnerConfig {
            epochs: 2,
            ..config(0.0, 1)
        },
    );
    assert!(!learner.on_policy(8));
}

#[test]
fn skipping_the_old_logprob_pass_gives_the_recompute_path_s_update() {
    for beta in [0.0, 0.04] {
        let mut shortcut = GrpoLearner::new(model(), config(beta, 1));
        let mut recompute = GrpoLearner::new(model(), config(beta, 1));
        for step in 0..3 {
            let (a, phases_a) = shortcut.step_with(&rollouts(step), OldLogp::Auto).unwrap();
            let (b, phases_b) = recompute
                .step_with(&rollouts(step), OldLogp::Recompute)
                .unwrap();
            assert!(phases_a.reused_policy_logp && phases_a.old_logp == 0.0);
            assert!(!phases_b.reused_policy_logp && phases_b.old_logp > 0.0);
            // π_old = logπθ in both paths, bit for bit: ρ = 1 exactly, so the loss, every
            // statistic (entropy from the training pass included) and the update are identical.
            assert_eq!(a, b, "beta {beta}, step {step}: statistics differ");
            assert!(a.grad_norm > 0.0 && a.entropy > 0.0);
            assert!(
                same_bits(&shortcut.policy.params, &recompute.policy.params),
                "beta {beta}, step {step}: weights differ between the two paths"
            );
        }
        assert!(same_bits(&shortcut.optimizer.m, &recompute.optimizer.m));
        assert!(same_bits(&shortcut.optimizer.v, &recompute.optimizer.v));
    }
}

#[test]
fn an_on_policy_run_resumes_bit_identical() {
    // With every loss option TRL has on: the plain step, GSPO with the bias-corrected KL, and a
    // bf16 sampler's log-probs under a per-sequence correction (which needs the training pass's
    // log-probs before the gradient pass); all of them over shared prompts (the default), and
    // the last with activation checkpointing.
    let plain = config(0.04, 1);
    let mut gspo = config(0.04, 1);
    gspo.grpo.importance_sampling_level = r1_kernels::train::ImportanceSamplingLevel::Sequence;
    gspo.grpo.use_bias_correction_kl = true;
    let mut corrected = config(0.04, 1);
    corrected.grpo.sampler_is_mode = r1_kernels::train::SamplerIsMode::SequenceMask;
    corrected.grpo.sampler_is_max = 1e6;
    corrected.activation_checkpointing = true;
    for (cfg, with_sampler) in [(plain, false), (gspo, false), (corrected, true)] {
        let rollouts = |step: u64| {
            let mut batch = rollouts(step);
            if with_sampler {
                for (k, r) in batch.iter_mut().enumerate() {
                    r.sampler_logp = (0..r.completion_ids.len())
                        .map(|j| -(4.0 + 0.3 * ((k + j + step as usize) % 5) as f32))
                        .collect();
                }
            }
            batch
        };
        let mut straight = GrpoLearner::new(model(), cfg.clone());
        for step in 0..4 {
            straight.step(&rollouts(step)).unwrap();
        }
        let mut first = GrpoLearner::new(model(), cfg.clone());
        for step in 0..3 {
            first.step(&rollouts(step)).unwrap();
        }
        let root = tempfile::tempdir().unwrap();
        let dir = checkpoint_dir(root.path(), first.step);
        let state = TrainerState {
            step: first.step,
            optimizer_step: first.optimizer_step,
            data_cursor: first.step,
            seed: 7,
            config_hash: "on-policy".into(),
            reward_normaliser: None,
        };
        save_checkpoint(
            &dir,
            &first.policy,
            first.reference.as_ref(),
            &first.optimizer,
            &state,
        )
        .unwrap();
        drop(first);
        let mut resumed = GrpoLearner::resume(load_checkpoint(&dir).unwrap(), cfg);
        let (stats, phases) = resumed.step_with(&rollouts(3), OldLogp::Auto).unwrap();
        assert!(phases.reused_policy_logp && stats.step == 4);
        assert!(
            phases.engine_tokens < phases.batch_tokens,
            "the groups' prompts were shared"
        );
        assert!(same_bits(&straight.policy.params, &resumed.policy.params));
        assert!(same_bits(&straight.optimizer.v, &resumed.optimizer.v));
        if with_sampler {
            assert!(stats.sampler.is_some());
        }
    }
}
