//! The hub: the actor that owns the runs. It starts a [`Director`] per run, records everything a
//! director reports in the [`Store`] (and on `/metrics`), forwards pause/resume/stop, resumes
//! interrupted runs when the daemon starts, and suspends them all when it stops.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use sha2::{Digest, Sha256};

use r1_actors::judge::reward::CodeSandbox;
use r1_actors::judge::tasks::Split;
use r1_actors::messages::{
    Pause, Resume, RunEvent, RunEventKind, RunState, SavedCheckpoint, SetBest, StepRecord, Stop,
    Suspend,
};
use r1_actors::service::{Director, StageOutcome, StageTask, StageWorker};
use r1_actors::stages::{
    evaluate, run_distill, run_eval, run_rejection, run_sft, RlPlan, StageEvent, StageProblem,
    StageSettings,
};
use r1_config::limits::ResourceCheck;
use r1_config::{DataConfig, JobConfig, Stage};
use r1_kernels::model::load_model_dir;
use r1_kernels::sample::SamplingParams;

use crate::api::{EvalReport, EvalRequest, RunInfo, StepSummary};
use crate::error::ApiError;
use crate::inputs::{check_job, InputLimits};
use crate::metrics::{ComponentStat, Metrics, RewardModelStat, StepMetrics};
use crate::store::Store;

/// Times r1d may go down while a run loads (resumed or launched from the queue) before the run
/// is failed instead of launched again: a run that aborts the process would otherwise make
/// every restart under systemd abort too.
pub const MAX_RESUME_ATTEMPTS: u32 = 3;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Whether a stage runs through a director (GRPO steps) rather than a stage worker.
fn is_rl(stage: Stage) -> bool {
    matches!(stage, Stage::Grpo | Stage::Preference)
}

/// What the hub can tell a live run, whether a director or a stage worker runs it.
struct RunHandle {
    pause: Recipient<Pause>,
    resume: Recipient<Resume>,
    stop: Recipient<Stop>,
    suspend: Recipient<Suspend>,
    set_best: Recipient<SetBest>,
}

impl RunHandle {
    fn of<A>(addr: Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<Pause>
            + Handler<Resume>
            + Handler<Stop>
            + Handler<Suspend>
            + Handler<SetBest>,
    {
        RunHandle {
            pause: addr.clone().recipient(),
            resume: addr.clone().recipient(),
            stop: addr.clone().recipient(),
            suspend: addr.clone().recipient(),
            set_best: addr.recipient(),
        }
    }
}

/// A parsed job (every relative path resolved against the folder it was started from), ready to
/// become a plan (grpo, preference) or a stage task (sft, rejection, distill, eval).
struct Job {
    config: JobConfig,
    text: String,
}

impl Job {
    fn parse(text: &str, source: &str, base_dir: &Path) -> Result<Job, ApiError> {
        let mut config = JobConfig::from_toml(text, Path::new(source))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if is_rl(config.run.stage) && config.grpo.is_none() {
            return Err(ApiError::BadRequest(format!("{source}: no [grpo] table")));
        }
        config.resolve_paths(base_dir);
        Ok(Job {
            config,
            text: text.to_string(),
        })
    }

