//! The preference-RL stage (the paper's last RL stage): GRPO over a mix of reasoning prompts,
//! rewarded by the rule judge (accuracy + format), and general prompts, rewarded by reward models.
//!
//! Which prompt gets which reward: a [`StagePrompt::Reasoning`] prompt (a task with a verifiable
//! answer) gets the rule rewards only; a [`StagePrompt::General`] prompt gets the weighted sum of
//! the reward models. Each model sees the user prompt and one [`ResponseView`] of the completion:
//! `summary` — the text after the last `</think>` (the paper's helpfulness model judges only the
//! final summary, so long reasoning is not rewarded for itself; a completion with no `</think>` has
//! an empty summary) — or `whole` (harmlessness: the reasoning too). End-of-turn markers are
//! stripped from the end first.
//!
//! Normalisation: each model's raw scores are z-scored (per batch, or against running moments)
//! before weighting, so models on different scales mix by their weights and a model's offset does
//! not matter. Preference rewards switch on at `preference_from_step` (the paper: only the last
//! part of the stage, as longer invites reward hacking). Before that, general prompts are still
//! sampled and scored (so the preference curve has a start), but their reward is 0 for every
//! completion: their groups carry no advantage and only reasoning prompts train.
//!
//! "Decided": for each general group, the model whose weighted, normalised contribution varies the
//! most inside the group (largest std) decided that group's ranking; a model's share is the
//! fraction of general groups it decided.

pub mod demo;

use serde::{Deserialize, Serialize};

use std::time::Instant;

use r1_kernels::sample::{Completion, FinishReason, Sampler};
use r1_kernels::tokenizer::Tokenizer;

use crate::judge::reward::{CodeSandbox, RewardItem, RewardReport};
use crate::judge::tasks::TaskExample;
use crate::learner::{GrpoLearner, GrpoStepStats, Rollout};
use crate::reward_model::RewardModelScorer;
use crate::stages::grpo::{
    group_requests, judge_completions, mean_std, reflects, sampling_for, stage_rules, step_report,
    GrpoStepReport, PhaseSeconds, StageError, StageSettings,
};
use crate::stages::problem::{PromptProblem, StageProblem};

/// One prompt of the stage and the kind of reward it gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StagePrompt {
    /// A problem with a verifiable answer (or tests): rule rewards.
    Reasoning(StageProblem),
    /// A general request: reward models.
    General {
        /// The user's request.
        prompt: String,
    },
}

impl StagePrompt {
    /// A built-in task problem as a reasoning prompt (judged as the task itself would be).
    pub fn task(example: &TaskExample) -> Self {
        StagePrompt::Reasoning(StageProblem::from_task(example, 0))
    }

    /// The user turn.
    pub fn text(&self) -> &str {
        match self {
            StagePrompt::Reasoning(p) => &p.prompt,
            StagePrompt::General { prompt } => prompt,
        }
    }
}

/// Reasoning prompts are judged as their problem; a general prompt's reward item carries only the
/// prompt (the stage never sends it to the rule judge: the reward models score it).
impl PromptProblem for StagePrompt {
    fn prompt(&self) -> &str {
        self.text()
    }

    fn reward_item(&self, completion: String) -> RewardItem {
        match self {
            StagePrompt::Reasoning(p) => p.reward_item(completion),
            StagePrompt::General { prompt } => RewardItem {
                completion,
                answer: None,
                task: None,
                language: None,
                prompt: Some(prompt.clone()),
                tests: None,
                extract: None,
                format: None,
                problem: None,
                numbers: None,
                target: None,
            },
        }
    }

    fn source(&self) -> usize {
        match self {
            StagePrompt::Reasoning(p) => p.source,
            StagePrompt::General { .. } => 0,
        }
    }
}

/// Which part of a completion a reward model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseView {
    /// The text after the last `</think>` (empty without one).
    Summary,
    /// The whole completion, reasoning included.
    Whole,
}

/// How each reward model's raw scores are normalised before weighting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Normalisation {
    /// Raw scores.
    None,
    /// z-score over this step's general completions.
    Batch,
    /// z-score against exponential moving moments (`momentum` of the old moments kept per step).
    Running {
        /// In [0, 1): 0 is per-batch, 0.9 remembers about ten steps.
        momentum: f64,
    },
}

/// One reward model as the stage uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardModelUse {
    /// A name for metrics and logs (`helpfulness`, `harmlessness`).
    pub name: String,
    /// What part of the completion it reads.
    pub view: ResponseView,
    /// Its weight in the general prompts' reward (after normalisation).
    pub weight: f64,
}

