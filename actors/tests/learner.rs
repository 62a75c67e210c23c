//! The GRPO learner and the SFT trainer on a small random model: rewarded completions become more
//! likely, updates are deterministic, masked tokens do not count, and bad batches are errors.

use r1_actors::learner::{GrpoLearner, LearnerConfig, Rollout, SftExample, SftTrainer};
use r1_kernels::bench::builtin_config;
use r1_kernels::cpu::{self, Activations};
use r1_kernels::model::Model;
use r1_kernels::train::{AdamWConfig, GrpoConfig, LossAgg, LrSchedule, ScaleRewards};

fn model() -> Model {
    Model::random(
        builtin_config("tiny-qwen2").expect("built-in shape"),
        3,
        0.05,
    )
}

/// Sum of log p(completion | prompt) under `model`.
fn sequence_logprob(model: &Model, prompt: &[u32], completion: &[u32]) -> f64 {
    let ids: Vec<u32> = prompt.iter().chain(completion).copied().collect();
    let n = ids.len() - 1;
    let mut acts = Activations::new(model, 1, n);
    cpu::forward(model, &mut acts, &ids[..n]).unwrap();
    let out = cpu::head(model, &mut acts, &ids[1..], None, None, false).unwrap();
    out.logp[prompt.len() - 1..].iter().map(|&x| x as f64).sum()
}

fn config(beta: f64) -> LearnerConfig {
    LearnerConfig {
        grpo: GrpoConfig {
            beta,
            loss_agg: LossAgg::SeqMeanTokenMean,
            max_completion_length: 8,
            ..GrpoConfig::default()
        },
        scale_rewards: ScaleRewards::Group,
        group_size: 4,
        minibatches: 2,
        epochs: 1,
        schedule: LrSchedule::constant(1e-2),
        adamw: AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
        max_grad_norm: 1.0,
        mask_truncated: false,
        ref_refresh_steps: 0,
        share_prompts: true,
        activation_checkpointing: false,
    }
}

fn rollouts() -> Vec<Rollout> {
    let good = vec![40u32, 41, 42, 43];
    let bad = vec![90u32, 91, 92];
    let mut out = Vec::new();
    for prompt in [vec![1u32, 2, 3], vec![7u32, 8]] {
        for i in 0..4 {
            let rewarded = i % 2 == 0;
            out.push(Rollout {
                prompt_ids: prompt.clone(),
                completion_ids: if rewarded { good.clone() } else { bad.clone() },
                reward: if rewarded { 1.0 } else { 0.0 },
                truncated: false,
                sampler_logp: Vec::new(),
            });
        }
    }
    out
}

#[test]
fn grpo_makes_rewarded_completions_more_likely() {
    for beta in [0.0, 0.04] {
        let mut learner = GrpoLearner::new(model(), config(beta));
        let batch = rollouts();
        let before_good = sequence_logprob(&learner.policy, &[1, 2, 3], &batch[0].completion_ids);
        let before_bad = sequence_logprob(&learner.policy, &[1, 2, 3], &batch[1].completion_ids);
        let mut last = None;
        for _ in 0..5 {
            last = Some(learner.step(&batch).unwrap());
        }
        let stats = last.unwrap();
        let after_good = sequence_logprob(&learner.policy, &[1, 2, 3], &batch[0].completion_ids);
        let after_bad = sequence_logprob(&learner.policy, &[1, 2, 3], &batch[1].completion_ids);
        assert!(
            after_good > before_good + 1.0,
            "β={beta}: rewarded {before_good} → {after_good}"
        );
        assert!(
            after_bad < before_bad - 1.0,
            "β={beta}: unrewarded {before_bad} → {after_bad}"
        );
        assert_eq!(stats.step, 5);
        assert_eq!(stats.optimizer_steps, 2);
        assert_eq!(stats.frac_zero_std, 0.0);
        assert!((stats.reward_mean - 0.5).abs() < 1e-12);
        assert!(stats.entropy > 0.0 && stats.grad_norm > 0.0 && stats.lr == 1e-2);
        assert!((stats.completion_len_mean - 3.5).abs() < 1e-12 && stats.completion_len_max == 4);
        if beta > 0.0 {
            assert!(stats.kl > 0.0, "the policy moved away from the reference");
        } else {
            assert!(
                learner.reference.is_none(),
                "no reference model kept when β = 0"
            );
        }
    }
}

#[test]
fn groups_without_signal_do_not_move_the_policy() {
    let mut learner = GrpoLearner::new(model(), config(0.0));
    let before = learner.policy.params.clone();
    let mut batch = rollouts();
    for r in &mut batch {
        r.reward = 1.0;
    }
    let stats = learner.step(&batch).unwrap();
    assert_eq!(stats.frac_zero_std, 1.0);
    assert_eq!(stats.grad_norm, 0.0);
    assert_eq!(
        learner.policy.params, before,
        "zero advantages, zero gradient, no update"
    );
}

