//! Per-device series of r1d's registry: what each run's estimate puts on each device, what
//! r1d's own process holds on the CPU, and each device's share of a step's time.
//!
//! - `r1_device_memory_estimate_bytes{run,device,category}`: the pre-start estimate of the run
//!   (`r1_kernels::device::memory`), set when the run is accepted.
//! - `r1_device_memory_in_use_bytes{device}`: on the CPU r1d's resident set; on a GPU the
//!   memory in use on the device (every process's, as `nvidia-smi` shows it), read from the
//!   driver through the context an engine of r1d holds there. Both read at every scrape; a GPU
//!   no engine holds has no series (reading it would create a context).
//! - `r1_device_step_time_ratio{run,device,phase}`: the latest step's phase time over its
//!   wall time, on the device that phase runs on (sample on the sampler's, learn on the
//!   learner's; judging and checkpoints on the CPU).

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{GaugeVec, Opts, Registry};
use r1_kernels::device::{Device, MemoryEstimate, Placement};

/// The per-device series and where each run's phases run.
pub struct DeviceMetrics {
    /// `r1_device_memory_estimate_bytes{run,device,category}`.
    estimate: GaugeVec,
    /// `r1_device_memory_in_use_bytes{device}`.
    in_use: GaugeVec,
    /// `r1_device_step_time_ratio{run,device,phase}`.
    step_share: GaugeVec,
    /// Each run's phase → device, from its placement (absent: everything on the CPU).
    phase_devices: Mutex<HashMap<String, HashMap<&'static str, Device>>>,
    /// The GPUs whose memory the last scrape set (a series is removed when its device is no
    /// longer held).
    gpus_shown: Mutex<Vec<String>>,
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let vec = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
    registry
        .register(Box::new(vec.clone()))
        .expect("r1d metric names are unique and well formed");
    vec
}

/// The device a step phase runs on under `placement`.
fn phase_device(placement: &Placement, phase: &str) -> Device {
    match phase {
        "sample" => placement.sampler,
        "learn" => placement.learner(),
        _ => Device::Cpu,
    }
}

impl DeviceMetrics {
    /// Registers the series on `registry`.
    pub fn new(registry: &Registry) -> Self {
        DeviceMetrics {
            estimate: gauge(
                registry,
                "r1_device_memory_estimate_bytes",
                "Bytes the run's pre-start estimate puts on a device, by category (weights, gradients, AdamW moments, activations, KV cache, ...).",
                &["run", "device", "category"],
            ),
            in_use: gauge(
                registry,
                "r1_device_memory_in_use_bytes",
                "Memory in use on a device now: r1d's resident set on the CPU; on a GPU r1d computes on, the device's memory in use (all processes).",
                &["device"],
            ),
            step_share: gauge(
                registry,
                "r1_device_step_time_ratio",
                "Share of the latest step's wall time a phase spent on a device (0 to 1).",
                &["run", "device", "phase"],
            ),
            phase_devices: Mutex::new(HashMap::new()),
            gpus_shown: Mutex::new(Vec::new()),
        }
    }

    /// Records a run's placement and its memory estimate by device and category.
    pub fn set_run(&self, run: &str, placement: &Placement, estimate: &MemoryEstimate) {
        self.forget_run(run);
        for device in &estimate.devices {
            let name = device.device.to_string();
            for part in &device.parts {
                self.estimate
                    .with_label_values(&[run, name.as_str(), part.category.as_str()])
                    .set(part.bytes);
            }
        }
        let phases = ["sample", "judge", "learn", "checkpoint"]
            .into_iter()
            .map(|phase| (phase, phase_device(placement, phase)))
            .collect();
        self.phase_devices
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(run.to_string(), phases);
    }

    /// Sets each phase's share of a step of `step_seconds` on its device.
    pub fn observe_step(&self, run: &str, phases: &[(String, f64)], step_seconds: f64) {
        if !(step_seconds.is_finite() && step_seconds > 0.0) {
            return;
        }
        let devices = self
            .phase_devices
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let of_run = devices.get(run);
        for (phase, seconds) in phases {
            if !(seconds.is_finite() && *seconds >= 0.0) {
                continue;
            }
            let device = of_run
                .and_then(|m| m.get(phase.as_str()).copied())
                .unwrap_or(Device::Cpu)
                .to_string();
            self.step_share
                .with_label_values(&[run, device.as_str(), phase.as_str()])
                .set((seconds / step_seconds).min(1.0));
        }
    }

