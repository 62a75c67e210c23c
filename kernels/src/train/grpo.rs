//! The GRPO objective of docs/DESIGN.md, exactly, as a per-token objective for the fused LM head.
//!
//! For a group of G completions of one prompt with rewards r_i:
//!   A_i = (r_i − mean(r)) / (std(r) + 1e-4)        (std with Bessel's correction; or no division)
//! and per token t of completion i, with ρ = exp(logπθ − logπold):
//!   ℓ = −min(ρ·A_i, clip(ρ, 1−ε_low, 1+ε_high)·A_i) + β·k3,   k3 = exp(logπref − logπθ) − (logπref − logπθ) − 1
//! aggregated by `LossAgg`. Gradients follow PyTorch's conventions (TRL's GRPOTrainer): the clip
//! passes no gradient outside its range, and at a tie of the two terms each gets half.
//!
//! Two options as TRL names them:
//! - `importance_sampling_level = "sequence"` (GSPO): ρ is one number per completion,
//!   exp(mean over its tokens of logπθ − logπold), shared by all its tokens; d ρ / d logπθ_t =
//!   ρ / |o_i|, so every token's gradient depends on its whole completion's log-probs: the
//!   learner computes them first ([`SequenceTerm::of_rows`]) and the head then applies them.
//! - `use_bias_correction_kl`: the k3 term is multiplied by ρ (not detached, as TRL), an
//!   importance-corrected estimate of the KL under the sampling policy.
//!
//! And the correction for a sampler that is not the learner (a bf16 sampler; TRL's
//! `vllm_importance_sampling_correction` for vLLM rollouts): with the sampler's log-probs
//! logπsampler, each token's policy term is multiplied by a detached weight
//! w = exp(logπold − logπsampler) (per token, or exp of its sum over the completion), truncated
//! to [min, max] or zeroed outside it (`SamplerIsMode`); the KL term is not weighted. This is
//! truncated importance sampling (TIS): the update estimates the gradient under the learner's
//! policy from tokens the sampler drew.

use serde::{Deserialize, Serialize};

use super::head::{TokenLoss, TokenObjective};

/// How per-token losses become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossAgg {
    /// The paper's 1/G Σ_i 1/|o_i| Σ_t: every completion weighs the same.
    SeqMeanTokenMean,
    /// DAPO: every token weighs the same.
    TokenMean,
    /// Dr. GRPO: the masked sum divided by (completions × max completion length).
    SeqMeanTokenSumNorm,
}

/// Whether advantages are divided by the group's standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleRewards {
    /// (r − mean) / (std + 1e-4), as the paper and TRL.
    Group,
    /// r − mean only (Dr. GRPO).
    None,
}

/// Whether the importance ratio is per token (GRPO) or per completion (GSPO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportanceSamplingLevel {
    /// ρ_t = exp(logπθ_t − logπold_t) per token.
    #[default]
    Token,
    /// ρ_i = exp(mean_t (logπθ_t − logπold_t)) per completion, shared by its tokens (GSPO).
    Sequence,
}

/// How the policy term is corrected for the sampler's log-probs differing from the learner's
/// (TRL's `vllm_importance_sampling_mode`); used only when the rollouts carry them (a sampler
/// that is not f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerIsMode {
    /// No correction (the mismatch is still reported).
    None,
    /// w_t = clamp(exp(logπold_t − logπsampler_t), min, max) per token: truncated IS (verl's
    /// default, TRL's `token_truncate`).
    #[default]
    TokenTruncate,
    /// w_t = exp(logπold_t − logπsampler_t), or 0 outside [min, max] (`token_mask`).
    TokenMask,
    /// One w per completion, exp of the sum of its tokens' differences, clamped
    /// (`sequence_truncate`).
    SequenceTruncate,
    /// One w per completion, 0 outside [min, max] (`sequence_mask`, TRL's default).
    SequenceMask,
}

impl SamplerIsMode {
    /// Whether one weight is shared by a completion's tokens.
    pub fn per_sequence(self) -> bool {
        matches!(
            self,
            SamplerIsMode::SequenceTruncate | SamplerIsMode::SequenceMask
        )
    }

