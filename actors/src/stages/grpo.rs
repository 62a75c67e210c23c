//! One GRPO step of a stage, end to end in-process: render each task prompt with the template,
//! sample a group of completions per prompt, score every completion with the reward rules, and
//! hand the rollouts to the learner. Plus `evaluate`: pass@1 and cons@k on held-out problems.

use serde::{Deserialize, Serialize};

use r1_kernels::model::Model;
use r1_kernels::sample::{Completion, FinishReason, GenerationRequest, Sampler, SamplingParams};
use r1_kernels::template::PromptTemplate;
use r1_kernels::tokenizer::Tokenizer;

use crate::eval::{score, EvalScores, ProblemSamples};
use crate::judge::format::FormatConfig;
use crate::judge::math::equivalent;
use crate::judge::reward::{score_item, CodeSandbox, RewardItem, RewardReport, RewardRules};
use crate::judge::tasks::TaskExample;
use crate::learner::{GrpoLearner, GrpoStepStats, LearnerError, Rollout};

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
    /// Share of completions containing a reflection phrase ("wait", "let me verify", …).
    pub reflection_rate: f64,
    /// One rollout for people to read: prompt, completion, total reward.
    pub sample: Option<(String, String, f32)>,
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
pub fn group_requests(
    problems: &[TaskExample],
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
            let rendered = settings.template.render_prompt(&p.prompt);
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
pub fn reward_item(problems: &[TaskExample], completion: &Completion) -> RewardItem {
    RewardItem::for_task(
        completion.text.clone().unwrap_or_default(),
        &problems[completion.request],
        true,
    )
}

/// Scores every completion under `rules`, index-aligned with `completions`.
pub fn judge_completions(
    problems: &[TaskExample],
    completions: &[Completion],
    rules: &RewardRules,
) -> Result<Vec<RewardReport>, StageError> {
    // Built-in tasks need no code sandbox; a code task here would be an error, not a silent 0.
    let sandbox = CodeSandbox::unavailable("the built-in task stage runs no code");
    completions
        .iter()
        .map(|c| {
            score_item(&reward_item(problems, c), rules, &sandbox).map_err(|e| StageError::Judge {
                problem: c.request,
                message: e.to_string(),
            })
        })
        .collect()
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

/// Samples `k` completions of each problem and judges them.
fn sample_and_judge(
    model: &Model,
    tokenizer: &Tokenizer,
    problems: &[TaskExample],
    settings: &StageSettings,
    sampling: SamplingParams,
    k: usize,
    seed: u64,
) -> Result<Judged, StageError> {
    let batch = group_requests(problems, settings, tokenizer, &sampling, k, seed)?;
    let completions =
        Sampler::new(model, settings.max_batch).generate(&batch.requests, Some(tokenizer))?;
    let rules = stage_rules(settings, batch.prefilled_think);
    let reports = judge_completions(problems, &completions, &rules)?;
    Ok(Judged {
        prompts: batch.prompts,
        completions,
        reports,
    })
}

/// The learner's view of judged completions: (prompt, completion, total reward, truncated).
pub fn rollouts(
    prompts: &[Vec<u32>],
    completions: &[Completion],
    reports: &[RewardReport],
) -> Vec<Rollout> {
    completions
        .iter()
        .zip(reports)
        .map(|(c, r)| Rollout {
            prompt_ids: prompts[c.request].clone(),
            completion_ids: c.token_ids.clone(),
            reward: r.total as f64,
            truncated: c.finish == FinishReason::Length,
        })
        .collect()
}

/// The step report from the learner's statistics and what the judge saw.
pub fn step_report(
    stats: GrpoStepStats,
    problems: &[TaskExample],
    completions: &[Completion],
    reports: &[RewardReport],
) -> GrpoStepReport {
    let n = reports.len().max(1) as f64;
    let languages: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.language.as_ref().map(|l| l.share as f64))
        .collect();
    GrpoStepReport {
        learner: stats,
        accuracy: reports
            .iter()
            .map(|r| r.accuracy.reward as f64)
            .sum::<f64>()
            / n,
        format: reports.iter().map(|r| r.format.reward as f64).sum::<f64>() / n,
        language: if languages.is_empty() {
            0.0
        } else {
            languages.iter().sum::<f64>() / languages.len() as f64
        },
        reflection_rate: completions
            .iter()
            .filter(|c| c.text.as_deref().is_some_and(reflects))
            .count() as f64
            / n,
        sample: completions.first().zip(reports.first()).map(|(c, r)| {
            (
                problems[c.request].prompt.clone(),
                c.text.clone().unwrap_or_default(),
                r.total,
            )
        }),
    }
}

/// One GRPO step on `problems` (each sampled `learner.config.group_size` times). `seed` makes the
/// step's sampling reproducible (a stage passes its seed and the step number).
pub fn grpo_step(
    learner: &mut GrpoLearner,
    tokenizer: &Tokenizer,
    problems: &[TaskExample],
    settings: &StageSettings,
    seed: u64,
) -> Result<GrpoStepReport, StageError> {
    let g = learner.config.group_size;
    let sampling = sampling_for(settings, tokenizer);
    let Judged {
        prompts,
        completions,
        reports,
    } = sample_and_judge(
        &learner.policy,
        tokenizer,
        problems,
        settings,
        sampling,
        g,
        seed,
    )?;
    let stats = learner.step(&rollouts(&prompts, &completions, &reports))?;
    Ok(step_report(stats, problems, &completions, &reports))
}

/// pass@1 over `k` samples and cons@k of `model` on `problems`, with the stage's template and
/// rules; `sampling` is the evaluation's (the paper: temperature 0.6, top-p 0.95; or greedy).
pub fn evaluate(
    model: &Model,
    tokenizer: &Tokenizer,
    problems: &[TaskExample],
    settings: &StageSettings,
    sampling: SamplingParams,
    k: usize,
    seed: u64,
) -> Result<StageEval, StageError> {
    let sampling = sampling_for(
        &StageSettings {
            sampling,
            ..settings.clone()
        },
        tokenizer,
    );
    let Judged {
        completions,
        reports,
        ..
    } = sample_and_judge(model, tokenizer, problems, settings, sampling, k, seed)?;
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
    Ok(StageEval {
        scores: score(&per_problem, equivalent),
        format_rate: formatted as f64 / n,
        mean_length: tokens as f64 / n,
        truncated_rate: truncated as f64 / n,
    })
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
