//! `config.json` of a Hugging Face causal LM, read into the few numbers the engine needs.
//!
//! Accepts both spellings found in the wild: a top-level `rope_theta` (+ `rope_scaling` for Llama 3)
//! and the newer `rope_parameters: {rope_theta, rope_type, ...}`. Anything r1 does not implement
//! (another architecture, sliding-window attention, an unknown RoPE type) is an error naming the key.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{EngineError, Result};

/// The model families the engine implements. They differ only in defaults (Qwen2 always has q/k/v
/// bias) and in Qwen3's per-head q/k RMSNorm; tensor names are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `Qwen2ForCausalLM` (Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen).
    Qwen2,
    /// `LlamaForCausalLM` (Llama 2/3, SmolLM, DeepSeek-R1-Distill-Llama).
    Llama,
    /// `Qwen3ForCausalLM` (Qwen3 dense): an RMSNorm over each query and key head (`q_norm`,
    /// `k_norm`, one [HS] weight each, shared by the heads) before RoPE; no q/k/v bias by default.
    Qwen3,
}

impl Architecture {
    /// The class name Hugging Face writes in `architectures`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// The `model_type` Hugging Face writes beside it.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "qwen2",
            Architecture::Llama => "llama",
            Architecture::Qwen3 => "qwen3",
        }
    }

    /// Whether each query and key head is RMS-normalised (with `q_norm` / `k_norm`) before RoPE.
    pub fn has_qk_norm(self) -> bool {
        self == Architecture::Qwen3
    }
}

/// How rotary frequencies are rescaled for long context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's piecewise rescaling of low and medium frequencies.
    Llama3 {
        /// How much longer the context is than in pre-training.
        factor: f64,
        /// Wavelengths longer than `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths shorter than `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The pre-training context length.
        original_max_position_embeddings: f64,
    },
}

/// The shape and numerics of a decoder-only transformer, as the engine uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Which family, for defaults and for writing the config back.
    pub architecture: Architecture,
    /// C: width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU hidden layer.
    pub intermediate_size: usize,
    /// L: number of decoder layers.
    pub num_layers: usize,
    /// NH: query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention: NH is a multiple of it).
    pub num_kv_heads: usize,
    /// HS: width of one head (not always hidden_size / num_heads).
    pub head_dim: usize,
    /// V: vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Epsilon inside RMSNorm's square root.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE frequency rescaling.
    pub rope_scaling: RopeScaling,
    /// Whether q/k/v projections carry a bias (always for Qwen2).
    pub attention_bias: bool,
    /// Whether the LM head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Longest position the model was trained for (informational; the engine does not cut at it).
    pub max_position_embeddings: usize,
    /// Token ids that end generation (config.json's `eos_token_id`, one or several).
    pub eos_token_ids: Vec<u32>,
    /// Beginning-of-sequence token, when the config names one.
    pub bos_token_id: Option<u32>,
}