/// How the preference stage samples and rewards (the learner has its own config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceSettings {
    /// Template, sampling (the paper: temperature 0.7), rule rewards, decode batch.
    pub stage: StageSettings,
    /// The reward models, in the order their scorers are passed.
    pub reward_models: Vec<RewardModelUse>,
    /// Normalisation of each model's scores.
    pub normalisation: Normalisation,
    /// First step (0-based) at which preference rewards count.
    pub preference_from_step: u64,
}

impl PreferenceSettings {
    /// Names the first unusable setting.
    pub fn validate(&self) -> Result<(), String> {
        if let Normalisation::Running { momentum } = self.normalisation {
            if !(0.0..1.0).contains(&momentum) {
                return Err(format!(
                    "normalisation.momentum = {momentum}: must be in [0, 1)"
                ));
            }
        }
        for (i, m) in self.reward_models.iter().enumerate() {
            if !m.weight.is_finite() {
                return Err(format!(
                    "reward_models[{i}] ({}).weight is not finite",
                    m.name
                ));
            }
        }
        self.stage.sampling.validate()
    }
}

/// Anything that scores (prompt, response) pairs: the reward-model scorer, or its actor's client.
pub trait ResponseScorer {
    /// One score per item, in order.
    fn score(&self, items: &[(String, String)]) -> Result<Vec<f32>, String>;
}

impl ResponseScorer for RewardModelScorer {
    fn score(&self, items: &[(String, String)]) -> Result<Vec<f32>, String> {
        RewardModelScorer::score(self, items).map_err(|e| e.to_string())
    }
}

/// Running (or per-batch) moments of each reward model's scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardNormaliser {
    /// (mean, variance) per model, `None` before its first batch.
    moments: Vec<Option<(f64, f64)>>,
}

impl RewardNormaliser {
    /// Normalises model `m`'s raw scores of one step.
    pub fn normalise(&mut self, how: Normalisation, m: usize, raw: &[f32]) -> Vec<f64> {
        let n = raw.len().max(1) as f64;
        let mean = raw.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = raw.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let (mean, var) = match how {
            Normalisation::None => return raw.iter().map(|&x| x as f64).collect(),
            Normalisation::Batch => (mean, var),
            Normalisation::Running { momentum } => {
                if self.moments.len() <= m {
                    self.moments.resize(m + 1, None);
                }
                let next = match self.moments[m] {
                    None => (mean, var),
                    Some((om, ov)) => (
                        momentum * om + (1.0 - momentum) * mean,
                        momentum * ov + (1.0 - momentum) * var,
                    ),
                };
                self.moments[m] = Some(next);
                next
            }
        };
        let std = var.sqrt().max(1e-6);
        raw.iter().map(|&x| (x as f64 - mean) / std).collect()
    }
}

/// The part of `completion` a model reads: end-of-turn `markers` stripped from its end, then the
/// summary after the last `</think>` (empty without one) or the whole text.
pub fn response_view(completion: &str, view: ResponseView, markers: &[String]) -> String {
    let mut text = completion.trim_end();
    while let Some(m) = markers
        .iter()
        .find(|m| !m.is_empty() && text.ends_with(m.as_str()))
    {
        text = text[..text.len() - m.len()].trim_end();
    }
    match view {
        ResponseView::Whole => text.to_string(),
        ResponseView::Summary => text.rfind("</think>").map_or(String::new(), |at| {
            text[at + "</think>".len()..].trim().to_string()
        }),
    }
}

/// One reward model's numbers in a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardModelStats {
    /// The model's name.
    pub name: String,
    /// Mean raw score over the general completions.
    pub mean: f64,
    /// Population std of the raw scores.
    pub std: f64,
    /// Share of general groups this model decided.
    pub decided_share: f64,
}

/// Strings that end a turn, stripped before a reward model reads a completion.
pub fn end_markers(settings: &StageSettings, tokenizer: &Tokenizer) -> Vec<String> {
    let mut markers: Vec<String> = settings
        .template
        .end_of_turn()
        .map(str::to_string)
        .into_iter()
        .collect();
    for &id in tokenizer.eos_ids() {
        if let Ok(text) = tokenizer.decode(&[id], false) {
            markers.push(text);
        }
    }
    markers
}

