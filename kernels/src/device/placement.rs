//! Placement: which device each worker of a run uses — the `[devices]` table of a job config,
//! resolved against the machine's devices ([`super::list`]) into concrete [`Device`]s.
//!
//! ```toml
//! [devices]
//! sampler = "cuda:1"       # decoding (rollouts, rejection sampling, evaluation)
//! sampler_precision = "auto" # its weights: f32 | bf16 | auto (f32 on the CPU, bf16 on CUDA)
//! learner = "cuda:0"       # training; with learners = N, replicas on cuda:0..cuda:N-1
//! reward_models = "cuda:1" # the preference stage's reward-model scorer
//! learners = 1             # data-parallel learner replicas
//! shard_optimizer = false  # ZeRO-1: each replica keeps 1/N of the AdamW moments
//! all_reduce = "auto"      # replicas' gradients: nccl | host | auto (NCCL on GPUs when it loads)
//! ```
//!
//! Every key defaults to `auto` (1 learner, no sharding), so a config without the table runs as
//! before. `auto` places the learners on the first GPUs, the sampler on the next GPU when there is
//! one free (else beside the first learner), the reward models with the sampler; on a machine
//! without a GPU everything goes to the CPU and [`Placement::notes`] says so. A config that asks
//! for a GPU the machine lacks fails here, naming the key — before a run gets an id.

use serde::{Deserialize, Serialize};

use super::{AllReduce, Device, DeviceError, DeviceList, DeviceSpec, Precision};

/// Most data-parallel learner replicas a config may ask for: far above any one host's GPUs, low
/// enough that CPU replicas of a tiny model cannot be asked for by the million.
pub const MAX_LEARNERS: usize = 64;

/// The `[devices]` table of a job config: the device of each worker, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesConfig {
    /// Where rollouts (and rejection sampling, evaluation) are decoded.
    pub sampler: DeviceSpec,
    /// The sampler's weights: `f32` (the policy's own), `bf16` (a half-size copy refreshed each
    /// step; the learner corrects for the mismatch), `auto` (f32 on the CPU, bf16 on CUDA).
    pub sampler_precision: Precision,
    /// Where the policy trains; the first replica's device when `learners > 1`.
    pub learner: DeviceSpec,
    /// Where the preference stage's reward models score.
    pub reward_models: DeviceSpec,
    /// Data-parallel learner replicas (each takes a share of every minibatch; gradients are
    /// all-reduced). On CUDA each replica needs a GPU of its own.
    pub learners: usize,
    /// ZeRO-1: each replica keeps only its 1/N share of the AdamW moments.
    pub shard_optimizer: bool,
    /// How the replicas sum their gradients: `nccl` (on the GPUs), `host` (through host
    /// memory), `auto` (NCCL when every replica is on a GPU and the library loads).
    pub all_reduce: AllReduce,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            sampler: DeviceSpec::Auto,
            sampler_precision: Precision::Auto,
            learner: DeviceSpec::Auto,
            reward_models: DeviceSpec::Auto,
            learners: 1,
            shard_optimizer: false,
            all_reduce: AllReduce::Auto,
        }
    }
}

/// The concrete devices of a run's workers: what the integrator hands each worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The sampler's device.
    pub sampler: Device,
    /// The precision of the sampler's weights on that device (never `Auto`).
    #[serde(default = "f32_precision")]
    pub sampler_precision: Precision,
    /// One device per learner replica, replica 0 first (never empty).
    pub learners: Vec<Device>,
    /// The reward-model scorer's device.
    pub reward_models: Device,
    /// Whether replicas shard the AdamW moments (ZeRO-1).
    pub shard_optimizer: bool,
    /// How the replicas sum their gradients: `Nccl` or `Host`, never `Auto`.
    #[serde(default = "host_all_reduce")]
    pub all_reduce: AllReduce,
    /// What a person should know about how `auto` resolved (the CPU fallback), for the run's log.
    pub notes: Vec<String>,
}

impl Default for Placement {
    /// Everything on the CPU, one learner: what every run did before devices existed.
    fn default() -> Self {
        Placement {
            sampler: Device::Cpu,
            sampler_precision: Precision::F32,
            learners: vec![Device::Cpu],
            reward_models: Device::Cpu,
            shard_optimizer: false,
            all_reduce: AllReduce::Host,
            notes: Vec::new(),
        }
    }
}

