//! Loading and saving Hugging Face model directories.
//!
//! A directory holds `config.json` and either `model.safetensors` or a sharded
//! `model.safetensors.index.json` + shards. Tensors may be f32, bf16 or f16; the CPU backend widens
//! them to f32 into the flat layout. Saving writes f32 safetensors with Hugging Face names, so
//! `transformers` loads the result and so does r1, bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::config::ModelConfig;
use super::layout::ParamLayout;
use crate::error::{EngineError, Result};

/// A model in memory: its config, where each tensor lives, and the flat f32 parameters.
#[derive(Debug, Clone)]
pub struct Model {
    /// Shape and numerics.
    pub config: ModelConfig,
    /// Offsets of every tensor in `params`.
    pub layout: ParamLayout,
    /// Every parameter, f32, in layout order.
    pub params: Vec<f32>,
}

impl Model {
    /// A model with the given config and parameters drawn from N(0, std²) (norm weights at 1),
    /// deterministic in `seed`. For tests, benchmarks and built-in tiny models.
    pub fn random(config: ModelConfig, seed: u64, std: f32) -> Self {
        use rand::{Rng, SeedableRng};
        let layout = ParamLayout::new(&config);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut params = vec![0f32; layout.total];
        for slot in &layout.slots {
            let is_norm = slot.name.ends_with("norm.weight");
            for p in &mut params[slot.range()] {
                *p = if is_norm {
                    1.0
                } else {
                    // Box-Muller from two uniforms: rand's distributions crate is not needed for this.
                    let u1: f32 = rng.random::<f32>().max(1e-7);
                    let u2: f32 = rng.random::<f32>();
                    std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
                };
            }
        }
        Model {
            config,
            layout,
            params,
        }
    }

    /// The parameters of one Hugging Face tensor.
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.layout.slot(name).map(|s| &self.params[s.range()])
    }
}

/// Loads a Hugging Face model directory.
pub fn load_model_dir(dir: &Path) -> Result<Model> {
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    check_weights_fit(dir, &config)?;
    let layout = ParamLayout::new(&config);
    let params = read_params(dir, &layout)?;
    Ok(Model {
        config,
        layout,
        params,
    })
}

