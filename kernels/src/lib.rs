//! r1-kernels: the numeric engine of r1.
//!
//! - `model`: Hugging Face model directories (config.json, safetensors) and the flat parameter layout.
//! - `cpu`: the f32 CPU backend (forward, backward, KV-cache decoding), the reference for every
//!   other backend.
//! - `train`: the fused LM head with per-token objectives (cross-entropy, log-prob + entropy, GRPO),
//!   AdamW, gradient clipping, learning-rate schedules.
//! - `sample`: batched KV-cache generation (continuous batching, seeded per-sequence sampling).
//! - `tokenizer`: `tokenizer.json` through the `tokenizers` crate, and a byte tokenizer for tiny models.
//! - `template`: prompt templates (R1-Zero, ChatML, Llama 3, with a `<think>`-prefilling variant).
//! - `device`: device specs (`cpu`, `cuda:N`, `auto`) and the devices this machine has.
//! - `collective`: all-reduce, broadcast and all-gather between data-parallel replicas (in-process
//!   for CPU replicas, NCCL for GPUs).
//! - `bench`: the measurements behind `r1ctl bench`.
//!
//! No actors, no network: everything here is plain functions over slices.

pub mod alloc;
pub mod bench;
pub mod collective;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod error;
pub mod model;
pub mod sample;
pub mod template;
pub mod tokenizer;
pub mod train;

pub use error::{EngineError, Result};
