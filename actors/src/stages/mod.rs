//! The stages of the R1 pipeline. The RL step, written once (`rl`: `rl_step` over the
//! `StepWorkers` interface and `run_rl`, the run loop of every RL stage; `rl_local`: the
//! in-process workers) from its pieces (`grpo`: requests, rules, dynamic sampling, the report, and
//! evaluation; `preference`: reward models, normalisation, combined rewards), the problems they
//! take (`problem`), the readability filter (`rejection`). Whole stages, each a library function
//! with a progress callback and a stop flag (`job`): `run_grpo`, `run_sft`, `run_rejection`,
//! `run_distill`, `run_eval`, `run_preference`. The embedded default run chains them in
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
pub mod rl;
pub mod rl_local;
pub mod sft;

pub use distill::{run_distill, DistillConfig, DistillJob, DistillRunReport};
pub use eval_stage::{run_eval, EvalConfig, EvalJob, EvalReport};
pub use grpo::{evaluate, GrpoStepReport, StageEval, StageSettings, StepContext};
pub use grpo_stage::{run_grpo, GrpoJob, GrpoLoopConfig, GrpoRunReport};
pub use job::{CheckpointConfig, ModelSpec, RunError, RunSpec, StageEvent};
pub use preference_stage::{run_preference, GeneralPrompts, PreferenceJob, RewardModelSpec};
pub use problem::{PromptProblem, StageProblem};
pub use rejection_stage::{run_rejection, RejectionConfig, RejectionJob, RejectionRunReport};
pub use rl::{rl_step, run_rl, step_seed, RlPlan, RunControl, StepWorkers};
pub use rl_local::{
    grpo_step, grpo_step_recorded, preference_step, run_in_process, run_in_process_parallel,
    LocalWorkers,
};
pub use sft::{run_sft, SftConfig, SftJob, SftRunReport};
