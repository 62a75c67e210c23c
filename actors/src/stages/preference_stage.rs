//! The preference-RL stage as a whole run (`run.stage = "preference"`): load the policy (or
//! resume from the newest good checkpoint) and the reward models, loop [`preference_step`] over
//! the reasoning problems of `[data]` mixed with the general prompts of `[preference]`, checkpoint
//! every `every_steps`, save the final policy in `<output_dir>/final`.
//!
//! Each step takes `prompts_per_step` prompts: `round(prompts_per_step × general_share)` general
//! ones and the rest reasoning ones, each pool in order and cycled from cursor `step × n` (see
//! [`step_prompts`]). Exact resume: sampling seeds derive from (seed, step), the prompts from the
//! step, and the running moments of the reward normaliser are saved in every checkpoint, so a
//! run stopped at any point and started again ends with the same weights as one that never
//! stopped.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use r1_kernels::sample::SamplingParams;

use crate::data::{load_prompts, DataSource};
use crate::judge::reward::{CodeSandbox, RewardRules};
use crate::judge::sandbox::SandboxConfig;
use crate::judge::tasks::Split;
use crate::keeper::TrainerState;
use crate::learner::{GrpoLearner, LearnerConfig};
use crate::reward_model::RewardModelScorer;
use crate::stages::grpo::StageSettings;
use crate::stages::grpo_stage::{GrpoLoopConfig, GrpoRunReport};
use crate::stages::job::{
    resume_point, stop_requested, write_checkpoint, write_final, ModelSpec, RunError, RunSpec,
    StageEvent,
};
use crate::stages::preference::{
    preference_step, step_prompts, Normalisation, PreferenceSettings, ResponseScorer, ResponseView,
    RewardModelUse, RewardNormaliser,
};

/// One reward model of the stage: where it is and how its scores are used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardModelSpec {
    /// A name for metrics and logs (`helpfulness`).
    pub name: String,
    /// Its directory (Qwen2/LlamaForSequenceClassification).
    pub path: PathBuf,
    /// `Some("byte")` for r1's byte tokenizer; `None`: the directory's tokenizer.json.
    pub tokenizer: Option<String>,
    /// What part of each completion it reads.
    pub view: ResponseView,
    /// Its weight after normalisation.
    pub weight: f64,
    /// Most sequences per forward pass.
    pub max_batch: usize,
    /// Longest scored sequence in tokens (longer ones keep their end).
    pub max_tokens: usize,
}

impl RewardModelSpec {
    /// Loads the model; the error names it and its directory.
    pub fn load(&self) -> Result<RewardModelScorer, RunError> {
        RewardModelScorer::load(
            &self.path,
            self.tokenizer.as_deref(),
            self.max_batch,
            self.max_tokens,
        )
        .map_err(|e| {
            RunError::Invalid(format!(
                "reward model `{}` ({}): {e}",
                self.name,
                self.path.display()
            ))
        })
    }
}

/// Where the general prompts are: a JSONL or Parquet file and the field holding each prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneralPrompts {
    /// The file (`.parquet` is read as Parquet, anything else as JSONL).
    pub path: PathBuf,
    /// The dotted key of the prompt.
    pub field: String,
}

impl GeneralPrompts {
    /// Every prompt of the file.
    pub fn load(&self) -> Result<Vec<String>, RunError> {
        Ok(load_prompts(&self.path, &self.field)?)
    }
}

/// Everything the preference stage needs.
#[derive(Debug, Clone)]
pub struct PreferenceJob {
    /// Seed, output, checkpoints.
    pub run: RunSpec,
    /// The starting policy.
    pub model: ModelSpec,
    /// The reasoning problems (rule rewards).
    pub data: DataSource,
    /// The general prompts (reward models).
    pub general: GeneralPrompts,
    /// Rollout sampling (the paper: temperature 0.7).
    pub sampling: SamplingParams,
    /// Rule rewards of reasoning prompts.
    pub rules: RewardRules,
    /// The learner.
    pub learner: LearnerConfig,
    /// Steps, prompts per step, decode batch (dynamic sampling is not used here).
    pub grpo: GrpoLoopConfig,
    /// The reward models.
    pub reward_models: Vec<RewardModelSpec>,
    /// How each model's scores are normalised.
    pub normalisation: Normalisation,
    /// First step (0-based) at which preference rewards count.
    pub preference_from_step: u64,
    /// Share of each step's prompts that are general.
    pub general_share: f64,
}

impl PreferenceJob {
    /// (reasoning, general) prompts per step.
    pub fn split(&self) -> (usize, usize) {
        split_prompts(self.grpo.prompts_per_step, self.general_share)
    }

    /// The step's sampling and reward settings.
    pub fn settings(&self) -> PreferenceSettings {
        PreferenceSettings {
            stage: StageSettings {
                template: self.model.template,
                sampling: self.sampling.clone(),
                rules: self.rules,
                max_batch: self.grpo.max_batch,
            },
            reward_models: self
                .reward_models
                .iter()
                .map(|m| RewardModelUse {
                    name: m.name.clone(),
                    view: m.view,
                    weight: m.weight,
                })
                .collect(),
            normalisation: self.normalisation,
            preference_from_step: self.preference_from_step,
        }
    }
}

