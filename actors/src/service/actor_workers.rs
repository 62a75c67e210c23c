//! The actor driver of the RL step: [`ActorWorkers`] implement [`StepWorkers`] by sending the
//! actix messages to the worker actors (each on its own `SyncArbiter` thread) and blocking on
//! the replies. The run loop calls them from the run's own thread, never from an event loop;
//! a small actix system on that thread waits for the replies and their timeouts.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Addr, SyncArbiter, System, SystemRunner};
use futures_util::future::{join, join_all};

use r1_kernels::sample::{Completion, GenerationRequest};

use crate::judge::reward::{RewardItem, RewardReport, RewardRules};
use crate::keeper::{SavedCheckpoint, TrainerState};
use crate::learner::Rollout;
use crate::messages::{
    Generate, Judge, Learn, Load, SaveCheckpoint, ScoreLanguage, ScoreResponses, TakeSnapshot,
};
use crate::stages::grpo::StageError;
use crate::stages::rl::{LearnedStep, Rewards, RlPlan, StartPoint, StepWorkers};

use super::workers::{
    JudgeActor, KeeperActor, LangActor, LearnerActor, LearnerSampling, RewardModelActor,
};

/// The worker actors of one run.
#[derive(Clone)]
pub struct WorkerAddrs {
    judge: Addr<JudgeActor>,
    lang: Addr<LangActor>,
    learner: Addr<LearnerActor>,
    keeper: Addr<KeeperActor>,
    /// The reward-model scorer of a preference run.
    reward_models: Option<Addr<RewardModelActor>>,
}

impl WorkerAddrs {
    /// Starts the worker actors of `plan`, each on a thread of its own (call inside an actix
    /// system: the director's).
    pub fn start(plan: &RlPlan) -> Self {
        let tokenizer = plan.tokenizer.clone();
        let max_batch = plan.settings.max_batch;
        let sandbox = plan.sandbox.clone();
        let (model_dir, learner_config) = (plan.model.path.clone(), plan.learner.clone());
        let (sampler_device, learners) = (plan.placement.sampler, plan.placement.learners.clone());
        let parallel = crate::data_parallel::DataParallelConfig::of(&plan.placement);
        let precision = plan.placement.sampler_precision;
        // The learner actor samples: its sampler decodes the weights the learner trains (in
        // place on a learner's GPU, copied device to device onto another, read in place on the
        // CPU), so no copy of the policy crosses actors.
        let sampling = LearnerSampling {
            tokenizer,
            max_batch,
            precision,
            device: sampler_device,
        };
        WorkerAddrs {
            judge: SyncArbiter::start(1, move || JudgeActor::new(sandbox.clone())),
            lang: SyncArbiter::start(1, LangActor::default),
            learner: SyncArbiter::start(1, move || {
                LearnerActor::new(
                    model_dir.clone(),
                    learner_config.clone(),
                    learners.clone(),
                    parallel,
                    sampling.clone(),
                )
            }),
            keeper: SyncArbiter::start(1, KeeperActor::default),
            reward_models: plan.preference.as_ref().map(|p| {
                let scorers = p.scorers.clone();
                SyncArbiter::start(1, move || RewardModelActor::new(scorers.clone()))
            }),
        }
    }
}

/// The run thread's view of the worker actors.
pub struct ActorWorkers {
    /// Waits for replies (and their timeouts) on the run's thread.
    runner: SystemRunner,
    addrs: WorkerAddrs,
    /// The plan's run: checkpoint folder, checkpoints kept, config hash.
    checkpoint_root: PathBuf,
    keep_last: usize,
    config_hash: String,
    /// How long a reward actor may take on one batch before its items score 0.
    reward_timeout: Duration,
    /// The reward models' names, in the plan's order.
    model_names: Vec<String>,
    /// The best checkpoint by evaluation, spared by pruning (set by the director's `SetBest`).
    best: Arc<Mutex<Option<PathBuf>>>,
    /// The sampler's memory at its largest generation since `sampler_memory` last took it.
    sampler_memory: Vec<r1_kernels::device::memory::MemoryPart>,
}

/// A worker that could not be reached or failed.
fn worker(name: &str) -> impl Fn(actix::MailboxError) -> StageError + '_ {
    move |e| StageError::Worker(format!("{name}: {e}"))
}

impl ActorWorkers {
    /// Call on the run's own thread (it starts the thread's actix system).
    pub fn new(addrs: WorkerAddrs, plan: &RlPlan, best: Arc<Mutex<Option<PathBuf>>>) -> Self {
        ActorWorkers {
            runner: System::new(),
            addrs,
            checkpoint_root: plan.run.checkpoint_root(),
            keep_last: plan.run.checkpoint.keep_last,
            config_hash: plan.run.config_hash.clone(),
            reward_timeout: plan.reward_timeout,
            model_names: plan
                .preference
                .as_ref()
                .map(|p| {
                    p.settings
                        .reward_models
                        .iter()
                        .map(|m| m.name.clone())
                        .collect()
                })
                .unwrap_or_default(),
            best,
            sampler_memory: Vec::new(),
        }
    }
}

