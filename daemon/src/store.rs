//! The daemon's state in sled: runs, their per-step stats, a bounded sample of rollouts, checkpoint
//! records and evaluations. Every write is flushed before the call returns, so what a client was
//! told is on disk, and a daemon killed at any moment reopens a consistent store.
//!
//! Keys: `runs/<id>`; `steps/<id>\0<step be64>`; `samples/<id>\0<step be64><index be32>`;
//! `checkpoints/<id>\0<step be64>`; `evals/<id>\0<unix-nanos be64>`; `meta/next_run`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use r1_actors::messages::{SampleRecord, SavedCheckpoint, StepRecord};

use crate::api::{EvalReport, RunInfo};

/// Rollout samples kept per run (the oldest go first).
pub const SAMPLES_KEPT: usize = 256;

/// Errors of the store: sled itself, or a record that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption it detected). The cause is in the message, not chained as
    /// a source, so `{:#}` prints it once.
    #[error("state store {path}: {cause}")]
    Sled {
        /// The store's folder.
        path: PathBuf,
        /// What sled said.
        cause: sled::Error,
    },
    /// Another process (another r1d) holds the store's lock.
    #[error(
        "state store {path} is in use by another process (is another r1d running on this \
         state folder? one r1d per --state-dir: stop the other one or pick another folder)"
    )]
    Locked {
        /// The store's folder.
        path: PathBuf,
    },
    /// A record did not decode (written by another version?).
    #[error("state store: record {key} does not decode: {message}")]
    Decode {
        /// The key, printable.
        key: String,
        /// What serde said.
        message: String,
    },
}

/// The sled database and its trees.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    runs: sled::Tree,
    steps: sled::Tree,
    samples: sled::Tree,
    checkpoints: sled::Tree,
    evals: sled::Tree,
    meta: sled::Tree,
}

