//! The files a job config makes r1d read, checked before anything reads them.
//!
//! A path in a config is user input: a FIFO blocks the thread that opens it for ever (and with it
//! a run's stop, and every later start), a device such as `/dev/zero` never ends, and a huge
//! data file is read whole into memory. So every file a run reads must be a regular file, data
//! files (prompts, SFT sets, general prompts, evaluation sets) at most
//! [`InputLimits::max_data_bytes`], and the check opens the file with `O_NONBLOCK` and looks at
//! the open descriptor, so a path swapped for a FIFO after the first look still cannot hang it.

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use r1_config::{DataConfig, JobConfig, Stage};

/// Bounds on what a run may make r1d read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Largest data file (JSONL or Parquet prompts, SFT set, general prompts) a run may name:
    /// these are read whole into memory (`r1d --max-data-bytes`).
    pub max_data_bytes: u64,
}

/// 1 GiB: a prompt set far beyond any r1 trains on one workstation, and little enough that
/// reading it cannot take the machine's memory.
pub const DEFAULT_MAX_DATA_BYTES: u64 = 1 << 30;

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
        }
    }
}

/// What kind of thing `meta` says a path is, for messages.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading without ever blocking on it: `O_NONBLOCK` makes opening a FIFO
/// return at once, and the caller checks the descriptor's type before reading.
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Checks that `path` (named by config key `key`) is a regular file, at most `max_bytes` long
/// when given (`None`: model weights, which may be any size); returns its length.
pub fn regular_file(key: &str, path: &Path, max_bytes: Option<u64>) -> Result<u64, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{key}: {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{key}: {shown} is {}, not a regular file",
            kind(&meta)
        ));
    }
    // The path may have been swapped since: look again at what was actually opened.
    let file = open_nonblocking(path).map_err(|e| format!("{key}: {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{key}: {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{key}: {shown} is {}, not a regular file",
            kind(&meta)
        ));
    }
    if let Some(max) = max_bytes {
        if meta.len() > max {
            return Err(format!(
                "{key}: {shown} is {} bytes, more than the {max} bytes r1d reads from a data \
                 file (r1d --max-data-bytes)",
                meta.len()
            ));
        }
    }
    Ok(meta.len())
}

/// A data file: regular, not empty (it would fail only at the first step), within the cap.
pub fn data_file(key: &str, path: &Path, limits: &InputLimits) -> Result<(), String> {
    if regular_file(key, path, Some(limits.max_data_bytes))? == 0 {
        return Err(format!("{key}: {} is empty", path.display()));
    }
    Ok(())
}

/// A model directory: a directory with a `config.json` (when `needs_config`), and every weight,
/// JSON and tokenizer file in it a regular file (a FIFO named `model.safetensors` would hang
/// the loader, and with it the run's stop).
pub fn model_dir(key: &str, dir: &Path, needs_config: bool) -> Result<(), String> {
    let shown = dir.display();
    let meta = std::fs::metadata(dir).map_err(|e| format!("{key}: {shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!(
            "{key}: {shown} is {}, not a directory",
            kind(&meta)
        ));
    }
    if needs_config && std::fs::symlink_metadata(dir.join("config.json")).is_err() {
        return Err(format!("{key}: {shown} has no config.json"));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{key}: {shown}: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{key}: {shown}: {e}"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let read_by_loader = name.ends_with(".safetensors")
            || name.ends_with(".json")
            || name.ends_with(".model")
            || name.ends_with(".txt");
        if read_by_loader {
            regular_file(key, &entry.path(), None)?;
        }
    }
    Ok(())
}

fn data_config(key: &str, data: &DataConfig, limits: &InputLimits) -> Result<(), String> {
    match data {
        DataConfig::Jsonl { path, .. } | DataConfig::Parquet { path, .. } => {
            data_file(&format!("{key}.path"), path, limits)
        }
        _ => Ok(()),
    }
}

/// Checks every file and directory `config` (paths already resolved) makes a run read.
/// Errors name the config key and the path.
pub fn check_job(config: &JobConfig, limits: &InputLimits) -> Result<(), String> {
    model_dir("model.path", &config.model.path, true)?;
    data_config("data", &config.data, limits)?;
    let stage = config.run.stage;
    if let Some(sft) = config.sft.as_ref().filter(|_| stage == Stage::Sft) {
        if let Some(data) = &sft.data {
            data_file("sft.data", data, limits)?;
        }
    }
    if let Some(distill) = config.distill.as_ref().filter(|_| stage == Stage::Distill) {
        model_dir("distill.student", &distill.student, true)?;
    }
    if let Some(eval) = config.eval.as_ref().filter(|_| stage == Stage::Eval) {
        for (name, data) in &eval.datasets {
            data_config(&format!("eval.datasets.{name}"), data, limits)?;
        }
    }
    if let Some(preference) = config
        .preference
        .as_ref()
        .filter(|_| stage == Stage::Preference)
    {
        if preference.general_share > 0.0 {
            data_file(
                "preference.general_prompts",
                &preference.general_prompts,
                limits,
            )?;
        }
        for (i, model) in preference.reward_models.iter().enumerate() {
            model_dir(
                &format!(
                    "preference.reward_models[{i}]: reward model `{}`",
                    model.name
                ),
                &model.path,
                false,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("data.jsonl");
        fifo(&pipe);
        let limits = InputLimits::default();
        let err = data_file("data.path", &pipe, &limits).unwrap_err();
        assert!(
            err.contains("data.path") && err.contains("FIFO") && err.contains("data.jsonl"),
            "{err}"
        );
        let err = data_file("data.path", Path::new("/dev/zero"), &limits).unwrap_err();
        assert!(err.contains("character device"), "{err}");
        let err = data_file("sft.data", dir.path(), &limits).unwrap_err();
        assert!(
            err.contains("sft.data") && err.contains("directory"),
            "{err}"
        );
        // The descriptor check alone (the path swapped after the first look) does not block
        // either: opening a FIFO with O_NONBLOCK returns at once.
        let file = open_nonblocking(&pipe).unwrap();
        assert!(file.metadata().unwrap().file_type().is_fifo());
    }

    #[test]
    fn data_files_are_capped_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        std::fs::write(&path, "x".repeat(2000)).unwrap();
        let small = InputLimits {
            max_data_bytes: 1000,
        };
        let err = data_file("data.path", &path, &small).unwrap_err();
        assert!(
            err.contains("2000 bytes") && err.contains("--max-data-bytes"),
            "{err}"
        );
        assert!(data_file("data.path", &path, &InputLimits::default()).is_ok());
        std::fs::write(&path, "").unwrap();
        let err = data_file("data.path", &path, &InputLimits::default()).unwrap_err();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn a_model_directory_with_a_fifo_for_weights_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        fifo(&dir.path().join("model.safetensors"));
        let err = model_dir("model.path", dir.path(), true).unwrap_err();
        assert!(
            err.contains("model.path") && err.contains("model.safetensors") && err.contains("FIFO"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        let err = model_dir("model.path", empty.path(), true).unwrap_err();
        assert!(err.contains("has no config.json"), "{err}");
    }
}
