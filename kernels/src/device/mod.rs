//! Devices: which one a job asks for (`cpu`, `cuda:N`, `auto`), and which ones this machine has.
//!
//! A `DeviceSpec` is what a user writes in a job config or passes on the command line. `resolve`
//! turns it into a concrete `Device` against what `list` finds, or says why it cannot: a config
//! that asks for `cuda:0` on a machine without a GPU fails here, before a run is created.
//!
//! The device layer proper: `backend` defines the two interfaces every worker computes through
//! (`TrainEngine`: a model resident on a device for training and scoring; `DecodeEngine`:
//! KV-cache decoding with sampling next to the logits) and `open` / `open_decoder`, which pick
//! the implementation for a `Device`: `cpu` (the CPU engine, call for call) or `cuda` (the CUDA
//! backend; a clear error on a machine without one).

pub mod backend;
pub mod cpu;
pub mod cuda;

pub use backend::{
    open, open_decoder, open_decoder_with, DecodeEngine, Draw, ModelRole, PromptPrefix, TrainEngine,
};

pub mod memory;
pub mod placement;
pub mod resident;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use memory::{MemoryError, MemoryEstimate, RunShape};
pub use placement::{DevicesConfig, Placement, PlacementError};

/// A device as written in a config: `cpu`, `cuda:N` (`cuda` alone is `cuda:0`), or `auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// The GPUs present, else the CPU.
    #[default]
    Auto,
    /// The CPU engine (the reference backend).
    Cpu,
    /// CUDA device with this ordinal.
    Cuda(usize),
}

/// A concrete device a worker runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Device {
    /// The CPU engine.
    Cpu,
    /// CUDA device with this ordinal.
    Cuda(usize),
}

/// The precision of the sampler's weights (`[devices] sampler_precision`). The learner always
/// keeps f32 master weights; a sampler in bf16 reads a half-size copy of them, refreshed with
/// every update, so its log-probs differ from the learner's by the rounding of the weights. The
/// learner then corrects for the mismatch (`[learner.grpo] sampler_is_mode`) and reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The device's own: f32 on the CPU (the policy's weights, read in place), bf16 on CUDA.
    #[default]
    Auto,
    /// f32 weights: the sampler's log-probs are the learner's (within 1e-4).
    F32,
    /// bf16 weights, f32 activations and sums on the CPU (bf16 GEMM operands on CUDA).
    Bf16,
}

impl Precision {
    /// The precision `device` decodes in for this setting (`Auto` resolved).
    pub fn on(self, device: Device) -> Precision {
        match (self, device) {
            (Precision::Auto, Device::Cpu) => Precision::F32,
            (Precision::Auto, Device::Cuda(_)) => Precision::Bf16,
            (p, _) => p,
        }
    }

    /// Whether a sampler in this precision gives the learner's own log-probs (no correction
    /// needed): f32 only.
    pub fn exact(self) -> bool {
        self == Precision::F32
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// How data-parallel learner replicas sum their gradients (`[devices] all_reduce`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllReduce {
    /// NCCL when every replica is on a GPU and `libnccl.so.2` opens; through host memory
    /// otherwise (and the run's notes say why).
    #[default]
    Auto,
    /// On the GPUs through NCCL; refused before the run starts where it cannot be.
    Nccl,
    /// Through host memory: each replica's gradients downloaded, summed in rank order (the same
    /// bits whatever the devices), loaded back.
    Host,
}

impl fmt::Display for AllReduce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllReduce::Auto => "auto",
            AllReduce::Nccl => "nccl",
            AllReduce::Host => "host",
        })
    }
}

/// One device this machine has, with its memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// `cpu` or `cuda:N`.
    pub device: Device,
    /// A readable name ("NVIDIA H100 80GB HBM3", or the CPU's model name).
    pub name: String,
    /// Total memory in bytes (system RAM for the CPU).
    pub total_bytes: u64,
    /// Free memory in bytes when listed (available RAM for the CPU).
    pub free_bytes: u64,
}

/// What `list` found, and why CUDA devices are missing when they are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceList {
    /// The CPU first, then every CUDA device by ordinal.
    pub devices: Vec<DeviceInfo>,
    /// Why no CUDA device is listed (no driver, no device), when none is.
    pub cuda_unavailable: Option<String>,
    /// Why GPU learner replicas cannot all-reduce through NCCL here (no GPU, no
    /// `libnccl.so.2`), when they cannot.
    #[serde(default)]
    pub nccl_unavailable: Option<String>,
}

