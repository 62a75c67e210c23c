//! The CPU engine against Hugging Face `transformers` dumps (../shared/fixtures/models: tiny-qwen2,
//! tiny-llama, tiny-qwen3): logits,
//! loss, every parameter gradient, three AdamW steps, and config spelling variants.

use std::path::{Path, PathBuf};

use r1_kernels::cpu::{self, Activations};
use r1_kernels::model::{load_model_dir, Model};
use r1_kernels::train::{AdamW, AdamWConfig, WeightedCrossEntropy};
use safetensors::{Dtype, SafeTensors};

fn fixtures() -> PathBuf {
    std::env::var_os("R1_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn load(model: &str) -> Self {
        let path = fixtures()
            .join("models")
            .join(model)
            .join("reference.safetensors");
        Reference {
            bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    fn f32s(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("reference has no {name}"));
        assert_eq!(t.dtype(), Dtype::F32);
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn ids(&self, name: &str) -> (Vec<u32>, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::I64);
        let ids = t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        (ids, t.shape().to_vec())
    }
}

fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// Forward + masked cross-entropy + backward; returns (loss, logits, grads).
fn loss_and_grads(model: &Model, reference: &Reference) -> (f64, Vec<f32>, Vec<f32>) {
    let (ids, shape) = reference.ids("input_ids");
    let (targets, _) = reference.ids("targets");
    let mask = reference.f32s("loss_mask");
    let mut acts = Activations::new(model, shape[0], shape[1]);
    cpu::forward(model, &mut acts, &ids).unwrap();
    let logits = cpu::logits(model, &acts);
    let weights = WeightedCrossEntropy::mean_weights(&mask);
    let objective = WeightedCrossEntropy { weights: &weights };
    let mut grads = vec![0.0; model.layout.total];
    let out = cpu::head(
        model,
        &mut acts,
        &targets,
        Some(&objective),
        Some(&mut grads),
        false,
    )
    .unwrap();
    cpu::backward(model, &mut acts, &ids, &mut grads).unwrap();
    (out.loss, logits, grads)
}

fn check_model(name: &str) {
    let model = load_model_dir(&model_dir(name)).unwrap();
    let reference = Reference::load(name);
    let (loss, logits, grads) = loss_and_grads(&model, &reference);

    let want_logits = reference.f32s("logits");
    let max_err = logits
        .iter()
        .zip(&want_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_err <= 1e-4, "{name}: logits max abs error {max_err}");

    let want_loss = reference.f32s("loss")[0] as f64;
    let rel = ((loss - want_loss) / want_loss).abs();
    assert!(
        rel <= 1e-5,
        "{name}: loss {loss} vs {want_loss} (rel {rel})"
    );

    let mut worst_grad = 0.0f64;
    for slot in &model.layout.slots {
        let want = reference.f32s(&format!("grad.{}", slot.name));
        let got = &grads[slot.range()];
        let diff: f64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        assert!(
            diff / norm <= 1e-3,
            "{name}: gradient of {} has relative error {}",
            slot.name,
            diff / norm
        );
        worst_grad = worst_grad.max(diff / norm);
    }
    eprintln!("{name}: logits max abs err {max_err:.2e}, loss rel err {rel:.2e}, worst gradient rel err {worst_grad:.2e}");
}

#[test]
fn tiny_qwen2_matches_transformers() {
    check_model("tiny-qwen2");
}

#[test]
fn tiny_llama_matches_transformers() {
    check_model("tiny-llama");
}

#[test]
fn tiny_qwen3_matches_transformers() {
    check_model("tiny-qwen3");
}

fn check_adamw_steps(name: &str) {
    let mut model = load_model_dir(&model_dir(name)).unwrap();
    let reference = Reference::load(name);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir(name).join("reference.json")).unwrap(),
    )
    .unwrap();
    let want: Vec<f64> = json["step_losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let adam = &json["adamw"];
    let config = AdamWConfig {
        beta1: adam["betas"][0].as_f64().unwrap() as f32,
        beta2: adam["betas"][1].as_f64().unwrap() as f32,
        eps: adam["eps"].as_f64().unwrap() as f32,
        weight_decay: adam["weight_decay"].as_f64().unwrap() as f32,
    };
    let lr = adam["lr"].as_f64().unwrap() as f32;
    let mut opt = AdamW::new(config, model.layout.total);
    for (step, want) in want.iter().enumerate() {
        let (loss, _, grads) = loss_and_grads(&model, &reference);
        assert!(
            (loss - want).abs() <= 1e-4,
            "{name}: loss after {step} steps is {loss}, transformers says {want}"
        );
        let layout = model.layout.clone();
        opt.update(&mut model.params, &grads, &layout, lr);
    }
}

