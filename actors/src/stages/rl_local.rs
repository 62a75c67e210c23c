//! The in-process driver of the RL step: [`LocalWorkers`] implement [`StepWorkers`] with direct
//! calls (the engine's sampler, the reward rules, the reward models, the learner, the keeper) on
//! the caller's thread, and [`run_in_process`] runs [`run_rl`] with them for `r1ctl train` —
//! progress as `StageEvent`s, a stop flag, the final policy in `<output_dir>/final`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use r1_kernels::device::{Device, Placement};
use r1_kernels::sample::{Completion, GenerationRequest};
use r1_kernels::tokenizer::Tokenizer;

use r1_kernels::model::Model;

use crate::data_parallel::{DataParallelConfig, DataParallelLearner};
use crate::judge::reward::{score_item, CodeSandbox, RewardItem, RewardRules};
use crate::judge::tasks::TaskExample;
use crate::keeper::{self, checkpoint_candidates, SavedCheckpoint, TrainerState};
use crate::learner::{GrpoLearner, Rollout};
use crate::messages::{RunState, SampleRecord, StepRecord};
use crate::report::{write_step_charts, RecordsError, RunRecords};
use crate::stages::grpo::{GrpoStepReport, StageError, StageSettings};
use crate::stages::job::{write_final, CheckpointConfig, ModelSpec, RunError, RunSpec, StageEvent};
use crate::stages::preference::{
    PreferenceSettings, PreferenceStepReport, ResponseScorer, RewardNormaliser, StagePrompt,
};
use crate::stages::problem::StageProblem;
use crate::stages::rl::{
    rl_step, run_rl, LearnedStep, PreferencePlan, Rewards, RlEvent, RlPlan, RlState, RunControl,
    StartPoint, StepWorkers, REWARD_TIMEOUT,
};
use r1_kernels::device::memory::MemoryPart;

/// The learner the in-process workers train: loaded by [`StepWorkers::load`], or the caller's.
enum LearnerSlot<'a> {
    /// Not loaded yet.
    Empty,
    /// Loaded from the plan's model or a checkpoint.
    Owned(Box<GrpoLearner>),
    /// The caller's learner (one step on it: [`grpo_step`], [`preference_step`]).
    Borrowed(&'a mut GrpoLearner),
    /// Data-parallel replicas loaded from the plan's model or a checkpoint.
    Replicated(Box<DataParallelLearner>),
}

/// Workers that are plain calls on the caller's thread.
pub struct LocalWorkers<'a> {
    plan: &'a RlPlan,
    learner: LearnerSlot<'a>,
    /// The reward models of a preference run, in `settings.reward_models` order.
    scorers: Vec<&'a dyn ResponseScorer>,
    /// Where code items run.
    sandbox: &'a CodeSandbox,
    /// Learner replicas `load` makes (one: the single learner).
    parallel: DataParallelConfig,
    /// The sampler's memory at its largest generation since `sampler_memory` last took it.
    sampler_memory: Vec<MemoryPart>,
}

impl<'a> LocalWorkers<'a> {
    /// Workers for `plan`; the learner is loaded by `load`, the reward models are the plan's.
    pub fn new(plan: &'a RlPlan) -> Self {
        let scorers = plan
            .preference
            .as_ref()
            .map(|p| p.scorers.iter().map(|s| s as &dyn ResponseScorer).collect())
            .unwrap_or_default();
        LocalWorkers {
            plan,
            learner: LearnerSlot::Empty,
            scorers,
            sandbox: &plan.sandbox,
            sampler_memory: Vec::new(),
            parallel: DataParallelConfig::of(&plan.placement),
        }
    }

    /// [`LocalWorkers::new`] whose `load` makes `parallel.replicas` data-parallel learner
    /// replicas (ZeRO-1 when `parallel.shard_optimizer`); one replica is the single learner.
    /// Checkpoints are the single learner's either way, so a run may resume with another count
    /// (exactly, bit for bit, with the same count; within float tolerance with another).
    pub fn data_parallel(plan: &'a RlPlan, parallel: DataParallelConfig) -> Self {
        LocalWorkers {
            parallel,
            ..LocalWorkers::new(plan)
        }
    }

    /// Workers training the caller's `learner`, judging code in `sandbox` and scoring general
    /// prompts with `scorers` (aligned with the plan's reward models).
    pub fn with_learner(
        plan: &'a RlPlan,
        learner: &'a mut GrpoLearner,
        sandbox: &'a CodeSandbox,
        scorers: Vec<&'a dyn ResponseScorer>,
    ) -> Self {
        LocalWorkers {
            plan,
            learner: LearnerSlot::Borrowed(learner),
            scorers,
            sandbox,
            sampler_memory: Vec::new(),
            parallel: DataParallelConfig::single(),
        }
    }

