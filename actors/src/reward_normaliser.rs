//! Normalising each reward model's raw scores before they are weighed (preference RL): a
//! z-score per batch or against running moments. Its own module because the moments are part of
//! every checkpoint (`keeper::TrainerState`) and the checkpoint code must not depend on a stage.

use serde::{Deserialize, Serialize};

/// How each reward model's raw scores are normalised before weighting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Normalisation {
    /// Raw scores.
    None,
    /// z-score over this step's general completions.
    Batch,
    /// z-score against exponential moving moments (`momentum` of the old moments kept per step).
    Running {
        /// In [0, 1): 0 is per-batch, 0.9 remembers about ten steps.
        momentum: f64,
    },
}

/// Running (or per-batch) moments of each reward model's scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardNormaliser {
    /// (mean, variance) per model, `None` before its first batch.
    moments: Vec<Option<(f64, f64)>>,
}

impl RewardNormaliser {
    /// Normalises model `m`'s raw scores of one step.
    pub fn normalise(&mut self, how: Normalisation, m: usize, raw: &[f32]) -> Vec<f64> {
        let n = raw.len().max(1) as f64;
        let mean = raw.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = raw.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let (mean, var) = match how {
            Normalisation::None => return raw.iter().map(|&x| x as f64).collect(),
            Normalisation::Batch => (mean, var),
            Normalisation::Running { momentum } => {
                if self.moments.len() <= m {
                    self.moments.resize(m + 1, None);
                }
                let next = match self.moments[m] {
                    None => (mean, var),
                    Some((om, ov)) => (
                        momentum * om + (1.0 - momentum) * mean,
                        momentum * ov + (1.0 - momentum) * var,
                    ),
                };
                self.moments[m] = Some(next);
                next
            }
        };
        let std = var.sqrt().max(1e-6);
        raw.iter().map(|&x| (x as f64 - mean) / std).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_z_scores_per_batch_and_remembers_when_running() {
        let mut n = RewardNormaliser::default();
        let z = n.normalise(Normalisation::Batch, 0, &[1.0, 3.0]);
        assert_eq!(z, vec![-1.0, 1.0]);
        let raw = n.normalise(Normalisation::None, 0, &[1.0, 3.0]);
        assert_eq!(raw, vec![1.0, 3.0]);
        let running = Normalisation::Running { momentum: 0.5 };
        let first = n.normalise(running, 1, &[1.0, 3.0]);
        assert_eq!(first, vec![-1.0, 1.0]);
        // Moments now (2, 1); the next batch (mean 12, var 4) moves them to (7, 2.5).
        let second = n.normalise(running, 1, &[10.0, 14.0]);
        let std = 2.5f64.sqrt();
        assert!((second[0] - (10.0 - 7.0) / std).abs() < 1e-12);
        assert!((second[1] - (14.0 - 7.0) / std).abs() < 1e-12);
    }
}
