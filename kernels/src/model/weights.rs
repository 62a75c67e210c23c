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
use super::limits::{try_zeroed, MemoryPlan};
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

/// Loads a Hugging Face model directory. Before the parameters are allocated, config.json's sizes
/// are bounded, every tensor the config implies is found in the weight files with its shape, and
/// the bytes the weights need are checked against the memory available: a directory that
/// cannot load is an error naming the key, the tensor or the figures, never an abort.
pub fn load_model_dir(dir: &Path) -> Result<Model> {
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let layout = ParamLayout::new(&config);
    let params = read_params(dir, &layout)?;
    Ok(Model {
        config,
        layout,
        params,
    })
}

/// Checks a model directory without loading its weights: config.json within bounds, and every
/// tensor it implies present in the weight files with the implied shape and a readable dtype.
/// Returns the config (callers estimate the memory a run on it needs).
pub fn check_model_dir(dir: &Path) -> Result<ModelConfig> {
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let layout = ParamLayout::new(&config);
    let files = WeightFiles::open(dir, &layout)?;
    files.check(&layout)?;
    Ok(config)
}

/// The weight files of a directory, mapped, with the slots each one holds.
struct WeightFiles {
    /// (file, its map, indices into the layout's slots).
    files: Vec<(PathBuf, memmap2::Mmap, Vec<usize>)>,
}

impl WeightFiles {
    /// Finds which file holds each tensor of `layout` and maps those files.
    fn open(dir: &Path, layout: &ParamLayout) -> Result<Self> {
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
        let mut out = Vec::with_capacity(by_file.len());
        for (file, slot_ids) in by_file {
            require_regular_file(file)?;
            let handle = std::fs::File::open(file).map_err(|e| EngineError::io(file, e))?;
            // SAFETY: the map is read-only and lives only while the model loads; a concurrent
            // writer to a model file is outside what r1 supports (safetensors' own loaders make
            // the same choice).
            let map =
                unsafe { memmap2::Mmap::map(&handle) }.map_err(|e| EngineError::io(file, e))?;
            out.push((file.to_path_buf(), map, slot_ids));
        }
        Ok(WeightFiles { files: out })
    }

    /// Every slot present with its shape, a dtype r1 widens and the bytes that shape needs; the
    /// headers alone are read.
    fn check(&self, layout: &ParamLayout) -> Result<()> {
        for (file, map, slot_ids) in &self.files {
            let tensors = deserialize(file, map)?;
            for &i in slot_ids {
                let slot = &layout.slots[i];
                let view = find(&tensors, file, slot)?;
                let width = match view.dtype() {
                    Dtype::F32 => 4,
                    Dtype::BF16 | Dtype::F16 => 2,
                    other => {
                        return Err(EngineError::Dtype {
                            path: file.clone(),
                            tensor: slot.name.clone(),
                            dtype: format!("{other:?}"),
                        })
                    }
                };
                if view.data().len() != slot.len * width {
                    return Err(EngineError::Dtype {
                        path: file.clone(),
                        tensor: slot.name.clone(),
                        dtype: format!(
                            "{:?} with {} bytes for {} elements",
                            view.dtype(),
                            view.data().len(),
                            slot.len
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

fn deserialize<'a>(file: &Path, map: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(map).map_err(|e| EngineError::Safetensors {
        path: file.to_path_buf(),
        message: e.to_string(),
    })
}

/// The tensor of `slot` in a file, with the shape the config implies.
fn find<'a>(
    tensors: &SafeTensors<'a>,
    file: &Path,
    slot: &super::layout::TensorSlot,
) -> Result<safetensors::tensor::TensorView<'a>> {
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
    Ok(view)
}

/// Reads every tensor of `layout` from the safetensors file(s) of `dir` into one flat f32 buffer
/// (also used by the sequence-classification loader, whose layout adds `score.weight`). The
/// files are checked against the layout and the buffer against the memory available before it
/// is allocated, and the allocation itself is fallible.
pub(crate) fn read_params(dir: &Path, layout: &ParamLayout) -> Result<Vec<f32>> {
    let files = WeightFiles::open(dir, layout)?;
    files.check(layout)?;
    let mut plan = MemoryPlan::default();
    plan.add("f32 weights", layout.total as f64 * 4.0);
    plan.check(&format!("loading {}", dir.display()))?;
    let mut params = try_zeroed(layout.total, &format!("the weights of {}", dir.display()))?;
    for (file, map, slot_ids) in &files.files {
        let tensors = deserialize(file, map)?;
        for &i in slot_ids {
            let slot = &layout.slots[i];
            let view = find(&tensors, file, slot)?;
            widen_into(view.dtype(), view.data(), &mut params[slot.range()]).map_err(|dtype| {
                EngineError::Dtype {
                    path: file.clone(),
                    tensor: slot.name.clone(),
                    dtype,
                }
            })?;
        }
    }
    Ok(params)
}

/// Refuses what is not a regular file before it is opened: opening a FIFO blocks until a writer
/// comes, and a device never ends.
pub(crate) fn require_regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(EngineError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        ))
    }
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

/// The files beside the weights that say how to read and prompt a model: what a saved
/// checkpoint copies from the model it started from, so `r1ctl generate DIR` works on it.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
];

/// Copies each of [`TOKENIZER_FILES`] that `from` has into `to` (which must exist); returns how
/// many were copied. Copying a directory onto itself copies nothing.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<usize> {
    let same = match (from.canonicalize(), to.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Ok(0);
    }
    let mut copied = 0;
    for name in TOKENIZER_FILES {
        let source = from.join(name);
        if source.is_file() {
            std::fs::copy(&source, to.join(name)).map_err(|e| EngineError::io(&source, e))?;
            copied += 1;
        }
    }
    Ok(copied)
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
