//! The pause/resume/stop/suspend state machine of every daemon run, RL or not. The actor's
//! handlers (the director's, the stage worker's) request changes; the run's own thread asks it
//! whether to go on and blocks here while the run is paused. An RL run (`stages::rl::run_rl`)
//! asks between steps. A stage without RL steps (sft, rejection, distill, eval) pauses by
//! stopping: it watches [`RunLifecycle::interrupt_flag`], returns early when it is raised, and
//! asks the same question afterwards; `None` then means "resumed: start it again" (it resumes
//! from what it wrote). Every state change is reported through one callback, so the watcher sees
//! them in the order they happened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use actix::Recipient;

use crate::messages::{DirectorStatus, RunEvent, RunEventKind, RunState};
use crate::stages::rl::RunControl;

/// Called with (state, steps done, why) on every change.
pub type StateSink = Box<dyn Fn(RunState, u64, Option<String>) + Send + Sync>;

/// What the handlers asked and where the run is.
struct Requests {
    state: RunState,
    step: u64,
    pause: bool,
    stop: bool,
    suspend: bool,
}

/// One run's lifecycle, shared by its director (requests) and its run loop (decisions).
pub struct RunLifecycle {
    requests: Mutex<Requests>,
    /// Wakes a paused run loop.
    changed: Condvar,
    /// Raised (under the `requests` lock) while a pause, stop or suspend is pending, lowered when
    /// the run starts again: how a stage that cannot wait between steps learns it must return.
    interrupt: AtomicBool,
    sink: StateSink,
}

impl RunLifecycle {
    /// A run about to start (`Starting`, not yet reported).
    pub fn new(sink: StateSink) -> Self {
        RunLifecycle {
            requests: Mutex::new(Requests {
                state: RunState::Starting,
                step: 0,
                pause: false,
                stop: false,
                suspend: false,
            }),
            changed: Condvar::new(),
            interrupt: AtomicBool::new(false),
            sink,
        }
    }

    /// A run about to start whose every state goes to `watcher` as a [`RunEvent`] of run `run`.
    pub fn reporting_to(run: String, watcher: Recipient<RunEvent>) -> Self {
        RunLifecycle::new(Box::new(
            move |state: RunState, step: u64, message: Option<String>| {
                watcher.do_send(RunEvent {
                    run: run.clone(),
                    kind: RunEventKind::State {
                        state,
                        step,
                        message,
                    },
                })
            },
        ))
    }

    /// Raised while a pause, stop or suspend is pending; the stop flag a stage without RL steps
    /// polls (an RL run waits in [`RunControl::between_steps`] instead and never reads it).
    pub fn interrupt_flag(&self) -> &AtomicBool {
        &self.interrupt
    }

    fn lock(&self) -> MutexGuard<'_, Requests> {
        // A panic while holding the lock leaves plain flags behind: still usable.
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, requests: &mut Requests, state: RunState, message: Option<String>) {
        requests.state = state;
        (self.sink)(state, requests.step, message);
    }

    /// Reports `Starting`.
    pub fn starting(&self) {
        let mut r = self.lock();
        self.set(&mut r, RunState::Starting, None);
    }

    /// Pause after the current step (while starting or running).
    pub fn pause(&self) {
        let mut r = self.lock();
        if matches!(r.state, RunState::Running | RunState::Starting) {
            r.pause = true;
            self.interrupt.store(true, Ordering::Relaxed);
        }
    }

    /// Continue a paused run (or cancel a pause not yet taken).
    pub fn resume(&self) {
        let mut r = self.lock();
        r.pause = false;
        if r.state == RunState::Paused {
            self.set(&mut r, RunState::Running, None);
            self.changed.notify_all();
        }
    }

    /// Stop after the current step (at once when paused), with a checkpoint.
    pub fn stop(&self) {
        let mut r = self.lock();
        if r.state.is_final() || r.stop {
            return;
        }
        r.stop = true;
        self.interrupt.store(true, Ordering::Relaxed);
        self.set(&mut r, RunState::Stopping, None);
        self.changed.notify_all();
    }

    /// Let the run go (checkpointed) for the next daemon to resume.
    pub fn suspend(&self) {
        let mut r = self.lock();
        if r.state.is_final() || r.suspend {
            return;
        }
        r.suspend = true;
        self.interrupt.store(true, Ordering::Relaxed);
        self.changed.notify_all();
    }

    /// A step finished: `step` steps are done.
    pub fn step_done(&self, step: u64) {
        self.lock().step = step;
    }

    /// The run ended in `state` (`message`: why, for a failure).
    pub fn finish(&self, state: RunState, message: Option<String>) {
        let mut r = self.lock();
        self.set(&mut r, state, message);
    }

    /// Where the run is.
    pub fn status(&self) -> DirectorStatus {
        let r = self.lock();
        DirectorStatus {
            state: r.state,
            step: r.step,
        }
    }
}

impl RunControl for RunLifecycle {
    fn started(&self, step: u64, message: Option<String>) {
        let mut r = self.lock();
        r.step = step;
        // A request that came before this (re)start still counts.
        self.interrupt
            .store(r.pause || r.stop || r.suspend, Ordering::Relaxed);
        let state = if r.stop {
            RunState::Stopping
        } else {
            RunState::Running
        };
        // A stage started again after a resume is `Running` already: nothing new to tell.
        if state != r.state || message.is_some() {
            self.set(&mut r, state, message);
        }
    }

    fn between_steps(&self, done: bool) -> Option<RunState> {
        let mut r = self.lock();
        loop {
            if r.suspend {
                return Some(RunState::Suspended);
            }
            if r.stop {
                return Some(RunState::Stopped);
            }
            if done {
                return Some(RunState::Finished);
            }
            if !r.pause {
                return None;
            }
            r.pause = false;
            self.set(&mut r, RunState::Paused, None);
            while r.state == RunState::Paused && !r.stop && !r.suspend {
                r = self.changed.wait(r).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn recorded() -> (Arc<Mutex<Vec<RunState>>>, RunLifecycle) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let lifecycle = RunLifecycle::new(Box::new(
            move |state: RunState, _: u64, _: Option<String>| sink.lock().unwrap().push(state),
        ));
        (seen, lifecycle)
    }

    #[test]
    fn a_pause_waits_between_steps_until_resumed_and_a_stop_ends_it() {
        let (seen, lifecycle) = recorded();
        let lifecycle = Arc::new(lifecycle);
        lifecycle.starting();
        lifecycle.pause();
        lifecycle.started(0, None);
        let run = lifecycle.clone();
        let waiting = std::thread::spawn(move || run.between_steps(false));
        while lifecycle.status().state != RunState::Paused {
            std::thread::yield_now();
        }
        lifecycle.resume();
        // Resumed: the paused loop takes its next step; a stop then ends the run.
        assert_eq!(waiting.join().unwrap(), None);
        lifecycle.stop();
        assert_eq!(lifecycle.between_steps(false), Some(RunState::Stopped));
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [
                RunState::Starting,
                RunState::Running,
                RunState::Paused,
                RunState::Running,
                RunState::Stopping
            ]
        );
    }

    #[test]
    fn suspend_wins_over_stop_and_stop_over_the_last_step() {
        let (_, lifecycle) = recorded();
        lifecycle.started(3, None);
        assert_eq!(lifecycle.between_steps(true), Some(RunState::Finished));
        lifecycle.stop();
        assert_eq!(lifecycle.between_steps(true), Some(RunState::Stopped));
        lifecycle.suspend();
        assert_eq!(lifecycle.between_steps(false), Some(RunState::Suspended));
        assert_eq!(lifecycle.status().step, 3);
    }
}
