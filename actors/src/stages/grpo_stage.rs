//! The GRPO stage as a whole run: its job (`GrpoJob`, from the job config) becomes an
//! `RlPlan`, and `stages::rl::run_rl` loads the model (or resumes from the newest good
//! checkpoint), loops `rl_step` over the data stream, checkpoints every `every_steps`; in-process
//! (`run_grpo`) the final policy is saved as a model directory in `<output_dir>/final`.
//!
//! Exact resume: a step's sampling seed derives from (seed, step) and its prompts from the data
//! cursor, which advances by the prompts each step consumed (more than `prompts_per_step` when
//! dynamic sampling resampled) and is saved in every checkpoint. A run stopped at any point and
//! started again ends with the same weights as one that never stopped.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use r1_kernels::sample::SamplingParams;

use crate::data::DataSource;
use crate::judge::reward::{CodeSandbox, RewardRules};
use crate::judge::sandbox::SandboxConfig;
use crate::judge::tasks::Split;
use crate::learner::LearnerConfig;
use crate::stages::grpo::StageSettings;
use crate::stages::job::{ModelSpec, RunError, RunSpec, StageEvent};
use crate::stages::problem::StageProblem;
use crate::stages::rl::{RlPlan, REWARD_TIMEOUT, SAMPLES_PER_STEP};
use crate::stages::rl_local::run_in_process;
pub use crate::stages::rl_local::GrpoRunReport;

/// The GRPO loop around the learner (the job config's `[grpo]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoLoopConfig {
    /// GRPO steps.
    pub steps: u64,
    /// Prompts per step (each sampled `learner.group_size` times).
    pub prompts_per_step: usize,
    /// Most sequences decoded at once.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Dynamic sampling (DAPO): at most this many extra sampling rounds per step replace groups
    /// whose rewards are all equal with fresh prompts; 0 (the default) turns it off.
    #[serde(default)]
    pub dynamic_sampling: usize,
}

fn default_max_batch() -> usize {
    64
}

/// Everything the GRPO stage needs.
#[derive(Debug, Clone)]
pub struct GrpoJob {
    /// Seed, output, checkpoints.
    pub run: RunSpec,
    /// The starting model.
    pub model: ModelSpec,
    /// The prompts (each problem needs an answer or tests).
    pub data: DataSource,
    /// Rollout sampling.
    pub sampling: SamplingParams,
    /// Reward rules.
    pub rules: RewardRules,
    /// The learner.
    pub learner: LearnerConfig,
    /// The loop.
    pub grpo: GrpoLoopConfig,
}

impl GrpoJob {
    /// The run's plan: tokenizer and training problems read, the sampling and reward settings
    /// resolved. `r1ctl train` and r1d both start a GRPO run from this.
    pub fn plan(&self) -> Result<RlPlan, RunError> {
        let placement = self.run.placement()?;
        let tokenizer = self.model.tokenizer()?;
        let problems: Vec<StageProblem> = self.data.problems(self.run.seed, Split::Train)?;
        if problems.is_empty() {
            return Err(RunError::Invalid(format!(
                "data {}: no problems",
                self.data.name()
            )));
        }
        Ok(RlPlan {
            run: self.run.clone(),
            model: self.model.clone(),
            tokenizer: Arc::new(tokenizer),
            problems: Arc::new(problems),
            settings: StageSettings {
                template: self.model.template,
                sampling: self.sampling.clone(),
                rules: self.rules,
                max_batch: self.grpo.max_batch,
            },
            learner: self.learner.clone(),
            steps: self.grpo.steps,
            prompts_per_step: self.grpo.prompts_per_step,
            dynamic_sampling: self.grpo.dynamic_sampling,
            samples_per_step: SAMPLES_PER_STEP,
            reward_timeout: REWARD_TIMEOUT,
            // Started by the first code item; built-in tasks and math sets never start it.
            sandbox: Arc::new(CodeSandbox::lazy(SandboxConfig::default())),
            placement,
            preference: None,
        })
    }
}

/// Runs (or continues) the GRPO stage in-process; see the module doc.
pub fn run_grpo(
    job: &GrpoJob,
    progress: &mut dyn FnMut(StageEvent),
    stop: &AtomicBool,
) -> Result<GrpoRunReport, RunError> {
    let plan = job.plan()?;
    for note in &plan.placement.notes {
        progress(StageEvent::Note {
            message: note.clone(),
        });
    }
    run_in_process(&plan, progress, stop)
}
