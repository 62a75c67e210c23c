//! A whole reward-model training job, as `r1ctl rm train` runs it: the `[model]` and `[data]`
//! tables of its config (`config/examples/rm/`), the model and tokenizer they name, the data split
//! into training and validation, then training and the written directory (`final/`, a
//! Qwen2/LlamaForSequenceClassification that transformers loads, plus `report.json`).
//!
//! Two phases, so a caller can say what was loaded before the minutes of training:
//! [`RewardModelJob::prepare`] loads everything and checks it, [`PreparedRmJob::run`] trains and writes.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use r1_kernels::model::tiny::TinyModel;
use r1_kernels::model::{
    load_model_dir, load_reward_model_dir, save_reward_model_dir, RewardModel,
};
use r1_kernels::tokenizer::{self, Tokenizer};

use super::{
    load_labels, load_pairs, train_reward_model, EpochReport, LabelFields, PairFields, RewardData,
    RewardModelError, RmProgress, RmTrainConfig, TextEncoder,
};

/// Where a reward model's weights start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum RmInit {
    /// A causal LM directory (usually the SFT policy): its transformer, a fresh score head.
    CausalLm {
        /// The model directory.
        path: PathBuf,
    },
    /// An existing reward model directory (continue training).
    RewardModel {
        /// The model directory.
        path: PathBuf,
    },
    /// A random tiny Qwen2 on the byte tokenizer, for tests and demos.
    Tiny {
        /// Residual width (a multiple of 4).
        #[serde(default = "default_tiny_hidden")]
        hidden_size: usize,
        /// Transformer blocks.
        #[serde(default = "default_tiny_layers")]
        num_layers: usize,
    },
}

fn default_tiny_hidden() -> usize {
    64
}

fn default_tiny_layers() -> usize {
    2
}

/// What kind of labels the data has, and where each field is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum RmDataSection {
    /// Preference pairs (prompt, chosen, rejected): the Bradley–Terry loss.
    Pairs {
        /// The file: JSONL, or Parquet for a `.parquet` name.
        path: PathBuf,
        /// Field mapping.
        #[serde(default)]
        fields: PairFields,
        /// A separate validation file; without it, `validation_fraction` of the file's end.
        #[serde(default)]
        validation_path: Option<PathBuf>,
        /// Share held out when there is no validation file.
        #[serde(default = "default_validation_fraction")]
        validation_fraction: f64,
    },
    /// Labelled responses (prompt, response, safe): the point-wise loss.
    Labels {
        /// The file: JSONL, or Parquet for a `.parquet` name.
        path: PathBuf,
        /// Field mapping.
        #[serde(default)]
        fields: LabelFields,
        /// A separate validation file.
        #[serde(default)]
        validation_path: Option<PathBuf>,
        /// Share held out when there is no validation file.
        #[serde(default = "default_validation_fraction")]
        validation_fraction: f64,
    },
}

fn default_validation_fraction() -> f64 {
    0.1
}

/// The model part of a reward-model job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmModelSection {
    /// Where the weights start.
    pub init: RmInit,
    /// `"byte"`, or absent for the model directory's tokenizer.json.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Padding id written to config.json (the scored token is the last one that is not it);
    /// absent: the tokenizer's first end-of-sequence id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

/// A reward-model job: its config's tables, borrowed (the config crate owns the file format).
#[derive(Debug, Clone, Copy)]
pub struct RewardModelJob<'a> {
    /// A name for people.
    pub name: &'a str,
    /// Where `final/` and `report.json` go.
    pub output_dir: &'a Path,
    /// Where the weights start, the tokenizer, the padding id.
    pub model: &'a RmModelSection,
    /// The training data and how validation is held out.
    pub data: &'a RmDataSection,
    /// The trainer's settings.
    pub train: &'a RmTrainConfig,
}

/// A job with its model, tokenizer and data loaded, ready to train.
pub struct PreparedRmJob<'a> {
    job: RewardModelJob<'a>,
    /// The model training starts from.
    pub rm: RewardModel,
    /// The text → ids encoder (the tokenizer the model was trained with, `max_tokens`).
    pub encoder: TextEncoder,
    /// Training items.
    pub train_set: RewardData,
    /// Held-out items scored after every epoch.
    pub validation: RewardData,
}

/// What a finished job wrote.
#[derive(Debug, Clone)]
pub struct RmJobReport {
    /// The trained model's directory (`OUTPUT_DIR/final`).
    pub final_dir: PathBuf,
    /// `OUTPUT_DIR/report.json`.
    pub report_path: PathBuf,
    /// Optimizer steps taken.
    pub steps: u64,
    /// One entry per finished epoch.
    pub epochs: Vec<EpochReport>,
    /// Whether the stop flag ended training early.
    pub stopped: bool,
}

