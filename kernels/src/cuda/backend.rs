//! One GPU: its context and stream, the kernels compiled for it, device buffers, kernel launches
//! and cuBLAS GEMMs. Everything runs in order on one stream; host reads synchronise it.
//!
//! Kernel sources are compiled by NVRTC to PTX for the device's compute capability the first time
//! one of their kernels runs, and kept per device. With `R1_CUDA_PTX_CACHE=<dir>` the PTX is also
//! kept on disk, named by source, architecture and a hash of the source, so a machine without
//! NVRTC can run kernels compiled elsewhere (the device check carries such a folder).

use std::collections::HashMap;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cudarc::cublas::sys as cublas_sys;
use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, CudaFunction, CudaModule};

use super::error::CudaError;

/// Prepended to every kernel source: bf16 conversions and warp/block reductions.
const COMMON: &str = include_str!("kernels/common.cuh");

/// One CUDA C source file of the backend.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// The file's stem (`rmsnorm` for `kernels/rmsnorm.cu`); also the module's name.
    pub name: &'static str,
    /// The file's text, without the common prelude.
    pub source: &'static str,
}

/// Every kernel source of the backend, in the order the CI compile test walks them.
const SOURCES: &[KernelSource] = &[
    KernelSource {
        name: "elementwise",
        source: include_str!("kernels/elementwise.cu"),
    },
    KernelSource {
        name: "rmsnorm",
        source: include_str!("kernels/rmsnorm.cu"),
    },
    KernelSource {
        name: "rope",
        source: include_str!("kernels/rope.cu"),
    },
    KernelSource {
        name: "swiglu",
        source: include_str!("kernels/swiglu.cu"),
    },
    KernelSource {
        name: "attention",
        source: include_str!("kernels/attention.cu"),
    },
    KernelSource {
        name: "attention_tc",
        source: include_str!("kernels/attention_tc.cu"),
    },
    KernelSource {
        name: "classifier",
        source: include_str!("kernels/classifier.cu"),
    },
    KernelSource {
        name: "adamw",
        source: include_str!("kernels/adamw.cu"),
    },
    KernelSource {
        name: "decode",
        source: include_str!("kernels/decode.cu"),
    },
    KernelSource {
        name: "sample",
        source: include_str!("kernels/sample.cu"),
    },
];

/// Every kernel source of the backend.
pub fn kernel_sources() -> &'static [KernelSource] {
    SOURCES
}

/// The text NVRTC compiles for `kernel`: the common prelude, then the file.
fn full_source(kernel: &KernelSource) -> String {
    format!(
        "{COMMON}\n#line 1 \"{}.cu\"\n{}",
        kernel.name, kernel.source
    )
}

/// NVRTC options besides the architecture. NVRTC's defaults stay: `--fmad=true` contracts
/// `a * b + c` into fused multiply-adds, and `expf`/`logf` are CUDA's library functions (a few
/// ulp), so f32 kernels are deterministic run to run but not bit-equal to the CPU twins; the
/// parity tests' 1e-5 relative bound on f32 paths allows for that. (`--fmad=false` would not make
/// them bit-equal either: the CPU twins use their own `exp` and summation orders.)
const NVRTC_OPTIONS: &[&str] = &["--std=c++17", "-default-device"];

/// Whether NVRTC (`libnvrtc.so.13`) can be opened by this process.
pub fn nvrtc_available() -> bool {
    catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false)
}

/// Compiles one kernel source to PTX for `arch` (e.g. `compute_90`) with NVRTC. `include_paths`
/// are passed as `-I` (the kernels include no CUDA header; a caller may add some). Fails with
/// NVRTC's log when the source does not compile.
pub fn compile_kernel_ptx(
    kernel: &KernelSource,
    arch: &str,
    include_paths: &[PathBuf],
) -> Result<String, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc {
            kernel: kernel.name.into(),
            message: "libnvrtc.so.13 is not on the library path (LD_LIBRARY_PATH); \
                      scripts/fetch-nvrtc.sh fetches it from PyPI"
                .into(),
        });
    }
    let mut options: Vec<String> = NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture={arch}"));
    let opts = cudarc::nvrtc::CompileOptions {
        options,
        include_paths: include_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        name: Some(format!("{}.cu", kernel.name)),
        ..Default::default()
    };
    let source = full_source(kernel);
    let compiled = catch_unwind(AssertUnwindSafe(|| {
        cudarc::nvrtc::compile_ptx_with_opts(&source, opts)
    }))
    .map_err(|_| CudaError::NoNvrtc {
        kernel: kernel.name.into(),
        message: "NVRTC panicked while loading (a symbol missing from libnvrtc?)".into(),
    })?;
    match compiled {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => Err(CudaError::Compile {
            kernel: kernel.name.into(),
            arch: arch.into(),
            log: log.to_string_lossy().into_owned(),
        }),
        Err(e) => Err(CudaError::Compile {
            kernel: kernel.name.into(),
            arch: arch.into(),
            log: format!("{e:?}"),
        }),
    }
}

