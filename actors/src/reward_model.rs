//! Reward models: preference data (JSONL pairs or safety labels), the training stage
//! (Bradley–Terry or point-wise loss, AdamW + schedule, validation accuracy per epoch), and the
//! batched scorer the preference-RL stage calls (the lead wraps it in an actor). `job` runs a whole
//! `r1ctl rm train` config (model, tokenizer, data, training, the written directory);
//! `score_file` scores a JSONL file of responses or pairs.
//!
//! A scored text is the prompt's tokens followed by the response's, encoded separately (no
//! special tokens added) and joined. Over-long texts (more than `max_tokens`) follow
//! [`OverLong`]: `keep_end` (the default) drops tokens from the front, prompt first, so the end of
//! the response — the final summary, and the token the head reads — is always scored; `error`
//! refuses the item, naming it.

use std::sync::atomic::{AtomicBool, Ordering};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use r1_kernels::device::{self, Device, ModelRole, TrainEngine};
use r1_kernels::model::RewardModel;
use r1_kernels::tokenizer::Tokenizer;
use r1_kernels::train::reward::{pad_rows, score_positions};
use r1_kernels::train::{
    bradley_terry, pairwise_accuracy, pointwise_bce, AdamW, AdamWConfig, LrSchedule,
};
use r1_kernels::EngineError;

use crate::data::DataError;

mod data;
mod job;
mod score_file;

pub use data::{
    load_labels, load_pairs, LabelFields, LabeledResponse, PairFields, PreferencePair, RewardData,
};
pub use job::{PreparedRmJob, RewardModelJob, RmDataSection, RmInit, RmJobReport, RmModelSection};
pub use score_file::{score_jsonl, ScoredFile, ScoredLine};

/// Errors of reward-model data, training and scoring.
#[derive(Debug, thiserror::Error)]
pub enum RewardModelError {
    /// A data file could not be read, or a line is malformed (file and line named).
    #[error(transparent)]
    Data(#[from] DataError),
    /// A text could not be tokenized.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An item is longer than `max_tokens` and the policy is `error`.
    #[error("{what}: {tokens} tokens exceed max_tokens = {max} (set over_long = \"keep_end\" to truncate)")]
    TooLong {
        /// Which item (file and line, or index).
        what: String,
        /// Its length.
        tokens: usize,
        /// The limit.
        max: usize,
    },
    /// A setting the trainer cannot use; names it.
    #[error("reward model training: `{field}`: {why}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The engine refused (token id outside the vocabulary, …) or a model directory could not
    /// be read or written (the error names the file).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A file next to a model (tokenizer files, report.json) could not be copied or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// What to do with a text longer than `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverLong {
    /// Drop tokens from the front (prompt first), keeping the end of the response.
    #[default]
    KeepEnd,
    /// Refuse the item with an error naming it.
    Error,
}

/// Turns (prompt, response) into the scored token ids under the length policy.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    /// The reward model's tokenizer.
    pub tokenizer: Tokenizer,
    /// Longest scored sequence in tokens.
    pub max_tokens: usize,
    /// What to do beyond it.
    pub over_long: OverLong,
}

