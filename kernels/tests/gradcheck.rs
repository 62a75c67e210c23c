//! Gradients checked by finite differences on random tiny models, independent of the fixtures:
//! the whole model (both architectures, sequences longer than one attention block) and the fused
//! LM head with a log-prob + entropy objective.

use r1_kernels::cpu::{self, Activations};
use r1_kernels::model::tiny::TinyModel;
use r1_kernels::model::{Architecture, Model, ModelConfig, RopeScaling};
use r1_kernels::train::head::HeadGrads;
use r1_kernels::train::{lm_head, TokenLoss, TokenObjective, WeightedCrossEntropy};

fn tiny_config(architecture: Architecture) -> ModelConfig {
    TinyModel::engine(architecture)
        .intermediate(48)
        .with(|c| {
            if architecture == Architecture::Llama {
                c.rope_scaling = RopeScaling::Llama3 {
                    factor: 8.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 32.0,
                };
            }
        })
        .into_config()
}

struct Batch {
    ids: Vec<u32>,
    targets: Vec<u32>,
    weights: Vec<f32>,
    b: usize,
    t: usize,
}

fn batch(vocab: u32) -> Batch {
    // T = 70 crosses the 64-row causal block of the attention kernel.
    let (b, t) = (2, 70);
    let ids: Vec<u32> = (0..b * t)
        .map(|i| ((i * 7919 + 13) % vocab as usize) as u32)
        .collect();
    let targets: Vec<u32> = (0..b * t)
        .map(|i| ((i * 104_729 + 5) % vocab as usize) as u32)
        .collect();
    let mask: Vec<f32> = (0..b * t)
        .map(|i| if i % 5 == 0 { 0.0 } else { 1.0 })
        .collect();
    Batch {
        ids,
        targets,
        weights: WeightedCrossEntropy::mean_weights(&mask),
        b,
        t,
    }
}

fn loss(model: &Model, acts: &mut Activations, data: &Batch) -> f64 {
    cpu::forward(model, acts, &data.ids).unwrap();
    let objective = WeightedCrossEntropy {
        weights: &data.weights,
    };
    cpu::head(model, acts, &data.targets, Some(&objective), None, false)
        .unwrap()
        .loss
}

fn check_model_gradient(architecture: Architecture) {
    let mut model = Model::random(tiny_config(architecture), 7, 0.2);
    // Norm weights away from 1 so their gradients are exercised too.
    for slot in model.layout.slots.clone() {
        if slot.name.ends_with("norm.weight") {
            for (i, p) in model.params[slot.range()].iter_mut().enumerate() {
                *p = 0.8 + 0.01 * i as f32;
            }
        }
    }
    let data = batch(model.config.vocab_size as u32);
    let mut acts = Activations::new(&model, data.b, data.t);
    let mut grads = vec![0.0; model.layout.total];
    cpu::forward(&model, &mut acts, &data.ids).unwrap();
    let objective = WeightedCrossEntropy {
        weights: &data.weights,
    };
    cpu::head(
        &model,
        &mut acts,
        &data.targets,
        Some(&objective),
        Some(&mut grads),
        false,
    )
    .unwrap();
    cpu::backward(&model, &mut acts, &data.ids, &mut grads).unwrap();

    // For each tensor, the directional derivative along its own gradient is |g|: a wrong
    // gradient of any tensor shows up as a mismatch with the central difference.
    let eps = 1e-3f32;
    for slot in model.layout.slots.clone() {
        let g = grads[slot.range()].to_vec();
        let norm = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(norm > 0.0, "{}: zero gradient", slot.name);
        let original = model.params[slot.range()].to_vec();
        let mut at = |sign: f32, model: &mut Model| {
            for ((p, o), gi) in model.params[slot.range()].iter_mut().zip(&original).zip(&g) {
                *p = o + sign * eps * (*gi as f64 / norm) as f32;
            }
            loss(model, &mut acts, &data)
        };
        let plus = at(1.0, &mut model);
        let minus = at(-1.0, &mut model);
        model.params[slot.range()].copy_from_slice(&original);
        let numeric = (plus - minus) / (2.0 * eps as f64);
        let rel = (numeric - norm).abs() / norm;
        assert!(
            rel < 3e-2,
            "{:?} {}: directional derivative {numeric}, |gradient| {norm}",
            architecture,
            slot.name
        );
    }
}

#[test]
fn qwen2_gradients_match_finite_differences() {
    check_model_gradient(Architecture::Qwen2);
}

