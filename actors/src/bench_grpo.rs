//! `r1ctl bench grpo`: the workload users run — GRPO steps of a fixed shape on a real model —
//! timed phase by phase, beside the FLOPs each phase does and the machine's measured GEMM peak,
//! with every byte of the step accounted for by category.
//!
//! A step here is the stage's step without its orchestration: arithmetic prompts rendered with
//! the model's chat template, G completions per prompt of exactly `completion_tokens` tokens
//! (end-of-sequence and stop strings ignored, so r1 and TRL decode the same work), the rule
//! rewards (or, when asked for and labelled as such, seeded random rewards so every group carries
//! a signal), and one `GrpoLearner` update. The sampler and the learner are driven directly.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use r1_kernels::bench::{forward_flops_per_token, measure_gemm_peak, measure_read_bandwidth};
use r1_kernels::cpu::decode::{DecodeScratch, KvCache};
use r1_kernels::device::{Device, Precision};
use r1_kernels::model::Model;
use r1_kernels::sample::{GenerationRequest, Sampler, SamplingParams};
use r1_kernels::template::PromptTemplate;
use r1_kernels::tokenizer::Tokenizer;
use r1_kernels::train::{GrpoConfig, LrSchedule, SamplerIsMode, SamplerMismatch};

use crate::judge::reward::{score_item, CodeSandbox, RewardRules};
use crate::judge::tasks::{arithmetic, Split};
use crate::learner::{GrpoLearner, LearnerConfig, LearnerError, LearnerPhases, OldLogp, Rollout};
use crate::stages::problem::{PromptProblem, StageProblem};

/// Errors of the benchmark: a shape that cannot run, or a phase that failed.
#[derive(Debug, thiserror::Error)]
pub enum GrpoBenchError {
    /// An option is out of range; the message names it.
    #[error("bench grpo: {0}")]
    Options(String),
    /// Encoding a prompt failed.
    #[error("bench grpo: tokenizer: {0}")]
    Tokenizer(String),
    /// The sampler refused the batch.
    #[error(transparent)]
    Engine(#[from] r1_kernels::EngineError),
    /// The learner refused the batch.
    #[error(transparent)]
    Learner(#[from] LearnerError),
    /// A completion could not be judged.
    #[error("bench grpo: judging: {0}")]
    Judge(String),
}

/// Where the rewards of the benchmark come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchRewards {
    /// The rule rewards of the arithmetic task (accuracy + format): real advantages. Forced-length
    /// completions of a small model often all score the same, and groups without signal skip the
    /// head's gradient products, so this can measure less work than a real step.
    Rules,
    /// Seeded uniform rewards in [0, 1), independent of the text: every group has a signal and
    /// the step does all of its work. A benchmark option only, labelled in every report.
    SeededRandom,
}

/// The shape of the benchmarked step.
#[derive(Debug, Clone, Serialize)]
pub struct GrpoBenchOptions {
    /// Prompts per step.
    pub prompts: usize,
    /// Completions per prompt (G).
    pub group_size: usize,
    /// Tokens decoded per completion, exactly.
    pub completion_tokens: usize,
    /// Minibatches per step (1: on-policy, π_old is not recomputed).
    pub minibatches: usize,
    /// Passes over the rollouts per step.
    pub epochs: usize,
    /// KL weight β (≠ 0 adds the reference model and its forward pass).
    pub beta: f64,
    /// Timed steps, after `warmup_steps` untimed ones.
    pub steps: usize,
    /// Steps run first and not timed (allocations, page faults, caches).
    pub warmup_steps: usize,
    /// Seeds the prompts, the sampling and seeded rewards.
    pub seed: u64,
    /// Where rewards come from.
    pub rewards: BenchRewards,
    /// Chat template the prompts are rendered with.
    pub template: PromptTemplate,
    /// Recompute π_old even when on-policy (to measure what the shortcut saves).
    pub recompute_old_logp: bool,
    /// Where the sampler and the learner run.
    pub device: Device,
    /// The sampler's weights: f32 (the policy's own) or bf16 (a copy made each step; the
    /// learner corrects for the mismatch by `sampler_is_mode` and reports it).
    pub sampler_precision: Precision,
    /// The learner's correction for a bf16 sampler.
    pub sampler_is_mode: SamplerIsMode,
    /// Whether the learner shares each group's prompt (`LearnerConfig::share_prompts`).
    pub share_prompts: bool,
    /// Whether the learner checkpoints activations (`LearnerConfig::activation_checkpointing`).
    pub activation_checkpointing: bool,
}

/// Time and work of one phase of the step.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseRow {
    /// `sample`, `judge`, `pi_old`, `pi_ref`, `forward`, `head`, `backward`, `optimizer`.
    pub phase: String,
    /// Mean seconds per step.
    pub seconds: f64,
    /// Share of the step's time, percent.
    pub share_percent: f64,
    /// Model FLOPs of the phase per step (0 where it does no products).
    pub gflop: f64,
    /// Achieved GFLOP/s.
    pub gflops: f64,
    /// Share of the measured GEMM peak, percent.
    pub peak_percent: f64,
    /// Bytes the phase must read from memory per step, in GB (the sampler: every weight once
    /// per decoding step; 0 for the other phases, which are compute-bound).
    pub gbytes: f64,
    /// Share of the measured read bandwidth at which those bytes went, percent.
    pub bandwidth_percent: f64,
}