impl TextEncoder {
    /// The ids of prompt then response; `what` names the item in errors.
    pub fn encode(
        &self,
        prompt: &str,
        response: &str,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<u32>, RewardModelError> {
        let tok = |s: &str| {
            self.tokenizer
                .encode(s, false)
                .map_err(|e| RewardModelError::Tokenizer(format!("{}: {e}", what())))
        };
        let mut ids = tok(prompt)?;
        ids.extend(tok(response)?);
        if ids.is_empty() {
            return Err(RewardModelError::Tokenizer(format!(
                "{}: prompt and response encode to no tokens",
                what()
            )));
        }
        if ids.len() > self.max_tokens {
            match self.over_long {
                OverLong::KeepEnd => {
                    ids.drain(..ids.len() - self.max_tokens);
                }
                OverLong::Error => {
                    return Err(RewardModelError::TooLong {
                        what: what(),
                        tokens: ids.len(),
                        max: self.max_tokens,
                    })
                }
            }
        }
        Ok(ids)
    }
}

/// Rewards of already-encoded sequences, `max_batch` at a time, shortest first (less padding);
/// returned in input order.
pub fn score_ids(
    rm: &RewardModel,
    ids: &[Vec<u32>],
    max_batch: usize,
) -> Result<Vec<f32>, RewardModelError> {
    let mut engine = device::open(Device::Cpu, &rm.model, false)?;
    score_ids_on(engine.as_mut(), ModelRole::Frozen, rm, ids, max_batch)
}

/// [`score_ids`] through `engine` (the model in `role` on the engine's device).
pub fn score_ids_on(
    engine: &mut dyn TrainEngine,
    role: ModelRole,
    rm: &RewardModel,
    ids: &[Vec<u32>],
    max_batch: usize,
) -> Result<Vec<f32>, RewardModelError> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let mut out = vec![0f32; ids.len()];
    for chunk in order.chunks(max_batch.max(1)) {
        let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
        let (batch, t) = pad_rows(&rows, rm.pad_token_id);
        let positions = score_positions(&rows, rm.pad_token_id);
        let r = engine.reward_forward(role, rm, (rows.len(), t), &batch, &positions)?;
        for (&i, r) in chunk.iter().zip(r) {
            out[i] = r;
        }
    }
    Ok(out)
}

/// Scores (prompt, response) pairs with a reward model, batching forward passes. Pure logic:
/// the lead wraps it in an actor beside the rule judge.
///
/// The engine is opened on the first call and kept: the model's weights stay on its device and
/// its arena stays planned between steps (the run's memory estimate counts both as held), so a
/// step on a GPU uploads nothing and a step on the CPU touches no fresh arena pages. Clones share
/// the engine (one call at a time).
#[derive(Clone)]
pub struct RewardModelScorer {
    rm: RewardModel,
    /// Tokenizer and length policy.
    pub encoder: TextEncoder,
    /// Most sequences per forward pass.
    pub max_batch: usize,
    device: Device,
    engine: std::sync::Arc<std::sync::Mutex<Option<Box<dyn TrainEngine>>>>,
}

impl std::fmt::Debug for RewardModelScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewardModelScorer")
            .field("parameters", &self.rm.model.params.len())
            .field("max_batch", &self.max_batch)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl RewardModelScorer {
    /// A scorer of `rm` on the CPU (see [`RewardModelScorer::on`]).
    pub fn new(rm: RewardModel, encoder: TextEncoder, max_batch: usize) -> Self {
        RewardModelScorer {
            rm,
            encoder,
            max_batch: max_batch.max(1),
            device: Device::Cpu,
            engine: Default::default(),
        }
    }

    /// The same scorer computing on `device` (its engine opens there on the next call).
    pub fn on(self, device: Device) -> Self {
        RewardModelScorer {
            engine: Default::default(),
            device,
            ..self
        }
    }

    /// The model it scores with.
    pub fn rm(&self) -> &RewardModel {
        &self.rm
    }

    /// Where its forward passes run.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Loads a reward-model directory (`…ForSequenceClassification`) with its tokenizer.json, or
    /// r1's byte tokenizer when `tokenizer` is `Some("byte")`; over-long texts keep their end.
    pub fn load(
        dir: &std::path::Path,
        tokenizer: Option<&str>,
        max_batch: usize,
        max_tokens: usize,
    ) -> Result<Self, RewardModelError> {
        let rm = r1_kernels::model::load_reward_model_dir(dir)?;
        let tokenizer = r1_kernels::tokenizer::resolve(dir, tokenizer)
            .map_err(|e| RewardModelError::Tokenizer(format!("{}: {e}", dir.display())))?;
        if tokenizer.vocab_size() > rm.model.config.vocab_size {
            return Err(RewardModelError::Tokenizer(format!(
                "{}: its tokenizer has {} ids but the model's vocabulary only {} (a tokenizer of \
                 another model?)",
                dir.display(),
                tokenizer.vocab_size(),
                rm.model.config.vocab_size
            )));
        }
        let encoder = TextEncoder {
            tokenizer,
            max_tokens: max_tokens.max(1),
            over_long: OverLong::KeepEnd,
        };
        Ok(RewardModelScorer::new(rm, encoder, max_batch))
    }

    /// The reward of each (prompt, response), in order.
    pub fn score(&self, items: &[(String, String)]) -> Result<Vec<f32>, RewardModelError> {
        let ids = items
            .iter()
            .enumerate()
            .map(|(i, (p, r))| self.encoder.encode(p, r, &|| format!("item {i}")))
            .collect::<Result<Vec<_>, _>>()?;
        // A call that panicked mid-forward leaves an engine whose arena may be half written:
        // it is dropped and reopened, never reused.
        let mut held = self.engine.lock().unwrap_or_else(|poisoned| {
            let mut held = poisoned.into_inner();
            *held = None;
            held
        });
        let engine = match held.as_mut() {
            Some(engine) => engine,
            // The scorer's own engine: the reward model is its trained role, without gradients.
            None => held.insert(device::open(self.device, &self.rm.model, false)?),
        };
        score_ids_on(
            engine.as_mut(),
            ModelRole::Trained,
            &self.rm,
            &ids,
            self.max_batch,
        )
    }
}