/// What a placement saved before `sampler_precision` existed decoded in.
fn f32_precision() -> Precision {
    Precision::F32
}

/// How the replicas of a placement saved before `all_reduce` existed summed their gradients.
fn host_all_reduce() -> AllReduce {
    AllReduce::Host
}

/// Why a `[devices]` table cannot be placed on this machine; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PlacementError {
    /// The key path (`devices.sampler`).
    pub key: String,
    /// What is wrong, and what the machine has.
    pub message: String,
}

impl PlacementError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        PlacementError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl DevicesConfig {
    /// Range checks that need no machine: `learners` within 1..=[`MAX_LEARNERS`].
    pub fn validate(&self) -> Result<(), PlacementError> {
        if self.learners == 0 || self.learners > MAX_LEARNERS {
            return Err(PlacementError::new(
                "devices.learners",
                format!(
                    "must be between 1 and {MAX_LEARNERS}, got {}",
                    self.learners
                ),
            ));
        }
        Ok(())
    }

    /// Resolves every worker's device against `list` (see the module doc for `auto`).
    pub fn resolve(&self, list: &DeviceList) -> Result<Placement, PlacementError> {
        self.validate()?;
        let gpus = list.cuda_count();
        let n = self.learners;
        let unavailable = |key: &str, e: DeviceError| PlacementError::new(key, e.to_string());
        let learners: Vec<Device> = match self.learner {
            DeviceSpec::Cpu => vec![Device::Cpu; n],
            DeviceSpec::Auto if gpus == 0 => vec![Device::Cpu; n],
            DeviceSpec::Auto | DeviceSpec::Cuda(_) => {
                let first = match self.learner {
                    DeviceSpec::Cuda(k) => {
                        DeviceSpec::Cuda(k)
                            .resolve(list)
                            .map_err(|e| unavailable("devices.learner", e))?;
                        k
                    }
                    _ => 0,
                };
                if first + n > gpus {
                    return Err(PlacementError::new(
                        "devices.learners",
                        format!(
                            "{n} learner replicas from {} need {n} GPUs (cuda:{first}..cuda:{}), \
                             but this machine has {gpus}",
                            self.learner,
                            first + n - 1
                        ),
                    ));
                }
                (first..first + n).map(Device::Cuda).collect()
            }
        };
        let sampler = match self.sampler {
            DeviceSpec::Auto if gpus == 0 => Device::Cpu,
            // A GPU of its own when one is left after the learners, else beside the first.
            DeviceSpec::Auto => {
                let used = learners
                    .iter()
                    .filter_map(|d| match d {
                        Device::Cuda(k) => Some(*k),
                        Device::Cpu => None,
                    })
                    .max();
                match used {
                    Some(last) if last + 1 < gpus => Device::Cuda(last + 1),
                    _ => Device::Cuda(0),
                }
            }
            spec => spec
                .resolve(list)
                .map_err(|e| unavailable("devices.sampler", e))?,
        };
        let sampler_precision = self.sampler_precision.on(sampler);
        if matches!(sampler, Device::Cuda(_)) && sampler_precision == Precision::F32 {
            return Err(PlacementError::new(
                "devices.sampler_precision",
                format!(
                    "f32 is not available on {sampler}: the CUDA decoder computes in bf16 \
                     (write \"bf16\" or \"auto\", or put the sampler on the CPU)"
                ),
            ));
        }
        let reward_models = match self.reward_models {
            DeviceSpec::Auto => sampler,
            spec => spec
                .resolve(list)
                .map_err(|e| unavailable("devices.reward_models", e))?,
        };
        let mut notes = Vec::new();
        let all_reduce = all_reduce(self.all_reduce, &learners, list, &mut notes)?;
        let auto_keys: Vec<&str> = [
            ("sampler", self.sampler),
            ("learner", self.learner),
            ("reward_models", self.reward_models),
        ]
        .into_iter()
        .filter(|(_, spec)| *spec == DeviceSpec::Auto)
        .map(|(key, _)| key)
        .collect();
        if !auto_keys.is_empty() {
            if let Some(note) = DeviceSpec::Auto.auto_fallback_note(list) {
                notes.push(format!("{note} (devices.{})", auto_keys.join(", devices.")));
            }
        }
        if n > 1 {
            let on: Vec<String> = learners.iter().map(Device::to_string).collect();
            notes.push(format!(
                "{n} data-parallel learner replicas on {}{}, gradients all-reduced {}",
                on.join(", "),
                if self.shard_optimizer {
                    ", AdamW moments sharded (ZeRO-1)"
                } else {
                    ""
                },
                match all_reduce {
                    AllReduce::Nccl => "on the GPUs by NCCL",
                    _ => "through host memory",
                }
            ));
        }
        if self.shard_optimizer && n == 1 {
            notes.push(
                "devices.shard_optimizer: one learner holds every AdamW moment; sharding takes \
                 effect with learners > 1"
                    .into(),
            );
        }
        if sampler_precision == Precision::Bf16 && sampler == Device::Cpu {
            notes.push(
                "devices.sampler_precision = bf16: the sampler decodes from a bf16 copy of the \
                 weights; the learner weights its policy term by the truncated sampler ratio \
                 ([learner.grpo] sampler_is_mode) and reports the mismatch"
                    .into(),
            );
        }
        Ok(Placement {
            sampler,
            sampler_precision,
            learners,
            reward_models,
            shard_optimizer: self.shard_optimizer,
            all_reduce,
            notes,
        })
    }
}