impl ModelConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        super::weights::require_regular_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| EngineError::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_json(&json, path)
    }

    /// Interprets an already-parsed `config.json`; `path` only names the file in errors.
    pub fn from_json(json: &Value, path: &Path) -> Result<Self> {
        let reader = Reader { json, path };
        let architecture = reader.architecture()?;
        let hidden_size = reader.usize_required("hidden_size")?;
        let num_heads = reader.usize_required("num_attention_heads")?;
        let num_kv_heads = reader
            .usize_optional("num_key_value_heads")?
            .unwrap_or(num_heads);
        let head_dim = match reader.usize_optional("head_dim")? {
            Some(d) => d,
            None => {
                if num_heads == 0 || hidden_size % num_heads != 0 {
                    return Err(reader.error(
                        "num_attention_heads",
                        format!("hidden_size {hidden_size} is not a multiple of {num_heads} heads and no head_dim is given"),
                    ));
                }
                hidden_size / num_heads
            }
        };
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(reader.error(
                "num_key_value_heads",
                format!(
                    "{num_heads} query heads are not a multiple of {num_kv_heads} key/value heads"
                ),
            ));
        }
        if head_dim % 2 != 0 {
            return Err(reader.error(
                "head_dim",
                format!("RoPE needs an even head_dim, got {head_dim}"),
            ));
        }
        if let Some(act) = json.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(reader.error(
                    "hidden_act",
                    format!("`{act}` is not supported (only silu)"),
                ));
            }
        }
        if json.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
            return Err(reader.error(
                "use_sliding_window",
                "sliding-window attention is not supported".into(),
            ));
        }
        if json.get("mlp_bias").and_then(Value::as_bool) == Some(true) {
            return Err(reader.error("mlp_bias", "MLP biases are not supported".into()));
        }
        let attention_bias = match architecture {
            Architecture::Qwen2 => true,
            Architecture::Llama | Architecture::Qwen3 => {
                reader.bool_optional("attention_bias")?.unwrap_or(false)
            }
        };
        let (rope_theta, rope_scaling) = reader.rope()?;
        let config = ModelConfig {
            architecture,
            hidden_size,
            intermediate_size: reader.usize_required("intermediate_size")?,
            num_layers: reader.usize_required("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: reader.usize_required("vocab_size")?,
            rms_norm_eps: reader.f64_optional("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            attention_bias,
            tie_word_embeddings: reader
                .bool_optional("tie_word_embeddings")?
                .unwrap_or(false),
            max_position_embeddings: reader
                .usize_optional("max_position_embeddings")?
                .unwrap_or(4096),
            eos_token_ids: reader.token_ids("eos_token_id")?,
            bos_token_id: reader.token_ids("bos_token_id")?.first().copied(),
        };
        for (key, value) in [
            ("hidden_size", config.hidden_size),
            ("intermediate_size", config.intermediate_size),
            ("num_hidden_layers", config.num_layers),
            ("vocab_size", config.vocab_size),
        ] {
            if value == 0 {
                return Err(reader.error(key, "must be positive".into()));
            }
        }
        config.check_bounds(&reader)?;
        Ok(config)
    }

    /// Refuses sizes no real model has before anything is allocated from them: the error names
    /// the key, its value, the bound, and what the config would need (an `intermediate_size` of
    /// 1e12 is "the weights alone would need 5.8 PiB", not an abort in the allocator).
    fn check_bounds(&self, reader: &Reader<'_>) -> Result<()> {
        self.bounds().map_err(|(key, message)| {
            // Without a `head_dim` key the head width is hidden_size / num_attention_heads.
            let key = if key == "head_dim" && reader.json.get("head_dim").is_none_or(Value::is_null)
            {
                "num_attention_heads"
            } else {
                key
            };
            reader.error(key, message)
        })
    }

    /// The first size beyond what r1 accepts, as (config.json key, message with the value, the
    /// bound and the memory the config would need); importers map the key to their own names.
    pub fn bounds(&self) -> std::result::Result<(), (&'static str, String)> {
        use super::limits::*;
        let weights = format_bytes(self.parameter_estimate() * 4.0);
        for (key, value, max) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB_SIZE),
            ("hidden_size", self.hidden_size, MAX_HIDDEN_SIZE),
            (
                "intermediate_size",
                self.intermediate_size,
                MAX_INTERMEDIATE_SIZE,
            ),
            ("num_hidden_layers", self.num_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_heads, MAX_HEADS),
            ("num_key_value_heads", self.num_kv_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_HEAD_DIM),
        ] {
            if value > max {
                return Err((
                    key,
                    format!(
                        "{value} is more than r1 accepts ({max}): the weights alone would need {weights} in f32"
                    ),
                ));
            }
        }
        if self.max_position_embeddings > MAX_POSITIONS {
            let kv_per_token = 2.0 * self.num_layers as f64 * self.kv_dim() as f64 * 4.0;
            return Err((
                "max_position_embeddings",
                format!(
                    "{} is more than r1 accepts ({MAX_POSITIONS}): one sequence's KV cache at that length would need {}",
                    self.max_position_embeddings,
                    format_bytes(kv_per_token * self.max_position_embeddings as f64)
                ),
            ));
        }
        if self.parameter_count().is_none() {
            return Err((
                "vocab_size",
                format!("the parameter count overflows: the weights would need {weights}"),
            ));
        }
        Ok(())
    }

    /// Parameters the config implies, in f64 so that an absurd config cannot overflow the
    /// estimate that explains why it is refused.
    pub fn parameter_estimate(&self) -> f64 {
        let (v, c, i, l) = (
            self.vocab_size as f64,
            self.hidden_size as f64,
            self.intermediate_size as f64,
            self.num_layers as f64,
        );
        let (q, kv) = (
            self.num_heads as f64 * self.head_dim as f64,
            self.num_kv_heads as f64 * self.head_dim as f64,
        );
        let qkv = q + 2.0 * kv;
        let bias = if self.attention_bias { qkv } else { 0.0 };
        let qk_norm = if self.qk_norm() {
            2.0 * self.head_dim as f64
        } else {
            0.0
        };
        let per_layer = 2.0 * c + qkv * c + bias + qk_norm + c * q + 3.0 * i * c;
        let heads = if self.tie_word_embeddings { 1.0 } else { 2.0 };
        heads * v * c + l * per_layer + c
    }

    /// Exact parameter count (the flat layout's length), `None` when it overflows `usize`.
    pub fn parameter_count(&self) -> Option<usize> {
        let c = self.hidden_size;
        let q = self.num_heads.checked_mul(self.head_dim)?;
        let kv = self.num_kv_heads.checked_mul(self.head_dim)?;
        let qkv = kv.checked_mul(2)?.checked_add(q)?;
        let bias = if self.attention_bias { qkv } else { 0 };
        let qk_norm = if self.qk_norm() {
            self.head_dim.checked_mul(2)?
        } else {
            0
        };
        let per_layer = [
            c.checked_mul(2)?,
            qkv.checked_mul(c)?,
            bias,
            qk_norm,
            c.checked_mul(q)?,
            self.intermediate_size.checked_mul(c)?.checked_mul(3)?,
        ]
        .into_iter()
        .try_fold(0usize, |a, b| a.checked_add(b))?;
        let embed = self.vocab_size.checked_mul(c)?;
        let heads = if self.tie_word_embeddings { 1 } else { 2 };
        embed
            .checked_mul(heads)?
            .checked_add(per_layer.checked_mul(self.num_layers)?)?
            .checked_add(c)
    }

    /// Whether each query and key head is RMS-normalised before RoPE (Qwen3).
    pub fn qk_norm(&self) -> bool {
        self.architecture.has_qk_norm()
    }

    /// Width of all query heads together (NH × HS).
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Width of the fused q|k|v projection output.
    pub fn qkv_dim(&self) -> usize {
        self.q_dim() + 2 * self.kv_dim()
    }

    /// The per-pair inverse frequencies of RoPE (HS/2 of them), with any scaling applied, in f64
    /// as Hugging Face computes them before casting.
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let half = self.head_dim / 2;
        let base: Vec<f64> = (0..half)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / self.head_dim as f64))
            .collect();
        match self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_len,
            } => {
                let low_freq_wavelen = old_len / low_freq_factor;
                let high_freq_wavelen = old_len / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_freq_wavelen {
                            f
                        } else if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            let smooth = (old_len / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// A config.json for this shape, in the form `transformers` writes (used when saving).
    pub fn to_json(&self) -> Value {
        let mut rope = serde_json::Map::new();
        rope.insert("rope_theta".into(), self.rope_theta.into());
        match self.rope_scaling {
            RopeScaling::None => {
                rope.insert("rope_type".into(), "default".into());
            }
            RopeScaling::Linear { factor } => {
                rope.insert("rope_type".into(), "linear".into());
                rope.insert("factor".into(), factor.into());
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                rope.insert("rope_type".into(), "llama3".into());
                rope.insert("factor".into(), factor.into());
                rope.insert("low_freq_factor".into(), low_freq_factor.into());
                rope.insert("high_freq_factor".into(), high_freq_factor.into());
                rope.insert(
                    "original_max_position_embeddings".into(),
                    (original_max_position_embeddings as u64).into(),
                );
            }
        }
        let eos: Value = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => (*one).into(),
            many => many
                .iter()
                .map(|&i| Value::from(i))
                .collect::<Vec<_>>()
                .into(),
        };
        serde_json::json!({
            "architectures": [self.architecture.hf_name()],
            "model_type": self.architecture.model_type(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": Value::Object(rope),
            "attention_bias": self.attention_bias,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "eos_token_id": eos,
            "bos_token_id": self.bos_token_id,
            "dtype": "float32",
        })
    }
}

/// Typed access to config.json keys with errors that name the key and the file.
struct Reader<'a> {
    json: &'a Value,
    path: &'a Path,
}

