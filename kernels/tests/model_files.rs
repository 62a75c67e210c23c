//! Model directories as users hand them to r1: saved and reloaded bit for bit, in bf16/f16,
//! sharded, and broken in the ways real files break (each must be a clear error, never a panic).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use r1_kernels::model::{load_model_dir, save_model_dir, Model};
use r1_kernels::EngineError;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn fixture(name: &str) -> PathBuf {
    std::env::var_os("R1_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("models")
        .join(name)
}

fn view(
    dtype: Dtype,
    (name, shape, data): &(String, Vec<usize>, Vec<u8>),
) -> (String, TensorView<'_>) {
    (
        name.clone(),
        TensorView::new(dtype, shape.clone(), data).unwrap(),
    )
}

/// Writes `model`'s tensors in `dtype` as safetensors files: one file, or one shard per tensor
/// with an index. `skip` leaves one tensor out; `reshape` stores one with a wrong shape.
fn write_tensors(
    model: &Model,
    dir: &Path,
    dtype: Dtype,
    sharded: bool,
    skip: Option<&str>,
    reshape: Option<&str>,
) {
    let encode = |x: f32| -> Vec<u8> {
        match dtype {
            Dtype::F32 => x.to_le_bytes().to_vec(),
            Dtype::BF16 => half::bf16::from_f32(x).to_le_bytes().to_vec(),
            Dtype::F16 => half::f16::from_f32(x).to_le_bytes().to_vec(),
            _ => unreachable!("test dtype"),
        }
    };
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .layout
        .slots
        .iter()
        .filter(|s| Some(s.name.as_str()) != skip)
        .map(|s| {
            let mut shape = s.shape.clone();
            if Some(s.name.as_str()) == reshape {
                shape.reverse();
                shape.push(1);
            }
            (
                s.name.clone(),
                shape,
                model.params[s.range()]
                    .iter()
                    .flat_map(|&x| encode(x))
                    .collect(),
            )
        })
        .collect();
    if sharded {
        let mut weight_map = serde_json::Map::new();
        for (i, t) in tensors.iter().enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, tensors.len());
            safetensors::serialize_to_file([view(dtype, t)], None, &dir.join(&file)).unwrap();
            weight_map.insert(t.0.clone(), file.into());
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    } else {
        safetensors::serialize_to_file(
            tensors.iter().map(|t| view(dtype, t)),
            None,
            &dir.join("model.safetensors"),
        )
        .unwrap();
    }
    std::fs::copy(
        fixture("tiny-llama").join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
}

#[test]
fn saved_model_loads_again_bit_for_bit() {
    for name in ["tiny-qwen2", "tiny-llama", "tiny-qwen3"] {
        let model = load_model_dir(&fixture(name)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_model_dir(&model, dir.path()).unwrap();
        let again = load_model_dir(dir.path()).unwrap();
        assert_eq!(
            again.config, model.config,
            "{name}: config changed through save"
        );
        assert!(
            again
                .params
                .iter()
                .zip(&model.params)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: weights changed through save"
        );
        // Names are Hugging Face's, so transformers can load it: spot-check the file's tensors.
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(st.names().contains(&"model.layers.1.mlp.down_proj.weight"));
        assert_eq!(
            st.names()
                .contains(&"model.layers.1.self_attn.k_norm.weight"),
            model.config.qk_norm(),
            "{name}: Qwen3's q/k norms are saved under their Hugging Face names"
        );
        assert_eq!(
            st.names().contains(&"lm_head.weight"),
            !model.config.tie_word_embeddings
        );
    }
}

#[test]
fn bf16_f16_and_sharded_weights_load() {
    let model = load_model_dir(&fixture("tiny-llama")).unwrap();
    for (dtype, sharded, tolerance) in [
        (Dtype::BF16, false, 1e-2f32),
        (Dtype::F16, true, 1e-3),
        (Dtype::F32, true, 0.0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_tensors(&model, dir.path(), dtype, sharded, None, None);
        let loaded = load_model_dir(dir.path())
            .unwrap_or_else(|e| panic!("{dtype:?} sharded={sharded}: {e}"));
        for (a, b) in loaded.params.iter().zip(&model.params) {
            assert!(
                (a - b).abs() <= tolerance * b.abs().max(1e-3),
                "{dtype:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn missing_tensor_wrong_shape_and_truncated_file_are_named_errors() {
    let model = load_model_dir(&fixture("tiny-llama")).unwrap();
    let victim = "model.layers.1.self_attn.k_proj.weight";

    for sharded in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_tensors(&model, dir.path(), Dtype::F32, sharded, Some(victim), None);
        let err = load_model_dir(dir.path()).unwrap_err();
        assert!(matches!(err, EngineError::MissingTensor { .. }), "{err}");
        assert!(err.to_string().contains(victim), "{err}");
    }

    let dir = tempfile::tempdir().unwrap();
    write_tensors(&model, dir.path(), Dtype::F32, false, None, Some(victim));
    let err = load_model_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, EngineError::Shape { .. }) && err.to_string().contains(victim),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    write_tensors(&model, dir.path(), Dtype::F32, false, None, None);
    let file = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 1000]).unwrap();
    let err = load_model_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, EngineError::Safetensors { .. })
            && err.to_string().contains("model.safetensors"),
        "{err}"
    );
    std::fs::write(&file, &bytes[..5]).unwrap();
    assert!(load_model_dir(dir.path()).is_err());
}

