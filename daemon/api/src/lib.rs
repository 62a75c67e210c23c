//! r1-api: the HTTP API's JSON bodies, shared by `r1d` and `r1ctl`. Only serde: a client links
//! this crate, not the daemon (actix-web, sled, prometheus) or the engine. r1-daemon re-exports it
//! as `r1_daemon::api`, r1-actors its [`RunState`] as `r1_actors::messages::RunState`.
//!
//! Routes (all but `/healthz` need `Authorization: Bearer <token>`):
//! - `GET /healthz` → `{"status":"ok","version":…}`
//! - `GET /metrics` → Prometheus text
//! - `POST /v1/runs` [`StartRequest`] → 201 [`RunInfo`]; 409 while another run is active, unless
//!   `queue` is set: the run is then `queued` and starts when the runs before it have ended
//! - `GET /v1/runs` → `[RunInfo]`; `GET /v1/runs/{id}` → [`RunInfo`]
//! - `DELETE /v1/runs/{id}` → the deleted [`RunInfo`]: its records and its folder under the state
//!   folder are removed; 409 unless the run has ended (stopped, finished, failed)
//! - `POST /v1/runs/{id}/pause|resume|stop` → [`RunInfo`]; 409 when the state does not allow it
//!   (`resume` also continues a `failed` or `stopped` run from its newest good checkpoint)
//! - `GET /v1/runs/{id}/steps?after=N&limit=M` → `[StepRecord]`
//! - `GET /v1/runs/{id}/samples?limit=M` → `[SampleRecord]`
//! - `GET /v1/runs/{id}/checkpoints` → `[SavedCheckpoint]`
//! - `GET /v1/runs/{id}/checkpoints/{step}/files/{name}` → the file's bytes, streamed; 503
//!   `busy` when the most downloads r1d serves at once are in progress
//! - `POST /v1/runs/{id}/eval` [`EvalRequest`] → [`EvalReport`]: the built-in task's held-out
//!   split, or the eval set `data` (required for a run that trained on a file); `GET
//!   /v1/runs/{id}/evals`
//!
//! Errors: `{"error":{"code":…,"message":…}}` with codes `unauthorized` (401), `not_found` (404),
//! `bad_request` (400), `conflict` (409), `payload_too_large` (413), `busy` (503, with
//! `Retry-After`), `internal` (500).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest request body accepted (a job config is a few KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Start a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The job config (TOML).
    pub config_toml: String,
    /// Where it came from (a file name), used in error messages.
    #[serde(default = "default_source")]
    pub source: String,
    /// Folder that relative paths in the config are resolved against (`r1ctl start` sends its
    /// working directory); the daemon's working directory when absent.
    #[serde(default)]
    pub base_dir: Option<PathBuf>,
    /// Queue the run behind the active one instead of refusing it (runs start one at a time, in
    /// the order they were queued).
    #[serde(default)]
    pub queue: bool,
}

fn default_source() -> String {
    "config.toml".into()
}

/// The latest numbers of a run, for status lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    /// Steps completed.
    pub step: u64,
    /// Mean total reward.
    pub reward_mean: f64,
    /// Mean accuracy reward.
    pub accuracy: f64,
    /// Mean format reward.
    pub format: f64,
    /// KL to the reference.
    pub kl: f64,
    /// Mean completion length in tokens.
    pub completion_len_mean: f64,
    /// Completion tokens generated per second in this step.
    pub tokens_per_second: f64,
    /// Seconds the step took.
    pub seconds: f64,
}

/// A run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// `run-0001`, …
    pub id: String,
    /// `run.name` of its config.
    pub name: String,
    /// The stage (`grpo`, …).
    pub stage: String,
    /// Lifecycle state.
    pub state: RunState,
    /// Steps completed.
    pub step: u64,
    /// Steps the stage takes.
    pub total_steps: u64,
    /// Seconds since the Unix epoch when it was accepted.
    pub created_unix: f64,
    /// When its record last changed.
    pub updated_unix: f64,
    /// Why it failed, or notes from its start (resumed from, skipped damaged checkpoints).
    pub message: Option<String>,
    /// Where its checkpoints are.
    pub output_dir: PathBuf,
    /// The latest step's numbers.
    pub last: Option<StepSummary>,
    /// The job config it runs.
    pub config_toml: String,
    /// Where the config's relative paths point.
    pub base_dir: PathBuf,
}

/// Evaluate a run's checkpoint on held-out problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalRequest {
    /// Checkpoint step; the newest when absent.
    pub step: Option<u64>,
    /// Samples per problem (pass@1 is averaged over them; cons@k votes among them).
    pub k: usize,
    /// Held-out problems (at most the config's `data.test_size`).
    pub problems: Option<usize>,
    /// Greedy decoding (k is then 1).
    pub greedy: bool,
    /// Sampling temperature (the paper: 0.6).
    pub temperature: f32,
    /// Nucleus mass (the paper: 0.95).
    pub top_p: f32,
    /// Evaluation seed.
    pub seed: u64,
    /// An explicit eval set (JSONL or, by its `.parquet` extension, Parquet; `prompt` and
    /// `answer` fields), resolved against the run's `base_dir`. Without it the run's built-in
    /// task's held-out split is scored; a run that trained on a file has no held-out split, and
    /// is refused without one (scoring the lines it trained on is not an evaluation).
    pub data: Option<PathBuf>,
}