    /// The learner, once loaded (a single learner: data-parallel replicas are not one).
    pub fn learner(&mut self) -> Result<&mut GrpoLearner, StageError> {
        match &mut self.learner {
            LearnerSlot::Empty => Err(StageError::Worker("the learner is not loaded".into())),
            LearnerSlot::Owned(learner) => Ok(&mut **learner),
            LearnerSlot::Borrowed(learner) => Ok(&mut **learner),
            LearnerSlot::Replicated(_) => Err(StageError::Worker(
                "the learner is data-parallel: its replicas are not one GrpoLearner".into(),
            )),
        }
    }

    /// The device of the (first) learner: `[devices] learner` as the plan resolved it.
    fn learner_device(&self) -> Device {
        self.plan
            .placement
            .learners
            .first()
            .copied()
            .unwrap_or(Device::Cpu)
    }

    /// The policy being trained, once loaded (replica 0's when data-parallel).
    pub fn policy(&self) -> Result<&Model, StageError> {
        match &self.learner {
            LearnerSlot::Empty => Err(StageError::Worker("the learner is not loaded".into())),
            LearnerSlot::Owned(learner) => Ok(&learner.policy),
            LearnerSlot::Borrowed(learner) => Ok(&learner.policy),
            LearnerSlot::Replicated(learner) => Ok(learner.policy()),
        }
    }
}

/// Keeps in `kept` whichever of it and `now` holds more bytes (a step may generate several
/// times: dynamic sampling's rounds).
pub(crate) fn keep_largest(kept: &mut Vec<MemoryPart>, now: Vec<MemoryPart>) {
    let total = |parts: &[MemoryPart]| parts.iter().map(|p| p.bytes).sum::<f64>();
    if total(&now) > total(kept) {
        *kept = now;
    }
}