    fn config_hash(&self) -> String {
        Sha256::digest(self.text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A stage without GRPO steps as a task for a [`StageWorker`], writing under `output_dir`.
    /// What can be checked before it runs is: the model directories, the files it reads.
    fn task(&self, output_dir: &Path) -> Result<StageTask, String> {
        let has_model = |key: &str, dir: &Path| {
            if dir.join("config.json").is_file() {
                Ok(())
            } else {
                Err(format!("{key}: {} has no config.json", dir.display()))
            }
        };
        let file = |key: &str, path: &Path| {
            if path.is_file() {
                Ok(())
            } else {
                Err(format!("{key}: {} is not a readable file", path.display()))
            }
        };
        has_model("model.path", &self.config.model.path)?;
        if let DataConfig::Jsonl { path, .. } | DataConfig::Parquet { path, .. } = &self.config.data
        {
            file("data.path", path)?;
        }
        let mut run = self.config.run_spec(self.config_hash(), None);
        run.output_dir = output_dir.to_path_buf();
        let config = &self.config;
        let task: StageTask = match config.run.stage {
            Stage::Sft => {
                let job = config.sft_job(run).ok_or("no [sft] table")?;
                if let Some(data) = &job.sft.data {
                    file("sft.data", data)?;
                }
                Arc::new(move |progress, stop| {
                    let r = run_sft(&job, progress, stop).map_err(|e| e.to_string())?;
                    Ok(StageOutcome {
                        stopped: r.stopped,
                        summary: format!(
                            "step {}/{} over {} examples; loss {:.4} -> {:.4}",
                            r.steps,
                            r.steps_planned,
                            r.examples,
                            r.first_loss.unwrap_or(f64::NAN),
                            r.last_loss.unwrap_or(f64::NAN)
                        ),
                    })
                })
            }
            Stage::Rejection => {
                let job = config.rejection_job(run);
                Arc::new(move |progress, stop| {
                    let r = run_rejection(&job, progress, stop).map_err(|e| e.to_string())?;
                    Ok(StageOutcome {
                        stopped: r.stopped,
                        summary: format!(
                            "{} prompts: kept {} of {} samples -> {}",
                            r.prompts,
                            r.summary.kept,
                            r.summary.seen,
                            r.output.display()
                        ),
                    })
                })
            }
            Stage::Distill => {
                let job = config.distill_job(run).ok_or("no [distill] table")?;
                has_model("distill.student", &job.distill.student)?;
                Arc::new(move |progress, stop| {
                    let r = run_distill(&job, progress, stop).map_err(|e| e.to_string())?;
                    Ok(StageOutcome {
                        stopped: r.stopped,
                        summary: format!(
                            "teacher kept {} of {} samples; student {}",
                            r.teacher.summary.kept,
                            r.teacher.summary.seen,
                            r.student.as_ref().map_or("not trained".into(), |s| format!(
                                "step {}/{}",
                                s.steps, s.steps_planned
                            ))
                        ),
                    })
                })
            }
            Stage::Eval => {
                let job = config.eval_job(run);
                Arc::new(move |progress, stop| {
                    let r = run_eval(&job, progress, stop).map_err(|e| e.to_string())?;
                    Ok(StageOutcome {
                        stopped: r.stopped,
                        summary: format!("report {}", r.report.display()),
                    })
                })
            }
            Stage::Grpo | Stage::Preference => {
                return Err("the RL stages run through a director".into())
            }
        };
        Ok(task)
    }

    fn problems(&self, split: Split) -> Result<Vec<StageProblem>, String> {
        self.config
            .data
            .problems(self.config.run.seed, split)
            .map_err(|e| format!("data: {e}"))
    }

    fn settings(&self) -> StageSettings {
        StageSettings {
            template: self.config.model.template,
            sampling: self.config.sampling.clone(),
            rules: self.config.rewards,
            max_batch: self.config.grpo.as_ref().map_or(64, |g| g.max_batch),
        }
    }

    /// An RL run's plan, writing under `output_dir`: built from the job config by the same
    /// `GrpoJob::plan` / `PreferenceJob::plan` as `r1ctl train` (prompts, tokenizer and reward
    /// models read).
    fn plan(&self, output_dir: &Path) -> Result<RlPlan, String> {
        let model_dir = &self.config.model.path;
        if !model_dir.join("config.json").is_file() {
            return Err(format!(
                "model.path: {} has no config.json",
                model_dir.display()
            ));
        }
        let mut run = self.config.run_spec(self.config_hash(), None);
        run.output_dir = output_dir.to_path_buf();
        let plan = if self.config.run.stage == Stage::Preference {
            let job = self
                .config
                .preference_job(run)
                .ok_or("stage = \"preference\" needs [grpo] and [preference] tables")?;
            job.plan(&mut |event| {
                if let StageEvent::Note { message } = event {
                    tracing::info!("{message}");
                }
            })
        } else {
            self.config.grpo_job(run).ok_or("no [grpo] table")?.plan()
        };
        plan.map_err(|e| e.to_string())
    }
}

/// Start a run (`POST /v1/runs`).
#[derive(Message)]
#[rtype(result = "Result<RunInfo, ApiError>")]
pub struct StartRun {
    /// The job config.
    pub config_toml: String,
    /// Its file name, for errors.
    pub source: String,
    /// Where its relative paths point.
    pub base_dir: PathBuf,
    /// Queue it behind the active run instead of refusing it.
    pub queue: bool,
}

/// What a client asks of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Pause between steps.
    Pause,
    /// Continue a paused run.
    Resume,
    /// Stop for good (after a checkpoint).
    Stop,
}

/// Pause, resume or stop a run.
#[derive(Message)]
#[rtype(result = "Result<RunInfo, ApiError>")]
pub struct ControlRun {
    /// The run.
    pub id: String,
    /// What to do.
    pub action: Control,
}

/// Delete an ended run: its records and its folder under the state folder.
#[derive(Message)]
#[rtype(result = "Result<RunInfo, ApiError>")]
pub struct DeleteRun {
    /// The run.
    pub id: String,
}

/// The daemon is stopping: suspend every run (checkpoint, keep resumable).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SuspendAll;

/// An evaluation of a run was recorded: the best checkpoint may have changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EvalRecorded(pub String);

/// How many runs are still loading their model (systemd READY waits for none).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct LoadingRuns;

/// How many directors are still alive.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct LiveRuns;

/// Owns the runs.
pub struct Hub {
    store: Store,
    metrics: Arc<Metrics>,
    state_dir: PathBuf,
    directors: HashMap<String, RunHandle>,
    sandboxes: HashMap<String, Arc<CodeSandbox>>,
    /// Runs whose director is still loading its model or checkpoint.
    loading: std::collections::HashSet<String>,
    /// What a run's config may make the daemon read.
    inputs: InputLimits,
}

impl Hub {
    /// A hub over `store`, keeping run outputs under `state_dir/runs`.
    pub fn new(store: Store, metrics: Arc<Metrics>, state_dir: PathBuf) -> Self {
        Hub {
            store,
            metrics,
            state_dir,
            directors: HashMap::new(),
            sandboxes: HashMap::new(),
            loading: Default::default(),
            inputs: InputLimits::default(),
        }
    }