/// `[devices] all_reduce` resolved for `learners`: NCCL needs every replica on a GPU of its own
/// and `libnccl.so.2`; `auto` falls back to host memory (with a note when GPU replicas could have
/// used NCCL), `nccl` is refused where it cannot run.
fn all_reduce(
    asked: AllReduce,
    learners: &[Device],
    list: &DeviceList,
    notes: &mut Vec<String>,
) -> Result<AllReduce, PlacementError> {
    let on_gpus = learners.iter().all(|d| matches!(d, Device::Cuda(_)));
    let several = learners.len() > 1;
    match asked {
        AllReduce::Host => Ok(AllReduce::Host),
        AllReduce::Auto if !(on_gpus && several) => Ok(AllReduce::Host),
        AllReduce::Auto => match &list.nccl_unavailable {
            None => Ok(AllReduce::Nccl),
            Some(why) => {
                notes.push(format!(
                    "devices.all_reduce = auto: the GPU replicas' gradients go through host \
                     memory: {why}"
                ));
                Ok(AllReduce::Host)
            }
        },
        AllReduce::Nccl if !on_gpus => Err(PlacementError::new(
            "devices.all_reduce",
            "nccl needs every learner replica on a GPU (the learners here include the CPU); \
             write \"host\" or \"auto\"",
        )),
        AllReduce::Nccl => match &list.nccl_unavailable {
            Some(why) => Err(PlacementError::new(
                "devices.all_reduce",
                format!("nccl is not available on this machine: {why}"),
            )),
            None => {
                if !several {
                    notes.push(
                        "devices.all_reduce = nccl: one learner has nothing to all-reduce; \
                         NCCL takes effect with learners > 1"
                            .into(),
                    );
                }
                Ok(AllReduce::Nccl)
            }
        },
    }
}

impl Placement {
    /// Replica 0's device: where the single learner of today's run trains.
    pub fn learner(&self) -> Device {
        self.learners.first().copied().unwrap_or(Device::Cpu)
    }

    /// Every device the run uses, each once, the CPU first, then by ordinal.
    pub fn devices(&self) -> Vec<Device> {
        let mut all: Vec<Device> = self
            .learners
            .iter()
            .copied()
            .chain([self.sampler, self.reward_models])
            .collect();
        all.sort_by_key(|d| match d {
            Device::Cpu => 0,
            Device::Cuda(k) => k + 1,
        });
        all.dedup();
        all
    }