impl<'a> RewardModelJob<'a> {
    /// The directory the weights start from, if any (a tiny model starts from none).
    pub fn init_dir(&self) -> Option<&'a Path> {
        match &self.model.init {
            RmInit::CausalLm { path } | RmInit::RewardModel { path } => Some(path.as_path()),
            RmInit::Tiny { .. } => None,
        }
    }

    /// The tokenizer: the named built-in, or the start directory's (see
    /// [`r1_kernels::tokenizer::resolve`]); a tiny model has the byte vocabulary.
    pub fn tokenizer(&self) -> Result<Tokenizer, RewardModelError> {
        let named = self.model.tokenizer.as_deref();
        match self.init_dir() {
            Some(dir) => tokenizer::resolve(dir, named),
            None => tokenizer::resolve(Path::new(""), Some(named.unwrap_or("byte"))),
        }
        .map_err(|e| RewardModelError::Tokenizer(e.to_string()))
    }

    /// Loads the start model, the tokenizer and the data (split into training and validation).
    pub fn prepare(self) -> Result<PreparedRmJob<'a>, RewardModelError> {
        let tokenizer = self.tokenizer()?;
        let pad = self
            .model
            .pad_token_id
            .or_else(|| tokenizer.eos_ids().first().copied());
        let seed = self.train.seed;
        let rm = match &self.model.init {
            RmInit::CausalLm { path } => {
                RewardModel::from_causal_lm(&load_model_dir(path)?, pad, seed, 0.02)
            }
            RmInit::RewardModel { path } => {
                let mut rm = load_reward_model_dir(path)?;
                if self.model.pad_token_id.is_some() {
                    rm.pad_token_id = pad;
                }
                rm
            }
            RmInit::Tiny {
                hidden_size,
                num_layers,
            } => RewardModel::random(
                TinyModel::byte_qwen2(*hidden_size, *num_layers)
                    .positions(self.train.max_tokens)
                    .into_config(),
                pad,
                seed,
                0.02,
            ),
        };
        let (train_set, validation) = load_split(self.data)?;
        Ok(PreparedRmJob {
            job: self,
            rm,
            encoder: TextEncoder {
                tokenizer,
                max_tokens: self.train.max_tokens,
                over_long: self.train.over_long,
            },
            train_set,
            validation,
        })
    }
}

impl PreparedRmJob<'_> {
    /// Trains, then writes `final/` (with the start directory's tokenizer files, so the model
    /// directory is complete) and `report.json`. `stop` ends training after the current step.
    pub fn run(
        self,
        on_progress: &mut dyn FnMut(RmProgress),
        stop: &AtomicBool,
    ) -> Result<RmJobReport, RewardModelError> {
        let job = self.job;
        let outcome = train_reward_model(
            self.rm,
            &self.encoder,
            &self.train_set,
            &self.validation,
            job.train,
            on_progress,
            stop,
        )?;
        let final_dir = job.output_dir.join("final");
        save_reward_model_dir(&outcome.rm, &final_dir)?;
        if let Some(dir) = job.init_dir() {
            r1_kernels::model::copy_tokenizer_files(dir, &final_dir)?;
        }
        let report = serde_json::json!({
            "name": job.name,
            "steps": outcome.steps,
            "epochs": outcome.epochs,
            "model": final_dir,
        });
        let report_path = job.output_dir.join("report.json");
        let text = serde_json::to_string_pretty(&report).expect("a JSON value always serialises");
        std::fs::write(&report_path, text + "\n").map_err(|source| RewardModelError::Io {
            path: report_path.clone(),
            source,
        })?;
        Ok(RmJobReport {
            final_dir,
            report_path,
            steps: outcome.steps,
            epochs: outcome.epochs,
            stopped: outcome.stopped,
        })
    }
}

/// The `[data]` table's file, split into training and validation items.
fn load_split(data: &RmDataSection) -> Result<(RewardData, RewardData), RewardModelError> {
    Ok(match data {
        RmDataSection::Pairs {
            path,
            fields,
            validation_path,
            validation_fraction,
        } => {
            let all = RewardData::Pairs(load_pairs(path, fields)?);
            match validation_path {
                Some(v) => (all, RewardData::Pairs(load_pairs(v, fields)?)),
                None => all.split_off(*validation_fraction),
            }
        }
        RmDataSection::Labels {
            path,
            fields,
            validation_path,
            validation_fraction,
        } => {
            let all = RewardData::Labels(load_labels(path, fields)?);
            match validation_path {
                Some(v) => (all, RewardData::Labels(load_labels(v, fields)?)),
                None => all.split_off(*validation_fraction),
            }
        }
    })
}
