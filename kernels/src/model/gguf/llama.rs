//! A Llama- or Qwen3-architecture GGUF mapped onto the engine's [`Model`], and exported as a
//! Hugging Face directory. Metadata keys carry the architecture's prefix (`llama.*`, `qwen3.*`).
//!
//! Names: `token_embd` → `model.embed_tokens`, `blk.N.attn_{norm,q,k,v,output}` →
//! `model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj}`, `blk.N.ffn_{norm,gate,up,down}` →
//! `post_attention_layernorm`, `mlp.{gate,up,down}_proj`, `output_norm` → `model.norm`, `output` →
//! `lm_head` (absent: tied embeddings); Qwen3 adds `blk.N.attn_{q,k}_norm` →
//! `self_attn.{q,k}_norm` (and `attn_{q,k,v}.bias` when the model has biases).
//!
//! llama.cpp's converter reorders the rows of q_proj and k_proj so that its RoPE can rotate adjacent
//! pairs (x[2i], x[2i+1]) where Hugging Face rotates halves (x[i], x[i + HS/2]): for each head,
//! converted row `2j + i` is Hugging Face row `i·HS/2 + j`. Import puts them back, so the imported
//! model is exactly the Hugging Face one and its logits match `transformers` loading the same GGUF.
//! Only Llama is permuted: llama.cpp runs Qwen-family models with its NEOX (rotate-half) RoPE, so
//! their q/k rows are stored in Hugging Face order (convert_hf_to_gguf.py's Qwen2/Qwen3 models do
//! not permute).

use std::path::Path;

use super::{tokenizer_config_json, tokenizer_json, GgufError, GgufFile, Result};
use crate::model::config::{Architecture, ModelConfig, RopeScaling};
use crate::model::layout::ParamLayout;
use crate::model::limits::{try_zeroed, MemoryPlan};
use crate::model::weights::{save_model_dir, Model};

/// The engine's architecture for a GGUF's `general.architecture`, and its metadata key prefix.
fn architecture(gguf: &GgufFile) -> Result<(Architecture, &'static str)> {
    match gguf.str_required("general.architecture")? {
        "llama" => Ok((Architecture::Llama, "llama")),
        "qwen3" => Ok((Architecture::Qwen3, "qwen3")),
        other => Err(GgufError::Architecture {
            path: gguf.path().to_path_buf(),
            architecture: other.to_string(),
        }),
    }
}

