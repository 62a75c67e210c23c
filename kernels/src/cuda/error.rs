//! Errors of the CUDA backend: each names the library, kernel or call it is about.

/// Everything that can go wrong on the GPU path.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The NVIDIA driver library could not be opened: this machine has no usable GPU driver.
    #[error("no CUDA driver: {0}")]
    NoDriver(String),
    /// The driver is there but the requested device is not.
    #[error("CUDA device {ordinal} does not exist ({count} device(s) found)")]
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// How many devices the driver reports.
        count: usize,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver: {context}: {message}")]
    Driver {
        /// What was being done (allocation of which buffer, launch of which kernel).
        context: String,
        /// The driver's error code.
        message: String,
    },
    /// NVRTC (libnvrtc.so.13) could not be opened, and the kernel was in no PTX cache.
    #[error("NVRTC is not available to compile kernel `{kernel}`: {message}")]
    NoNvrtc {
        /// The kernel source that needed compiling.
        kernel: String,
        /// Where it was looked for.
        message: String,
    },
    /// NVRTC rejected a kernel source; `log` is NVRTC's own message.
    #[error("NVRTC could not compile kernel `{kernel}` for {arch}: {log}")]
    Compile {
        /// The kernel source file name.
        kernel: String,
        /// The virtual architecture, e.g. `compute_90`.
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// cuBLAS could not be opened or a cuBLAS call failed.
    #[error("cuBLAS: {context}: {message}")]
    Cublas {
        /// The call and its shape.
        context: String,
        /// cuBLAS's status.
        message: String,
    },
    /// A caller passed arguments that do not fit (lengths, ids out of range, shapes).
    #[error("invalid input: {0}")]
    Input(String),
    /// A PTX cache file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The cache file.
        path: std::path::PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

impl CudaError {
    /// A driver error with what was being done.
    pub(crate) fn driver(context: impl Into<String>, e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver {
            context: context.into(),
            message: format!("{e:?}"),
        }
    }
}
