//! The GRPO objective against ../shared/fixtures/grpo/cases.json (float64, TRL's arithmetic):
//! advantages, the loss and d loss / d logprobs for every aggregation, with and without KL, with
//! symmetric and clip-higher ε; then the same loss through the fused LM head, and finite differences.
//! Then the options TRL has — sequence-level importance sampling (GSPO) and the bias-corrected KL —
//! against kernels/tests/data/grpo_trl_options.json, written by TRL's own `_compute_loss`
//! (scripts/grpo_trl_reference.py).

use std::path::{Path, PathBuf};

use r1_kernels::train::grpo::{aggregation_weights, token_loss, zero_std_groups};
use r1_kernels::train::{
    group_advantages, GrpoConfig, GrpoObjective, ImportanceSamplingLevel, LossAgg, ScaleRewards,
    SequenceTerm, TokenObjective,
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
        ..GrpoConfig::default()
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
        old_logp: Some(&old),
        ref_logp: &reference,
        advantages: &advantages,
        weights: &weights,
        t,
        sequence: Vec::new(),
        sampler_logp: None,
        sampler_sequence: Vec::new(),
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

/// Loss and d loss / d logprobs of the objective over a [rows, T] batch, the way the learner runs
/// it: sequence terms from the current log-probs first when the level is `sequence`.
#[allow(clippy::too_many_arguments)]
fn objective_over(
    config: GrpoConfig,
    logp: &[f32],
    old: &[f32],
    reference: &[f32],
    sampler: Option<&[f32]>,
    mask: &[f32],
    advantages: &[f64],
    t: usize,
) -> (f64, Vec<f32>) {
    let weights = aggregation_weights(mask, t, &config);
    let mut objective = GrpoObjective {
        config,
        old_logp: Some(old),
        ref_logp: reference,
        advantages,
        weights: &weights,
        t,
        sequence: Vec::new(),
        sampler_logp: sampler,
        sampler_sequence: Vec::new(),
    };
    objective.set_sampler_rows(old);
    if config.importance_sampling_level == ImportanceSamplingLevel::Sequence {
        objective.sequence = SequenceTerm::of_rows(&objective, logp);
    }
    let tokens: Vec<_> = logp
        .iter()
        .enumerate()
        .map(|(i, &lp)| objective.token(i, lp, 0.0))
        .collect();
    (
        tokens.iter().map(|t| t.loss).sum(),
        tokens.iter().map(|t| t.d_logp).collect(),
    )
}

/// kernels/tests/data/grpo_trl_options.json (written by TRL's own `_compute_loss`) and its fixed
/// inputs, flattened: log-probs, old, reference, mask, the sampler's log-probs, advantages, T.
struct TrlCases {
    data: Value,
    logp: Vec<f32>,
    old: Vec<f32>,
    reference: Vec<f32>,
    mask: Vec<f32>,
    sampler: Vec<f32>,
    advantages: Vec<f64>,
    t: usize,
}

fn trl_cases() -> TrlCases {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/grpo_trl_options.json");
    let data: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let inputs = &data["inputs"];
    let flat = |k: &str| -> Vec<f32> {
        matrix(&inputs[k])
            .into_iter()
            .flatten()
            .map(|x| x as f32)
            .collect()
    };
    TrlCases {
        logp: flat("logprobs"),
        old: flat("old_logprobs"),
        reference: flat("ref_logprobs"),
        mask: flat("mask"),
        sampler: flat("sampler_logprobs"),
        advantages: vector(&inputs["advantages"]),
        t: inputs["t"].as_u64().unwrap() as usize,
        data,
    }
}

/// The objective's settings a TRL case was run with (absent keys: r1's defaults).
fn trl_config(case: &Value) -> GrpoConfig {
    let mut config = GrpoConfig {
        epsilon_low: case["epsilon_low"].as_f64().unwrap(),
        epsilon_high: case["epsilon_high"].as_f64().unwrap(),
        beta: case["beta"].as_f64().unwrap(),
        loss_agg: serde_json::from_value(case["loss_agg"].clone()).unwrap(),
        max_completion_length: case["max_completion_length"].as_u64().unwrap() as usize,
        importance_sampling_level: serde_json::from_value(
            case["importance_sampling_level"].clone(),
        )
        .unwrap(),
        ..GrpoConfig::default()
    };
    if let Some(b) = case["use_bias_correction_kl"].as_bool() {
        config.use_bias_correction_kl = b;
    }
    if !case["sampler_is_mode"].is_null() {
        config.sampler_is_mode = serde_json::from_value(case["sampler_is_mode"].clone()).unwrap();
        config.sampler_is_min = case["sampler_is_min"].as_f64().unwrap();
        config.sampler_is_max = case["sampler_is_max"].as_f64().unwrap();
    }
    config
}

/// The loss within 1e-6 relative of TRL's, and every f32 d loss / d logp within 1e-6 of TRL's
/// largest component.
fn assert_matches_trl(label: &str, case: &Value, loss: f64, grads: &[f32]) {
    let want = case["loss"].as_f64().unwrap();
    assert!(
        (loss - want).abs() <= 1e-6 * want.abs().max(1e-3),
        "{label}: loss {loss} vs TRL {want}"
    );
    let want_grads: Vec<f64> = matrix(&case["grad_logprobs"])
        .into_iter()
        .flatten()
        .collect();
    let scale = want_grads.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(scale > 0.0, "{label}: TRL's gradient is all zero");
    for (i, (&g, &w)) in grads.iter().zip(&want_grads).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-6 * scale,
            "{label}: d loss / d logp[{i}] = {g} vs TRL {w}"
        );
    }
}

