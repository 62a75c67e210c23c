//! The director: runs a GRPO stage one step at a time, between steps honouring pause, resume and
//! stop, and tells its watcher everything that happens (`RunEvent`).

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use futures_util::future::join;

use crate::judge::reward::RewardReport;
use crate::keeper::TrainerState;
use crate::messages::{
    DirectorStatus, Generate, GetStatus, Judge, Learn, Load, Pause, PhaseTimes, Resume, RunEvent,
    RunEventKind, RunState, SampleRecord, SaveCheckpoint, SavedCheckpoint, ScoreLanguage, SetBest,
    StepRecord, Stop, Suspend, TakeSnapshot, UpdateWeights,
};
use crate::stages::grpo::{
    group_requests, reward_item, rollouts, sampling_for, stage_rules, step_report,
};

use super::workers::{JudgeActor, KeeperActor, LangActor, LearnerActor, SamplerActor};
use super::GrpoPlan;

/// The worker actors of one run.
#[derive(Clone)]
struct Workers {
    sampler: Addr<SamplerActor>,
    judge: Addr<JudgeActor>,
    lang: Addr<LangActor>,
    learner: Addr<LearnerActor>,
    keeper: Addr<KeeperActor>,
}

/// Drives one run. Create with [`Director::new`], start with `Actor::start`.
pub struct Director {
    plan: Arc<GrpoPlan>,
    /// Spared by pruning (the best checkpoint by evaluation).
    best: Option<std::path::PathBuf>,
    watcher: Recipient<RunEvent>,
    workers: Workers,
    state: RunState,
    step: u64,
    optimizer_step: u64,
    last_checkpoint: Option<u64>,
    pause_requested: bool,
    stop_requested: bool,
    suspend_requested: bool,
    busy: bool,
}

impl Director {
    /// A director for `plan`, reporting to `watcher`; its workers start on their own threads.
    pub fn new(plan: GrpoPlan, watcher: Recipient<RunEvent>) -> Self {
        let tokenizer = plan.tokenizer.clone();
        let max_batch = plan.settings.max_batch;
        let sandbox = plan.sandbox.clone();
        let (model_dir, learner_config) = (plan.model_dir.clone(), plan.learner.clone());
        let workers = Workers {
            sampler: SyncArbiter::start(1, move || SamplerActor::new(tokenizer.clone(), max_batch)),
            judge: SyncArbiter::start(1, move || JudgeActor::new(sandbox.clone())),
            lang: SyncArbiter::start(1, LangActor::default),
            learner: SyncArbiter::start(1, move || {
                LearnerActor::new(model_dir.clone(), learner_config.clone())
            }),
            keeper: SyncArbiter::start(1, KeeperActor::default),
        };
        Director {
            best: plan.best.clone(),
            plan: Arc::new(plan),
            watcher,
            workers,
            state: RunState::Starting,
            step: 0,
            optimizer_step: 0,
            last_checkpoint: None,
            pause_requested: false,
            stop_requested: false,
            suspend_requested: false,
            busy: false,
        }
    }

    fn emit(&self, kind: RunEventKind) {
        self.watcher.do_send(RunEvent {
            run: self.plan.run.clone(),
            kind,
        });
    }

    fn set_state(&mut self, state: RunState, message: Option<String>) {
        self.state = state;
        self.emit(RunEventKind::State {
            state,
            step: self.step,
            message,
        });
    }

    fn fail(&mut self, message: String, ctx: &mut Context<Self>) {
        tracing::error!(run = %self.plan.run, "{message}");
        self.set_state(RunState::Failed, Some(message));
        ctx.stop();
    }

    /// Decides what happens after a step (or the start): another step, a pause, or the end.
    fn next(&mut self, ctx: &mut Context<Self>) {
        if self.suspend_requested {
            self.end(RunState::Suspended, ctx);
        } else if self.stop_requested {
            self.end(RunState::Stopped, ctx);
        } else if self.step >= self.plan.steps {
            self.end(RunState::Finished, ctx);
        } else if self.pause_requested {
            self.pause_requested = false;
            self.set_state(RunState::Paused, None);
        } else {
            self.take_step(ctx);
        }
    }

