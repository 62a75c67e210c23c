//! The f32 CPU backend: the reference every other backend is tested against.

pub mod gemm;
pub mod model;
pub mod ops;

pub use model::{backward, forward, head, logits, Activations};