impl StepWorkers for ActorWorkers {
    fn load(&mut self, candidates: &[PathBuf]) -> Result<StartPoint, StageError> {
        let load = Load {
            checkpoints: candidates.to_vec(),
            config_hash: self.config_hash.clone(),
        };
        let loaded = self
            .runner
            .block_on(self.addrs.learner.send(load))
            .map_err(worker("learner"))?
            .map_err(StageError::Worker)?;
        Ok(loaded.start)
    }

    fn generate(
        &mut self,
        requests: Vec<GenerationRequest>,
    ) -> Result<Vec<Completion>, StageError> {
        let generated = self
            .runner
            .block_on(self.addrs.learner.send(Generate { requests }))
            .map_err(worker("learner (sampling)"))?
            .map_err(StageError::Worker)?;
        crate::stages::rl_local::keep_largest(&mut self.sampler_memory, generated.memory);
        Ok(generated.completions)
    }

    fn sampler_memory(&mut self) -> Vec<r1_kernels::device::memory::MemoryPart> {
        std::mem::take(&mut self.sampler_memory)
    }

    fn reward(
        &mut self,
        items: Arc<Vec<RewardItem>>,
        rules: RewardRules,
        models: Vec<Vec<(String, String)>>,
    ) -> Result<Rewards, StageError> {
        let timeout = self.reward_timeout;
        let n = items.len();
        let judged = async {
            if items.is_empty() {
                return (Ok(Ok(Vec::new())), Ok(Vec::new()));
            }
            join(
                self.addrs
                    .judge
                    .send(Judge {
                        items: items.clone(),
                        rules,
                    })
                    .timeout(timeout),
                self.addrs
                    .lang
                    .send(ScoreLanguage {
                        items: items.clone(),
                        weighted: rules.weights.language != 0.0,
                    })
                    .timeout(timeout),
            )
            .await
        };
        let scorer = if models.is_empty() {
            None
        } else {
            Some(self.addrs.reward_models.as_ref().ok_or_else(|| {
                StageError::Worker("a preference run without its reward-model scorer".into())
            })?)
        };
        // Built inside the runner: a request's timeout starts its timer where it is created.
        let scored = async {
            join_all(models.into_iter().enumerate().filter_map(|(m, items)| {
                scorer.map(|s| s.send(ScoreResponses { model: m, items }).timeout(timeout))
            }))
            .await
        };
        let ((judged, languages), scores) = self.runner.block_on(join(judged, scored));

        let mut timeouts = Vec::new();
        let mut reports = match judged {
            Ok(reports) => reports.map_err(StageError::Worker)?,
            Err(actix::MailboxError::Timeout) => {
                timeouts.push("judge".to_string());
                vec![RewardReport::unjudged("the judge did not answer in time"); n]
            }
            Err(e) => return Err(worker("judge")(e)),
        };
        let languages = match languages {
            Ok(languages) => languages,
            Err(actix::MailboxError::Timeout) => {
                timeouts.push("language".to_string());
                vec![None; n]
            }
            Err(e) => return Err(worker("language scorer")(e)),
        };
        // The judge left the language share to the scorer: combined here under the rules.
        for (report, language) in reports.iter_mut().zip(languages) {
            report.set_language(language, &rules.weights);
        }
        let mut model_scores = Vec::new();
        for (m, reply) in scores.into_iter().enumerate() {
            let name = self.model_names.get(m).map_or("?", String::as_str);
            model_scores.push(match reply {
                Ok(scores) => Some(
                    scores
                        .map_err(|e| StageError::Worker(format!("reward model `{name}`: {e}")))?,
                ),
                Err(actix::MailboxError::Timeout) => {
                    timeouts.push(format!("reward_model:{name}"));
                    None
                }
                Err(e) => return Err(StageError::Worker(format!("reward model `{name}`: {e}"))),
            });
        }
        Ok(Rewards {
            reports,
            model_scores,
            timeouts,
        })
    }

    fn learn(&mut self, rollouts: Vec<Rollout>) -> Result<LearnedStep, StageError> {
        let learned = self
            .runner
            .block_on(self.addrs.learner.send(Learn { rollouts }))
            .map_err(worker("learner"))?
            .map_err(StageError::Worker)?;
        Ok(LearnedStep {
            stats: learned.stats,
            optimizer_step: learned.optimizer_step,
        })
    }

    fn save(&mut self, state: TrainerState) -> Result<SavedCheckpoint, StageError> {
        let snapshot = self
            .runner
            .block_on(self.addrs.learner.send(TakeSnapshot))
            .map_err(worker("learner"))?
            .map_err(StageError::Worker)?;
        let keep_also = self.best.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.runner
            .block_on(self.addrs.keeper.send(SaveCheckpoint {
                root: self.checkpoint_root.clone(),
                snapshot,
                state,
                keep_last: self.keep_last,
                keep_also,
            }))
            .map_err(worker("keeper"))?
            .map_err(StageError::Worker)
    }
}