    fn take_step(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        let due = (self.step + 1).is_multiple_of(self.plan.checkpoint_every.max(1));
        let fut = step(
            self.plan.clone(),
            self.workers.clone(),
            self.step,
            due,
            self.best.clone(),
        );
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            match result {
                Ok(done) => {
                    act.step = done.record.step;
                    act.optimizer_step = done.optimizer_step;
                    let checkpoint = done.checkpoint.clone();
                    act.emit(RunEventKind::Step(Box::new(done.record), done.samples));
                    if let Some(saved) = checkpoint {
                        act.last_checkpoint = Some(saved.step);
                        act.emit(RunEventKind::Checkpoint(saved));
                    }
                    act.next(ctx);
                }
                Err(message) => act.fail(format!("step {}: {message}", act.step + 1), ctx),
            }
        }));
    }

    /// Ends the run: a checkpoint of the last step if it has none, then the final state.
    fn end(&mut self, state: RunState, ctx: &mut Context<Self>) {
        // Step 0 has nothing to save: the model directory is the starting point.
        if self.last_checkpoint == Some(self.step) || self.step == 0 {
            self.set_state(state, None);
            ctx.stop();
            return;
        }
        self.busy = true;
        let fut = checkpoint(
            self.plan.clone(),
            self.workers.clone(),
            self.step,
            self.optimizer_step,
            self.best.clone(),
        );
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.busy = false;
            match result {
                Ok(saved) => {
                    act.last_checkpoint = Some(saved.step);
                    act.emit(RunEventKind::Checkpoint(saved));
                    act.set_state(state, None);
                    ctx.stop();
                }
                Err(message) => act.fail(format!("final checkpoint: {message}"), ctx),
            }
        }));
    }
}

impl Actor for Director {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.set_state(RunState::Starting, None);
        self.busy = true;
        let load = Load {
            checkpoints: self.plan.resume_from.clone(),
            config_hash: self.plan.config_hash.clone(),
        };
        let learner = self.workers.learner.clone();
        let fut = async move { learner.send(load).await.map_err(|e| e.to_string())? };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            match result {
                Ok(loaded) => {
                    act.step = loaded.weights.step;
                    if loaded.resumed_from.is_some() {
                        act.last_checkpoint = Some(act.step);
                    }
                    act.workers.sampler.do_send(UpdateWeights(loaded.weights));
                    let mut notes: Vec<String> = loaded
                        .skipped
                        .iter()
                        .map(|s| format!("skipped damaged checkpoint {s}"))
                        .collect();
                    if let Some(dir) = &loaded.resumed_from {
                        notes.push(format!("resumed from {}", dir.display()));
                    }
                    let message = (!notes.is_empty()).then(|| notes.join("; "));
                    if act.stop_requested {
                        act.set_state(RunState::Stopping, message);
                    } else {
                        act.set_state(RunState::Running, message);
                    }
                    act.next(ctx);
                }
                Err(message) => act.fail(format!("loading: {message}"), ctx),
            }
        }));
    }
}

impl Handler<Pause> for Director {
    type Result = ();

    fn handle(&mut self, _: Pause, _: &mut Context<Self>) {
        if matches!(self.state, RunState::Running | RunState::Starting) {
            self.pause_requested = true;
        }
    }
}

impl Handler<Resume> for Director {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.pause_requested = false;
        if self.state == RunState::Paused && !self.busy {
            self.set_state(RunState::Running, None);
            self.next(ctx);
        }
    }
}

impl Handler<Stop> for Director {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        if self.state.is_final() || self.stop_requested {
            return;
        }
        self.stop_requested = true;
        self.set_state(RunState::Stopping, None);
        if !self.busy {
            self.next(ctx);
        }
    }
}

impl Handler<Suspend> for Director {
    type Result = ();

    fn handle(&mut self, _: Suspend, ctx: &mut Context<Self>) {
        if self.state.is_final() || self.suspend_requested {
            return;
        }
        self.suspend_requested = true;
        if !self.busy {
            self.next(ctx);
        }
    }
}

impl Handler<SetBest> for Director {
    type Result = ();

    fn handle(&mut self, msg: SetBest, _: &mut Context<Self>) {
        self.best = Some(msg.0);
    }
}

impl Handler<GetStatus> for Director {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DirectorStatus {
            state: self.state,
            step: self.step,
        })
    }
}