/// FNV-1a: a stable 64-bit hash of a kernel's full source and options, naming its PTX on disk.
fn source_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Where the PTX of `kernel` for `arch` lives inside a PTX cache folder.
pub fn ptx_cache_path(dir: &Path, kernel: &KernelSource, arch: &str) -> PathBuf {
    let key = format!("{}\n{}", NVRTC_OPTIONS.join(" "), full_source(kernel));
    dir.join(format!(
        "{}-{arch}-{:016x}.ptx",
        kernel.name,
        source_hash(&key)
    ))
}

/// What ptxas reports for one kernel compiled to machine code: registers per thread, spills
/// and stack (bytes per thread), static shared memory (bytes per block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelResources {
    /// The kernel's name.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of register spill stores and loads per thread.
    pub spill_stores: u32,
    pub spill_loads: u32,
    /// Bytes of stack frame per thread.
    pub stack: u32,
    /// Bytes of static shared memory per block.
    pub shared: u32,
}

/// Compiles one kernel source to machine code for `sm` (e.g. `sm_90`) with NVRTC, ptxas
/// verbose, and returns what ptxas reports for each kernel: the compile check's register and
/// spill figures (no GPU needed).
pub fn kernel_resources(
    kernel: &KernelSource,
    sm: &str,
    include_paths: &[PathBuf],
) -> Result<Vec<KernelResources>, CudaError> {
    use cudarc::nvrtc::result as nvrtc;
    use std::ffi::CString;
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc {
            kernel: kernel.name.into(),
            message: "libnvrtc.so.13 is not on the library path (LD_LIBRARY_PATH)".into(),
        });
    }
    let failed = |log: String| CudaError::Compile {
        kernel: kernel.name.into(),
        arch: sm.into(),
        log,
    };
    let source = CString::new(full_source(kernel)).map_err(|e| failed(e.to_string()))?;
    let name = CString::new(format!("{}.cu", kernel.name)).map_err(|e| failed(e.to_string()))?;
    let mut options: Vec<String> = NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect();
    options.extend([format!("-arch={sm}"), "-Xptxas".into(), "-v".into()]);
    options.extend(include_paths.iter().map(|p| format!("-I{}", p.display())));
    let log = catch_unwind(AssertUnwindSafe(|| -> Result<String, String> {
        let prog = nvrtc::create_program(&source, Some(&name)).map_err(|e| format!("{e:?}"))?;
        // SAFETY: `prog` was just created and is destroyed once, below.
        let compiled = unsafe { nvrtc::compile_program(prog, &options) };
        let log = unsafe { nvrtc::get_program_log(prog) };
        let _ = unsafe { nvrtc::destroy_program(prog) };
        let log: Vec<u8> = log
            .map_err(|e| format!("{e:?}"))?
            .into_iter()
            .map(|c| c as u8)
            .take_while(|&b| b != 0)
            .collect();
        let log = String::from_utf8_lossy(&log).into_owned();
        compiled.map_err(|e| format!("{e:?}\n{log}"))?;
        Ok(log)
    }))
    .map_err(|_| CudaError::NoNvrtc {
        kernel: kernel.name.into(),
        message: "NVRTC panicked while loading (a symbol missing from libnvrtc?)".into(),
    })?
    .map_err(failed)?;
    Ok(parse_ptxas_log(&log))
}

/// The per-kernel figures of a `ptxas -v` log.
fn parse_ptxas_log(log: &str) -> Vec<KernelResources> {
    // The number just before `unit` in `line` ("Used 56 registers", "0 bytes spill stores").
    fn before(line: &str, unit: &str) -> Option<u32> {
        let head = &line[..line.find(unit)?];
        head.split(|c: char| !c.is_ascii_digit())
            .rfind(|w| !w.is_empty())?
            .parse()
            .ok()
    }
    let mut out: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default();
            out.push(KernelResources {
                name: name.into(),
                ..Default::default()
            });
            continue;
        }
        let Some(k) = out.last_mut() else { continue };
        if let Some(v) = before(line, " bytes stack frame") {
            k.stack = v;
        }
        if let Some(v) = before(line, " bytes spill stores") {
            k.spill_stores = v;
        }
        if let Some(v) = before(line, " bytes spill loads") {
            k.spill_loads = v;
        }
        if let Some(v) = before(line, " registers") {
            k.registers = v;
        }
        if let Some(v) = before(line, " bytes smem") {
            k.shared = v;
        }
    }
    out
}

