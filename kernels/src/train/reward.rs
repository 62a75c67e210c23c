//! The reward model's scalar head and its losses.
//!
//! Shape legend: B = sequences, T = padded length, C = channels.
//!
//! - `score_positions`: which token of each sequence is scored: the last one that is not the pad
//!   id (transformers' rule, so a padded batch scores as each sequence alone), or the last token
//!   when there is no pad id.
//! - `reward_forward` / `reward_backward`: r_b = score · xf[b, pos_b], through the CPU transformer;
//!   the backward writes d r into the arena's hidden-state gradient and runs the transformer's
//!   backward, accumulating (`+=`) into the flat gradient buffer, score head included.
//! - `bradley_terry`: mean over pairs of −log σ(r_chosen − r_rejected); `pointwise_bce`: mean
//!   binary cross-entropy of σ(r) against 0/1 labels (safety labels); both with their gradients.

use crate::cpu::{self, Activations};
use crate::error::{EngineError, Result};
use crate::model::RewardModel;

/// The scored position of each sequence (unpadded `rows`), by transformers' rule: the last token
/// that is not `pad` (position 0 if every token is `pad`); the last token when `pad` is `None`.
pub fn score_positions(rows: &[&[u32]], pad: Option<u32>) -> Vec<usize> {
    rows.iter()
        .map(|ids| match pad {
            Some(p) => ids.iter().rposition(|&id| id != p).unwrap_or(0),
            None => ids.len().saturating_sub(1),
        })
        .collect()
}

/// Lays `rows` out as a right-padded [B, T] batch (T = longest row; pad id, or 0 without one) and
/// returns it with T. Causal attention makes right padding invisible to the real tokens.
pub fn pad_rows(rows: &[&[u32]], pad: Option<u32>) -> (Vec<u32>, usize) {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![pad.unwrap_or(0); rows.len() * t];
    for (b, row) in rows.iter().enumerate() {
        ids[b * t..b * t + row.len()].copy_from_slice(row);
    }
    (ids, t)
}

fn check_positions(acts: &Activations, positions: &[usize]) -> Result<()> {
    if positions.len() != acts.b {
        return Err(EngineError::Input(format!(
            "reward head: {} positions for a batch of {}",
            positions.len(),
            acts.b
        )));
    }
    if let Some((b, &p)) = positions.iter().enumerate().find(|(_, &p)| p >= acts.t) {
        return Err(EngineError::Input(format!(
            "reward head: position {p} of sequence {b} is outside {} tokens",
            acts.t
        )));
    }
    Ok(())
}

/// The reward of each sequence of `ids` [B, T] at `positions` [B]. Leaves the activations in
/// `acts` for `reward_backward`.
pub fn reward_forward(
    rm: &RewardModel,
    acts: &mut Activations,
    ids: &[u32],
    positions: &[usize],
) -> Result<Vec<f32>> {
    check_positions(acts, positions)?;
    cpu::forward(&rm.model, acts, ids)?;
    let c = rm.hidden_size();
    let w = rm.score_weight();
    let xf = acts.hidden();
    Ok(positions
        .iter()
        .enumerate()
        .map(|(b, &p)| {
            let row = &xf[(b * acts.t + p) * c..(b * acts.t + p + 1) * c];
            row.iter().zip(w).map(|(x, w)| x * w).sum()
        })
        .collect())
}

/// Backpropagates d loss / d r_b (`d_rewards` [B]) from the last `reward_forward` through the score
/// head and the transformer, accumulating into `grads` (the reward model's flat layout).
pub fn reward_backward(
    rm: &RewardModel,
    acts: &mut Activations,
    ids: &[u32],
    positions: &[usize],
    d_rewards: &[f32],
    grads: &mut [f32],
) -> Result<()> {
    check_positions(acts, positions)?;
    if d_rewards.len() != positions.len() || grads.len() != rm.model.layout.total {
        return Err(EngineError::Input(format!(
            "reward backward: {} reward gradients for {} sequences, {} gradient floats for {} parameters",
            d_rewards.len(),
            positions.len(),
            grads.len(),
            rm.model.layout.total
        )));
    }
    let c = rm.hidden_size();
    let t = acts.t;
    // d score = Σ_b d r_b · xf[b, pos_b], read before the hidden-state gradient is written.
    let dscore = &mut grads[rm.score..rm.score + c];
    for (b, (&p, &d)) in positions.iter().zip(d_rewards).enumerate() {
        let row = &acts.hidden()[(b * t + p) * c..(b * t + p + 1) * c];
        for (g, x) in dscore.iter_mut().zip(row) {
            *g += d * x;
        }
    }
    let w = rm.score_weight().to_vec();
    let dxf = acts.hidden_grad_mut();
    dxf.fill(0.0);
    for (b, (&p, &d)) in positions.iter().zip(d_rewards).enumerate() {
        for (g, w) in dxf[(b * t + p) * c..(b * t + p + 1) * c].iter_mut().zip(&w) {
            *g = d * w;
        }
    }
    cpu::backward(&rm.model, acts, ids, grads)
}

