//! The LM head fused with its loss (llm.c's fused classifier): logits are computed a chunk of
//! tokens at a time, reduced to per-token log-prob and entropy, turned into d loss / d logits by a
//! per-token objective, and multiplied back — a full [tokens × vocab] tensor never exists.
//!
//! Every objective r1 trains with is a sum over tokens of a function of that token's log-prob of
//! its target (and optionally its entropy): cross-entropy, GRPO's clipped ratio + k3 KL, an
//! entropy bonus. So the head needs only d loss / d logp and d loss / d entropy per token:
//!   d logp / d z_j     = 1[j = target] − p_j
//!   d entropy / d z_j  = −p_j (log p_j + H)

use rayon::prelude::*;

use crate::cpu::fastmath;
use crate::cpu::gemm::{gemm, Mat, MatMut, Threads};
use crate::error::{EngineError, Result};

/// Logit floats per chunk (32 MiB): bounds head memory for any vocabulary, while keeping each
/// chunk's GEMM large enough to run near peak.
pub const HEAD_CHUNK_FLOATS: usize = 8 << 20;

/// One token's share of the loss and its derivatives.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenLoss {
    /// This token's contribution to the loss.
    pub loss: f64,
    /// d loss / d log p(target).
    pub d_logp: f32,
    /// d loss / d entropy.
    pub d_entropy: f32,
}

/// A loss that decomposes over tokens through log p(target) and entropy.
pub trait TokenObjective: Sync {
    /// The loss of token `index` (row of the batch, flattened) given its log-prob and entropy.
    fn token(&self, index: usize, logp: f32, entropy: f32) -> TokenLoss;
    /// Whether `token` reads the entropy (computing it costs one more pass over each row).
    fn uses_entropy(&self) -> bool {
        false
    }
    /// Whether token `index` can contribute to the loss. The head skips the others entirely
    /// (no logits, no gradient): in RL rows, the prompt and padding positions — a third of a
    /// short-completion step's head work. Their log-prob and entropy are reported as 0.
    fn counts(&self, _index: usize) -> bool {
        true
    }
}

/// Σ_t weight_t · (−log p(target_t)): masked cross-entropy when weight = mask / Σ mask.
pub struct WeightedCrossEntropy<'a> {
    /// Per-token weights; zero skips the token.
    pub weights: &'a [f32],
}

impl WeightedCrossEntropy<'_> {
    /// Weights that make the loss the mean over the tokens where `mask` is non-zero.
    pub fn mean_weights(mask: &[f32]) -> Vec<f32> {
        let total: f64 = mask.iter().map(|&m| m as f64).sum();
        if total == 0.0 {
            return vec![0.0; mask.len()];
        }
        mask.iter().map(|&m| (m as f64 / total) as f32).collect()
    }
}

impl TokenObjective for WeightedCrossEntropy<'_> {
    fn token(&self, index: usize, logp: f32, _entropy: f32) -> TokenLoss {
        let w = self.weights[index];
        TokenLoss {
            loss: -(w as f64) * logp as f64,
            d_logp: -w,
            d_entropy: 0.0,
        }
    }
}

/// What the head reports per token.
#[derive(Debug, Clone, Default)]
pub struct HeadOutput {
    /// log p(target) per token.
    pub logp: Vec<f32>,
    /// Entropy of the next-token distribution per token (empty unless asked for).
    pub entropy: Vec<f32>,
    /// Σ of the objective over tokens (0 without an objective).
    pub loss: f64,
}

#[inline(always)]
fn row_logsumexp_body(row: &[f32]) -> f64 {
    let max = fastmath::max16(row);
    max as f64 + fastmath::sum_exp(row, max).ln()
}

fastmath::multiversion! {
    /// log Σ_j e^(z_j) of one row of logits: exp in f32 (vectorised), sums in f64.
    fn row_logsumexp(row: &[f32]) -> f64 = row_logsumexp_body;
}