#[test]
fn grpo_steps_are_deterministic() {
    let run = || {
        let mut learner = GrpoLearner::new(model(), config(0.04));
        for _ in 0..2 {
            learner.step(&rollouts()).unwrap();
        }
        learner.policy.params
    };
    let (a, b) = (run(), run());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn activation_checkpointing_takes_the_same_steps_in_less_memory() {
    // β > 0 and two minibatches: π_old and π_ref passes through the checkpointed arena too.
    let run = |checkpointing: bool| {
        let mut learner = GrpoLearner::new(
            model(),
            LearnerConfig {
                activation_checkpointing: checkpointing,
                ..config(0.04)
            },
        );
        let stats: Vec<_> = (0..3).map(|_| learner.step(&rollouts()).unwrap()).collect();
        (
            learner.policy.params.clone(),
            learner.optimizer.v.clone(),
            stats,
            learner.arena_bytes(),
        )
    };
    let (plain, kept) = (run(false), run(true));
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same(&plain.0, &kept.0), "weights");
    assert!(same(&plain.1, &kept.1), "moments");
    for (a, b) in plain.2.iter().zip(&kept.2) {
        assert_eq!(a.loss.to_bits(), b.loss.to_bits());
        assert_eq!(a.grad_norm.to_bits(), b.grad_norm.to_bits());
        assert_eq!(a.kl.to_bits(), b.kl.to_bits());
        assert_eq!(a.entropy.to_bits(), b.entropy.to_bits());
    }
    assert!(kept.3 < plain.3, "arena {} vs {}", kept.3, plain.3);
}

#[test]
fn bad_batches_are_named_errors() {
    let mut learner = GrpoLearner::new(model(), config(0.0));
    let mut batch = rollouts();
    batch.pop();
    assert!(learner
        .step(&batch)
        .unwrap_err()
        .to_string()
        .contains("groups of 4"));
    let mut batch = rollouts();
    batch[5].completion_ids.clear();
    assert!(learner
        .step(&batch)
        .unwrap_err()
        .to_string()
        .contains("rollout 5"));
    let mut batch = rollouts();
    batch[2].reward = f64::NAN;
    assert!(learner
        .step(&batch)
        .unwrap_err()
        .to_string()
        .contains("rollout 2"));
    let mut batch = rollouts();
    batch[0].completion_ids[0] = 100_000;
    assert!(learner
        .step(&batch)
        .unwrap_err()
        .to_string()
        .contains("100000"));
}

#[test]
fn sft_learns_the_response_and_ignores_the_prompt() {
    let mut trainer = SftTrainer::new(
        model(),
        AdamWConfig::default(),
        LrSchedule::constant(1e-2),
        1.0,
    );
    let example = SftExample {
        ids: vec![1, 2, 3, 50, 51, 52, 53],
        loss_mask: vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
    };
    let first = trainer.step(std::slice::from_ref(&example)).unwrap();
    assert_eq!(first.tokens, 4);
    let mut last = first;
    for _ in 0..20 {
        last = trainer.step(std::slice::from_ref(&example)).unwrap();
    }
    assert!(
        last.loss < first.loss * 0.5,
        "loss {} → {}",
        first.loss,
        last.loss
    );
    // Changing a prompt token's value changes nothing that is trained on it: the prompt's own
    // next-token predictions have weight 0.
    let mut other = SftTrainer::new(
        model(),
        AdamWConfig::default(),
        LrSchedule::constant(1e-2),
        1.0,
    );
    let a = other.step(std::slice::from_ref(&example)).unwrap().loss;
    let mut fresh = SftTrainer::new(
        model(),
        AdamWConfig::default(),
        LrSchedule::constant(1e-2),
        1.0,
    );
    let masked = SftExample {
        loss_mask: vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        ..example.clone()
    };
    let b = fresh.step(&[masked]).unwrap().loss;
    assert_ne!(a, b, "the mask decides which tokens count");
    let err = trainer
        .step(&[SftExample {
            ids: vec![1],
            loss_mask: vec![1.0],
        }])
        .unwrap_err();
    assert!(err.to_string().contains("example 0"));
    assert!(trainer.step(&[]).is_err());
}

#[test]
fn packed_sft_matches_one_example_per_row() {
    let batch: Vec<SftExample> = (0..5)
        .map(|i| {
            let len = 4 + i * 3;
            let ids: Vec<u32> = (0..len)
                .map(|k| ((k * 7 + i * 13) % 250) as u32 + 1)
                .collect();
            let loss_mask = (0..len).map(|k| if k < 2 { 0.0 } else { 1.0 }).collect();
            SftExample { ids, loss_mask }
        })
        .collect();
    let mut plain = SftTrainer::new(
        model(),
        AdamWConfig::default(),
        LrSchedule::constant(1e-3),
        0.0,
    );
    let mut packed = SftTrainer::new(
        model(),
        AdamWConfig::default(),
        LrSchedule::constant(1e-3),
        0.0,
    );
    for _ in 0..3 {
        let a = plain.step(&batch).unwrap();
        // 5 examples of 3..15 positions in rows of 20: packed into fewer rows than examples.
        let b = packed.step_packed(&batch, 20).unwrap();
        assert_eq!(a.tokens, b.tokens);
        assert!(
            (a.loss - b.loss).abs() < 1e-5 * a.loss.abs(),
            "loss {} vs {}",
            a.loss,
            b.loss
        );
        assert!(
            (a.grad_norm - b.grad_norm).abs() < 1e-4 * a.grad_norm,
            "grad norm {} vs {}",
            a.grad_norm,
            b.grad_norm
        );
    }
    let worst = plain
        .model
        .params
        .iter()
        .zip(&packed.model.params)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    // AdamW divides by sqrt(v): where a gradient is ~0, rounding-level differences between the
    // layouts become visible steps. Bound them well below one step's size (lr × 3 steps = 3e-3).
    assert!(worst < 3e-4, "weights after 3 steps differ by {worst}");
    let err = packed.step_packed(&batch, 10).unwrap_err().to_string();
    assert!(err.contains("example 3"), "{err}");
}
