//! The actors of a run (actix): a [`Director`] drives one GRPO stage through the Sampler,
//! RewardJudge, LangScorer, Learner and CheckpointKeeper, each on its own thread. The messages
//! are all in [`crate::messages`]. The numbers equal the in-process [`crate::stages::grpo_step`]
//! bit for bit: the director calls the same phase functions in the same order with the same
//! seeds.

mod director;
mod workers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use director::Director;
pub use workers::{JudgeActor, KeeperActor, LangActor, LearnerActor, SamplerActor};

use r1_kernels::tokenizer::Tokenizer;

use crate::judge::reward::CodeSandbox;
use crate::learner::LearnerConfig;
use crate::stages::StageProblem;
use crate::stages::StageSettings;

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
}

impl GrpoPlan {
    /// The prompts of step `step` (0-based): `prompts_per_step` from cursor `step × prompts_per_step`,
    /// wrapping around the pool.
    pub fn batch(&self, step: u64) -> Vec<StageProblem> {
        let n = self.problems.len().max(1);
        let start = (step as usize).wrapping_mul(self.prompts_per_step) % n;
        self.problems
            .iter()
            .cycle()
            .skip(start)
            .take(self.prompts_per_step)
            .cloned()
            .collect()
    }

    /// The sampling seed of step `step` (0-based).
    pub fn step_seed(&self, step: u64) -> u64 {
        self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step
    }
}