/// The engine's config for a Llama or Qwen3 GGUF, from its `llama.*` / `qwen3.*` and
/// `tokenizer.ggml.*` metadata.
pub fn llama_config(gguf: &GgufFile) -> Result<ModelConfig> {
    let (architecture, prefix) = architecture(gguf)?;
    let key = |k: &str| format!("{prefix}.{k}");
    let hidden_size = gguf.usize_required(&key("embedding_length"))?;
    let num_heads = gguf.usize_required(&key("attention.head_count"))?;
    let num_kv_heads = gguf
        .usize_optional(&key("attention.head_count_kv"))?
        .unwrap_or(num_heads);
    let key_length = gguf.usize_optional(&key("attention.key_length"))?;
    // Without an explicit head size it is embedding_length / head_count (Qwen3 states one that
    // differs from it).
    if num_heads == 0 || (key_length.is_none() && hidden_size % num_heads != 0) {
        return Err(gguf.metadata_error(
            &key("attention.head_count"),
            format!("{num_heads} heads do not divide embedding_length {hidden_size}"),
        ));
    }
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(gguf.metadata_error(
            &key("attention.head_count_kv"),
            format!("{num_heads} query heads are not a multiple of {num_kv_heads} key/value heads"),
        ));
    }
    let head_dim = key_length.unwrap_or(hidden_size / num_heads);
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(gguf.metadata_error(
            &key("attention.key_length"),
            format!("RoPE needs an even head size, got {head_dim}"),
        ));
    }
    if let Some(rope_dims) = gguf.usize_optional(&key("rope.dimension_count"))? {
        if rope_dims != head_dim {
            return Err(gguf.metadata_error(
                &key("rope.dimension_count"),
                format!("partial RoPE ({rope_dims} of {head_dim} dims) is not supported"),
            ));
        }
    }
    let vocab_size = match gguf.usize_optional(&key("vocab_size"))? {
        Some(v) => v,
        None => gguf
            .require("tokenizer.ggml.tokens")?
            .as_array()
            .map(<[_]>::len)
            .ok_or_else(|| {
                gguf.metadata_error("tokenizer.ggml.tokens", "expected an array".into())
            })?,
    };
    let rope_scaling = match gguf.str_optional(&key("rope.scaling.type"))? {
        None | Some("none") => RopeScaling::None,
        Some("linear") => {
            let factor = gguf
                .f64_optional(&key("rope.scaling.factor"))?
                .filter(|f| *f > 0.0)
                .ok_or_else(|| {
                    gguf.metadata_error(
                        &key("rope.scaling.factor"),
                        "needs a positive factor".into(),
                    )
                })?;
            RopeScaling::Linear { factor }
        }
        Some(other) => {
            return Err(gguf.metadata_error(
                &key("rope.scaling.type"),
                format!("`{other}` is not supported (none, linear)"),
            ))
        }
    };
    if gguf.tensor_info("rope_freqs.weight").is_some() {
        return Err(GgufError::Metadata {
            path: gguf.path().to_path_buf(),
            key: "rope_freqs.weight".into(),
            message: "per-frequency RoPE factors (Llama 3.1 scaling) are not supported".into(),
        });
    }
    let token_id = |k: &str| -> Result<Option<u32>> {
        gguf.usize_optional(k)?
            .map(|id| {
                u32::try_from(id)
                    .ok()
                    .filter(|&id| (id as usize) < vocab_size)
                    .ok_or_else(|| {
                        gguf.metadata_error(
                            k,
                            format!("id {id} is outside the {vocab_size} tokens"),
                        )
                    })
            })
            .transpose()
    };
    let config = ModelConfig {
        architecture,
        hidden_size,
        intermediate_size: gguf.usize_required(&key("feed_forward_length"))?,
        num_layers: gguf.usize_required(&key("block_count"))?,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size,
        rms_norm_eps: gguf
            .f64_optional(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5),
        rope_theta: gguf
            .f64_optional(&key("rope.freq_base"))?
            .filter(|t| *t > 0.0)
            .unwrap_or(10_000.0),
        rope_scaling,
        attention_bias: gguf.tensor_info("blk.0.attn_q.bias").is_some(),
        tie_word_embeddings: gguf.tensor_info("output.weight").is_none(),
        max_position_embeddings: gguf.usize_optional(&key("context_length"))?.unwrap_or(4096),
        eos_token_ids: token_id("tokenizer.ggml.eos_token_id")?
            .into_iter()
            .collect(),
        bos_token_id: token_id("tokenizer.ggml.bos_token_id")?,
    };
    if config.attention_bias && architecture == Architecture::Llama {
        return Err(GgufError::Metadata {
            path: gguf.path().to_path_buf(),
            key: "blk.0.attn_q.bias".into(),
            message: "Llama with q/k/v biases is not supported".into(),
        });
    }
    for (k, v) in [
        ("embedding_length", config.hidden_size),
        ("feed_forward_length", config.intermediate_size),
        ("block_count", config.num_layers),
        ("vocab_size", config.vocab_size),
    ] {
        if v == 0 {
            return Err(gguf.metadata_error(&key(k), "must be positive".into()));
        }
    }
    Ok(config)
}

/// The GGUF tensor holding a Hugging Face tensor, and the number of heads whose rows llama.cpp
/// permuted (Llama's q_proj: NH, k_proj: NKV; nothing in Qwen3).
fn gguf_name(hf: &str, config: &ModelConfig) -> Option<(String, Option<usize>)> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some((name.to_string(), None));
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tensor) = rest.split_once('.')?;
    let permuted = config.architecture == Architecture::Llama;
    let (suffix, heads) = match tensor {
        "input_layernorm.weight" => ("attn_norm.weight", None),
        "self_attn.q_proj.weight" => ("attn_q.weight", permuted.then_some(config.num_heads)),
        "self_attn.k_proj.weight" => ("attn_k.weight", permuted.then_some(config.num_kv_heads)),
        "self_attn.q_proj.bias" => ("attn_q.bias", None),
        "self_attn.k_proj.bias" => ("attn_k.bias", None),
        "self_attn.v_proj.bias" => ("attn_v.bias", None),
        "self_attn.q_norm.weight" => ("attn_q_norm.weight", None),
        "self_attn.k_norm.weight" => ("attn_k_norm.weight", None),
        "self_attn.v_proj.weight" => ("attn_v.weight", None),
        "self_attn.o_proj.weight" => ("attn_output.weight", None),
        "post_attention_layernorm.weight" => ("ffn_norm.weight", None),
        "mlp.gate_proj.weight" => ("ffn_gate.weight", None),
        "mlp.up_proj.weight" => ("ffn_up.weight", None),
        "mlp.down_proj.weight" => ("ffn_down.weight", None),
        _ => return None,
    };
    Some((format!("blk.{layer}.{suffix}"), heads))
}