fn key(run: &str, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(run.len() + 9);
    k.extend_from_slice(run.as_bytes());
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn prefix(run: &str) -> Vec<u8> {
    let mut k = run.as_bytes().to_vec();
    k.push(0);
    k
}

impl Store {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let sled_err = |cause| StoreError::Sled {
            path: path.to_path_buf(),
            cause,
        };
        let db = sled::Config::new().path(path).open().map_err(|e| match e {
            // sled's lock is an flock on the folder's `db` file; EWOULDBLOCK means held elsewhere.
            sled::Error::Io(ref io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("could not acquire lock") =>
            {
                StoreError::Locked {
                    path: path.to_path_buf(),
                }
            }
            e => sled_err(e),
        })?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_err);
        Ok(Store {
            runs: tree("runs")?,
            steps: tree("steps")?,
            samples: tree("samples")?,
            checkpoints: tree("checkpoints")?,
            evals: tree("evals")?,
            meta: tree("meta")?,
            path: path.to_path_buf(),
            db,
        })
    }

    fn sled<T>(&self, r: sled::Result<T>) -> Result<T, StoreError> {
        r.map_err(|cause| StoreError::Sled {
            path: self.path.clone(),
            cause,
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        let r = self.db.flush();
        self.sled(r).map(|_| ())
    }

    fn decode<T: DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(v).map_err(|e| StoreError::Decode {
            key: String::from_utf8_lossy(k).replace('\0', "/"),
            message: e.to_string(),
        })
    }

    fn put<T: Serialize>(&self, tree: &sled::Tree, k: &[u8], value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).expect("records serialize");
        let r = tree.insert(k, bytes);
        self.sled(r)?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        run: &str,
    ) -> Result<Vec<T>, StoreError> {
        tree.scan_prefix(prefix(run))
            .map(|kv| {
                let (k, v) = self.sled(kv)?;
                Self::decode(&k, &v)
            })
            .collect()
    }

    /// A fresh run id: `run-0001`, `run-0002`, …
    pub fn next_run_id(&self) -> Result<String, StoreError> {
        let r = self.meta.update_and_fetch("next_run", |old| {
            let n = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            Some((n + 1).to_be_bytes().to_vec())
        });
        let bytes = self.sled(r)?.expect("update_and_fetch sets a value");
        let n = u64::from_be_bytes(bytes.as_ref().try_into().expect("8 bytes"));
        self.flush()?;
        Ok(format!("run-{n:04}"))
    }

    /// Writes a run's record (a state transition) and flushes.
    pub fn put_run(&self, run: &RunInfo) -> Result<(), StoreError> {
        self.put(&self.runs, run.id.as_bytes(), run)?;
        self.flush()
    }

    /// A run's record.
    pub fn run(&self, id: &str) -> Result<Option<RunInfo>, StoreError> {
        let r = self.runs.get(id.as_bytes());
        match self.sled(r)? {
            Some(v) => Ok(Some(Self::decode(id.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunInfo>, StoreError> {
        self.runs
            .iter()
            .map(|kv| {
                let (k, v) = self.sled(kv)?;
                Self::decode(&k, &v)
            })
            .collect()
    }

    /// Records a step and its samples (keeping the newest [`SAMPLES_KEPT`]) and flushes.
    pub fn put_step(
        &self,
        run: &str,
        record: &StepRecord,
        samples: &[SampleRecord],
    ) -> Result<(), StoreError> {
        self.put(&self.steps, &key(run, record.step), record)?;
        for (i, sample) in samples.iter().enumerate() {
            let mut k = key(run, record.step);
            k.extend_from_slice(&(i as u32).to_be_bytes());
            self.put(&self.samples, &k, sample)?;
        }
        let keys: Vec<sled::IVec> = self
            .samples
            .scan_prefix(prefix(run))
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|cause| StoreError::Sled {
                path: self.path.clone(),
                cause,
            })?;
        for k in keys.iter().take(keys.len().saturating_sub(SAMPLES_KEPT)) {
            let r = self.samples.remove(k);
            self.sled(r)?;
        }
        self.flush()
    }

    /// Every recorded step of a run with `step > after`, at most `limit`.
    pub fn steps(
        &self,
        run: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StepRecord>, StoreError> {
        self.steps
            .range(key(run, after.saturating_add(1))..key(run, u64::MAX))
            .take(limit)
            .map(|kv| {
                let (k, v) = self.sled(kv)?;
                Self::decode(&k, &v)
            })
            .collect()
    }

    /// The newest recorded step of a run.
    pub fn last_step(&self, run: &str) -> Result<Option<StepRecord>, StoreError> {
        match self.steps.scan_prefix(prefix(run)).next_back() {
            Some(kv) => {
                let (k, v) = self.sled(kv)?;
                Ok(Some(Self::decode(&k, &v)?))
            }
            None => Ok(None),
        }
    }

    /// The newest `limit` samples of a run, newest last.
    pub fn samples(&self, run: &str, limit: usize) -> Result<Vec<SampleRecord>, StoreError> {
        let all: Vec<SampleRecord> = self.scan(&self.samples, run)?;
        Ok(all[all.len().saturating_sub(limit)..].to_vec())
    }

    /// Forgets steps, samples and checkpoint records after `step`: a resumed run takes those
    /// steps again, so none is recorded twice.
    pub fn truncate_after(&self, run: &str, step: u64) -> Result<(), StoreError> {
        for tree in [&self.steps, &self.samples, &self.checkpoints] {
            self.remove_keys(
                tree,
                tree.range(key(run, step.saturating_add(1))..key(run, u64::MAX))
                    .keys(),
            )?;
        }
        self.flush()
    }

    /// Removes `keys` (read in full first, so the scan does not see its own removals) from `tree`.
    fn remove_keys(
        &self,
        tree: &sled::Tree,
        keys: impl Iterator<Item = sled::Result<sled::IVec>>,
    ) -> Result<(), StoreError> {
        let keys: Vec<sled::IVec> =
            keys.collect::<Result<_, _>>()
                .map_err(|cause| StoreError::Sled {
                    path: self.path.clone(),
                    cause,
                })?;
        for k in keys {
            let r = tree.remove(k);
            self.sled(r)?;
        }
        Ok(())
    }

    /// Records a durable checkpoint, forgets records whose folder is gone (pruned), and flushes.
    pub fn put_checkpoint(&self, run: &str, saved: &SavedCheckpoint) -> Result<(), StoreError> {
        self.put(&self.checkpoints, &key(run, saved.step), saved)?;
        for old in self.checkpoints(run)? {
            if !old.path.exists() {
                let r = self.checkpoints.remove(key(run, old.step));
                self.sled(r)?;
            }
        }
        self.flush()
    }

    /// A run's checkpoint records, oldest first.
    pub fn checkpoints(&self, run: &str) -> Result<Vec<SavedCheckpoint>, StoreError> {
        self.scan(&self.checkpoints, run)
    }

    /// Records an evaluation and flushes.
    pub fn put_eval(&self, run: &str, report: &EvalReport) -> Result<(), StoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.put(&self.evals, &key(run, nanos), report)?;
        self.flush()
    }

    /// A run's evaluations, oldest first.
    pub fn evals(&self, run: &str) -> Result<Vec<EvalReport>, StoreError> {
        self.scan(&self.evals, run)
    }

    /// Forgets a run: its record, steps, samples, checkpoint records, evaluations and
    /// crash-loop count; flushes.
    pub fn delete_run(&self, run: &str) -> Result<(), StoreError> {
        for tree in [&self.steps, &self.samples, &self.checkpoints, &self.evals] {
            self.remove_keys(tree, tree.scan_prefix(prefix(run)).keys())?;
        }
        let r = self.meta.remove(format!("resuming/{run}"));
        self.sled(r)?;
        let r = self.runs.remove(run.as_bytes());
        self.sled(r)?;
        self.flush()
    }

    /// How many times r1d began to resume (or launch) `run` without the run getting through its
    /// load and first step: the crash-loop guard's count (`meta/resuming/<id>`).
    pub fn resume_attempts(&self, run: &str) -> Result<u32, StoreError> {
        let r = self.meta.get(format!("resuming/{run}"));
        Ok(self
            .sled(r)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map_or(0, u32::from_be_bytes))
    }

    /// Sets the count (0 removes it) and flushes: it must be on disk before the run loads, so
    /// that a load which takes the process down is counted.
    pub fn set_resume_attempts(&self, run: &str, attempts: u32) -> Result<(), StoreError> {
        let k = format!("resuming/{run}");
        let r = if attempts == 0 {
            self.meta.remove(k).map(|_| ())
        } else {
            self.meta.insert(k, &attempts.to_be_bytes()).map(|_| ())
        };
        self.sled(r)?;
        self.flush()
    }
}