/// The prompts of step `step` (0-based): `n_reasoning` reasoning problems from cursor
/// `step × n_reasoning`, then `n_general` general prompts from cursor `step × n_general`, each
/// pool taken in order and cycled. An empty pool contributes nothing.
pub fn step_prompts(
    reasoning: &[StageProblem],
    general: &[String],
    n_reasoning: usize,
    n_general: usize,
    step: u64,
) -> Vec<StagePrompt> {
    let take = |len: usize, n: usize| {
        let start = if len == 0 {
            0
        } else {
            (step as usize).wrapping_mul(n) % len
        };
        (0..if len == 0 { 0 } else { n }).map(move |i| (start + i) % len)
    };
    take(reasoning.len(), n_reasoning)
        .map(|i| StagePrompt::Reasoning(reasoning[i].clone()))
        .chain(
            take(general.len(), n_general).map(|i| StagePrompt::General {
                prompt: general[i].clone(),
            }),
        )
        .collect()
}

/// Indices of the completions of reasoning prompts (judged by the rules) and of general prompts
/// (scored by the reward models).
pub fn split_by_kind(
    prompts: &[StagePrompt],
    completions: &[Completion],
) -> (Vec<usize>, Vec<usize>) {
    (0..completions.len())
        .partition(|&k| matches!(prompts[completions[k].request], StagePrompt::Reasoning(_)))
}

/// What one reward model reads of each general completion: (user prompt, its view).
pub fn model_items(
    prompts: &[StagePrompt],
    completions: &[Completion],
    general: &[usize],
    view: ResponseView,
    markers: &[String],
) -> Vec<(String, String)> {
    general
        .iter()
        .map(|&k| {
            let c = &completions[k];
            (
                prompts[c.request].text().to_string(),
                response_view(c.text.as_deref().unwrap_or_default(), view, markers),
            )
        })
        .collect()
}

/// What the preference part of a step did (beside the learner's statistics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceStats {
    /// Whether preference rewards counted in this step.
    pub preference_on: bool,
    /// Mean accuracy reward over reasoning completions (0 without reasoning prompts).
    pub rule_accuracy: f64,
    /// Mean format reward over reasoning completions.
    pub rule_format: f64,
    /// Per reward model, over general completions.
    pub reward_models: Vec<RewardModelStats>,
    /// Mean weighted preference reward of general completions with raw (unnormalised) scores:
    /// the curve that should rise (0 without general prompts).
    pub preference_reward: f64,
    /// Groups of reasoning prompts.
    pub reasoning_groups: usize,
    /// Groups of general prompts.
    pub general_groups: usize,
}

/// The step's rewards, one per completion, and what they were made of.
#[derive(Debug, Clone, PartialEq)]
pub struct CombinedRewards {
    /// The reward each completion trains on.
    pub rewards: Vec<f64>,
    /// The step's preference statistics.
    pub stats: PreferenceStats,
}

