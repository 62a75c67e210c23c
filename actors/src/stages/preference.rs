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

use r1_kernels::sample::Completion;
use r1_kernels::tokenizer::Tokenizer;

use crate::judge::reward::{RewardItem, RewardReport};
use crate::judge::tasks::TaskExample;
use crate::learner::GrpoStepStats;
use crate::reward_model::RewardModelScorer;
use crate::stages::grpo::{mean_std, reflects, step_report, GrpoStepReport, StageSettings};
use crate::stages::problem::{PromptProblem, StageProblem};

pub use crate::reward_normaliser::{Normalisation, RewardNormaliser};

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
}
