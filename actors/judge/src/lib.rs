//! r1-judge: the rule rewards, as in the DeepSeek-R1 paper (neural rewards get hacked; rules do not).
//!
//! `math` (answer extraction and equivalence), `format` (the `<think>`/`<answer>` layout), `tasks`
//! (countdown and arithmetic verifiers), `sandbox` (code tests in bubblewrap), `lang` (language
//! consistency) and `reward`, which combines them into every component of one item. Nothing here
//! links the numeric engine, so `r1ctl judge` and the math benches build without it; r1-actors
//! re-exports this crate as `r1_actors::judge` and its `lang` as `r1_actors::lang`.

pub mod format;
pub mod lang;
pub mod math;
pub mod reward;
pub mod sandbox;
pub mod tasks;
