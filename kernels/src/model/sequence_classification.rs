//! Reward models in the Hugging Face sequence-classification layout: the decoder-only transformer
//! (`model.*` tensors, exactly as a causal LM) with a scalar head `score.weight` [1, C] (no bias)
//! instead of the LM head, read on the final hidden state (after the final norm) of the last
//! non-pad token. `config.json` says `Qwen2ForSequenceClassification` or
//! `LlamaForSequenceClassification`, `num_labels: 1` (as `id2label` with one entry) and
//! `pad_token_id`. `transformers` loads what [`save_reward_model_dir`] writes and computes the same
//! scores (scripts/rm_reference.py checks it).
//!
//! In memory the score head is the last slot of the model's flat layout, so parameters, gradients
//! and AdamW moments stay one buffer each (and one AdamW loop updates backbone and head together).
//! A sequence-classification model has no LM head, so the in-memory config ties the embeddings
//! (no `lm_head.weight` slot); the file's own `tie_word_embeddings` is kept and written back.

use std::path::Path;

use serde_json::Value;

use super::config::{Architecture, ModelConfig};
use super::layout::{ParamLayout, TensorSlot};
use super::weights::{read_params, write_params, write_synced, Model};
use crate::error::{EngineError, Result};

/// The Hugging Face name of the scalar head.
pub const SCORE_TENSOR: &str = "score.weight";

/// A reward model: transformer + scalar score head, in one flat parameter buffer.
#[derive(Debug, Clone)]
pub struct RewardModel {
    /// The transformer; its layout ends with `score.weight` and has no `lm_head.weight`.
    pub model: Model,
    /// Offset of `score.weight` [1, C] in `model.params`.
    pub score: usize,
    /// Token id treated as padding: the scored token is the last one that is not it, as
    /// `transformers` pools. `None`: the last token of each sequence.
    pub pad_token_id: Option<u32>,
    /// `tie_word_embeddings` as config.json had it, written back unchanged on save (the in-memory
    /// config always ties, since there is no LM head to untie).
    file_ties_embeddings: bool,
}

/// The sequence-classification class name of an architecture.
pub fn sequence_classification_name(architecture: Architecture) -> &'static str {
    match architecture {
        Architecture::Qwen2 => "Qwen2ForSequenceClassification",
        Architecture::Llama => "LlamaForSequenceClassification",
        Architecture::Qwen3 => "Qwen3ForSequenceClassification",
    }
}

/// The layout of `config` (LM head dropped) with `score.weight` appended; returns it and the
/// score's offset.
fn layout_with_score(config: &ModelConfig) -> (ParamLayout, usize) {
    let tied = ModelConfig {
        tie_word_embeddings: true,
        ..config.clone()
    };
    let mut layout = ParamLayout::new(&tied);
    let offset = layout.total;
    layout.slots.push(TensorSlot {
        name: SCORE_TENSOR.into(),
        shape: vec![1, config.hidden_size],
        offset,
        len: config.hidden_size,
    });
    layout.total += config.hidden_size;
    (layout, offset)
}

impl RewardModel {
    /// A reward model initialised from a causal LM (the usual start: the SFT policy): its
    /// transformer weights, no LM head, and a fresh score head drawn from N(0, std²) with `seed`.
    pub fn from_causal_lm(lm: &Model, pad_token_id: Option<u32>, seed: u64, std: f32) -> Self {
        use rand::{Rng, SeedableRng};
        let (layout, score) = layout_with_score(&lm.config);
        let mut params = vec![0f32; layout.total];
        for slot in &layout.slots {
            if let Some(source) = lm.layout.slot(&slot.name) {
                params[slot.range()].copy_from_slice(&lm.params[source.range()]);
            }
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for p in &mut params[score..] {
            // Box-Muller, as `Model::random`.
            let u1: f32 = rng.random::<f32>().max(1e-7);
            let u2: f32 = rng.random::<f32>();
            *p = std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos();
        }
        RewardModel {
            model: Model {
                config: ModelConfig {
                    tie_word_embeddings: true,
                    ..lm.config.clone()
                },
                layout,
                params,
            },
            score,
            pad_token_id,
            file_ties_embeddings: lm.config.tie_word_embeddings,
        }
    }

    /// A reward model with every weight random (deterministic in `seed`): for tests and the
    /// built-in tiny examples.
    pub fn random(config: ModelConfig, pad_token_id: Option<u32>, seed: u64, std: f32) -> Self {
        let lm = Model::random(config, seed, std);
        RewardModel::from_causal_lm(&lm, pad_token_id, seed.wrapping_add(1), std)
    }

    /// The score head's weights [C].
    pub fn score_weight(&self) -> &[f32] {
        &self.model.params[self.score..self.score + self.model.config.hidden_size]
    }

    /// Hidden width C.
    pub fn hidden_size(&self) -> usize {
        self.model.config.hidden_size
    }

    /// config.json as `transformers` writes it for a one-label sequence classifier.
    pub fn config_json(&self) -> Value {
        let mut json = ModelConfig {
            tie_word_embeddings: self.file_ties_embeddings,
            ..self.model.config.clone()
        }
        .to_json();
        json["architectures"] =
            serde_json::json!([sequence_classification_name(self.model.config.architecture)]);
        json["num_labels"] = 1.into();
        json["id2label"] = serde_json::json!({"0": "LABEL_0"});
        json["label2id"] = serde_json::json!({"LABEL_0": 0});
        json["pad_token_id"] = self.pad_token_id.map_or(Value::Null, Value::from);
        json
    }
}

/// Reads a sequence-classification config.json: checks the class and the label count, and
/// returns the transformer's config, the file's `tie_word_embeddings` and `pad_token_id`.
pub fn read_config(path: &Path) -> Result<(ModelConfig, bool, Option<u32>)> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    let mut json: Value = serde_json::from_str(&text).map_err(|e| EngineError::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    let bad = |key: &str, message: String| EngineError::Config {
        path: path.to_path_buf(),
        key: key.into(),
        message,
    };
    let named = json
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_string);
    let causal = match named.as_deref() {
        Some("Qwen2ForSequenceClassification") => Architecture::Qwen2,
        Some("LlamaForSequenceClassification") => Architecture::Llama,
        Some("Qwen3ForSequenceClassification") => Architecture::Qwen3,
        Some(other) => {
            return Err(bad(
                "architectures",
                format!(
                    "`{other}` is not a reward model (expected Qwen2ForSequenceClassification, \
                     LlamaForSequenceClassification or Qwen3ForSequenceClassification)"
                ),
            ))
        }
        None => return Err(bad("architectures", "missing".into())),
    };
    let labels = match (json.get("num_labels"), json.get("id2label")) {
        (Some(n), _) if !n.is_null() => n.as_u64(),
        (_, Some(Value::Object(map))) => Some(map.len() as u64),
        // transformers' default is two labels.
        _ => Some(2),
    };
    if labels != Some(1) {
        return Err(bad(
            "id2label",
            format!(
                "a reward model has one label (num_labels 1), found {}",
                labels.map_or("a non-integer".to_string(), |n| n.to_string())
            ),
        ));
    }
    let pad = match json.get("pad_token_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("pad_token_id", format!("expected a token id, found {v}")))?,
        ),
    };
    json["architectures"] = serde_json::json!([causal.hf_name()]);
    let config = ModelConfig::from_json(&json, path)?;
    let ties = config.tie_word_embeddings;
    Ok((config, ties, pad))
}

