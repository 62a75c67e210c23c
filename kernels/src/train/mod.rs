//! Training math: fused LM head + losses, AdamW, clipping, learning-rate schedules.

pub mod adamw;
pub mod head;
pub mod schedule;

pub use adamw::{clip_grad_norm, grad_norm, AdamW, AdamWConfig};
pub use head::{lm_head, HeadOutput, TokenLoss, TokenObjective, WeightedCrossEntropy};
pub use schedule::LrSchedule;
