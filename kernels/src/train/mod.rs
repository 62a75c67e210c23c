//! Training math: fused LM head + losses (cross-entropy, GRPO), the reward model's scalar head
//! and its losses (Bradley–Terry, point-wise), AdamW, clipping, learning-rate schedules.

pub mod adamw;
pub mod grpo;
pub mod head;
pub mod reward;
pub mod schedule;

pub use adamw::{clip_grad_norm, grad_norm, AdamW, AdamWConfig};
pub use grpo::{
    group_advantages, GrpoConfig, GrpoObjective, ImportanceSamplingLevel, LossAgg, SamplerIsMode,
    SamplerMismatch, ScaleRewards, SequenceTerm,
};
pub use head::{lm_head, HeadOutput, TokenLoss, TokenObjective, WeightedCrossEntropy};
pub use reward::{bradley_terry, pairwise_accuracy, pointwise_bce, RewardLoss};
pub use schedule::LrSchedule;