/// Compiles every kernel source for `arch` into `dir` (what `scripts/build-device-check.sh`
/// carries to a machine without NVRTC). Returns the files written.
pub fn fill_ptx_cache(
    dir: &Path,
    arch: &str,
    include_paths: &[PathBuf],
) -> Result<Vec<PathBuf>, CudaError> {
    std::fs::create_dir_all(dir).map_err(|e| CudaError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut written = Vec::new();
    for kernel in SOURCES {
        let ptx = compile_kernel_ptx(kernel, arch, include_paths)?;
        let path = ptx_cache_path(dir, kernel, arch);
        std::fs::write(&path, ptx).map_err(|e| CudaError::Io {
            path: path.clone(),
            source: e,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Memory on the device for `len` values of `T`, freed on drop. `T` is a plain number type
/// (f32, bf16, u32, f64, ...); the contents start undefined unless made with `zeros`.
pub struct DeviceBuffer<T> {
    ptr: drv_sys::CUdeviceptr,
    len: usize,
    ctx: Arc<CudaContext>,
    _values: PhantomData<T>,
}

// SAFETY: a device pointer is plain data; every access goes through the backend's one stream.
unsafe impl<T> Send for DeviceBuffer<T> {}
unsafe impl<T> Sync for DeviceBuffer<T> {}

impl<T> DeviceBuffer<T> {
    /// Values held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address of element 0.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// The device address of element `i` (may be one past the end).
    pub fn at(&self, i: usize) -> u64 {
        debug_assert!(i <= self.len, "device offset {i} past {}", self.len);
        self.ptr + (i * std::mem::size_of::<T>()) as u64
    }
}

impl<T> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        if self.ptr != 0 {
            // Errors cannot be returned from drop; a failed free leaks device memory only.
            let _ = self.ctx.bind_to_thread();
            let _ = unsafe { drv::free_sync(self.ptr) };
        }
    }
}

/// Page-locked host memory for `len` values of `T` (zeroed): a staging area whose copies to the
/// device are truly asynchronous (pageable memory makes the driver stage each copy on the host
/// first). `write` waits for the last copy out of it before handing it out, so the host never
/// overwrites values a queued copy has not read yet.
pub struct PinnedBuffer<T> {
    ptr: *mut T,
    len: usize,
    /// Recorded after each copy out of the buffer.
    event: drv_sys::CUevent,
    ctx: Arc<CudaContext>,
}

// SAFETY: the host memory is owned by this value; device copies out of it are fenced by `event`.
unsafe impl<T: Send> Send for PinnedBuffer<T> {}
unsafe impl<T: Sync> Sync for PinnedBuffer<T> {}

impl<T: Copy> PinnedBuffer<T> {
    /// Values held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The values, for writing, once the last copy out of them has completed.
    pub fn write(&mut self) -> Result<&mut [T], CudaError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| CudaError::driver("binding the context", e))?;
        unsafe { drv::event::synchronize(self.event) }
            .map_err(|e| CudaError::driver("waiting for a staging copy", e))?;
        // SAFETY: `ptr` holds `len` initialised values (zeroed at allocation) owned by `self`.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) })
    }
}

impl<T> Drop for PinnedBuffer<T> {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        unsafe {
            // A copy still reading the buffer must finish before it is freed.
            let _ = drv::event::synchronize(self.event);
            let _ = drv::event::destroy(self.event);
            let _ = drv::free_host(self.ptr as *mut c_void);
        }
    }
}

/// A captured sequence of stream operations (`CudaBackend::capture`), replayed by `launch` with
/// the same arguments (device addresses and sizes baked in; buffer contents read at replay).
pub struct DeviceGraph {
    exec: drv_sys::CUgraphExec,
    ctx: Arc<CudaContext>,
}

// SAFETY: an executable graph is a driver handle, used through the backend's one stream.
unsafe impl Send for DeviceGraph {}
unsafe impl Sync for DeviceGraph {}

impl DeviceGraph {
    /// Replays the graph on the backend's stream.
    pub fn launch(&self, be: &CudaBackend) -> Result<(), CudaError> {
        be.bind()?;
        unsafe { drv::graph::launch(self.exec, be.stream) }
            .map_err(|e| CudaError::driver("cuGraphLaunch", e))
    }
}

impl Drop for DeviceGraph {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        let _ = unsafe { drv::graph::exec_destroy(self.exec) };
    }
}

/// cuBLAS workspace for captured GEMMs: cuBLAS must not allocate while a stream is captured, so
/// a fixed workspace is set before the first capture (32 MiB, NVIDIA's figure for Hopper).
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// A kernel argument: device pointers and scalars as the kernel declares them.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    /// A device pointer.
    Ptr(u64),
    /// `int`.
    I32(i32),
    /// `long long`.
    I64(i64),
    /// `unsigned long long`.
    U64(u64),
    /// `float`.
    F32(f32),
}

impl Arg {
    /// An `int` from a size, refusing values a kernel's `int` cannot hold.
    pub fn int(v: usize) -> Result<Arg, CudaError> {
        i32::try_from(v)
            .map(Arg::I32)
            .map_err(|_| CudaError::Input(format!("{v} does not fit a kernel's int")))
    }
}