/// Undoes llama.cpp's q/k row permutation of a [heads·hd, C] weight into `out`: Hugging Face row
/// `h·hd + i·hd/2 + j` is GGUF row `h·hd + 2j + i`.
fn unpermute_rows(gguf_rows: &[f32], out: &mut [f32], heads: usize, cols: usize) {
    let hd = gguf_rows.len() / (heads * cols);
    let half = hd / 2;
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                let dst = (h * hd + i * half + j) * cols;
                let src = (h * hd + 2 * j + i) * cols;
                out[dst..dst + cols].copy_from_slice(&gguf_rows[src..src + cols]);
            }
        }
    }
}

/// Loads a Llama or Qwen3 GGUF into the engine's flat f32 layout, dequantising every tensor.
///
/// The metadata's sizes are checked against the tensors the file really holds before anything is
/// allocated: a corrupt `block_count` or `embedding_length` is a named error, not an overflow or an
/// allocation of terabytes.
pub fn load_llama(gguf: &GgufFile) -> Result<Model> {
    let config = llama_config(gguf)?;
    check_sizes(gguf, &config)?;
    let layout = ParamLayout::new(&config);
    // Every tensor present, of the right shape, with its data inside the file.
    let mut sources = Vec::with_capacity(layout.slots.len());
    for slot in &layout.slots {
        let Some((name, permuted_heads)) = gguf_name(&slot.name, &config) else {
            return Err(GgufError::MissingTensor {
                path: gguf.path().to_path_buf(),
                tensor: slot.name.clone(),
            });
        };
        let info = gguf
            .tensor_info(&name)
            .ok_or_else(|| GgufError::MissingTensor {
                path: gguf.path().to_path_buf(),
                tensor: name.clone(),
            })?;
        if info.shape() != slot.shape {
            return Err(GgufError::Shape {
                path: gguf.path().to_path_buf(),
                tensor: name,
                expected: slot.shape.clone(),
                found: info.shape(),
            });
        }
        gguf.tensor_bytes(info)?;
        sources.push((name, permuted_heads));
    }
    let what = format!("importing {}", gguf.path().display());
    let mut plan = MemoryPlan::default();
    plan.add("f32 weights", layout.total as f64 * 4.0);
    let engine = |e: crate::error::EngineError| GgufError::TooLarge {
        path: gguf.path().to_path_buf(),
        message: e.to_string(),
    };
    plan.check(&what).map_err(engine)?;
    let mut params = try_zeroed(layout.total, &what).map_err(engine)?;
    for (slot, (name, permuted_heads)) in layout.slots.iter().zip(sources) {
        let data = gguf.tensor_f32(&name)?;
        let out = &mut params[slot.range()];
        match permuted_heads {
            Some(heads) => unpermute_rows(&data, out, heads, config.hidden_size),
            None => out.copy_from_slice(&data),
        }
    }
    tracing::debug!(path = %gguf.path().display(), params = layout.total, "imported GGUF");
    Ok(Model {
        config,
        layout,
        params,
    })
}

