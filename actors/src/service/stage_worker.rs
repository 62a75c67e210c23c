//! Runs a stage without RL steps (sft, rejection, distill, eval) for the daemon: the library's
//! stage function on its own thread, its progress events turned into [`RunEvent`]s. Pause,
//! resume, stop and suspend are the run's [`RunLifecycle`], the same state machine a director
//! drives: the stage watches the lifecycle's interrupt flag, and when it returns early the
//! lifecycle says what comes next. Those stages resume from what they wrote (checkpoints, the
//! rejection set), so a pause is a stop that a resume starts again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use crate::messages::{
    GetStatus, Pause, Resume, RunEvent, RunEventKind, RunState, SavedCheckpoint, SetBest, Stop,
    Suspend,
};
use crate::stages::rl::RunControl;
use crate::stages::StageEvent;

use super::lifecycle::RunLifecycle;

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

/// The stage's thread ended (its final state is reported already).
#[derive(Message)]
#[rtype(result = "()")]
struct Ended;

/// Runs one stage of one run; reports to its watcher like a director does.
pub struct StageWorker {
    /// Run id (labels events).
    run: String,
    /// The stage, run again after each pause.
    task: StageTask,
    lifecycle: Arc<RunLifecycle>,
    watcher: Recipient<RunEvent>,
}

impl StageWorker {
    /// A worker for run `run`, reporting to `watcher`; `step` is the progress already recorded
    /// (a resumed run's).
    pub fn new(run: String, task: StageTask, watcher: Recipient<RunEvent>, step: u64) -> Self {
        let lifecycle = RunLifecycle::reporting_to(run.clone(), watcher.clone());
        lifecycle.step_done(step);
        StageWorker {
            run,
            task,
            lifecycle: Arc::new(lifecycle),
            watcher,
        }
    }
}

/// Runs `task` under `lifecycle` until it ends for good, on the calling thread: starts it, starts
/// it again after each pause, and reports the final state. `emit` receives the stage's progress
/// as the watcher sees it; the states go through the lifecycle's sink.
pub fn run_stage(task: &StageTask, lifecycle: &RunLifecycle, emit: &mut dyn FnMut(RunEventKind)) {
    loop {
        lifecycle.started(lifecycle.status().step, None);
        let mut progress = |event: StageEvent| {
            if let StageEvent::Resumed { step } = event {
                lifecycle.started(step, Some(format!("resumed at step {step}")));
                return;
            }
            let Some(kind) = translate(event) else {
                return;
            };
            if let RunEventKind::Progress { done, total, .. } = &kind {
                if *total > 0 {
                    lifecycle.step_done(*done);
                }
            }
            emit(kind);
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            task(&mut progress, lifecycle.interrupt_flag())
        }));
        let (state, message) = match ran {
            Err(_) => (
                RunState::Failed,
                Some("the stage's thread panicked (see the log)".to_string()),
            ),
            Ok(Err(message)) => (RunState::Failed, Some(message)),
            Ok(Ok(outcome)) if !outcome.stopped => (RunState::Finished, Some(outcome.summary)),
            // Stopped although nothing asked it to: it cannot go on.
            Ok(Ok(_)) if !lifecycle.interrupt_flag().load(Ordering::Relaxed) => {
                (RunState::Stopped, None)
            }
            // Asked to pause, stop or suspend: waits here while paused.
            Ok(Ok(_)) => match lifecycle.between_steps(false) {
                None => continue,
                Some(state) => (state, None),
            },
        };
        lifecycle.finish(state, message);
        return;
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
        // A state: `run_stage` reports it through the lifecycle.
        StageEvent::Resumed { .. } => None,
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
        self.lifecycle.starting();
        let (run, task, watcher) = (self.run.clone(), self.task.clone(), self.watcher.clone());
        let (lifecycle, me) = (self.lifecycle.clone(), ctx.address());
        std::thread::spawn(move || {
            let mut emit = |kind| {
                watcher.do_send(RunEvent {
                    run: run.clone(),
                    kind,
                })
            };
            run_stage(&task, &lifecycle, &mut emit);
            me.do_send(Ended);
        });
    }
}

impl Handler<Ended> for StageWorker {
    type Result = ();

