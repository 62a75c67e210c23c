//! r1-actors: the actors of r1 and the pure logic each one wraps.
//!
//! Today this crate holds the reward logic: `judge` (math answers, format, task verifiers, code tests
//! in a sandbox; `judge::reward` combines them into every component of one item) and `lang`
//! (language consistency). The actix actors that wrap them arrive with the daemon.

pub mod bench_grpo;
pub mod data;
pub mod eval;
pub mod judge;
pub mod keeper;
pub mod lang;
pub mod learner;
pub mod messages;
pub mod reward_model;
pub mod service;
pub mod stages;
