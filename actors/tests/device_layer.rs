//! The learners, the reward-model trainer and scorer, and the sampler through the device layer
//! (`r1_kernels::device`) on the CPU: bit for bit what the direct `cpu::` path gives.
//!
//! Two kinds of evidence: (1) a GRPO step and an SFT step written here with the direct `cpu::`
//! calls and AdamW, compared with `GrpoLearner` / `SftTrainer` bit for bit; (2) fingerprints of
//! the weights, moments, scores and sampled tokens that the code before the device layer
//! produced (recorded by running this file against commit c93cdf2), which the code through the
//! layer must reproduce exactly.

use std::sync::atomic::AtomicBool;

use r1_actors::learner::{GrpoLearner, LearnerConfig, OldLogp, Rollout, SftExample, SftTrainer};
use r1_actors::reward_model::{
    score_ids, train_reward_model, OverLong, PreferencePair, RewardData, RmTrainConfig, TextEncoder,
};
use r1_kernels::bench::builtin_config;
use r1_kernels::cpu::{self, Activations};
use r1_kernels::device::Device;
use r1_kernels::model::{Architecture, Model, ModelConfig, RewardModel, RopeScaling};
use r1_kernels::sample::{GenerationRequest, Sampler, SamplingParams};
use r1_kernels::tokenizer::{ByteTokenizer, Tokenizer};
use r1_kernels::train::grpo::aggregation_weights;
use r1_kernels::train::{
    clip_grad_norm, group_advantages, AdamW, AdamWConfig, GrpoConfig, GrpoObjective,
    ImportanceSamplingLevel, LossAgg, LrSchedule, WeightedCrossEntropy,
};

/// FNV-1a over the bits of every float: equal fingerprints mean equal bits (up to a 2^-64
/// accident).
fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [f32]>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for x in part {
            for byte in x.to_bits().to_le_bytes() {
                h ^= byte as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    h
}

/// The tiny Qwen2 shape, or the same shape as a Llama (no q/k/v bias).
fn policy(shape: &str) -> Model {
    let mut config = builtin_config("tiny-qwen2").expect("built-in shape");
    if shape == "tiny-llama" {
        config.architecture = Architecture::Llama;
        config.attention_bias = false;
    }
    Model::random(config, 7, 0.05)
}

fn grpo_config(beta: f64, minibatches: usize, epochs: usize, gspo: bool) -> LearnerConfig {
    LearnerConfig {
        grpo: GrpoConfig {
            beta,
            loss_agg: LossAgg::SeqMeanTokenMean,
            max_completion_length: 8,
            importance_sampling_level: if gspo {
                ImportanceSamplingLevel::Sequence
            } else {
                ImportanceSamplingLevel::Token
            },
            ..GrpoConfig::default()
        },
        group_size: 4,
        minibatches,
        epochs,
        schedule: LrSchedule::constant(1e-2),
        ref_refresh_steps: 2,
        // One rollout per row, as before the device layer: the pinned bits are that layout's
        // (shared prompts are the same step up to summation order: tests/shared_prompts.rs).
        share_prompts: false,
        ..LearnerConfig::default()
    }
}

/// Two groups of four, completions of different lengths, rewards varying within groups.
fn rollouts(step: u64) -> Vec<Rollout> {
    (0..8u32)
        .map(|i| Rollout {
            prompt_ids: vec![1 + (step as u32 % 5), 2, 3 + i / 4],
            completion_ids: (0..2 + (i % 3)).map(|k| 40 + i + k).collect(),
            reward: ((i as u64 + step) % 3) as f64,
            truncated: i == 5,
            sampler_logp: Vec::new(),
        })
        .collect()
}

fn sft_batch(step: u32) -> Vec<SftExample> {
    (0..3u32)
        .map(|i| {
            let n = 4 + i as usize + step as usize % 2;
            SftExample {
                ids: (0..n as u32)
                    .map(|k| (7 * k + 3 * i + step) % 90 + 1)
                    .collect(),
                loss_mask: (0..n).map(|k| if k < 2 { 0.0 } else { 1.0 }).collect(),
            }
        })
        .collect()
}

/// (case, fingerprint of weights, moments and counters after the steps).
fn grpo_runs() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for shape in ["tiny-qwen2", "tiny-llama"] {
        for (beta, mb, epochs, gspo) in
            [(0.0, 1, 1, false), (0.04, 2, 1, false), (0.04, 1, 2, true)]
        {
            let mut learner = GrpoLearner::new(policy(shape), grpo_config(beta, mb, epochs, gspo));
            let mut losses = Vec::new();
            for step in 0..3 {
                let (stats, _) = learner
                    .step_with(&rollouts(step), OldLogp::Auto)
                    .expect("step");
                losses.push(stats.loss as f32);
                losses.push(stats.grad_norm as f32);
                losses.push(stats.entropy as f32);
                losses.push(stats.kl as f32);
            }
            let reference = learner
                .reference
                .as_ref()
                .map_or(&[][..], |r| r.params.as_slice());
            let fp = fingerprint([
                learner.policy.params.as_slice(),
                &learner.optimizer.m,
                &learner.optimizer.v,
                reference,
                &losses,
            ]);
            out.push((
                format!("grpo {shape} beta={beta} mb={mb} epochs={epochs} gspo={gspo}"),
                fp,
            ));
        }
    }
    out
}