    /// Reads what is in use now into `r1_device_memory_in_use_bytes`: r1d's resident set, and
    /// each GPU an engine of r1d holds.
    pub fn refresh(&self) {
        if let Some(bytes) = resident_bytes() {
            self.in_use.with_label_values(&["cpu"]).set(bytes);
        }
        self.show_gpus(&r1_kernels::cuda::usage::gpu_memory_in_use());
    }

    /// Sets the GPUs' series to `gpus` and removes those of GPUs no longer listed.
    fn show_gpus(&self, gpus: &[r1_kernels::cuda::usage::GpuMemory]) {
        let mut shown = self
            .gpus_shown
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now: Vec<String> = gpus
            .iter()
            .map(|g| Device::Cuda(g.ordinal).to_string())
            .collect();
        for gone in shown.iter().filter(|d| !now.contains(d)) {
            let _ = self.in_use.remove_label_values(&[gone.as_str()]);
        }
        for (gpu, name) in gpus.iter().zip(&now) {
            self.in_use
                .with_label_values(&[name.as_str()])
                .set(gpu.used_bytes as f64);
        }
        *shown = now;
    }

    /// Removes every series of `run`.
    pub fn forget_run(&self, run: &str) {
        for vec in [&self.estimate, &self.step_share] {
            crate::series::remove_run(vec, run);
        }
        self.phase_devices
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(run);
    }
}

/// This process's resident set (`VmRSS` in /proc/self/status), bytes; `None` off Linux.
fn resident_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use r1_kernels::device::memory::{DeviceEstimate, MemoryPart};

    #[test]
    fn estimates_shares_and_resident_memory_are_exported_per_device() {
        let registry = Registry::new();
        let metrics = DeviceMetrics::new(&registry);
        let placement = Placement {
            sampler: Device::Cuda(1),
            learners: vec![Device::Cuda(0)],
            ..Placement::default()
        };
        let estimate = MemoryEstimate {
            devices: vec![DeviceEstimate {
                device: Device::Cuda(0),
                parts: vec![MemoryPart {
                    category: "weights".into(),
                    bytes: 2048.0,
                }],
            }],
        };
        metrics.set_run("run-0001", &placement, &estimate);
        metrics.observe_step(
            "run-0001",
            &[("sample".into(), 3.0), ("learn".into(), 1.0)],
            4.0,
        );
        metrics.refresh();
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .unwrap();
        for line in [
            r#"r1_device_memory_estimate_bytes{category="weights",device="cuda:0",run="run-0001"} 2048"#,
            r#"r1_device_step_time_ratio{device="cuda:1",phase="sample",run="run-0001"} 0.75"#,
            r#"r1_device_step_time_ratio{device="cuda:0",phase="learn",run="run-0001"} 0.25"#,
            r#"r1_device_memory_in_use_bytes{device="cpu"} "#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // Without an engine on a GPU there is no GPU series (this test opens none).
        assert!(
            !text.contains(r#"r1_device_memory_in_use_bytes{device="cuda"#),
            "{text}"
        );
        // A GPU's series follows what the driver reports, and goes when no engine holds it.
        let gpu = |ordinal, used| r1_kernels::cuda::usage::GpuMemory {
            ordinal,
            used_bytes: used,
            total_bytes: 80 << 30,
        };
        metrics.show_gpus(&[gpu(0, 5 << 30), gpu(1, 1 << 30)]);
        metrics.show_gpus(&[gpu(1, 2 << 30)]);
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .unwrap();
        assert!(
            text.contains(&format!(
                r#"r1_device_memory_in_use_bytes{{device="cuda:1"}} {}"#,
                2u64 << 30
            )),
            "{text}"
        );
        assert!(
            !text.contains(r#"r1_device_memory_in_use_bytes{device="cuda:0"}"#),
            "{text}"
        );
        metrics.forget_run("run-0001");
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .unwrap();
        assert!(!text.contains("run-0001"), "{text}");
    }
}
