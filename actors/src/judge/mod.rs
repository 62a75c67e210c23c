//! The reward judge's pure logic: rule rewards, as in the DeepSeek-R1 paper (neural rewards get
//! hacked; rules do not).

pub mod format;
pub mod math;
pub mod reward;
pub mod sandbox;
pub mod tasks;