/// The device, its stream, its compiled kernels and its cuBLAS handle.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: drv_sys::CUstream,
    cublas: cublas_sys::cublasHandle_t,
    /// `compute_XY` of the device: the NVRTC target and part of the PTX cache key.
    arch: String,
    /// Loaded modules by source name: compiled once per device.
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Functions by name, resolved once.
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    /// On-disk PTX cache (`R1_CUDA_PTX_CACHE`), if set.
    ptx_cache: Option<PathBuf>,
    /// Reusable f32 scratch for ops' intermediate results (column-sum partials): ops run in
    /// stream order, so one buffer serves them all; it only grows.
    scratch: Mutex<Option<DeviceBuffer<f32>>>,
    /// Reusable u32 scratch (token grouping of the embedding backward).
    index_scratch: Mutex<Option<DeviceBuffer<u32>>>,
    /// Reusable f64 scratch (gradient-norm partial sums).
    f64_scratch: Mutex<Option<DeviceBuffer<f64>>>,
    /// cuBLAS's fixed workspace, set before the first graph capture.
    cublas_workspace: Mutex<Option<DeviceBuffer<u8>>>,
    /// Streaming multiprocessors: grid sizes for grid-stride kernels.
    sm_count: usize,
    name: String,
}

// SAFETY: the raw stream and cuBLAS handle are only used through &self methods that bind the
// context first; CUDA streams and cuBLAS handles may be used from any thread, one at a time,
// which the engine's single learner/sampler thread per backend guarantees.
unsafe impl Send for CudaBackend {}
unsafe impl Sync for CudaBackend {}

/// Number of CUDA devices, or why there are none (no driver library, driver too old).
pub fn device_count() -> Result<usize, CudaError> {
    let present = catch_unwind(|| unsafe { drv_sys::is_culib_present() }).unwrap_or(false);
    if !present {
        return Err(CudaError::NoDriver(
            "the NVIDIA driver library (libcuda.so) could not be opened".into(),
        ));
    }
    let count = catch_unwind(|| {
        drv::init()?;
        drv::device::get_count()
    })
    .map_err(|_| {
        CudaError::NoDriver(
            "the driver library lacks a symbol cudarc needs (driver too old)".into(),
        )
    })?
    // cuInit fails when the driver is installed but unusable (no device, version mismatch).
    .map_err(|e| CudaError::NoDriver(format!("cuInit / cuDeviceGetCount failed: {e:?}")))?;
    Ok(count.max(0) as usize)
}

/// One CUDA device as the driver reports it: ordinal, name, memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDeviceInfo {
    /// The device ordinal (`cuda:N`).
    pub ordinal: usize,
    /// The driver's name for it, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Total memory in bytes.
    pub total_bytes: u64,
    /// Free memory in bytes when asked.
    pub free_bytes: u64,
}

/// Every CUDA device with its name and memory (total, free), for `r1ctl devices` and placement.
/// No driver is an error (the caller lists the CPU alone and says why), never a panic.
pub fn device_infos() -> Result<Vec<CudaDeviceInfo>, CudaError> {
    let count = device_count()?;
    (0..count)
        .map(|ordinal| {
            let ctx = catch_unwind(|| CudaContext::new(ordinal))
                .map_err(|_| CudaError::NoDriver("creating a context panicked".into()))?
                .map_err(|e| CudaError::driver(format!("context on device {ordinal}"), e))?;
            let name = ctx
                .name()
                .unwrap_or_else(|_| format!("CUDA device {ordinal}"));
            let (free, total) = ctx
                .mem_get_info()
                .map_err(|e| CudaError::driver(format!("memory of device {ordinal}"), e))?;
            Ok(CudaDeviceInfo {
                ordinal,
                name,
                total_bytes: total as u64,
                free_bytes: free as u64,
            })
        })
        .collect()
}