#[test]
fn unsupported_dtype_architecture_and_missing_files_are_named_errors() {
    let model = load_model_dir(&fixture("tiny-llama")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // An i32 tensor where a weight belongs.
    let slot = model.layout.slots[0].clone();
    let data = vec![0u8; slot.len * 4];
    let mut views: Vec<(String, TensorView)> = Vec::new();
    let f32_bytes: HashMap<String, Vec<u8>> = model
        .layout
        .slots
        .iter()
        .skip(1)
        .map(|s| {
            (
                s.name.clone(),
                model.params[s.range()]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            )
        })
        .collect();
    views.push((
        slot.name.clone(),
        TensorView::new(Dtype::I32, slot.shape.clone(), &data).unwrap(),
    ));
    for s in model.layout.slots.iter().skip(1) {
        views.push((
            s.name.clone(),
            TensorView::new(Dtype::F32, s.shape.clone(), &f32_bytes[&s.name]).unwrap(),
        ));
    }
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    std::fs::copy(
        fixture("tiny-llama").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = load_model_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, EngineError::Dtype { .. }) && err.to_string().contains(&slot.name),
        "{err}"
    );

    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let err = load_model_dir(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("GPT2LMHeadModel") && err.to_string().contains("config.json"),
        "{err}"
    );

    std::fs::write(dir.path().join("config.json"), b"{ not json").unwrap();
    let err = load_model_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, EngineError::Json { .. }) && err.to_string().contains("config.json"),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = load_model_dir(empty.path()).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    std::fs::copy(
        fixture("tiny-llama").join("config.json"),
        empty.path().join("config.json"),
    )
    .unwrap();
    let err = load_model_dir(empty.path()).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

/// A tiny model saved in `dir`, with `edit` applied to its config.json afterwards.
fn edited_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let config = r1_kernels::bench::builtin_config("tiny-qwen2").unwrap();
    save_model_dir(&Model::random(config, 3, 0.02), dir).unwrap();
    let path = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
}

#[test]
fn absurd_sizes_in_config_json_are_refused_naming_the_key_before_allocating() {
    for (key, value) in [
        ("vocab_size", 1_000_000_000u64),
        ("vocab_size", 1_000_000_000_000),
        ("num_hidden_layers", 10_000_000),
        ("num_hidden_layers", 1_000_000_000),
        ("intermediate_size", 1_000_000_000_000),
        ("head_dim", 1_000_000),
        ("max_position_embeddings", 1 << 40),
    ] {
        let dir = tempfile::tempdir().unwrap();
        edited_config(dir.path(), |c| c[key] = value.into());
        let err = load_model_dir(dir.path()).unwrap_err();
        assert!(matches!(err, EngineError::Config { .. }), "{key}: {err}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("`{key}`"))
                && message.contains(&value.to_string())
                && message.contains("would need"),
            "{key}: {message}"
        );
    }
}

#[test]
fn weights_that_lack_what_config_json_implies_are_named_before_allocating() {
    // Every size within its bound, but together ~10^14 parameters: the old loader allocated
    // them all (an abort) before it looked at the weight file. Now the file is checked first.
    let dir = tempfile::tempdir().unwrap();
    edited_config(dir.path(), |c| {
        c["num_hidden_layers"] = 1000.into();
        c["intermediate_size"] = 500_000.into();
        c["hidden_size"] = 65_536.into();
        c["head_dim"] = 64.into();
    });
    let err = load_model_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, EngineError::Shape { ref tensor, .. } if tensor == "model.embed_tokens.weight"),
        "{err}"
    );
    let err = r1_kernels::model::check_model_dir(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("model.embed_tokens.weight"),
        "{err}"
    );
}

#[test]
fn weights_larger_than_the_memory_available_are_refused_with_the_figures() {
    use r1_kernels::model::limits::available_memory;
    use r1_kernels::model::{ModelConfig, ParamLayout};
    let available = available_memory()
        .expect("Linux reports MemAvailable")
        .bytes;
    // f32 weights of 1.5 × what is available: a sparse file of real shapes (nothing on disk).
    let vocab = 1 << 21;
    let per_layer_floats = 3 * 2048 * 16384 + 4 * 2048 * 2048;
    let layers = ((available as f64 * 1.5 / 4.0 - 2.0 * (vocab * 2048) as f64)
        / per_layer_floats as f64)
        .ceil()
        .clamp(1.0, 1024.0) as usize;
    let config = ModelConfig {
        hidden_size: 2048,
        intermediate_size: 16384,
        num_layers: layers,
        num_heads: 16,
        num_kv_heads: 16,
        head_dim: 128,
        vocab_size: vocab,
        tie_word_embeddings: false,
        ..r1_kernels::bench::builtin_config("tiny-qwen2").unwrap()
    };
    let layout = ParamLayout::new(&config);
    assert!(layout.total as f64 * 4.0 > available as f64, "{available}");
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for slot in &layout.slots {
        header.insert(
            slot.name.clone(),
            serde_json::json!({"dtype": "F32", "shape": slot.shape, "data_offsets": [offset, offset + slot.len * 4]}),
        );
        offset += slot.len * 4;
    }
    let mut header = serde_json::to_vec(&header).unwrap();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(&header);
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len((bytes.len() + offset) as u64)
        .unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&config.to_json()).unwrap(),
    )
    .unwrap();
    let message = load_model_dir(dir.path()).unwrap_err().to_string();
    assert!(
        message.contains("loading")
            && message.contains("needs ")
            && message.contains("available")
            && message.contains("f32 weights"),
        "{message}"
    );
}
