//! The GRPO objective against ../shared/fixtures/grpo/cases.json (float64, TRL's arithmetic):
//! advantages, the loss and d loss / d logprobs for every aggregation, with and without KL, with
//! symmetric and clip-higher ε; then the same loss through the fused LM head, and finite differences.

use std::path::{Path, PathBuf};

use r1_kernels::train::grpo::{aggregation_weights, token_loss, zero_std_groups};
use r1_kernels::train::{
    group_advantages, GrpoConfig, GrpoObjective, LossAgg, ScaleRewards, TokenObjective,
};
use serde_json::Value;

fn cases() -> Value {
    let path: PathBuf = std::env::var_os("R1_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("grpo/cases.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn vector(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn config_of(case: &Value) -> GrpoConfig {
    GrpoConfig {
        epsilon_low: case["epsilon_low"].as_f64().unwrap(),
        epsilon_high: case["epsilon_high"].as_f64().unwrap(),
        beta: case["beta"].as_f64().unwrap(),
        loss_agg: serde_json::from_value(case["loss_agg"].clone()).unwrap(),
        max_completion_length: case["max_completion_length"].as_u64().unwrap() as usize,
    }
}

/// Loss and gradient in f64 over the fixture's rows.
fn loss_and_grad(inputs: &Value, config: &GrpoConfig, logp: &[Vec<f64>]) -> (f64, Vec<Vec<f64>>) {
    let old = matrix(&inputs["old_logprobs"]);
    let reference = matrix(&inputs["ref_logprobs"]);
    let mask = matrix(&inputs["mask"]);
    let t = mask[0].len();
    let flat_mask: Vec<f32> = mask.iter().flatten().map(|&m| m as f32).collect();
    let weights = aggregation_weights(&flat_mask, t, config);
    let advantages = group_advantages(
        &vector(&inputs["rewards"]),
        inputs["group_size"].as_u64().unwrap() as usize,
        ScaleRewards::Group,
    );
    let mut loss = 0.0;
    let mut grad = vec![vec![0.0; t]; logp.len()];
    for r in 0..logp.len() {
        for c in 0..t {
            let (l, d) = token_loss(
                logp[r][c],
                old[r][c],
                reference[r][c],
                advantages[r],
                config,
            );
            loss += weights[r * t + c] * l;
            grad[r][c] = weights[r * t + c] * d;
        }
    }
    (loss, grad)
}

#[test]
fn advantages_match_the_fixture() {
    let all = cases();
    let inputs = &all["inputs"];
    let got = group_advantages(&vector(&inputs["rewards"]), 3, ScaleRewards::Group);
    for (a, b) in got.iter().zip(vector(&inputs["advantages"])) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    assert_eq!(zero_std_groups(&[1.0, 1.0, 1.0, 0.0, 1.0, 1.0], 3), 1);
    assert_eq!(
        group_advantages(&[1.0, 3.0], 2, ScaleRewards::None),
        vec![-1.0, 1.0]
    );
}

#[test]
fn loss_and_gradients_match_every_fixture_case() {
    let all = cases();
    let inputs = &all["inputs"];
    let logp = matrix(&inputs["logprobs"]);
    let cases = all["cases"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        12,
        "3 aggregations × KL on/off × symmetric/clip-higher"
    );
    for case in cases {
        let config = config_of(case);
        let (loss, grad) = loss_and_grad(inputs, &config, &logp);
        let want = case["loss"].as_f64().unwrap();
        assert!(
            (loss - want).abs() <= 1e-10 * want.abs().max(1.0),
            "{config:?}: loss {loss} vs {want}"
        );
        for (gr, wr) in grad.iter().zip(matrix(&case["grad_logprobs"])) {
            for (g, w) in gr.iter().zip(wr) {
                assert!((g - w).abs() < 1e-10, "{config:?}: gradient {g} vs {w}");
            }
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let all = cases();
    let inputs = &all["inputs"];
    let logp = matrix(&inputs["logprobs"]);
    for case in all["cases"].as_array().unwrap() {
        let config = config_of(case);
        let (_, grad) = loss_and_grad(inputs, &config, &logp);
        let eps = 1e-6;
        for r in 0..logp.len() {
            for c in 0..logp[0].len() {
                let (mut plus, mut minus) = (logp.clone(), logp.clone());
                plus[r][c] += eps;
                minus[r][c] -= eps;
                let numeric = (loss_and_grad(inputs, &config, &plus).0
                    - loss_and_grad(inputs, &config, &minus).0)
                    / (2.0 * eps);
                // Away from the clip's kinks the derivative is exact.
                assert!(
                    (numeric - grad[r][c]).abs() < 1e-6,
                    "{config:?} [{r}][{c}]: {numeric} vs {}",
                    grad[r][c]
                );
            }
        }
    }
}

#[test]
fn the_head_objective_applies_weights_per_token() {
    let all = cases();
    let inputs = &all["inputs"];
    let case = &all["cases"][10]; // seq-mean-token-sum-norm with KL
    let config = config_of(case);
    assert_eq!(config.loss_agg, LossAgg::SeqMeanTokenSumNorm);
    let flat = |k: &str| -> Vec<f32> {
        matrix(&inputs[k])
            .into_iter()
            .flatten()
            .map(|x| x as f32)
            .collect()
    };
    let (old, reference, mask, logp) = (
        flat("old_logprobs"),
        flat("ref_logprobs"),
        flat("mask"),
        flat("logprobs"),
    );
    let t = 7;
    let weights = aggregation_weights(&mask, t, &config);
    let advantages = group_advantages(&vector(&inputs["rewards"]), 3, ScaleRewards::Group);
    let objective = GrpoObjective {
        config,
        old_logp: &old,
        ref_logp: &reference,
        advantages: &advantages,
        weights: &weights,
        t,
    };
    let loss: f64 = logp
        .iter()
        .enumerate()
        .map(|(i, &lp)| objective.token(i, lp, 0.0).loss)
        .sum();
    let want = case["loss"].as_f64().unwrap();
    // f32 inputs: agreement to f32 precision.
    assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
    let grads = matrix(&case["grad_logprobs"]);
    for (i, &lp) in logp.iter().enumerate() {
        let d = objective.token(i, lp, 0.0).d_logp as f64;
        assert!((d - grads[i / t][i % t]).abs() < 1e-6);
    }
    let stats = objective.stats(&logp);
    assert!(stats.kl_mean > 0.0 && stats.ratio_mean > 0.0);
    assert!(
        stats.clip_low_fraction + stats.clip_high_fraction > 0.0,
        "the fixture has ratios outside the clip range"
    );
}