/// How a reward model is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmTrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Pairs (or labelled responses) per optimizer step.
    pub batch_size: usize,
    /// Peak learning rate (linear warmup, cosine decay to `min_lr_ratio`).
    pub lr: f64,
    /// Warmup steps.
    pub warmup_steps: u64,
    /// Floor of the cosine as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// AdamW moments and weight decay.
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip (0 disables).
    pub max_grad_norm: f64,
    /// Longest scored sequence (prompt + response) in tokens.
    pub max_tokens: usize,
    /// What to do with longer ones.
    pub over_long: OverLong,
    /// Seed of the per-epoch shuffle.
    pub seed: u64,
}

impl Default for RmTrainConfig {
    /// One epoch at 1e-5 (InstructGPT/Llama-2 style RM training), batch 32, 2048 tokens.
    fn default() -> Self {
        RmTrainConfig {
            epochs: 1,
            batch_size: 32,
            lr: 1e-5,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            adamw: AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
            max_grad_norm: 1.0,
            max_tokens: 2048,
            over_long: OverLong::KeepEnd,
            seed: 0,
        }
    }
}

impl RmTrainConfig {
    /// Names the first unusable setting.
    pub fn validate(&self) -> Result<(), RewardModelError> {
        let bad = |field, why: &str| {
            Err(RewardModelError::Config {
                field,
                why: why.into(),
            })
        };
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", "must be a positive number");
        }
        if self.max_tokens == 0 {
            return bad("max_tokens", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad("min_lr_ratio", "must be in [0, 1]");
        }
        Ok(())
    }
}

/// What the trainer reports as it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RmProgress {
    /// One optimizer step.
    Step {
        /// Steps done.
        step: u64,
        /// Steps planned.
        steps: u64,
        /// Loss of the batch.
        loss: f64,
        /// Training accuracy of the batch (pairs ranked right, or labels matched).
        accuracy: f64,
        /// Learning rate used.
        lr: f64,
    },
    /// One epoch ended and the validation set was scored.
    Epoch(EpochReport),
}

/// One epoch's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over its steps.
    pub train_loss: f64,
    /// Validation loss (NaN without a validation set).
    pub validation_loss: f64,
    /// Validation accuracy: chosen ranked above rejected, or σ(r) on the label's side of ½.
    pub validation_accuracy: f64,
}

/// The trained model and what happened.
#[derive(Debug, Clone)]
pub struct RmTrainOutcome {
    /// The model after the last step taken.
    pub rm: RewardModel,
    /// One entry per finished epoch.
    pub epochs: Vec<EpochReport>,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Whether the stop flag ended training early.
    pub stopped: bool,
}

