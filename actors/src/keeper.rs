//! The checkpoint keeper's logic: write a checkpoint so that a crash at any moment leaves either
//! the previous good one or the new complete one, detect a damaged one, and keep the last N.
//!
//! A checkpoint is a directory:
//! - `model.safetensors` — the policy with Hugging Face names (`transformers` loads it), plus
//!   `config.json`, so the directory is a model directory too;
//! - `optimizer.safetensors` — AdamW's moments as `exp_avg.<name>` / `exp_avg_sq.<name>`;
//! - `reference/` — the frozen reference policy as a model directory, when the run has one (β ≠ 0);
//! - `trainer.json` — step counters, data cursor, seed, the config's hash, and the SHA-256 of every
//!   other file (written last: a checkpoint without a valid `trainer.json` is not a checkpoint).
//!
//! It is written into `<name>.tmp`, every file fsynced, renamed to `<name>` (an existing `<name>`,
//! say a damaged one a resume skipped, is moved to `<name>.old` first and deleted after), and the
//! parent directory fsynced; transient I/O errors are retried with a bounded backoff. Loading
//! verifies the checksums; `latest_good` walks back past damaged ones. Every stage and both
//! drivers (`r1ctl train`, `r1d`) save and resume through these functions.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use r1_kernels::model::{load_model_dir, save_model_dir, Model};
use r1_kernels::train::AdamW;

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint is incomplete or damaged (missing file, checksum mismatch, bad JSON).
    #[error("{path}: damaged checkpoint: {message}")]
    Damaged {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The model files could not be written or read.
    #[error(transparent)]
    Engine(#[from] r1_kernels::EngineError),
    /// A checkpoint of this run was written under another job config: resuming it would mix
    /// two runs.
    #[error("the checkpoint {0} was written under a different config; use a new output_dir")]
    ForeignConfig(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Everything besides weights and moments that an exact resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// Stage steps completed.
    pub step: u64,
    /// Optimizer steps completed (the schedule's clock; AdamW's bias correction).
    pub optimizer_step: u64,
    /// Next prompt index in the data order.
    pub data_cursor: u64,
    /// The run's seed: per-step RNGs are derived from (seed, step), so no generator state is
    /// carried beyond it.
    pub seed: u64,
    /// Hash of the run's config, to refuse resuming under a different config.
    pub config_hash: String,
    /// The preference stage's running moments of each reward model's scores (absent in other
    /// stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_normaliser: Option<crate::reward_normaliser::RewardNormaliser>,
}

/// `trainer.json` on disk: the state plus a checksum of every file of the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainerFile {
    state: TrainerState,
    /// File name → hex SHA-256.
    checksums: BTreeMap<String, String>,
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The policy.
    pub model: Model,
    /// The reference policy, when one was saved.
    pub reference: Option<Model>,
    /// The optimizer (moments and step).
    pub optimizer: AdamW,
    /// Counters and provenance.
    pub state: TrainerState,
}

fn sha256_file(path: &Path) -> Result<String, CheckpointError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn fsync_dir(dir: &Path) -> Result<(), CheckpointError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}

/// Attempts a checkpoint write gets when the system reports a transient error.
pub const SAVE_ATTEMPTS: u32 = 8;

/// Whether an I/O error may go away on its own: descriptors exhausted by other activity (EMFILE,
/// ENFILE), a full disk someone is clearing (ENOSPC), a flaky device (EIO), a signal (EINTR,
/// EAGAIN). A run should wait and retry these rather than fail for good.
pub fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOSPC | libc::EIO | libc::EINTR | libc::EAGAIN)
    ) || error.kind() == std::io::ErrorKind::Interrupted
}

impl CheckpointError {
    /// Whether the write that failed with this error may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        match self {
            CheckpointError::Io { source, .. } => is_transient(source),
            CheckpointError::Engine(r1_kernels::EngineError::Io { source, .. }) => {
                is_transient(source)
            }
            _ => false,
        }
    }
}

