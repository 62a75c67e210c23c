//! The stages' building blocks: one GRPO step over task prompts (sample → judge → learn) and the
//! evaluation of a model on held-out problems. The director actor (with the daemon) and the
//! embedded default run will loop over these.

pub mod default_run;
pub mod grpo;
pub mod preference;
pub mod rejection;

pub use grpo::{evaluate, grpo_step, GrpoStepReport, StageEval, StageSettings};