fn sft_runs() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for packed in [false, true] {
        let mut trainer = SftTrainer::new(
            policy("tiny-qwen2"),
            AdamWConfig::default(),
            LrSchedule::constant(3e-3),
            1.0,
        );
        let mut stats = Vec::new();
        for step in 0..3 {
            let s = if packed {
                trainer.step_packed(&sft_batch(step), 16)
            } else {
                trainer.step(&sft_batch(step))
            }
            .expect("sft step");
            stats.push(s.loss as f32);
            stats.push(s.grad_norm as f32);
        }
        let fp = fingerprint([
            trainer.model.params.as_slice(),
            &trainer.optimizer.m,
            &trainer.optimizer.v,
            &stats,
        ]);
        out.push((format!("sft packed={packed}"), fp));
    }
    out
}

fn tiny_rm(seed: u64) -> RewardModel {
    RewardModel::random(
        ModelConfig {
            architecture: Architecture::Qwen2,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 1,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            vocab_size: ByteTokenizer::VOCAB_SIZE,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::None,
            attention_bias: true,
            tie_word_embeddings: true,
            max_position_embeddings: 64,
            eos_token_ids: vec![ByteTokenizer::EOS],
            bos_token_id: None,
        },
        Some(ByteTokenizer::EOS),
        seed,
        0.02,
    )
}

