//! The actors of a daemon run (actix). A [`Director`] owns one RL run's lifecycle
//! ([`RunLifecycle`]: pause, resume, stop, suspend) and runs `stages::rl::run_rl` on a thread of
//! its own with [`ActorWorkers`]: the step's workers as actors — LearnerActor (which also samples,
//! from the weights it trains), JudgeActor, LangActor, RewardModelActor, KeeperActor — each on
//! its own thread. A
//! [`StageWorker`] runs a stage without RL steps (sft, rejection, distill, eval). The messages
//! are all in [`crate::messages`].

mod actor_workers;
mod director;
mod lifecycle;
mod stage_worker;
mod workers;

pub use actor_workers::{ActorWorkers, WorkerAddrs};
pub use director::Director;
pub use lifecycle::{RunLifecycle, StateSink};
pub use stage_worker::{StageOutcome, StageTask, StageWorker};
pub use workers::{JudgeActor, KeeperActor, LangActor, LearnerActor, RewardModelActor};