#[test]
fn tiny_qwen2_adamw_steps_match() {
    check_adamw_steps("tiny-qwen2");
}

#[test]
fn tiny_llama_adamw_steps_match() {
    check_adamw_steps("tiny-llama");
}

#[test]
fn tiny_qwen3_adamw_steps_match() {
    check_adamw_steps("tiny-qwen3");
}

#[test]
fn top_level_rope_theta_gives_the_same_logits() {
    for name in ["tiny-qwen2", "tiny-llama", "tiny-qwen3"] {
        let dir = tempfile::tempdir().unwrap();
        let src = model_dir(name);
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap())
                .unwrap();
        let theta = config["rope_parameters"]["rope_theta"].clone();
        config.as_object_mut().unwrap().remove("rope_parameters");
        config["rope_theta"] = theta;
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&config).unwrap(),
        )
        .unwrap();
        std::fs::copy(
            src.join("model.safetensors"),
            dir.path().join("model.safetensors"),
        )
        .unwrap();

        let reference = Reference::load(name);
        let (a, _, _) = loss_and_grads(&load_model_dir(&src).unwrap(), &reference);
        let (b, _, _) = loss_and_grads(&load_model_dir(dir.path()).unwrap(), &reference);
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "{name}: loss differs between rope_theta spellings"
        );
        let m1 = load_model_dir(&src).unwrap();
        let m2 = load_model_dir(dir.path()).unwrap();
        let (ids, shape) = reference.ids("input_ids");
        let mut acts = Activations::new(&m1, shape[0], shape[1]);
        cpu::forward(&m1, &mut acts, &ids).unwrap();
        let l1 = cpu::logits(&m1, &acts);
        cpu::forward(&m2, &mut acts, &ids).unwrap();
        let l2 = cpu::logits(&m2, &acts);
        assert_eq!(l1, l2, "{name}: logits differ between rope_theta spellings");
    }
}

#[test]
fn greedy_continuation_matches_transformers() {
    // No KV cache yet (that is the sampler's): each step recomputes the whole prefix, which must
    // pick the same argmax tokens as transformers' cached greedy decode.
    for name in ["tiny-qwen2", "tiny-llama", "tiny-qwen3"] {
        let model = load_model_dir(&model_dir(name)).unwrap();
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(model_dir(name).join("reference.json")).unwrap(),
        )
        .unwrap();
        let ids_of = |key: &str| -> Vec<u32> {
            json["greedy"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        let mut tokens = ids_of("prompt_ids");
        let want = ids_of("new_ids");
        let v = model.config.vocab_size;
        for _ in 0..want.len() {
            let mut acts = Activations::new(&model, 1, tokens.len());
            cpu::forward(&model, &mut acts, &tokens).unwrap();
            let logits = cpu::logits(&model, &acts);
            let last = &logits[(tokens.len() - 1) * v..];
            let next = (0..v).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
            tokens.push(next as u32);
        }
        assert_eq!(
            &tokens[tokens.len() - want.len()..],
            want.as_slice(),
            "{name}: greedy continuation differs"
        );
    }
}