/// Refuses a config whose parameters cannot be in the directory's weight files, before anything
/// is allocated for them: a parameter takes at least 2 bytes on disk (bf16/f16), so a
/// `config.json` that claims more than half the files' bytes in parameters (or a count that
/// overflows) is wrong, and planning its layout would ask for memory it does not describe.
pub(crate) fn check_weights_fit(dir: &Path, config: &ModelConfig) -> Result<()> {
    let c = config.hidden_size;
    let params = (|| {
        let q = config.num_heads.checked_mul(config.head_dim)?;
        let qkv = config
            .num_kv_heads
            .checked_mul(config.head_dim)?
            .checked_mul(2)?
            .checked_add(q)?;
        let layer = qkv
            .checked_mul(c)?
            .checked_add(q.checked_mul(c)?)?
            .checked_add(config.intermediate_size.checked_mul(c)?.checked_mul(3)?)?;
        let heads = if config.tie_word_embeddings { 1 } else { 2 };
        config
            .vocab_size
            .checked_mul(c)?
            .checked_mul(heads)?
            .checked_add(layer.checked_mul(config.num_layers)?)?
            .checked_mul(2)
    })();
    let single = dir.join("model.safetensors");
    let on_disk: u64 = if single.exists() {
        std::fs::metadata(&single)
            .map_err(|e| EngineError::io(&single, e))?
            .len()
    } else {
        let entries = std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?;
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    match params {
        Some(bytes) if bytes as u64 <= on_disk => Ok(()),
        _ => Err(EngineError::Config {
            path: dir.join("config.json"),
            key: "hidden_size".into(),
            message: format!(
                "{} layers of width {c} (MLP {}, {} heads of {}, vocabulary {}) need {} bytes of \
                 weights at 2 bytes each, but the weight files in {} hold {on_disk} bytes",
                config.num_layers,
                config.intermediate_size,
                config.num_heads,
                config.head_dim,
                config.vocab_size,
                params.map_or("more than 2^64".to_string(), |b| b.to_string()),
                dir.display()
            ),
        }),
    }
}

/// Reads every tensor of `layout` from the safetensors file(s) of `dir` into one flat f32 buffer
/// (also used by the sequence-classification loader, whose layout adds `score.weight`).
pub(crate) fn read_params(dir: &Path, layout: &ParamLayout) -> Result<Vec<f32>> {
    let mut params = vec![0f32; layout.total];

    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    // Which file holds each tensor.
    let files: HashMap<String, PathBuf> = if single.exists() {
        layout
            .slots
            .iter()
            .map(|s| (s.name.clone(), single.clone()))
            .collect()
    } else if index.exists() {
        read_index(&index, dir)?
    } else {
        return Err(EngineError::io(
            &single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither model.safetensors nor model.safetensors.index.json exists",
            ),
        ));
    };

    let mut by_file: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
    for (i, slot) in layout.slots.iter().enumerate() {
        let file = files
            .get(&slot.name)
            .ok_or_else(|| EngineError::MissingTensor {
                path: index.clone(),
                tensor: slot.name.clone(),
            })?;
        by_file.entry(file.as_path()).or_default().push(i);
    }
    for (file, slot_ids) in by_file {
        let handle = std::fs::File::open(file).map_err(|e| EngineError::io(file, e))?;
        // SAFETY: the map is read-only and lives only inside this loop; a concurrent writer to a
        // model file is outside what r1 supports (safetensors' own loaders make the same choice).
        let map = unsafe { memmap2::Mmap::map(&handle) }.map_err(|e| EngineError::io(file, e))?;
        let tensors = SafeTensors::deserialize(&map).map_err(|e| EngineError::Safetensors {
            path: file.to_path_buf(),
            message: e.to_string(),
        })?;
        for i in slot_ids {
            let slot = &layout.slots[i];
            let view = tensors
                .tensor(&slot.name)
                .map_err(|_| EngineError::MissingTensor {
                    path: file.to_path_buf(),
                    tensor: slot.name.clone(),
                })?;
            if view.shape() != slot.shape.as_slice() {
                return Err(EngineError::Shape {
                    path: file.to_path_buf(),
                    tensor: slot.name.clone(),
                    expected: slot.shape.clone(),
                    found: view.shape().to_vec(),
                });
            }
            widen_into(view.dtype(), view.data(), &mut params[slot.range()]).map_err(|dtype| {
                EngineError::Dtype {
                    path: file.to_path_buf(),
                    tensor: slot.name.clone(),
                    dtype,
                }
            })?;
        }
    }
    Ok(params)
}

/// Reads `model.safetensors.index.json`'s weight map into tensor → shard path.
fn read_index(index: &Path, dir: &Path) -> Result<HashMap<String, PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| EngineError::io(index, e))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| EngineError::Json {
        path: index.to_path_buf(),
        source: e,
    })?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| EngineError::Config {
            path: index.to_path_buf(),
            key: "weight_map".into(),
            message: "missing or not an object".into(),
        })?;
    map.iter()
        .map(|(name, file)| {
            let file = file
                .as_str()
                .filter(|f| !f.contains('/') && !f.contains(".."))
                .ok_or_else(|| EngineError::Config {
                    path: index.to_path_buf(),
                    key: format!("weight_map.{name}"),
                    message: format!("expected a shard file name in this directory, found {file}"),
                })?;
            Ok((name.clone(), dir.join(file)))
        })
        .collect()
}

/// Converts little-endian f32/bf16/f16 bytes into `out`; returns the dtype's name when it is not
/// one of those. The caller has checked the shape, so the byte count matches.
fn widen_into(dtype: Dtype, data: &[u8], out: &mut [f32]) -> std::result::Result<(), String> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::BF16 | Dtype::F16 => 2,
        other => return Err(format!("{other:?}")),
    };
    if data.len() != out.len() * width {
        return Err(format!(
            "{dtype:?} with {} bytes for {} elements",
            data.len(),
            out.len()
        ));
    }
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        _ => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
    }
    Ok(())
}