/// Combines the rule reports of the reasoning completions (`rule`, aligned with `reasoning`) and
/// each reward model's raw scores of the general completions (`raw[m]`, aligned with `general`;
/// `None` when the model did not answer: it contributes nothing this step) into one reward per
/// completion. `n` is the number of completions and `g` the group size.
#[allow(clippy::too_many_arguments)]
pub fn combine_rewards(
    settings: &PreferenceSettings,
    n: usize,
    g: usize,
    reasoning: &[usize],
    rule: &[RewardReport],
    general: &[usize],
    raw: &[Option<Vec<f32>>],
    normaliser: &mut RewardNormaliser,
    step: u64,
) -> Result<CombinedRewards, String> {
    let g = g.max(1);
    let mut rewards = vec![0f64; n];
    for (&k, report) in reasoning.iter().zip(rule) {
        rewards[k] = report.total as f64;
    }
    let column = |f: fn(&RewardReport) -> f32| {
        if rule.is_empty() {
            0.0
        } else {
            rule.iter().map(|r| f(r) as f64).sum::<f64>() / rule.len() as f64
        }
    };
    let preference_on = step >= settings.preference_from_step;
    let mut contributions: Vec<Vec<f64>> = Vec::new();
    let mut model_stats = Vec::new();
    let mut preference_reward = vec![0f64; general.len()];
    for (m, use_) in settings.reward_models.iter().enumerate() {
        let scores = match raw.get(m) {
            Some(Some(scores)) if !general.is_empty() => scores,
            _ => {
                model_stats.push(RewardModelStats {
                    name: use_.name.clone(),
                    mean: 0.0,
                    std: 0.0,
                    decided_share: 0.0,
                });
                contributions.push(vec![0.0; general.len()]);
                continue;
            }
        };
        if scores.len() != general.len() {
            return Err(format!(
                "reward model `{}` returned {} scores for {} responses",
                use_.name,
                scores.len(),
                general.len()
            ));
        }
        if let Some(bad) = scores.iter().find(|r| !r.is_finite()) {
            return Err(format!("reward model `{}` returned {bad}", use_.name));
        }
        let raw64: Vec<f64> = scores.iter().map(|&x| x as f64).collect();
        let (mean, std) = mean_std(&raw64);
        for (p, r) in preference_reward.iter_mut().zip(&raw64) {
            *p += use_.weight * r;
        }
        let normed = normaliser.normalise(settings.normalisation, m, scores);
        contributions.push(normed.iter().map(|x| use_.weight * x).collect());
        model_stats.push(RewardModelStats {
            name: use_.name.clone(),
            mean,
            std,
            decided_share: 0.0,
        });
    }
    if preference_on {
        for (j, &k) in general.iter().enumerate() {
            rewards[k] = contributions.iter().map(|c| c[j]).sum();
        }
    }
    // Which model decided each general group.
    let general_groups = general.len() / g;
    for grp in 0..general_groups {
        let spread: Vec<f64> = contributions
            .iter()
            .map(|c| mean_std(&c[grp * g..(grp + 1) * g]).1)
            .collect();
        if let Some((m, &s)) = spread.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) {
            if s > 1e-9 {
                model_stats[m].decided_share += 1.0 / general_groups as f64;
            }
        }
    }
    Ok(CombinedRewards {
        rewards,
        stats: PreferenceStats {
            preference_on,
            rule_accuracy: column(|r| r.accuracy.reward),
            rule_format: column(|r| r.format.reward),
            reward_models: model_stats,
            preference_reward: if general.is_empty() {
                0.0
            } else {
                mean_std(&preference_reward).0
            },
            reasoning_groups: reasoning.len() / g,
            general_groups,
        },
    })
}

/// The learner's view of the step: (prompt, completion, combined reward, truncated).
pub fn preference_rollouts(
    prompt_ids: &[Vec<u32>],
    completions: &[Completion],
    rewards: &[f64],
) -> Vec<Rollout> {
    completions
        .iter()
        .zip(rewards)
        .map(|(c, &reward)| Rollout {
            prompt_ids: prompt_ids[c.request].clone(),
            completion_ids: c.token_ids.clone(),
            reward,
            truncated: c.finish == FinishReason::Length,
        })
        .collect()
}

/// The GRPO step report of a preference step: the learner's statistics over every completion,
/// accuracy, format and the other rule components over the reasoning completions (`rule`,
/// aligned with `reasoning`), reflection and tokens over every completion.
pub fn preference_report(
    learner: GrpoStepStats,
    prompts: &[StagePrompt],
    completions: &[Completion],
    reasoning: &[usize],
    rule: &[RewardReport],
) -> GrpoStepReport {
    let judged: Vec<Completion> = reasoning.iter().map(|&k| completions[k].clone()).collect();
    let mut report = step_report(learner, prompts, &judged, rule);
    let n = completions.len().max(1) as f64;
    report.reflection_rate = completions
        .iter()
        .filter(|c| c.text.as_deref().is_some_and(reflects))
        .count() as f64
        / n;
    report.tokens_generated = completions.iter().map(|c| c.token_ids.len()).sum();
    if report.sample.is_none() {
        report.sample = completions.first().map(|c| {
            (
                prompts[c.request].text().to_string(),
                c.text.clone().unwrap_or_default(),
                0.0,
            )
        });
    }
    report
}

/// What one preference step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceStepReport {
    /// The GRPO report (learner statistics; rule components over reasoning completions).
    pub report: GrpoStepReport,
    /// The preference part.
    pub stats: PreferenceStats,
}

