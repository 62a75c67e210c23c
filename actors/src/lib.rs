//! r1-actors: the actors of r1 and the pure logic each one wraps.
//!
//! The learner, the stages, reward models, checkpoints and the actix actors live here. The rule
//! rewards live in their own crate, r1-judge, which links nothing of the engine; they are re-exported
//! as `judge` (math answers, format, task verifiers, code tests in a sandbox; `judge::reward`
//! combines them into every component of one item) and `lang` (language consistency), so
//! `r1_actors::judge::…` and `crate::judge::…` keep working.

pub use r1_judge as judge;
pub use r1_judge::lang;

pub mod bench_grpo;
pub mod data;
pub mod data_parallel;
pub mod eval;
pub mod keeper;
pub mod learner;
pub mod messages;
pub mod report;
pub mod reward_model;
pub mod reward_normaliser;
pub mod service;
pub mod shared_prompts;
pub mod stages;