/// (reasoning, general) prompts of a step of `prompts_per_step` with `general_share` general.
pub fn split_prompts(prompts_per_step: usize, general_share: f64) -> (usize, usize) {
    let general =
        ((prompts_per_step as f64 * general_share).round() as usize).min(prompts_per_step);
    (prompts_per_step - general, general)
}

/// Runs (or continues) the preference stage; see the module doc.
pub fn run_preference(
    job: &PreferenceJob,
    progress: &mut dyn FnMut(StageEvent),
    stop: &AtomicBool,
) -> Result<GrpoRunReport, RunError> {
    let settings = job.settings();
    settings.validate().map_err(RunError::Invalid)?;
    let tokenizer = job.model.tokenizer()?;
    let (n_reasoning, n_general) = job.split();
    let reasoning = if n_reasoning > 0 {
        job.data.problems(job.run.seed, Split::Train)?
    } else {
        Vec::new()
    };
    if n_reasoning > 0 && reasoning.is_empty() {
        return Err(RunError::Invalid(format!(
            "data {}: no problems",
            job.data.name()
        )));
    }
    let general = if n_general > 0 {
        job.general.load()?
    } else {
        Vec::new()
    };
    let scorers = job
        .reward_models
        .iter()
        .map(|m| {
            let scorer = m.load()?;
            progress(StageEvent::Note {
                message: format!(
                    "reward model `{}`: {} ({} parameters), reads the {}",
                    m.name,
                    m.path.display(),
                    scorer.rm.model.params.len(),
                    match m.view {
                        ResponseView::Summary => "summary after </think>",
                        ResponseView::Whole => "whole response",
                    }
                ),
            });
            Ok(scorer)
        })
        .collect::<Result<Vec<_>, RunError>>()?;
    let scorer_refs: Vec<&dyn ResponseScorer> =
        scorers.iter().map(|s| s as &dyn ResponseScorer).collect();

    let (mut learner, mut normaliser) = match resume_point(&job.run, progress)? {
        Some(checkpoint) => {
            let normaliser = checkpoint
                .state
                .reward_normaliser
                .clone()
                .unwrap_or_default();
            (
                GrpoLearner::resume(checkpoint, job.learner.clone()),
                normaliser,
            )
        }
        None => (
            GrpoLearner::new(job.model.load()?, job.learner.clone()),
            RewardNormaliser::default(),
        ),
    };
    let sandbox = CodeSandbox::lazy(SandboxConfig::default());
    let total = job
        .run
        .stop_at
        .unwrap_or(job.grpo.steps)
        .min(job.grpo.steps);
    let mut report = GrpoRunReport {
        steps: learner.step,
        stopped: false,
        last_reward: None,
        data_cursor: learner.step * n_reasoning as u64,
        checkpoint: None,
        final_model: None,
    };
    let save = |learner: &GrpoLearner,
                normaliser: &RewardNormaliser,
                progress: &mut dyn FnMut(StageEvent)| {
        let state = TrainerState {
            step: learner.step,
            optimizer_step: learner.optimizer_step,
            data_cursor: learner.step * n_reasoning as u64,
            seed: job.run.seed,
            config_hash: job.run.config_hash.clone(),
            reward_normaliser: Some(normaliser.clone()),
        };
        write_checkpoint(
            &job.run,
            &learner.policy,
            learner.reference.as_ref(),
            &learner.optimizer,
            &state,
            progress,
        )
    };
    let mut saved_at = learner.step;
    while learner.step < total {
        if stop_requested(stop) {
            report.stopped = true;
            break;
        }
        let step = learner.step;
        let prompts = step_prompts(&reasoning, &general, n_reasoning, n_general, step);
        let seed = job.run.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step;
        let step_report = preference_step(
            &mut learner,
            &tokenizer,
            &sandbox,
            &prompts,
            &settings,
            &scorer_refs,
            &mut normaliser,
            step,
            seed,
        )?;
        report.last_reward = Some(step_report.report.learner.reward_mean);
        progress(StageEvent::PreferenceStep {
            steps: total,
            report: Box::new(step_report),
        });
        if learner.step % job.run.checkpoint.every_steps == 0 || learner.step == total {
            report.checkpoint = Some(save(&learner, &normaliser, progress)?);
            saved_at = learner.step;
        }
    }
    if report.stopped && saved_at != learner.step {
        report.checkpoint = Some(save(&learner, &normaliser, progress)?);
    }
    report.steps = learner.step;
    report.data_cursor = learner.step * n_reasoning as u64;
    if !report.stopped && learner.step >= job.grpo.steps {
        report.final_model = Some(write_final(&job.run, &learner.policy)?);
    }
    Ok(report)
}
