//! The f32 CPU backend: the reference every other backend is tested against.

pub mod decode;
pub mod fastmath;
pub mod gemm;
pub mod model;
pub mod ops;
pub mod rowmat;

pub use decode::{decode_step, DecodeScratch, KvCache};
pub use model::{
    arena_floats, backward, forward, head, logits, shared_layout, Activations, SharedGroup,
    SharedLayout,
};
