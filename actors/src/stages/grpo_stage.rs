//! The GRPO stage as a whole run: load the model (or resume from the newest good checkpoint),
//! loop `grpo_step_from` over the data stream, checkpoint every `every_steps`, save the final
//! policy as a model directory in `<output_dir>/final`.
//!
//! Exact resume: a step's sampling seed derives from (seed, step) and its prompts from the data
//! cursor, which advances by the prompts each step consumed (more than `prompts_per_step` when
//! dynamic sampling resampled) and is saved in every checkpoint. A run stopped at any point and
//! started again ends with the same weights as one that never stopped.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use r1_kernels::sample::SamplingParams;

use crate::data::DataSource;
use crate::judge::reward::{CodeSandbox, RewardRules};
use crate::judge::sandbox::SandboxConfig;
use crate::judge::tasks::Split;
use crate::keeper::TrainerState;
use crate::learner::{GrpoLearner, LearnerConfig};
use crate::stages::grpo::{grpo_step_from, StageSettings, StepContext};
use crate::stages::job::{
    resume_point, stop_requested, write_checkpoint, write_final, ModelSpec, RunError, RunSpec,
    StageEvent,
};
use crate::stages::problem::StageProblem;

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

/// What the GRPO stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoRunReport {
    /// Steps done in total (resumed ones included).
    pub steps: u64,
    /// Whether the stop flag ended it early.
    pub stopped: bool,
    /// Mean total reward of the last step run by this call.
    pub last_reward: Option<f64>,
    /// Next prompt index of the data stream.
    pub data_cursor: u64,
    /// The newest checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// The final policy as a model directory (when the run completed).
    pub final_model: Option<PathBuf>,
}

/// Runs (or continues) the GRPO stage; see the module doc.
pub fn run_grpo(
    job: &GrpoJob,
    progress: &mut dyn FnMut(StageEvent),
    stop: &AtomicBool,
) -> Result<GrpoRunReport, RunError> {
    let tokenizer = job.model.tokenizer()?;
    let pool: Vec<StageProblem> = job.data.problems(job.run.seed, Split::Train)?;
    if pool.is_empty() {
        return Err(RunError::Invalid(format!(
            "data {}: no problems",
            job.data.name()
        )));
    }
    let (mut learner, mut cursor) = match resume_point(&job.run, progress)? {
        Some(checkpoint) => {
            let cursor = checkpoint.state.data_cursor;
            (GrpoLearner::resume(checkpoint, job.learner.clone()), cursor)
        }
        None => (GrpoLearner::new(job.model.load()?, job.learner.clone()), 0),
    };
    let settings = StageSettings {
        template: job.model.template,
        sampling: job.sampling.clone(),
        rules: job.rules,
        max_batch: job.grpo.max_batch,
    };
    let sandbox = CodeSandbox::lazy(SandboxConfig::default());
    let ctx = StepContext {
        tokenizer: &tokenizer,
        settings: &settings,
        sandbox: &sandbox,
    };
    let total = job
        .run
        .stop_at
        .unwrap_or(job.grpo.steps)
        .min(job.grpo.steps);
    let mut report = GrpoRunReport {
        steps: learner.step,
        stopped: false,
        last_reward: None,
        data_cursor: cursor,
        checkpoint: None,
        final_model: None,
    };
    let mut saved_at = learner.step;
    while learner.step < total {
        if stop_requested(stop) {
            report.stopped = true;
            break;
        }
        let step = learner.step;
        let seed = job.run.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step;
        // The data stream: the pool in order, cycled, from the cursor.
        let mut next = cursor;
        let mut source = |n: usize| {
            let batch: Vec<StageProblem> = (0..n)
                .map(|i| pool[(next as usize + i) % pool.len()].clone())
                .collect();
            next += n as u64;
            batch
        };
        let step_report = grpo_step_from(
            &mut learner,
            &ctx,
            &mut source,
            job.grpo.prompts_per_step,
            job.grpo.dynamic_sampling,
            seed,
        )?;
        cursor += step_report.dynamic.prompts_consumed as u64;
        report.last_reward = Some(step_report.learner.reward_mean);
        progress(StageEvent::GrpoStep {
            steps: total,
            report: Box::new(step_report),
        });
        if learner.step % job.run.checkpoint.every_steps == 0 || learner.step == total {
            report.checkpoint = Some(save(job, &learner, cursor, progress)?);
            saved_at = learner.step;
        }
    }
    if report.stopped && saved_at != learner.step {
        report.checkpoint = Some(save(job, &learner, cursor, progress)?);
    }
    report.steps = learner.step;
    report.data_cursor = cursor;
    if !report.stopped && learner.step >= job.grpo.steps {
        report.final_model = Some(write_final(&job.run, &learner.policy)?);
    }
    Ok(report)
}

/// Writes a checkpoint of the learner and prunes old ones.
fn save(
    job: &GrpoJob,
    learner: &GrpoLearner,
    cursor: u64,
    progress: &mut dyn FnMut(StageEvent),
) -> Result<PathBuf, RunError> {
    let state = TrainerState {
        step: learner.step,
        optimizer_step: learner.optimizer_step,
        data_cursor: cursor,
        seed: job.run.seed,
        config_hash: job.run.config_hash.clone(),
        reward_normaliser: None,
    };
    write_checkpoint(
        &job.run,
        &learner.policy,
        learner.reference.as_ref(),
        &learner.optimizer,
        &state,
        progress,
    )
}