    /// The weight for the ratio `r` under bounds [min, max], and whether it was cut.
    pub fn weight(self, r: f64, min: f64, max: f64) -> (f64, bool) {
        match self {
            SamplerIsMode::None => (1.0, false),
            SamplerIsMode::TokenTruncate | SamplerIsMode::SequenceTruncate => {
                let w = r.clamp(min, max);
                (w, w != r)
            }
            SamplerIsMode::TokenMask | SamplerIsMode::SequenceMask => {
                if r < min || r > max {
                    (0.0, true)
                } else {
                    (r, false)
                }
            }
        }
    }
}

/// The objective's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoConfig {
    /// Lower clip: ρ below 1 − ε_low stops helping negative advantages.
    pub epsilon_low: f64,
    /// Upper clip: ρ above 1 + ε_high stops helping positive advantages (clip-higher when > ε_low).
    pub epsilon_high: f64,
    /// Weight of the k3 KL to the reference policy inside the loss (0 drops the reference).
    pub beta: f64,
    /// Aggregation over tokens and completions.
    pub loss_agg: LossAgg,
    /// The configured completion limit (Dr. GRPO's normaliser).
    pub max_completion_length: usize,
    /// Token-level ratios (GRPO) or one per completion (GSPO); TRL's `importance_sampling_level`.
    pub importance_sampling_level: ImportanceSamplingLevel,
    /// Multiply the k3 KL term by ρ (TRL's `use_bias_correction_kl`).
    pub use_bias_correction_kl: bool,
    /// The correction for a sampler whose log-probs are not the learner's (bf16).
    pub sampler_is_mode: SamplerIsMode,
    /// Lower bound of the sampler weight (TRL's `vllm_importance_sampling_clip_min`; 0: none).
    pub sampler_is_min: f64,
    /// Upper bound of the sampler weight (`vllm_importance_sampling_clip_max`; TIS's C).
    pub sampler_is_max: f64,
}

impl Default for GrpoConfig {
    /// The paper's R1-Zero settings.
    fn default() -> Self {
        GrpoConfig {
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.001,
            loss_agg: LossAgg::SeqMeanTokenMean,
            max_completion_length: 1024,
            importance_sampling_level: ImportanceSamplingLevel::Token,
            use_bias_correction_kl: false,
            sampler_is_mode: SamplerIsMode::TokenTruncate,
            sampler_is_min: 0.0,
            sampler_is_max: 2.0,
        }
    }
}

impl GrpoConfig {
    /// The checks serde cannot make: bounds that are numbers, in order, ε's not negative.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.sampler_is_min >= 0.0
            && self.sampler_is_max > 0.0
            && self.sampler_is_min <= self.sampler_is_max)
        {
            return Err(format!(
                "sampler_is_min ({}) and sampler_is_max ({}) must satisfy 0 ≤ min ≤ max, max > 0",
                self.sampler_is_min, self.sampler_is_max
            ));
        }
        Ok(())
    }
}