#[test]
fn llama_gradients_match_finite_differences() {
    check_model_gradient(Architecture::Llama);
}

#[test]
fn qwen3_gradients_match_finite_differences() {
    // Covers the per-head q/k RMSNorm's backward, including its two weights.
    check_model_gradient(Architecture::Qwen3);
}

/// Σ a_t · logp_t + b_t · entropy_t: exercises both derivatives the head supports.
struct Mixed {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl TokenObjective for Mixed {
    fn token(&self, i: usize, logp: f32, entropy: f32) -> TokenLoss {
        TokenLoss {
            loss: (self.a[i] * logp + self.b[i] * entropy) as f64,
            d_logp: self.a[i],
            d_entropy: self.b[i],
        }
    }
    fn uses_entropy(&self) -> bool {
        true
    }
}

/// The same objective computed plainly in f64 from full logits.
fn mixed_reference(xf: &[f32], w: &[f32], targets: &[u32], obj: &Mixed, c: usize, v: usize) -> f64 {
    let mut total = 0.0;
    for (t, &target) in targets.iter().enumerate() {
        let z: Vec<f64> = (0..v)
            .map(|j| {
                (0..c)
                    .map(|k| xf[t * c + k] as f64 * w[j * c + k] as f64)
                    .sum()
            })
            .collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        let entropy: f64 = -z.iter().map(|x| (x - lse).exp() * (x - lse)).sum::<f64>();
        total += obj.a[t] as f64 * (z[target as usize] - lse) + obj.b[t] as f64 * entropy;
    }
    total
}

#[test]
fn lm_head_logprob_and_entropy_gradients_match_finite_differences() {
    let (n, c, v) = (6, 8, 11);
    let wave = |i: usize, f: f32| ((i as f32) * f).sin();
    let xf: Vec<f32> = (0..n * c).map(|i| wave(i, 0.7)).collect();
    let w: Vec<f32> = (0..v * c).map(|i| wave(i, 1.3)).collect();
    let targets: Vec<u32> = (0..n).map(|i| (i * 3 % v) as u32).collect();
    let obj = Mixed {
        a: (0..n).map(|i| wave(i, 2.1)).collect(),
        b: (0..n).map(|i| wave(i, 0.9)).collect(),
    };

    let (mut dxf, mut dw) = (vec![0.0; n * c], vec![0.0; v * c]);
    let mut scratch = Vec::new();
    let out = lm_head(
        &xf,
        &w,
        &targets,
        c,
        v,
        Some(&obj),
        Some(HeadGrads {
            dxf: &mut dxf,
            dweight: &mut dw,
        }),
        true,
        &mut scratch,
    )
    .unwrap();
    let reference = mixed_reference(&xf, &w, &targets, &obj, c, v);
    assert!(
        (out.loss - reference).abs() < 1e-4,
        "loss {} vs {reference}",
        out.loss
    );
    assert_eq!(out.entropy.len(), n);

    let eps = 1e-3;
    for i in 0..n * c {
        let (mut p, mut m) = (xf.clone(), xf.clone());
        p[i] += eps;
        m[i] -= eps;
        let numeric = (mixed_reference(&p, &w, &targets, &obj, c, v)
            - mixed_reference(&m, &w, &targets, &obj, c, v))
            / (2.0 * eps as f64);
        assert!(
            (numeric - dxf[i] as f64).abs() < 1e-3 * (1.0 + numeric.abs()),
            "dxf[{i}]: {numeric} vs {}",
            dxf[i]
        );
    }
    for i in 0..v * c {
        let (mut p, mut m) = (w.clone(), w.clone());
        p[i] += eps;
        m[i] -= eps;
        let numeric = (mixed_reference(&xf, &p, &targets, &obj, c, v)
            - mixed_reference(&xf, &m, &targets, &obj, c, v))
            / (2.0 * eps as f64);
        assert!(
            (numeric - dw[i] as f64).abs() < 1e-3 * (1.0 + numeric.abs()),
            "dw[{i}]: {numeric} vs {}",
            dw[i]
        );
    }
}

#[test]
fn lm_head_rejects_targets_outside_the_vocabulary() {
    let mut scratch = Vec::new();
    let err = lm_head(
        &[0.0; 4],
        &[0.0; 8],
        &[0, 9],
        2,
        4,
        None,
        None,
        false,
        &mut scratch,
    )
    .unwrap_err();
    assert!(err.to_string().contains("target 9 at position 1"), "{err}");
}