    /// The same hub with other bounds on the files a run may read.
    pub fn with_input_limits(mut self, inputs: InputLimits) -> Self {
        self.inputs = inputs;
        self
    }

    fn output_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("runs").join(id)
    }

    fn launch(&mut self, info: &RunInfo, ctx: &mut Context<Self>) -> Result<(), String> {
        let job = Job::parse(&info.config_toml, "config.toml", &info.base_dir)
            .map_err(|e| e.to_string())?;
        // Files may have changed since the run was accepted (a FIFO in place of the weights
        // would hang the loader and the run's stop): checked again before anything reads them.
        check_job(&job.config, &self.inputs)?;
        // Newest recorded checkpoint first; the learner skips damaged ones.
        let mut resume_from: Vec<PathBuf> = self
            .store
            .checkpoints(&info.id)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|c| c.path)
            .collect();
        resume_from.reverse();
        if !is_rl(job.config.run.stage) {
            let task = job.task(&info.output_dir)?;
            self.start_worker(&info.id, task, info.step, ctx);
            return Ok(());
        }
        let best = self.best_checkpoint(&info.id);
        let plan = job.plan(&info.output_dir)?;
        self.start_director(&info.id, plan, resume_from, best, ctx);
        Ok(())
    }

    /// Starts a failed or stopped run again (`resume` on it): from its newest recorded checkpoint
    /// that verifies, or from the start when it has none. A failure is often transient (a full
    /// disk, descriptors exhausted by other activity) while the checkpoints are intact, so the
    /// user decides; as any start, it waits for no other run to be active (409 otherwise).
    fn resume_failed(
        &mut self,
        info: RunInfo,
        ctx: &mut Context<Self>,
    ) -> Result<RunInfo, ApiError> {
        let busy = self
            .store
            .runs()
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .into_iter()
            .find(|r| r.id != info.id && !r.state.is_final() && r.state != RunState::Queued);
        if let Some(busy) = busy {
            return Err(ApiError::Conflict(format!(
                "run {} is {} and this machine runs one run at a time; resume {} when it has ended",
                busy.id,
                busy.state.name(),
                info.id
            )));
        }
        tracing::info!(run = %info.id, state = info.state.name(), message = ?info.message, "continuing a run on request");
        self.launch(&info, ctx).map_err(|message| {
            ApiError::Conflict(format!("run {} cannot be resumed: {message}", info.id))
        })?;
        self.metrics.set_run_state(&info.id, "starting");
        // The director's first event replaces the failure message with what it resumed from.
        self.update(&info.id, |i| i.state = RunState::Starting)
            .ok_or_else(|| ApiError::NotFound(format!("no run {}", info.id)))
    }

    /// Starts the stage worker of a run without GRPO steps (`step`: its recorded progress).
    fn start_worker(&mut self, id: &str, task: StageTask, step: u64, ctx: &mut Context<Self>) {
        self.loading.insert(id.to_string());
        let worker =
            StageWorker::new(id.to_string(), task, ctx.address().recipient(), step).start();
        self.directors.insert(id.to_string(), RunHandle::of(worker));
    }

    /// When no run is active, launches the oldest queued run (one that cannot be launched any
    /// more — its model gone, say — fails with the reason, and the next is tried).
    fn start_next_queued(&mut self, ctx: &mut Context<Self>) {
        if !self.directors.is_empty() {
            return;
        }
        let mut queued: Vec<RunInfo> = match self.store.runs() {
            Ok(runs) => runs
                .into_iter()
                .filter(|r| r.state == RunState::Queued)
                .collect(),
            Err(e) => {
                tracing::error!("reading runs: {e}");
                return;
            }
        };
        queued.sort_by(|a, b| {
            a.created_unix
                .total_cmp(&b.created_unix)
                .then(a.id.cmp(&b.id))
        });
        for info in queued {
            tracing::info!(run = %info.id, "starting queued run");
            match self
                .begin_guarded_launch(&info.id)
                .and_then(|()| self.launch(&info, ctx))
            {
                Ok(()) => return,
                Err(message) => {
                    self.end_guarded_launch(&info.id);
                    self.update(&info.id, |i| {
                        i.state = RunState::Failed;
                        i.message = Some(format!("starting: {message}"));
                    });
                    self.metrics.set_run_state(&info.id, "failed");
                }
            }
        }
    }

    /// Starts the director of run `id` (a new run, or one being resumed from the first
    /// loadable of `resume_from`, newest first).
    fn start_director(
        &mut self,
        id: &str,
        plan: RlPlan,
        resume_from: Vec<PathBuf>,
        best: Option<PathBuf>,
        ctx: &mut Context<Self>,
    ) {
        self.sandboxes.insert(id.to_string(), plan.sandbox.clone());
        self.loading.insert(id.to_string());
        let director = Director::new(
            id.to_string(),
            plan,
            resume_from,
            best,
            ctx.address().recipient(),
        )
        .start();
        self.directors
            .insert(id.to_string(), RunHandle::of(director));
    }

