//! The compute actors. Each runs on its own thread (`SyncArbiter`), so sampling, judging and
//! learning never block an event loop.

use std::sync::Arc;

use actix::{Actor, Handler, SyncContext};

use r1_kernels::device::{Device, Precision};
use r1_kernels::model::load_model_dir;
use r1_kernels::sample::Sampler;
use r1_kernels::tokenizer::Tokenizer;

use crate::judge::reward::{score_item, score_language, CodeSandbox, RewardReport};
use crate::keeper::{resume_point, write_checkpoint};
use crate::learner::{GrpoLearner, LearnerConfig};
use crate::messages::{
    Generate, Generated, Judge, Learn, Learned, Load, Loaded, SaveCheckpoint, SavedCheckpoint,
    ScoreLanguage, ScoreResponses, Snapshot, TakeSnapshot, UpdateWeights, Weights,
};
use crate::reward_model::RewardModelScorer;
use crate::stages::rl::StartPoint;

/// Generates completions with the newest weights the learner handed over.
pub struct SamplerActor {
    weights: Option<Weights>,
    tokenizer: Arc<Tokenizer>,
    max_batch: usize,
    device: Device,
    /// The precision of the weights it decodes with (`[devices] sampler_precision`).
    precision: Precision,
}

impl SamplerActor {
    /// A sampler with no weights yet (the director sends them after loading).
    pub fn new(
        tokenizer: Arc<Tokenizer>,
        max_batch: usize,
        device: Device,
        precision: Precision,
    ) -> Self {
        SamplerActor {
            weights: None,
            tokenizer,
            max_batch,
            device,
            precision,
        }
    }
}

impl Actor for SamplerActor {
    type Context = SyncContext<Self>;
}

impl Handler<UpdateWeights> for SamplerActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateWeights, _: &mut SyncContext<Self>) {
        self.weights = Some(msg.0);
    }
}

impl Handler<Generate> for SamplerActor {
    type Result = Result<Generated, String>;

    fn handle(&mut self, msg: Generate, _: &mut SyncContext<Self>) -> Self::Result {
        let weights = self
            .weights
            .as_ref()
            .ok_or("the sampler has no weights yet")?;
        let mut sampler =
            Sampler::with_precision(self.device, self.precision, &weights.model, self.max_batch)
                .map_err(|e| format!("sampler on {}: {e}", self.device))?;
        let completions = sampler
            .generate(&msg.requests, Some(self.tokenizer.as_ref()))
            .map_err(|e| format!("sampler: {e}"))?;
        // The actor keeps its own copy of the policy, beside the learner's.
        let mut memory = vec![r1_kernels::device::memory::MemoryPart {
            category: "sampler's copy of the weights".into(),
            bytes: 4.0 * weights.model.params.len() as f64,
        }];
        memory.extend(sampler.memory_parts());
        Ok(Generated {
            completions,
            weights_step: weights.step,
            memory,
        })
    }
}

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

/// Owns the policy, its reference and the optimizer.
pub struct LearnerActor {
    model_dir: std::path::PathBuf,
    config: LearnerConfig,
    learner: Option<GrpoLearner>,
    /// `[devices]`'s learners as the plan resolved them: r1d trains on the first and refuses
    /// more than one (data-parallel replicas run in-process, `r1ctl train`).
    devices: Vec<Device>,
}

impl LearnerActor {
    /// A learner that loads `model_dir` (or a checkpoint) on `Load`.
    pub fn new(model_dir: std::path::PathBuf, config: LearnerConfig, devices: Vec<Device>) -> Self {
        LearnerActor {
            model_dir,
            config,
            learner: None,
            devices,
        }
    }

    fn weights(&self) -> Result<Weights, String> {
        let learner = self.learner.as_ref().ok_or("the learner is not loaded")?;
        Ok(Weights {
            step: learner.step,
            model: Arc::new(learner.policy.clone()),
        })
    }
}

impl Actor for LearnerActor {
    type Context = SyncContext<Self>;
}

impl Handler<Load> for LearnerActor {
    type Result = Result<Loaded, String>;

    fn handle(&mut self, msg: Load, _: &mut SyncContext<Self>) -> Self::Result {
        if self.devices.len() > 1 {
            return Err(format!(
                "devices.learners = {}: r1d trains one learner; data-parallel replicas run with \
                 `r1ctl train CONFIG`",
                self.devices.len()
            ));
        }
        let device = self.devices.first().copied().unwrap_or(Device::Cpu);
        let found = resume_point(&msg.checkpoints, &msg.config_hash).map_err(|e| e.to_string())?;
        let mut start = StartPoint {
            resumed_from: found.dir.clone(),
            skipped: found.skipped,
            ..StartPoint::default()
        };
        let learner = match (found.checkpoint, &found.dir) {
            (Some(checkpoint), Some(dir)) => {
                start.data_cursor = checkpoint.state.data_cursor;
                start.reward_normaliser = checkpoint.state.reward_normaliser.clone();
                GrpoLearner::try_resume_on(device, checkpoint, self.config.clone())
                    .map_err(|e| format!("checkpoint {}: {e}", dir.display()))?
            }
            _ => {
                let model = load_model_dir(&self.model_dir)
                    .map_err(|e| format!("model {}: {e}", self.model_dir.display()))?;
                GrpoLearner::try_new_on(device, model, self.config.clone())
                    .map_err(|e| format!("model {}: {e}", self.model_dir.display()))?
            }
        };
        start.step = learner.step;
        start.optimizer_step = learner.optimizer_step;
        self.learner = Some(learner);
        Ok(Loaded {
            weights: self.weights()?,
            start,
        })
    }
}

impl Handler<Learn> for LearnerActor {
    type Result = Result<Learned, String>;

    fn handle(&mut self, msg: Learn, _: &mut SyncContext<Self>) -> Self::Result {
        let learner = self.learner.as_mut().ok_or("the learner is not loaded")?;
        let stats = learner
            .step(&msg.rollouts)
            .map_err(|e| format!("learner: {e}"))?;
        let optimizer_step = learner.optimizer_step;
        Ok(Learned {
            stats,
            weights: self.weights()?,
            optimizer_step,
        })
    }
}

impl Handler<TakeSnapshot> for LearnerActor {
    type Result = Result<Snapshot, String>;

    fn handle(&mut self, _: TakeSnapshot, _: &mut SyncContext<Self>) -> Self::Result {
        let learner = self.learner.as_ref().ok_or("the learner is not loaded")?;
        Ok(Snapshot {
            policy: Arc::new(learner.policy.clone()),
            reference: learner.reference.clone().map(Arc::new),
            optimizer: Arc::new(learner.optimizer.clone()),
            step: learner.step,
            optimizer_step: learner.optimizer_step,
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
