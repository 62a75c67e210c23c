//! The compute actors. Each runs on its own thread (`SyncArbiter`), so sampling, judging and
//! learning never block an event loop.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::{Actor, Handler, SyncContext};

use r1_kernels::model::load_model_dir;
use r1_kernels::sample::Sampler;
use r1_kernels::tokenizer::Tokenizer;

use crate::judge::reward::{score_item, score_language, CodeSandbox, RewardReport};
use crate::keeper::{checkpoint_dir, load_checkpoint, prune, save_checkpoint};
use crate::learner::{GrpoLearner, LearnerConfig};
use crate::messages::{
    Generate, Generated, Judge, Learn, Learned, Load, Loaded, SaveCheckpoint, SavedCheckpoint,
    ScoreLanguage, ScoreResponses, Snapshot, TakeSnapshot, UpdateWeights, Weights,
};
use crate::reward_model::RewardModelScorer;

/// Generates completions with the newest weights the learner handed over.
pub struct SamplerActor {
    weights: Option<Weights>,
    tokenizer: Arc<Tokenizer>,
    max_batch: usize,
}

impl SamplerActor {
    /// A sampler with no weights yet (the director sends them after loading).
    pub fn new(tokenizer: Arc<Tokenizer>, max_batch: usize) -> Self {
        SamplerActor {
            weights: None,
            tokenizer,
            max_batch,
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
        let completions = Sampler::new(&weights.model, self.max_batch)
            .generate(&msg.requests, Some(self.tokenizer.as_ref()))
            .map_err(|e| format!("sampler: {e}"))?;
        Ok(Generated {
            completions,
            weights_step: weights.step,
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
}

impl LearnerActor {
    /// A learner that loads `model_dir` (or a checkpoint) on `Load`.
    pub fn new(model_dir: std::path::PathBuf, config: LearnerConfig) -> Self {
        LearnerActor {
            model_dir,
            config,
            learner: None,
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
        let mut skipped = Vec::new();
        let mut resumed_from = None;
        let mut reward_normaliser = None;
        let mut data_cursor = 0;
        for dir in &msg.checkpoints {
            match load_checkpoint(dir) {
                Ok(checkpoint) if checkpoint.state.config_hash != msg.config_hash => {
                    return Err(format!(
                        "checkpoint {} was written under a different config",
                        dir.display()
                    ));
                }
                Ok(checkpoint) => {
                    reward_normaliser = checkpoint.state.reward_normaliser.clone();
                    data_cursor = checkpoint.state.data_cursor;
                    self.learner = Some(
                        GrpoLearner::try_resume(checkpoint, self.config.clone())
                            .map_err(|e| format!("checkpoint {}: {e}", dir.display()))?,
                    );
                    resumed_from = Some(dir.clone());
                    break;
                }
                Err(e) => skipped.push(format!("{}: {e}", dir.display())),
            }
        }
        if self.learner.is_none() {
            let model = load_model_dir(&self.model_dir)
                .map_err(|e| format!("model {}: {e}", self.model_dir.display()))?;
            self.learner = Some(
                GrpoLearner::try_new(model, self.config.clone())
                    .map_err(|e| format!("model {}: {e}", self.model_dir.display()))?,
            );
        }
        Ok(Loaded {
            weights: self.weights()?,
            resumed_from,
            skipped,
            reward_normaliser,
            data_cursor,
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

/// Writes checkpoints: temp dir, fsync, rename (see `keeper`), then prunes.
#[derive(Default)]
pub struct KeeperActor;

impl Actor for KeeperActor {
    type Context = SyncContext<Self>;
}

/// Bytes of the files directly in `dir` (a checkpoint folder); 0 when it cannot be read.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Handler<SaveCheckpoint> for KeeperActor {
    type Result = Result<SavedCheckpoint, String>;

    fn handle(&mut self, msg: SaveCheckpoint, _: &mut SyncContext<Self>) -> Self::Result {
        let dir = checkpoint_dir(&msg.root, msg.snapshot.step);
        std::fs::create_dir_all(&msg.root)
            .map_err(|e| format!("creating {}: {e}", msg.root.display()))?;
        if dir.exists() {
            // Written before a crash but never recorded: this step was taken again, with the
            // same result; the old copy goes.
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("removing unrecorded {}: {e}", dir.display()))?;
        }
        save_checkpoint(
            &dir,
            &msg.snapshot.policy,
            msg.snapshot.reference.as_deref(),
            &msg.snapshot.optimizer,
            &msg.state,
        )
        .map_err(|e| format!("checkpoint {}: {e}", dir.display()))?;
        prune(&msg.root, msg.keep_last.max(1), msg.keep_also.as_deref())
            .map_err(|e| format!("pruning: {e}"))?;
        let unix_seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Ok(SavedCheckpoint {
            step: msg.snapshot.step,
            bytes: dir_bytes(&dir),
            path: dir,
            unix_seconds,
        })
    }
}
