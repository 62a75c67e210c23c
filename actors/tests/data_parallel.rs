//! The data-parallel learner against the single learner on the tiny model: N CPU replicas on a
//! split batch (uneven splits and a replica with no rows included) reach the single learner's
//! weights, one replica bit for bit; ZeRO-1 sharding changes no bit; the same seed gives the
//! same bits; a checkpoint taken mid-run resumes bit-identically and loads into a single
//! learner; a bad rollout on one replica is an error, not a hang.

use r1_actors::data_parallel::{DataParallelConfig, DataParallelLearner};
use r1_actors::keeper::{load_checkpoint, TrainerState};
use r1_actors::learner::{GrpoLearner, GrpoStepStats, LearnerConfig, Rollout};
use r1_kernels::bench::builtin_config;
use r1_kernels::device::{AllReduce, Device, Precision};
use r1_kernels::model::Model;
use r1_kernels::sample::{GenerationRequest, Sampler, SamplingParams};
use r1_kernels::train::{
    AdamWConfig, GrpoConfig, ImportanceSamplingLevel, LossAgg, LrSchedule, SamplerIsMode,
    ScaleRewards,
};

/// Steps each comparison runs.
const STEPS: usize = 4;

/// Replicas differ from one learner only in the order of float additions: losses and gradient
/// norms agree to ~1e-7. AdamW divides each gradient by its own running RMS, so a weight whose
/// gradient is rounding noise (~1e-10, next to real ones of ~1e-2) still moves by a fair share
/// of a real update, and the noise decides by how much. Hence two bounds on the weights:
/// the L2 distance between the runs' updates, relative to the single learner's update …
const L2_TOLERANCE: f64 = 5e-4;
/// … and the largest |Δ| of any one weight, relative to the largest move training made.
const MAX_TOLERANCE: f64 = 2e-2;

fn model() -> Model {
    Model::random(
        builtin_config("tiny-qwen2").expect("built-in shape"),
        11,
        0.05,
    )
}

fn config(loss_agg: LossAgg, beta: f64, minibatches: usize) -> LearnerConfig {
    LearnerConfig {
        grpo: GrpoConfig {
            beta,
            loss_agg,
            max_completion_length: 8,
            ..GrpoConfig::default()
        },
        scale_rewards: ScaleRewards::Group,
        group_size: 4,
        minibatches,
        epochs: 1,
        schedule: LrSchedule::constant(1e-3),
        adamw: AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
        max_grad_norm: 0.5,
        mask_truncated: true,
        ref_refresh_steps: 3,
        share_prompts: true,
        activation_checkpointing: false,
    }
}

/// Two groups of four with prompts and completions of different lengths (so the per-sequence
/// and per-token means differ, and the padding matters), one truncated completion.
fn rollouts(step: usize) -> Vec<Rollout> {
    let mut out = Vec::new();
    for (p, prompt) in [vec![1u32, 2, 3], vec![7u32, 8]].into_iter().enumerate() {
        for i in 0..4 {
            let len = 2 + (i * 3 + p + step) % 5;
            out.push(Rollout {
                prompt_ids: prompt.clone(),
                completion_ids: (0..len as u32).map(|j| 30 + 7 * i as u32 + j).collect(),
                reward: ((i + step) % 3) as f64 * 0.5,
                truncated: i == 3 && p == 0,
                sampler_logp: Vec::new(),
            });
        }
    }
    out
}

fn data_parallel(learner: &LearnerConfig, replicas: usize, shard: bool) -> DataParallelLearner {
    DataParallelLearner::try_new(
        model(),
        learner.clone(),
        DataParallelConfig {
            replicas,
            shard_optimizer: shard,
            all_reduce: AllReduce::Host,
        },
    )
    .expect("replicas")
}

fn run_single(learner: &LearnerConfig) -> (GrpoLearner, Vec<GrpoStepStats>) {
    let mut single = GrpoLearner::new(model(), learner.clone());
    let stats = (0..STEPS)
        .map(|s| single.step(&rollouts(s)).expect("single step"))
        .collect();
    (single, stats)
}

