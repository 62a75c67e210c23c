//! What every runnable stage shares: the model it starts from, where it writes, how it reports
//! progress, when it checkpoints, and how it stops.
//!
//! A stage function (`run_grpo`, `run_sft`, `run_rejection`, `run_distill`, `run_eval`) runs on
//! the caller's thread, prints nothing, and tells its caller everything through a
//! `&mut dyn FnMut(StageEvent)`. It checks a `&AtomicBool` stop flag between steps; when the flag
//! is set it checkpoints or flushes what it has and returns with `stopped: true`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use r1_kernels::device::{DevicesConfig, Placement};
use r1_kernels::model::{copy_tokenizer_files, load_model_dir, save_model_dir, Model};
use r1_kernels::template::PromptTemplate;
use r1_kernels::tokenizer::Tokenizer;
use r1_kernels::train::AdamW;

use crate::data::DataError;
use crate::keeper::{self, checkpoint_candidates, Checkpoint, CheckpointError, TrainerState};
use crate::learner::{LearnerError, SftStepStats};
use crate::stages::grpo::{GrpoStepReport, StageError, StageEval};

/// The model a stage starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// A Hugging Face model directory (config.json, safetensors, tokenizer.json unless `byte`).
    pub path: PathBuf,
    /// Prompt template.
    pub template: PromptTemplate,
    /// `Some("byte")` for r1's byte tokenizer; `None`: the directory decides (its tokenizer.json,
    /// or the byte tokenizer for a byte-vocabulary model; `r1_kernels::tokenizer::resolve`).
    pub tokenizer: Option<String>,
}

impl ModelSpec {
    /// The tokenizer the spec names.
    pub fn tokenizer(&self) -> Result<Tokenizer, RunError> {
        r1_kernels::tokenizer::resolve(&self.path, self.tokenizer.as_deref()).map_err(|e| {
            RunError::Invalid(format!("model.tokenizer of {}: {e}", self.path.display()))
        })
    }

    /// Loads the weights.
    pub fn load(&self) -> Result<Model, RunError> {
        load_model_dir(&self.path).map_err(|e| RunError::Model {
            path: self.path.clone(),
            source: Box::new(e),
        })
    }
}

/// When checkpoints are written and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Steps between checkpoints.
    pub every_steps: u64,
    /// Most recent checkpoints kept (the best by evaluation is kept besides).
    pub keep_last: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_steps: 50,
            keep_last: 3,
        }
    }
}

/// What a run is besides its stage: seed, output directory, checkpoint policy, config identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Seed of every random choice (sampling, data order).
    pub seed: u64,
    /// Where checkpoints, reports and outputs go.
    pub output_dir: PathBuf,
    /// Checkpointing of stages with steps.
    pub checkpoint: CheckpointConfig,
    /// Hash of the job config: checkpoints written under another config are refused.
    pub config_hash: String,
    /// Stop after this many steps in total (a run can be continued later); `None`: the config's.
    pub stop_at: Option<u64>,
    /// The `[devices]` table: where the sampler, learner(s) and reward models run, as asked
    /// (resolved into a [`Placement`] against this machine by [`RunSpec::placement`]).
    #[serde(default)]
    pub devices: DevicesConfig,
}

impl RunSpec {
    /// `<output_dir>/checkpoints`.
    pub fn checkpoint_root(&self) -> PathBuf {
        self.output_dir.join("checkpoints")
    }

    /// The run's devices on this machine (`r1_kernels::device::list`): a GPU the machine lacks
    /// is an error naming the `[devices]` key; `auto` without a GPU is the CPU, with a note.
    pub fn placement(&self) -> Result<Placement, RunError> {
        self.devices
            .resolve(&r1_kernels::device::list())
            .map_err(|e| RunError::Invalid(e.to_string()))
    }
}

/// The run's placement, its `auto` notes reported to the caller (the run's log): what every
/// stage does before it loads a model.
pub(crate) fn announce_placement(
    run: &RunSpec,
    progress: &mut dyn FnMut(StageEvent),
) -> Result<Placement, RunError> {
    let placement = run.placement()?;
    for note in &placement.notes {
        progress(StageEvent::Note {
            message: note.clone(),
        });
    }
    Ok(placement)
}

