//! The compute actors. Each runs on its own thread (`SyncArbiter`), so sampling, judging and
//! learning never block an event loop.

use std::sync::Arc;

use actix::{Actor, Handler, SyncContext};

use r1_kernels::device::{Device, Precision};
use r1_kernels::model::load_model_dir;
use r1_kernels::tokenizer::Tokenizer;

use crate::data_parallel::{DataParallelConfig, DataParallelLearner};
use crate::judge::reward::{score_item, score_language, CodeSandbox, RewardReport};
use crate::keeper::{resume_point, write_checkpoint};
use crate::learner::{GrpoLearner, LearnerConfig, LearnerError};
use crate::messages::{
    Generate, Generated, Judge, Learn, Learned, Load, Loaded, SaveCheckpoint, SavedCheckpoint,
    ScoreLanguage, ScoreResponses, Snapshot, TakeSnapshot,
};
use crate::reward_model::RewardModelScorer;
use crate::stages::rl::StartPoint;

/// Scores accuracy and format (code in the sandbox).
pub struct JudgeActor {
    sandbox: Arc<CodeSandbox>,
}

impl JudgeActor {
    /// A judge running code, if any, in `sandbox`.
    pub fn new(sandbox: Arc<CodeSandbox>) -> Self {
        JudgeActor { sandbox }
    }
}

impl Actor for JudgeActor {
    type Context = SyncContext<Self>;
}

impl Handler<Judge> for JudgeActor {
    type Result = Result<Vec<RewardReport>, String>;

    fn handle(&mut self, msg: Judge, _: &mut SyncContext<Self>) -> Self::Result {
        // The language share is the scorer's: judging without its weight skips that work here.
        let mut rules = msg.rules;
        rules.weights.language = 0.0;
        msg.items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                score_item(item, &rules, &self.sandbox).map_err(|e| format!("item {i}: {e}"))
            })
            .collect()
    }
}

/// Scores the language consistency of chains of thought.
#[derive(Default)]
pub struct LangActor;

impl Actor for LangActor {
    type Context = SyncContext<Self>;
}

impl Handler<ScoreLanguage> for LangActor {
    type Result = Vec<Option<crate::judge::reward::LanguageScore>>;

    fn handle(&mut self, msg: ScoreLanguage, _: &mut SyncContext<Self>) -> Self::Result {
        msg.items
            .iter()
            .map(|item| score_language(item, msg.weighted))
            .collect()
    }
}

/// Scores responses with the run's reward models (preference stage), one batched forward pass
/// per chunk of `max_batch` sequences.
pub struct RewardModelActor {
    scorers: Arc<Vec<RewardModelScorer>>,
}

impl RewardModelActor {
    /// A scorer over the loaded models, in their configured order.
    pub fn new(scorers: Arc<Vec<RewardModelScorer>>) -> Self {
        RewardModelActor { scorers }
    }
}

impl Actor for RewardModelActor {
    type Context = SyncContext<Self>;
}

impl Handler<ScoreResponses> for RewardModelActor {
    type Result = Result<Vec<f32>, String>;

    fn handle(&mut self, msg: ScoreResponses, _: &mut SyncContext<Self>) -> Self::Result {
        let scorer = self
            .scorers
            .get(msg.model)
            .ok_or_else(|| format!("no reward model {}", msg.model))?;
        scorer.score(&msg.items).map_err(|e| e.to_string())
    }
}

/// The learner r1d trains: one `GrpoLearner`, or data-parallel replicas (`[devices] learners =
/// N`), which step, checkpoint and sample as one learner does.
enum Learners {
    One(Box<GrpoLearner>),
    Replicated(Box<DataParallelLearner>),
}

impl Learners {
    fn policy(&self) -> &r1_kernels::model::Model {
        match self {
            Learners::One(l) => &l.policy,
            Learners::Replicated(l) => l.policy(),
        }
    }

    fn step_count(&self) -> u64 {
        match self {
            Learners::One(l) => l.step,
            Learners::Replicated(l) => l.step_count(),
        }
    }