impl CudaBackend {
    /// Opens device `ordinal`. No driver or no such device is an error, never a panic.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx = catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| CudaError::NoDriver("creating a context panicked".into()))?
            .map_err(|e| CudaError::driver(format!("context on device {ordinal}"), e))?;
        // Streams are ordered by the engine itself; cudarc's per-buffer events are not needed.
        unsafe { ctx.disable_event_tracking() };
        // r1d's memory gauge reads the device through the contexts engines hold.
        super::usage::note_context(ordinal, &ctx);
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| CudaError::driver("compute capability", e))?;
        let sm_count = ctx
            .attribute(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| CudaError::driver("multiprocessor count", e))?
            .max(1) as usize;
        let name = ctx
            .name()
            .unwrap_or_else(|_| format!("CUDA device {ordinal}"));
        let stream = drv::stream::create(drv::stream::StreamKind::NonBlocking)
            .map_err(|e| CudaError::driver("stream", e))?;
        let cublas_present =
            catch_unwind(|| unsafe { cublas_sys::is_culib_present() }).unwrap_or(false);
        if !cublas_present {
            return Err(CudaError::Cublas {
                context: "opening libcublas.so.13".into(),
                message: "not found on the library path (LD_LIBRARY_PATH)".into(),
            });
        }
        let cublas = catch_unwind(cudarc::cublas::result::create_handle)
            .map_err(|_| CudaError::Cublas {
                context: "cublasCreate".into(),
                message: "panicked (a symbol missing from libcublas?)".into(),
            })?
            .map_err(|e| CudaError::Cublas {
                context: "cublasCreate".into(),
                message: format!("{e:?}"),
            })?;
        unsafe { cudarc::cublas::result::set_stream(cublas, stream as _) }.map_err(|e| {
            CudaError::Cublas {
                context: "cublasSetStream".into(),
                message: format!("{e:?}"),
            }
        })?;
        let ptx_cache = std::env::var_os("R1_CUDA_PTX_CACHE").map(PathBuf::from);
        tracing::info!(device = %name, arch = %format!("compute_{major}{minor}"), "CUDA backend ready");
        Ok(CudaBackend {
            ctx,
            stream,
            cublas,
            arch: format!("compute_{major}{minor}"),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            ptx_cache,
            scratch: Mutex::new(None),
            index_scratch: Mutex::new(None),
            f64_scratch: Mutex::new(None),
            cublas_workspace: Mutex::new(None),
            sm_count,
            name,
        })
    }

    /// The device's name, e.g. "NVIDIA H200".
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// `compute_XY`: the architecture kernels are compiled for.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Streaming multiprocessors of the device.
    pub fn sm_count(&self) -> usize {
        self.sm_count
    }

    fn bind(&self) -> Result<(), CudaError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| CudaError::driver("binding the context", e))
    }

    /// `len` values of uninitialised device memory.
    pub fn alloc<T>(&self, len: usize) -> Result<DeviceBuffer<T>, CudaError> {
        self.bind()?;
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        let ptr = unsafe { drv::malloc_sync(bytes) }
            .map_err(|e| CudaError::driver(format!("allocating {bytes} bytes"), e))?;
        Ok(DeviceBuffer {
            ptr,
            len,
            ctx: self.ctx.clone(),
            _values: PhantomData,
        })
    }

    /// The address of at least `len` floats of scratch, valid until the next call (stream-ordered
    /// use only: a kernel queued before a later call may still be reading it, so growing
    /// synchronises before freeing the old buffer).
    pub fn scratch_f32(&self, len: usize) -> Result<u64, CudaError> {
        self.grow_scratch(&self.scratch, len)
    }

    /// As `scratch_f32`, for u32 indices (`embedding_backward`'s grouping): a buffer of its own,
    /// so no per-call `cuMemAlloc`/`cuMemFree` (a free synchronises the whole device).
    pub fn scratch_u32(&self, len: usize) -> Result<u64, CudaError> {
        self.grow_scratch(&self.index_scratch, len)
    }

    /// As `scratch_f32`, for f64 partial sums (`grad_norm`).
    pub fn scratch_f64(&self, len: usize) -> Result<u64, CudaError> {
        self.grow_scratch(&self.f64_scratch, len)
    }

    fn grow_scratch<T>(
        &self,
        slot: &Mutex<Option<DeviceBuffer<T>>>,
        len: usize,
    ) -> Result<u64, CudaError> {
        let mut scratch = slot.lock().unwrap_or_else(|p| p.into_inner());
        match scratch.as_ref() {
            Some(buf) if buf.len() >= len => Ok(buf.ptr()),
            _ => {
                self.synchronize()?;
                *scratch = None;
                let buf = self.alloc::<T>(len.max(1 << 16))?;
                let ptr = buf.ptr();
                *scratch = Some(buf);
                Ok(ptr)
            }
        }
    }

    /// Writes `host` to device address `dst` (a scratch address from `scratch_*`, which holds
    /// at least `host.len()` values: the caller asked for that many).
    pub(crate) fn copy_to_scratch<T: Copy>(&self, dst: u64, host: &[T]) -> Result<(), CudaError> {
        if host.is_empty() {
            return Ok(());
        }
        self.bind()?;
        unsafe { drv::memcpy_htod_async(dst, host, self.stream) }
            .map_err(|e| CudaError::driver("host-to-device copy", e))
    }

    /// Reads `out.len()` values from device address `src` (a scratch address holding at least
    /// that many) and synchronises the stream.
    pub(crate) fn copy_from_scratch<T: Copy>(
        &self,
        out: &mut [T],
        src: u64,
    ) -> Result<(), CudaError> {
        if out.is_empty() {
            return Ok(());
        }
        self.bind()?;
        unsafe { drv::memcpy_dtoh_async(out, src, self.stream) }
            .map_err(|e| CudaError::driver("device-to-host copy", e))?;
        self.synchronize()
    }

    /// `len` zeros.
    pub fn zeros<T>(&self, len: usize) -> Result<DeviceBuffer<T>, CudaError> {
        let buf = self.alloc(len)?;
        self.memset_zero(&buf)?;
        Ok(buf)
    }

    /// A copy of `host` on the device.
    pub fn upload<T: Copy>(&self, host: &[T]) -> Result<DeviceBuffer<T>, CudaError> {
        let buf = self.alloc(host.len())?;
        self.copy_to_device(&buf, 0, host)?;
        Ok(buf)
    }

    /// `len` zeroed values of page-locked host memory (see `PinnedBuffer`).
    pub fn alloc_pinned<T: Copy>(&self, len: usize) -> Result<PinnedBuffer<T>, CudaError> {
        self.bind()?;
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        let ptr = unsafe { drv::malloc_host(bytes, 0) }
            .map_err(|e| CudaError::driver(format!("allocating {bytes} pinned host bytes"), e))?;
        // SAFETY: `bytes` writable bytes were just allocated; all-zero bytes are a valid value of
        // the plain number types this holds.
        unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, bytes) };
        let event = drv::event::create(drv_sys::CUevent_flags::CU_EVENT_DISABLE_TIMING);
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                let _ = unsafe { drv::free_host(ptr) };
                return Err(CudaError::driver("creating a staging event", e));
            }
        };
        Ok(PinnedBuffer {
            ptr: ptr as *mut T,
            len,
            event,
            ctx: self.ctx.clone(),
        })
    }

    /// Queues a copy of `src[..n]` into `dst` at element `at`, asynchronously (the host may go on;
    /// `src.write()` waits for this copy before handing the values out again).
    pub fn copy_pinned_to_device<T: Copy>(
        &self,
        dst: &DeviceBuffer<T>,
        at: usize,
        src: &PinnedBuffer<T>,
        n: usize,
    ) -> Result<(), CudaError> {
        if n > src.len || at + n > dst.len {
            return Err(CudaError::Input(format!(
                "staged upload of {n} values (staging {}) at {at} into a buffer of {}",
                src.len, dst.len
            )));
        }
        if n == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: `src.ptr` holds `src.len` ≥ n values, alive until `src` is dropped, which
        // waits for the event recorded below.
        let values = unsafe { std::slice::from_raw_parts(src.ptr, n) };
        unsafe { drv::memcpy_htod_async(dst.at(at), values, self.stream) }
            .map_err(|e| CudaError::driver("staged host-to-device copy", e))?;
        unsafe { drv::event::record(src.event, self.stream) }
            .map_err(|e| CudaError::driver("recording a staging event", e))
    }

    /// Writes `host` into `dst` starting at element `at`.
    pub fn copy_to_device<T: Copy>(
        &self,
        dst: &DeviceBuffer<T>,
        at: usize,
        host: &[T],
    ) -> Result<(), CudaError> {
        if at + host.len() > dst.len {
            return Err(CudaError::Input(format!(
                "upload of {} values at {at} into a buffer of {}",
                host.len(),
                dst.len
            )));
        }
        if host.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // Pageable host memory: the driver stages the copy before returning, so `host` may be
        // dropped right after.
        unsafe { drv::memcpy_htod_async(dst.at(at), host, self.stream) }
            .map_err(|e| CudaError::driver("host-to-device copy", e))
    }

    /// Reads `src[at..at + out.len()]` into `out` (synchronises the stream).
    pub fn copy_to_host<T: Copy>(
        &self,
        out: &mut [T],
        src: &DeviceBuffer<T>,
        at: usize,
    ) -> Result<(), CudaError> {
        if at + out.len() > src.len {
            return Err(CudaError::Input(format!(
                "download of {} values at {at} from a buffer of {}",
                out.len(),
                src.len
            )));
        }
        if out.is_empty() {
            return Ok(());
        }
        self.bind()?;
        unsafe { drv::memcpy_dtoh_async(out, src.at(at), self.stream) }
            .map_err(|e| CudaError::driver("device-to-host copy", e))?;
        self.synchronize()
    }

    /// The whole buffer on the host.
    pub fn download<T: Copy + Default>(&self, src: &DeviceBuffer<T>) -> Result<Vec<T>, CudaError> {
        let mut out = vec![T::default(); src.len];
        self.copy_to_host(&mut out, src, 0)?;
        Ok(out)
    }

    /// Copies `len` values of `T` between device addresses (from `DeviceBuffer::at`).
    pub fn copy_device<T>(&self, dst: u64, src: u64, len: usize) -> Result<(), CudaError> {
        if len == 0 {
            return Ok(());
        }
        self.bind()?;
        unsafe { drv::memcpy_dtod_async(dst, src, len * std::mem::size_of::<T>(), self.stream) }
            .map_err(|e| CudaError::driver("device-to-device copy", e))
    }

    /// Sets every byte of `buf` to 0.
    pub fn memset_zero<T>(&self, buf: &DeviceBuffer<T>) -> Result<(), CudaError> {
        self.zero_range::<T>(buf.ptr, buf.len)
    }

    /// Sets `len` values of `T` starting at device address `ptr` to 0.
    pub fn zero_range<T>(&self, ptr: u64, len: usize) -> Result<(), CudaError> {
        if len == 0 {
            return Ok(());
        }
        self.bind()?;
        unsafe { drv::memset_d8_async(ptr, 0, len * std::mem::size_of::<T>(), self.stream) }
            .map_err(|e| CudaError::driver("memset", e))
    }

    /// Copies `src` (a buffer of `src_be`'s device, another GPU or this one) into `dst` (this
    /// device's), device to device: peer to peer where the GPUs allow it, staged by the driver
    /// where they do not; never through a host buffer of r1's. `src_be`'s stream is waited for
    /// first (its kernels may still be writing `src`), and the copy is finished on return.
    pub fn copy_from_peer<T: Copy>(
        &self,
        dst: &DeviceBuffer<T>,
        src_be: &CudaBackend,
        src: &DeviceBuffer<T>,
    ) -> Result<(), CudaError> {
        if dst.len != src.len {
            return Err(CudaError::Input(format!(
                "peer copy of {} values into a buffer of {}",
                src.len, dst.len
            )));
        }
        if src.len == 0 {
            return Ok(());
        }
        src_be.synchronize()?;
        self.bind()?;
        let bytes = src.len * std::mem::size_of::<T>();
        unsafe {
            drv::memcpy_peer_async(
                self.ctx.cu_ctx(),
                dst.ptr,
                src_be.ctx.cu_ctx(),
                src.ptr,
                bytes,
                self.stream,
            )
        }
        .map_err(|e| CudaError::driver(format!("peer copy of {bytes} bytes"), e))?;
        self.synchronize()
    }

    /// Waits for everything queued on the stream; reports a kernel's failure.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.bind()?;
        unsafe { drv::stream::synchronize(self.stream) }
            .map_err(|e| CudaError::driver("stream synchronize (a kernel failed?)", e))
    }

    /// The PTX of `kernel` for this device: from the disk cache, else NVRTC (then cached).
    fn ptx(&self, kernel: &KernelSource) -> Result<String, CudaError> {
        if let Some(dir) = &self.ptx_cache {
            let path = ptx_cache_path(dir, kernel, &self.arch);
            if let Ok(text) = std::fs::read_to_string(&path) {
                tracing::debug!(kernel = kernel.name, path = %path.display(), "PTX from disk cache");
                return Ok(text);
            }
            let ptx = compile_kernel_ptx(kernel, &self.arch, &[])?;
            // A cache that cannot be written is not fatal: the PTX is in memory.
            if std::fs::create_dir_all(dir).is_ok() {
                let _ = std::fs::write(&path, &ptx);
            }
            return Ok(ptx);
        }
        compile_kernel_ptx(kernel, &self.arch, &[])
    }

    fn module(&self, name: &'static str) -> Result<Arc<CudaModule>, CudaError> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(name) {
            return Ok(m.clone());
        }
        let kernel = SOURCES
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| CudaError::Input(format!("no kernel source named `{name}`")))?;
        let ptx = self.ptx(kernel)?;
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|e| {
                CudaError::driver(format!("loading module `{name}` for {}", self.arch), e)
            })?;
        modules.insert(name, module.clone());
        Ok(module)
    }

    fn function(
        &self,
        module: &'static str,
        name: &'static str,
    ) -> Result<CudaFunction, CudaError> {
        {
            let functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = functions.get(name) {
                return Ok(f.clone());
            }
        }
        let f = self
            .module(module)?
            .load_function(name)
            .map_err(|e| CudaError::driver(format!("kernel `{name}` in `{module}.cu`"), e))?;
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, f.clone());
        Ok(f)
    }

    /// Compiles (or loads from the PTX cache) and loads every kernel source now, so that the
    /// first step does not pay for it and a missing compiler shows up at start.
    pub fn load_all_kernels(&self) -> Result<(), CudaError> {
        for k in SOURCES {
            self.module(k.name)?;
        }
        Ok(())
    }

    /// Records what `enqueue` queues on the stream into a graph instead of running it: kernels
    /// and GEMMs only (no host copies, no synchronisation, no module loading: call
    /// `load_all_kernels` first). The stream is left usable whether `enqueue` succeeds or not.
    pub fn capture(
        &self,
        enqueue: impl FnOnce() -> Result<(), CudaError>,
    ) -> Result<DeviceGraph, CudaError> {
        self.bind()?;
        {
            let mut ws = self
                .cublas_workspace
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if ws.is_none() {
                let buf = self.alloc::<u8>(CUBLAS_WORKSPACE_BYTES)?;
                let status = unsafe {
                    cublas_sys::cublasSetWorkspace_v2(
                        self.cublas,
                        buf.ptr() as *mut c_void,
                        CUBLAS_WORKSPACE_BYTES,
                    )
                };
                if status != cublas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                    return Err(CudaError::Cublas {
                        context: "cublasSetWorkspace".into(),
                        message: format!("{status:?}"),
                    });
                }
                *ws = Some(buf);
            }
        }
        unsafe {
            drv::stream::begin_capture(
                self.stream,
                drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        }
        .map_err(|e| CudaError::driver("cuStreamBeginCapture", e))?;
        let queued = enqueue();
        // End the capture in every case, so a failed enqueue leaves a usable stream.
        let graph = unsafe { drv::stream::end_capture(self.stream) }
            .map_err(|e| CudaError::driver("cuStreamEndCapture", e));
        let graph = match (queued, graph) {
            (Ok(()), Ok(graph)) => graph,
            (Err(e), Ok(graph)) => {
                let _ = unsafe { drv::graph::destroy(graph) };
                return Err(e);
            }
            (Err(e), Err(_)) | (Ok(()), Err(e)) => return Err(e),
        };
        let exec = unsafe { drv::graph::instantiate(graph, drv_sys::CUgraphInstantiate_flags(0)) };
        let _ = unsafe { drv::graph::destroy(graph) };
        let exec = exec.map_err(|e| CudaError::driver("cuGraphInstantiate", e))?;
        Ok(DeviceGraph {
            exec,
            ctx: self.ctx.clone(),
        })
    }

    /// Launches `module.cu`'s kernel `name` on the stream.
    pub fn launch(
        &self,
        (module, name): (&'static str, &'static str),
        grid: (u32, u32, u32),
        block: u32,
        args: &[Arg],
    ) -> Result<(), CudaError> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let f = self.function(module, name)?;
        self.bind()?;
        // Each argument lives in an 8-byte slot; the kernel reads as many bytes as its parameter
        // type has, and x86-64 and the GPU are both little-endian.
        let mut slots: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                Arg::Ptr(p) => p,
                Arg::I32(v) => v as u32 as u64,
                Arg::I64(v) => v as u64,
                Arg::U64(v) => v,
                Arg::F32(v) => v.to_bits() as u64,
            })
            .collect();
        let mut params: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        unsafe {
            drv::launch_kernel(
                f.cu_function(),
                grid,
                (block, 1, 1),
                0,
                self.stream,
                &mut params,
            )
        }
        .map_err(|e| CudaError::driver(format!("launching `{name}`"), e))
    }

    /// Launches an elementwise kernel over `n` items, 256 threads a block.
    pub fn launch_1d(
        &self,
        kernel: (&'static str, &'static str),
        n: usize,
        args: &[Arg],
    ) -> Result<(), CudaError> {
        let blocks = n.div_ceil(256);
        let blocks = u32::try_from(blocks)
            .map_err(|_| CudaError::Input(format!("{n} elements is too many for one launch")))?;
        self.launch(kernel, (blocks, 1, 1), 256, args)
    }

    /// Row-major `out[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · out` with bf16 operands,
    /// f32 output and f32 accumulation. `A` is stored [M,K] (or [K,M] when `trans_a`), `B` [K,N]
    /// (or [N,K] when `trans_b`).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bf16(
        &self,
        out: u64,
        a: u64,
        b: u64,
        (m, n, k): (usize, usize, usize),
        trans_a: bool,
        trans_b: bool,
        alpha: f32,
        beta: f32,
    ) -> Result<(), CudaError> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        let to_int = |v: usize| {
            i32::try_from(v).map_err(|_| CudaError::Input(format!("GEMM dimension {v} too large")))
        };
        let (mi, ni, ki) = (to_int(m)?, to_int(n)?, to_int(k)?);
        let lda = if trans_a { mi } else { ki };
        let ldb = if trans_b { ki } else { ni };
        let op = |t: bool| {
            if t {
                cublas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                cublas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        self.bind()?;
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: cuBLAS gets B first.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                self.cublas,
                op(trans_b),
                op(trans_a),
                ni,
                mi,
                ki,
                &alpha as *const f32 as *const c_void,
                b as *const c_void,
                cublas_sys::cudaDataType::CUDA_R_16BF,
                ldb,
                a as *const c_void,
                cublas_sys::cudaDataType::CUDA_R_16BF,
                lda,
                &beta as *const f32 as *const c_void,
                out as *mut c_void,
                cublas_sys::cudaDataType::CUDA_R_32F,
                ni,
                cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| CudaError::Cublas {
            context: format!("cublasGemmEx m={m} n={n} k={k} ta={trans_a} tb={trans_b}"),
            message: format!("{e:?}"),
        })
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        let _ = self.bind();
        let _ = self.synchronize();
        unsafe {
            let _ = cudarc::cublas::result::destroy_handle(self.cublas);
            let _ = drv::stream::destroy(self.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_logs_are_read_per_kernel() {
        let log = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'attention_forward' for 'sm_90'
ptxas info    : Function properties for attention_forward
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 48 registers, used 0 barriers, 4096 bytes smem
ptxas info    : Compiling entry function 'k2' for 'sm_90'
ptxas info    : Function properties for k2
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers
";
        let got = parse_ptxas_log(log);
        assert_eq!(
            got,
            vec![
                KernelResources {
                    name: "attention_forward".into(),
                    registers: 48,
                    shared: 4096,
                    ..Default::default()
                },
                KernelResources {
                    name: "k2".into(),
                    registers: 255,
                    spill_stores: 8,
                    spill_loads: 12,
                    stack: 16,
                    shared: 0,
                },
            ]
        );
    }

    #[test]
    fn every_kernel_source_is_listed_once_and_named_by_its_file() {
        let mut names: Vec<_> = SOURCES.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SOURCES.len());
        for k in SOURCES {
            assert!(
                k.source.contains("extern \"C\" __global__"),
                "{}.cu defines kernels",
                k.name
            );
        }
    }

    #[test]
    fn ptx_cache_names_change_with_the_source_and_the_arch() {
        let dir = Path::new("/cache");
        let a = ptx_cache_path(dir, &SOURCES[0], "compute_90");
        let b = ptx_cache_path(dir, &SOURCES[0], "compute_80");
        let c = ptx_cache_path(dir, &SOURCES[1], "compute_90");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, ptx_cache_path(dir, &SOURCES[0], "compute_90"));
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("elementwise-compute_90-"));
    }
}