impl Reader<'_> {
    fn error(&self, key: &str, message: String) -> EngineError {
        EngineError::Config {
            path: PathBuf::from(self.path),
            key: key.to_string(),
            message,
        }
    }

    fn architecture(&self) -> Result<Architecture> {
        let named = self
            .json
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str);
        let model_type = self.json.get("model_type").and_then(Value::as_str);
        match (named, model_type) {
            (Some("Qwen2ForCausalLM"), _) | (None, Some("qwen2")) => Ok(Architecture::Qwen2),
            (Some("LlamaForCausalLM"), _) | (None, Some("llama")) => Ok(Architecture::Llama),
            (Some("Qwen3ForCausalLM"), _) | (None, Some("qwen3")) => Ok(Architecture::Qwen3),
            (Some(other), _) => Err(EngineError::UnknownArchitecture {
                path: self.path.to_path_buf(),
                architecture: other.to_string(),
            }),
            (None, Some(other)) => Err(EngineError::UnknownArchitecture {
                path: self.path.to_path_buf(),
                architecture: format!("model_type {other}"),
            }),
            (None, None) => Err(self.error("architectures", "missing (and no model_type)".into())),
        }
    }

    fn usize_optional(&self, key: &str) -> Result<Option<usize>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.error(key, format!("expected a non-negative integer, found {v}"))
                }),
        }
    }

    fn usize_required(&self, key: &str) -> Result<usize> {
        self.usize_optional(key)?
            .ok_or_else(|| self.error(key, "missing".into()))
    }

    fn f64_in(&self, obj: &Value, key: &str, shown: &str) -> Result<Option<f64>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.error(shown, format!("expected a number, found {v}"))),
        }
    }

    fn f64_optional(&self, key: &str) -> Result<Option<f64>> {
        self.f64_in(self.json, key, key)
    }

    fn bool_optional(&self, key: &str) -> Result<Option<bool>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.error(key, format!("expected true or false, found {v}"))),
        }
    }

    fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.error(key, format!("expected a token id, found {v}")))
        };
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }

    /// RoPE base and scaling, from `rope_parameters` (newer transformers) or top-level
    /// `rope_theta` + `rope_scaling` (most checkpoints).
    fn rope(&self) -> Result<(f64, RopeScaling)> {
        let params = self.json.get("rope_parameters").filter(|v| !v.is_null());
        let scaling = self.json.get("rope_scaling").filter(|v| !v.is_null());
        let (table, prefix) = match (params, scaling) {
            (Some(p), _) => (Some(p), "rope_parameters"),
            (None, Some(s)) => (Some(s), "rope_scaling"),
            (None, None) => (None, ""),
        };
        let theta = match params.map(|p| self.f64_in(p, "rope_theta", "rope_parameters.rope_theta"))
        {
            Some(Ok(Some(t))) => t,
            Some(Err(e)) => return Err(e),
            _ => self.f64_optional("rope_theta")?.unwrap_or(10_000.0),
        };
        if theta <= 0.0 {
            return Err(self.error("rope_theta", format!("must be positive, got {theta}")));
        }
        let Some(table) = table else {
            return Ok((theta, RopeScaling::None));
        };
        let kind = table
            .get("rope_type")
            .or_else(|| table.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let number = |key: &str| -> Result<f64> {
            let shown = format!("{prefix}.{key}");
            self.f64_in(table, key, &shown)?
                .ok_or_else(|| self.error(&shown, "missing".into()))
        };
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: number("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_max_position_embeddings: number("original_max_position_embeddings")?,
            },
            other => {
                return Err(self.error(
                    &format!("{prefix}.rope_type"),
                    format!("`{other}` is not supported (default, linear, llama3)"),
                ))
            }
        };
        if let RopeScaling::Llama3 {
            low_freq_factor,
            high_freq_factor,
            factor,
            ..
        } = scaling
        {
            if high_freq_factor <= low_freq_factor || factor <= 0.0 {
                return Err(self.error(
                    prefix,
                    "llama3 scaling needs factor > 0 and high_freq_factor > low_freq_factor".into(),
                ));
            }
        }
        Ok((theta, scaling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: Value) -> Result<ModelConfig> {
        ModelConfig::from_json(&json, Path::new("config.json"))
    }

    fn base() -> Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256
        })
    }

    #[test]
    fn top_level_and_nested_rope_theta_agree() {
        let mut a = base();
        a["rope_theta"] = 5e5.into();
        let mut b = base();
        b["rope_parameters"] = serde_json::json!({"rope_theta": 5e5, "rope_type": "default"});
        assert_eq!(parse(a).unwrap(), parse(b).unwrap());
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let mut c = base();
        c["rope_theta"] = 5e5.into();
        c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let config = parse(c).unwrap();
        let scaled = config.rope_inv_freq();
        let plain = ModelConfig {
            rope_scaling: RopeScaling::None,
            ..config.clone()
        }
        .rope_inv_freq();
        assert_eq!(scaled[0], plain[0], "highest frequency is untouched");
        let last = plain.len() - 1;
        assert!(
            (scaled[last] - plain[last] / 8.0).abs() < 1e-18,
            "lowest frequency is divided by factor"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = base();
        c["hidden_size"] = "big".into();
        let message = parse(c).unwrap_err().to_string();
        assert!(message.contains("hidden_size"), "{message}");

        let mut c = base();
        c["architectures"] = serde_json::json!(["MistralForCausalLM"]);
        assert!(matches!(
            parse(c),
            Err(EngineError::UnknownArchitecture { .. })
        ));

        let mut c = base();
        c["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
        let message = parse(c).unwrap_err().to_string();
        assert!(
            message.contains("rope_scaling.rope_type") && message.contains("yarn"),
            "{message}"
        );

        let mut c = base();
        c["num_key_value_heads"] = 3.into();
        assert!(parse(c)
            .unwrap_err()
            .to_string()
            .contains("num_key_value_heads"));
    }

    #[test]
    fn qwen2_always_has_attention_bias_and_head_dim_defaults() {
        let mut c = base();
        c["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
        let config = parse(c).unwrap();
        assert!(config.attention_bias);
        assert_eq!(config.head_dim, 16);
        let reparsed = parse(config.to_json()).unwrap();
        assert_eq!(reparsed, config);
    }

    #[test]
    fn qwen3_has_qk_norm_no_default_bias_and_round_trips() {
        let mut c = base();
        c["architectures"] = serde_json::json!(["Qwen3ForCausalLM"]);
        c["head_dim"] = 32.into();
        let config = parse(c).unwrap();
        assert!(config.qk_norm() && !config.attention_bias);
        assert_eq!(config.head_dim, 32);
        // Two [HS] norm weights per layer on top of the Llama-shaped count.
        let llama = ModelConfig {
            architecture: Architecture::Llama,
            ..config.clone()
        };
        assert_eq!(
            config.parameter_count().unwrap(),
            llama.parameter_count().unwrap() + 2 * 2 * 32
        );
        assert_eq!(
            config.parameter_estimate(),
            config.parameter_count().unwrap() as f64
        );
        assert_eq!(parse(config.to_json()).unwrap(), config);
    }
}