fn run_replicas(dp: &mut DataParallelLearner, steps: std::ops::Range<usize>) -> Vec<GrpoStepStats> {
    steps
        .map(|s| dp.step(&rollouts(s)).expect("data-parallel step"))
        .collect()
}

/// ‖a − b‖ / ‖b − start‖: how far `a` is from `b` against how far training moved `b`.
fn relative_l2(a: &[f32], b: &[f32], start: &[f32]) -> f64 {
    let sq = |x: &[f32], y: &[f32]| -> f64 {
        x.iter()
            .zip(y)
            .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
            .sum::<f64>()
    };
    (sq(a, b) / sq(b, start)).sqrt()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

#[test]
fn one_replica_is_the_single_learner_bit_for_bit() {
    for (loss_agg, beta, minibatches) in [
        (LossAgg::SeqMeanTokenMean, 0.04, 2),
        (LossAgg::TokenMean, 0.0, 1),
    ] {
        let learner = config(loss_agg, beta, minibatches);
        let (single, single_stats) = run_single(&learner);
        for shard in [false, true] {
            let mut dp = data_parallel(&learner, 1, shard);
            let stats = run_replicas(&mut dp, 0..STEPS);
            assert_eq!(
                dp.policy().params,
                single.policy.params,
                "{loss_agg:?} {shard}"
            );
            assert_eq!(dp.optimizer_state().unwrap().m, single.optimizer.m);
            assert_eq!(dp.optimizer_state().unwrap().v, single.optimizer.v);
            assert_eq!(
                dp.reference().map(|r| &r.params),
                single.reference.as_ref().map(|r| &r.params)
            );
            assert_eq!(stats, single_stats, "{loss_agg:?} shard {shard}");
        }
    }
}

#[test]
fn replicas_on_a_split_batch_reach_the_single_learners_weights() {
    let gspo = {
        let mut c = config(LossAgg::SeqMeanTokenMean, 0.04, 2);
        c.grpo.importance_sampling_level = ImportanceSamplingLevel::Sequence;
        c
    };
    let on_policy = config(LossAgg::TokenMean, 0.0, 1);
    let cases = [
        (
            "seq-mean-token-mean",
            config(LossAgg::SeqMeanTokenMean, 0.04, 2),
        ),
        ("token-mean", config(LossAgg::TokenMean, 0.04, 2)),
        (
            "seq-mean-token-sum-norm",
            config(LossAgg::SeqMeanTokenSumNorm, 0.0, 2),
        ),
        ("gspo", gspo),
        ("on-policy token-mean", on_policy),
    ];
    let start = model();
    for (name, learner) in cases {
        let (single, single_stats) = run_single(&learner);
        let moved = max_abs_diff(&single.policy.params, &start.params);
        assert!(
            moved > 1e-4,
            "{name}: training moved the weights by {moved}"
        );
        // 4 rows per minibatch (8 on-policy): 2+2, 2+1+1, and 5 replicas where one has no row.
        for replicas in [2, 3, 5] {
            let mut unsharded = data_parallel(&learner, replicas, false);
            let stats = run_replicas(&mut unsharded, 0..STEPS);
            let diff = max_abs_diff(&unsharded.policy().params, &single.policy.params);
            let l2 = relative_l2(
                &unsharded.policy().params,
                &single.policy.params,
                &start.params,
            );
            println!(
                "{name}, {replicas} replicas: relative L2 {l2:e}, max |Δ| {diff:e} of {moved:e}"
            );
            assert!(
                l2 <= L2_TOLERANCE && diff <= MAX_TOLERANCE * moved,
                "{name}, {replicas} replicas: the updates differ by {l2:e} (L2, relative) and \
                 one weight by {diff:e} (training moved them by up to {moved:e})"
            );
            for (a, b) in stats.iter().zip(&single_stats) {
                assert_eq!(a.optimizer_steps, b.optimizer_steps);
                assert!(
                    (a.loss - b.loss).abs() <= 1e-5 * (1.0 + b.loss.abs()),
                    "{name}"
                );
                assert!(
                    (a.grad_norm - b.grad_norm).abs() <= 1e-4 * b.grad_norm,
                    "{name}"
                );
                assert!((a.kl - b.kl).abs() <= 1e-6, "{name}");
                assert!((a.entropy - b.entropy).abs() <= 1e-5, "{name}");
                assert_eq!(a.reward_mean, b.reward_mean);
                assert_eq!(a.tokens_trained, b.tokens_trained);
            }
            // ZeRO-1 moves the same numbers through shards: not one bit changes.
            let mut sharded = data_parallel(&learner, replicas, true);
            let sharded_stats = run_replicas(&mut sharded, 0..STEPS);
            assert_eq!(sharded.policy().params, unsharded.policy().params, "{name}");
            assert_eq!(
                sharded.optimizer_state().unwrap().m,
                unsharded.optimizer_state().unwrap().m
            );
            assert_eq!(
                sharded.optimizer_state().unwrap().v,
                unsharded.optimizer_state().unwrap().v
            );
            // Only the memory differs: each replica keeps 1/N of the moments.
            let moments = |s: &GrpoStepStats| -> f64 {
                s.memory
                    .iter()
                    .filter(|p| p.category == "AdamW moments")
                    .map(|p| p.bytes)
                    .sum()
            };
            let without_memory = |all: &[GrpoStepStats]| -> Vec<GrpoStepStats> {
                all.iter()
                    .map(|s| GrpoStepStats {
                        memory: Vec::new(),
                        ..s.clone()
                    })
                    .collect()
            };
            assert_eq!(
                without_memory(&sharded_stats),
                without_memory(&stats),
                "{name}"
            );
            assert!(
                (moments(&sharded_stats[0]) * replicas as f64 - moments(&stats[0])).abs()
                    <= 8.0 * replicas as f64,
                "{name}: ZeRO-1 keeps 1/{replicas} of the moments per replica"
            );
        }
    }
}

#[test]
fn replicas_with_a_bf16_samplers_log_probs_reach_the_single_learners_weights() {
    // The sampler correction is per row (or per token): split across replicas it must give the
    // single learner's update, and the same mismatch figures.
    let with_sampler = |step: usize| -> Vec<Rollout> {
        let mut batch = rollouts(step);
        for (k, r) in batch.iter_mut().enumerate() {
            r.sampler_logp = (0..r.completion_ids.len())
                .map(|j| -(3.5 + 0.5 * ((k * 7 + j * 3 + step) % 11) as f32))
                .collect();
        }
        batch
    };
    let mut token = config(LossAgg::SeqMeanTokenMean, 0.04, 2);
    token.grpo.sampler_is_mode = SamplerIsMode::TokenTruncate;
    let mut sequence = config(LossAgg::TokenMean, 0.0, 1);
    sequence.grpo.sampler_is_mode = SamplerIsMode::SequenceMask;
    sequence.grpo.sampler_is_max = 1e6;
    let start = model();
    for (name, learner) in [
        ("token-truncate", token),
        ("sequence-mask on-policy", sequence),
    ] {
        let mut single = GrpoLearner::new(model(), learner.clone());
        let single_stats: Vec<GrpoStepStats> = (0..STEPS)
            .map(|s| single.step(&with_sampler(s)).expect("single step"))
            .collect();
        let moved = max_abs_diff(&single.policy.params, &start.params);
        let mut dp = data_parallel(&learner, 3, false);
        let stats: Vec<GrpoStepStats> = (0..STEPS)
            .map(|s| dp.step(&with_sampler(s)).expect("data-parallel step"))
            .collect();
        let l2 = relative_l2(&dp.policy().params, &single.policy.params, &start.params);
        let diff = max_abs_diff(&dp.policy().params, &single.policy.params);
        assert!(
            moved > 1e-4 && l2 <= L2_TOLERANCE && diff <= MAX_TOLERANCE * moved,
            "{name}: relative L2 {l2:e}, max |Δ| {diff:e} of {moved:e}"
        );
        for (a, b) in stats.iter().zip(&single_stats) {
            let (a, b) = (a.sampler.expect(name), b.sampler.expect(name));
            assert_eq!(a.tokens, b.tokens, "{name}");
            assert!(
                (a.logp_diff_mean - b.logp_diff_mean).abs() <= 1e-5,
                "{name}"
            );
            assert!((a.is_mean - b.is_mean).abs() <= 1e-4 * b.is_mean, "{name}");
            assert_eq!(a.is_cut_fraction, b.is_cut_fraction, "{name}");
        }
        assert!(
            single_stats
                .iter()
                .any(|s| s.sampler.unwrap().is_cut_fraction > 0.0)
                || learner.grpo.sampler_is_mode == SamplerIsMode::SequenceMask,
            "{name}: the log-probs are far enough apart that some weights are truncated"
        );
    }
}

#[test]
fn the_same_seed_twice_gives_the_same_bits() {
    let learner = config(LossAgg::SeqMeanTokenMean, 0.04, 2);
    let mut first = data_parallel(&learner, 3, true);
    let mut second = data_parallel(&learner, 3, true);
    let a = run_replicas(&mut first, 0..STEPS);
    let b = run_replicas(&mut second, 0..STEPS);
    assert_eq!(first.policy().params, second.policy().params);
    assert_eq!(
        first.optimizer_state().unwrap().m,
        second.optimizer_state().unwrap().m
    );
    assert_eq!(a, b);
}

#[test]
fn a_checkpoint_mid_run_resumes_bit_identically() {
    let learner = config(LossAgg::SeqMeanTokenMean, 0.04, 2);
    for (replicas, shard) in [(2, true), (3, false)] {
        let mut uninterrupted = data_parallel(&learner, replicas, shard);
        let whole = run_replicas(&mut uninterrupted, 0..STEPS);

        let mut interrupted = data_parallel(&learner, replicas, shard);
        run_replicas(&mut interrupted, 0..2);
        let dir = tempfile::tempdir().expect("temp dir");
        let state = TrainerState {
            step: interrupted.step_count(),
            optimizer_step: interrupted.optimizer_step(),
            data_cursor: 4,
            seed: 7,
            config_hash: "dp".into(),
            reward_normaliser: None,
        };
        let saved = interrupted
            .write_checkpoint(dir.path(), &state, 2)
            .expect("checkpoint");
        drop(interrupted);

        let checkpoint = load_checkpoint(&saved.path).expect("load");
        // The gathered moments: a single learner can continue from this checkpoint too.
        let mut single =
            GrpoLearner::try_resume(checkpoint.clone(), learner.clone()).expect("single");
        assert_eq!(single.optimizer.m.len(), single.policy.layout.total);
        assert_eq!(single.optimizer_step, 4);
        for s in 2..STEPS {
            single
                .step(&rollouts(s))
                .expect("single learner after the checkpoint");
        }
        let l2 = relative_l2(
            &single.policy.params,
            &uninterrupted.policy().params,
            &model().params,
        );
        assert!(l2 <= L2_TOLERANCE, "a single learner continued {l2:e} away");

        let mut resumed = DataParallelLearner::try_resume(
            checkpoint,
            learner.clone(),
            DataParallelConfig {
                replicas,
                shard_optimizer: shard,
                all_reduce: AllReduce::Host,
            },
        )
        .expect("resume");
        let rest = run_replicas(&mut resumed, 2..STEPS);
        assert_eq!(resumed.policy().params, uninterrupted.policy().params);
        assert_eq!(
            resumed.reference().map(|r| &r.params),
            uninterrupted.reference().map(|r| &r.params)
        );
        assert_eq!(
            resumed.optimizer_state().unwrap().m,
            uninterrupted.optimizer_state().unwrap().m
        );
        assert_eq!(
            resumed.optimizer_state().unwrap().v,
            uninterrupted.optimizer_state().unwrap().v
        );
        assert_eq!(rest, whole[2..], "{replicas} replicas, shard {shard}");
    }
}

#[test]
fn bad_input_on_one_replica_is_an_error_not_a_hang() {
    let learner = config(LossAgg::TokenMean, 0.0, 2);
    assert!(DataParallelLearner::try_new(
        model(),
        learner.clone(),
        DataParallelConfig {
            replicas: 0,
            ..DataParallelConfig::single()
        }
    )
    .is_err());
    // NCCL needs a GPU per replica: CPU replicas asking for it are refused, naming the replica.
    let refused = DataParallelLearner::try_new(
        model(),
        learner.clone(),
        DataParallelConfig {
            replicas: 2,
            shard_optimizer: false,
            all_reduce: AllReduce::Nccl,
        },
    )
    .err()
    .expect("NCCL over CPU replicas")
    .to_string();
    assert!(
        refused.contains("learner replica 0 is on the CPU: NCCL needs a GPU per replica"),
        "{refused}"
    );
    let mut dp = data_parallel(&learner, 3, true);
    let mut batch = rollouts(0);
    // Row 3 of the first minibatch: the third replica's only row.
    batch[3].completion_ids[0] = 1_000_000;
    let error = dp.step(&batch).expect_err("token out of the vocabulary");
    let message = error.to_string();
    assert!(message.contains("1000000"), "{message}");
    assert_eq!(dp.step_count(), 0);
    // Bad batches are refused before any replica starts.
    let error = dp.step(&batch[..3]).expect_err("not whole groups");
    assert!(error.to_string().contains("groups of 4"), "{error}");
}

mod driver {
    //! The in-process RL driver with data-parallel replicas: a GRPO run stopped after its first
    //! step and resumed writes the same final weights as the run that never stopped.

    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    use r1_actors::data::{DataSource, FieldMap};
    use r1_actors::data_parallel::DataParallelConfig;
    use r1_actors::learner::LearnerConfig;
    use r1_actors::stages::{
        run_in_process_parallel, CheckpointConfig, GrpoJob, GrpoLoopConfig, ModelSpec, RunSpec,
        StageEvent,
    };
    use r1_kernels::bench::builtin_config;
    use r1_kernels::model::{save_model_dir, Model};
    use r1_kernels::sample::SamplingParams;
    use r1_kernels::template::{PromptTemplate, TemplateKind};
    use r1_kernels::tokenizer::ByteTokenizer;
    use r1_kernels::train::{GrpoConfig, LrSchedule};

    fn job(root: &Path, output: &str) -> GrpoJob {
        let model = root.join("base");
        if !model.exists() {
            let mut config = builtin_config("tiny-qwen2").expect("built-in shape");
            config.vocab_size = ByteTokenizer::VOCAB_SIZE;
            config.max_position_embeddings = 512;
            save_model_dir(&Model::random(config, 4, 0.05), &model).expect("model dir");
            std::fs::write(
                root.join("math.jsonl"),
                "{\"q\": \"1+1?\", \"a\": 2}\n{\"q\": \"2+3?\", \"a\": \"5\"}\n{\"q\": \"3*3?\", \"a\": 9}\n",
            )
            .expect("data");
        }
        GrpoJob {
            run: RunSpec {
                seed: 5,
                output_dir: root.join(output),
                checkpoint: CheckpointConfig {
                    every_steps: 100,
                    keep_last: 2,
                },
                config_hash: "dp".into(),
                stop_at: None,
                devices: Default::default(),
            },
            model: ModelSpec {
                path: model,
                template: PromptTemplate::new(TemplateKind::ChatMl),
                tokenizer: Some("byte".into()),
            },
            data: DataSource::Jsonl {
                path: root.join("math.jsonl"),
                fields: FieldMap {
                    prompt: "q".into(),
                    answer: "a".into(),
                    ..FieldMap::default()
                },
            },
            sampling: SamplingParams {
                temperature: 1.0,
                max_new_tokens: 10,
                ..SamplingParams::default()
            },
            rules: Default::default(),
            learner: LearnerConfig {
                grpo: GrpoConfig {
                    beta: 0.01,
                    max_completion_length: 10,
                    ..GrpoConfig::default()
                },
                group_size: 2,
                minibatches: 2,
                schedule: LrSchedule::constant(1e-3),
                ..LearnerConfig::default()
            },
            grpo: GrpoLoopConfig {
                steps: 3,
                prompts_per_step: 3,
                max_batch: 8,
                dynamic_sampling: 0,
            },
        }
    }

    #[test]
    fn a_data_parallel_run_stops_and_resumes_to_the_same_weights() {
        let dir = tempfile::tempdir().expect("temp dir");
        let parallel = DataParallelConfig {
            replicas: 2,
            shard_optimizer: true,
            all_reduce: r1_kernels::device::AllReduce::Host,
        };
        let never = AtomicBool::new(false);
        let straight = job(dir.path(), "straight");
        let straight = run_in_process_parallel(
            &straight.plan().expect("plan"),
            parallel,
            &mut |_| {},
            &never,
        )
        .expect("straight run");
        assert_eq!((straight.steps, straight.stopped), (3, false));

        let split = job(dir.path(), "split").plan().expect("plan");
        let stop = AtomicBool::new(false);
        let first = run_in_process_parallel(
            &split,
            parallel,
            &mut |e| {
                if matches!(e, StageEvent::GrpoStep { .. }) {
                    stop.store(true, Ordering::Relaxed);
                }
            },
            &stop,
        )
        .expect("first part");
        assert!(first.stopped && first.steps == 1 && first.checkpoint.is_some());
        let second =
            run_in_process_parallel(&split, parallel, &mut |_| {}, &never).expect("resumed run");
        assert_eq!(second.data_cursor, straight.data_cursor);
        assert_eq!(
            std::fs::read(
                straight
                    .final_model
                    .expect("final")
                    .join("model.safetensors")
            )
            .expect("straight weights"),
            std::fs::read(second.final_model.expect("final").join("model.safetensors"))
                .expect("resumed weights")
        );
    }
}

/// Replicas whose engines keep the weights and moments between reads, as GPU engines do
/// (`ResidentCpuEngine`), take the CPU replicas' steps bit for bit, sharded or not: every
/// replica's host copy is brought up to date at the end of a step (the reference refresh reads
/// it), and the checkpoint's moments come from the engines.
#[test]
fn replicas_whose_engines_keep_the_weights_take_the_cpu_replicas_steps() {
    use r1_kernels::device::resident::ResidentCpuEngine;
    for shard in [false, true] {
        let learner = config(LossAgg::TokenMean, 0.04, 2);
        let mut cpu = data_parallel(&learner, 2, shard);
        let mut kept = data_parallel(&learner, 2, shard)
            .with_engines(|replica| {
                let engine = ResidentCpuEngine::new(&replica.policy)?;
                Ok(Box::new(engine) as Box<dyn r1_kernels::device::TrainEngine>)
            })
            .expect("engines");
        for step in 0..4 {
            let (a, b) = (
                cpu.step(&rollouts(step)).unwrap(),
                kept.step(&rollouts(step)).unwrap(),
            );
            assert_eq!(
                a.loss.to_bits(),
                b.loss.to_bits(),
                "shard {shard}, step {step}"
            );
            assert_eq!(
                cpu.policy().params,
                kept.policy().params,
                "shard {shard}, step {step}"
            );
            assert_eq!(
                cpu.reference().map(|r| &r.params),
                kept.reference().map(|r| &r.params),
                "shard {shard}, step {step}"
            );
            let (a, b) = (
                cpu.optimizer_state().unwrap(),
                kept.optimizer_state().unwrap(),
            );
            assert_eq!(
                (a.m, a.v, a.step),
                (b.m, b.v, b.step),
                "shard {shard}, step {step}"
            );
            // The sampler decodes a replica's engine weights (`DataParallelLearner::sampler`;
            // the resident engine's decoder reads its own copy, never the host's): after every
            // step it samples what a sampler over the CPU replicas' policy samples.
            assert_eq!(
                samples(kept.sampler(Device::Cpu, Precision::Auto, 4).unwrap()),
                samples(Sampler::new(cpu.policy(), 4)),
                "shard {shard}, step {step}"
            );
        }
    }
}

/// Token ids and sampling log-probs of a fixed set of requests.
fn samples(mut sampler: Sampler<'_>) -> Vec<(Vec<u32>, Vec<u32>)> {
    let requests: Vec<GenerationRequest> = (0..2u64)
        .map(|i| GenerationRequest {
            prompt_ids: (0..3 + i as u32).map(|k| k * 7 + 2).collect(),
            samples: 3,
            seed: 11 + i,
            params: SamplingParams {
                temperature: 1.0,
                max_new_tokens: 6,
                ..SamplingParams::default()
            },
        })
        .collect();
    let done = sampler.generate(&requests, None).expect("generate");
    done.into_iter()
        .map(|c| {
            let logp = c.sampling_logprobs.iter().map(|x| x.to_bits()).collect();
            (c.token_ids, logp)
        })
        .collect()
}