/// What one step produced.
struct StepDone {
    record: StepRecord,
    samples: Vec<SampleRecord>,
    checkpoint: Option<SavedCheckpoint>,
    optimizer_step: u64,
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Step `step` (0-based) of the plan: sample → judge ‖ language → learn → (checkpoint).
async fn step(
    plan: Arc<GrpoPlan>,
    workers: Workers,
    step: u64,
    checkpoint_due: bool,
    best: Option<std::path::PathBuf>,
) -> Result<StepDone, String> {
    let began = Instant::now();
    let mut phases = PhaseTimes::default();
    let problems = plan.batch(step);
    let tokenizer = &plan.tokenizer;
    let sampling = sampling_for(&plan.settings, tokenizer);
    let batch = group_requests(
        &problems,
        &plan.settings,
        tokenizer,
        &sampling,
        plan.learner.group_size,
        plan.step_seed(step),
    )
    .map_err(|e| e.to_string())?;

    let t = Instant::now();
    let generated = workers
        .sampler
        .send(Generate {
            requests: batch.requests,
        })
        .await
        .map_err(|e| format!("sampler: {e}"))??;
    phases.sample = t.elapsed().as_secs_f64();
    let completions = generated.completions;

    let t = Instant::now();
    let rules = stage_rules(&plan.settings, batch.prefilled_think);
    let items = Arc::new(
        completions
            .iter()
            .map(|c| reward_item(&problems, c))
            .collect::<Vec<_>>(),
    );
    let (judged, languages) = join(
        workers
            .judge
            .send(Judge {
                items: items.clone(),
                rules,
            })
            .timeout(plan.reward_timeout),
        workers
            .lang
            .send(ScoreLanguage {
                items: items.clone(),
                weighted: rules.weights.language != 0.0,
            })
            .timeout(plan.reward_timeout),
    )
    .await;
    let mut reward_timeouts = Vec::new();
    let mut reports = match judged {
        Ok(reports) => reports?,
        Err(actix::MailboxError::Timeout) => {
            reward_timeouts.push("judge".to_string());
            vec![RewardReport::unjudged("the judge did not answer in time"); items.len()]
        }
        Err(e) => return Err(format!("judge: {e}")),
    };
    let languages = match languages {
        Ok(languages) => languages,
        Err(actix::MailboxError::Timeout) => {
            reward_timeouts.push("language".to_string());
            vec![None; items.len()]
        }
        Err(e) => return Err(format!("language scorer: {e}")),
    };
    for (report, language) in reports.iter_mut().zip(languages) {
        report.set_language(language, &rules.weights);
    }
    phases.judge = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let batch_rollouts = rollouts(&batch.prompts, &completions, &reports);
    let tokens_trained = batch_rollouts
        .iter()
        .map(|r| (r.prompt_ids.len() + r.completion_ids.len()) as u64)
        .sum();
    let learned = workers
        .learner
        .send(Learn {
            rollouts: batch_rollouts,
        })
        .await
        .map_err(|e| format!("learner: {e}"))??;
    workers.sampler.do_send(UpdateWeights(learned.weights));
    phases.learn = t.elapsed().as_secs_f64();

    let mut report = step_report(learned.stats, &problems, &completions, &reports);
    report.phases = crate::stages::grpo::PhaseSeconds {
        sample: phases.sample,
        judge: phases.judge,
        learn: phases.learn,
    };
    let new_step = report.learner.step;
    let checkpoint = if checkpoint_due || new_step >= plan.steps {
        let t = Instant::now();
        let saved = checkpoint(
            plan.clone(),
            workers,
            new_step,
            learned.optimizer_step,
            best,
        )
        .await?;
        phases.checkpoint = t.elapsed().as_secs_f64();
        Some(saved)
    } else {
        None
    };

    let column = |f: &dyn Fn(&RewardReport) -> Option<f64>| -> Vec<f64> {
        reports.iter().filter_map(f).collect()
    };
    let components = [
        ("accuracy", column(&|r| Some(r.accuracy.reward as f64))),
        ("format", column(&|r| Some(r.format.reward as f64))),
        (
            "language",
            column(&|r| r.language.as_ref().map(|l| l.share as f64)),
        ),
    ]
    .into_iter()
    .map(|(name, values)| {
        let (mean, std) = mean_std(&values);
        (name.to_string(), mean, std)
    })
    .collect();
    let g = plan.learner.group_size.max(1);
    let samples = completions
        .iter()
        .zip(&reports)
        .step_by(g)
        .take(plan.samples_per_step)
        .map(|(c, r)| SampleRecord {
            step: new_step,
            prompt: problems[c.request].prompt.clone(),
            completion: c.text.clone().unwrap_or_default(),
            reward: r.total,
            accuracy: r.accuracy.reward,
            format: r.format.reward,
            language: r.language.as_ref().map(|l| l.share),
        })
        .collect();
    Ok(StepDone {
        record: StepRecord {
            step: new_step,
            components,
            phases,
            seconds: began.elapsed().as_secs_f64(),
            tokens_generated: completions.iter().map(|c| c.token_ids.len() as u64).sum(),
            tokens_trained,
            reward_timeouts,
            data_cursor: new_step * plan.prompts_per_step as u64,
            report,
        },
        samples,
        checkpoint,
        optimizer_step: learned.optimizer_step,
    })
}

/// A checkpoint of the learner's current state at `step`.
async fn checkpoint(
    plan: Arc<GrpoPlan>,
    workers: Workers,
    step: u64,
    optimizer_step: u64,
    best: Option<std::path::PathBuf>,
) -> Result<SavedCheckpoint, String> {
    let snapshot = workers
        .learner
        .send(TakeSnapshot)
        .await
        .map_err(|e| format!("learner: {e}"))??;
    let state = TrainerState {
        step,
        optimizer_step,
        data_cursor: step * plan.prompts_per_step as u64,
        seed: plan.seed,
        config_hash: plan.config_hash.clone(),
        reward_normaliser: None,
    };
    workers
        .keeper
        .send(SaveCheckpoint {
            root: plan.checkpoint_root.clone(),
            snapshot,
            state,
            keep_last: plan.keep_last,
            keep_also: best,
        })
        .await
        .map_err(|e| format!("keeper: {e}"))?
}
