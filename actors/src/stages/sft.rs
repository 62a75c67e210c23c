//! The SFT stage (cold start, the rejection-sampled set, distillation): a JSONL set of
//! prompt/response pairs, masked cross-entropy on the response tokens only, sequence packing,
//! epochs over a seeded shuffle, a cosine learning rate with warmup.
//!
//! Each line is rendered as the template's prompt followed by the response and the template's
//! end-of-turn token (so the model learns to stop). Step `s` trains batch `s % steps_per_epoch`
//! of epoch `s / steps_per_epoch`, whose order is a shuffle seeded by (seed, epoch): the data
//! position follows from the step alone, so a resumed run sees exactly the batches it would have.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use r1_kernels::template::PromptTemplate;
use r1_kernels::tokenizer::Tokenizer;
use r1_kernels::train::{AdamWConfig, LrSchedule};

use crate::data::{read_records, DataError};
use crate::keeper::TrainerState;
use crate::learner::{SftExample, SftTrainer};
use crate::stages::job::{
    resume_point, stop_requested, write_checkpoint, write_final, ModelSpec, RunError, RunSpec,
    StageEvent,
};

/// The SFT stage's settings (the job config's `[sft]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// The JSONL set (required for `stage = "sft"`; the distill stage writes its own).
    pub data: Option<PathBuf>,
    /// Key of the prompt in each line (dotted paths reach into objects).
    pub prompt_key: String,
    /// Key of the response (what is learned).
    pub response_key: String,
    /// Passes over the set.
    pub epochs: usize,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Pack examples into rows of this many positions (0: one example per row, padded).
    pub pack_length: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// The cosine's floor as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Global gradient-norm clip (0 disables).
    pub max_grad_norm: f64,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            data: None,
            prompt_key: "prompt".into(),
            response_key: "response".into(),
            epochs: 1,
            batch_size: 8,
            pack_length: 0,
            lr: 1e-4,
            warmup_steps: 0,
            min_lr_ratio: 0.1,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
        }
    }
}

impl SftConfig {
    /// Range checks; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err("epochs and batch_size must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr must be a positive number, got {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(format!(
                "min_lr_ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            ));
        }
        if self.prompt_key.is_empty() || self.response_key.is_empty() {
            return Err("prompt_key and response_key must not be empty".into());
        }
        Ok(())
    }
}

/// Everything the SFT stage needs.
#[derive(Debug, Clone)]
pub struct SftJob {
    /// Seed, output, checkpoints.
    pub run: RunSpec,
    /// The model trained (and its tokenizer and template).
    pub model: ModelSpec,
    /// The stage's settings; `data` must be set.
    pub sft: SftConfig,
}

/// What the SFT stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftRunReport {
    /// Examples in the set.
    pub examples: usize,
    /// Steps done in total (resumed ones included).
    pub steps: u64,
    /// Steps planned (epochs × batches per epoch).
    pub steps_planned: u64,
    /// Whether the stop flag ended it early.
    pub stopped: bool,
    /// Loss of the first step run by this call.
    pub first_loss: Option<f64>,
    /// Loss of the last step run by this call.
    pub last_loss: Option<f64>,
    /// The newest checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// The trained model as a model directory (when the run completed).
    pub final_model: Option<PathBuf>,
}