    fn optimizer_step(&self) -> u64 {
        match self {
            Learners::One(l) => l.optimizer_step,
            Learners::Replicated(l) => l.optimizer_step(),
        }
    }
}

/// Trains the policy and samples from it: loads it (or resumes a checkpoint), generates
/// completions through its engine's decoder (`Generate`: the weights it trains, in place on its
/// GPU, copied device to device onto another, read in place on the CPU), steps on rollouts, and
/// hands out snapshots for checkpoints. Sampling and learning share one thread because they
/// share the engine's weights: a step runs them one after the other anyway.
pub struct LearnerActor {
    model_dir: std::path::PathBuf,
    config: LearnerConfig,
    learner: Option<Learners>,
    /// `[devices]`'s learners as the plan resolved them: one learner on the first, or one
    /// data-parallel replica on each (the same replicas `r1ctl train` makes).
    devices: Vec<Device>,
    /// ZeRO-1 and the all-reduce across the replicas (`[devices] shard_optimizer`,
    /// `all_reduce`).
    parallel: DataParallelConfig,
    /// How it generates (`Generate`).
    sampling: LearnerSampling,
}

/// How the learner actor generates.
#[derive(Clone)]
pub struct LearnerSampling {
    /// Decodes completions to text for the stop strings.
    pub tokenizer: Arc<Tokenizer>,
    /// Most sequences decoded at once.
    pub max_batch: usize,
    /// The precision of the weights it decodes with (`[devices] sampler_precision`).
    pub precision: Precision,
    /// Where it decodes (`[devices] sampler`): a learner's GPU decodes its weights in place,
    /// another GPU gets them device to device.
    pub device: Device,
}

impl LearnerActor {
    /// A learner that loads `model_dir` (or a checkpoint) on `Load`: data-parallel replicas on
    /// `devices` when there are several, sharded and all-reduced as `parallel` says (its
    /// replica count is `devices`'s); it generates as `sampling` says.
    pub fn new(
        model_dir: std::path::PathBuf,
        config: LearnerConfig,
        devices: Vec<Device>,
        parallel: DataParallelConfig,
        sampling: LearnerSampling,
    ) -> Self {
        LearnerActor {
            model_dir,
            config,
            learner: None,
            parallel: DataParallelConfig {
                replicas: devices.len().max(1),
                ..parallel
            },
            devices,
            sampling,
        }
    }
}

impl Actor for LearnerActor {
    type Context = SyncContext<Self>;
}

impl Handler<Load> for LearnerActor {
    type Result = Result<Loaded, String>;

    fn handle(&mut self, msg: Load, _: &mut SyncContext<Self>) -> Self::Result {
        let device = self.devices.first().copied().unwrap_or(Device::Cpu);
        let parallel = self.parallel;
        let replicated = parallel.replicas > 1;
        let found = resume_point(&msg.checkpoints, &msg.config_hash).map_err(|e| e.to_string())?;
        let mut start = StartPoint {
            resumed_from: found.dir.clone(),
            skipped: found.skipped,
            ..StartPoint::default()
        };
        let config = self.config.clone();
        let learner = match (found.checkpoint, &found.dir) {
            (Some(checkpoint), Some(dir)) => {
                start.data_cursor = checkpoint.state.data_cursor;
                start.reward_normaliser = checkpoint.state.reward_normaliser.clone();
                let at = |e: LearnerError| format!("checkpoint {}: {e}", dir.display());
                if replicated {
                    Learners::Replicated(Box::new(
                        DataParallelLearner::try_resume_on(
                            &self.devices,
                            checkpoint,
                            config,
                            parallel,
                        )
                        .map_err(at)?,
                    ))
                } else {
                    Learners::One(Box::new(
                        GrpoLearner::try_resume_on(device, checkpoint, config).map_err(at)?,
                    ))
                }
            }
            _ => {
                let model = load_model_dir(&self.model_dir)
                    .map_err(|e| format!("model {}: {e}", self.model_dir.display()))?;
                let at = |e: LearnerError| format!("model {}: {e}", self.model_dir.display());
                if replicated {
                    Learners::Replicated(Box::new(
                        DataParallelLearner::try_new_on(&self.devices, model, config, parallel)
                            .map_err(at)?,
                    ))
                } else {
                    Learners::One(Box::new(
                        GrpoLearner::try_new_on(device, model, config).map_err(at)?,
                    ))
                }
            }
        };
        start.step = learner.step_count();
        start.optimizer_step = learner.optimizer_step();
        self.learner = Some(learner);
        Ok(Loaded { start })
    }
}

