//! Every message the actors exchange: the map of the data flow of one RL step. The step itself
//! is `stages::rl::rl_step`; `service::ActorWorkers` sends these on its behalf from the run's
//! thread, and `service::Director` forwards the run's events.
//!
//! ```text
//! ActorWorkers ──Load──────────▶ LearnerActor ──▶ Loaded (StartPoint)
//!              ──Generate──────▶ LearnerActor ──▶ Generated (it samples from the weights it
//!                                                 trains, through its engine's decoder)
//!              ──Judge─────────▶ JudgeActor       ┐
//!              ──ScoreLanguage─▶ LangActor        ├ at once, each with the plan's timeout
//!              ──ScoreResponses▶ RewardModelActor ┘ (preference runs)
//!              ──Learn─────────▶ LearnerActor ──▶ Learned (stats)
//!              ──TakeSnapshot──▶ LearnerActor ──SaveCheckpoint──▶ KeeperActor
//! Director     ──RunEvent──────▶ whoever watches the run (the daemon's Hub: sled + /metrics)
//! Control: Pause, Resume, Stop, Suspend, SetBest, GetStatus ──▶ Director (or StageWorker)
//! ```
//!
//! Replies that can fail carry `Result<_, String>`: the error text is what a user reads.

use std::path::PathBuf;
use std::sync::Arc;

use actix::Message;
use serde::{Deserialize, Serialize};

use r1_kernels::model::Model;
use r1_kernels::sample::{Completion, GenerationRequest};
use r1_kernels::train::adamw::AdamW;

use crate::judge::reward::{LanguageScore, RewardItem, RewardReport, RewardRules};
pub use crate::keeper::SavedCheckpoint;
use crate::keeper::StartPoint;
use crate::keeper::TrainerState;
use crate::learner::{GrpoStepStats, Rollout};
use crate::stages::preference::PreferenceStats;
use crate::stages::GrpoStepReport;

/// LearnerActor: generate completions for these requests (each asks for a group of samples)
/// with the policy as it stands.
#[derive(Message)]
#[rtype(result = "Result<Generated, String>")]
pub struct Generate {
    /// The requests, one per prompt.
    pub requests: Vec<GenerationRequest>,
}

/// What the sampler produced.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Completions ordered by (request, sample).
    pub completions: Vec<Completion>,
    /// The learner step of the weights that sampled them.
    pub weights_step: u64,
    /// What the sampler held for them, by category (the weights are the learner's, counted
    /// there).
    pub memory: Vec<r1_kernels::device::memory::MemoryPart>,
}

/// JudgeActor: accuracy and format of each item (the language share is the scorer's).
#[derive(Message)]
#[rtype(result = "Result<Vec<RewardReport>, String>")]
pub struct Judge {
    /// The items.
    pub items: Arc<Vec<RewardItem>>,
    /// The rules; their language weight is applied when the director combines the components.
    pub rules: RewardRules,
}

/// RewardModelActor: model `model`'s raw score of each (prompt, response), in order.
#[derive(Message)]
#[rtype(result = "Result<Vec<f32>, String>")]
pub struct ScoreResponses {
    /// Index of the reward model (as configured).
    pub model: usize,
    /// The items: user prompt and the part of the completion the model reads.
    pub items: Vec<(String, String)>,
}

/// LangActor: the language-consistency share of each item.
#[derive(Message)]
#[rtype(result = "Vec<Option<LanguageScore>>")]
pub struct ScoreLanguage {
    /// The items.
    pub items: Arc<Vec<RewardItem>>,
    /// Whether the rules weigh language (a missing target is then reported, not skipped).
    pub weighted: bool,
}

/// LearnerActor: load the starting point — the newest loadable checkpoint among `checkpoints` (newest
/// first), else the model directory.
#[derive(Message)]
#[rtype(result = "Result<Loaded, String>")]
pub struct Load {
    /// Checkpoint directories to try, newest first.
    pub checkpoints: Vec<PathBuf>,
    /// The config hash a checkpoint must carry to be resumed.
    pub config_hash: String,
}

/// Where the learner starts.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The step, counters and normaliser it starts from, what it resumed, what it skipped.
    pub start: StartPoint,
}

/// LearnerActor: one GRPO update on a rollout batch.
#[derive(Message)]
#[rtype(result = "Result<Learned, String>")]
pub struct Learn {
    /// Whole groups of rollouts.
    pub rollouts: Vec<Rollout>,
}

/// What the learner did.
#[derive(Debug, Clone)]
pub struct Learned {
    /// Statistics of the step.
    pub stats: GrpoStepStats,
    /// Optimizer steps taken so far.
    pub optimizer_step: u64,
}