    /// The crash-loop guard, before a run is launched from the store (resumed at start, or
    /// started from the queue): counts the attempt in sled, flushed, before anything loads, and
    /// refuses the launch once r1d has gone down [`MAX_RESUME_ATTEMPTS`] times during this
    /// run's earlier attempts (each attempt ends at its first step, or when it pauses, stops,
    /// suspends or fails: [`Hub::end_guarded_launch`]).
    fn begin_guarded_launch(&mut self, id: &str) -> Result<(), String> {
        let attempts = self.store.resume_attempts(id).map_err(|e| e.to_string())?;
        if attempts >= MAX_RESUME_ATTEMPTS {
            return Err(format!(
                "r1d went down {attempts} times while this run was loading or taking its first \
                 step, so it is not resumed again; check its model, data and config \
                 (docs/daemon.md, crash-loop guard) and start it anew"
            ));
        }
        self.store
            .set_resume_attempts(id, attempts + 1)
            .map_err(|e| format!("recording the resume attempt: {e}"))
    }

    /// The run got through its load and first step (or ended, or was put aside): the daemon
    /// survived this attempt, so the count starts over.
    fn end_guarded_launch(&self, id: &str) {
        match self.store.resume_attempts(id) {
            Ok(0) => {}
            Ok(_) => {
                if let Err(e) = self.store.set_resume_attempts(id, 0) {
                    tracing::error!("clearing the resume attempts of {id}: {e}");
                }
            }
            Err(e) => tracing::error!("reading the resume attempts of {id}: {e}"),
        }
    }

    /// The recorded checkpoint with the highest evaluated pass@1 (the later one on a tie).
    fn best_checkpoint(&self, id: &str) -> Option<PathBuf> {
        let evals = self.store.evals(id).ok()?;
        let checkpoints = self.store.checkpoints(id).ok()?;
        evals
            .iter()
            .filter_map(|e| {
                checkpoints
                    .iter()
                    .find(|c| c.step == e.step)
                    .map(|c| (e.pass_at_1, c.step, c.path.clone()))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(_, _, path)| path)
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut RunInfo)) -> Option<RunInfo> {
        match self.store.run(id) {
            Ok(Some(mut info)) => {
                f(&mut info);
                info.updated_unix = now();
                if let Err(e) = self.store.put_run(&info) {
                    tracing::error!("recording run {id}: {e}");
                }
                Some(info)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!("reading run {id}: {e}");
                None
            }
        }
    }

    fn record_step(&self, id: &str, record: &StepRecord) {
        let summary = StepSummary {
            step: record.step,
            reward_mean: record.report.learner.reward_mean,
            accuracy: record.report.accuracy,
            format: record.report.format,
            kl: record.report.learner.kl,
            completion_len_mean: record.report.learner.completion_len_mean,
            tokens_per_second: record.tokens_generated as f64 / record.phases.sample.max(1e-9),
            seconds: record.seconds,
        };
        self.update(id, |info| {
            info.step = record.step;
            info.last = Some(summary);
        });
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let runs = match self.store.runs() {
            Ok(runs) => runs,
            Err(e) => {
                tracing::error!("reading runs: {e}");
                return;
            }
        };
        for info in runs {
            self.metrics.set_run_state(&info.id, info.state.name());
            if info.state.is_final() || info.state == RunState::Queued {
                continue;
            }
            tracing::info!(run = %info.id, state = info.state.name(), "resuming");
            match self
                .begin_guarded_launch(&info.id)
                .and_then(|()| self.launch(&info, ctx))
            {
                Ok(()) => {
                    let run = &self.directors[&info.id];
                    match info.state {
                        RunState::Paused => run.pause.do_send(Pause),
                        RunState::Stopping => run.stop.do_send(Stop),
                        _ => {}
                    }
                }
                Err(message) => {
                    // Failed alone: the daemon stays up and serves the other runs.
                    self.end_guarded_launch(&info.id);
                    self.update(&info.id, |i| {
                        i.state = RunState::Failed;
                        i.message = Some(format!("resuming: {message}"));
                    });
                    self.metrics.set_run_state(&info.id, "failed");
                }
            }
        }
        self.start_next_queued(ctx);
    }
}

/// A start request checked and loaded off the event loop: the job, and for the RL stages the
/// plan (tokenizer, prompts and reward models read), not yet given a run id.
struct PreparedStart {
    job: Job,
    plan: Option<RlPlan>,
    msg: StartRun,
    /// [`check_start_resources`], computed off the event loop both ways: whether the run
    /// starts at once or waits in the queue is only known when the hub accepts it.
    resources: StartResources,
}

