//! Training math: fused LM head + losses (cross-entropy, GRPO), AdamW, clipping, learning-rate schedules.

pub mod adamw;
pub mod grpo;
pub mod head;
pub mod schedule;

pub use adamw::{clip_grad_norm, grad_norm, AdamW, AdamWConfig};
pub use grpo::{group_advantages, GrpoConfig, GrpoObjective, LossAgg, ScaleRewards};
pub use head::{lm_head, HeadOutput, TokenLoss, TokenObjective, WeightedCrossEntropy};
pub use schedule::LrSchedule;
