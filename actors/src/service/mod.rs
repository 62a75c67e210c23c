//! The actors of a run (actix): a [`Director`] drives one GRPO stage (R1-Zero, reasoning RL, or
//! preference RL with reward models) through the Sampler, RewardJudge, LangScorer, reward-model
//! scorer, Learner and CheckpointKeeper, each on its own thread. The messages
//! are all in [`crate::messages`]. The numbers equal the in-process [`crate::stages::grpo_step`]
//! (and `preference::preference_step`) bit for bit: the director calls the same phase functions in the same order with the same
//! seeds.

mod director;
mod stage_worker;
mod workers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use director::Director;
pub use stage_worker::{StageOutcome, StageTask, StageWorker};
pub use workers::{
    JudgeActor, KeeperActor, LangActor, LearnerActor, RewardModelActor, SamplerActor,
};

use r1_kernels::tokenizer::Tokenizer;

use crate::judge::reward::CodeSandbox;
use crate::learner::LearnerConfig;
use crate::reward_model::RewardModelScorer;
use crate::stages::preference::{step_prompts, PreferenceSettings, StagePrompt};
use crate::stages::StageProblem;
use crate::stages::StageSettings;

/// What a preference-RL run adds to its plan: the reward models and the general prompts.
pub struct PreferencePlan {
    /// Reward models, normalisation, switch-on step (`settings.stage` equals the plan's).
    pub settings: PreferenceSettings,
    /// The loaded reward models, in `settings.reward_models` order.
    pub scorers: Arc<Vec<RewardModelScorer>>,
    /// The general prompts, taken in order, `n_general` per step, cycling.
    pub general: Vec<String>,
    /// Reasoning prompts per step (from the plan's problems).
    pub n_reasoning: usize,
    /// General prompts per step.
    pub n_general: usize,
}

/// Everything a director needs to run a GRPO stage, resolved from a job config.
#[derive(Clone)]
pub struct GrpoPlan {
    /// Run id (labels events).
    pub run: String,
    /// The starting model (HF directory).
    pub model_dir: PathBuf,
    /// Its tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The training prompts, taken in order, `prompts_per_step` per step, cycling.
    pub problems: Arc<Vec<StageProblem>>,
    /// Template, sampling, reward rules, decode batch.
    pub settings: StageSettings,
    /// The learner's settings (group size, minibatches, objective, schedule…).
    pub learner: LearnerConfig,
    /// Steps of the stage.
    pub steps: u64,
    /// Prompts per step.
    pub prompts_per_step: usize,
    /// Dynamic sampling (DAPO): at most this many extra rounds per step replace groups whose
    /// rewards are all equal with fresh prompts (0: off); the data cursor then advances by the
    /// prompts each step consumed and is saved in every checkpoint.
    pub dynamic_sampling: usize,
    /// The run's seed; step `s` samples with a seed derived from (seed, s).
    pub seed: u64,
    /// Where checkpoints go.
    pub checkpoint_root: PathBuf,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Most recent checkpoints kept.
    pub keep_last: usize,
    /// The best checkpoint by evaluation so far, kept besides the recent ones.
    pub best: Option<PathBuf>,
    /// Hash of the job config (refuses resuming under another config).
    pub config_hash: String,
    /// Recorded checkpoints to resume from, newest first (empty: start from `model_dir`).
    pub resume_from: Vec<PathBuf>,
    /// How long a reward actor may take on one step before its items score 0.
    pub reward_timeout: Duration,
    /// Rollouts kept per step for people to read.
    pub samples_per_step: usize,
    /// Where code items run.
    pub sandbox: Arc<CodeSandbox>,
    /// Set for a preference-RL run: reasoning prompts get the rule rewards, general ones the
    /// reward models (see `stages::preference`).
    pub preference: Option<Arc<PreferencePlan>>,
}

impl GrpoPlan {
    /// The prompts of step `step` (0-based): `prompts_per_step` from cursor `step × prompts_per_step`,
    /// wrapping around the pool.
    pub fn batch(&self, step: u64) -> Vec<StageProblem> {
        self.take(
            step.wrapping_mul(self.prompts_per_step as u64),
            self.prompts_per_step,
        )
    }

    /// `n` problems of the training stream from `cursor`, wrapping around the pool (none when the
    /// pool is empty).
    pub fn take(&self, cursor: u64, n: usize) -> Vec<StageProblem> {
        let len = self.problems.len();
        if len == 0 {
            return Vec::new();
        }
        let start = (cursor % len as u64) as usize;
        (0..n)
            .map(|i| self.problems[(start + i) % len].clone())
            .collect()
    }

    /// The prompts of a preference run's step `step` (0-based; see `preference::step_prompts`).
    pub fn preference_prompts(&self, step: u64) -> Vec<StagePrompt> {
        match &self.preference {
            Some(p) => step_prompts(&self.problems, &p.general, p.n_reasoning, p.n_general, step),
            None => Vec::new(),
        }
    }

    /// Prompts consumed after `step` steps without dynamic sampling (which consumes more; its
    /// cursor is the director's).
    pub fn data_cursor(&self, step: u64) -> u64 {
        let per_step = self
            .preference
            .as_ref()
            .map_or(self.prompts_per_step, |p| p.n_reasoning);
        step * per_step as u64
    }

    /// The sampling seed of step `step` (0-based).
    pub fn step_seed(&self, step: u64) -> u64 {
        self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step
    }
}