    /// `sampler cuda:1, learner cuda:0, reward models cuda:1` (or `learners cuda:0, cuda:1
    /// (ZeRO-1, NCCL)`): one line for `train --check` and run logs.
    pub fn describe(&self) -> String {
        let learners = if self.learners.len() == 1 {
            format!("learner {}", self.learner())
        } else {
            let how: Vec<&str> = [
                (self.shard_optimizer, "ZeRO-1"),
                (self.all_reduce == AllReduce::Nccl, "NCCL"),
            ]
            .into_iter()
            .filter_map(|(on, what)| on.then_some(what))
            .collect();
            format!(
                "{} learners {}{}",
                self.learners.len(),
                self.learners
                    .iter()
                    .map(Device::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                if how.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", how.join(", "))
                }
            )
        };
        format!(
            "sampler {}, {learners}, reward models {}",
            self.sampler, self.reward_models
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceInfo;

    fn machine(gpus: usize) -> DeviceList {
        let mut devices = vec![DeviceInfo {
            device: Device::Cpu,
            name: "test CPU".into(),
            total_bytes: 64 << 30,
            free_bytes: 60 << 30,
        }];
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

    fn config(sampler: &str, learner: &str, learners: usize) -> DevicesConfig {
        DevicesConfig {
            sampler: sampler.parse().unwrap(),
            learner: learner.parse().unwrap(),
            learners,
            ..DevicesConfig::default()
        }
    }

    #[test]
    fn without_a_gpu_auto_is_the_cpu_and_says_so() {
        let p = DevicesConfig::default().resolve(&machine(0)).unwrap();
        assert_eq!(
            p,
            Placement {
                notes: p.notes.clone(),
                ..Placement::default()
            }
        );
        assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
        assert!(
            p.notes[0].contains("running on the CPU")
                && p.notes[0].contains("libcuda.so")
                && p.notes[0].contains("devices.sampler, devices.learner, devices.reward_models"),
            "{:?}",
            p.notes
        );
        // Explicit cpu everywhere: no note.
        let cpu = DevicesConfig {
            sampler: DeviceSpec::Cpu,
            learner: DeviceSpec::Cpu,
            reward_models: DeviceSpec::Cpu,
            ..DevicesConfig::default()
        };
        assert!(cpu.resolve(&machine(0)).unwrap().notes.is_empty());
    }

    #[test]
    fn a_gpu_the_machine_lacks_is_refused_naming_the_key() {
        let err = config("cuda:0", "cpu", 1).resolve(&machine(0)).unwrap_err();
        assert_eq!(err.key, "devices.sampler");
        let text = err.to_string();
        assert!(
            text.starts_with("devices.sampler: cuda:0 was asked for")
                && text.contains("no usable GPU"),
            "{text}"
        );
        let err = config("cpu", "cuda:1", 1).resolve(&machine(1)).unwrap_err();
        assert_eq!(err.key, "devices.learner");
        let rm = DevicesConfig {
            reward_models: DeviceSpec::Cuda(0),
            ..DevicesConfig::default()
        };
        assert_eq!(
            rm.resolve(&machine(0)).unwrap_err().key,
            "devices.reward_models"
        );
    }

    #[test]
    fn data_parallel_learners_on_cuda_need_a_gpu_each() {
        let err = config("auto", "cuda:0", 4)
            .resolve(&machine(2))
            .unwrap_err();
        assert_eq!(err.key, "devices.learners");
        assert!(
            err.message.contains("need 4 GPUs (cuda:0..cuda:3)") && err.message.contains("has 2"),
            "{err}"
        );
        let p = config("auto", "auto", 2).resolve(&machine(3)).unwrap();
        assert_eq!(p.learners, [Device::Cuda(0), Device::Cuda(1)]);
        assert_eq!(
            (p.sampler, p.reward_models),
            (Device::Cuda(2), Device::Cuda(2))
        );
        assert_eq!(
            p.devices(),
            [Device::Cuda(0), Device::Cuda(1), Device::Cuda(2)]
        );
        // No GPU left for the sampler: it shares the first learner's.
        let p = config("auto", "auto", 2).resolve(&machine(2)).unwrap();
        assert_eq!(p.sampler, Device::Cuda(0));
        // CPU replicas: any number (the in-process all-reduce).
        let p = config("cpu", "cpu", 3).resolve(&machine(0)).unwrap();
        assert_eq!(p.learners, [Device::Cpu; 3]);
        assert_eq!(p.devices(), [Device::Cpu]);
        assert!(
            p.describe().contains("3 learners cpu, cpu, cpu"),
            "{}",
            p.describe()
        );
    }

    #[test]
    fn gpu_replicas_all_reduce_through_nccl_when_it_loads_and_host_memory_otherwise() {
        let with = |all_reduce, learner: &str, n, list: &DeviceList| {
            DevicesConfig {
                all_reduce,
                ..config("auto", learner, n)
            }
            .resolve(list)
        };
        let gpus = machine(3);
        let mut no_nccl = machine(3);
        no_nccl.nccl_unavailable = Some("libnccl.so.2 could not be opened".into());
        // auto: NCCL for GPU replicas where it loads, named in the notes and the description.
        let p = with(AllReduce::Auto, "cuda:0", 2, &gpus).unwrap();
        assert_eq!(p.all_reduce, AllReduce::Nccl);
        assert!(
            p.describe().contains("2 learners cuda:0, cuda:1 (NCCL)"),
            "{}",
            p.describe()
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("all-reduced on the GPUs by NCCL")),
            "{:?}",
            p.notes
        );
        // ... host memory where it does not load, saying why; for one learner or CPU replicas
        // without a word.
        let p = with(AllReduce::Auto, "cuda:0", 2, &no_nccl).unwrap();
        assert_eq!(p.all_reduce, AllReduce::Host);
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("through host memory: libnccl.so.2")),
            "{:?}",
            p.notes
        );
        for (learner, n) in [("cuda:0", 1), ("cpu", 2)] {
            let p = with(AllReduce::Auto, learner, n, &no_nccl).unwrap();
            assert_eq!(p.all_reduce, AllReduce::Host);
            assert!(
                !p.notes.iter().any(|n| n.contains("libnccl")),
                "{:?}",
                p.notes
            );
        }
        // host: always host memory.
        assert_eq!(
            with(AllReduce::Host, "cuda:0", 2, &gpus)
                .unwrap()
                .all_reduce,
            AllReduce::Host
        );
        // nccl: refused where it cannot run, naming the key and why.
        for (learner, list, why) in [
            ("cpu", &gpus, "every learner replica on a GPU"),
            ("cuda:0", &no_nccl, "libnccl.so.2 could not be opened"),
        ] {
            let err = with(AllReduce::Nccl, learner, 2, list).unwrap_err();
            assert_eq!(err.key, "devices.all_reduce");
            assert!(err.message.contains(why), "{err}");
        }
        let err = with(AllReduce::Nccl, "auto", 2, &machine(0)).unwrap_err();
        assert_eq!(err.key, "devices.all_reduce", "{err}");
        // The key parses; placements stored before it existed read as host memory.
        let c: DevicesConfig = serde_json::from_str(r#"{"all_reduce": "nccl"}"#).unwrap();
        assert_eq!(c.all_reduce, AllReduce::Nccl);
        assert!(serde_json::from_str::<DevicesConfig>(r#"{"all_reduce": "mpi"}"#).is_err());
        let mut old = serde_json::to_value(Placement::default()).unwrap();
        old.as_object_mut().unwrap().remove("all_reduce");
        let old: Placement = serde_json::from_value(old).unwrap();
        assert_eq!(old.all_reduce, AllReduce::Host);
    }

    #[test]
    fn learners_are_bounded() {
        for n in [0, MAX_LEARNERS + 1] {
            let err = config("cpu", "cpu", n).resolve(&machine(0)).unwrap_err();
            assert_eq!(err.key, "devices.learners", "{err}");
        }
    }

    #[test]
    fn the_table_parses_with_defaults_and_refuses_unknown_keys() {
        let c: DevicesConfig = serde_json::from_str(r#"{"sampler": "cuda:1"}"#).unwrap();
        assert_eq!(c.sampler, DeviceSpec::Cuda(1));
        assert_eq!(
            (c.learner, c.learners, c.shard_optimizer),
            (DeviceSpec::Auto, 1, false)
        );
        assert!(serde_json::from_str::<DevicesConfig>(r#"{"samplr": "cpu"}"#).is_err());
        let err = serde_json::from_str::<DevicesConfig>(r#"{"learner": "tpu:0"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`tpu:0` is not a device"), "{err}");
    }
}
