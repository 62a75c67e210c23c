//! The pieces of a GRPO step that `stages::rl::rl_step` puts together: stop rules for a template
//! (`sampling_for`), the sampler's requests (`group_requests`), the reward rules with the
//! template's `<think>` pre-fill (`stage_rules`), each completion's reward item (`reward_item`),
//! dynamic sampling's state machine (`DynamicSampling`), the step report (`step_report`). Plus
//! `evaluate`: pass@1 and cons@k on held-out problems.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use r1_kernels::device::memory::MemoryPart;
use r1_kernels::device::{Device, Precision};
use r1_kernels::model::Model;
use r1_kernels::sample::{Completion, FinishReason, GenerationRequest, Sampler, SamplingParams};
use r1_kernels::template::PromptTemplate;
use r1_kernels::tokenizer::Tokenizer;

use crate::eval::{score, EvalScores, ProblemSamples};
use crate::judge::format::FormatConfig;
use crate::judge::math::equivalent;
use crate::judge::reward::{score_item, CodeSandbox, RewardItem, RewardReport, RewardRules};
use crate::learner::{GrpoStepStats, LearnerError, Rollout};
use crate::stages::problem::PromptProblem;

/// Errors of a stage step: the prompt could not be encoded, the sampler or the learner refused,
/// or an item could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Tokenizing a prompt or completion failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The sampler refused the batch.
    #[error(transparent)]
    Engine(#[from] r1_kernels::EngineError),
    /// The learner refused the batch.
    #[error(transparent)]
    Learner(#[from] LearnerError),
    /// A completion could not be scored.
    #[error("judging problem {problem}: {message}")]
    Judge {
        /// Index of the problem in the batch.
        problem: usize,
        /// What the judge said.
        message: String,
    },
    /// The prompt source gave nothing to train on.
    #[error("the prompt source is empty")]
    NoPrompts,
    /// A worker (sampler, judge, scorer, learner, keeper) failed or could not be reached; the
    /// message names it.
    #[error("{0}")]
    Worker(String),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] crate::keeper::CheckpointError),
}

/// How a stage samples and judges (the learner has its own config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSettings {
    /// Prompt template applied to every task prompt.
    pub template: PromptTemplate,
    /// Sampling of the training rollouts (temperature 1 in the paper).
    pub sampling: SamplingParams,
    /// Reward rules (weights, format style).
    pub rules: RewardRules,
    /// Most sequences decoded at once.
    pub max_batch: usize,
}

/// Mean and population std of one reward component over a step's completions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentStat {
    /// `accuracy`, `format` or `language`.
    pub name: String,
    /// Mean over the completions that have the component.
    pub mean: f64,
    /// Population std over the same completions.
    pub std: f64,
}

/// Wall time of a step's phases, in seconds: where a step's time goes decides what to speed up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSeconds {
    /// Encoding prompts and generating completions (every round).
    pub sample: f64,
    /// Scoring completions with the reward rules (every round).
    pub judge: f64,
    /// The learner's update.
    pub learn: f64,
}

/// What dynamic sampling did in a step; with it off, one round and nothing resampled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DynamicSamplingStats {
    /// Sampling rounds run (1 without resampling).
    pub rounds: usize,
    /// Groups sampled beyond the first `prompts_per_step` (fresh prompts replacing dropped ones).
    pub resampled_groups: usize,
    /// Groups with all-equal rewards left out of the batch.
    pub dropped_groups: usize,
    /// Prompts taken from the prompt source: a runner advances its data cursor by this much.
    pub prompts_consumed: usize,
}

/// What one stage step did: the learner's statistics plus what the judge saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoStepReport {
    /// The learner's statistics.
    pub learner: GrpoStepStats,
    /// Mean accuracy reward.
    pub accuracy: f64,
    /// Mean format reward.
    pub format: f64,
    /// Mean language-consistency share (over items with a target language).
    pub language: f64,
    /// Mean and std of each reward component (accuracy, format, language).
    pub components: Vec<ComponentStat>,
    /// Share of completions containing a reflection phrase ("wait", "let me verify", …).
    pub reflection_rate: f64,
    /// Tokens generated in the step, dropped groups included.
    pub tokens_generated: usize,
    /// Time per phase.
    pub phases: PhaseSeconds,
    /// Dynamic sampling's rounds and resampled groups.
    pub dynamic: DynamicSamplingStats,
    /// One rollout for people to read: prompt, completion, total reward.
    pub sample: Option<(String, String, f32)>,
    /// The bytes the step held, by category, and the process's peak resident set.
    #[serde(default)]
    pub memory: StepMemory,
}