/// Advantages of consecutive groups of `group_size` rewards. A group whose rewards are all
/// equal gets advantages of 0 (it carries no signal; see `zero_std_groups`).
pub fn group_advantages(rewards: &[f64], group_size: usize, scale: ScaleRewards) -> Vec<f64> {
    let mut out = Vec::with_capacity(rewards.len());
    for group in rewards.chunks(group_size.max(1)) {
        let n = group.len() as f64;
        let mean = group.iter().sum::<f64>() / n;
        let std = if group.len() > 1 {
            (group.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        for r in group {
            out.push(match scale {
                ScaleRewards::Group => (r - mean) / (std + 1e-4),
                ScaleRewards::None => r - mean,
            });
        }
    }
    out
}

/// Groups whose rewards are all equal (no learning signal): the `frac_zero_std` statistic.
pub fn zero_std_groups(rewards: &[f64], group_size: usize) -> usize {
    rewards
        .chunks(group_size.max(1))
        .filter(|g| g.iter().all(|r| *r == g[0]))
        .count()
}

/// The clipped surrogate −min(ρA, clip(ρ)A) and its derivative with respect to ρ.
fn surrogate(ratio: f64, advantage: f64, config: &GrpoConfig) -> (f64, f64) {
    let low = 1.0 - config.epsilon_low;
    let high = 1.0 + config.epsilon_high;
    let clipped = ratio.clamp(low, high);
    let unclipped_term = ratio * advantage;
    let clipped_term = clipped * advantage;
    // d(ρA)/dρ = A; d(clip(ρ)A)/dρ = A inside [low, high], else 0.
    let d_clipped = if (low..=high).contains(&ratio) {
        advantage
    } else {
        0.0
    };
    let (value, d) = if unclipped_term < clipped_term {
        (unclipped_term, advantage)
    } else if clipped_term < unclipped_term {
        (clipped_term, d_clipped)
    } else {
        (unclipped_term, 0.5 * (advantage + d_clipped))
    };
    (-value, -d)
}

/// k3 = exp(ref − logp) − (ref − logp) − 1 and d k3 / d logp.
fn k3(logp: f64, reference: f64) -> (f64, f64) {
    let diff = reference - logp;
    (diff.exp() - diff - 1.0, 1.0 - diff.exp())
}

/// One token's loss and d loss / d logπθ at token level, before aggregation weights. f64
/// throughout.
pub fn token_loss(
    logp: f64,
    old: f64,
    reference: f64,
    advantage: f64,
    config: &GrpoConfig,
) -> (f64, f64) {
    token_loss_weighted(logp, old, reference, advantage, 1.0, config)
}

/// [`token_loss`] with the policy term multiplied by the detached sampler weight `sampler_w`.
pub fn token_loss_weighted(
    logp: f64,
    old: f64,
    reference: f64,
    advantage: f64,
    sampler_w: f64,
    config: &GrpoConfig,
) -> (f64, f64) {
    let ratio = (logp - old).exp();
    let (s, ds) = surrogate(ratio, advantage, config);
    // d ρ / d logp = ρ.
    let mut loss = s * sampler_w;
    let mut d = ds * ratio * sampler_w;
    if config.beta != 0.0 {
        let (kl, dkl) = k3(logp, reference);
        if config.use_bias_correction_kl {
            loss += config.beta * kl * ratio;
            d += config.beta * (dkl * ratio + kl * ratio);
        } else {
            loss += config.beta * kl;
            d += config.beta * dkl;
        }
    }
    (loss, d)
}

/// What a completion's tokens share at sequence level (GSPO): its ratio and the part of
/// d loss / d logπθ_t that flows through the ratio (the same for each of its counted tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SequenceTerm {
    /// ρ_i = exp(mean over counted tokens of logπθ − logπold).
    pub ratio: f64,
    /// Σ_t w_t · d ℓ_t / d ρ_i · ρ_i / |o_i|: added to each counted token's gradient.
    pub through_ratio: f64,
}

impl SequenceTerm {
    /// The terms of every row of `objective` given the current log-probs of its tokens
    /// (`logp`, [rows, T]); counted tokens are those with a non-zero aggregation weight.
    pub fn of_rows(objective: &GrpoObjective<'_>, logp: &[f32]) -> Vec<SequenceTerm> {
        let t = objective.t.max(1);
        let config = &objective.config;
        logp.chunks(t)
            .enumerate()
            .map(|(row, lp)| {
                let base = row * t;
                let counted: Vec<usize> = (0..lp.len())
                    .filter(|&j| objective.weights[base + j] != 0.0)
                    .collect();
                let n = (counted.len() as f64).max(1.0);
                let log_ratio: f64 = counted
                    .iter()
                    .map(|&j| lp[j] as f64 - objective.old_at(base + j, lp[j]))
                    .sum::<f64>()
                    / n;
                let ratio = log_ratio.exp();
                let (_, ds) = surrogate(ratio, objective.advantages[row], config);
                let mut d_ratio = 0.0;
                for &j in &counted {
                    let w = objective.weights[base + j];
                    d_ratio += w * ds * objective.sampler_weight(base + j, lp[j]);
                    if config.beta != 0.0 && config.use_bias_correction_kl {
                        let (kl, _) = k3(lp[j] as f64, objective.ref_logp[base + j] as f64);
                        d_ratio += w * config.beta * kl;
                    }
                }
                SequenceTerm {
                    ratio,
                    through_ratio: d_ratio * ratio / n,
                }
            })
            .collect()
    }
}

/// Per-token aggregation weights for rows of completion tokens: `mask` is [rows, T] (1 for a
/// completion token that counts, 0 for prompt, padding or masked truncation).
pub fn aggregation_weights(mask: &[f32], t: usize, config: &GrpoConfig) -> Vec<f64> {
    let rows = mask.len() / t.max(1);
    let total_tokens: f64 = mask.iter().map(|&m| m as f64).sum();
    let mut weights = vec![0.0; mask.len()];
    for (w, m) in weights.chunks_mut(t).zip(mask.chunks(t)) {
        let row_tokens: f64 = m.iter().map(|&x| x as f64).sum();
        let denominator = match config.loss_agg {
            LossAgg::SeqMeanTokenMean => row_tokens * rows as f64,
            LossAgg::TokenMean => total_tokens,
            LossAgg::SeqMeanTokenSumNorm => (rows * config.max_completion_length) as f64,
        };
        for (w, &m) in w.iter_mut().zip(m) {
            *w = if m != 0.0 && denominator > 0.0 {
                m as f64 / denominator
            } else {
                0.0
            };
        }
    }
    weights
}

/// The GRPO loss over a batch of completion tokens, for `cpu::head`. All slices are indexed by
/// token (row-major [rows, T]); `advantage` by row.
pub struct GrpoObjective<'a> {
    /// Objective settings.
    pub config: GrpoConfig,
    /// log π_old of each token (the policy that sampled, recomputed); `None` when the policy
    /// being trained *is* the one that sampled (one minibatch, one epoch): π_old is then logπθ
    /// detached, so ρ = 1 exactly and d ρ / d logπθ = 1, with no second forward pass.
    pub old_logp: Option<&'a [f32]>,
    /// log π_ref of each token (unused when β = 0).
    pub ref_logp: &'a [f32],
    /// A_i per row.
    pub advantages: &'a [f64],
    /// Aggregation weight per token (`aggregation_weights`), 0 where the token does not count.
    pub weights: &'a [f64],
    /// Tokens per row.
    pub t: usize,
    /// Per row at sequence level: [`SequenceTerm::of_rows`] of the log-probs this objective will
    /// see; empty at token level.
    pub sequence: Vec<SequenceTerm>,
    /// log π_sampler of each token, when the sampler is not the learner (bf16): the policy term
    /// is then weighted by `config.sampler_is_mode`. `None`: no correction.
    pub sampler_logp: Option<&'a [f32]>,
    /// Per row, the sampler weight of a per-sequence `sampler_is_mode`
    /// ([`GrpoObjective::sampler_rows`]); empty otherwise.
    pub sampler_sequence: Vec<f64>,
}