#[test]
fn gspo_and_the_bias_corrected_kl_match_trl() {
    let trl = trl_cases();
    let cases = trl.data["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 18, "every loss type x level x KL option");
    let mut sequence_cases = 0;
    for case in cases {
        let config = trl_config(case);
        if config.importance_sampling_level == ImportanceSamplingLevel::Sequence {
            sequence_cases += 1;
        }
        let label = format!(
            "{} {} bias_kl={} beta={}",
            case["loss_type"],
            case["importance_sampling_level"],
            config.use_bias_correction_kl,
            config.beta
        );
        let (loss, grads) = objective_over(
            config,
            &trl.logp,
            &trl.old,
            &trl.reference,
            None,
            &trl.mask,
            &trl.advantages,
            trl.t,
        );
        assert_matches_trl(&label, case, loss, &grads);
    }
    assert_eq!(sequence_cases, 9);
}

#[test]
fn the_sampler_correction_matches_trl_in_every_mode() {
    // TRL's `_compute_loss` with `vllm_importance_sampling_correction` on fixed tensors, in all
    // four `vllm_importance_sampling_mode`s, token and sequence (GSPO) policy ratios, β 0 and
    // 0.04: the weights themselves, the loss and d loss / d logp.
    let trl = trl_cases();
    let (logp, mask, t) = (&trl.logp, &trl.mask, trl.t);
    let cases = trl.data["sampler_cases"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        56,
        "7 mode/bound settings x 2 loss types x 2 levels x 2 betas"
    );
    let (mut cut, mut masked) = (0, 0);
    for case in cases {
        let config = trl_config(case);
        let label = format!(
            "{} {} {} [{}, {}] beta={}",
            case["loss_type"],
            case["importance_sampling_level"],
            case["sampler_is_mode"],
            config.sampler_is_min,
            config.sampler_is_max,
            config.beta
        );
        // The weights, token by token (a sequence mode's one per row, broadcast).
        let weights = aggregation_weights(mask, t, &config);
        let mut objective = GrpoObjective {
            config,
            old_logp: Some(&trl.old),
            ref_logp: &trl.reference,
            advantages: &trl.advantages,
            weights: &weights,
            t,
            sequence: Vec::new(),
            sampler_logp: Some(&trl.sampler),
            sampler_sequence: Vec::new(),
        };
        objective.set_sampler_rows(&trl.old);
        let want_w = matrix(&case["weights"]);
        for i in 0..logp.len() {
            if mask[i] == 0.0 {
                continue;
            }
            let (row, col) = (i / t, i % t);
            let want = want_w[row][if want_w[row].len() == 1 { 0 } else { col }];
            let got = objective.sampler_weight(i, logp[i]);
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{label}: weight of token {i} {got} vs TRL {want}"
            );
            masked += usize::from(want == 0.0);
            cut += usize::from(want == config.sampler_is_max || want == config.sampler_is_min);
        }
        let (loss, grads) = objective_over(
            config,
            logp,
            &trl.old,
            &trl.reference,
            Some(&trl.sampler),
            mask,
            &trl.advantages,
            t,
        );
        assert_matches_trl(&label, case, loss, &grads);
    }
    assert!(
        cut > 0 && masked > 0,
        "the cases truncate ({cut}) and mask ({masked})"
    );
}

#[test]
fn gspo_on_policy_gives_every_token_of_a_completion_the_same_gradient() {
    // On-policy (π_old = logπθ detached) the sequence ratio is 1 and, with β = 0, d loss / d logp
    // is −A_i · Σ_t w_t / |o_i| for every counted token of completion i: what TRL's GSPO gives.
    let t = 4;
    let mask = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let logp = [-0.5f32, -1.0, -2.0, 0.0, -0.3, -0.7, 0.0, 0.0];
    let advantages = [0.7, -0.7];
    let config = GrpoConfig {
        beta: 0.0,
        importance_sampling_level: ImportanceSamplingLevel::Sequence,
        ..GrpoConfig::default()
    };
    let weights = aggregation_weights(&mask, t, &config);
    let mut objective = GrpoObjective {
        config,
        old_logp: None,
        ref_logp: &[],
        advantages: &advantages,
        weights: &weights,
        t,
        sequence: Vec::new(),
        sampler_logp: None,
        sampler_sequence: Vec::new(),
    };
    objective.sequence = SequenceTerm::of_rows(&objective, &logp);
    assert!(objective.sequence.iter().all(|s| s.ratio == 1.0));
    for (i, &lp) in logp.iter().enumerate() {
        let row = i / t;
        let d = objective.token(i, lp, 0.0).d_logp as f64;
        if mask[i] == 0.0 {
            assert_eq!(d, 0.0);
            continue;
        }
        let n = mask[row * t..(row + 1) * t].iter().sum::<f32>() as f64;
        // seq-mean-token-mean over 2 rows: Σ_t w_t = 1/2 per row.
        let want = -advantages[row] * 0.5 / n;
        assert!((d - want).abs() < 1e-7, "token {i}: {d} vs {want}");
    }
}
