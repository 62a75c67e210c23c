//! Runs a stage without GRPO steps (sft, rejection, distill, eval) for the daemon: the library's
//! stage function on its own thread, its progress events turned into [`RunEvent`]s, and pause,
//! resume, stop and suspend mapped onto the stage's stop flag. Those stages resume from what they
//! wrote (checkpoints, the rejection set), so a pause is a stop that a resume starts again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use crate::messages::{
    DirectorStatus, GetStatus, Pause, Resume, RunEvent, RunEventKind, RunState, SavedCheckpoint,
    SetBest, Stop, Suspend,
};
use crate::stages::StageEvent;

/// How a stage run ended: whether the stop flag ended it, and a line for people.
#[derive(Debug, Clone, PartialEq)]
pub struct StageOutcome {
    /// The stop flag ended it before its end.
    pub stopped: bool,
    /// What it did (`kept 12 of 40 samples -> …/sft.jsonl`).
    pub summary: String,
}

/// A stage to run: called with a progress callback and the stop flag, on the worker's thread.
pub type StageTask = Arc<
    dyn Fn(&mut dyn FnMut(StageEvent), &AtomicBool) -> Result<StageOutcome, String> + Send + Sync,
>;

/// The stage's thread ended.
#[derive(Message)]
#[rtype(result = "()")]
struct Ended(Result<StageOutcome, String>);

/// Runs one stage of one run; reports to its watcher like a director does.
pub struct StageWorker {
    run: String,
    task: StageTask,
    watcher: Recipient<RunEvent>,
    stop: Arc<AtomicBool>,
    state: RunState,
    step: u64,
    busy: bool,
    pause_requested: bool,
    stop_requested: bool,
    suspend_requested: bool,
}

impl StageWorker {
    /// A worker for run `run`, reporting to `watcher`; `step` is the progress already recorded
    /// (a resumed run's).
    pub fn new(run: String, task: StageTask, watcher: Recipient<RunEvent>, step: u64) -> Self {
        StageWorker {
            run,
            task,
            watcher,
            stop: Arc::new(AtomicBool::new(false)),
            state: RunState::Starting,
            step,
            busy: false,
            pause_requested: false,
            stop_requested: false,
            suspend_requested: false,
        }
    }

    fn emit(&self, kind: RunEventKind) {
        self.watcher.do_send(RunEvent {
            run: self.run.clone(),
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

    /// Starts (or starts again) the stage on its own thread.
    fn spawn(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        self.stop.store(false, Ordering::Relaxed);
        self.set_state(RunState::Running, None);
        let (task, stop, me) = (self.task.clone(), self.stop.clone(), ctx.address());
        let ended = me.clone();
        let (run, watcher) = (self.run.clone(), self.watcher.clone());
        std::thread::spawn(move || {
            let mut progress = |event: StageEvent| {
                if let Some(kind) = translate(event) {
                    match &kind {
                        RunEventKind::Progress { done, total, .. } if *total > 0 => {
                            me.do_send(Reached(*done))
                        }
                        RunEventKind::State { step, .. } => me.do_send(Reached(*step)),
                        _ => {}
                    }
                    watcher.do_send(RunEvent {
                        run: run.clone(),
                        kind,
                    });
                }
            };
            let result = task(&mut progress, &stop);
            ended.do_send(Ended(result));
        });
    }

    fn end(&mut self, state: RunState, message: Option<String>, ctx: &mut Context<Self>) {
        self.set_state(state, message);
        ctx.stop();
    }
}

/// A stage's event as the watcher sees it (`None`: nothing to tell it).
fn translate(event: StageEvent) -> Option<RunEventKind> {
    let progress = |done: u64, total: u64, stats: Vec<(&str, f64)>| RunEventKind::Progress {
        done,
        total,
        stats: stats
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect(),
    };
    match event {
        StageEvent::Note { message } => {
            tracing::info!("{message}");
            None
        }
        StageEvent::Resumed { step } => Some(RunEventKind::State {
            state: RunState::Running,
            step,
            message: Some(format!("resumed at step {step}")),
        }),
        StageEvent::SftStep {
            step, steps, stats, ..
        } => Some(progress(
            step,
            steps,
            vec![
                ("loss", stats.loss),
                ("learning_rate", stats.lr),
                ("grad_norm", stats.grad_norm),
            ],
        )),
        StageEvent::Sampled {
            prompts_done,
            prompts,
            kept,
        } => Some(progress(
            prompts_done as u64,
            prompts as u64,
            vec![("kept", kept as f64)],
        )),
        StageEvent::Evaluated { eval, .. } => Some(progress(
            0,
            0,
            vec![
                ("pass_at_1", eval.scores.pass_at_1),
                ("cons_at_k", eval.scores.cons_at_k),
            ],
        )),
        StageEvent::Checkpoint { step, path } => {
            Some(RunEventKind::Checkpoint(SavedCheckpoint::of(path, step)))
        }
        // GRPO and preference steps go through the director, never here.
        StageEvent::GrpoStep { .. } | StageEvent::PreferenceStep { .. } => None,
    }
}

impl Actor for StageWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.set_state(RunState::Starting, None);
        self.spawn(ctx);
    }
}

impl Handler<Ended> for StageWorker {
    type Result = ();