impl TokenObjective for GrpoObjective<'_> {
    fn counts(&self, index: usize) -> bool {
        self.weights[index] != 0.0
    }

    fn token(&self, index: usize, logp: f32, _entropy: f32) -> TokenLoss {
        let w = self.weights[index];
        if w == 0.0 {
            return TokenLoss::default();
        }
        let reference = if self.config.beta != 0.0 {
            self.ref_logp[index] as f64
        } else {
            0.0
        };
        let advantage = self.advantages[index / self.t];
        let sampler_w = self.sampler_weight(index, logp);
        let (loss, d) = match self.config.importance_sampling_level {
            ImportanceSamplingLevel::Token => token_loss_weighted(
                logp as f64,
                self.old_at(index, logp),
                reference,
                advantage,
                sampler_w,
                &self.config,
            ),
            ImportanceSamplingLevel::Sequence => {
                let term = self.sequence[index / self.t];
                let (s, _) = surrogate(term.ratio, advantage, &self.config);
                let (mut loss, mut d) = (s * sampler_w, 0.0);
                if self.config.beta != 0.0 {
                    let (kl, dkl) = k3(logp as f64, reference);
                    let scale = if self.config.use_bias_correction_kl {
                        term.ratio
                    } else {
                        1.0
                    };
                    loss += self.config.beta * kl * scale;
                    d += self.config.beta * dkl * scale;
                }
                // The ratio's share arrives unweighted: it already sums w_t over the row.
                return TokenLoss {
                    loss: w * loss,
                    d_logp: (w * d + term.through_ratio) as f32,
                    d_entropy: 0.0,
                };
            }
        };
        TokenLoss {
            loss: w * loss,
            d_logp: (w * d) as f32,
            d_entropy: 0.0,
        }
    }
}