/// Encoded training items: pairs as two id rows each, labels as one row with its label.
enum Encoded {
    Pairs(Vec<(Vec<u32>, Vec<u32>)>),
    Labels(Vec<(Vec<u32>, f32)>),
}

fn encode_data(data: &RewardData, encoder: &TextEncoder) -> Result<Encoded, RewardModelError> {
    let at = |line: usize, i: usize| {
        if line > 0 {
            format!("line {line}")
        } else {
            format!("item {i}")
        }
    };
    Ok(match data {
        RewardData::Pairs(pairs) => Encoded::Pairs(
            pairs
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let what = || format!("{} (chosen)", at(p.line, i));
                    let c = encoder.encode(&p.prompt, &p.chosen, &what)?;
                    let what = || format!("{} (rejected)", at(p.line, i));
                    let r = encoder.encode(&p.prompt, &p.rejected, &what)?;
                    Ok((c, r))
                })
                .collect::<Result<_, RewardModelError>>()?,
        ),
        RewardData::Labels(items) => Encoded::Labels(
            items
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let what = || at(l.line, i);
                    Ok((encoder.encode(&l.prompt, &l.response, &what)?, l.label))
                })
                .collect::<Result<_, RewardModelError>>()?,
        ),
    })
}

impl Encoded {
    fn len(&self) -> usize {
        match self {
            Encoded::Pairs(p) => p.len(),
            Encoded::Labels(l) => l.len(),
        }
    }

    /// Rows of items `idx` and the loss over them (pairs: chosen rows then rejected rows).
    fn rows_and_loss(&self, idx: &[usize]) -> (Vec<&[u32]>, LossOf<'_>) {
        match self {
            Encoded::Pairs(p) => {
                let mut rows: Vec<&[u32]> = idx.iter().map(|&i| p[i].0.as_slice()).collect();
                rows.extend(idx.iter().map(|&i| p[i].1.as_slice()));
                let k = idx.len();
                (
                    rows,
                    Box::new(move |r: &[f32]| {
                        let bt = bradley_terry(&r[..k], &r[k..]);
                        let mut d = bt.d_first;
                        d.extend(bt.d_second);
                        Loss {
                            loss: bt.loss,
                            d,
                            accuracy: pairwise_accuracy(&r[..k], &r[k..]),
                        }
                    }),
                )
            }
            Encoded::Labels(l) => {
                let rows = idx.iter().map(|&i| l[i].0.as_slice()).collect();
                let labels: Vec<f32> = idx.iter().map(|&i| l[i].1).collect();
                (
                    rows,
                    Box::new(move |r: &[f32]| {
                        let bce = pointwise_bce(r, &labels);
                        let right = r
                            .iter()
                            .zip(&labels)
                            .filter(|(r, y)| (**r > 0.0) == (**y > 0.5))
                            .count();
                        Loss {
                            loss: bce.loss,
                            d: bce.d_first,
                            accuracy: right as f64 / r.len().max(1) as f64,
                        }
                    }),
                )
            }
        }
    }
}

/// The loss of a batch as a function of its rows' rewards.
type LossOf<'a> = Box<dyn Fn(&[f32]) -> Loss + 'a>;

/// A batch's loss, gradient per row and accuracy.
struct Loss {
    loss: f64,
    d: Vec<f32>,
    accuracy: f64,
}

/// Loss and accuracy of the whole validation set (no gradients).
fn validate(
    engine: &mut dyn TrainEngine,
    rm: &RewardModel,
    data: &Encoded,
    batch: usize,
) -> Result<(f64, f64), RewardModelError> {
    let n = data.len();
    if n == 0 {
        return Ok((f64::NAN, f64::NAN));
    }
    let (mut loss, mut acc) = (0.0, 0.0);
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let (rows, loss_of) = data.rows_and_loss(chunk);
        let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.to_vec()).collect();
        let r = score_ids_on(engine, ModelRole::Trained, rm, &ids, rows.len())?;
        let l = loss_of(&r);
        loss += l.loss * chunk.len() as f64;
        acc += l.accuracy * chunk.len() as f64;
    }
    Ok((loss / n as f64, acc / n as f64))
}

