//! A run directory's step and sample records as JSON lines: `steps.jsonl` (one [`StepRecord`]
//! per step, the record r1d stores) and `samples.jsonl` (the [`SampleRecord`]s r1d keeps,
//! `SAMPLES_PER_STEP` per step). An in-process RL run appends one line to each as each step ends;
//! on resume, lines of steps after the checkpoint resumed from are dropped first, so a resumed
//! run's files hold the same records as an uninterrupted run's. `r1ctl samples|steps|report DIR`
//! read them back.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::messages::{SampleRecord, StepRecord};
use crate::report::charts::{write_run_charts, EvalBars, StepPoint};

/// The step records of a run directory.
pub const STEPS_FILE: &str = "steps.jsonl";
/// The sample records of a run directory.
pub const SAMPLES_FILE: &str = "samples.jsonl";

/// Why records could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A line is not the record the file holds.
    #[error("{path}, line {line}: not a {what} record: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// `step` or `sample`.
        what: &'static str,
        /// What the JSON parser said.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordsError + '_ {
    move |source| RecordsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A record kept per step.
trait Record: Serialize + DeserializeOwned {
    /// `step` or `sample`, for messages.
    const WHAT: &'static str;
    /// The step that wrote it.
    fn step(&self) -> u64;
}

impl Record for StepRecord {
    const WHAT: &'static str = "step";
    fn step(&self) -> u64 {
        self.step
    }
}

impl Record for SampleRecord {
    const WHAT: &'static str = "sample";
    fn step(&self) -> u64 {
        self.step
    }
}

/// The records of `path`, in file order; a missing file has none. A last line without its
/// newline (the process died while writing it) is dropped; any other bad line is an error.
fn read_lines<T: Record>(path: &Path) -> Result<Vec<T>, RecordsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let torn = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<T>(line) {
            Ok(record) => records.push(record),
            Err(_) if torn && i + 1 == lines.len() => break,
            Err(e) => {
                return Err(RecordsError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    what: T::WHAT,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(records)
}

/// Rewrites `path` with the records of steps up to `through` (atomically: a temporary file
/// renamed over it) and opens it for appending.
fn keep_through<T: Record>(path: &Path, through: u64) -> Result<File, RecordsError> {
    let kept: Vec<T> = read_lines::<T>(path)?
        .into_iter()
        .filter(|r| r.step() <= through)
        .collect();
    let mut text = String::new();
    for record in &kept {
        text.push_str(&line(record));
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    OpenOptions::new().append(true).open(path).map_err(io(path))
}

fn line<T: Serialize>(record: &T) -> String {
    // Records are plain data (strings, numbers, vectors): serialising cannot fail.
    let mut text = serde_json::to_string(record).expect("records serialise");
    text.push('\n');
    text
}

/// The step and sample files of a run directory, open for appending.
pub struct RunRecords {
    steps: (PathBuf, File),
    samples: (PathBuf, File),
}

impl RunRecords {
    /// Opens (creating) `dir`'s records for a run that starts after step `through` (0 for a fresh
    /// run, the checkpoint's step for a resumed one): records of later steps are dropped first.
    pub fn resume(dir: &Path, through: u64) -> Result<Self, RecordsError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (steps, samples) = (dir.join(STEPS_FILE), dir.join(SAMPLES_FILE));
        Ok(RunRecords {
            steps: (steps.clone(), keep_through::<StepRecord>(&steps, through)?),
            samples: (
                samples.clone(),
                keep_through::<SampleRecord>(&samples, through)?,
            ),
        })
    }

    /// Appends one step's record and its samples (each file written with one call, then synced
    /// to the OS).
    pub fn append(
        &mut self,
        step: &StepRecord,
        samples: &[SampleRecord],
    ) -> Result<(), RecordsError> {
        let text: String = samples.iter().map(line).collect();
        let (path, file) = &mut self.samples;
        file.write_all(text.as_bytes()).map_err(io(path))?;
        file.flush().map_err(io(path))?;
        let (path, file) = &mut self.steps;
        file.write_all(line(step).as_bytes()).map_err(io(path))?;
        file.flush().map_err(io(path))
    }
}

/// The step records of run directory `dir` (none when it has no `steps.jsonl`).
pub fn read_steps(dir: &Path) -> Result<Vec<StepRecord>, RecordsError> {
    read_lines(&dir.join(STEPS_FILE))
}

/// The sample records of run directory `dir` (none when it has no `samples.jsonl`).
pub fn read_samples(dir: &Path) -> Result<Vec<SampleRecord>, RecordsError> {
    read_lines(&dir.join(SAMPLES_FILE))
}

/// The chart points of step records, one per record, in order.
pub fn step_points(steps: &[StepRecord]) -> Vec<StepPoint> {
    steps
        .iter()
        .map(|s| StepPoint {
            step: s.step as usize,
            reward: s.report.learner.reward_mean,
            accuracy: s.report.accuracy,
            format: s.report.format,
            response_length: s.report.learner.completion_len_mean,
            reflection_rate: s.report.reflection_rate,
            kl: s.report.learner.kl,
            entropy: s.report.learner.entropy,
        })
        .collect()
}

/// (Re)writes the step charts of run directory `dir` from its `steps.jsonl` (and `eval.svg` when
/// `evals` has any) and returns their paths.
pub fn write_step_charts(dir: &Path, evals: &[EvalBars]) -> Result<Vec<PathBuf>, RecordsError> {
    let points = step_points(&read_steps(dir)?);
    write_run_charts(dir, &points, evals).map_err(|e| RecordsError::Io {
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(step: u64, text: &str) -> SampleRecord {
        SampleRecord {
            step,
            prompt: format!("prompt {step}"),
            completion: text.to_string(),
            reward: 1.0,
            accuracy: 1.0,
            format: 0.0,
            language: None,
            why: vec!["format: no <think> block".into()],
        }
    }

    #[test]
    fn resume_drops_later_steps_and_a_torn_last_line() {
        let dir = std::env::temp_dir().join(format!("r1-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(SAMPLES_FILE);
        let text: String = (1..=3).map(|s| line(&sample(s, "x"))).collect();
        std::fs::write(&path, text + "{\"step\":4,\"pro").unwrap();
        let mut file = keep_through::<SampleRecord>(&path, 2).unwrap();
        file.write_all(line(&sample(3, "y")).as_bytes()).unwrap();
        drop(file);
        let back = read_samples(&dir).unwrap();
        assert_eq!(back, vec![sample(1, "x"), sample(2, "x"), sample(3, "y")]);
        std::fs::write(&path, "not json\n").unwrap();
        let err = read_samples(&dir).unwrap_err().to_string();
        assert!(err.contains("line 1: not a sample record"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