/// The start-time resource check of a prepared run, for either way it may be accepted.
struct StartResources {
    /// Held to the memory r1d may allocate now: the run starts at once.
    now: Result<ResourceCheck, ApiError>,
    /// Files, sizes and devices only: the run waits behind an active one that holds the memory.
    queued: Result<ResourceCheck, ApiError>,
}

/// Parses the job of a start request, checks every file it names ([`check_job`]) and builds its
/// plan (reading prompts, tokenizer, reward models). Blocking: runs on a thread of its own, so
/// the event loop (the API, `/stop`, the systemd watchdog) keeps answering while it reads.
fn prepare_start(
    msg: StartRun,
    inputs: InputLimits,
    check: PathBuf,
) -> Result<PreparedStart, ApiError> {
    let job = Job::parse(&msg.config_toml, &msg.source, &msg.base_dir)?;
    let bad = |e: String| ApiError::BadRequest(format!("{}: {e}", msg.source));
    check_job(&job.config, &inputs).map_err(bad)?;
    let resources = StartResources {
        now: check_start_resources(&job, &msg.source, false),
        queued: check_start_resources(&job, &msg.source, true),
    };
    // Refused before the plan is built (prompts read, reward models loaded) when it cannot
    // run either way.
    resources.queued.clone()?;
    // The plan (reward models loaded, prompts read) is built once, then given the run's id;
    // a stage without GRPO steps is checked as far as it can be before it runs.
    let plan = if is_rl(job.config.run.stage) {
        Some(job.plan(&check).map_err(bad)?)
    } else {
        job.task(&check).map_err(bad)?;
        None
    };
    Ok(PreparedStart {
        job,
        plan,
        msg,
        resources,
    })
}

impl Hub {
    /// The run that keeps `StartRun` from starting at once (any run not ended), if any.
    fn busy_run(&self) -> Result<Option<RunInfo>, ApiError> {
        Ok(self
            .store
            .runs()
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .into_iter()
            .find(|r| !r.state.is_final()))
    }

    fn refuse_busy(busy: &RunInfo) -> ApiError {
        ApiError::Conflict(format!(
            "run {} is {} and this machine runs one run at a time; stop it (r1ctl stop {}), \
             wait for it to finish, or queue this one behind it (r1ctl start --queue)",
            busy.id,
            busy.state.name(),
            busy.id
        ))
    }

    /// Records a prepared run and starts it (or leaves it queued behind the active one).
    fn accept_start(
        &mut self,
        prepared: PreparedStart,
        ctx: &mut Context<Self>,
    ) -> Result<RunInfo, ApiError> {
        let PreparedStart {
            job,
            mut plan,
            msg,
            resources: prepared_resources,
        } = prepared;
        let store_err = |e: crate::store::StoreError| ApiError::Internal(e.to_string());
        // Checked again: another start may have been accepted while this one was loading.
        let busy = self.busy_run()?;
        if let (Some(busy), false) = (&busy, msg.queue) {
            return Err(Self::refuse_busy(busy));
        }
        // A run queued behind an active one is not held to today's free memory (the active run
        // holds it); its own loaders check again when it starts.
        let resources = if busy.is_some() {
            prepared_resources.queued?
        } else {
            prepared_resources.now?
        };
        let bad = |e: String| ApiError::BadRequest(format!("{}: {e}", msg.source));
        let id = self.store.next_run_id().map_err(store_err)?;
        let info = RunInfo {
            id: id.clone(),
            name: job.config.run.name.clone(),
            stage: job.config.run.stage.name().into(),
            state: RunState::Queued,
            step: 0,
            // Stages without GRPO steps say how much work they have once they start.
            total_steps: job.config.grpo.as_ref().map_or(0, |g| g.steps),
            created_unix: now(),
            updated_unix: now(),
            message: None,
            output_dir: self.output_dir(&id),
            last: None,
            config_toml: msg.config_toml,
            base_dir: msg.base_dir,
        };
        self.store.put_run(&info).map_err(store_err)?;
        self.metrics.set_run_state(&id, "queued");
        // Where its workers run and what each device holds: /metrics, and the log says where
        // `auto` went.
        for note in &resources.placement.notes {
            tracing::info!(run = %id, "{note}");
        }
        self.metrics
            .set_run_devices(&id, &resources.placement, &resources.estimate);
        if busy.is_some() {
            // Queued: checked now, launched (and its plan built again) when its turn comes.
            return Ok(info);
        }
        // Nothing ahead of it: it starts now, and its record says so from the first answer.
        let mut info = info;
        info.state = RunState::Starting;
        self.store.put_run(&info).map_err(store_err)?;
        self.metrics.set_run_state(&id, "starting");
        match plan.as_mut() {
            Some(plan) => plan.run.output_dir = info.output_dir.clone(),
            None => {
                let task = match job.task(&info.output_dir) {
                    Ok(task) => task,
                    Err(message) => {
                        // Recorded as failed, not left starting: a new daemon must not retry it.
                        self.update(&id, |i| {
                            i.state = RunState::Failed;
                            i.message = Some(format!("starting: {message}"));
                        });
                        self.metrics.set_run_state(&id, "failed");
                        return Err(bad(message));
                    }
                };
                self.start_worker(&id, task, 0, ctx);
                return Ok(info);
            }
        }
        if let Some(plan) = plan {
            self.start_director(&id, plan, Vec::new(), None, ctx);
        }
        Ok(info)
    }
}