/// Trains `rm` on `train` (pairs: Bradley–Terry; labels: point-wise BCE), scoring `validation`
/// after every epoch. `stop` is checked between steps: when set, training ends after the current
/// step and the outcome says so. Deterministic given the config's seed.
pub fn train_reward_model(
    rm: RewardModel,
    encoder: &TextEncoder,
    train: &RewardData,
    validation: &RewardData,
    config: &RmTrainConfig,
    progress: &mut dyn FnMut(RmProgress),
    stop: &AtomicBool,
) -> Result<RmTrainOutcome, RewardModelError> {
    train_reward_model_on(
        Device::Cpu,
        rm,
        encoder,
        train,
        validation,
        config,
        progress,
        stop,
    )
}

/// [`train_reward_model`] on `device`.
#[allow(clippy::too_many_arguments)]
pub fn train_reward_model_on(
    device: Device,
    mut rm: RewardModel,
    encoder: &TextEncoder,
    train: &RewardData,
    validation: &RewardData,
    config: &RmTrainConfig,
    progress: &mut dyn FnMut(RmProgress),
    stop: &AtomicBool,
) -> Result<RmTrainOutcome, RewardModelError> {
    config.validate()?;
    if train.is_empty() {
        return Err(RewardModelError::Config {
            field: "data",
            why: "the training set is empty".into(),
        });
    }
    let train = encode_data(train, encoder)?;
    let validation = encode_data(validation, encoder)?;
    let per_epoch = train.len().div_ceil(config.batch_size) as u64;
    let steps = per_epoch * config.epochs as u64;
    let schedule = LrSchedule {
        peak_lr: config.lr,
        warmup_steps: config.warmup_steps,
        total_steps: steps,
        min_lr_ratio: config.min_lr_ratio,
    };
    let mut optimizer = AdamW::new(config.adamw, rm.model.layout.total);
    let mut engine = device::open(device, &rm.model, true)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    let mut outcome_epochs = Vec::new();
    let mut step = 0u64;
    for epoch in 0..config.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut batches = 0usize;
        for chunk in order.chunks(config.batch_size) {
            if stop.load(Ordering::Relaxed) {
                // A device that keeps the weights updated them there: the host copy follows.
                engine.download_params(&mut rm.model)?;
                return Ok(RmTrainOutcome {
                    rm,
                    epochs: outcome_epochs,
                    steps: step,
                    stopped: true,
                });
            }
            let (rows, loss_of) = train.rows_and_loss(chunk);
            let (ids, t) = pad_rows(&rows, rm.pad_token_id);
            let positions = score_positions(&rows, rm.pad_token_id);
            let trained = ModelRole::Trained;
            let r = engine.reward_forward(trained, &rm, (rows.len(), t), &ids, &positions)?;
            let loss = loss_of(&r);
            engine.zero_grads()?;
            engine.reward_backward(&rm, &ids, &positions, &loss.d)?;
            engine.clip_grad_norm(config.max_grad_norm)?;
            let lr = schedule.lr_at(step);
            engine.adamw_step(&mut rm.model, &mut optimizer, lr as f32)?;
            step += 1;
            loss_sum += loss.loss;
            batches += 1;
            progress(RmProgress::Step {
                step,
                steps,
                loss: loss.loss,
                accuracy: loss.accuracy,
                lr,
            });
        }
        let (validation_loss, validation_accuracy) =
            validate(engine.as_mut(), &rm, &validation, config.batch_size)?;
        let report = EpochReport {
            epoch: epoch + 1,
            train_loss: loss_sum / batches.max(1) as f64,
            validation_loss,
            validation_accuracy,
        };
        progress(RmProgress::Epoch(report.clone()));
        outcome_epochs.push(report);
    }
    engine.download_params(&mut rm.model)?;
    Ok(RmTrainOutcome {
        rm,
        epochs: outcome_epochs,
        steps: step,
        stopped: false,
    })
}