/// Bytes held during a step, by what they are for.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryRow {
    /// `weights`, `gradients`, `adamw moments`, `reference`, `kv cache`, `decode scratch`,
    /// `activations + head chunk`.
    pub category: String,
    /// Bytes.
    pub bytes: f64,
}

/// What `r1ctl bench grpo` prints.
#[derive(Debug, Clone, Serialize)]
pub struct GrpoBenchReport {
    /// The model directory.
    pub model: String,
    /// Parameters.
    pub params: usize,
    /// The shape run.
    pub options: GrpoBenchOptions,
    /// Best f32 GEMM GFLOP/s measured on this machine.
    pub gemm_peak_gflops: f64,
    /// Best memory read bandwidth measured on this machine, GB/s.
    pub read_bandwidth_gbs: f64,
    /// The precision the sampler decoded in.
    pub sampler_precision: Precision,
    /// The sampler–learner mismatch over the timed steps (a bf16 sampler only).
    pub sampler_mismatch: Option<SamplerMismatch>,
    /// Mean prompt length in tokens.
    pub prompt_tokens_mean: f64,
    /// Token positions per step of the training passes' padded batches (one rollout per row).
    pub batch_tokens: f64,
    /// Token positions per step the learner's engine computed (fewer with shared prompts).
    pub engine_tokens: f64,
    /// Positions per engine row.
    pub engine_row: usize,
    /// Mean seconds per timed step.
    pub seconds_per_step: f64,
    /// Completion tokens per second over the timed steps (completions × tokens / time).
    pub completion_tokens_per_s: f64,
    /// Whether π_old came from the training pass (on-policy shortcut).
    pub reused_policy_logp: bool,
    /// Mean reward and share of groups without signal (judged by the rewards in use).
    pub reward_mean: f64,
    /// Share of groups whose rewards were all equal.
    pub frac_zero_std: f64,
    /// The phases, in step order.
    pub phases: Vec<PhaseRow>,
    /// Bytes by category, as planned by the engine.
    pub memory: Vec<MemoryRow>,
    /// Peak resident set of the process (Linux VmHWM), bytes; 0 where unknown.
    pub peak_rss_bytes: f64,
    /// The rendered prompts (for the TRL side of scripts/bench-grpo-trl.sh).
    pub prompt_texts: Vec<String>,
}