impl Handler<StartRun> for Hub {
    type Result = ResponseActFuture<Self, Result<RunInfo, ApiError>>;

    fn handle(&mut self, msg: StartRun, _: &mut Context<Self>) -> Self::Result {
        // A refusal that needs no file is answered at once.
        match self.busy_run() {
            Err(e) => return Box::pin(fut::ready(Err(e))),
            Ok(Some(busy)) if !msg.queue => {
                return Box::pin(fut::ready(Err(Self::refuse_busy(&busy))))
            }
            Ok(_) => {}
        }
        let inputs = self.inputs;
        let check = self.state_dir.join("check");
        // Spawned at once on the blocking pool; the hub answers other messages meanwhile.
        let loading = actix_web::web::block(move || prepare_start(msg, inputs, check));
        Box::pin(
            async move {
                loading.await.map_err(|e| {
                    ApiError::Internal(format!("loading the run's files failed: {e}"))
                })?
            }
            .into_actor(self)
            .map(|prepared, hub, ctx| hub.accept_start(prepared?, ctx)),
        )
    }
}

/// Start-time validation of what the run will read and need (`JobConfig::check_resources`):
/// data files non-empty and regular, model sizes within bounds and present in the weights, and
/// the stage's memory against what r1d may still allocate — a refusal is a 400 with the figures,
/// never an abort later. A run queued behind an active one is not held to today's free memory
/// (the active run holds it); its own loaders check again when it starts.
fn check_start_resources(job: &Job, source: &str, queued: bool) -> Result<ResourceCheck, ApiError> {
    let available = if queued {
        None
    } else {
        r1_kernels::model::limits::available_memory()
    };
    job.config
        .check_resources_against(Path::new(source), available.as_ref())
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

impl Handler<DeleteRun> for Hub {
    type Result = Result<RunInfo, ApiError>;

    fn handle(&mut self, msg: DeleteRun, _: &mut Context<Self>) -> Self::Result {
        let info = self
            .store
            .run(&msg.id)
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .ok_or_else(|| ApiError::NotFound(format!("no run {}", msg.id)))?;
        // Only an ended run, so nothing writes into what is removed (a queued one is stopped
        // first: `r1ctl stop` takes it out of the queue).
        if !info.state.is_final() || self.directors.contains_key(&msg.id) {
            return Err(ApiError::Conflict(format!(
                "run {} is {}: stop it first (r1ctl stop {}), then delete it",
                msg.id,
                info.state.name(),
                msg.id
            )));
        }
        let dir = self.output_dir(&msg.id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ApiError::Internal(format!(
                    "removing {} of run {}: {e}",
                    dir.display(),
                    msg.id
                )))
            }
        }
        self.store
            .delete_run(&msg.id)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        self.metrics.forget_run(&msg.id);
        tracing::info!(run = %msg.id, "deleted");
        Ok(info)
    }
}

impl Handler<ControlRun> for Hub {
    type Result = Result<RunInfo, ApiError>;

    fn handle(&mut self, msg: ControlRun, ctx: &mut Context<Self>) -> Self::Result {
        let info = self
            .store
            .run(&msg.id)
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .ok_or_else(|| ApiError::NotFound(format!("no run {}", msg.id)))?;
        if info.state == RunState::Queued && !self.directors.contains_key(&msg.id) {
            // Not started yet: stopping it takes it out of the queue; nothing else applies.
            if msg.action != Control::Stop {
                return Err(ApiError::Conflict(format!(
                    "run {} is queued: it can only be stopped (taken out of the queue)",
                    msg.id
                )));
            }
            self.metrics.set_run_state(&msg.id, "stopped");
            return self
                .update(&msg.id, |i| {
                    i.state = RunState::Stopped;
                    i.message = Some("taken out of the queue before it started".into());
                })
                .ok_or_else(|| ApiError::NotFound(format!("no run {}", msg.id)));
        }
        // A failed or stopped run continues from its newest good checkpoint on request.
        if matches!(info.state, RunState::Failed | RunState::Stopped)
            && msg.action == Control::Resume
        {
            return self.resume_failed(info, ctx);
        }
        let Some(director) = self.directors.get(&msg.id) else {
            return Err(ApiError::Conflict(format!(
                "run {} is {}",
                msg.id,
                info.state.name()
            )));
        };
        let allowed = match msg.action {
            Control::Pause => matches!(
                info.state,
                RunState::Queued | RunState::Starting | RunState::Running
            ),
            Control::Resume => info.state == RunState::Paused,
            Control::Stop => !matches!(info.state, RunState::Stopping),
        };
        if !allowed {
            return Err(ApiError::Conflict(format!(
                "run {} is {}: cannot {}",
                msg.id,
                info.state.name(),
                match msg.action {
                    Control::Pause => "pause",
                    Control::Resume => "resume",
                    Control::Stop => "stop",
                }
            )));
        }
        match msg.action {
            Control::Pause => director.pause.do_send(Pause),
            Control::Resume => director.resume.do_send(Resume),
            Control::Stop => director.stop.do_send(Stop),
        }
        Ok(info)
    }
}

