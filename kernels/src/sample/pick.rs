//! Choosing the next token from a row of logits: temperature, top-k, top-p (nucleus) and min-p,
//! with the sequence's own seeded RNG, and the two log-probs the trainer needs.

use rand::Rng;

use crate::cpu::fastmath;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How tokens are drawn. `temperature == 0` is greedy decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingParams {
    /// Softmax temperature; 0 picks the argmax.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability sums to at least this (1 keeps all).
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 keeps all).
    pub top_k: usize,
    /// Drop tokens less likely than `min_p` × the most likely one (0 keeps all).
    pub min_p: f32,
    /// Generated tokens after which a sequence stops with `FinishReason::Length`.
    pub max_new_tokens: usize,
    /// Texts that end a sequence when they appear in its completion (e.g. `</answer>`).
    pub stop_strings: Vec<String>,
    /// Token ids that end a sequence besides the model's end-of-sequence ids.
    pub stop_token_ids: Vec<u32>,
    /// Keep going past end-of-sequence ids (benchmarks).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 256,
            stop_strings: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl SamplingParams {
    /// Checks the ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.max_new_tokens == 0 {
            return Err("max_new_tokens must be at least 1".into());
        }
        if self.stop_strings.iter().any(|s| s.is_empty()) {
            return Err("stop_strings must not contain an empty string".into());
        }
        Ok(())
    }
}

/// The chosen token and its log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    /// The token id.
    pub token: u32,
    /// log π_sample(token): under the distribution actually sampled from (after temperature and
    /// truncation); 0 for greedy.
    pub sampling_logprob: f32,
    /// log π(token) under the raw model (temperature 1, nothing truncated): what the learner
    /// recomputes.
    pub raw_logprob: f32,
}

/// Picks the next token from `logits` [V]. `order` is scratch for truncation (reused).
pub fn pick(
    logits: &[f32],
    params: &SamplingParams,
    rng: &mut ChaCha8Rng,
    order: &mut Vec<u32>,
) -> Pick {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z));
    let lse = max as f64 + fastmath::sum_exp(logits, max).ln();
    let raw = |t: usize| (logits[t] as f64 - lse) as f32;
    if params.temperature == 0.0 {
        // First index of the maximum, so ties break the same way everywhere.
        let token = logits.iter().position(|&z| z == max).unwrap_or(0);
        return Pick {
            token: token as u32,
            sampling_logprob: 0.0,
            raw_logprob: raw(token),
        };
    }
    let inv_t = 1.0 / params.temperature as f64;
    // Weights exp((z − max)/T) in f64; truncation works on candidate lists sorted by logit.
    order.clear();
    order.extend(0..logits.len() as u32);
    let by_logit = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let truncating = params.top_k > 0 || params.top_p < 1.0 || params.min_p > 0.0;
    if truncating {
        if params.top_k > 0 && params.top_k < order.len() {
            order.select_nth_unstable_by(params.top_k - 1, by_logit);
            order.truncate(params.top_k);
        }
        order.sort_unstable_by(by_logit);
        if params.min_p > 0.0 {
            // p_j ≥ min_p · p_max  ⇔  (z_j − max)/T ≥ ln(min_p)
            let floor = (params.min_p as f64).ln();
            let keep = order
                .iter()
                .take_while(|&&t| (logits[t as usize] - max) as f64 * inv_t >= floor)
                .count();
            order.truncate(keep.max(1));
        }
        if params.top_p < 1.0 {
            let total: f64 = order
                .iter()
                .map(|&t| fastmath::exp(((logits[t as usize] - max) as f64 * inv_t) as f32) as f64)
                .sum();
            let mut cumulative = 0.0;
            let mut keep = order.len();
            for (n, &t) in order.iter().enumerate() {
                cumulative += fastmath::exp(((logits[t as usize] - max) as f64 * inv_t) as f32)
                    as f64
                    / total;
                if cumulative >= params.top_p as f64 {
                    keep = n + 1;
                    break;
                }
            }
            order.truncate(keep);
        }
    }
    let weight = |t: u32| fastmath::exp(((logits[t as usize] - max) as f64 * inv_t) as f32) as f64;
    let total: f64 = order.iter().map(|&t| weight(t)).sum();
    let u: f64 = rng.random::<f64>() * total;
    let mut cumulative = 0.0;
    let mut token = *order.last().unwrap_or(&0);
    for &t in order.iter() {
        cumulative += weight(t);
        if u < cumulative {
            token = t;
            break;
        }
    }
    let sampling_logprob = (weight(token) / total).ln() as f32;
    Pick {
        token,
        sampling_logprob,
        raw_logprob: raw(token as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn draw(logits: &[f32], params: &SamplingParams, n: usize) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut order = Vec::new();
        (0..n)
            .map(|_| pick(logits, params, &mut rng, &mut order).token)
            .collect()
    }

    #[test]
    fn greedy_takes_the_argmax_and_reports_its_raw_logprob() {
        let logits = [0.0, 2.0, 1.0, 2.0];
        let p = pick(
            &logits,
            &SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            &mut ChaCha8Rng::seed_from_u64(0),
            &mut Vec::new(),
        );
        assert_eq!(p.token, 1, "first maximum wins ties");
        let lse = logits
            .iter()
            .map(|z: &f32| (*z as f64).exp())
            .sum::<f64>()
            .ln();
        assert!((p.raw_logprob as f64 - (2.0 - lse)).abs() < 1e-6);
        assert_eq!(p.sampling_logprob, 0.0);
    }

    #[test]
    fn truncation_rules_keep_only_what_they_promise() {
        let logits = [3.0, 2.0, 1.0, 0.0, -1.0];
        let top_k = SamplingParams {
            top_k: 2,
            ..Default::default()
        };
        assert!(draw(&logits, &top_k, 400).iter().all(|&t| t < 2));
        // Probabilities ≈ .64 .24 .09 .03 .01: top_p 0.8 keeps the first two.
        let top_p = SamplingParams {
            top_p: 0.8,
            ..Default::default()
        };
        let drawn = draw(&logits, &top_p, 400);
        assert!(drawn.iter().all(|&t| t < 2) && drawn.contains(&1));
        // min_p 0.1 keeps tokens with p ≥ 0.064: the first three.
        let min_p = SamplingParams {
            min_p: 0.1,
            ..Default::default()
        };
        let drawn = draw(&logits, &min_p, 1000);
        assert!(drawn.iter().all(|&t| t < 3) && drawn.contains(&2));
    }

    #[test]
    fn sampling_follows_the_tempered_distribution_and_reports_its_logprob() {
        let logits = [1.0f32, 0.0];
        let params = SamplingParams {
            temperature: 0.5,
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut order = Vec::new();
        let n = 20_000;
        let mut zeros = 0;
        for _ in 0..n {
            let p = pick(&logits, &params, &mut rng, &mut order);
            let want = if p.token == 0 {
                (1.0f64 / (1.0 + (-2.0f64).exp())).ln()
            } else {
                (1.0f64 / (1.0 + 2.0f64.exp())).ln()
            };
            assert!((p.sampling_logprob as f64 - want).abs() < 1e-6);
            zeros += (p.token == 0) as usize;
        }
        let expected = 1.0 / (1.0 + (-2.0f64).exp()); // ≈ 0.881
        assert!(((zeros as f64 / n as f64) - expected).abs() < 0.01);
    }

    #[test]
    fn invalid_params_are_named() {
        assert!(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .contains("top_p"));
        assert!(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .contains("temperature"));
        assert!(SamplingParams {
            max_new_tokens: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .contains("max_new_tokens"));
    }
}
