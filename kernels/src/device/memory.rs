//! The memory a run needs on each of its devices, by category, checked against what each device
//! has before the run starts.
//!
//! The figures are the engine's own buffers, counted the way they are allocated: the CPU learner's
//! arena is `cpu::Activations` (plus the LM head's logit chunk) at the minibatch's (B, T); the
//! sampler's KV cache and decoding buffers are `cpu::KvCache::bytes` / `cpu::DecodeScratch::bytes`;
//! on CUDA the parameters are `cuda::DeviceModel` (f32 master, bf16 copy, f32 gradients and AdamW
//! moments when trainable, RoPE tables), the arena `cuda::DeviceActivations` and the decoder
//! `cuda::DeviceDecoder` (bf16 KV cache). A test holds the CPU arena figure to
//! `GrpoLearner::arena_bytes()` (config/tests/device_memory.rs).
//!
//! Each device's total is checked against its free memory (a GPU's free memory from the driver;
//! for the CPU the memory this process may still allocate: MemAvailable, the cgroup limit,
//! RLIMIT_AS). `R1_DEVICE_MEMORY_LIMIT` (bytes, or with a `KiB`/`MiB`/`GiB` suffix) caps what
//! every device is taken to have — for tests, and to keep headroom on a shared machine.

use serde::{Deserialize, Serialize};

use super::{Device, DeviceList};
use crate::model::limits::{format_bytes, MemoryAvailable};
use crate::model::ModelConfig;
use crate::train::head::HEAD_CHUNK_FLOATS;

use crate::cpu::{DecodeScratch, KvCache};

/// The environment variable that caps every device's memory for the pre-start check.
pub const MEMORY_LIMIT_VAR: &str = "R1_DEVICE_MEMORY_LIMIT";

/// Rows of a CPU sampler's decoding buffers at least (its prefill passes: `sample::PREFILL_ROWS`).
const CPU_PREFILL_ROWS: usize = 256;
/// Logit floats of one LM-head chunk on the GPU (`cuda::model::GPU_HEAD_CHUNK_FLOATS`).
const GPU_HEAD_CHUNK_FLOATS: usize = 64 << 20;

/// The learner's share of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnerShape {
    /// Rows of one minibatch on one replica (the arena's B).
    pub rows: usize,
    /// Positions per row (the arena's T: prompt + completion).
    pub tokens: usize,
    /// Positions per row the loss is taken on (a completion; SFT: the whole row): the LM head
    /// scores only those, so its logit chunk holds at most `rows × this` rows.
    pub loss_tokens: usize,
    /// Whether a frozen reference model is kept (β ≠ 0).
    pub reference: bool,
    /// Whether the arena checkpoints activations (`[learner] activation_checkpointing`).
    pub checkpointed: bool,
}

/// The sampler's share of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplerShape {
    /// Sequences decoded at once (KV-cache slots).
    pub slots: usize,
    /// Positions per slot (prompt + new tokens).
    pub max_len: usize,
    /// Whether the sampler holds its own copy of the weights (an RL run: the learner has the
    /// other — unless the sampler is on a learner's device, where it decodes that learner's or
    /// data-parallel replica's); a sampling-only stage's weights are counted once, as `weights`.
    pub own_copy: bool,
    /// The precision of its weights (`[devices] sampler_precision`): a CPU sampler in bf16
    /// also holds a bf16 copy, two bytes per parameter.
    pub precision: super::Precision,
}

/// One reward model of a preference run.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardModelShape {
    /// Its name in the config.
    pub name: String,
    /// Its shape.
    pub config: ModelConfig,
    /// Texts scored together.
    pub rows: usize,
    /// Tokens per scored text at most.
    pub tokens: usize,
}