#[inline(always)]
fn row_expected_logit_body(row: &[f32], lse: f32) -> f64 {
    let mut total = 0.0f64;
    let mut block = [0f32; 256];
    for chunk in row.chunks(256) {
        for (b, &z) in block.iter_mut().zip(chunk) {
            *b = fastmath::exp(z - lse) * z;
        }
        total += fastmath::sum16(&block[..chunk.len()]) as f64;
    }
    total
}

fastmath::multiversion! {
    /// Σ_j p_j z_j of one row (entropy = lse − this).
    fn row_expected_logit(row: &[f32], lse: f32) -> f64 = row_expected_logit_body;
}

#[inline(always)]
fn row_gradient_body(row: &mut [f32], lse: f32, d_logp: f32, d_entropy: f32, entropy: f32) {
    for z in row.iter_mut() {
        let logp_j = *z - lse;
        let p = fastmath::exp(logp_j);
        *z = -d_logp * p - d_entropy * p * (logp_j + entropy);
    }
}

fastmath::multiversion! {
    /// Overwrites a row of logits with d loss / d logits, except the target's one-hot term
    /// (the caller adds d_logp at the target).
    fn row_gradient(row: &mut [f32], lse: f32, d_logp: f32, d_entropy: f32, entropy: f32) = row_gradient_body;
}

/// What one row of the head produced.
struct RowResult {
    loss: f64,
    has_grad: bool,
    logp: f32,
    entropy: f32,
}

/// Gradient outputs of the head: d loss / d hidden and d loss / d LM-head weight (accumulated).
pub struct HeadGrads<'a> {
    /// [N, C], accumulated.
    pub dxf: &'a mut [f32],
    /// [V, C], accumulated.
    pub dweight: &'a mut [f32],
}