impl StepWorkers for LocalWorkers<'_> {
    fn load(&mut self, candidates: &[PathBuf]) -> Result<StartPoint, StageError> {
        let found = keeper::resume_point(candidates, &self.plan.run.config_hash)?;
        let mut start = StartPoint {
            resumed_from: found.dir,
            skipped: found.skipped,
            ..StartPoint::default()
        };
        let config = self.plan.learner.clone();
        let replicated = self.parallel.replicas > 1;
        self.learner = match found.checkpoint {
            Some(checkpoint) => {
                start.data_cursor = checkpoint.state.data_cursor;
                start.reward_normaliser = checkpoint.state.reward_normaliser.clone();
                if replicated {
                    LearnerSlot::Replicated(Box::new(DataParallelLearner::try_resume_on(
                        &self.plan.placement.learners,
                        checkpoint,
                        config,
                        self.parallel,
                    )?))
                } else {
                    LearnerSlot::Owned(Box::new(GrpoLearner::try_resume_on(
                        self.learner_device(),
                        checkpoint,
                        config,
                    )?))
                }
            }
            None => {
                let model = self
                    .plan
                    .model
                    .load()
                    .map_err(|e| StageError::Worker(e.to_string()))?;
                if replicated {
                    LearnerSlot::Replicated(Box::new(DataParallelLearner::try_new_on(
                        &self.plan.placement.learners,
                        model,
                        config,
                        self.parallel,
                    )?))
                } else {
                    LearnerSlot::Owned(Box::new(GrpoLearner::try_new_on(
                        self.learner_device(),
                        model,
                        config,
                    )?))
                }
            }
        };
        (start.step, start.optimizer_step) = match &self.learner {
            LearnerSlot::Replicated(learner) => (learner.step_count(), learner.optimizer_step()),
            _ => {
                let learner = self.learner()?;
                (learner.step, learner.optimizer_step)
            }
        };
        Ok(start)
    }

    fn generate(
        &mut self,
        requests: Vec<GenerationRequest>,
    ) -> Result<Vec<Completion>, StageError> {
        let (max_batch, tokenizer) = (self.plan.settings.max_batch, self.plan.tokenizer.clone());
        let (device, precision) = (
            self.plan.placement.sampler,
            self.plan.placement.sampler_precision,
        );
        // The sampler decodes through a learner's engine: on a learner's GPU from the weights
        // it trains (no copy, no upload), on another GPU from a device-to-device copy; on the
        // CPU from the host policy in place.
        let mut sampler = match &mut self.learner {
            LearnerSlot::Empty => {
                return Err(StageError::Worker("the learner is not loaded".into()))
            }
            LearnerSlot::Owned(learner) => learner.sampler(device, precision, max_batch)?,
            LearnerSlot::Borrowed(learner) => learner.sampler(device, precision, max_batch)?,
            LearnerSlot::Replicated(learner) => learner.sampler(device, precision, max_batch)?,
        };
        let completions = sampler.generate(&requests, Some(tokenizer.as_ref()))?;
        let memory = sampler.memory_parts();
        drop(sampler);
        // In process the sampler reads the learner's weights: they are counted once, there.
        keep_largest(&mut self.sampler_memory, memory);
        Ok(completions)
    }

    fn sampler_memory(&mut self) -> Vec<MemoryPart> {
        std::mem::take(&mut self.sampler_memory)
    }

    fn reward(
        &mut self,
        items: Arc<Vec<RewardItem>>,
        rules: RewardRules,
        models: Vec<Vec<(String, String)>>,
    ) -> Result<Rewards, StageError> {
        let reports = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                score_item(item, &rules, self.sandbox).map_err(|e| StageError::Judge {
                    problem: i,
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<&str> = self
            .plan
            .preference
            .as_ref()
            .map(|p| {
                p.settings
                    .reward_models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        if !models.is_empty() && (models.len() != self.scorers.len() || names.len() != models.len())
        {
            return Err(StageError::Worker(format!(
                "{} reward-model scorers for {} configured reward models",
                self.scorers.len(),
                names.len()
            )));
        }
        let model_scores = models
            .iter()
            .zip(&self.scorers)
            .zip(&names)
            .map(|((items, scorer), name)| {
                scorer.score(items).map(Some).map_err(|message| {
                    StageError::Worker(format!("reward model `{name}`: {message}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rewards {
            reports,
            model_scores,
            timeouts: Vec::new(),
        })
    }

    fn learn(&mut self, rollouts: Vec<Rollout>) -> Result<LearnedStep, StageError> {
        if let LearnerSlot::Replicated(learner) = &mut self.learner {
            let stats = learner.step(&rollouts)?;
            return Ok(LearnedStep {
                stats,
                optimizer_step: learner.optimizer_step(),
            });
        }
        let learner = self.learner()?;
        let stats = learner.step(&rollouts)?;
        Ok(LearnedStep {
            stats,
            optimizer_step: learner.optimizer_step,
        })
    }

    fn save(&mut self, state: TrainerState) -> Result<SavedCheckpoint, StageError> {
        let (root, keep_last) = (
            self.plan.run.checkpoint_root(),
            self.plan.run.checkpoint.keep_last,
        );
        if let LearnerSlot::Replicated(learner) = &self.learner {
            return Ok(learner.write_checkpoint(&root, &state, keep_last)?);
        }
        let learner = self.learner()?;
        learner.sync_optimizer()?;
        Ok(keeper::write_checkpoint(
            &root,
            &learner.policy,
            learner.reference.as_ref(),
            &learner.optimizer,
            &state,
            keep_last,
            None,
        )?)
    }
}

/// Runs (or continues) an RL stage in-process: resumes from the newest good checkpoint under
/// `<output_dir>/checkpoints`, reports every step and checkpoint to `progress`, stops after the
/// current step when `stop` is set, and writes the final policy when the stage completes.
///
/// Each step's record and samples are appended to `<output_dir>/steps.jsonl` and
/// `<output_dir>/samples.jsonl` (records of steps after the checkpoint resumed from are dropped
/// first), and when the run ends or stops the step charts are written from `steps.jsonl` into
/// `<output_dir>` (`report::write_step_charts`).
pub fn run_in_process(
    plan: &RlPlan,
    progress: &mut dyn FnMut(StageEvent),
    stop: &AtomicBool,
) -> Result<GrpoRunReport, RunError> {
    run_in_process_parallel(plan, DataParallelConfig::single(), progress, stop)
}

/// [`run_in_process`] with `parallel.replicas` data-parallel learner replicas (the job
/// config's `[devices] learners` and `shard_optimizer`); one replica is `run_in_process`.
pub fn run_in_process_parallel(
    plan: &RlPlan,
    parallel: DataParallelConfig,
    progress: &mut dyn FnMut(StageEvent),
    stop: &AtomicBool,
) -> Result<GrpoRunReport, RunError> {
    let candidates = checkpoint_candidates(&plan.run.checkpoint_root())?;
    let total = plan.total_steps();
    let dir = plan.run.output_dir.clone();
    let mut workers = LocalWorkers::data_parallel(plan, parallel);
    let control = StopOrFailed {
        stop,
        failed: AtomicBool::new(false),
    };
    let mut records: Option<RunRecords> = None;
    let mut failure: Option<RunError> = None;
    let fail = |e: RecordsError, failure: &mut Option<RunError>| {
        control.failed.store(true, Ordering::Relaxed);
        failure.get_or_insert(records_error(e));
    };
    let report = run_rl(
        plan,
        &mut workers,
        &candidates,
        &control,
        &mut |event| match event {
            RlEvent::Started(start) => {
                match RunRecords::resume(&dir, start.step) {
                    Ok(opened) => records = Some(opened),
                    Err(e) => fail(e, &mut failure),
                }
                for damaged in start.skipped {
                    progress(StageEvent::Note {
                        message: format!("skipped damaged checkpoint {damaged}"),
                    });
                }
                if start.resumed_from.is_some() {
                    progress(StageEvent::Resumed { step: start.step });
                }
            }
            RlEvent::Step(record, samples) => {
                if let Some(file) = records.as_mut() {
                    if let Err(e) = file.append(&record, &samples) {
                        fail(e, &mut failure);
                    }
                }
                progress(match record.preference {
                    None => StageEvent::GrpoStep {
                        steps: total,
                        report: Box::new(record.report),
                    },
                    Some(stats) => StageEvent::PreferenceStep {
                        steps: total,
                        report: Box::new(PreferenceStepReport {
                            report: record.report,
                            stats,
                        }),
                    },
                })
            }
            RlEvent::Checkpoint(saved) => progress(StageEvent::Checkpoint {
                step: saved.step,
                path: saved.path,
            }),
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    write_step_charts(&dir, &[]).map_err(records_error)?;
    let final_model = if report.ended == RunState::Finished && report.steps >= plan.steps {
        Some(write_final(&plan.run, &plan.model, workers.policy()?)?)
    } else {
        None
    };
    Ok(GrpoRunReport {
        steps: report.steps,
        stopped: report.ended != RunState::Finished,
        last_reward: report.last_reward,
        data_cursor: report.data_cursor,
        checkpoint: report.checkpoint,
        final_model,
    })
}

/// The caller's stop flag, or a record that could not be written: either ends the run after
/// the current step (with its checkpoint), the second with the error returned.
struct StopOrFailed<'a> {
    stop: &'a AtomicBool,
    failed: AtomicBool,
}

impl RunControl for StopOrFailed<'_> {
    fn between_steps(&self, done: bool) -> Option<RunState> {
        if self.failed.load(Ordering::Relaxed) {
            Some(RunState::Stopped)
        } else {
            self.stop.between_steps(done)
        }
    }
}

/// A record file's error as the run reports it.
fn records_error(e: RecordsError) -> RunError {
    match e {
        RecordsError::Io { path, source } => RunError::Io { path, source },
        parse @ RecordsError::Parse { .. } => RunError::Invalid(parse.to_string()),
    }
}

/// A plan for one step on the caller's learner: `problems` in order, no checkpoints.
fn one_step_plan(
    tokenizer: &Tokenizer,
    problems: Vec<StageProblem>,
    settings: &StageSettings,
    learner: &GrpoLearner,
    preference: Option<PreferencePlan>,
) -> RlPlan {
    RlPlan {
        run: RunSpec {
            seed: 0,
            output_dir: PathBuf::new(),
            checkpoint: CheckpointConfig::default(),
            config_hash: String::new(),
            stop_at: None,
            devices: Default::default(),
        },
        model: ModelSpec {
            path: PathBuf::new(),
            template: settings.template,
            tokenizer: None,
        },
        tokenizer: Arc::new(tokenizer.clone()),
        prompts_per_step: problems.len(),
        problems: Arc::new(problems),
        settings: settings.clone(),
        learner: learner.config.clone(),
        steps: u64::MAX,
        dynamic_sampling: 0,
        samples_per_step: 0,
        reward_timeout: REWARD_TIMEOUT,
        sandbox: Arc::new(CodeSandbox::unavailable(
            "the caller's sandbox judges this step",
        )),
        // The caller's learner is the CPU engine's.
        placement: Placement::default(),
        preference: preference.map(Arc::new),
    }
}

/// Problems a one-off step takes: built-in task examples or stage problems.
pub trait StepProblem {
    /// The problem as the stage judges it; `index` is its place in the batch.
    fn stage_problem(&self, index: usize) -> StageProblem;
}

impl StepProblem for TaskExample {
    fn stage_problem(&self, index: usize) -> StageProblem {
        StageProblem::from_task(self, index)
    }
}

impl StepProblem for StageProblem {
    fn stage_problem(&self, _: usize) -> StageProblem {
        self.clone()
    }
}

/// One GRPO step on exactly `problems` (each sampled `learner.config.group_size` times), without
/// dynamic sampling or a code sandbox: [`rl_step`] with in-process workers. `seed` makes the
/// step's sampling reproducible.
pub fn grpo_step<P: StepProblem>(
    learner: &mut GrpoLearner,
    tokenizer: &Tokenizer,
    problems: &[P],
    settings: &StageSettings,
    seed: u64,
) -> Result<GrpoStepReport, StageError> {
    Ok(
        grpo_step_recorded(learner, tokenizer, problems, settings, seed, 0)?
            .0
            .report,
    )
}

/// [`grpo_step`], returning the step's whole record and the first rollout of each of the first
/// `samples` groups (prompt, completion, each reward and why it fell short): what an RL run
/// appends to its `steps.jsonl` and `samples.jsonl`.
pub fn grpo_step_recorded<P: StepProblem>(
    learner: &mut GrpoLearner,
    tokenizer: &Tokenizer,
    problems: &[P],
    settings: &StageSettings,
    seed: u64,
    samples: usize,
) -> Result<(StepRecord, Vec<SampleRecord>), StageError> {
    let sandbox = CodeSandbox::unavailable("this stage step runs no code");
    let problems = problems
        .iter()
        .enumerate()
        .map(|(i, p)| p.stage_problem(i))
        .collect();
    let mut plan = one_step_plan(tokenizer, problems, settings, learner, None);
    plan.samples_per_step = samples;
    let mut state = RlState {
        step: learner.step,
        optimizer_step: learner.optimizer_step,
        ..RlState::default()
    };
    let mut workers = LocalWorkers::with_learner(&plan, learner, &sandbox, Vec::new());
    let done = rl_step(&plan, &mut workers, &mut state, seed, false)?;
    Ok((done.record, done.samples))
}

/// One preference-RL step on the caller's learner: `prompts` (reasoning ones first, then general
/// ones) sampled `learner.config.group_size` times each, reasoning prompts rewarded by the rules
/// (code in `sandbox`), general ones by `scorers` (aligned with `settings.reward_models`);
/// `step` decides whether preference rewards count, `seed` makes sampling reproducible.
#[allow(clippy::too_many_arguments)]
pub fn preference_step(
    learner: &mut GrpoLearner,
    tokenizer: &Tokenizer,
    sandbox: &CodeSandbox,
    prompts: &[StagePrompt],
    settings: &PreferenceSettings,
    scorers: &[&dyn ResponseScorer],
    normaliser: &mut RewardNormaliser,
    step: u64,
    seed: u64,
) -> Result<PreferenceStepReport, StageError> {
    if scorers.len() != settings.reward_models.len() {
        return Err(StageError::Worker(format!(
            "{} reward-model scorers for {} configured reward models",
            scorers.len(),
            settings.reward_models.len()
        )));
    }
    let mut reasoning = Vec::new();
    let mut general = Vec::new();
    for prompt in prompts {
        match prompt {
            StagePrompt::Reasoning(p) if general.is_empty() => reasoning.push(p.clone()),
            StagePrompt::General { prompt } => general.push(prompt.clone()),
            StagePrompt::Reasoning(_) => {
                return Err(StageError::Worker(
                    "a preference step takes its reasoning prompts before its general ones".into(),
                ))
            }
        }
    }
    let preference = PreferencePlan {
        settings: settings.clone(),
        scorers: Arc::new(Vec::new()),
        n_reasoning: reasoning.len(),
        n_general: general.len(),
        general,
    };
    let plan = one_step_plan(
        tokenizer,
        reasoning,
        &settings.stage,
        learner,
        Some(preference),
    );
    // Each pool holds exactly one step's prompts, so step `step` takes them all, in order.
    let mut state = RlState {
        step,
        optimizer_step: learner.optimizer_step,
        normaliser: std::mem::take(normaliser),
        ..RlState::default()
    };
    let mut workers = LocalWorkers::with_learner(&plan, learner, sandbox, scorers.to_vec());
    let done = rl_step(&plan, &mut workers, &mut state, seed, false);
    *normaliser = state.normaliser;
    let record = done?.record;
    Ok(PreferenceStepReport {
        report: record.report,
        stats: record
            .preference
            .ok_or_else(|| StageError::Worker("a preference step without its statistics".into()))?,
    })
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