/// Every byte a step held, by what it was for: the learner's (weights, gradients, AdamW
/// moments, the reference, the activation arena with the head's logit chunk) and the sampler's at
/// its largest generation of the step (its copy of the weights where it keeps one, the KV cache,
/// the decoding buffers); beside them the process's peak resident set, which also counts what the
/// categories do not (the tokenizer, the data, the allocator's slack).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMemory {
    /// Host bytes by category (a GPU worker's device memory is not in it).
    pub parts: Vec<MemoryPart>,
    /// The process's peak resident set so far (VmHWM), bytes; 0 where unknown.
    pub peak_resident_bytes: f64,
}

impl StepMemory {
    /// The sum of the categories.
    pub fn total(&self) -> f64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

impl GrpoStepReport {
    /// The report without its wall times and memory: what the seed determines, so two runs of
    /// the same step compare equal on it (the memory depends on the workers, the devices and the
    /// process).
    pub fn deterministic(&self) -> GrpoStepReport {
        GrpoStepReport {
            phases: PhaseSeconds::default(),
            memory: StepMemory::default(),
            learner: GrpoStepStats {
                memory: Vec::new(),
                ..self.learner.clone()
            },
            ..self.clone()
        }
    }
}

/// Phrases the paper's "aha moment" is made of; their rate is tracked as the run goes.
const REFLECTION_PHRASES: &[&str] = &[
    "wait",
    "re-check",
    "recheck",
    "let me verify",
    "let me check",
    "double-check",
    "verify",
];

/// Whether a completion reflects on its own reasoning.
pub fn reflects(text: &str) -> bool {
    let lower = text.to_lowercase();
    REFLECTION_PHRASES.iter().any(|p| lower.contains(p))
}

/// Stop rules for a template: end-of-sequence ids, the template's end-of-turn token, `</answer>`.
pub fn sampling_for(settings: &StageSettings, tokenizer: &Tokenizer) -> SamplingParams {
    let mut params = settings.sampling.clone();
    if let Some(id) = settings
        .template
        .end_of_turn()
        .and_then(|t| tokenizer.token_id(t))
    {
        params.stop_token_ids.push(id);
    }
    params
        .stop_token_ids
        .extend(tokenizer.eos_ids().iter().copied());
    if !params.stop_strings.iter().any(|s| s == "</answer>") {
        params.stop_strings.push("</answer>".into());
    }
    params
}

/// The sampler's work for a batch of problems: one request of `k` samples per problem.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRequests {
    /// Encoded prompt of each problem (template applied).
    pub prompts: Vec<Vec<u32>>,
    /// One request per problem, seeded from the step seed and the problem's index.
    pub requests: Vec<GenerationRequest>,
    /// Whether the template pre-filled `<think>` (the format rule must know).
    pub prefilled_think: bool,
}