impl Handler<SuspendAll> for Hub {
    type Result = ();

    fn handle(&mut self, _: SuspendAll, _: &mut Context<Self>) {
        for run in self.directors.values() {
            run.suspend.do_send(Suspend);
        }
    }
}

impl Handler<EvalRecorded> for Hub {
    type Result = ();

    fn handle(&mut self, msg: EvalRecorded, _: &mut Context<Self>) {
        if let (Some(director), Some(best)) =
            (self.directors.get(&msg.0), self.best_checkpoint(&msg.0))
        {
            director.set_best.do_send(SetBest(best));
        }
    }
}

impl Handler<LoadingRuns> for Hub {
    type Result = usize;

    fn handle(&mut self, _: LoadingRuns, _: &mut Context<Self>) -> usize {
        self.loading.len()
    }
}

impl Handler<LiveRuns> for Hub {
    type Result = usize;

    fn handle(&mut self, _: LiveRuns, _: &mut Context<Self>) -> usize {
        self.directors.len()
    }
}

impl Handler<RunEvent> for Hub {
    type Result = ();

    fn handle(&mut self, event: RunEvent, ctx: &mut Context<Self>) {
        let id = event.run;
        match event.kind {
            RunEventKind::State {
                state,
                step,
                message,
            } => {
                if state != RunState::Starting {
                    self.loading.remove(&id);
                }
                if state == RunState::Paused || state == RunState::Suspended || state.is_final() {
                    self.end_guarded_launch(&id);
                }
                if state == RunState::Suspended || state.is_final() {
                    self.directors.remove(&id);
                    self.sandboxes.remove(&id);
                }
                if state == RunState::Suspended {
                    return;
                }
                if state == RunState::Running || state == RunState::Paused {
                    // Steps after the checkpoint it resumed from are taken again.
                    if let Err(e) = self.store.truncate_after(&id, step) {
                        tracing::error!("truncating run {id}: {e}");
                    }
                }
                self.metrics.set_run_state(&id, state.name());
                self.update(&id, |info| {
                    info.state = state;
                    if state != RunState::Starting {
                        // A starting director has not loaded its checkpoint yet.
                        info.step = step;
                    }
                    if message.is_some() || state == RunState::Starting {
                        info.message = message;
                    }
                });
                if state.is_final() {
                    self.start_next_queued(ctx);
                }
            }
            RunEventKind::Step(record, samples) => {
                self.end_guarded_launch(&id);
                if let Err(e) = self.store.put_step(&id, &record, &samples) {
                    tracing::error!("recording step {} of {id}: {e}", record.step);
                }
                self.metrics.observe_step(&step_metrics(&id, &record));
                for component in &record.reward_timeouts {
                    self.metrics.observe_reward_timeout(component);
                }
                if let Some(judge) = self.sandboxes.get(&id).and_then(|s| s.running()) {
                    self.metrics.sync_sandbox(&judge.counts());
                }
                self.record_step(&id, &record);
            }
            RunEventKind::Progress { done, total, stats } => {
                self.end_guarded_launch(&id);
                let stage = self
                    .store
                    .run(&id)
                    .ok()
                    .flatten()
                    .map_or_else(|| "unknown".to_string(), |r| r.stage);
                self.metrics
                    .observe_progress(&id, &stage, done, total, &stats);
                if total > 0 {
                    self.update(&id, |info| {
                        info.step = done;
                        info.total_steps = total;
                    });
                }
            }
            RunEventKind::Checkpoint(saved) => {
                if let Err(e) = self.store.put_checkpoint(&id, &saved) {
                    tracing::error!("recording checkpoint {} of {id}: {e}", saved.step);
                }
                self.metrics
                    .observe_checkpoint(&id, saved.step, saved.unix_seconds, saved.bytes);
            }
        }
    }
}