/// Runs the LM head over xf[N, C] with weight[V, C] for the given targets. With `objective` and
/// `grads`, accumulates the objective's gradients; `want_entropy` adds per-token entropies to the
/// output. `scratch` is reused between calls (at most `HEAD_CHUNK_FLOATS` floats).
#[allow(clippy::too_many_arguments)]
pub fn lm_head(
    xf: &[f32],
    weight: &[f32],
    targets: &[u32],
    c: usize,
    v: usize,
    objective: Option<&dyn TokenObjective>,
    mut grads: Option<HeadGrads<'_>>,
    want_entropy: bool,
    scratch: &mut Vec<f32>,
) -> Result<HeadOutput> {
    let n = targets.len();
    if xf.len() != n * c || weight.len() != v * c {
        return Err(EngineError::Input(format!(
            "lm head: hidden has {} floats and weight {} for {n} tokens, C={c}, V={v}",
            xf.len(),
            weight.len()
        )));
    }
    if let Some((i, &bad)) = targets.iter().enumerate().find(|(_, &t)| t as usize >= v) {
        return Err(EngineError::Input(format!(
            "target {bad} at position {i} is outside the vocabulary of {v}"
        )));
    }
    let entropy_needed = want_entropy || objective.is_some_and(|o| o.uses_entropy());
    let mut out = HeadOutput {
        logp: vec![0.0; n],
        entropy: if entropy_needed {
            vec![0.0; n]
        } else {
            Vec::new()
        },
        loss: 0.0,
    };
    // The rows the objective counts, gathered when some are not: the head's three products then
    // run over those rows only.
    let selected: Option<Vec<usize>> = objective.and_then(|o| {
        let rows: Vec<usize> = (0..n).filter(|&i| o.counts(i)).collect();
        (rows.len() < n).then_some(rows)
    });
    let (gathered_x, gathered_targets);
    let (x_all, t_all): (&[f32], &[u32]) = match &selected {
        Some(rows) => {
            gathered_x = rows
                .iter()
                .flat_map(|&i| &xf[i * c..(i + 1) * c])
                .copied()
                .collect::<Vec<f32>>();
            gathered_targets = rows.iter().map(|&i| targets[i]).collect::<Vec<u32>>();
            (&gathered_x, &gathered_targets)
        }
        None => (xf, targets),
    };
    let m = t_all.len();
    let index_of = |k: usize| selected.as_ref().map_or(k, |rows| rows[k]);
    let rows_per_chunk = (HEAD_CHUNK_FLOATS / v).clamp(1, m.max(1));
    scratch.resize(rows_per_chunk * v, 0.0);
    let mut dx_chunk = if selected.is_some() && grads.is_some() {
        vec![0f32; rows_per_chunk * c]
    } else {
        Vec::new()
    };
    let mut start = 0;
    while start < m {
        let rows = rows_per_chunk.min(m - start);
        let logits = &mut scratch[..rows * v];
        let x = &x_all[start * c..(start + rows) * c];
        gemm(
            MatMut::rows(logits, rows, v, v),
            Mat::rows(x, rows, c, c),
            Mat::transposed(weight, c, v, c),
            1.0,
            false,
            Threads::All,
        );
        let do_grad = grads.is_some() && objective.is_some();
        // Per row: logsumexp, log p(target), entropy, then the objective and d loss / d logits in place.
        let rows_out: Vec<RowResult> = logits
            .par_chunks_mut(v)
            .enumerate()
            .map(|(r, row)| {
                let index = index_of(start + r);
                let target = t_all[start + r] as usize;
                let lse = row_logsumexp(row);
                let lp = (row[target] as f64 - lse) as f32;
                let entropy = if entropy_needed {
                    (lse - row_expected_logit(row, lse as f32)) as f32
                } else {
                    0.0
                };
                let Some(objective) = objective else {
                    return RowResult {
                        loss: 0.0,
                        has_grad: false,
                        logp: lp,
                        entropy,
                    };
                };
                let tl = objective.token(index, lp, entropy);
                let has_grad = do_grad && (tl.d_logp != 0.0 || tl.d_entropy != 0.0);
                if has_grad {
                    row_gradient(row, lse as f32, tl.d_logp, tl.d_entropy, entropy);
                    row[target] += tl.d_logp;
                } else if do_grad {
                    row.fill(0.0);
                }
                RowResult {
                    loss: tl.loss,
                    has_grad,
                    logp: lp,
                    entropy,
                }
            })
            .collect();
        for (r, result) in rows_out.iter().enumerate() {
            let index = index_of(start + r);
            out.logp[index] = result.logp;
            if entropy_needed {
                out.entropy[index] = result.entropy;
            }
        }
        out.loss += rows_out.iter().map(|r| r.loss).sum::<f64>();
        if let (Some(g), true) = (grads.as_mut(), rows_out.iter().any(|r| r.has_grad)) {
            let dlogits = &scratch[..rows * v];
            match &selected {
                None => gemm(
                    MatMut::rows(&mut g.dxf[start * c..(start + rows) * c], rows, c, c),
                    Mat::rows(dlogits, rows, v, v),
                    Mat::rows(weight, v, c, c),
                    1.0,
                    true,
                    Threads::All,
                ),
                Some(selected) => {
                    let dx = &mut dx_chunk[..rows * c];
                    gemm(
                        MatMut::rows(dx, rows, c, c),
                        Mat::rows(dlogits, rows, v, v),
                        Mat::rows(weight, v, c, c),
                        1.0,
                        false,
                        Threads::All,
                    );
                    for (r, d) in dx.chunks(c).enumerate() {
                        let i = selected[start + r];
                        for (acc, &x) in g.dxf[i * c..(i + 1) * c].iter_mut().zip(d) {
                            *acc += x;
                        }
                    }
                }
            }
            gemm(
                MatMut::rows(g.dweight, v, c, c),
                Mat::transposed(dlogits, v, rows, v),
                Mat::rows(x, rows, c, c),
                1.0,
                true,
                Threads::All,
            );
        }
        start += rows;
    }
    Ok(out)
}