/// Writes `model` as a Hugging Face directory: `config.json` and an f32 `model.safetensors`
/// (each file written then fsynced). The directory is created if needed.
pub fn save_model_dir(model: &Model, dir: &Path) -> Result<()> {
    write_params(model, dir)?;
    let config =
        serde_json::to_vec_pretty(&model.config.to_json()).map_err(|e| EngineError::Json {
            path: dir.join("config.json"),
            source: e,
        })?;
    write_synced(&dir.join("config.json"), &config)
}

/// Writes every tensor of `model.layout` into `dir/model.safetensors` (f32, Hugging Face names),
/// creating `dir`; the caller writes config.json.
pub(crate) fn write_params(model: &Model, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let mut bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
        Vec::with_capacity(model.layout.slots.len());
    for slot in &model.layout.slots {
        let data: Vec<u8> = model.params[slot.range()]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        bytes.push((slot.name.clone(), data, slot.shape.clone()));
    }
    let path = dir.join("model.safetensors");
    let views = bytes
        .iter()
        .map(|(name, data, shape)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| EngineError::Safetensors {
                    path: path.clone(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let serialized =
        safetensors::serialize(views, Some(metadata)).map_err(|e| EngineError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
    write_synced(&path, &serialized)
}

/// Writes a whole file and fsyncs it, so a crash never leaves a half-written checkpoint file that
/// looks complete.
pub(crate) fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(|e| EngineError::io(path, e))?;
    file.write_all(data).map_err(|e| EngineError::io(path, e))?;
    file.sync_all().map_err(|e| EngineError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        load_reward_model_dir, save_reward_model_dir, Architecture, RewardModel, RopeScaling,
    };

    fn tiny(architecture: Architecture) -> ModelConfig {
        ModelConfig {
            architecture,
            hidden_size: 8,
            intermediate_size: 16,
            num_layers: 1,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            vocab_size: 24,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::None,
            attention_bias: true,
            tie_word_embeddings: true,
            max_position_embeddings: 64,
            eos_token_ids: vec![1],
            bos_token_id: Some(0),
        }
    }

    /// Sets `key` of `dir/config.json` to the raw JSON `value`.
    fn set_key(dir: &Path, key: &str, value: &str) {
        let path = dir.join("config.json");
        let mut json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        json[key] = serde_json::from_str(value).unwrap();
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    }

    /// Found by the fuzzer (tests/fuzz/corpus/model_dir/regress-*): a config.json whose sizes
    /// are far beyond its weight file aborted the process ("memory allocation of 850403524276
    /// bytes failed") while planning the layout; now it is refused, naming the file.
    #[test]
    fn sizes_beyond_the_weight_files_are_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny(Architecture::Qwen2);
        let lm = dir.path().join("lm");
        save_model_dir(&Model::random(config.clone(), 1, 0.1), &lm).unwrap();
        let rm = dir.path().join("rm");
        let reward = RewardModel::from_causal_lm(&Model::random(config, 2, 0.1), Some(1), 3, 0.1);
        save_reward_model_dir(&reward, &rm).unwrap();
        assert!(load_model_dir(&lm).is_ok());
        assert!(load_reward_model_dir(&rm).is_ok());
        for (key, value) in [
            ("hidden_size", "2147483647"),
            ("intermediate_size", "4294967295"),
            ("vocab_size", "18446744073709551615"),
            ("num_hidden_layers", "1000000000"),
        ] {
            for (dir, load) in [
                (&lm, load_model_dir as fn(&Path) -> Result<Model>),
                (&rm, |d: &Path| load_reward_model_dir(d).map(|r| r.model)),
            ] {
                let original = std::fs::read(dir.join("config.json")).unwrap();
                set_key(dir, key, value);
                let message = load(dir).unwrap_err().to_string();
                assert!(
                    message.contains("config.json") && message.contains("weight files"),
                    "{key} = {value}: {message}"
                );
                std::fs::write(dir.join("config.json"), original).unwrap();
            }
        }
    }
}