/// What a run holds, before it is placed on devices.
#[derive(Debug, Clone, PartialEq)]
pub struct RunShape {
    /// The policy's shape.
    pub model: ModelConfig,
    /// Training, when the stage trains.
    pub learner: Option<LearnerShape>,
    /// Decoding, when the stage samples.
    pub sampler: Option<SamplerShape>,
    /// Reward models, when the stage scores with them.
    pub reward_models: Vec<RewardModelShape>,
    /// Data-parallel learner replicas (each holds weights, gradients and an arena).
    pub learners: usize,
    /// ZeRO-1: each replica holds 1/`learners` of the AdamW moments.
    pub shard_optimizer: bool,
}

pub use crate::alloc::MemoryPart;

/// What one device must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEstimate {
    /// The device.
    pub device: Device,
    /// By category, in the order added (categories on one device are summed: two CPU learner
    /// replicas are one `weights` line of twice the size).
    pub parts: Vec<MemoryPart>,
}

/// A run's memory on each device it uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    /// One entry per device, the CPU first.
    pub devices: Vec<DeviceEstimate>,
}

/// A run that does not fit: which device, and the figures.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} does not fit on {device}: {figures}")]
pub struct MemoryError {
    /// What was estimated (`a grpo run on models/m`).
    pub what: String,
    /// The device that is too small.
    pub device: Device,
    /// `needs 1.2 GiB (weights …, activations …), 1.0 GiB available (free memory of cuda:0)`:
    /// the total, by category, what the device has and which limit said so.
    pub figures: String,
}