/// A loss over rewards with its gradient.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RewardLoss {
    /// The mean loss.
    pub loss: f64,
    /// d loss / d r per reward of the first input (chosen, or the point-wise rewards).
    pub d_first: Vec<f32>,
    /// d loss / d r per rejected reward (empty for the point-wise loss).
    pub d_second: Vec<f32>,
}

/// log(1 + e^x) without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// σ(x) without overflow.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Bradley–Terry: mean over pairs of −log σ(r_chosen − r_rejected) = softplus(r_rejected − r_chosen).
pub fn bradley_terry(chosen: &[f32], rejected: &[f32]) -> RewardLoss {
    let n = chosen.len().min(rejected.len()).max(1) as f64;
    let mut out = RewardLoss::default();
    for (&c, &r) in chosen.iter().zip(rejected) {
        let margin = c as f64 - r as f64;
        out.loss += softplus(-margin) / n;
        // d/dm softplus(−m) = −σ(−m).
        let d = -sigmoid(-margin) / n;
        out.d_first.push(d as f32);
        out.d_second.push(-d as f32);
    }
    out
}

/// Point-wise: mean binary cross-entropy of σ(r) against `labels` (1 safe/good, 0 unsafe/bad;
/// soft labels in between are allowed).
pub fn pointwise_bce(rewards: &[f32], labels: &[f32]) -> RewardLoss {
    let n = rewards.len().min(labels.len()).max(1) as f64;
    let mut out = RewardLoss::default();
    for (&r, &y) in rewards.iter().zip(labels) {
        let (r, y) = (r as f64, y as f64);
        // −y log σ(r) − (1−y) log(1−σ(r)) = y·softplus(−r) + (1−y)·softplus(r).
        out.loss += (y * softplus(-r) + (1.0 - y) * softplus(r)) / n;
        out.d_first.push(((sigmoid(r) - y) / n) as f32);
    }
    out
}

/// Share of pairs whose chosen reward is strictly above the rejected one (a tie counts wrong).
pub fn pairwise_accuracy(chosen: &[f32], rejected: &[f32]) -> f64 {
    let n = chosen.len().min(rejected.len());
    if n == 0 {
        return 0.0;
    }
    chosen.iter().zip(rejected).filter(|(c, r)| c > r).count() as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_match_their_definitions_and_finite_differences() {
        let (c, r) = ([1.5f32, -0.3, 20.0], [0.5f32, 0.4, -30.0]);
        let bt = bradley_terry(&c, &r);
        let direct: f64 = c
            .iter()
            .zip(&r)
            .map(|(&c, &r)| -(sigmoid(c as f64 - r as f64)).ln())
            .sum::<f64>()
            / 3.0;
        assert!((bt.loss - direct).abs() < 1e-12, "{} {direct}", bt.loss);
        let h = 1e-3f32;
        for i in 0..3 {
            let mut up = c;
            up[i] += h;
            let mut down = c;
            down[i] -= h;
            // The step actually taken in f32 (20 ± 1e-3 rounds).
            let step = (up[i] - down[i]) as f64;
            let numeric = (bradley_terry(&up, &r).loss - bradley_terry(&down, &r).loss) / step;
            assert!((numeric - bt.d_first[i] as f64).abs() < 1e-4);
            assert_eq!(bt.d_second[i], -bt.d_first[i]);
        }
        let labels = [1.0f32, 0.0, 0.3];
        let bce = pointwise_bce(&c, &labels);
        for i in 0..3 {
            let mut up = c;
            up[i] += h;
            let mut down = c;
            down[i] -= h;
            let step = (up[i] - down[i]) as f64;
            let numeric =
                (pointwise_bce(&up, &labels).loss - pointwise_bce(&down, &labels).loss) / step;
            assert!((numeric - bce.d_first[i] as f64).abs() < 1e-4);
        }
        assert!(bt.loss.is_finite() && bce.loss.is_finite());
        assert!((pairwise_accuracy(&c, &r) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn pooling_follows_transformers_last_non_pad_rule() {
        let rows: [&[u32]; 3] = [&[5, 6, 7], &[5, 0, 0], &[0, 0]];
        assert_eq!(score_positions(&rows, Some(0)), vec![2, 0, 0]);
        assert_eq!(score_positions(&rows, None), vec![2, 2, 1]);
        let (ids, t) = pad_rows(&rows, Some(9));
        assert_eq!(t, 3);
        assert_eq!(ids, vec![5, 6, 7, 5, 0, 0, 0, 0, 9]);
    }
}