/// Reads an SFT set (JSONL, or Parquet for a `.parquet` file) and tokenizes it: prompt through the
/// template (not learned), response plus end-of-turn (learned). Errors name the file and the line
/// or row; a set with no examples is an error.
pub fn load_sft_set(
    path: &Path,
    config: &SftConfig,
    template: &PromptTemplate,
    tokenizer: &Tokenizer,
) -> Result<Vec<SftExample>, DataError> {
    read_records(path, "examples", |value, _| {
        let field = |key: &str| -> Result<String, String> {
            match key.split('.').try_fold(value, |v, k| v.get(k)) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(other) if !other.is_null() => {
                    Err(format!("`{key}` must be a non-empty string, found {other}"))
                }
                _ => Err(format!("no `{key}` field")),
            }
        };
        let prompt = field(&config.prompt_key)?;
        let mut response = field(&config.response_key)?;
        if let Some(end) = template.end_of_turn() {
            if !response.ends_with(end) {
                response.push_str(end);
            }
        }
        let prompt_ids = template
            .render_prompt(&prompt)
            .encode(tokenizer)
            .map_err(|e| format!("tokenizing the prompt: {e}"))?;
        let response_ids = tokenizer
            .encode(&response, false)
            .map_err(|e| format!("tokenizing the response: {e}"))?;
        let mut loss_mask = vec![0.0; prompt_ids.len()];
        loss_mask.extend(std::iter::repeat_n(1.0, response_ids.len()));
        let mut ids = prompt_ids;
        ids.extend(response_ids);
        Ok(SftExample { ids, loss_mask })
    })
}

/// The example order of `epoch`: a shuffle seeded by (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
}

/// Runs (or continues) the SFT stage; see the module doc.
pub fn run_sft(
    job: &SftJob,
    progress: &mut dyn FnMut(StageEvent),
    stop: &AtomicBool,
) -> Result<SftRunReport, RunError> {
    let cfg = &job.sft;
    cfg.validate()
        .map_err(|m| RunError::Invalid(format!("sft: {m}")))?;
    // The workers' devices: a GPU this machine lacks is refused here, `auto` says where it went.
    let placement = crate::stages::job::announce_placement(&job.run, progress)?;
    let device = placement.learners[0];
    let Some(data) = &cfg.data else {
        return Err(RunError::Invalid(
            "sft.data: the SFT stage needs a JSONL set".into(),
        ));
    };
    let tokenizer = job.model.tokenizer()?;
    let examples = load_sft_set(data, cfg, &job.model.template, &tokenizer)?;
    if examples.is_empty() {
        return Err(RunError::Invalid(format!(
            "{}: the SFT set is empty",
            data.display()
        )));
    }
    if cfg.pack_length > 0 {
        if let Some(long) = examples
            .iter()
            .position(|e| e.ids.len() - 1 > cfg.pack_length)
        {
            return Err(RunError::Invalid(format!(
                "{}: example {} has {} positions, more than sft.pack_length = {}",
                data.display(),
                long + 1,
                examples[long].ids.len() - 1,
                cfg.pack_length
            )));
        }
    }
    let per_epoch = examples.len().div_ceil(cfg.batch_size) as u64;
    let planned = per_epoch * cfg.epochs as u64;
    let schedule = LrSchedule {
        peak_lr: cfg.lr,
        warmup_steps: cfg.warmup_steps,
        total_steps: planned,
        min_lr_ratio: cfg.min_lr_ratio,
    };
    let adamw = AdamWConfig {
        weight_decay: cfg.weight_decay,
        ..AdamWConfig::default()
    };
    let mut trainer = match resume_point(&job.run, progress)? {
        Some(checkpoint) => {
            let mut trainer =
                SftTrainer::new_on(device, checkpoint.model, adamw, schedule, cfg.max_grad_norm)?;
            let mut optimizer = checkpoint.optimizer;
            optimizer.config = adamw;
            trainer.resume_optimizer(optimizer)?;
            trainer.step = checkpoint.state.step;
            trainer
        }
        None => SftTrainer::new_on(
            device,
            job.model.load()?,
            adamw,
            schedule,
            cfg.max_grad_norm,
        )?,
    };
    let total = job.run.stop_at.unwrap_or(planned).min(planned);
    let mut report = SftRunReport {
        examples: examples.len(),
        steps: trainer.step,
        steps_planned: planned,
        stopped: false,
        first_loss: None,
        last_loss: None,
        checkpoint: None,
        final_model: None,
    };
    let mut order_epoch = usize::MAX;
    let mut order = Vec::new();
    let mut saved_at = trainer.step;
    while trainer.step < total {
        if stop_requested(stop) {
            report.stopped = true;
            break;
        }
        let epoch = (trainer.step / per_epoch) as usize;
        if epoch != order_epoch {
            order = epoch_order(examples.len(), job.run.seed, epoch);
            order_epoch = epoch;
        }
        let at = (trainer.step % per_epoch) as usize * cfg.batch_size;
        let batch: Vec<SftExample> = order[at..(at + cfg.batch_size).min(order.len())]
            .iter()
            .map(|&i| examples[i].clone())
            .collect();
        let stats = if cfg.pack_length > 0 {
            trainer.step_packed(&batch, cfg.pack_length)?
        } else {
            trainer.step(&batch)?
        };
        report.first_loss.get_or_insert(stats.loss);
        report.last_loss = Some(stats.loss);
        progress(StageEvent::SftStep {
            step: trainer.step,
            steps: planned,
            epoch,
            stats,
        });
        if trainer.step % job.run.checkpoint.every_steps == 0 || trainer.step == total {
            report.checkpoint = Some(save(job, &trainer, progress)?);
            saved_at = trainer.step;
        }
    }
    if report.stopped && saved_at != trainer.step {
        report.checkpoint = Some(save(job, &trainer, progress)?);
    }
    report.steps = trainer.step;
    if !report.stopped && trainer.step >= planned {
        report.final_model = Some(write_final(&job.run, &job.model, &trainer.model)?);
    }
    Ok(report)
}

