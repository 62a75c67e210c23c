//! The preference-RL stage as a whole run (`run.stage = "preference"`): its job (`PreferenceJob`)
//! becomes an `RlPlan` with the reward models loaded, and `stages::rl::run_rl` loads the policy
//! (or resumes from the newest good checkpoint), loops `rl_step` over the reasoning problems of
//! `[data]` mixed with the general prompts of `[preference]`, checkpoints every `every_steps`;
//! in-process (`run_preference`) the final policy is saved in `<output_dir>/final`.
//!
//! Each step takes `prompts_per_step` prompts: `round(prompts_per_step × general_share)` general
//! ones and the rest reasoning ones, each pool in order and cycled from cursor `step × n` (see
//! `preference::step_prompts`). Exact resume: sampling seeds derive from (seed, step), the prompts from the
//! step, and the running moments of the reward normaliser are saved in every checkpoint, so a
//! run stopped at any point and started again ends with the same weights as one that never
//! stopped.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use r1_kernels::sample::SamplingParams;

use crate::data::{load_prompts, DataSource};
use crate::judge::reward::{CodeSandbox, RewardRules};
use crate::judge::sandbox::SandboxConfig;
use crate::judge::tasks::Split;
use crate::learner::LearnerConfig;
use crate::reward_model::RewardModelScorer;
use crate::stages::grpo::StageSettings;
use crate::stages::grpo_stage::{GrpoLoopConfig, GrpoRunReport};
use crate::stages::job::announce_placement;
use crate::stages::job::{ModelSpec, RunError, RunSpec, StageEvent};
use crate::stages::preference::{Normalisation, PreferenceSettings, ResponseView, RewardModelUse};
use crate::stages::rl::{PreferencePlan, RlPlan, REWARD_TIMEOUT, SAMPLES_PER_STEP};
use crate::stages::rl_local::run_in_process;

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

impl PreferenceJob {
    /// The run's plan: tokenizer, reasoning problems, general prompts and reward models loaded
    /// (each model announced to `progress`). Errors name the key under `[preference]` and the
    /// file or directory. `r1ctl train` and r1d both start a preference run from this.
    pub fn plan(&self, progress: &mut dyn FnMut(StageEvent)) -> Result<RlPlan, RunError> {
        let settings = self.settings();
        settings
            .validate()
            .map_err(|e| RunError::Invalid(format!("preference: {e}")))?;
        let placement = announce_placement(&self.run, progress)?;
        let tokenizer = self.model.tokenizer()?;
        let (n_reasoning, n_general) = self.split();
        let reasoning = if n_reasoning > 0 {
            self.data.problems(self.run.seed, Split::Train)?
        } else {
            Vec::new()
        };
        if n_reasoning > 0 && reasoning.is_empty() {
            return Err(RunError::Invalid(format!(
                "data {}: no problems",
                self.data.name()
            )));
        }
        let general = if n_general > 0 {
            self.general
                .load()
                .map_err(|e| RunError::Invalid(format!("preference.general_prompts: {e}")))?
        } else {
            Vec::new()
        };
        let scorers = self
            .reward_models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let scorer = m
                    .load()
                    .map_err(|e| RunError::Invalid(format!("preference.reward_models[{i}]: {e}")))?
                    .on(placement.reward_models);
                progress(StageEvent::Note {
                    message: format!(
                        "reward model `{}`: {} ({} parameters), reads the {}",
                        m.name,
                        m.path.display(),
                        scorer.rm().model.params.len(),
                        match m.view {
                            ResponseView::Summary => "summary after </think>",
                            ResponseView::Whole => "whole response",
                        }
                    ),
                });
                Ok(scorer)
            })
            .collect::<Result<Vec<_>, RunError>>()?;
        Ok(RlPlan {
            run: self.run.clone(),
            model: self.model.clone(),
            tokenizer: Arc::new(tokenizer),
            problems: Arc::new(reasoning),
            settings: settings.stage.clone(),
            learner: self.learner.clone(),
            steps: self.grpo.steps,
            prompts_per_step: self.grpo.prompts_per_step,
            dynamic_sampling: 0,
            samples_per_step: SAMPLES_PER_STEP,
            reward_timeout: REWARD_TIMEOUT,
            sandbox: Arc::new(CodeSandbox::lazy(SandboxConfig::default())),
            placement,
            preference: Some(Arc::new(PreferencePlan {
                settings,
                scorers: Arc::new(scorers),
                general,
                n_reasoning,
                n_general,
            })),
        })
    }
}

/// Runs (or continues) the preference stage in-process; see the module doc.
pub fn run_preference(
    job: &PreferenceJob,
    progress: &mut dyn FnMut(StageEvent),
    stop: &AtomicBool,
) -> Result<GrpoRunReport, RunError> {
    let plan = job.plan(progress)?;
    run_in_process(&plan, progress, stop)
}