/// Runs `warmup_steps + steps` GRPO steps of `options`' shape on `model` and reports the timed ones.
pub fn run_grpo_bench(
    model: Model,
    tokenizer: &Tokenizer,
    name: &str,
    options: &GrpoBenchOptions,
) -> Result<GrpoBenchReport, GrpoBenchError> {
    let o = options;
    if o.prompts == 0 || o.group_size < 2 || o.completion_tokens == 0 || o.steps == 0 {
        return Err(GrpoBenchError::Options(format!(
            "prompts ({}) and completion tokens ({}) must be positive, G ({}) at least 2, steps ({}) at least 1",
            o.prompts, o.group_size, o.completion_tokens, o.steps
        )));
    }
    if o.minibatches == 0 || o.epochs == 0 {
        return Err(GrpoBenchError::Options(
            "minibatches and epochs must be at least 1".into(),
        ));
    }
    let peak = measure_gemm_peak();
    let bandwidth = measure_read_bandwidth();
    let total_steps = o.warmup_steps + o.steps;
    let examples = arithmetic::generate(o.seed, Split::Train, o.prompts * total_steps)
        .map_err(|e| GrpoBenchError::Options(format!("arithmetic prompts: {e}")))?;
    let problems: Vec<StageProblem> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| StageProblem::from_task(e, i))
        .collect();
    let config = LearnerConfig {
        grpo: GrpoConfig {
            beta: o.beta,
            max_completion_length: o.completion_tokens,
            sampler_is_mode: o.sampler_is_mode,
            ..GrpoConfig::default()
        },
        group_size: o.group_size,
        minibatches: o.minibatches,
        epochs: o.epochs,
        schedule: LrSchedule::constant(1e-6),
        ref_refresh_steps: 0,
        share_prompts: o.share_prompts,
        activation_checkpointing: o.activation_checkpointing,
        ..LearnerConfig::default()
    };
    let params_count = model.layout.total;
    let mut learner = GrpoLearner::try_new_on(o.device, model, config)?;
    let sampling = SamplingParams {
        temperature: 1.0,
        max_new_tokens: o.completion_tokens,
        ignore_eos: true,
        stop_strings: Vec::new(),
        stop_token_ids: Vec::new(),
        ..SamplingParams::default()
    };
    let rules = RewardRules::default();
    let sandbox = CodeSandbox::unavailable("bench grpo judges arithmetic only");
    let mut reward_rng = ChaCha8Rng::seed_from_u64(o.seed ^ 0x5EED_5EED);

    let mut timed = StepTimes::default();
    let (mut reward_sum, mut reward_n, mut zero_groups, mut groups) = (0.0, 0.0, 0, 0);
    let (mut prompt_tokens, mut prompt_count) = (0usize, 0usize);
    let mut prompt_texts = Vec::new();
    let mut reused = false;
    let mut sampler_bytes = 0.0;
    let mut precision = Precision::F32;
    let mut bf16_bytes = 0.0;
    let mut mismatch = Vec::new();
    for step in 0..total_steps {
        let batch = &problems[step * o.prompts..(step + 1) * o.prompts];
        let clock = Instant::now();
        let rendered: Vec<_> = batch
            .iter()
            .map(|p| o.template.render_prompt(p.prompt()))
            .collect();
        let requests = rendered
            .iter()
            .enumerate()
            .map(|(i, prompt)| {
                let prompt_ids = prompt
                    .encode(tokenizer)
                    .map_err(|e| GrpoBenchError::Tokenizer(format!("prompt {i}: {e}")))?;
                Ok(GenerationRequest {
                    prompt_ids,
                    samples: o.group_size,
                    seed: o.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        ^ (step * o.prompts + i) as u64,
                    params: sampling.clone(),
                })
            })
            .collect::<Result<Vec<_>, GrpoBenchError>>()?;
        let slots = o.prompts * o.group_size;
        let max_len = requests
            .iter()
            .map(|r| r.prompt_ids.len() + o.completion_tokens)
            .max()
            .unwrap_or(1);
        let cfg = &learner.policy.config;
        sampler_bytes = f64::max(
            sampler_bytes,
            KvCache::bytes(cfg, slots, max_len) + DecodeScratch::bytes(cfg, slots, max_len),
        );
        let completions = {
            let mut sampler =
                Sampler::with_precision(o.device, o.sampler_precision, &learner.policy, slots)?;
            precision = sampler.precision();
            let completions = sampler.generate(&requests, Some(tokenizer))?;
            for part in sampler.memory_parts() {
                if part.category == "sampler's bf16 weights" {
                    bf16_bytes = part.bytes;
                }
            }
            completions
        };
        let sample_s = clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        let mut rollouts = Vec::with_capacity(completions.len());
        for c in &completions {
            let reward = match o.rewards {
                BenchRewards::Rules => {
                    let item = batch[c.request].reward_item(c.text.clone().unwrap_or_default());
                    score_item(&item, &rules, &sandbox)
                        .map_err(|e| GrpoBenchError::Judge(format!("prompt {}: {e}", c.request)))?
                        .total as f64
                }
                BenchRewards::SeededRandom => reward_rng.random::<f64>(),
            };
            rollouts.push(Rollout {
                prompt_ids: requests[c.request].prompt_ids.clone(),
                completion_ids: c.token_ids.clone(),
                reward,
                truncated: true,
                sampler_logp: crate::stages::grpo::sampler_logp(c, precision),
            });
        }
        let judge_s = clock.elapsed().as_secs_f64();

        let clock = Instant::now();
        let source = if o.recompute_old_logp {
            OldLogp::Recompute
        } else {
            OldLogp::Auto
        };
        let (stats, phases) = learner.step_with(&rollouts, source)?;
        let learn_s = clock.elapsed().as_secs_f64();
        if step < o.warmup_steps {
            continue;
        }
        reused = phases.reused_policy_logp;
        mismatch.extend(stats.sampler);
        timed.add(sample_s, judge_s, learn_s, &phases);
        reward_sum += stats.reward_mean * rollouts.len() as f64;
        reward_n += rollouts.len() as f64;
        groups += o.prompts;
        zero_groups += (stats.frac_zero_std * o.prompts as f64).round() as usize;
        for r in &requests {
            prompt_tokens += r.prompt_ids.len();
            prompt_count += 1;
        }
        prompt_texts.extend(rendered.into_iter().map(|r| r.text));
    }

    let steps = o.steps as f64;
    let prompt_mean = prompt_tokens as f64 / prompt_count.max(1) as f64;
    let model = &learner.policy;
    let c = &model.config;
    // Work per step, in model FLOPs over the positions actually computed (rows are padded to
    // the longest prompt + completion; every prompt here has about the same length).
    // With shared prompts (`LearnerConfig::share_prompts`) the learner computes fewer positions,
    // in longer rows: its phases count those.
    let rows = (o.prompts * o.group_size) as f64;
    let batch_tokens = timed.learner.batch_tokens as f64 / steps;
    let engine_tokens = timed.learner.engine_tokens as f64 / steps;
    let t = prompt_mean + o.completion_tokens as f64 - 1.0;
    let passes = o.epochs as f64;
    let (tokens, row_len) = if engine_tokens > 0.0 {
        (engine_tokens / passes, timed.learner.engine_row)
    } else {
        (rows * t, t.round() as usize)
    };
    let fwd_per_token = forward_flops_per_token(model, row_len);
    let head_fwd = 2.0 * (c.vocab_size * c.hidden_size) as f64;
    let body_fwd = fwd_per_token - head_fwd;
    let decode_tokens = rows * o.completion_tokens as f64;
    let sample_flops = decode_tokens
        * forward_flops_per_token(
            model,
            (prompt_mean + o.completion_tokens as f64 / 2.0) as usize,
        )
        + o.prompts as f64 * prompt_mean * forward_flops_per_token(model, prompt_mean as usize);
    // The sampler streams every weight once per decoding step (the prefill's passes read them
    // too, a few more times).
    let weight_bytes = params_count as f64
        * if precision == Precision::Bf16 {
            2.0
        } else {
            4.0
        };
    let sample_bytes = o.completion_tokens as f64 * weight_bytes;
    let rows_of = |phase: &str, seconds: f64, flops: f64| (phase.to_string(), seconds, flops);
    let mut phase_list = vec![
        rows_of("sample", timed.sample, sample_flops),
        rows_of("judge", timed.judge, 0.0),
        rows_of(
            "pi_old",
            timed.learner.old_logp,
            if reused { 0.0 } else { tokens * fwd_per_token },
        ),
        rows_of(
            "pi_ref",
            timed.learner.ref_logp,
            if o.beta != 0.0 {
                tokens * fwd_per_token
            } else {
                0.0
            },
        ),
        rows_of("forward", timed.learner.forward, passes * tokens * body_fwd),
        // The head runs over the counted (completion) positions only: logits, then the two
        // gradient products.
        rows_of(
            "head",
            timed.learner.head,
            passes * decode_tokens * 3.0 * head_fwd,
        ),
        // With activation checkpointing the backward pass recomputes each layer's forward.
        rows_of(
            "backward",
            timed.learner.backward,
            passes * tokens * (2.0 + f64::from(u8::from(o.activation_checkpointing))) * body_fwd,
        ),
        rows_of("optimizer", timed.learner.optimizer, 0.0),
    ];
    let learner_other = timed.learn
        - (timed.learner.old_logp
            + timed.learner.ref_logp
            + timed.learner.forward
            + timed.learner.head
            + timed.learner.backward
            + timed.learner.optimizer);
    phase_list.push(rows_of("learner other", learner_other.max(0.0), 0.0));
    let step_total = timed.sample + timed.judge + timed.learn;
    let phases = phase_list
        .into_iter()
        .map(|(phase, seconds, flops)| {
            let per_step = seconds / steps;
            let gflops = if seconds > 0.0 {
                flops * steps / seconds / 1e9
            } else {
                0.0
            };
            let bytes = if phase == "sample" { sample_bytes } else { 0.0 };
            let gbs = if seconds > 0.0 {
                bytes * steps / seconds / 1e9
            } else {
                0.0
            };
            PhaseRow {
                phase,
                seconds: per_step,
                share_percent: 100.0 * seconds / step_total.max(f64::MIN_POSITIVE),
                gflop: flops / 1e9,
                gflops,
                peak_percent: 100.0 * gflops / peak,
                gbytes: bytes / 1e9,
                bandwidth_percent: 100.0 * gbs * 1e9 / bandwidth,
            }
        })
        .collect();
    let p = params_count as f64 * 4.0;
    let memory = [
        ("weights", p),
        ("gradients", p),
        ("adamw moments", 2.0 * p),
        ("reference", if o.beta != 0.0 { p } else { 0.0 }),
        ("sampler bf16 weights", bf16_bytes),
        ("kv cache + decode scratch", sampler_bytes),
        ("activations + head chunk", learner.arena_bytes() as f64),
    ]
    .into_iter()
    .map(|(category, bytes)| MemoryRow {
        category: category.into(),
        bytes,
    })
    .collect();
    Ok(GrpoBenchReport {
        model: name.to_string(),
        params: params_count,
        options: options.clone(),
        gemm_peak_gflops: peak,
        read_bandwidth_gbs: bandwidth / 1e9,
        sampler_precision: precision,
        sampler_mismatch: SamplerMismatch::combine(&mismatch),
        prompt_tokens_mean: prompt_mean,
        batch_tokens,
        engine_tokens,
        engine_row: timed.learner.engine_row,
        seconds_per_step: step_total / steps,
        completion_tokens_per_s: decode_tokens * steps / step_total,
        reused_policy_logp: reused,
        reward_mean: reward_sum / reward_n.max(1.0),
        frac_zero_std: zero_groups as f64 / groups.max(1) as f64,
        phases,
        memory,
        peak_rss_bytes: r1_kernels::model::limits::peak_resident_bytes(),
        prompt_texts,
    })
}

/// Seconds summed over the timed steps.
#[derive(Default)]
struct StepTimes {
    sample: f64,
    judge: f64,
    learn: f64,
    learner: LearnerPhases,
}

impl StepTimes {
    fn add(&mut self, sample: f64, judge: f64, learn: f64, phases: &LearnerPhases) {
        self.sample += sample;
        self.judge += judge;
        self.learn += learn;
        let l = &mut self.learner;
        l.old_logp += phases.old_logp;
        l.ref_logp += phases.ref_logp;
        l.forward += phases.forward;
        l.head += phases.head;
        l.backward += phases.backward;
        l.optimizer += phases.optimizer;
        l.batch_tokens += phases.batch_tokens;
        l.engine_tokens += phases.engine_tokens;
        l.engine_row = phases.engine_row;
    }
}