/// Loads a reward model directory (config.json + model.safetensors or a sharded index).
pub fn load_reward_model_dir(dir: &Path) -> Result<RewardModel> {
    let (config, file_ties_embeddings, pad_token_id) = read_config(&dir.join("config.json"))?;
    let (layout, score) = layout_with_score(&config);
    let params = read_params(dir, &layout)?;
    Ok(RewardModel {
        model: Model {
            config: ModelConfig {
                tie_word_embeddings: true,
                ..config
            },
            layout,
            params,
        },
        score,
        pad_token_id,
        file_ties_embeddings,
    })
}

/// Writes a reward model as a Hugging Face directory: config.json and f32 model.safetensors
/// (`model.*` tensors and `score.weight`).
pub fn save_reward_model_dir(rm: &RewardModel, dir: &Path) -> Result<()> {
    write_params(&rm.model, dir)?;
    let config = serde_json::to_vec_pretty(&rm.config_json()).map_err(|e| EngineError::Json {
        path: dir.join("config.json"),
        source: e,
    })?;
    write_synced(&dir.join("config.json"), &config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tiny::TinyModel;

    fn tiny(architecture: Architecture, tie: bool) -> ModelConfig {
        TinyModel::engine(architecture)
            .heads(2, 1)
            .hidden(16)
            .intermediate(32)
            .layers(1)
            .vocab(40)
            .positions(64)
            .special(1, None)
            .with(|c| c.tie_word_embeddings = tie)
            .into_config()
    }

    #[test]
    fn save_then_load_is_bit_identical_for_every_architecture() {
        for (arch, tie) in [
            (Architecture::Qwen2, true),
            (Architecture::Llama, false),
            (Architecture::Qwen3, true),
        ] {
            let rm = RewardModel::random(tiny(arch, tie), Some(0), 3, 0.1);
            assert!(rm.model.layout.slot("lm_head.weight").is_none());
            assert_eq!(rm.model.layout.slots.last().unwrap().name, SCORE_TENSOR);
            let dir = tempfile::tempdir().unwrap();
            save_reward_model_dir(&rm, dir.path()).unwrap();
            let back = load_reward_model_dir(dir.path()).unwrap();
            assert_eq!(back.model.params, rm.model.params);
            assert_eq!(back.pad_token_id, Some(0));
            let json = back.config_json();
            assert_eq!(json["architectures"][0], sequence_classification_name(arch));
            assert_eq!(json["tie_word_embeddings"], tie);
        }
    }

    #[test]
    fn a_causal_lm_or_a_two_label_classifier_is_refused_with_the_key() {
        let rm = RewardModel::random(tiny(Architecture::Qwen2, true), None, 3, 0.1);
        let dir = tempfile::tempdir().unwrap();
        save_reward_model_dir(&rm, dir.path()).unwrap();
        let path = dir.path().join("config.json");
        let mut json = rm.config_json();
        json["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
        std::fs::write(&path, json.to_string()).unwrap();
        let message = load_reward_model_dir(dir.path()).unwrap_err().to_string();
        assert!(message.contains("architectures") && message.contains("not a reward model"));

        let mut json = rm.config_json();
        json["num_labels"] = 2.into();
        std::fs::write(&path, json.to_string()).unwrap();
        let message = load_reward_model_dir(dir.path()).unwrap_err().to_string();
        assert!(message.contains("one label"), "{message}");
    }
}