impl DeviceEstimate {
    /// Total bytes.
    pub fn total(&self) -> f64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }

    fn add(&mut self, category: &str, bytes: f64) {
        if bytes <= 0.0 {
            return;
        }
        match self.parts.iter_mut().find(|p| p.category == category) {
            Some(part) => part.bytes += bytes,
            None => self.parts.push(MemoryPart {
                category: category.to_string(),
                bytes,
            }),
        }
    }

    /// `weights 1.0 GiB, gradients 1.0 GiB, ...`
    pub fn describe(&self) -> String {
        self.parts
            .iter()
            .map(|p| format!("{} {}", p.category, format_bytes(p.bytes)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl MemoryEstimate {
    fn on(&mut self, device: Device) -> &mut DeviceEstimate {
        let at = match self.devices.iter().position(|d| d.device == device) {
            Some(at) => at,
            None => {
                self.devices.push(DeviceEstimate {
                    device,
                    parts: Vec::new(),
                });
                self.devices.sort_by_key(|d| match d.device {
                    Device::Cpu => 0,
                    Device::Cuda(k) => k + 1,
                });
                self.devices
                    .iter()
                    .position(|d| d.device == device)
                    .unwrap_or(0)
            }
        };
        &mut self.devices[at]
    }

    /// The estimate of `device`, when the run uses it.
    pub fn device(&self, device: Device) -> Option<&DeviceEstimate> {
        self.devices.iter().find(|d| d.device == device)
    }

    /// Every device's total against what `list` says it has free (for the CPU: `cpu_available`
    /// when known, else the listed available RAM), each capped by `limit` when given. The first
    /// device that does not fit is the error, with its figures by category.
    pub fn check(
        &self,
        what: &str,
        list: &DeviceList,
        cpu_available: Option<&MemoryAvailable>,
        limit: Option<u64>,
    ) -> Result<(), MemoryError> {
        for estimate in &self.devices {
            let listed = list.devices.iter().find(|d| d.device == estimate.device);
            let (mut bytes, mut source) = match (estimate.device, cpu_available, listed) {
                (Device::Cpu, Some(a), _) => (Some(a.bytes), a.source.clone()),
                (device, _, Some(info)) => (
                    Some(info.free_bytes),
                    match device {
                        Device::Cpu => "MemAvailable".to_string(),
                        Device::Cuda(_) => format!("free memory of {device}"),
                    },
                ),
                // A device the list lacks was refused by placement already; unknown: unchecked.
                (_, _, None) => (None, String::new()),
            };
            if let Some(cap) = limit {
                if bytes.is_none_or(|b| cap < b) {
                    bytes = Some(cap);
                    source = MEMORY_LIMIT_VAR.to_string();
                }
            }
            let Some(bytes) = bytes else { continue };
            let total = estimate.total();
            if total > bytes as f64 {
                return Err(MemoryError {
                    what: what.to_string(),
                    device: estimate.device,
                    figures: format!(
                        "needs {} ({}), {} available ({source})",
                        format_bytes(total),
                        estimate.describe(),
                        format_bytes(bytes as f64)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// `R1_DEVICE_MEMORY_LIMIT` when set: bytes, or a number with a `K`/`M`/`G`/`T` (`KiB`…)
/// suffix, powers of 1024. A value that does not parse is an error naming the variable.
pub fn memory_limit_override() -> Result<Option<u64>, String> {
    match std::env::var(MEMORY_LIMIT_VAR) {
        Ok(text) => parse_bytes(&text).map(Some).ok_or_else(|| {
            format!(
                "{MEMORY_LIMIT_VAR}={text:?} is not a size: write bytes, or a number with \
                     KiB, MiB, GiB or TiB (e.g. 512MiB)"
            )
        }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(format!("{MEMORY_LIMIT_VAR}: {e}")),
    }
}

/// `123`, `64MiB`, `1.5 GiB`, `2G` → bytes.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = number * scale as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Bytes of the CPU learner's arena for `b` rows of `t` tokens whose head scores `head_tokens`
/// of them: every f32 buffer of `cpu::Activations::new` plus the LM head's logit chunk (what
/// `Activations::bytes` reports after a step), and the u32 position tables and RoPE table it
/// also allocates.
pub fn cpu_activations_bytes(
    cfg: &ModelConfig,
    b: usize,
    t: usize,
    head_tokens: usize,
    checkpointed: bool,
) -> f64 {
    cpu_arena_floats(cfg, b, t, checkpointed) * 4.0
        + cpu_head_chunk_floats(cfg, head_tokens) * 4.0
        + cpu_arena_tables(cfg, b, t)
}

/// f32 elements of the LM head's logit chunk when it scores `tokens` rows (`train::head`:
/// `HEAD_CHUNK_FLOATS / V` rows at most, and no more than it scores).
pub fn cpu_head_chunk_floats(cfg: &ModelConfig, tokens: usize) -> f64 {
    let v = cfg.vocab_size.max(1);
    ((HEAD_CHUNK_FLOATS / v).clamp(1, tokens.max(1)) * v) as f64
}

/// f32 elements `cpu::Activations::with_checkpointing` allocates for (b, t)
/// (`Activations::bytes() / 4` before the head runs).
pub fn cpu_arena_floats(cfg: &ModelConfig, b: usize, t: usize, checkpointed: bool) -> f64 {
    let (b, t) = (b as f64, t as f64);
    let n = b * t;
    let (c, l) = (cfg.hidden_size as f64, cfg.num_layers as f64);
    let (qkv, qd, i) = (
        cfg.qkv_dim() as f64,
        cfg.q_dim() as f64,
        cfg.intermediate_size as f64,
    );
    let nh = cfg.num_heads as f64;
    let att = b * nh * t * t;
    let qk_heads = if cfg.qk_norm() {
        (cfg.num_heads + cfg.num_kv_heads) as f64
    } else {
        0.0
    };
    // Per layer, kept for backward: x, x_mid, ln1, ln2 [N, C]; rstd1, rstd2 [N]; qkv; the
    // Qwen3 pre-norm q|k and their 1/rms; probabilities; atty; gate|up; h.
    let per_layer = 4.0 * n * c
        + 2.0 * n
        + n * qkv
        + n * qk_heads * cfg.head_dim as f64
        + n * qk_heads
        + att
        + n * qd
        + n * 2.0 * i
        + n * i;
    // The last residual stream, the final norm and its 1/rms, and backward's scratch (one
    // layer's worth, reused).
    let once = n * c + n * c + n + 3.0 * n * c + n * qkv + att + n * qd + n * 2.0 * i + n * i;
    if checkpointed {
        // The residual stream entering every layer, the rest for one layer.
        l * n * c + (per_layer - n * c) + once
    } else {
        l * per_layer + once
    }
}

/// Bytes of the arena's u32 tables (positions, segment starts) and its RoPE cos/sin table.
fn cpu_arena_tables(cfg: &ModelConfig, b: usize, t: usize) -> f64 {
    let n = (b * t) as f64;
    2.0 * 4.0 * n + rope_bytes(cfg, t)
}

/// cos and sin, HS/2 each, for `positions` positions, f32.
fn rope_bytes(cfg: &ModelConfig, positions: usize) -> f64 {
    2.0 * 4.0 * positions as f64 * (cfg.head_dim / 2) as f64
}

/// Bytes of `cuda::DeviceModel::upload` (`trainable`: gradients and both moments too), RoPE
/// tables for `positions`.
pub fn cuda_model_bytes(cfg: &ModelConfig, positions: usize, trainable: bool) -> f64 {
    let p = cfg.parameter_estimate();
    let optimizer = if trainable { 3.0 * 4.0 * p } else { 0.0 };
    4.0 * p + 2.0 * p + optimizer + rope_bytes(cfg, positions)
}

/// Bytes of `cuda::DeviceActivations::with_checkpointing` for `b` rows of `t` tokens: with
/// `checkpointed`, the per-layer buffers hold one layer (the residual stream keeps all L + 1).
pub fn cuda_activations_bytes(cfg: &ModelConfig, b: usize, t: usize, checkpointed: bool) -> f64 {
    let n_us = b * t;
    let (b, t) = (b as f64, t as f64);
    let n = b * t;
    let layers = cfg.num_layers as f64;
    // Layers the per-layer buffers hold.
    let (c, l) = (
        cfg.hidden_size as f64,
        if checkpointed { 1.0 } else { layers },
    );
    let (qkv, qd, i) = (
        cfg.qkv_dim() as f64,
        cfg.q_dim() as f64,
        cfg.intermediate_size as f64,
    );
    let nh = cfg.num_heads as f64;
    let v = cfg.vocab_size.max(1);
    let hr = (GPU_HEAD_CHUNK_FLOATS / v).clamp(1, n_us.max(1)) as f64;
    let v = v as f64;
    let f32s = (layers + 1.0) * n * c     // x
        + l * n * c                       // x_mid
        + 2.0 * l * n                     // rstd1, rstd2
        + l * n * qkv                     // qkv
        + l * n * qd                      // atty
        + l * b * nh * t                  // lse
        + l * n * 2.0 * i                 // gu
        + n                               // rstdf
        + 4.0 * n * c                     // proj, dres, dxf, dln
        + n * qkv                         // dqkv
        + n * qd                          // datty
        + b * nh * t                      // delta
        + n * 2.0 * i                     // dgu
        + n * i                           // dh
        + hr * v                          // logits
        + 5.0 * hr; // row statistics
    let bf16s = 2.0 * l * n * c           // ln1, ln2
        + l * n * qd                      // atty_bf16
        + l * n * i                       // h
        + n * c                           // xf
        + n * c                           // dres_bf16
        + n * qkv                         // dqkv_bf16
        + n * 2.0 * i                     // dgu_bf16
        + hr * v; // dlogits
    let u32s = 6.0 * n; // ids, targets, positions, seg_start, shared_start, shared_end
    4.0 * f32s + 2.0 * bf16s + 4.0 * u32s
}

/// Bytes of `cuda::DeviceDecoder::new`: the bf16 KV cache for `slots` × `max_len` and the
/// per-row buffers for `rows`.
pub fn cuda_decoder_bytes(cfg: &ModelConfig, slots: usize, max_len: usize, rows: usize) -> f64 {
    let cache = 2.0 * 2.0 * (cfg.num_layers * cfg.kv_dim()) as f64 * slots as f64 * max_len as f64;
    let r = rows.max(1) as f64;
    let (c, i, v) = (
        cfg.hidden_size as f64,
        cfg.intermediate_size as f64,
        cfg.vocab_size as f64,
    );
    let f32s = r * (c + 1.0 + cfg.qkv_dim() as f64 + cfg.q_dim() as f64 + 2.0 * i + v + 5.0);
    let bf16s = r * (c + cfg.q_dim() as f64 + i + c);
    let u32s = r * (3.0 + 1.0 + 1.0 + 1.0); // step inputs, logit rows, top-k, out tokens
    let u64s = 2.0 * r; // seeds, counters
    cache + 4.0 * f32s + 2.0 * bf16s + 4.0 * u32s + 8.0 * u64s
}

/// The KV-cache part of [`cuda_decoder_bytes`].
fn cuda_cache_bytes(cfg: &ModelConfig, slots: usize, max_len: usize) -> f64 {
    2.0 * 2.0 * (cfg.num_layers * cfg.kv_dim()) as f64 * slots as f64 * max_len as f64
}

/// The run's memory on each device of `placement`'s devices: `learners`, `sampler`,
/// `reward_models` as resolved.
pub fn estimate(
    shape: &RunShape,
    learners: &[Device],
    sampler: Device,
    reward_models: Device,
) -> MemoryEstimate {
    let mut out = MemoryEstimate::default();
    let cfg = &shape.model;
    let p = 4.0 * cfg.parameter_estimate();
    if let Some(l) = &shape.learner {
        let replicas = learners.len().max(1) as f64;
        let moments_share = if shape.shard_optimizer {
            1.0 / replicas
        } else {
            1.0
        };
        for &device in learners {
            let d = out.on(device);
            match device {
                Device::Cpu => {
                    d.add("weights", p);
                    d.add("gradients", p);
                    d.add("AdamW moments", 2.0 * p * moments_share);
                    if l.reference {
                        d.add("reference model", p);
                    }
                    let head = l.rows.saturating_mul(l.loss_tokens.min(l.tokens));
                    d.add(
                        "activations",
                        cpu_activations_bytes(cfg, l.rows, l.tokens, head, l.checkpointed),
                    );
                }
                Device::Cuda(_) => {
                    let ps = cfg.parameter_estimate();
                    // f32 master + bf16 copy + RoPE tables; f32 gradients; f32 moments.
                    d.add("weights", cuda_model_bytes(cfg, l.tokens, false));
                    d.add("gradients", 4.0 * ps);
                    d.add("AdamW moments", 8.0 * ps * moments_share);
                    if l.reference {
                        d.add("reference model", cuda_model_bytes(cfg, l.tokens, false));
                    }
                    d.add(
                        "activations",
                        cuda_activations_bytes(cfg, l.rows, l.tokens, l.checkpointed),
                    );
                }
            }
        }
    }
    if let Some(s) = &shape.sampler {
        let copy = if s.own_copy {
            "sampler's copy of the weights"
        } else {
            "weights"
        };
        // An RL sampler on a learner's device decodes that learner's (or replica's) weights
        // (`TrainEngine::decoder`): no copy of its own.
        let shares_learner = s.own_copy && shape.learner.is_some() && learners.contains(&sampler);
        let d = out.on(sampler);
        match sampler {
            Device::Cpu => {
                if !shares_learner {
                    d.add(copy, p);
                }
                if s.precision.on(sampler) == super::Precision::Bf16 {
                    // Two bytes a parameter, and a tied LM head packed on its own.
                    let head = if cfg.tie_word_embeddings {
                        2.0 * (cfg.vocab_size * cfg.hidden_size) as f64
                    } else {
                        0.0
                    };
                    d.add("sampler's bf16 weights", p / 2.0 + head);
                }
                d.add("KV cache", KvCache::bytes(cfg, s.slots, s.max_len));
                d.add(
                    "decoding buffers",
                    DecodeScratch::bytes(cfg, s.slots.max(CPU_PREFILL_ROWS), s.max_len),
                );
            }
            Device::Cuda(_) => {
                let rows = s.slots.max(CPU_PREFILL_ROWS);
                if !shares_learner {
                    d.add(copy, cuda_model_bytes(cfg, s.max_len, false));
                }
                let cache = cuda_cache_bytes(cfg, s.slots, s.max_len);
                d.add("KV cache", cache);
                d.add(
                    "decoding buffers",
                    cuda_decoder_bytes(cfg, s.slots, s.max_len, rows) - cache,
                );
            }
        }
    }
    for rm in &shape.reward_models {
        let d = out.on(reward_models);
        let category = format!("reward model {}", rm.name);
        let bytes = match reward_models {
            Device::Cpu => {
                // The score head reads the last hidden state: no logit chunk.
                4.0 * rm.config.parameter_estimate()
                    + cpu_activations_bytes(&rm.config, rm.rows, rm.tokens, 0, false)
                    - cpu_head_chunk_floats(&rm.config, 0) * 4.0
            }
            Device::Cuda(_) => {
                cuda_model_bytes(&rm.config, rm.tokens, false)
                    + cuda_activations_bytes(&rm.config, rm.rows, rm.tokens, false)
            }
        };
        d.add(&category, bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::builtin_config;
    use crate::cpu::Activations;
    use crate::device::DeviceInfo;
    use crate::model::Model;

    #[test]
    fn the_cpu_arena_figure_is_what_activations_allocates() {
        for name in ["tiny-qwen2", "qwen2-30m", "llama-60m"] {
            let Some(cfg) = builtin_config(name) else {
                continue;
            };
            for qk in [false, true] {
                let mut cfg = cfg.clone();
                if qk {
                    cfg.architecture = crate::model::Architecture::Qwen3;
                }
                let model = Model::random(cfg.clone(), 1, 0.02);
                for (b, t) in [(1, 7), (4, 33), (2, 130)] {
                    for checkpointed in [false, true] {
                        let acts = Activations::with_checkpointing(&model, b, t, checkpointed);
                        // Before the head runs the logit chunk is not allocated.
                        assert_eq!(
                            cpu_arena_floats(&cfg, b, t, checkpointed) as usize,
                            acts.bytes() / 4,
                            "{name} qk_norm={qk} b={b} t={t} checkpointed={checkpointed}"
                        );
                    }
                }
            }
        }
    }

    fn machine(cpu_free: u64, gpus: usize) -> DeviceList {
        let mut devices = vec![DeviceInfo {
            device: Device::Cpu,
            name: "test CPU".into(),
            total_bytes: cpu_free * 2,
            free_bytes: cpu_free,
        }];
        devices.extend((0..gpus).map(|n| DeviceInfo {
            device: Device::Cuda(n),
            name: "test GPU".into(),
            total_bytes: 80 << 30,
            free_bytes: 1 << 30,
        }));
        DeviceList {
            devices,
            cuda_unavailable: None,
            nccl_unavailable: None,
        }
    }

    fn shape() -> RunShape {
        RunShape {
            model: builtin_config("tiny-qwen2").expect("the tiny model is built in"),
            learner: Some(LearnerShape {
                rows: 8,
                tokens: 64,
                loss_tokens: 32,
                reference: true,
                checkpointed: false,
            }),
            sampler: Some(SamplerShape {
                slots: 16,
                max_len: 64,
                own_copy: true,
                precision: crate::device::Precision::Auto,
            }),
            reward_models: Vec::new(),
            learners: 1,
            shard_optimizer: false,
        }
    }

    #[test]
    fn categories_land_on_their_devices() {
        let s = shape();
        let cpu = estimate(&s, &[Device::Cpu], Device::Cpu, Device::Cpu);
        assert_eq!(cpu.devices.len(), 1);
        let names: Vec<&str> = cpu.devices[0]
            .parts
            .iter()
            .map(|p| p.category.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "weights",
                "gradients",
                "AdamW moments",
                "reference model",
                "activations",
                "KV cache",
                "decoding buffers"
            ]
        );
        let p = 4.0 * s.model.parameter_estimate();
        assert_eq!(cpu.devices[0].parts[2].bytes, 2.0 * p);
        // The sampler decodes a learner's (or replica's) weights on its device; on a device
        // with no learner it keeps a copy of its own.
        let copy = |e: &MemoryEstimate, d: Device| {
            e.device(d).is_some_and(|d| {
                d.parts
                    .iter()
                    .any(|part| part.category == "sampler's copy of the weights")
            })
        };
        let replicas = estimate(&s, &[Device::Cpu, Device::Cpu], Device::Cpu, Device::Cpu);
        assert!(!copy(&replicas, Device::Cpu));
        let beside = estimate(
            &s,
            &[Device::Cuda(0), Device::Cuda(1)],
            Device::Cuda(1),
            Device::Cpu,
        );
        assert!(!copy(&beside, Device::Cuda(1)));
        let split = estimate(
            &s,
            &[Device::Cuda(0), Device::Cuda(1)],
            Device::Cuda(2),
            Device::Cuda(2),
        );
        let devices: Vec<Device> = split.devices.iter().map(|d| d.device).collect();
        assert_eq!(devices, [Device::Cuda(0), Device::Cuda(1), Device::Cuda(2)]);
        assert!(copy(&split, Device::Cuda(2)));
        assert!(split
            .device(Device::Cuda(2))
            .unwrap()
            .parts
            .iter()
            .all(|p| p.category != "gradients"));
        // ZeRO-1 halves each replica's moments.
        let zero = estimate(
            &RunShape {
                shard_optimizer: true,
                learners: 2,
                ..s.clone()
            },
            &[Device::Cuda(0), Device::Cuda(1)],
            Device::Cuda(2),
            Device::Cuda(2),
        );
        let moments = |e: &MemoryEstimate| {
            e.device(Device::Cuda(0))
                .unwrap()
                .parts
                .iter()
                .find(|p| p.category == "AdamW moments")
                .unwrap()
                .bytes
        };
        assert_eq!(moments(&zero) * 2.0, moments(&split));
        // Two CPU replicas: one line per category, twice the bytes.
        let two = estimate(&s, &[Device::Cpu, Device::Cpu], Device::Cpu, Device::Cpu);
        assert_eq!(two.devices[0].parts[0].bytes, 2.0 * p);
    }

    #[test]
    fn a_device_too_small_is_refused_with_the_figures() {
        let s = shape();
        let e = estimate(&s, &[Device::Cpu], Device::Cpu, Device::Cpu);
        let total = e.devices[0].total();
        e.check("a grpo run on tiny", &machine(u64::MAX / 2, 0), None, None)
            .unwrap();
        let err = e
            .check(
                "a grpo run on tiny",
                &machine(u64::MAX / 2, 0),
                None,
                Some(1 << 20),
            )
            .unwrap_err();
        assert!(
            total > (1 << 20) as f64,
            "the tiny run needs more than 1 MiB"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("a grpo run on tiny does not fit on cpu: needs ")
                && text.contains("weights ")
                && text.contains("AdamW moments ")
                && text.contains("activations ")
                && text.contains("KV cache ")
                && text.contains("1.0 MiB available (R1_DEVICE_MEMORY_LIMIT)"),
            "{text}"
        );
        // A GPU is held to its free memory (1 GiB here).
        let big = RunShape {
            model: ModelConfig {
                vocab_size: 150_000,
                hidden_size: 2048,
                ..s.model.clone()
            },
            ..s
        };
        let e = estimate(&big, &[Device::Cuda(0)], Device::Cpu, Device::Cpu);
        let err = e
            .check("big", &machine(u64::MAX / 2, 1), None, None)
            .unwrap_err();
        assert_eq!(err.device, Device::Cuda(0));
        assert!(err.to_string().contains("free memory of cuda:0"), "{err}");
    }

    #[test]
    fn sizes_parse_as_people_write_them() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
        assert_eq!(parse_bytes("1.5 GiB"), Some(3 << 29));
        assert_eq!(parse_bytes("2g"), Some(2 << 30));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("12 parsecs"), None);
        assert_eq!(parse_bytes(""), None);
    }
}
