//! Tiny models with random weights: the one place that knows the shapes every test, demo and the
//! embedded default build without a download. A [`TinyModel`] is a shape plus the seed and scale
//! of its random weights; start from a preset, change what the test is about, then take the
//! config, the model, or a saved model directory.
//!
//! ```
//! use r1_kernels::model::tiny::TinyModel;
//! let dir = tempfile::tempdir().unwrap();
//! let model_dir = TinyModel::byte().seed(7).save(&dir.path().join("model")).unwrap();
//! assert!(model_dir.join("config.json").is_file());
//! ```

use std::path::{Path, PathBuf};

use crate::bench::builtin_config;
use crate::tokenizer::ByteTokenizer;
use crate::Result;

use super::{
    save_model_dir, save_reward_model_dir, Architecture, Model, ModelConfig, RewardModel,
    RopeScaling,
};

/// A tiny model to build: its shape and how its random weights are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct TinyModel {
    /// The shape (`config.json`).
    config: ModelConfig,
    /// Seed of the random weights: same seed, same weights.
    seed: u64,
    /// Standard deviation of the random weights.
    std: f32,
}

impl TinyModel {
    /// The shape the end-to-end tests train: the built-in `tiny-qwen2` (hidden 64, 2 layers,
    /// 4 heads, 2 KV heads) on the byte tokenizer's vocabulary with 512 positions; seed 1,
    /// std 0.05. Fast enough for a few RL steps in a test, big enough to learn something.
    pub fn byte() -> Self {
        let mut config = builtin_config("tiny-qwen2").expect("tiny-qwen2 is a built-in shape");
        config.vocab_size = ByteTokenizer::VOCAB_SIZE;
        config.max_position_embeddings = 512;
        TinyModel {
            config,
            seed: 1,
            std: 0.05,
        }
    }

    /// A Qwen2 of width `hidden` (4 heads, 2 KV heads, MLP 4×) and `layers` layers on the byte
    /// vocabulary, with the byte tokenizer's BOS/EOS and 128 positions: what `r1ctl rm demo`
    /// and a reward model's `init = { kind = "tiny" }` start from.
    pub fn byte_qwen2(hidden: usize, layers: usize) -> Self {
        TinyModel::engine(Architecture::Qwen2)
            .hidden(hidden)
            .intermediate(4 * hidden)
            .layers(layers)
            .vocab(ByteTokenizer::VOCAB_SIZE)
            .special(ByteTokenizer::EOS, Some(ByteTokenizer::BOS))
    }

    /// The engine tests' shape of `architecture`: hidden 32, MLP 64, 2 layers, 4 heads of 8,
    /// 2 KV heads, vocabulary 64, 128 positions, RoPE θ 10⁴ without scaling, EOS 1, BOS 0; the
    /// attention bias and tied embeddings of a Qwen2 (neither for Llama or Qwen3). Seed 1, std 0.05.
    pub fn engine(architecture: Architecture) -> Self {
        let qwen2 = architecture == Architecture::Qwen2;
        TinyModel {
            config: ModelConfig {
                architecture,
                hidden_size: 32,
                intermediate_size: 64,
                num_layers: 2,
                num_heads: 4,
                num_kv_heads: 2,
                head_dim: 8,
                vocab_size: 64,
                rms_norm_eps: 1e-6,
                rope_theta: 10_000.0,
                rope_scaling: RopeScaling::None,
                attention_bias: qwen2,
                tie_word_embeddings: qwen2,
                max_position_embeddings: 128,
                eos_token_ids: vec![1],
                bos_token_id: Some(0),
            },
            seed: 1,
            std: 0.05,
        }
    }

    /// Width `hidden`; each head keeps `hidden / num_heads` of it.
    pub fn hidden(mut self, hidden: usize) -> Self {
        self.config.hidden_size = hidden;
        self.config.head_dim = hidden / self.config.num_heads.max(1);
        self
    }

    /// `heads` query heads sharing `kv_heads` key/value heads; each keeps `hidden / heads`.
    pub fn heads(mut self, heads: usize, kv_heads: usize) -> Self {
        self.config.num_heads = heads;
        self.config.num_kv_heads = kv_heads;
        self.config.head_dim = self.config.hidden_size / heads.max(1);
        self
    }

    /// The MLP's inner width.
    pub fn intermediate(mut self, size: usize) -> Self {
        self.config.intermediate_size = size;
        self
    }

    /// Number of transformer blocks.
    pub fn layers(mut self, layers: usize) -> Self {
        self.config.num_layers = layers;
        self
    }

    /// Vocabulary size.
    pub fn vocab(mut self, size: usize) -> Self {
        self.config.vocab_size = size;
        self
    }

    /// Longest sequence the model takes.
    pub fn positions(mut self, positions: usize) -> Self {
        self.config.max_position_embeddings = positions;
        self
    }

    /// End-of-sequence and beginning-of-sequence ids.
    pub fn special(mut self, eos: u32, bos: Option<u32>) -> Self {
        self.config.eos_token_ids = vec![eos];
        self.config.bos_token_id = bos;
        self
    }

    /// Any other change to the shape (RoPE scaling, norm epsilon, tied embeddings…).
    pub fn with(mut self, change: impl FnOnce(&mut ModelConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Seed of the random weights.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Standard deviation of the random weights.
    pub fn std(mut self, std: f32) -> Self {
        self.std = std;
        self
    }

    /// The shape.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The shape, taken.
    pub fn into_config(self) -> ModelConfig {
        self.config
    }

    /// The model with its random weights.
    pub fn model(&self) -> Model {
        Model::random(self.config.clone(), self.seed, self.std)
    }

    /// A reward model on this backbone (score head seeded from the same seed), padding with
    /// `pad_token_id`.
    pub fn reward_model(&self, pad_token_id: Option<u32>) -> RewardModel {
        RewardModel::from_causal_lm(&self.model(), pad_token_id, self.seed, 0.5)
    }

    /// Saves the model as a Hugging Face model directory `dir` and returns `dir`.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        save_model_dir(&self.model(), dir)?;
        Ok(dir.to_path_buf())
    }

    /// Saves [`TinyModel::reward_model`] as a sequence-classification directory `dir`, returns `dir`.
    pub fn save_reward_model(&self, dir: &Path, pad_token_id: Option<u32>) -> Result<PathBuf> {
        save_reward_model_dir(&self.reward_model(pad_token_id), dir)?;
        Ok(dir.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_weights_and_another_seed_others() {
        let a = TinyModel::byte().seed(3).model();
        assert_eq!(a.params, TinyModel::byte().seed(3).model().params);
        assert_ne!(a.params, TinyModel::byte().seed(4).model().params);
        assert_eq!(a.config.vocab_size, ByteTokenizer::VOCAB_SIZE);
    }

    #[test]
    fn a_changed_width_keeps_the_heads_consistent() {
        let config = TinyModel::byte_qwen2(48, 1).into_config();
        assert_eq!(
            (
                config.hidden_size,
                config.head_dim,
                config.intermediate_size
            ),
            (48, 12, 192)
        );
        assert_eq!(config.num_heads * config.head_dim, config.hidden_size);
        assert_eq!(config.eos_token_ids, [ByteTokenizer::EOS]);
    }
}