/// Runs `attempt` until it succeeds, fails for a reason that is not transient, or has failed
/// `attempts` times; waits `first_wait`, then twice as long each time (at most 2 s), between.
pub fn retry_transient<T>(
    attempts: u32,
    first_wait: std::time::Duration,
    mut attempt: impl FnMut() -> Result<T, CheckpointError>,
) -> Result<T, CheckpointError> {
    let mut wait = first_wait;
    let mut tried = 1;
    loop {
        match attempt() {
            Err(e) if e.is_transient() && tried < attempts => {
                tracing::warn!("checkpoint write failed ({e}); retrying in {wait:?}");
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
                tried += 1;
            }
            other => return other,
        }
    }
}

/// Writes a checkpoint atomically as `dir`: into `<dir>.tmp`, fsynced, then renamed into place.
///
/// A `dir` that already exists (a damaged checkpoint of the same step that a resume skipped, or
/// one written before a crash but never recorded) is replaced: it is moved to `<dir>.old` first
/// and deleted once the new one is in place, so a crash at any moment leaves a complete
/// checkpoint or the older ones. Transient I/O errors (see [`is_transient`]) are retried with a
/// bounded backoff ([`SAVE_ATTEMPTS`] attempts, about 7 s in all) before the write fails.
pub fn save_checkpoint(
    dir: &Path,
    model: &Model,
    reference: Option<&Model>,
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<(), CheckpointError> {
    retry_transient(SAVE_ATTEMPTS, std::time::Duration::from_millis(50), || {
        save_checkpoint_once(dir, model, reference, optimizer, state)
    })
}

fn save_checkpoint_once(
    dir: &Path,
    model: &Model,
    reference: Option<&Model>,
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<(), CheckpointError> {
    let tmp = dir.with_extension("tmp");
    remove_any(&tmp)?;
    save_model_dir(model, &tmp)?;
    // Moments by tensor name, so a checkpoint stays readable if the flat layout ever changes.
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for slot in &model.layout.slots {
        for (prefix, values) in [("exp_avg", &optimizer.m), ("exp_avg_sq", &optimizer.v)] {
            let bytes = values[slot.range()]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            buffers.push((format!("{prefix}.{}", slot.name), slot.shape.clone(), bytes));
        }
    }
    let opt_path = tmp.join("optimizer.safetensors");
    let views = buffers
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| CheckpointError::Damaged {
                    path: opt_path.clone(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata =
        std::collections::HashMap::from([("step".to_string(), optimizer.step.to_string())]);
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| CheckpointError::Damaged {
            path: opt_path.clone(),
            message: e.to_string(),
        })?;
    write_synced(&opt_path, &bytes)?;

    let mut names = vec!["model.safetensors", "config.json", "optimizer.safetensors"];
    if let Some(reference) = reference {
        save_model_dir(reference, &tmp.join("reference"))?;
        names.extend(["reference/model.safetensors", "reference/config.json"]);
    }
    let mut checksums = BTreeMap::new();
    for name in names {
        checksums.insert(name.to_string(), sha256_file(&tmp.join(name))?);
    }
    let trainer = TrainerFile {
        state: state.clone(),
        checksums,
    };
    let json = serde_json::to_vec_pretty(&trainer).map_err(|e| CheckpointError::Damaged {
        path: tmp.clone(),
        message: e.to_string(),
    })?;
    write_synced(&tmp.join("trainer.json"), &json)?;
    fsync_dir(&tmp)?;
    // rename(2) cannot replace a non-empty directory: an existing one is moved aside first.
    // Only a folder (a checkpoint of the same step a crash left) is replaced; anything else in
    // the way is not r1's to delete, and the write fails naming it.
    let old = dir.with_extension("old");
    let replaced = match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => true,
        Ok(_) => {
            return Err(io(dir)(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "something other than a checkpoint folder is in the way",
            )))
        }
        Err(_) => false,
    };
    if replaced {
        remove_any(&old)?;
        std::fs::rename(dir, &old).map_err(io(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io(dir))?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    if replaced {
        remove_any(&old)?;
    }
    Ok(())
}

/// Removes a file or a directory tree at `path`; nothing there is fine.
fn remove_any(path: &Path) -> Result<(), CheckpointError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io(path))
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    let mut file = std::fs::File::create(path).map_err(io(path))?;
    file.write_all(data).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// Reads and verifies a checkpoint.
pub fn load_checkpoint(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    let damaged = |message: String| CheckpointError::Damaged {
        path: dir.to_path_buf(),
        message,
    };
    let trainer_path = dir.join("trainer.json");
    let text = std::fs::read(&trainer_path).map_err(|e| damaged(format!("trainer.json: {e}")))?;
    let trainer: TrainerFile =
        serde_json::from_slice(&text).map_err(|e| damaged(format!("trainer.json: {e}")))?;
    for (name, want) in &trainer.checksums {
        let got = sha256_file(&dir.join(name)).map_err(|e| damaged(e.to_string()))?;
        if &got != want {
            return Err(damaged(format!("{name}: checksum mismatch")));
        }
    }
    let model = load_model_dir(dir)?;
    let opt_path = dir.join("optimizer.safetensors");
    let bytes = std::fs::read(&opt_path).map_err(io(&opt_path))?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| damaged(format!("optimizer.safetensors: {e}")))?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| damaged(format!("optimizer.safetensors: {e}")))?;
    let step = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get("step"))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| damaged("optimizer.safetensors: no step in the metadata".into()))?;
    let mut optimizer = AdamW::new(Default::default(), model.layout.total);
    optimizer.step = step;
    for slot in &model.layout.slots {
        for (prefix, out) in [
            ("exp_avg", &mut optimizer.m),
            ("exp_avg_sq", &mut optimizer.v),
        ] {
            let name = format!("{prefix}.{}", slot.name);
            let view = tensors
                .tensor(&name)
                .map_err(|_| damaged(format!("optimizer.safetensors: no `{name}`")))?;
            if view.dtype() != Dtype::F32 || view.data().len() != slot.len * 4 {
                return Err(damaged(format!(
                    "optimizer.safetensors: `{name}` has the wrong dtype or size"
                )));
            }
            for (o, b) in out[slot.range()]
                .iter_mut()
                .zip(view.data().chunks_exact(4))
            {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
    let reference = if trainer
        .checksums
        .contains_key("reference/model.safetensors")
    {
        Some(load_model_dir(&dir.join("reference"))?)
    } else {
        None
    };
    Ok(Checkpoint {
        model,
        reference,
        optimizer,
        state: trainer.state,
    })
}

/// Checkpoint directories under `root` named `step-<N>`, ascending by step.
pub fn list_checkpoints(root: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => {
            return Err(CheckpointError::Io {
                path: root.to_path_buf(),
                source: e,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(io(root))?;
        let name = entry.file_name();
        if let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The directory a checkpoint of `step` gets under `root`.
pub fn checkpoint_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// The newest checkpoint that verifies, skipping damaged ones (each is reported in the second
/// value so the caller can log it).
pub fn latest_good(
    root: &Path,
) -> Result<(Option<Checkpoint>, Vec<CheckpointError>), CheckpointError> {
    let mut skipped = Vec::new();
    for (_, dir) in list_checkpoints(root)?.into_iter().rev() {
        match load_checkpoint(&dir) {
            Ok(c) => return Ok((Some(c), skipped)),
            Err(e) => skipped.push(e),
        }
    }
    Ok((None, skipped))
}

/// Deletes all but the newest `keep_last` checkpoints (and any `*.tmp` / `*.old` leftovers of a
/// crash during a save), sparing `keep_also` (the best by evaluation).
pub fn prune(
    root: &Path,
    keep_last: usize,
    keep_also: Option<&Path>,
) -> Result<(), CheckpointError> {
    let all = list_checkpoints(root)?;
    let cut = all.len().saturating_sub(keep_last);
    for (_, dir) in &all[..cut] {
        if Some(dir.as_path()) != keep_also {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp" || e == "old") {
                remove_any(&path)?;
            }
        }
    }
    Ok(())
}

/// A checkpoint on disk, durable: what a run records about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedCheckpoint {
    /// Step it holds.
    pub step: u64,
    /// Its directory.
    pub path: PathBuf,
    /// Bytes of its files.
    pub bytes: u64,
    /// Seconds since the Unix epoch when it became durable.
    pub unix_seconds: f64,
}

impl SavedCheckpoint {
    /// The record of the checkpoint in `dir`, written just now.
    pub fn of(dir: PathBuf, step: u64) -> Self {
        let unix_seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        SavedCheckpoint {
            step,
            bytes: dir_bytes(&dir),
            path: dir,
            unix_seconds,
        }
    }
}

/// Bytes of the files directly in `dir` (a checkpoint folder); 0 when it cannot be read.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The one checkpoint writer of a run with steps: `step-NNNNNNNN` under `root` (created if
/// needed; a folder of the same step left by a crash is replaced), then all but the newest
/// `keep_last` pruned, sparing `keep_also` (the best by evaluation).
pub fn write_checkpoint(
    root: &Path,
    model: &Model,
    reference: Option<&Model>,
    optimizer: &AdamW,
    state: &TrainerState,
    keep_last: usize,
    keep_also: Option<&Path>,
) -> Result<SavedCheckpoint, CheckpointError> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    let dir = checkpoint_dir(root, state.step);
    save_checkpoint(&dir, model, reference, optimizer, state)?;
    prune(root, keep_last.max(1), keep_also)?;
    Ok(SavedCheckpoint::of(dir, state.step))
}

/// The checkpoint a run resumes from and what was passed over on the way.
pub struct ResumePoint {
    /// The newest candidate that loads and verifies; `None`: start from the model.
    pub checkpoint: Option<Checkpoint>,
    /// Its directory.
    pub dir: Option<PathBuf>,
    /// Candidates that did not load, each `dir: why`.
    pub skipped: Vec<String>,
}

/// The one resume rule: the first of `candidates` (newest first) whose checksums verify; damaged
/// ones are skipped and named; one written under another config (`config_hash`) is refused.
/// `r1ctl train` passes the checkpoint folders it finds, r1d the ones its store recorded (a
/// folder written but never recorded before a crash is not resumed from: its step is taken
/// again).
pub fn resume_point(
    candidates: &[PathBuf],
    config_hash: &str,
) -> Result<ResumePoint, CheckpointError> {
    let mut skipped = Vec::new();
    for dir in candidates {
        match load_checkpoint(dir) {
            Ok(checkpoint) if checkpoint.state.config_hash != config_hash => {
                return Err(CheckpointError::ForeignConfig(dir.clone()));
            }
            Ok(checkpoint) => {
                return Ok(ResumePoint {
                    checkpoint: Some(checkpoint),
                    dir: Some(dir.clone()),
                    skipped,
                })
            }
            Err(e) => skipped.push(format!("{}: {e}", dir.display())),
        }
    }
    Ok(ResumePoint {
        checkpoint: None,
        dir: None,
        skipped,
    })
}

/// Every checkpoint folder under `root`, newest first: the resume candidates of a run that keeps
/// no record of its own.
pub fn checkpoint_candidates(root: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    Ok(list_checkpoints(root)?
        .into_iter()
        .rev()
        .map(|(_, dir)| dir)
        .collect())
}

/// Where a run starts, as its learner loaded it.
#[derive(Debug, Clone, Default)]
pub struct StartPoint {
    /// Steps already taken (0 from the model directory).
    pub step: u64,
    /// Optimizer steps already taken.
    pub optimizer_step: u64,
    /// Next prompt of the training stream.
    pub data_cursor: u64,
    /// A preference run's reward normaliser as the checkpoint saved it.
    pub reward_normaliser: Option<crate::reward_normaliser::RewardNormaliser>,
    /// The checkpoint resumed, if any.
    pub resumed_from: Option<PathBuf>,
    /// Checkpoints that could not be loaded, each `dir: why`.
    pub skipped: Vec<String>,
}
