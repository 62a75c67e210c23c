//! AdamW with decoupled weight decay (as `torch.optim.AdamW`), global gradient-norm clipping,
//! over the flat parameter layout: one loop for the whole model.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::ParamLayout;

/// AdamW hyper-parameters (the learning rate comes per step from the schedule).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the denominator for stability.
    pub eps: f32,
    /// Decoupled weight decay, applied to tensors with ≥ 2 dimensions only.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// AdamW state: both moments in the parameters' layout, and the step count for bias correction.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Steps taken so far.
    pub step: u64,
}

impl AdamW {
    /// Fresh state for `n` parameters, allocated fallibly: an optimizer too big for memory is an
    /// error naming its size, not an abort (the moments are twice the model).
    pub fn try_new(config: AdamWConfig, n: usize) -> crate::error::Result<Self> {
        use crate::model::limits::try_zeroed;
        Ok(AdamW {
            config,
            m: try_zeroed(n, "the AdamW first moments")?,
            v: try_zeroed(n, "the AdamW second moments")?,
            step: 0,
        })
    }

    /// Fresh state for `n` parameters.
    pub fn new(config: AdamWConfig, n: usize) -> Self {
        AdamW {
            config,
            m: crate::alloc::zeroed_f32(n),
            v: crate::alloc::zeroed_f32(n),
            step: 0,
        }
    }

    /// One update of `params` from `grads` at learning rate `lr`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], layout: &ParamLayout, lr: f32) {
        self.step += 1;
        // Split the four buffers along tensor boundaries so each tensor knows whether it decays.
        let mut tasks = Vec::with_capacity(layout.slots.len());
        let (mut p_rest, mut m_rest, mut v_rest, mut g_rest) =
            (params, &mut self.m[..], &mut self.v[..], grads);
        for (range, decays) in layout.decay_ranges() {
            let len = range.len();
            let (p, pr) = p_rest.split_at_mut(len);
            let (m, mr) = m_rest.split_at_mut(len);
            let (v, vr) = v_rest.split_at_mut(len);
            let (g, gr) = g_rest.split_at(len);
            tasks.push((p, m, v, g, decays));
            (p_rest, m_rest, v_rest, g_rest) = (pr, mr, vr, gr);
        }
        step_tensors(tasks, self.config, self.step, lr);
    }

    /// [`AdamW::update`] of the parameters `range` of the flat layout only (ZeRO-1: a replica
    /// owns the moments of one range): `params` and `grads` are the whole model's, `self.m` and
    /// `self.v` hold `range.len()` values. Element by element the arithmetic is `update`'s, so
    /// the shards of a model, each updated this way, are bit-identical to one `update`.
    pub fn update_range(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        layout: &ParamLayout,
        range: std::ops::Range<usize>,
        lr: f32,
    ) {
        self.step += 1;
        let mut tasks = Vec::new();
        let (mut m_rest, mut v_rest) = (&mut self.m[..], &mut self.v[..]);
        let mut p_rest = &mut params[range.clone()];
        let mut at = range.start;
        for (tensor, decays) in layout.decay_ranges() {
            let (lo, hi) = (tensor.start.max(at), tensor.end.min(range.end));
            if lo >= hi {
                continue;
            }
            let len = hi - lo;
            let (p, pr) = p_rest.split_at_mut(len);
            let (m, mr) = m_rest.split_at_mut(len);
            let (v, vr) = v_rest.split_at_mut(len);
            tasks.push((p, m, v, &grads[lo..hi], decays));
            (p_rest, m_rest, v_rest) = (pr, mr, vr);
            at = hi;
        }
        step_tensors(tasks, self.config, self.step, lr);
    }
}

/// Tensors (or parts of tensors) of parameters, first moments, second moments, gradients, and
/// whether weight decay applies.
type TensorTasks<'a> = Vec<(&'a mut [f32], &'a mut [f32], &'a mut [f32], &'a [f32], bool)>;

/// AdamW's element-wise update at optimizer step `step` (1-based), tensors in parallel.
fn step_tensors(tasks: TensorTasks<'_>, config: AdamWConfig, step: u64, lr: f32) {
    let AdamWConfig {
        beta1,
        beta2,
        eps,
        weight_decay,
    } = config;
    let t = step as i32;
    let bias1 = 1.0 - (beta1 as f64).powi(t);
    let bias2_sqrt = (1.0 - (beta2 as f64).powi(t)).sqrt();
    let step_size = (lr as f64 / bias1) as f32;
    let bias2_sqrt = bias2_sqrt as f32;
    tasks.into_par_iter().for_each(|(p, m, v, g, decays)| {
        let decay = if decays { 1.0 - lr * weight_decay } else { 1.0 };
        for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            *p *= decay;
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            *p -= step_size * *m / (v.sqrt() / bias2_sqrt + eps);
        }
    });
}

/// The global L2 norm of the gradients (accumulated in f64).
pub fn grad_norm(grads: &[f32]) -> f64 {
    grads
        .par_chunks(1 << 16)
        .map(|c| c.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>())
        .sum::<f64>()
        .sqrt()
}

/// Scales the gradients so their global norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping. `max_norm <= 0` disables.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f64) -> f64 {
    let norm = grad_norm(grads);
    if max_norm > 0.0 && norm.is_finite() {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            let coef = coef as f32;
            grads
                .par_chunks_mut(1 << 16)
                .for_each(|c| c.iter_mut().for_each(|g| *g *= coef));
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updating_by_ranges_equals_one_update() {
        let config = crate::bench::builtin_config("tiny-qwen2").expect("built-in shape");
        let model = crate::model::Model::random(config, 5, 0.05);
        let layout = &model.layout;
        let n = layout.total;
        let grads: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
            .collect();
        let adamw = AdamWConfig::default();
        let mut whole = AdamW::new(adamw, n);
        let mut params = model.params.clone();
        // Uneven ranges that cut through tensors.
        let cuts = [0, n / 3 + 7, 2 * n / 3 - 5, n];
        let mut shards: Vec<AdamW> = cuts
            .windows(2)
            .map(|w| AdamW::new(adamw, w[1] - w[0]))
            .collect();
        let mut sharded = model.params.clone();
        for _ in 0..3 {
            whole.update(&mut params, &grads, layout, 1e-2);
            for (shard, w) in shards.iter_mut().zip(cuts.windows(2)) {
                shard.update_range(&mut sharded, &grads, layout, w[0]..w[1], 1e-2);
            }
        }
        assert_eq!(params, sharded);
        let m: Vec<f32> = shards.iter().flat_map(|s| s.m.clone()).collect();
        assert_eq!(m, whole.m);
    }

    #[test]
    fn clipping_bounds_the_norm_and_reports_the_original() {
        let mut g = vec![3.0f32, 4.0];
        let norm = clip_grad_norm(&mut g, 1.0);
        assert!((norm - 5.0).abs() < 1e-9);
        assert!((grad_norm(&g) - 1.0).abs() < 1e-5);
        let mut small = vec![0.3f32, 0.4];
        clip_grad_norm(&mut small, 1.0);
        assert_eq!(small, vec![0.3, 0.4]);
    }
}