impl Handler<Learn> for LearnerActor {
    type Result = Result<Learned, String>;

    fn handle(&mut self, msg: Learn, _: &mut SyncContext<Self>) -> Self::Result {
        let learner = self.learner.as_mut().ok_or("the learner is not loaded")?;
        let stats = match learner {
            Learners::One(l) => l.step(&msg.rollouts),
            Learners::Replicated(l) => l.step(&msg.rollouts),
        }
        .map_err(|e| format!("learner: {e}"))?;
        let optimizer_step = learner.optimizer_step();
        Ok(Learned {
            stats,
            optimizer_step,
        })
    }
}

impl Handler<Generate> for LearnerActor {
    type Result = Result<Generated, String>;

    fn handle(&mut self, msg: Generate, _: &mut SyncContext<Self>) -> Self::Result {
        let sampling = &self.sampling;
        let learner = self.learner.as_mut().ok_or("the learner is not loaded")?;
        let step = learner.step_count();
        let (device, precision, max_batch) =
            (sampling.device, sampling.precision, sampling.max_batch);
        let mut sampler = match learner {
            Learners::One(l) => l.sampler(device, precision, max_batch),
            Learners::Replicated(l) => l.sampler(device, precision, max_batch),
        }
        .map_err(|e| format!("sampler on {device}: {e}"))?;
        let completions = sampler
            .generate(&msg.requests, Some(sampling.tokenizer.as_ref()))
            .map_err(|e| format!("sampler: {e}"))?;
        // No host copy of the weights: the sampler decodes the learner's.
        let memory = sampler.memory_parts();
        Ok(Generated {
            completions,
            weights_step: step,
            memory,
        })
    }
}

impl Handler<TakeSnapshot> for LearnerActor {
    type Result = Result<Snapshot, String>;

    fn handle(&mut self, _: TakeSnapshot, _: &mut SyncContext<Self>) -> Self::Result {
        let learner = self.learner.as_ref().ok_or("the learner is not loaded")?;
        // A data-parallel learner's checkpoint is a single learner's: replica 0's weights and
        // reference, the moments gathered from the shards (`DataParallelLearner::write_checkpoint`).
        // On a GPU the moments come down from the device here.
        let (reference, optimizer) = match learner {
            Learners::One(l) => (l.reference.clone(), l.optimizer_state()),
            Learners::Replicated(l) => (l.reference().cloned(), l.optimizer_state()),
        };
        let optimizer = optimizer.map_err(|e| format!("snapshot of the optimizer: {e}"))?;
        Ok(Snapshot {
            policy: Arc::new(learner.policy().clone()),
            reference: reference.map(Arc::new),
            optimizer: Arc::new(optimizer),
            step: learner.step_count(),
            optimizer_step: learner.optimizer_step(),
        })
    }
}

/// Writes checkpoints through `keeper::write_checkpoint` (temp dir, fsync, rename, prune).
#[derive(Default)]
pub struct KeeperActor;

impl Actor for KeeperActor {
    type Context = SyncContext<Self>;
}

impl Handler<SaveCheckpoint> for KeeperActor {
    type Result = Result<SavedCheckpoint, String>;

    fn handle(&mut self, msg: SaveCheckpoint, _: &mut SyncContext<Self>) -> Self::Result {
        write_checkpoint(
            &msg.root,
            &msg.snapshot.policy,
            msg.snapshot.reference.as_deref(),
            &msg.snapshot.optimizer,
            &msg.state,
            msg.keep_last,
            msg.keep_also.as_deref(),
        )
        .map_err(|e| format!("checkpoint at step {}: {e}", msg.state.step))
    }
}