fn rm_runs() -> Vec<(String, u64)> {
    let encoder = TextEncoder {
        tokenizer: Tokenizer::byte(),
        max_tokens: 48,
        over_long: OverLong::KeepEnd,
    };
    let pairs = |n: usize, offset: usize| {
        RewardData::Pairs(
            (0..n)
                .map(|i| PreferencePair {
                    prompt: format!("greet {}", i + offset),
                    chosen: format!("Hello {}, nice to meet you.", i + offset),
                    rejected: ["No.", "Go away."][i % 2].into(),
                    line: i + 1,
                })
                .collect(),
        )
    };
    let config = RmTrainConfig {
        epochs: 2,
        batch_size: 4,
        lr: 2e-3,
        warmup_steps: 1,
        max_tokens: 48,
        ..RmTrainConfig::default()
    };
    let outcome = train_reward_model(
        tiny_rm(3),
        &encoder,
        &pairs(12, 0),
        &pairs(4, 100),
        &config,
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .expect("reward-model training");
    let ids: Vec<Vec<u32>> = (0..5u32)
        .map(|i| (0..3 + i).map(|k| (k * 11 + i) % 200 + 1).collect())
        .collect();
    let scores = score_ids(&outcome.rm, &ids, 2).expect("scores");
    let losses: Vec<f32> = outcome
        .epochs
        .iter()
        .flat_map(|e| [e.train_loss as f32, e.validation_loss as f32])
        .collect();
    vec![
        (
            "rm train".into(),
            fingerprint([outcome.rm.model.params.as_slice(), &losses]),
        ),
        ("rm scores".into(), fingerprint([scores.as_slice()])),
    ]
}

fn sampler_runs() -> Vec<(String, u64)> {
    let model = policy("tiny-qwen2");
    let requests: Vec<GenerationRequest> = (0..3u64)
        .map(|i| GenerationRequest {
            prompt_ids: (0..3 + i as u32).map(|k| k * 5 + 1).collect(),
            samples: 3,
            seed: 40 + i,
            params: SamplingParams {
                temperature: [1.0, 0.7, 0.0][i as usize],
                top_k: [0, 20, 0][i as usize],
                top_p: [1.0, 0.9, 1.0][i as usize],
                max_new_tokens: 6 + i as usize,
                ..SamplingParams::default()
            },
        })
        .collect();
    // Fewer slots than sequences: continuous batching and prefix reuse across slots.
    let mut sampler = Sampler::new(&model, 4);
    let done = sampler.generate(&requests, None).expect("generate");
    let floats: Vec<f32> = done
        .iter()
        .flat_map(|c| {
            c.token_ids
                .iter()
                .map(|&t| t as f32)
                .chain(c.sampling_logprobs.iter().copied())
                .chain(c.raw_logprobs.iter().copied())
        })
        .collect();
    vec![("sampler".into(), fingerprint([floats.as_slice()]))]
}

/// What the code before the device layer gave for each case (commit c93cdf2, this file's
/// `fingerprints` run there).
const PINNED: &[(&str, u64)] = &[
    (
        "grpo tiny-qwen2 beta=0 mb=1 epochs=1 gspo=false",
        0xf7259474008b52b4,
    ),
    (
        "grpo tiny-qwen2 beta=0.04 mb=2 epochs=1 gspo=false",
        0x5c9d60f421b915b6,
    ),
    (
        "grpo tiny-qwen2 beta=0.04 mb=1 epochs=2 gspo=true",
        0xf0016c054034678e,
    ),
    (
        "grpo tiny-llama beta=0 mb=1 epochs=1 gspo=false",
        0x870b87f25812a6cd,
    ),
    (
        "grpo tiny-llama beta=0.04 mb=2 epochs=1 gspo=false",
        0x8588c2237862d454,
    ),
    (
        "grpo tiny-llama beta=0.04 mb=1 epochs=2 gspo=true",
        0x8153be7b4d9304d2,
    ),
    ("sft packed=false", 0x18a2e4b1997b1fcd),
    ("sft packed=true", 0x18a2e4b1997b1fcd),
    ("rm train", 0xa8d00b78a27c63c1),
    ("rm scores", 0xa060c2d7951c508e),
    ("sampler", 0x2ef38c2ecfe54e4d),
];

#[test]
fn the_learners_scorer_and_sampler_reproduce_the_pre_layer_bits() {
    let got: Vec<(String, u64)> = grpo_runs()
        .into_iter()
        .chain(sft_runs())
        .chain(rm_runs())
        .chain(sampler_runs())
        .collect();
    for (case, fp) in &got {
        println!("(\"{case}\", 0x{fp:016x}),");
    }
    assert_eq!(got.len(), PINNED.len(), "one pinned value per case");
    for ((case, fp), (pinned_case, pinned)) in got.iter().zip(PINNED) {
        assert_eq!(case, pinned_case);
        assert_eq!(
            fp, pinned,
            "{case}: the bits differ from those before the device layer"
        );
    }
}

/// The rows of a GRPO batch as the learner lays them out (next-token pairs, completion mask).
fn padded(rollouts: &[Rollout], t: usize, mask_truncated: bool) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let b = rollouts.len();
    let (mut inputs, mut targets, mut mask) =
        (vec![0u32; b * t], vec![0u32; b * t], vec![0f32; b * t]);
    for (row, r) in rollouts.iter().enumerate() {
        let ids: Vec<u32> = r
            .prompt_ids
            .iter()
            .chain(&r.completion_ids)
            .copied()
            .collect();
        let n = ids.len() - 1;
        inputs[row * t..row * t + n].copy_from_slice(&ids[..n]);
        targets[row * t..row * t + n].copy_from_slice(&ids[1..]);
        if !(mask_truncated && r.truncated) {
            mask[row * t + r.prompt_ids.len() - 1..row * t + n].fill(1.0);
        }
    }
    (inputs, targets, mask)
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn a_grpo_step_through_the_layer_is_the_direct_cpu_step_bit_for_bit() {
    for shape in ["tiny-qwen2", "tiny-llama"] {
        let config = grpo_config(0.04, 1, 1, false);
        let mut learner = GrpoLearner::new(policy(shape), config.clone());
        assert_eq!(learner.device(), Device::Cpu);
        // The direct path: cpu::forward / cpu::head / cpu::backward, clipping and AdamW by hand.
        let mut model = policy(shape);
        let mut reference = model.clone();
        let mut opt = AdamW::new(config.adamw, model.layout.total);
        for step in 0..3u64 {
            let batch = rollouts(step);
            learner
                .step_with(&batch, OldLogp::Auto)
                .expect("layer step");

            let rewards: Vec<f64> = batch.iter().map(|r| r.reward).collect();
            let adv = group_advantages(&rewards, config.group_size, config.scale_rewards);
            let t = batch
                .iter()
                .map(|r| r.prompt_ids.len() + r.completion_ids.len() - 1)
                .max()
                .unwrap();
            let b = batch.len();
            let (inputs, targets, mask) = padded(&batch, t, config.mask_truncated);
            let mut acts = Activations::new(&model, b, t);
            cpu::forward(&reference, &mut acts, &inputs).unwrap();
            let refs = cpu::head(&reference, &mut acts, &targets, None, None, false)
                .unwrap()
                .logp;
            let weights = aggregation_weights(&mask, t, &config.grpo);
            let objective = GrpoObjective {
                config: config.grpo,
                old_logp: None,
                ref_logp: &refs,
                advantages: &adv,
                weights: &weights,
                t,
                sequence: Vec::new(),
                sampler_logp: None,
                sampler_sequence: Vec::new(),
            };
            let mut grads = vec![0f32; model.layout.total];
            cpu::forward(&model, &mut acts, &inputs).unwrap();
            cpu::head(
                &model,
                &mut acts,
                &targets,
                Some(&objective),
                Some(&mut grads),
                true,
            )
            .unwrap();
            cpu::backward(&model, &mut acts, &inputs, &mut grads).unwrap();
            clip_grad_norm(&mut grads, config.max_grad_norm);
            let lr = config.schedule.lr_at(step) as f32;
            let layout = model.layout.clone();
            opt.update(&mut model.params, &grads, &layout, lr);
            if (step + 1) % config.ref_refresh_steps == 0 {
                reference.params.copy_from_slice(&model.params);
            }

            assert!(
                same_bits(&learner.policy.params, &model.params),
                "{shape} step {step}: weights"
            );
            assert!(
                same_bits(&learner.optimizer.m, &opt.m),
                "{shape} step {step}: first moments"
            );
            assert!(
                same_bits(&learner.optimizer.v, &opt.v),
                "{shape} step {step}: second moments"
            );
            let learner_ref = learner.reference.as_ref().unwrap();
            assert!(
                same_bits(&learner_ref.params, &reference.params),
                "{shape} step {step}: reference"
            );
        }
    }
}

#[test]
fn an_sft_step_through_the_layer_is_the_direct_cpu_step_bit_for_bit() {
    for packed in [false, true] {
        let (adamw, schedule) = (AdamWConfig::default(), LrSchedule::constant(3e-3));
        let mut trainer = SftTrainer::new(policy("tiny-qwen2"), adamw, schedule, 1.0);
        let mut model = policy("tiny-qwen2");
        let mut opt = AdamW::new(adamw, model.layout.total);
        for step in 0..3u32 {
            let batch = sft_batch(step);
            let stats = if packed {
                trainer.step_packed(&batch, 16)
            } else {
                trainer.step(&batch)
            }
            .expect("layer step");

            // Rows as the trainer lays them out: one example per row, or first-fit packing
            // (every example of this batch fits one row of 16).
            let rows: Vec<Vec<&SftExample>> = if packed {
                vec![batch.iter().collect()]
            } else {
                batch.iter().map(|e| vec![e]).collect()
            };
            let t = if packed {
                16
            } else {
                batch.iter().map(|e| e.ids.len() - 1).max().unwrap()
            };
            let b = rows.len();
            let (mut inputs, mut targets, mut mask) =
                (vec![0u32; b * t], vec![0u32; b * t], vec![0f32; b * t]);
            let mut segments = Vec::new();
            for (row, examples) in rows.iter().enumerate() {
                let mut at = row * t;
                let mut lengths = Vec::new();
                for ex in examples {
                    let n = ex.ids.len() - 1;
                    inputs[at..at + n].copy_from_slice(&ex.ids[..n]);
                    targets[at..at + n].copy_from_slice(&ex.ids[1..]);
                    mask[at..at + n].copy_from_slice(&ex.loss_mask[1..]);
                    lengths.push(n);
                    at += n;
                }
                segments.push(lengths);
            }
            let weights = WeightedCrossEntropy::mean_weights(&mask);
            let objective = WeightedCrossEntropy { weights: &weights };
            let mut acts = Activations::new(&model, b, t);
            if packed {
                acts.set_segments(&segments).unwrap();
            }
            let mut grads = vec![0f32; model.layout.total];
            cpu::forward(&model, &mut acts, &inputs).unwrap();
            let out = cpu::head(
                &model,
                &mut acts,
                &targets,
                Some(&objective),
                Some(&mut grads),
                false,
            )
            .unwrap();
            cpu::backward(&model, &mut acts, &inputs, &mut grads).unwrap();
            let norm = clip_grad_norm(&mut grads, 1.0);
            let layout = model.layout.clone();
            opt.update(
                &mut model.params,
                &grads,
                &layout,
                schedule.lr_at(step as u64) as f32,
            );

            assert_eq!(
                stats.loss.to_bits(),
                out.loss.to_bits(),
                "packed={packed} step {step}: loss"
            );
            assert_eq!(
                stats.grad_norm.to_bits(),
                norm.to_bits(),
                "packed={packed} step {step}: norm"
            );
            assert!(
                same_bits(&trainer.model.params, &model.params),
                "packed={packed} step {step}: weights"
            );
            assert!(
                same_bits(&trainer.optimizer.v, &opt.v),
                "packed={packed} step {step}: moments"
            );
        }
    }
}

#[test]
fn asking_for_a_gpu_this_machine_lacks_is_a_clear_error_for_every_worker() {
    let list = r1_kernels::device::list();
    if list.cuda_count() > 0 {
        // A GPU machine: this check belongs to machines without one.
        return;
    }
    let gpu = Device::Cuda(0);
    let err = GrpoLearner::try_new_on(gpu, policy("tiny-qwen2"), grpo_config(0.0, 1, 1, false))
        .err()
        .expect("no GPU here")
        .to_string();
    assert!(err.contains("cuda:0"), "{err}");
    let err = SftTrainer::new_on(
        gpu,
        policy("tiny-qwen2"),
        AdamWConfig::default(),
        LrSchedule::constant(1e-3),
        1.0,
    )
    .err()
    .expect("no GPU here")
    .to_string();
    assert!(err.contains("cuda:0"), "{err}");
    let model = policy("tiny-qwen2");
    let err = Sampler::on_device(gpu, &model, 4)
        .err()
        .expect("no GPU here")
        .to_string();
    assert!(err.contains("cuda:0"), "{err}");
}

/// The bits of what a learner holds on the host: weights, reference, moments (as its engine
/// holds them), counters.
fn host_state(learner: &GrpoLearner) -> u64 {
    let moments = learner.optimizer_state().expect("moments");
    let reference = learner.reference.as_ref().map(|r| r.params.as_slice());
    let counters = [
        learner.step as f32,
        learner.optimizer_step as f32,
        moments.step as f32,
    ];
    fingerprint(
        [
            learner.policy.params.as_slice(),
            &moments.m,
            &moments.v,
            &counters,
        ]
        .into_iter()
        .chain(reference),
    )
}

/// A GPU engine keeps the weights and moments between reads (`adamw_step` moves nothing over
/// the bus); the learner brings the host copies up to date once per step and for checkpoints.
/// `ResidentCpuEngine` computes as the CPU engine does under those rules: a learner that read a
/// stale host copy (the reference refresh, a checkpoint) or changed one without uploading it
/// would leave these bits.
#[test]
fn a_learner_whose_engine_keeps_the_weights_takes_the_cpu_learners_steps_bit_for_bit() {
    use r1_actors::keeper::{load_checkpoint, write_checkpoint, TrainerState};
    use r1_kernels::device::resident::ResidentCpuEngine;

    let resident = |learner: GrpoLearner| {
        let engine = ResidentCpuEngine::new(&learner.policy).expect("engine");
        learner
            .with_engine(Box::new(engine))
            .expect("takes the engine")
    };
    let dir = tempfile::tempdir().expect("temp dir");
    for (beta, minibatches, epochs, gspo) in [(0.04, 2, 1, false), (0.04, 1, 2, true)] {
        let cfg = grpo_config(beta, minibatches, epochs, gspo);
        let case = format!("beta {beta}, {minibatches} minibatches, {epochs} epochs");
        let mut cpu = GrpoLearner::try_new(policy("tiny-qwen2"), cfg.clone()).unwrap();
        let mut kept = resident(GrpoLearner::try_new(policy("tiny-qwen2"), cfg.clone()).unwrap());
        for step in 0..5u64 {
            let (a, b) = (
                cpu.step(&rollouts(step)).unwrap(),
                kept.step(&rollouts(step)).unwrap(),
            );
            assert_eq!(
                (a.loss.to_bits(), a.grad_norm.to_bits(), a.kl.to_bits()),
                (b.loss.to_bits(), b.grad_norm.to_bits(), b.kl.to_bits()),
                "{case}, step {step}"
            );
            // The host copies after the step (the reference refreshed every 2 steps).
            assert_eq!(host_state(&cpu), host_state(&kept), "{case}, step {step}");
            if step == 2 {
                // A checkpoint of the kept state resumes onto an engine that keeps it too.
                let state = TrainerState {
                    step: kept.step,
                    optimizer_step: kept.optimizer_step,
                    data_cursor: 0,
                    seed: 0,
                    config_hash: "device-layer".into(),
                    reward_normaliser: None,
                };
                let root = dir.path().join(format!("{beta}-{minibatches}-{epochs}"));
                let saved = write_checkpoint(
                    &root,
                    &kept.policy,
                    kept.reference.as_ref(),
                    &kept.optimizer_state().unwrap(),
                    &state,
                    1,
                    None,
                )
                .unwrap();
                let checkpoint = load_checkpoint(&saved.path).unwrap();
                kept = resident(GrpoLearner::try_resume(checkpoint, cfg.clone()).unwrap());
                assert_eq!(host_state(&cpu), host_state(&kept), "{case}, resumed");
            }
        }
    }

    // SFT: the host weights follow every step, the moments a checkpoint's read.
    let adamw = AdamWConfig::default();
    let trainer = || SftTrainer::new(policy("tiny-llama"), adamw, LrSchedule::constant(1e-2), 1.0);
    let mut cpu = trainer();
    let engine = ResidentCpuEngine::new(&cpu.model).unwrap();
    let mut kept = trainer().with_engine(Box::new(engine)).unwrap();
    for step in 0..3u32 {
        cpu.step(&sft_batch(step)).unwrap();
        kept.step(&sft_batch(step)).unwrap();
        assert!(
            same_bits(&cpu.model.params, &kept.model.params),
            "SFT step {step}"
        );
        let (a, b) = (
            cpu.optimizer_state().unwrap(),
            kept.optimizer_state().unwrap(),
        );
        assert!(same_bits(&a.m, &b.m) && same_bits(&a.v, &b.v) && a.step == b.step);
    }
    // Without the engine's moments the host AdamW is behind: what the download is for.
    assert!(!same_bits(&kept.optimizer.m, &cpu.optimizer.m));
}
