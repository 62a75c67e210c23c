//! The engine's error type. Every variant names the file, tensor or key it is about, so that a user
//! who points r1 at a broken model directory learns what to fix without reading the code.

use std::path::PathBuf;

/// Everything that can go wrong while loading, checking, running or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file the operation was about.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config.json, index) is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser's message, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// config.json is valid JSON but a key is missing or has a value r1 cannot use.
    #[error("{path}: key `{key}`: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The key path, e.g. `rope_scaling.factor`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The architecture in config.json is not one r1 implements.
    #[error("{path}: architecture `{architecture}` is not supported (r1 runs Qwen2ForCausalLM and LlamaForCausalLM)")]
    UnknownArchitecture {
        /// The config file.
        path: PathBuf,
        /// The architecture named there.
        architecture: String,
    },
    /// A tensor the architecture needs is in none of the weight files.
    #[error("{path}: tensor `{tensor}` is missing")]
    MissingTensor {
        /// The weight file (or index) that should hold it.
        path: PathBuf,
        /// Its Hugging Face name.
        tensor: String,
    },
    /// A tensor exists but has the wrong shape for the config.
    #[error("{path}: tensor `{tensor}` has shape {found:?}, the config implies {expected:?}")]
    Shape {
        /// The weight file.
        path: PathBuf,
        /// Its Hugging Face name.
        tensor: String,
        /// The shape config.json implies.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype the CPU backend cannot widen to f32.
    #[error("{path}: tensor `{tensor}` has dtype {dtype}; r1 reads f32, bf16 and f16")]
    Dtype {
        /// The weight file.
        path: PathBuf,
        /// Its Hugging Face name.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// A safetensors file is malformed or truncated.
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The weight file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A GGUF file could not be read or imported (the message names the file and key or tensor).
    #[error(transparent)]
    Gguf(#[from] crate::model::gguf::GgufError),
    /// A model or run would need more memory than this process may allocate (checked before
    /// allocating).
    #[error("{what}: {figures}")]
    Memory {
        /// What the memory is for (`loading models/x`, `a grpo run on models/x`).
        what: String,
        /// `needs 64.0 GiB (weights …, gradients …), 11.3 GiB available (MemAvailable)`: the
        /// total, where it goes, what is available and which limit binds.
        figures: String,
    },
    /// The allocator refused a buffer (after the checks passed: another process took the memory).
    #[error("could not allocate {bytes} for {what}")]
    Allocation {
        /// The buffer.
        what: String,
        /// Its size, formatted.
        bytes: String,
    },
    /// A caller passed arguments that do not fit the model (token id out of range, wrong lengths).
    #[error("invalid input: {0}")]
    Input(String),
    /// The device's backend does not implement an op the device layer asked for.
    #[error("{device}: {op} is not supported by this device's backend")]
    Unsupported {
        /// The device (`cuda:0`).
        device: String,
        /// The op, as the device layer names it.
        op: String,
    },
    /// A CUDA call failed: no driver or device on this machine, an allocation, a launch.
    #[error("{device}: {source}")]
    Cuda {
        /// The device (`cuda:0`).
        device: String,
        /// What the CUDA backend said.
        #[source]
        source: crate::cuda::CudaError,
    },
    /// A collective between data-parallel replicas failed or was abandoned.
    #[error(transparent)]
    Collective(#[from] crate::collective::CollectiveError),
}

/// Shorthand used across the engine.
pub type Result<T> = std::result::Result<T, EngineError>;

impl EngineError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}