/// Renders and encodes every problem's prompt and builds its generation request.
pub fn group_requests<P: PromptProblem>(
    problems: &[P],
    settings: &StageSettings,
    tokenizer: &Tokenizer,
    sampling: &SamplingParams,
    k: usize,
    seed: u64,
) -> Result<GroupRequests, StageError> {
    let mut prefilled_think = false;
    let prompts = problems
        .iter()
        .map(|p| {
            let rendered = settings.template.render_prompt(p.prompt());
            prefilled_think = rendered.prefilled_think;
            rendered
                .encode(tokenizer)
                .map_err(|e| StageError::Tokenizer(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let requests = prompts
        .iter()
        .enumerate()
        .map(|(i, ids)| GenerationRequest {
            prompt_ids: ids.clone(),
            samples: k,
            seed: seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(i as u64),
            params: sampling.clone(),
        })
        .collect();
    Ok(GroupRequests {
        prompts,
        requests,
        prefilled_think,
    })
}

/// The reward rules of a stage with the template's `<think>` pre-fill applied.
pub fn stage_rules(settings: &StageSettings, prefilled_think: bool) -> RewardRules {
    RewardRules {
        format: FormatConfig {
            prefilled_think,
            ..settings.rules.format
        },
        ..settings.rules
    }
}

/// The reward item of a completion of `problems[completion.request]`.
pub fn reward_item<P: PromptProblem>(problems: &[P], completion: &Completion) -> RewardItem {
    problems[completion.request].reward_item(completion.text.clone().unwrap_or_default())
}

/// Scores every completion under `rules`, index-aligned with `completions`. Code problems are
/// run in `sandbox` (`CodeSandbox::unavailable` where a stage has none: they then score 0 with
/// the reason).
pub fn judge_completions<P: PromptProblem>(
    problems: &[P],
    completions: &[Completion],
    rules: &RewardRules,
    sandbox: &CodeSandbox,
) -> Result<Vec<RewardReport>, StageError> {
    completions
        .iter()
        .map(|c| {
            score_item(&reward_item(problems, c), rules, sandbox).map_err(|e| StageError::Judge {
                problem: c.request,
                message: e.to_string(),
            })
        })
        .collect()
}

/// Per group of `group_size` consecutive rewards: whether it carries a learning signal (its
/// rewards are not all equal). Dynamic sampling keeps only these.
pub fn informative_groups(rewards: &[f64], group_size: usize) -> Vec<bool> {
    rewards
        .chunks(group_size.max(1))
        .map(|g| g.iter().any(|r| *r != g[0]))
        .collect()
}

/// What a stage needs besides the model to sample and judge: tokenizer, settings, sandbox.
pub struct StepContext<'a> {
    /// Encodes prompts, decodes completions.
    pub tokenizer: &'a Tokenizer,
    /// Template, sampling, rules, batch size.
    pub settings: &'a StageSettings,
    /// Where code problems are judged.
    pub sandbox: &'a CodeSandbox,
    /// The device the sampler generates on (`[devices] sampler`).
    pub device: Device,
    /// The precision of the sampler's weights there (`[devices] sampler_precision`).
    pub precision: Precision,
}

/// Completions of a batch of problems and their reward reports, index-aligned.
struct Judged {
    /// Encoded prompt of each problem.
    prompts: Vec<Vec<u32>>,
    /// Every completion, ordered by (problem, sample).
    completions: Vec<Completion>,
    /// The reward report of each completion.
    reports: Vec<RewardReport>,
}

/// Samples `k` completions of each problem and judges them, adding each phase's time to `phases`.
fn sample_and_judge<P: PromptProblem>(
    model: &Model,
    ctx: &StepContext,
    problems: &[P],
    sampling: SamplingParams,
    k: usize,
    seed: u64,
    phases: &mut PhaseSeconds,
) -> Result<Judged, StageError> {
    let began = Instant::now();
    let batch = group_requests(problems, ctx.settings, ctx.tokenizer, &sampling, k, seed)?;
    let completions =
        Sampler::with_precision(ctx.device, ctx.precision, model, ctx.settings.max_batch)?
            .generate(&batch.requests, Some(ctx.tokenizer))?;
    phases.sample += began.elapsed().as_secs_f64();
    let began = Instant::now();
    let rules = stage_rules(ctx.settings, batch.prefilled_think);
    let reports = judge_completions(problems, &completions, &rules, ctx.sandbox)?;
    phases.judge += began.elapsed().as_secs_f64();
    Ok(Judged {
        prompts: batch.prompts,
        completions,
        reports,
    })
}

/// The learner's view of a step: (prompt, completion, the reward it trains on, truncated), one
/// per completion; `completions[k].request` indexes `prompt_ids`. A sampler in `sampler`
/// precision other than f32 sent log-probs that are not the learner's: they go with each
/// rollout, for the learner's correction.
pub fn rollouts(
    prompt_ids: &[Vec<u32>],
    completions: &[Completion],
    rewards: &[f64],
    sampler: Precision,
) -> Vec<Rollout> {
    completions
        .iter()
        .zip(rewards)
        .map(|(c, &reward)| Rollout {
            prompt_ids: prompt_ids[c.request].clone(),
            completion_ids: c.token_ids.clone(),
            reward,
            truncated: c.finish == FinishReason::Length,
            sampler_logp: sampler_logp(c, sampler),
        })
        .collect()
}

/// What a rollout carries of `c`'s log-probs from a sampler in `precision`: none when it is the
/// learner's f32 (its log-probs are the learner's), else the raw ones, for the correction.
pub fn sampler_logp(c: &Completion, precision: Precision) -> Vec<f32> {
    if precision.exact() {
        Vec::new()
    } else {
        c.raw_logprobs.clone()
    }
}

/// Mean and population std of `values` (0, 0 when empty).
pub(crate) fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The step report from the learner's statistics and what the judge saw. Phase times are zero
/// and dynamic sampling is one round over these problems; `grpo_step_from` fills in its own.
pub fn step_report<P: PromptProblem>(
    stats: GrpoStepStats,
    problems: &[P],
    completions: &[Completion],
    reports: &[RewardReport],
) -> GrpoStepReport {
    let n = reports.len().max(1) as f64;
    let accuracy: Vec<f64> = reports.iter().map(|r| r.accuracy.reward as f64).collect();
    let format: Vec<f64> = reports.iter().map(|r| r.format.reward as f64).collect();
    let languages: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.language.as_ref().map(|l| l.share as f64))
        .collect();
    let components = [
        ("accuracy", &accuracy),
        ("format", &format),
        ("language", &languages),
    ]
    .into_iter()
    .map(|(name, values)| {
        let (mean, std) = mean_std(values);
        ComponentStat {
            name: name.into(),
            mean,
            std,
        }
    })
    .collect();
    GrpoStepReport {
        learner: stats,
        accuracy: accuracy.iter().sum::<f64>() / n,
        format: format.iter().sum::<f64>() / n,
        language: if languages.is_empty() {
            0.0
        } else {
            languages.iter().sum::<f64>() / languages.len() as f64
        },
        components,
        reflection_rate: completions
            .iter()
            .filter(|c| c.text.as_deref().is_some_and(reflects))
            .count() as f64
            / n,
        tokens_generated: completions.iter().map(|c| c.token_ids.len()).sum(),
        memory: StepMemory::default(),
        phases: PhaseSeconds::default(),
        dynamic: DynamicSamplingStats {
            rounds: 1,
            resampled_groups: 0,
            dropped_groups: 0,
            prompts_consumed: problems.len(),
        },
        sample: completions.first().zip(reports.first()).map(|(c, r)| {
            (
                problems[c.request].prompt().to_string(),
                c.text.clone().unwrap_or_default(),
                r.total,
            )
        }),
    }
}

/// The seed of dynamic-sampling round `round` of a step: round 0 uses the step's seed itself, so
/// a step without resampling samples exactly as before dynamic sampling existed.
pub fn round_seed(seed: u64, round: usize) -> u64 {
    seed.wrapping_add((round as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// The groups a step trains on, gathered over the rounds.
struct Batch<P> {
    problems: Vec<P>,
    prompts: Vec<Vec<u32>>,
    completions: Vec<Completion>,
    reports: Vec<RewardReport>,
}

impl<P> Batch<P> {
    fn new() -> Self {
        Batch {
            problems: Vec::new(),
            prompts: Vec::new(),
            completions: Vec::new(),
            reports: Vec::new(),
        }
    }

    /// Appends group `i` of `judged` (problem `problem`), renumbering its completions.
    fn push(&mut self, problem: P, judged: &Judged, i: usize, g: usize) {
        let at = self.problems.len();
        self.problems.push(problem);
        self.prompts.push(judged.prompts[i].clone());
        for j in i * g..(i + 1) * g {
            let mut c = judged.completions[j].clone();
            c.request = at;
            self.completions.push(c);
            self.reports.push(judged.reports[j].clone());
        }
    }

    fn append(&mut self, other: Batch<P>) {
        let at = self.problems.len();
        self.problems.extend(other.problems);
        self.prompts.extend(other.prompts);
        self.completions
            .extend(other.completions.into_iter().map(|mut c| {
                c.request += at;
                c
            }));
        self.reports.extend(other.reports);
    }
}

/// The groups a step trains on, index-aligned: problems, encoded prompts, completions (grouped,
/// `request` indexing `problems`), reward reports.
pub struct StepBatch<P> {
    /// One per group.
    pub problems: Vec<P>,
    /// Encoded prompt of each group.
    pub prompts: Vec<Vec<u32>>,
    /// Every completion, `group_size` per group, in group order.
    pub completions: Vec<Completion>,
    /// The reward report of each completion.
    pub reports: Vec<RewardReport>,
    /// What dynamic sampling did.
    pub dynamic: DynamicSamplingStats,
    /// Completion tokens sampled over every round (dropped groups included).
    pub tokens_generated: usize,
}

/// Dynamic sampling (DAPO) as a state machine shared by the in-process step and the daemon's
/// director: each round asks for [`DynamicSampling::want`] fresh prompts, and [`DynamicSampling::add`]
/// keeps the groups whose rewards are not all equal (every group when `extra_rounds` is 0). After
/// `extra_rounds` extra rounds, [`DynamicSampling::finish`] refills the batch to `prompts_per_step`
/// with the earliest dropped groups.
pub struct DynamicSampling<P> {
    kept: Batch<P>,
    dropped: Batch<P>,
    dynamic: DynamicSamplingStats,
    tokens_generated: usize,
    prompts_per_step: usize,
    extra_rounds: usize,
    group_size: usize,
    round: usize,
}

impl<P> DynamicSampling<P> {
    /// A step of `prompts_per_step` groups of `group_size`, with up to `extra_rounds` resampling
    /// rounds.
    pub fn new(prompts_per_step: usize, extra_rounds: usize, group_size: usize) -> Self {
        DynamicSampling {
            kept: Batch::new(),
            dropped: Batch::new(),
            dynamic: DynamicSamplingStats::default(),
            tokens_generated: 0,
            prompts_per_step,
            extra_rounds,
            group_size: group_size.max(1),
            round: 0,
        }
    }

    /// The number of the next round (0 first): its sampling seed is `round_seed(seed, round)`.
    pub fn round(&self) -> usize {
        self.round
    }

    /// How many prompts the next round samples; 0 when the step has its groups or its rounds.
    pub fn want(&self) -> usize {
        if self.round > self.extra_rounds {
            return 0;
        }
        self.prompts_per_step
            .saturating_sub(self.kept.problems.len())
    }

    /// Adds a sampled and judged round: `problems` and, index-aligned, their encoded `prompts`,
    /// `completions` (grouped, `request` indexing `problems`) and `reports`.
    pub fn add(
        &mut self,
        problems: Vec<P>,
        prompts: Vec<Vec<u32>>,
        completions: Vec<Completion>,
        reports: Vec<RewardReport>,
    ) {
        let g = self.group_size;
        self.dynamic.rounds += 1;
        self.dynamic.prompts_consumed += problems.len();
        if self.round > 0 {
            self.dynamic.resampled_groups += problems.len();
        }
        self.round += 1;
        self.tokens_generated += completions.iter().map(|c| c.token_ids.len()).sum::<usize>();
        let judged = Judged {
            prompts,
            completions,
            reports,
        };
        let rewards: Vec<f64> = judged.reports.iter().map(|r| r.total as f64).collect();
        let informative = informative_groups(&rewards, g);
        for (i, problem) in problems.into_iter().enumerate() {
            if self.extra_rounds == 0 || informative[i] {
                self.kept.push(problem, &judged, i, g);
            } else {
                self.dynamic.dropped_groups += 1;
                self.dropped.push(problem, &judged, i, g);
            }
        }
    }

    /// The groups to train on.
    pub fn finish(mut self) -> Result<StepBatch<P>, StageError> {
        let g = self.group_size;
        if self.kept.problems.len() < self.prompts_per_step && !self.dropped.problems.is_empty() {
            // Out of rounds: refill with the earliest dropped groups, so every step trains on the
            // same number of groups (their advantages are 0; the KL term still applies).
            let refill =
                (self.prompts_per_step - self.kept.problems.len()).min(self.dropped.problems.len());
            let mut head: Batch<P> = Batch::new();
            head.problems = self.dropped.problems.drain(..refill).collect();
            head.prompts = self.dropped.prompts.drain(..refill).collect();
            head.completions = self.dropped.completions.drain(..refill * g).collect();
            head.reports = self.dropped.reports.drain(..refill * g).collect();
            self.dynamic.dropped_groups -= refill;
            self.kept.append(head);
        }
        if self.kept.problems.is_empty() {
            return Err(StageError::NoPrompts);
        }
        Ok(StepBatch {
            problems: self.kept.problems,
            prompts: self.kept.prompts,
            completions: self.kept.completions,
            reports: self.kept.reports,
            dynamic: self.dynamic,
            tokens_generated: self.tokens_generated,
        })
    }
}

/// pass@1 over `k` samples and cons@k of `model` on `problems`, with the stage's template and
/// rules; `sampling` is the evaluation's (the paper: temperature 0.6, top-p 0.95; or greedy).
/// Code problems score 0 (no sandbox); `evaluate_with` takes one.
pub fn evaluate<P: PromptProblem>(
    model: &Model,
    tokenizer: &Tokenizer,
    problems: &[P],
    settings: &StageSettings,
    sampling: SamplingParams,
    k: usize,
    seed: u64,
) -> Result<StageEval, StageError> {
    Ok(evaluate_samples(model, tokenizer, problems, settings, sampling, k, seed)?.0)
}

/// [`evaluate`] (on the CPU, no code sandbox), also returning every completion and its reward
/// report as [`evaluate_judged`] does.
pub fn evaluate_samples<P: PromptProblem>(
    model: &Model,
    tokenizer: &Tokenizer,
    problems: &[P],
    settings: &StageSettings,
    sampling: SamplingParams,
    k: usize,
    seed: u64,
) -> Result<(StageEval, Vec<Completion>, Vec<RewardReport>), StageError> {
    let sandbox = CodeSandbox::unavailable("this evaluation runs no code");
    let ctx = StepContext {
        tokenizer,
        settings,
        sandbox: &sandbox,
        device: Device::Cpu,
        precision: Precision::F32,
    };
    evaluate_judged(model, &ctx, problems, sampling, k, seed)
}

/// `evaluate` with a code sandbox in `ctx`.
pub fn evaluate_with<P: PromptProblem>(
    model: &Model,
    ctx: &StepContext,
    problems: &[P],
    sampling: SamplingParams,
    k: usize,
    seed: u64,
) -> Result<StageEval, StageError> {
    Ok(evaluate_judged(model, ctx, problems, sampling, k, seed)?.0)
}

/// [`evaluate_with`], also returning every completion (ordered by problem, then sample) and its
/// reward report: what the eval stage writes to its `samples.jsonl`.
pub fn evaluate_judged<P: PromptProblem>(
    model: &Model,
    ctx: &StepContext,
    problems: &[P],
    sampling: SamplingParams,
    k: usize,
    seed: u64,
) -> Result<(StageEval, Vec<Completion>, Vec<RewardReport>), StageError> {
    let settings = StageSettings {
        sampling,
        ..ctx.settings.clone()
    };
    let sampling = sampling_for(&settings, ctx.tokenizer);
    let mut phases = PhaseSeconds::default();
    let Judged {
        completions,
        reports,
        ..
    } = sample_and_judge(model, ctx, problems, sampling, k, seed, &mut phases)?;
    let mut per_problem: Vec<ProblemSamples> = problems
        .iter()
        .map(|_| ProblemSamples {
            correct: Vec::new(),
            answers: Vec::new(),
        })
        .collect();
    let (mut formatted, mut tokens, mut truncated) = (0usize, 0usize, 0usize);
    for (c, r) in completions.iter().zip(&reports) {
        per_problem[c.request].correct.push(r.accuracy.reward > 0.0);
        per_problem[c.request].answers.push(r.extracted.clone());
        formatted += usize::from(r.format.reward > 0.0);
        tokens += c.token_ids.len();
        truncated += usize::from(c.finish == FinishReason::Length);
    }
    let n = completions.len().max(1) as f64;
    let eval = StageEval {
        scores: score(&per_problem, equivalent),
        format_rate: formatted as f64 / n,
        mean_length: tokens as f64 / n,
        truncated_rate: truncated as f64 / n,
    };
    Ok((eval, completions, reports))
}

/// What `evaluate` measured: the paper's metrics plus what the samples looked like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageEval {
    /// pass@1 over k samples and cons@k.
    pub scores: EvalScores,
    /// Share of samples the format rule accepted.
    pub format_rate: f64,
    /// Mean completion length in tokens.
    pub mean_length: f64,
    /// Share of samples cut by the length limit.
    pub truncated_rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn informative_groups_are_those_with_a_reward_spread() {
        let rewards = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 2.0, 2.0];
        assert_eq!(
            informative_groups(&rewards, 2),
            vec![false, true, false, false]
        );
        assert_eq!(informative_groups(&rewards, 4), vec![true, true]);
        assert_eq!(informative_groups(&[], 4), Vec::<bool>::new());
    }

    #[test]
    fn round_zero_keeps_the_step_seed_and_rounds_differ() {
        assert_eq!(round_seed(77, 0), 77);
        assert_ne!(round_seed(77, 1), round_seed(77, 2));
        assert_ne!(round_seed(77, 1), 77);
    }

    #[test]
    fn component_stats_are_mean_and_population_std() {
        assert_eq!(mean_std(&[]), (0.0, 0.0));
        let (m, s) = mean_std(&[1.0, 0.0, 1.0, 0.0]);
        assert!((m - 0.5).abs() < 1e-12 && (s - 0.5).abs() < 1e-12);
    }
}
