//! Per-device series of r1d's registry: what each run's estimate puts on each device, what
//! r1d's own process holds on the CPU, and each device's share of a step's time.
//!
//! - `r1_device_memory_estimate_bytes{run,device,category}`: the pre-start estimate of the run
//!   (`r1_kernels::device::memory`), set when the run is accepted.
//! - `r1_device_memory_in_use_bytes{device="cpu"}`: r1d's resident set, read at every scrape.
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
                "Memory r1d holds on a device now: its resident set on the CPU.",
                &["device"],
            ),
            step_share: gauge(
                registry,
                "r1_device_step_time_ratio",
                "Share of the latest step's wall time a phase spent on a device (0 to 1).",
                &["run", "device", "phase"],
            ),
            phase_devices: Mutex::new(HashMap::new()),
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

    /// Reads what r1d holds now (its resident set) into `r1_device_memory_in_use_bytes`.
    pub fn refresh(&self) {
        if let Some(bytes) = resident_bytes() {
            self.in_use.with_label_values(&["cpu"]).set(bytes);
        }
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
        metrics.forget_run("run-0001");
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .unwrap();
        assert!(!text.contains("run-0001"), "{text}");
    }
}
