//! The stages of the R1 pipeline. Building blocks: one GRPO step over prompts (sample → judge →
//! learn, with optional dynamic sampling) and the evaluation of a model on held-out problems
//! (`grpo`), the problems they take (`problem`), the readability filter (`rejection`). Whole
//! stages, each a library function with a progress callback and a stop flag (`job`): `run_grpo`,
//! `run_sft`, `run_rejection`, `run_distill`, `run_eval`, `run_preference` (the last RL stage:
//! rule rewards and reward models, `preference`). The embedded default run chains them in
//! miniature.

pub mod default_run;
pub mod distill;
pub mod eval_stage;
pub mod grpo;
pub mod grpo_stage;
pub mod job;
pub mod preference;
pub mod preference_stage;
pub mod problem;
pub mod rejection;
pub mod rejection_stage;
pub mod sft;

pub use distill::{run_distill, DistillConfig, DistillJob, DistillRunReport};
pub use eval_stage::{run_eval, EvalConfig, EvalJob, EvalReport};
pub use grpo::{
    evaluate, grpo_step, grpo_step_from, GrpoStepReport, StageEval, StageSettings, StepContext,
};
pub use grpo_stage::{run_grpo, GrpoJob, GrpoLoopConfig, GrpoRunReport};
pub use job::{CheckpointConfig, ModelSpec, RunError, RunSpec, StageEvent};
pub use preference_stage::{run_preference, GeneralPrompts, PreferenceJob, RewardModelSpec};
pub use problem::{PromptProblem, StageProblem};
pub use rejection_stage::{run_rejection, RejectionConfig, RejectionJob, RejectionRunReport};
pub use sft::{run_sft, SftConfig, SftJob, SftRunReport};
