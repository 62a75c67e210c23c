//! The director: one daemon run's lifecycle. It starts the worker actors, runs the RL loop
//! (`stages::rl::run_rl` with [`ActorWorkers`]) on a thread of its own, maps pause, resume, stop
//! and suspend onto the run's [`RunLifecycle`], and tells its watcher everything that happens
//! (`RunEvent`). The step itself is not here: it is `stages::rl::rl_step`, the same for
//! `r1ctl train`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actix::prelude::*;

use crate::messages::{
    GetStatus, Pause, Resume, RunEvent, RunEventKind, RunState, SetBest, Stop, Suspend,
};
use crate::stages::rl::{run_rl, RlEvent, RlPlan};

use super::actor_workers::{ActorWorkers, WorkerAddrs};
use super::lifecycle::RunLifecycle;

/// Drives one run. Create with [`Director::new`], start with `Actor::start`.
pub struct Director {
    /// Run id (labels events).
    run: String,
    /// The plan, until the run's thread takes it.
    plan: Option<RlPlan>,
    /// Recorded checkpoints to resume from, newest first (empty: start from the model).
    resume_from: Vec<PathBuf>,
    /// The best checkpoint by evaluation, spared by pruning.
    best: Arc<Mutex<Option<PathBuf>>>,
    lifecycle: Arc<RunLifecycle>,
    watcher: Recipient<RunEvent>,
}

/// The run's thread ended (its final state is reported already).
#[derive(Message)]
#[rtype(result = "()")]
struct Ended;

impl Director {
    /// A director for run `run` of `plan`, resuming from the first loadable of `resume_from`
    /// (newest first), sparing `best` when pruning, reporting to `watcher`.
    pub fn new(
        run: String,
        plan: RlPlan,
        resume_from: Vec<PathBuf>,
        best: Option<PathBuf>,
        watcher: Recipient<RunEvent>,
    ) -> Self {
        let lifecycle = RunLifecycle::reporting_to(run.clone(), watcher.clone());
        Director {
            run,
            plan: Some(plan),
            resume_from,
            best: Arc::new(Mutex::new(best)),
            lifecycle: Arc::new(lifecycle),
            watcher,
        }
    }
}

impl Actor for Director {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.lifecycle.starting();
        let Some(plan) = self.plan.take() else {
            return;
        };
        let addrs = WorkerAddrs::start(&plan);
        let (run, watcher, lifecycle) = (
            self.run.clone(),
            self.watcher.clone(),
            self.lifecycle.clone(),
        );
        let (resume_from, best, me) = (self.resume_from.clone(), self.best.clone(), ctx.address());
        std::thread::spawn(move || {
            let mut workers = ActorWorkers::new(addrs, &plan, best);
            let emit = |kind| {
                watcher.do_send(RunEvent {
                    run: run.clone(),
                    kind,
                })
            };
            let mut events = |event: RlEvent| match event {
                // The lifecycle reports the start (`Running`, with what was resumed).
                RlEvent::Started(_) => {}
                RlEvent::Step(record, samples) => {
                    lifecycle.step_done(record.step);
                    emit(RunEventKind::Step(record, samples));
                }
                RlEvent::Checkpoint(saved) => emit(RunEventKind::Checkpoint(saved)),
            };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_rl(&plan, &mut workers, &resume_from, &*lifecycle, &mut events)
            }));
            let failure = match ran {
                Ok(Ok(report)) => {
                    lifecycle.finish(report.ended, None);
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("the run's thread panicked (see the log)".to_string()),
            };
            if let Some(message) = failure {
                tracing::error!(run = %run, "{message}");
                lifecycle.finish(RunState::Failed, Some(message));
            }
            me.do_send(Ended);
        });
    }
}

impl Handler<Ended> for Director {
    type Result = ();

    fn handle(&mut self, _: Ended, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Pause> for Director {
    type Result = ();

    fn handle(&mut self, _: Pause, _: &mut Context<Self>) {
        self.lifecycle.pause();
    }
}

impl Handler<Resume> for Director {
    type Result = ();

    fn handle(&mut self, _: Resume, _: &mut Context<Self>) {
        self.lifecycle.resume();
    }
}

impl Handler<Stop> for Director {
    type Result = ();

    fn handle(&mut self, _: Stop, _: &mut Context<Self>) {
        self.lifecycle.stop();
    }
}

impl Handler<Suspend> for Director {
    type Result = ();

    fn handle(&mut self, _: Suspend, _: &mut Context<Self>) {
        self.lifecycle.suspend();
    }
}

impl Handler<SetBest> for Director {
    type Result = ();

    fn handle(&mut self, msg: SetBest, _: &mut Context<Self>) {
        *self.best.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg.0);
    }
}

impl Handler<GetStatus> for Director {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.lifecycle.status())
    }
}