/// Why a spec does not parse or does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not `cpu`, `cuda`, `cuda:N` or `auto`.
    #[error("`{0}` is not a device: write `cpu`, `cuda:N` (e.g. `cuda:0`) or `auto`")]
    Parse(String),
    /// A CUDA device was asked for and is not there.
    #[error("{spec} was asked for, but {why}")]
    Unavailable {
        /// The spec as written.
        spec: String,
        /// What the machine has instead.
        why: String,
    },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(text: &str) -> Result<Self, DeviceError> {
        let t = text.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| DeviceError::Parse(text.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Device {
    type Error = DeviceError;

    fn try_from(text: String) -> Result<Self, DeviceError> {
        match text.parse::<DeviceSpec>()? {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => Ok(Device::Cuda(n)),
            DeviceSpec::Auto => Err(DeviceError::Parse(text)),
        }
    }
}

impl DeviceList {
    /// How many CUDA devices were found.
    pub fn cuda_count(&self) -> usize {
        self.devices
            .iter()
            .filter(|d| matches!(d.device, Device::Cuda(_)))
            .count()
    }
}

impl DeviceSpec {
    /// The concrete device this spec means on a machine with `list`'s devices. `auto` is the
    /// first GPU when there is one, else the CPU (`resolve_auto_note` says which and why).
    pub fn resolve(self, list: &DeviceList) -> Result<Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto if list.cuda_count() > 0 => Ok(Device::Cuda(0)),
            DeviceSpec::Auto => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) if n < list.cuda_count() => Ok(Device::Cuda(n)),
            DeviceSpec::Cuda(n) => Err(DeviceError::Unavailable {
                spec: format!("cuda:{n}"),
                why: match (&list.cuda_unavailable, list.cuda_count()) {
                    (Some(why), _) => format!("this machine has no usable GPU ({why})"),
                    (None, count) => format!("this machine has {count} CUDA device(s)"),
                },
            }),
        }
    }

    /// For `auto` on a machine without a GPU: the line that says the run falls back to the CPU.
    pub fn auto_fallback_note(self, list: &DeviceList) -> Option<String> {
        (self == DeviceSpec::Auto && list.cuda_count() == 0).then(|| {
            format!(
                "device auto: no GPU found ({}), running on the CPU",
                list.cuda_unavailable.as_deref().unwrap_or("no CUDA device")
            )
        })
    }
}

/// The devices of this machine: the CPU, then every CUDA device the driver reports. Never panics:
/// a machine without a driver lists the CPU and says why there is no GPU.
pub fn list() -> DeviceList {
    let mut devices = vec![cpu_info()];
    let cuda_unavailable = match crate::cuda::backend::device_infos() {
        Ok(gpus) => {
            let none = gpus.is_empty();
            devices.extend(gpus.into_iter().map(|gpu| DeviceInfo {
                device: Device::Cuda(gpu.ordinal),
                name: gpu.name,
                total_bytes: gpu.total_bytes,
                free_bytes: gpu.free_bytes,
            }));
            none.then(|| "the driver reports no CUDA device".to_string())
        }
        Err(e) => Some(e.to_string()),
    };
    let nccl_unavailable = match &cuda_unavailable {
        Some(why) => Some(format!("no CUDA device ({why})")),
        None if !crate::collective::nccl::nccl_available() => Some(
            "libnccl.so.2 could not be opened (not on the library path; pip's nvidia-nccl-cu13 \
             ships it)"
                .to_string(),
        ),
        None => None,
    };
    DeviceList {
        devices,
        cuda_unavailable,
        nccl_unavailable,
    }
}

fn cpu_info() -> DeviceInfo {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "CPU".to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    DeviceInfo {
        device: Device::Cpu,
        name: format!("{model} ({threads} threads)"),
        total_bytes: field("MemTotal:"),
        free_bytes: field("MemAvailable:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(gpus: usize) -> DeviceList {
        let mut devices = vec![cpu_info()];
        devices.extend((0..gpus).map(|n| DeviceInfo {
            device: Device::Cuda(n),
            name: "test GPU".into(),
            total_bytes: 80 << 30,
            free_bytes: 79 << 30,
        }));
        DeviceList {
            devices,
            cuda_unavailable: (gpus == 0).then(|| "no CUDA driver: libcuda.so".to_string()),
            nccl_unavailable: (gpus == 0).then(|| "no CUDA device".to_string()),
        }
    }

    #[test]
    fn specs_parse_and_print_back() {
        for (text, spec) in [
            ("auto", DeviceSpec::Auto),
            ("cpu", DeviceSpec::Cpu),
            ("CUDA", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), spec);
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        let err = "cuda:x".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(err.contains("`cuda:x` is not a device"), "{err}");
        assert!("tpu".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn cuda_on_a_machine_without_a_gpu_says_why() {
        let err = DeviceSpec::Cuda(0).resolve(&machine(0)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cuda:0 was asked for"), "{text}");
        assert!(text.contains("no usable GPU (no CUDA driver"), "{text}");
        let err = DeviceSpec::Cuda(2).resolve(&machine(2)).unwrap_err();
        assert!(err.to_string().contains("has 2 CUDA device(s)"), "{err}");
    }

    #[test]
    fn auto_takes_the_first_gpu_else_the_cpu_and_says_so() {
        assert_eq!(DeviceSpec::Auto.resolve(&machine(2)), Ok(Device::Cuda(0)));
        assert_eq!(DeviceSpec::Auto.auto_fallback_note(&machine(2)), None);
        assert_eq!(DeviceSpec::Auto.resolve(&machine(0)), Ok(Device::Cpu));
        let note = DeviceSpec::Auto.auto_fallback_note(&machine(0)).unwrap();
        assert!(note.contains("running on the CPU"), "{note}");
    }

    #[test]
    fn this_machine_lists_its_cpu_first_and_never_panics() {
        let list = list();
        assert_eq!(list.devices[0].device, Device::Cpu);
        assert!(list.devices[0].total_bytes > 0);
        if list.cuda_count() == 0 {
            assert!(list.cuda_unavailable.is_some());
        }
    }

    #[test]
    fn devices_round_trip_through_serde() {
        let json = serde_json::to_string(&Device::Cuda(1)).unwrap();
        assert_eq!(json, "\"cuda:1\"");
        assert_eq!(
            serde_json::from_str::<Device>(&json).unwrap(),
            Device::Cuda(1)
        );
        assert!(serde_json::from_str::<Device>("\"auto\"").is_err());
        let spec: DeviceSpec = serde_json::from_str("\"cuda:0\"").unwrap();
        assert_eq!(spec, DeviceSpec::Cuda(0));
    }
}