/// LearnerActor: copies of what a checkpoint holds.
#[derive(Message)]
#[rtype(result = "Result<Snapshot, String>")]
pub struct TakeSnapshot;

/// Policy, reference and optimizer at one step.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The policy.
    pub policy: Arc<Model>,
    /// The reference, when β ≠ 0.
    pub reference: Option<Arc<Model>>,
    /// The optimizer state.
    pub optimizer: Arc<AdamW>,
    /// Learner steps taken.
    pub step: u64,
    /// Optimizer steps taken.
    pub optimizer_step: u64,
}

/// KeeperActor: write a checkpoint of `snapshot` under `root` and prune old ones.
#[derive(Message)]
#[rtype(result = "Result<SavedCheckpoint, String>")]
pub struct SaveCheckpoint {
    /// The checkpoints folder of the run.
    pub root: PathBuf,
    /// What to save.
    pub snapshot: Snapshot,
    /// Counters and provenance.
    pub state: TrainerState,
    /// Most recent checkpoints kept.
    pub keep_last: usize,
    /// Kept besides them: the best checkpoint by evaluation.
    pub keep_also: Option<PathBuf>,
}

/// Director: stop after the current step (keeping state; `Resume` continues).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pause;

/// Director: continue a paused run.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resume;

/// Director: finish the current step, write a checkpoint and end the run as stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Director: the daemon is shutting down — finish the current step, write a checkpoint and end
/// with `Suspended`, leaving the run to be resumed by the next daemon.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Suspend;

/// Director: this checkpoint scored best in evaluation; pruning spares it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetBest(pub PathBuf);

/// Director: where the run is.
#[derive(Message)]
#[rtype(result = "DirectorStatus")]
pub struct GetStatus;

/// The director's state as seen from outside: defined beside the HTTP API's bodies (r1-api), which
/// show it to clients that do not link the engine.
pub use r1_api::RunState;

/// Reply to `GetStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectorStatus {
    /// Lifecycle state.
    pub state: RunState,
    /// Steps completed.
    pub step: u64,
}

/// Seconds spent in each phase of a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTimes {
    /// Generating completions.
    pub sample: f64,
    /// Judging and language scoring (in parallel).
    pub judge: f64,
    /// The learner's update.
    pub learn: f64,
    /// Writing a checkpoint (0 on steps without one).
    pub checkpoint: f64,
}

/// One rollout kept for people to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// Step that sampled it.
    pub step: u64,
    /// The task prompt (before the template).
    pub prompt: String,
    /// The completion's text.
    pub completion: String,
    /// Total reward.
    pub reward: f32,
    /// Accuracy component.
    pub accuracy: f32,
    /// Format component.
    pub format: f32,
    /// Language share, when scored.
    pub language: Option<f32>,
    /// Why components fell short, one `component: reason` each (empty when all passed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
}

/// One step as recorded: the report, the phases and the tokens it moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step number (1-based, equal to the learner's).
    pub step: u64,
    /// Statistics of the step.
    pub report: GrpoStepReport,
    /// Reward components: (name, mean, population std).
    pub components: Vec<(String, f64, f64)>,
    /// Seconds per phase.
    pub phases: PhaseTimes,
    /// Wall-clock seconds of the whole step.
    pub seconds: f64,
    /// Completion tokens sampled.
    pub tokens_generated: u64,
    /// Tokens (prompt + completion) the learner trained on.
    pub tokens_trained: u64,
    /// Judge or scorer replies that did not come in time (their items scored 0).
    pub reward_timeouts: Vec<String>,
    /// Data cursor after the step.
    pub data_cursor: u64,
    /// The preference stage's statistics (rule accuracy, each reward model's scores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<PreferenceStats>,
}

/// What a director tells its watcher.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RunEvent {
    /// The run.
    pub run: String,
    /// What happened.
    pub kind: RunEventKind,
}

/// The events of a run.
#[derive(Debug, Clone)]
pub enum RunEventKind {
    /// Lifecycle change; `step` is the steps completed.
    State {
        /// New state.
        state: RunState,
        /// Steps completed.
        step: u64,
        /// Why, for `Failed` and for skipped checkpoints at start.
        message: Option<String>,
    },
    /// A step finished.
    Step(Box<StepRecord>, Vec<SampleRecord>),
    /// A checkpoint became durable.
    Checkpoint(SavedCheckpoint),
    /// Progress of a stage that has no GRPO step records (sft, rejection, distill, eval).
    Progress {
        /// Work done: steps (sft), prompts sampled (rejection), datasets evaluated (eval).
        done: u64,
        /// Work planned.
        total: u64,
        /// Named statistics of the latest unit of work (`loss`, `learning_rate`, `grad_norm`,
        /// `kept`, `pass_at_1`, …).
        stats: Vec<(String, f64)>,
    },
}