/// The sampler–learner mismatch of a minibatch (or a step): |logπold − logπsampler| over
/// counted tokens, and the sampler weights (per token, or per completion in a sequence mode).
/// With `SamplerIsMode::None` the weights are the raw ratios, reported only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplerMismatch {
    /// Counted tokens compared.
    pub tokens: usize,
    /// Mean |logπold − logπsampler|.
    pub logp_diff_mean: f64,
    /// Largest |logπold − logπsampler|.
    pub logp_diff_max: f64,
    /// Smallest weight.
    pub is_min: f64,
    /// Mean weight.
    pub is_mean: f64,
    /// Largest weight.
    pub is_max: f64,
    /// Share of weights truncated or masked.
    pub is_cut_fraction: f64,
}

impl SamplerMismatch {
    /// The step's figures from its minibatches': token-weighted means, extremes over all.
    pub fn combine(parts: &[SamplerMismatch]) -> Option<SamplerMismatch> {
        let n: usize = parts.iter().map(|p| p.tokens).sum();
        if parts.is_empty() {
            return None;
        }
        let w = |f: fn(&SamplerMismatch) -> f64| -> f64 {
            parts.iter().map(|p| f(p) * p.tokens as f64).sum::<f64>() / (n.max(1) as f64)
        };
        Some(SamplerMismatch {
            tokens: n,
            logp_diff_mean: w(|p| p.logp_diff_mean),
            logp_diff_max: parts.iter().map(|p| p.logp_diff_max).fold(0.0, f64::max),
            is_min: parts
                .iter()
                .filter(|p| p.tokens > 0)
                .map(|p| p.is_min)
                .reduce(f64::min)
                .unwrap_or(0.0),
            is_mean: w(|p| p.is_mean),
            is_max: parts.iter().map(|p| p.is_max).fold(0.0, f64::max),
            is_cut_fraction: w(|p| p.is_cut_fraction),
        })
    }
}

/// What the learner reports about one GRPO minibatch, from the log-probs it trained on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpoTokenStats {
    /// Share of counted tokens whose clipped term was active below (ρ < 1 − ε_low, A < 0).
    pub clip_low_fraction: f64,
    /// Share of counted tokens whose clipped term was active above (ρ > 1 + ε_high, A > 0).
    pub clip_high_fraction: f64,
    /// Mean k3 KL to the reference over counted tokens.
    pub kl_mean: f64,
    /// Mean ρ over counted tokens.
    pub ratio_mean: f64,
}