    fn handle(&mut self, _: Ended, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Pause> for StageWorker {
    type Result = ();

    fn handle(&mut self, _: Pause, _: &mut Context<Self>) {
        self.lifecycle.pause();
    }
}

impl Handler<Resume> for StageWorker {
    type Result = ();

    fn handle(&mut self, _: Resume, _: &mut Context<Self>) {
        self.lifecycle.resume();
    }
}

impl Handler<Stop> for StageWorker {
    type Result = ();

    fn handle(&mut self, _: Stop, _: &mut Context<Self>) {
        self.lifecycle.stop();
    }
}

impl Handler<Suspend> for StageWorker {
    type Result = ();

    fn handle(&mut self, _: Suspend, _: &mut Context<Self>) {
        self.lifecycle.suspend();
    }
}

impl Handler<SetBest> for StageWorker {
    type Result = ();

    fn handle(&mut self, _: SetBest, _: &mut Context<Self>) {}
}

impl Handler<GetStatus> for StageWorker {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.lifecycle.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A stage that takes a step every millisecond until it is told to stop, and resumes from the
    /// steps it "wrote" (`written`), as sft and rejection sampling do from their checkpoints.
    fn endless_stage(written: Arc<AtomicU64>, starts: Arc<AtomicU64>) -> StageTask {
        Arc::new(
            move |progress: &mut dyn FnMut(StageEvent), stop: &AtomicBool| {
                starts.fetch_add(1, Ordering::SeqCst);
                let mut step = written.load(Ordering::SeqCst);
                if step > 0 {
                    progress(StageEvent::Resumed { step });
                }
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    step += 1;
                    written.store(step, Ordering::SeqCst);
                    progress(StageEvent::Sampled {
                        prompts_done: step as usize,
                        prompts: 1_000_000,
                        kept: 0,
                    });
                }
                Ok(StageOutcome {
                    stopped: true,
                    summary: format!("stopped at {step}"),
                })
            },
        )
    }

    type Seen = Arc<Mutex<Vec<(RunState, u64, Option<String>)>>>;

    fn recorded() -> (Seen, Arc<RunLifecycle>) {
        let seen: Seen = Arc::default();
        let sink = seen.clone();
        let lifecycle = RunLifecycle::new(Box::new(
            move |state: RunState, step: u64, message: Option<String>| {
                sink.lock().unwrap().push((state, step, message))
            },
        ));
        (seen, Arc::new(lifecycle))
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_stage_pauses_resumes_from_what_it_wrote_and_stops_through_the_lifecycle() {
        let (seen, lifecycle) = recorded();
        let (written, starts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let task = endless_stage(written.clone(), starts.clone());
        let progress = Arc::new(AtomicU64::new(0));
        lifecycle.starting();
        let (run, last) = (lifecycle.clone(), progress.clone());
        let thread = std::thread::spawn(move || {
            run_stage(&task, &run, &mut |kind| {
                if let RunEventKind::Progress { done, .. } = kind {
                    last.store(done, Ordering::SeqCst);
                }
            })
        });
        wait_until("three steps", || lifecycle.status().step >= 3);

        lifecycle.pause();
        wait_until("paused", || lifecycle.status().state == RunState::Paused);
        let paused_at = lifecycle.status().step;
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            written.load(Ordering::SeqCst),
            paused_at,
            "a paused stage takes no steps"
        );
        assert_eq!(lifecycle.status().step, paused_at);
        assert_eq!(starts.load(Ordering::SeqCst), 1);

        lifecycle.resume();
        wait_until("a step after the resume", || {
            lifecycle.status().step > paused_at
        });
        assert_eq!(
            starts.load(Ordering::SeqCst),
            2,
            "resumed by starting it again"
        );

        lifecycle.stop();
        thread.join().unwrap();
        let stopped_at = written.load(Ordering::SeqCst);
        assert_eq!(lifecycle.status().state, RunState::Stopped);
        assert_eq!(lifecycle.status().step, stopped_at);
        assert_eq!(progress.load(Ordering::SeqCst), stopped_at);
        let states: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(state, step, message)| (*state, *step, message.clone()))
            .collect();
        let resumed = Some(format!("resumed at step {paused_at}"));
        assert_eq!(
            states,
            [
                (RunState::Starting, 0, None),
                (RunState::Running, 0, None),
                (RunState::Paused, paused_at, None),
                (RunState::Running, paused_at, None),
                (RunState::Running, paused_at, resumed),
                (RunState::Stopping, states[5].1, None),
                (RunState::Stopped, stopped_at, None),
            ]
        );
    }

    #[test]
    fn a_paused_stage_suspends_at_once_and_a_failure_or_an_unasked_stop_ends_it() {
        let (_, lifecycle) = recorded();
        let written = Arc::new(AtomicU64::new(0));
        let task = endless_stage(written.clone(), Arc::default());
        let run = lifecycle.clone();
        let thread = std::thread::spawn(move || run_stage(&task, &run, &mut |_| {}));
        lifecycle.pause();
        wait_until("paused", || lifecycle.status().state == RunState::Paused);
        lifecycle.suspend();
        thread.join().unwrap();
        assert_eq!(lifecycle.status().state, RunState::Suspended);

        let (seen, lifecycle) = recorded();
        let failing: StageTask = Arc::new(|_: &mut dyn FnMut(StageEvent), _: &AtomicBool| {
            Err("sft.data: no such file".to_string())
        });
        run_stage(&failing, &lifecycle, &mut |_| {});
        assert_eq!(
            seen.lock().unwrap().last().cloned(),
            Some((
                RunState::Failed,
                0,
                Some("sft.data: no such file".to_string())
            ))
        );

        let (_, lifecycle) = recorded();
        let quits: StageTask = Arc::new(|_: &mut dyn FnMut(StageEvent), _: &AtomicBool| {
            Ok(StageOutcome {
                stopped: true,
                summary: String::new(),
            })
        });
        run_stage(&quits, &lifecycle, &mut |_| {});
        assert_eq!(lifecycle.status().state, RunState::Stopped);
    }
}
