//! The CUDA backend: the engine's ops on one NVIDIA GPU, through `cudarc` with dynamic loading.
//!
//! Nothing here links against CUDA: the driver, NVRTC and cuBLAS are opened at run time, so the
//! crate builds and its tests run on machines without a GPU. `CudaBackend::new` on such a machine
//! returns `CudaError::NoDriver` (or `NoDevice`), never panics.
//!
//! - `backend`: the device, its stream, NVRTC compilation of the kernel sources (cached per device
//!   in memory and, with `R1_CUDA_PTX_CACHE`, on disk), device buffers, launches, cuBLAS GEMMs.
//! - `ops`: one function per op and direction, mirroring `cpu::ops` (llm.c style).
//! - `model`: a `Model` uploaded to the device (bf16 weights, f32 master weights, gradients and
//!   AdamW moments) with forward, fused classifier, backward and AdamW: the learner's path.
//! - `decode`: KV cache in device memory, batched decode step, sampling on the device: the
//!   sampler's path (not batch-invariant: cuBLAS picks GEMM kernels by row count).
//! - `bench`: training and decoding throughput on the device (`cuda_bench`).
//! - `usage`: the memory in use on each GPU an engine holds a context on (r1d's gauge).
//!
//! Kernels are CUDA C in `kernels/*.cu`, compiled by NVRTC for the device's compute capability.

pub mod backend;
pub mod bench;
pub mod decode;
pub mod error;
pub mod model;
pub mod ops;
pub mod usage;

pub use backend::{
    compile_kernel_ptx, kernel_resources, kernel_sources, nvrtc_available, CudaBackend,
    DeviceBuffer, DeviceGraph, KernelResources, KernelSource,
};
pub use decode::{DecodeAttention, DeviceDecoder, DeviceSampling};
pub use error::CudaError;
pub use model::{DeviceActivations, DeviceModel};