/// Evaluates a checkpoint of `info` on its held-out split (blocking: call off the event loop).
pub fn evaluate_run(
    info: &RunInfo,
    checkpoints: &[SavedCheckpoint],
    request: &EvalRequest,
) -> Result<EvalReport, ApiError> {
    let began = Instant::now();
    let job = Job::parse(&info.config_toml, "config.toml", &info.base_dir)?;
    let saved = match request.step {
        Some(step) => checkpoints.iter().find(|c| c.step == step).ok_or_else(|| {
            ApiError::NotFound(format!("run {} has no checkpoint at step {step}", info.id))
        })?,
        None => checkpoints
            .last()
            .ok_or_else(|| ApiError::Conflict(format!("run {} has no checkpoint yet", info.id)))?,
    };
    if request.k == 0 || request.k > 64 {
        return Err(ApiError::BadRequest(format!(
            "k = {}: must be 1..=64",
            request.k
        )));
    }
    let model = load_model_dir(&saved.path)
        .map_err(|e| ApiError::Internal(format!("checkpoint {}: {e}", saved.step)))?;
    let tokenizer = job
        .config
        .model_spec()
        .tokenizer()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (mut problems, dataset) = eval_problems(info, &job, request)?;
    if let Some(n) = request.problems {
        if n == 0 {
            return Err(ApiError::BadRequest("problems must be at least 1".into()));
        }
        problems.truncate(n);
    }
    let k = if request.greedy { 1 } else { request.k };
    let sampling = SamplingParams {
        temperature: if request.greedy {
            0.0
        } else {
            request.temperature
        },
        top_p: request.top_p,
        ..job.config.sampling.clone()
    };
    let eval = evaluate(
        &model,
        &tokenizer,
        &problems,
        &job.settings(),
        sampling,
        k,
        request.seed,
    )
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(EvalReport {
        run: info.id.clone(),
        step: saved.step,
        dataset,
        problems: problems.len(),
        k,
        greedy: request.greedy,
        pass_at_1: eval.scores.pass_at_1,
        cons_at_k: eval.scores.cons_at_k,
        format_rate: eval.format_rate,
        mean_length: eval.mean_length,
        truncated_rate: eval.truncated_rate,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// What `POST /v1/runs/{id}/eval` scores, and its name in the report: the eval set the request
/// names, else the built-in task's held-out split. A run that trained on a file has no held-out
/// split and is refused without an eval set, rather than scored on the lines it trained on.
fn eval_problems(
    info: &RunInfo,
    job: &Job,
    request: &EvalRequest,
) -> Result<(Vec<StageProblem>, String), ApiError> {
    match (&request.data, &job.config.data) {
        (Some(path), _) => {
            let path = info.base_dir.join(path);
            let bad = |m: String| ApiError::BadRequest(format!("eval set {}: {m}", path.display()));
            let meta = std::fs::metadata(&path).map_err(|e| bad(e.to_string()))?;
            if !meta.is_file() || meta.len() == 0 {
                return Err(bad("not a non-empty regular file".into()));
            }
            let source = if path.extension().is_some_and(|e| e == "parquet") {
                DataConfig::Parquet {
                    path: path.clone(),
                    fields: Default::default(),
                }
            } else {
                DataConfig::Jsonl {
                    path: path.clone(),
                    fields: Default::default(),
                }
            };
            let problems = source
                .problems(job.config.run.seed, Split::Test)
                .map_err(|e| bad(e.to_string()))?;
            Ok((problems, format!("eval set {}", path.display())))
        }
        (None, DataConfig::Builtin { task, .. }) => Ok((
            job.problems(Split::Test).map_err(ApiError::Internal)?,
            format!("held-out split of the built-in task {task}"),
        )),
        (None, trained_on) => Err(ApiError::BadRequest(format!(
            "run {} trained on the file {}, which has no held-out split: scoring it would score \
             the lines it trained on; give an eval set (r1ctl eval {} --data FILE.jsonl)",
            info.id,
            trained_on.name(),
            info.id
        ))),
    }
}

/// A step as the metrics see it.
fn step_metrics(run: &str, record: &StepRecord) -> StepMetrics {
    let stats = &record.report.learner;
    StepMetrics {
        run: run.to_string(),
        stage: if record.preference.is_some() {
            "preference"
        } else {
            "grpo"
        }
        .into(),
        step: record.step,
        reward_mean: stats.reward_mean,
        reward_std: stats.reward_std,
        components: record
            .components
            .iter()
            .map(|(name, mean, std)| ComponentStat {
                name: name.clone(),
                mean: *mean,
                std: *std,
            })
            .collect(),
        accuracy: record.report.accuracy,
        kl: stats.kl,
        entropy: stats.entropy,
        clip_fraction: stats.clip_low_fraction + stats.clip_high_fraction,
        grad_norm: stats.grad_norm,
        lr: stats.lr,
        loss: stats.loss,
        completion_len_mean: stats.completion_len_mean,
        completion_len_max: stats.completion_len_max as f64,
        truncated_fraction: stats.truncated_fraction,
        zero_std_fraction: stats.frac_zero_std,
        reflection_rate: record.report.reflection_rate,
        phases: vec![
            ("sample".into(), record.phases.sample),
            ("judge".into(), record.phases.judge),
            ("learn".into(), record.phases.learn),
            ("checkpoint".into(), record.phases.checkpoint),
        ],
        step_seconds: record.seconds,
        tokens_generated: record.tokens_generated,
        tokens_trained: record.tokens_trained,
        reward_models: record
            .preference
            .iter()
            .flat_map(|p| &p.reward_models)
            .map(|m| RewardModelStat {
                name: m.name.clone(),
                mean: m.mean,
                std: m.std,
                decided_share: m.decided_share,
            })
            .collect(),
        preference: record
            .preference
            .as_ref()
            .map(|p| (p.preference_on, p.preference_reward)),
    }
}