/// What a running stage tells its caller.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StageEvent {
    /// Something a person may want to know (what was loaded, what was skipped).
    Note {
        /// The message.
        message: String,
    },
    /// The stage continues from a checkpoint.
    Resumed {
        /// Steps already done.
        step: u64,
    },
    /// A GRPO step finished.
    GrpoStep {
        /// Steps planned.
        steps: u64,
        /// The step's statistics.
        report: Box<GrpoStepReport>,
    },
    /// A preference-RL step finished.
    PreferenceStep {
        /// Steps planned.
        steps: u64,
        /// The step's statistics.
        report: Box<crate::stages::preference::PreferenceStepReport>,
    },
    /// An SFT step finished.
    SftStep {
        /// Steps done.
        step: u64,
        /// Steps planned.
        steps: u64,
        /// The epoch the step belongs to (0-based).
        epoch: usize,
        /// The step's statistics.
        stats: SftStepStats,
    },
    /// A batch of prompts was sampled and filtered (rejection sampling).
    Sampled {
        /// Prompts done.
        prompts_done: usize,
        /// Prompts planned.
        prompts: usize,
        /// Samples kept so far.
        kept: usize,
    },
    /// A dataset was evaluated.
    Evaluated {
        /// The dataset's name.
        dataset: String,
        /// Its scores.
        eval: StageEval,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Steps it holds.
        step: u64,
        /// Its directory.
        path: PathBuf,
    },
}

/// Why a stage could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Sampling, judging or a GRPO update failed.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// An SFT update failed.
    #[error(transparent)]
    Learner(#[from] LearnerError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A model directory could not be read or written.
    #[error("{path}: {source}")]
    Model {
        /// The directory.
        path: PathBuf,
        /// What the engine said (boxed: it is large, and errors are rare).
        #[source]
        source: Box<r1_kernels::EngineError>,
    },
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The job cannot run as configured (the message names the key or file).
    #[error("{0}")]
    Invalid(String),
    /// What failed, and where in the run (`loading`, `step 7`, `final checkpoint`).
    #[error("{at}: {source}")]
    At {
        /// The phase of the run.
        at: String,
        /// What went wrong there.
        #[source]
        source: Box<RunError>,
    },
}

/// Whether the caller asked the stage to stop.
pub fn stop_requested(stop: &AtomicBool) -> bool {
    stop.load(Ordering::Relaxed)
}

/// Writes `value` as pretty JSON to `path` (through a temporary file renamed into place).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    let io = |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| RunError::Invalid(format!("{}: {e}", path.display())))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Creates `dir` and its parents.
pub fn create_dir(dir: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(dir).map_err(|source| RunError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// The checkpoint a stage with steps resumes from: [`keeper::resume_point`] over the checkpoint
/// folders of the run (newest first); damaged ones are reported as notes and skipped; reported
/// as `Resumed`. `None`: start from the model.
pub(crate) fn resume_point(
    run: &RunSpec,
    progress: &mut dyn FnMut(StageEvent),
) -> Result<Option<Checkpoint>, RunError> {
    let candidates = checkpoint_candidates(&run.checkpoint_root())?;
    let found = keeper::resume_point(&candidates, &run.config_hash)?;
    for damaged in found.skipped {
        progress(StageEvent::Note {
            message: format!("skipped damaged checkpoint {damaged}"),
        });
    }
    if let Some(checkpoint) = &found.checkpoint {
        progress(StageEvent::Resumed {
            step: checkpoint.state.step,
        });
    }
    Ok(found.checkpoint)
}

/// Writes a checkpoint at `state.step` under the run's checkpoint folder through
/// [`keeper::write_checkpoint`] and reports it: what every stage with steps does every
/// `checkpoint.every_steps` and at a stop.
pub(crate) fn write_checkpoint(
    run: &RunSpec,
    model: &Model,
    reference: Option<&Model>,
    optimizer: &AdamW,
    state: &TrainerState,
    progress: &mut dyn FnMut(StageEvent),
) -> Result<PathBuf, RunError> {
    let saved = keeper::write_checkpoint(
        &run.checkpoint_root(),
        model,
        reference,
        optimizer,
        state,
        run.checkpoint.keep_last,
        None,
    )?;
    progress(StageEvent::Checkpoint {
        step: state.step,
        path: saved.path.clone(),
    });
    Ok(saved.path)
}

/// Writes the model a finished stage ends with to `<output_dir>/final`.
pub(crate) fn write_final(
    run: &RunSpec,
    spec: &ModelSpec,
    model: &Model,
) -> Result<PathBuf, RunError> {
    let dir = run.output_dir.join("final");
    let error = |e| RunError::Model {
        path: dir.clone(),
        source: Box::new(e),
    };
    save_model_dir(model, &dir).map_err(error)?;
    // The tokenizer the run used, so the result is a model directory `r1ctl generate` reads.
    copy_tokenizer_files(&spec.path, &dir).map_err(error)?;
    Ok(dir)
}