impl GrpoObjective<'_> {
    /// log π_old of token `index` whose current log-prob is `logp` (itself when on-policy).
    pub fn old_at(&self, index: usize, logp: f32) -> f64 {
        self.old_logp.map_or(logp, |old| old[index]) as f64
    }

    /// The detached weight of token `index`'s policy term for the sampler mismatch (1 without
    /// sampler log-probs or with `SamplerIsMode::None`).
    pub fn sampler_weight(&self, index: usize, logp: f32) -> f64 {
        let Some(sampler) = self.sampler_logp else {
            return 1.0;
        };
        let mode = self.config.sampler_is_mode;
        if mode.per_sequence() {
            return self.sampler_sequence[index / self.t.max(1)];
        }
        let r = (self.old_at(index, logp) - sampler[index] as f64).exp();
        let c = &self.config;
        mode.weight(r, c.sampler_is_min, c.sampler_is_max).0
    }

    /// Whether the weights need the log-probs of the pass being trained before the head runs:
    /// a per-sequence sampler weight when π_old is that pass's own (on-policy).
    pub fn sampler_needs_current(&self) -> bool {
        self.sampler_logp.is_some()
            && self.config.sampler_is_mode.per_sequence()
            && self.old_logp.is_none()
    }

    /// Per row, the sampler ratio exp(Σ_t (logπold_t − logπsampler_t)) over its counted tokens
    /// before truncation, given the current log-probs `logp` ([rows, T]; read only on-policy).
    /// Empty without sampler log-probs.
    pub fn sampler_ratios(&self, logp: &[f32]) -> Vec<f64> {
        let Some(sampler) = self.sampler_logp else {
            return Vec::new();
        };
        let t = self.t.max(1);
        (0..self.weights.len() / t)
            .map(|row| {
                (row * t..(row + 1) * t)
                    .filter(|&i| self.weights[i] != 0.0)
                    .map(|i| self.old_at(i, logp[i]) - sampler[i] as f64)
                    .sum::<f64>()
                    .exp()
            })
            .collect()
    }

    /// Sets `sampler_sequence` from the current log-probs when the mode is per sequence.
    pub fn set_sampler_rows(&mut self, logp: &[f32]) {
        if self.sampler_logp.is_some() && self.config.sampler_is_mode.per_sequence() {
            let c = self.config;
            self.sampler_sequence = self
                .sampler_ratios(logp)
                .into_iter()
                .map(|r| {
                    c.sampler_is_mode
                        .weight(r, c.sampler_is_min, c.sampler_is_max)
                        .0
                })
                .collect();
        }
    }

    /// How far the sampler's log-probs were from π_old's over the counted tokens, and what the
    /// weights did (TRL's `sampling/sampling_logp_difference/*` and
    /// `sampling/importance_sampling_ratio/*`). `None` without sampler log-probs.
    pub fn sampler_mismatch(&self, logp: &[f32]) -> Option<SamplerMismatch> {
        let sampler = self.sampler_logp?;
        let c = &self.config;
        let mut m = SamplerMismatch {
            is_min: f64::INFINITY,
            ..SamplerMismatch::default()
        };
        let (mut n, mut weights, mut w_sum, mut cut) = (0.0, 0.0f64, 0.0, 0.0);
        let mut add_weight = |r: f64, m: &mut SamplerMismatch| {
            let (w, was_cut) = c
                .sampler_is_mode
                .weight(r, c.sampler_is_min, c.sampler_is_max);
            let w = if c.sampler_is_mode == SamplerIsMode::None {
                r
            } else {
                w
            };
            m.is_min = m.is_min.min(w);
            m.is_max = m.is_max.max(w);
            w_sum += w;
            weights += 1.0;
            cut += f64::from(u8::from(was_cut));
        };
        for (i, &lp) in logp.iter().enumerate() {
            if self.weights[i] == 0.0 {
                continue;
            }
            let diff = self.old_at(i, lp) - sampler[i] as f64;
            n += 1.0;
            m.logp_diff_mean += diff.abs();
            m.logp_diff_max = m.logp_diff_max.max(diff.abs());
            if !c.sampler_is_mode.per_sequence() {
                add_weight(diff.exp(), &mut m);
            }
        }
        if c.sampler_is_mode.per_sequence() {
            let t = self.t.max(1);
            for (row, r) in self.sampler_ratios(logp).into_iter().enumerate() {
                if (row * t..(row + 1) * t).any(|i| self.weights[i] != 0.0) {
                    add_weight(r, &mut m);
                }
            }
        }
        if n == 0.0 {
            return Some(SamplerMismatch::default());
        }
        m.tokens = n as usize;
        m.logp_diff_mean /= n;
        m.is_mean = w_sum / weights.max(1.0);
        m.is_cut_fraction = cut / weights.max(1.0);
        Some(m)
    }

    /// Statistics of this minibatch given the log-probs the head computed.
    pub fn stats(&self, logp: &[f32]) -> GrpoTokenStats {
        let (mut n, mut low, mut high, mut kl, mut ratio_sum) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (i, &lp) in logp.iter().enumerate() {
            if self.weights[i] == 0.0 {
                continue;
            }
            let a = self.advantages[i / self.t];
            let ratio = match self.sequence.get(i / self.t) {
                Some(term) => term.ratio,
                None => (lp as f64 - self.old_at(i, lp)).exp(),
            };
            n += 1.0;
            ratio_sum += ratio;
            if ratio < 1.0 - self.config.epsilon_low && a < 0.0 {
                low += 1.0;
            }
            if ratio > 1.0 + self.config.epsilon_high && a > 0.0 {
                high += 1.0;
            }
            let diff = self.ref_logp.get(i).map_or(0.0, |&r| r as f64 - lp as f64);
            kl += diff.exp() - diff - 1.0;
        }
        if n == 0.0 {
            return GrpoTokenStats::default();
        }
        GrpoTokenStats {
            clip_low_fraction: low / n,
            clip_high_fraction: high / n,
            kl_mean: kl / n,
            ratio_mean: ratio_sum / n,
        }
    }
}