impl Default for EvalRequest {
    fn default() -> Self {
        EvalRequest {
            step: None,
            k: 4,
            problems: None,
            greedy: false,
            temperature: 0.6,
            top_p: 0.95,
            seed: 0,
            data: None,
        }
    }
}

/// What an evaluation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The run.
    pub run: String,
    /// The checkpoint's step.
    pub step: u64,
    /// Which problems were scored: `held-out split of the built-in task …` or `eval set PATH`.
    #[serde(default)]
    pub dataset: String,
    /// Held-out problems.
    pub problems: usize,
    /// Samples per problem.
    pub k: usize,
    /// Greedy decoding.
    pub greedy: bool,
    /// pass@1 averaged over k samples.
    pub pass_at_1: f64,
    /// Majority vote over k samples.
    pub cons_at_k: f64,
    /// Share of samples in the required format.
    pub format_rate: f64,
    /// Mean completion length in tokens.
    pub mean_length: f64,
    /// Share cut by the length limit.
    pub truncated_rate: f64,
    /// Seconds it took.
    pub seconds: f64,
}

/// One device of the machine r1d runs on (`GET /v1/devices`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// `cpu` or `cuda:N`: what a `[devices]` key names.
    pub device: String,
    /// A readable name (the GPU's, or the CPU's model and thread count).
    pub name: String,
    /// Total memory in bytes (system RAM for the CPU).
    pub total_bytes: u64,
    /// Free memory in bytes (available RAM for the CPU).
    pub free_bytes: u64,
}

/// The devices of r1d's machine, and why no GPU is listed when none is (`GET /v1/devices`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevicesResponse {
    /// The CPU first, then every CUDA device by ordinal.
    pub devices: Vec<DeviceEntry>,
    /// Why CUDA is unavailable (no driver, no device), when no GPU is listed.
    pub cuda_unavailable: Option<String>,
    /// Why GPU learner replicas cannot all-reduce through NCCL (no GPU, no `libnccl.so.2`),
    /// when they cannot.
    #[serde(default)]
    pub nccl_unavailable: Option<String>,
}

/// The error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: String,
    /// What a person reads.
    pub message: String,
}

/// The director's state as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Accepted, not started.
    Queued,
    /// Loading the model or checkpoint.
    Starting,
    /// Taking steps.
    Running,
    /// Between steps, waiting for `Resume`.
    Paused,
    /// Finishing the current step before stopping.
    Stopping,
    /// Stopped on request; a new daemon does not resume it.
    Stopped,
    /// Took every step.
    Finished,
    /// Ended by an error.
    Failed,
    /// Checkpointed and let go because the daemon is shutting down; the next daemon resumes it.
    /// Never stored: the run keeps the state it had.
    Suspended,
}

impl RunState {
    /// Whether the run has ended for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Stopped | RunState::Finished | RunState::Failed
        )
    }

    /// Its name, as in the API and metrics.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Stopping => "stopping",
            RunState::Stopped => "stopped",
            RunState::Finished => "finished",
            RunState::Failed => "failed",
            RunState::Suspended => "suspended",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_errors_have_their_documented_spelling() {
        assert_eq!(
            serde_json::to_string(&RunState::Suspended).expect("serialises"),
            "\"suspended\""
        );
        for state in [
            RunState::Queued,
            RunState::Starting,
            RunState::Running,
            RunState::Paused,
            RunState::Stopping,
            RunState::Stopped,
            RunState::Finished,
            RunState::Failed,
            RunState::Suspended,
        ] {
            let json = serde_json::to_string(&state).expect("serialises");
            assert_eq!(json, format!("\"{}\"", state.name()));
            assert_eq!(
                serde_json::from_str::<RunState>(&json).expect("parses"),
                state
            );
        }
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"not_found","message":"no run run-0009"}}"#)
                .expect("the documented error body parses");
        assert_eq!(body.error.code, "not_found");
    }

    #[test]
    fn an_eval_request_fills_defaults_and_rejects_unknown_fields() {
        let request: EvalRequest = serde_json::from_str(r#"{"k":2}"#).expect("parses");
        assert_eq!(
            request,
            EvalRequest {
                k: 2,
                ..EvalRequest::default()
            }
        );
        let error = serde_json::from_str::<EvalRequest>(r#"{"kk":2}"#).unwrap_err();
        assert!(error.to_string().contains("kk"), "{error}");
    }
}