    fn handle(&mut self, msg: Ended, ctx: &mut Context<Self>) {
        self.busy = false;
        match msg.0 {
            Err(message) => self.end(RunState::Failed, Some(message), ctx),
            Ok(outcome) if !outcome.stopped => {
                self.end(RunState::Finished, Some(outcome.summary), ctx)
            }
            Ok(_) if self.suspend_requested => self.end(RunState::Suspended, None, ctx),
            Ok(_) if self.stop_requested => self.end(RunState::Stopped, None, ctx),
            Ok(_) if self.pause_requested => {
                self.pause_requested = false;
                self.set_state(RunState::Paused, None);
            }
            // Stopped without being asked (cannot happen: only this worker sets the flag).
            Ok(_) => self.end(RunState::Stopped, None, ctx),
        }
    }
}

/// How far the stage has come (kept for the states the worker reports).
#[derive(Message)]
#[rtype(result = "()")]
struct Reached(u64);

impl Handler<Reached> for StageWorker {
    type Result = ();

    fn handle(&mut self, msg: Reached, _: &mut Context<Self>) {
        self.step = msg.0;
    }
}

impl Handler<Pause> for StageWorker {
    type Result = ();

    fn handle(&mut self, _: Pause, _: &mut Context<Self>) {
        if self.busy {
            self.pause_requested = true;
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

impl Handler<Resume> for StageWorker {
    type Result = ();

    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.pause_requested = false;
        if self.state == RunState::Paused && !self.busy {
            self.spawn(ctx);
        }
    }
}

impl Handler<Stop> for StageWorker {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        if self.state.is_final() || self.stop_requested {
            return;
        }
        self.stop_requested = true;
        if self.busy {
            self.stop.store(true, Ordering::Relaxed);
            self.set_state(RunState::Stopping, None);
        } else {
            self.end(RunState::Stopped, None, ctx);
        }
    }
}

impl Handler<Suspend> for StageWorker {
    type Result = ();

    fn handle(&mut self, _: Suspend, ctx: &mut Context<Self>) {
        if self.state.is_final() || self.suspend_requested {
            return;
        }
        self.suspend_requested = true;
        if self.busy {
            self.stop.store(true, Ordering::Relaxed);
        } else {
            self.end(RunState::Suspended, None, ctx);
        }
    }
}

impl Handler<SetBest> for StageWorker {
    type Result = ();

    fn handle(&mut self, _: SetBest, _: &mut Context<Self>) {}
}

impl Handler<GetStatus> for StageWorker {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DirectorStatus {
            state: self.state,
            step: self.step,
        })
    }
}