/// Writes a checkpoint of the trainer and prunes old ones.
fn save(
    job: &SftJob,
    trainer: &SftTrainer,
    progress: &mut dyn FnMut(StageEvent),
) -> Result<PathBuf, RunError> {
    let state = TrainerState {
        step: trainer.step,
        optimizer_step: trainer.step,
        data_cursor: trainer.step * job.sft.batch_size as u64,
        seed: job.run.seed,
        config_hash: job.run.config_hash.clone(),
        reward_normaliser: None,
    };
    write_checkpoint(
        &job.run,
        &trainer.model,
        None,
        &trainer
            .optimizer_state()
            .map_err(crate::learner::LearnerError::from)?,
        &state,
        progress,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use r1_kernels::template::TemplateKind;

    #[test]
    fn the_set_is_masked_on_the_response_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sft.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\": \"1+1\", \"response\": \"<answer>2</answer>\"}\n\n{\"prompt\": \"2+2\"}\n",
        )
        .unwrap();
        let template = PromptTemplate::new(TemplateKind::ChatMl);
        let tokenizer = Tokenizer::byte();
        let err = load_sft_set(&path, &SftConfig::default(), &template, &tokenizer)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sft.jsonl:3") && err.contains("`response`"),
            "{err}"
        );
        std::fs::write(
            &path,
            "{\"prompt\": \"1+1\", \"response\": \"<answer>2</answer>\"}\n",
        )
        .unwrap();
        let set = load_sft_set(&path, &SftConfig::default(), &template, &tokenizer).unwrap();
        let ex = &set[0];
        let prompt_len = template
            .render_prompt("1+1")
            .encode(&tokenizer)
            .unwrap()
            .len();
        assert!(ex.loss_mask[..prompt_len].iter().all(|&m| m == 0.0));
        assert!(ex.loss_mask[prompt_len..].iter().all(|&m| m == 1.0));
        // The response ends with the template's end of turn, so the model learns to stop.
        let learned = tokenizer.decode(&ex.ids[prompt_len..], false).unwrap();
        assert_eq!(learned, "<answer>2</answer><|im_end|>");
    }

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(10, 3, 0);
        assert_eq!(a, epoch_order(10, 3, 0));
        assert_ne!(a, epoch_order(10, 3, 1));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}