/// Refuses a config whose tensors could not be in the file: more layers than the file has blocks
/// (checked through the last block's first tensor), or sizes whose products overflow. After this,
/// planning the layout is cheap and cannot overflow.
fn check_sizes(gguf: &GgufFile, config: &ModelConfig) -> Result<()> {
    let prefix = config.architecture.model_type();
    // The engine's bounds, named with the GGUF key that set each size.
    if let Err((key, message)) = config.bounds() {
        let key = match key {
            "vocab_size" => "vocab_size",
            "hidden_size" => "embedding_length",
            "intermediate_size" => "feed_forward_length",
            "num_hidden_layers" => "block_count",
            "num_attention_heads" => "attention.head_count",
            "num_key_value_heads" => "attention.head_count_kv",
            "head_dim" => "attention.key_length",
            "max_position_embeddings" => "context_length",
            other => return Err(gguf.metadata_error(other, message)),
        };
        return Err(gguf.metadata_error(&format!("{prefix}.{key}"), message));
    }
    let last = format!("blk.{}.attn_norm.weight", config.num_layers - 1);
    if gguf.tensor_info(&last).is_none() {
        return Err(GgufError::MissingTensor {
            path: gguf.path().to_path_buf(),
            tensor: last,
        });
    }
    // Each block is nine tensors of the file: a block count the file's tensor index cannot hold
    // is refused before the layout plans a slot for each (a crafted 4.7 KB file once asked for
    // a billion blocks).
    let needed = config.num_layers.saturating_mul(9).saturating_add(2);
    if needed > gguf.tensors.len() {
        return Err(gguf.metadata_error(
            &format!("{prefix}.block_count"),
            format!(
                "{} blocks need at least {needed} tensors; the file has {}",
                config.num_layers,
                gguf.tensors.len()
            ),
        ));
    }
    let c = config.hidden_size;
    let per_layer = config
        .num_kv_heads
        .checked_mul(2)
        .and_then(|kv| kv.checked_add(config.num_heads))
        .and_then(|h| h.checked_mul(config.head_dim))
        .and_then(|qkv| qkv.checked_mul(c))
        .and_then(|qkv| {
            let q = config
                .num_heads
                .checked_mul(config.head_dim)?
                .checked_mul(c)?;
            let mlp = config.intermediate_size.checked_mul(c)?.checked_mul(3)?;
            qkv.checked_add(q)?
                .checked_add(mlp)?
                .checked_add(c.checked_mul(2)?)
        });
    let total = per_layer
        .and_then(|l| l.checked_mul(config.num_layers))
        .and_then(|t| t.checked_add(config.vocab_size.checked_mul(c)?.checked_mul(2)?))
        .filter(|&t| t <= isize::MAX as usize / 4);
    if total.is_none() {
        return Err(GgufError::Metadata {
            path: gguf.path().to_path_buf(),
            key: format!("{prefix}.embedding_length"),
            message: format!(
                "the sizes ({} layers, width {c}, {} heads of {}, MLP {}, vocabulary {}) are too large",
                config.num_layers,
                config.num_heads,
                config.head_dim,
                config.intermediate_size,
                config.vocab_size
            ),
        });
    }
    Ok(())
}

/// Imports a Llama or Qwen3 GGUF file into a Hugging Face directory that `transformers` and r1 both load:
/// f32 `model.safetensors`, `config.json`, `tokenizer.json`, `tokenizer_config.json` (chat
/// template, bos/eos) and `generation_config.json`. Returns the imported model.
pub fn import_to_dir(gguf_path: &Path, out_dir: &Path) -> Result<Model> {
    let gguf = GgufFile::open(gguf_path)?;
    let model = load_llama(&gguf)?;
    let tokenizer = tokenizer_json(&gguf)?;
    let tokenizer_config = tokenizer_config_json(&gguf)?;
    let export = |path: &Path, message: String| GgufError::Export {
        path: path.to_path_buf(),
        message,
    };
    save_model_dir(&model, out_dir).map_err(|e| export(out_dir, e.to_string()))?;
    let generation = serde_json::json!({
        "bos_token_id": model.config.bos_token_id,
        "eos_token_id": model.config.eos_token_ids,
    });
    for (name, json) in [
        ("tokenizer.json", tokenizer),
        ("tokenizer_config.json", tokenizer_config),
        ("generation_config.json", generation),
    ] {
        let path = out_dir.join(name);
        let text = serde_json::to_vec_pretty(&json).map_err(|e| export(&path, e.to_string()))?;
        std::fs::write(&path, text).map_err(|source| GgufError::Io { path, source })?;
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // convert_hf_to_gguf.py: w.reshape(heads, 2, hd/2, C).swapaxes(1, 2).reshape(...).
        let (heads, hd, cols) = (3, 4, 2);
        let hf: Vec<f32> = (0..heads * hd * cols).map(|x| x as f32).collect();
        let mut permuted = vec![0f32; hf.len()];
        for h in 0..heads {
            for j in 0..hd / 2 {
                for i in 0..2 {
                    let src = (h * hd + i * hd / 2 + j) * cols;
                    let dst = (h * hd + 2 * j + i) * cols;
                    permuted[dst..dst + cols].copy_from_slice(&hf[src..src + cols]);
                }
            }
        }
        let mut back = vec![0f32; hf.len()];
        unpermute_rows(&permuted, &mut back, heads, cols);
        assert_eq!(back, hf);
    }
}