/// One preference-RL step: sample `learner.config.group_size` completions of every prompt, reward
/// reasoning prompts by the rules (code in `sandbox`) and general prompts by the reward models
/// (`scorers`, aligned with `settings.reward_models`), and take one GRPO step. `step` decides
/// whether preference rewards count; `seed` makes sampling reproducible.
#[allow(clippy::too_many_arguments)]
pub fn preference_step(
    learner: &mut GrpoLearner,
    tokenizer: &Tokenizer,
    sandbox: &CodeSandbox,
    prompts: &[StagePrompt],
    settings: &PreferenceSettings,
    scorers: &[&dyn ResponseScorer],
    normaliser: &mut RewardNormaliser,
    step: u64,
    seed: u64,
) -> Result<PreferenceStepReport, StageError> {
    let judge_error = |message: String| StageError::Judge {
        problem: 0,
        message,
    };
    if scorers.len() != settings.reward_models.len() {
        return Err(judge_error(format!(
            "{} reward-model scorers for {} configured reward models",
            scorers.len(),
            settings.reward_models.len()
        )));
    }
    let g = learner.config.group_size.max(1);
    let stage = &settings.stage;
    let mut phases = PhaseSeconds::default();
    let began = Instant::now();
    let sampling = sampling_for(stage, tokenizer);
    let batch = group_requests(prompts, stage, tokenizer, &sampling, g, seed)?;
    let mut completions: Vec<Completion> = Sampler::new(&learner.policy, stage.max_batch)
        .generate(&batch.requests, Some(tokenizer))?;
    // Groups must be consecutive for the learner.
    completions.sort_by_key(|c| (c.request, c.sample));
    phases.sample = began.elapsed().as_secs_f64();

    let began = Instant::now();
    let (reasoning, general) = split_by_kind(prompts, &completions);
    let judged: Vec<Completion> = reasoning.iter().map(|&k| completions[k].clone()).collect();
    let rules = stage_rules(stage, batch.prefilled_think);
    let rule = judge_completions(prompts, &judged, &rules, sandbox)?;
    let markers = end_markers(stage, tokenizer);
    let mut raw = Vec::new();
    for (use_, scorer) in settings.reward_models.iter().zip(scorers) {
        if general.is_empty() {
            raw.push(None);
            continue;
        }
        let items = model_items(prompts, &completions, &general, use_.view, &markers);
        let scores = scorer
            .score(&items)
            .map_err(|message| judge_error(format!("reward model `{}`: {message}", use_.name)))?;
        raw.push(Some(scores));
    }
    let combined = combine_rewards(
        settings,
        completions.len(),
        g,
        &reasoning,
        &rule,
        &general,
        &raw,
        normaliser,
        step,
    )
    .map_err(judge_error)?;
    phases.judge = began.elapsed().as_secs_f64();

    let began = Instant::now();
    let rollouts = preference_rollouts(&batch.prompts, &completions, &combined.rewards);
    let learner_stats = learner.step(&rollouts)?;
    phases.learn = began.elapsed().as_secs_f64();
    let mut report = preference_report(learner_stats, prompts, &completions, &reasoning, &rule);
    report.phases = phases;
    Ok(PreferenceStepReport {
        report,
        stats: combined.stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_cut_the_summary_and_strip_end_markers() {
        let markers = vec!["<|im_end|>".to_string(), "<|eos|>".to_string()];
        let text = "<think>plan</think> Thanks! <|im_end|>";
        assert_eq!(
            response_view(text, ResponseView::Summary, &markers),
            "Thanks!"
        );
        assert_eq!(
            response_view(text, ResponseView::Whole, &markers),
            "<think>plan</think> Thanks!"
        );
        assert_eq!(
            response_view("<think>a</think>x</think>y", ResponseView::Summary, &[]),
            "y"
        );
        assert_eq!(
            response_view("no reasoning block", ResponseView::Summary, &markers),
            ""
        );
    }

    #[test]
    fn normalisation_z_scores_per_batch_and_remembers_when_running() {
        let mut n = RewardNormaliser::default();
        let z = n.normalise(Normalisation::Batch, 0, &[1.0, 3.0]);
        assert_eq!(z, vec![-1.0, 1.0]);
        let raw = n.normalise(Normalisation::None, 0, &[1.0, 3.0]);
        assert_eq!(raw, vec![1.0, 3.0]);
        let running = Normalisation::Running { momentum: 0.5 };
        let first = n.normalise(running, 1, &[1.0, 3.0]);
        assert_eq!(first, vec![-1.0, 1.0]);
        // Moments now (2, 1); the next batch (mean 12, var 4) moves them to (7, 2.5).
        let second = n.normalise(running, 1, &[10.0, 14.0]);
        let std = 2.5f64.sqrt();
        assert!((second[0] - (10.0 - 7.0) / std).abs() < 1e-12);
        assert!((second[1] - (14.0 - 7.0) / std).abs() < 1e-12);
    }
}
