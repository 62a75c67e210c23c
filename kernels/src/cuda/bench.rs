//! GPU throughput: a training step (forward, fused classifier, backward, clipping, AdamW) and
//! batched decoding with device-side sampling, on a random-weight model, with MFU against the
//! bf16 tensor-core peak and decode speed against the HBM-bandwidth roofline. Library code only
//! measures; `kernels/benches/cuda_bench.rs` prints.

use std::time::Instant;

use serde::Serialize;

use super::backend::CudaBackend;
use super::decode::{DeviceDecoder, DeviceSampling};
use super::error::CudaError;
use super::model::{self, DeviceActivations, DeviceModel};
use crate::model::{Architecture, Model, ModelConfig, RopeScaling};
use crate::train::{AdamWConfig, WeightedCrossEntropy};

/// A GPU's spec-sheet peaks: what MFU and the decode roofline are measured against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GpuPeaks {
    /// The model the peaks belong to, as the table names it.
    pub model: &'static str,
    /// Dense bf16 tensor-core peak (no sparsity), FLOP/s.
    pub bf16_flops: f64,
    /// HBM bandwidth, bytes/s.
    pub hbm_bytes_per_s: f64,
}

/// Spec-sheet peaks by device-name pattern, most specific first (the driver's names: "NVIDIA
/// H100 80GB HBM3" is the SXM part, "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200",
/// "NVIDIA A100-SXM4-80GB", ...). Dense bf16, no sparsity.
const PEAKS: &[(&[&str], GpuPeaks)] = &[
    (
        &["H100 PCIE"],
        GpuPeaks {
            model: "H100 PCIe",
            bf16_flops: 756e12,
            hbm_bytes_per_s: 2.0e12,
        },
    ),
    (
        &["H100 NVL"],
        GpuPeaks {
            model: "H100 NVL",
            bf16_flops: 835e12,
            hbm_bytes_per_s: 3.9e12,
        },
    ),
    (
        &["H100"],
        GpuPeaks {
            model: "H100 SXM",
            bf16_flops: 989e12,
            hbm_bytes_per_s: 3.35e12,
        },
    ),
    (
        &["GH200"],
        GpuPeaks {
            model: "GH200",
            bf16_flops: 989e12,
            hbm_bytes_per_s: 4.0e12,
        },
    ),
    (
        &["H200"],
        GpuPeaks {
            model: "H200",
            bf16_flops: 989e12,
            hbm_bytes_per_s: 4.8e12,
        },
    ),
    (
        &["A100-SXM4-80GB", "A100 80GB", "A100-SXM-80GB"],
        GpuPeaks {
            model: "A100 SXM 80GB",
            bf16_flops: 312e12,
            hbm_bytes_per_s: 2.039e12,
        },
    ),
    (
        &["A100-PCIE-80GB", "A100 80GB PCIE"],
        GpuPeaks {
            model: "A100 PCIe 80GB",
            bf16_flops: 312e12,
            hbm_bytes_per_s: 1.935e12,
        },
    ),
    (
        &["A100"],
        GpuPeaks {
            model: "A100 40GB",
            bf16_flops: 312e12,
            hbm_bytes_per_s: 1.555e12,
        },
    ),
    (
        &["L40S"],
        GpuPeaks {
            model: "L40S",
            bf16_flops: 362e12,
            hbm_bytes_per_s: 0.864e12,
        },
    ),
    (
        &["A10G"],
        GpuPeaks {
            model: "A10G",
            bf16_flops: 70e12,
            hbm_bytes_per_s: 0.6e12,
        },
    ),
];

/// The spec-sheet peaks of the GPU the driver calls `device_name`, or None for a GPU not in the
/// table (the benchmark then prints no percentages rather than another GPU's).
pub fn gpu_peaks(device_name: &str) -> Option<GpuPeaks> {
    let name = device_name.to_ascii_uppercase();
    // First match wins: "GH200" is listed before "H200", which it contains.
    PEAKS
        .iter()
        .find(|(patterns, _)| {
            patterns
                .iter()
                .any(|pat| name.contains(&pat.to_ascii_uppercase()))
        })
        .map(|e| e.1)
}

/// Qwen2-0.5B's shape (494M parameters, tied embeddings), for random weights.
pub fn qwen2_05b_config() -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Qwen2,
        hidden_size: 896,
        intermediate_size: 4864,
        num_layers: 24,
        num_heads: 14,
        num_kv_heads: 2,
        head_dim: 64,
        vocab_size: 151936,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        rope_scaling: RopeScaling::None,
        attention_bias: true,
        tie_word_embeddings: true,
        max_position_embeddings: 32768,
        eos_token_ids: vec![151643],
        bos_token_id: None,
    }
}

/// One measured line of the GPU benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct CudaBenchRow {
    /// `train` or `decode`.
    pub test: String,
    /// Batch × tokens measured.
    pub shape: String,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Train: model TFLOP/s achieved. Decode: TB/s of weights and KV cache read.
    pub achieved: f64,
    /// Share of the device's peak (bf16 FLOP/s for train, HBM bandwidth for decode), percent;
    /// None when the GPU is not in the peaks table.
    pub peak_percent: Option<f64>,
    /// The device's name as the driver reports it.
    pub device: String,
    /// Whose peaks `peak_percent` uses (`gpu_peaks`), None when unknown.
    pub peaks_of: Option<&'static str>,
    /// Seconds per step (median of the measured steps).
    pub step_s: f64,
}

/// Model FLOPs of one training step on `tokens` tokens of `t` per sequence: 6 per parameter per
/// token for the GEMMs (forward 2, backward 4), plus causal attention (QKᵀ and PV over T/2 keys
/// on average, ×3 for forward and backward).
pub fn train_flops(cfg: &ModelConfig, matmul_params: usize, tokens: usize, t: usize) -> f64 {
    let gemm = 6.0 * matmul_params as f64 * tokens as f64;
    let attn = 3.0 * 2.0 * 2.0 * cfg.num_layers as f64 * cfg.q_dim() as f64 * (t as f64 / 2.0);
    gemm + attn * tokens as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `steps` training steps of `b` × `t` tokens (after one warm-up step).
pub fn bench_train(
    be: &CudaBackend,
    host: &Model,
    b: usize,
    t: usize,
    steps: usize,
) -> Result<CudaBenchRow, CudaError> {
    let mut dm = DeviceModel::upload(be, host, t, true)?;
    let mut acts = DeviceActivations::new(be, &dm, b, t)?;
    let cfg = host.config.clone();
    let n = b * t;
    let ids: Vec<u32> = (0..n)
        .map(|k| ((k * 7919 + 13) % cfg.vocab_size) as u32)
        .collect();
    let targets: Vec<u32> = ids[1..].iter().copied().chain([0]).collect();
    let weights = WeightedCrossEntropy::mean_weights(&vec![1.0; n]);
    let objective = WeightedCrossEntropy { weights: &weights };
    let mut times = Vec::new();
    for step in 0..steps + 1 {
        be.synchronize()?;
        let start = Instant::now();
        dm.zero_grads(be)?;
        model::forward(be, &dm, &mut acts, &ids)?;
        model::head(be, &dm, &mut acts, &targets, Some(&objective), true, false)?;
        model::backward(be, &dm, &mut acts)?;
        dm.clip_grad_norm(be, 1.0)?;
        dm.adamw_step(be, AdamWConfig::default(), 1e-5)?;
        be.synchronize()?;
        if step > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let step_s = median(times);
    let peaks = gpu_peaks(be.device_name());
    let flops = train_flops(&cfg, host.layout.matmul_params(&cfg), n, t);
    Ok(CudaBenchRow {
        test: "train".into(),
        shape: format!("{b}x{t}"),
        tokens_per_s: n as f64 / step_s,
        achieved: flops / step_s / 1e12,
        peak_percent: peaks.map(|p| 100.0 * flops / step_s / p.bf16_flops),
        device: be.device_name().to_string(),
        peaks_of: peaks.map(|p| p.model),
        step_s,
    })
}

/// Times `steps` decode steps of `batch` sequences starting at position `context` (the cache
/// below it is zeros: the bandwidth is what is measured), sampling at temperature 1 on the device.
pub fn bench_decode(
    be: &CudaBackend,
    host: &Model,
    batch: usize,
    context: usize,
    steps: usize,
) -> Result<CudaBenchRow, CudaError> {
    let cfg = host.config.clone();
    // Two untimed steps: kernel loading and cuBLAS heuristics, and (with decode graphs) the
    // capture of the step's graph.
    const WARMUP: usize = 2;
    let max_len = context + steps + WARMUP;
    let dm = DeviceModel::upload(be, host, max_len, false)?;
    let mut dec = DeviceDecoder::new(be, &dm, batch, max_len, batch)?;
    let slots: Vec<usize> = (0..batch).collect();
    let params: Vec<DeviceSampling> = (0..batch)
        .map(|s| DeviceSampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: s as u64,
        })
        .collect();
    let mut tokens: Vec<u32> = (0..batch)
        .map(|s| (s * 31 % cfg.vocab_size) as u32)
        .collect();
    let mut times = Vec::new();
    let mut kv_positions_read = 0usize;
    for step in 0..steps + WARMUP {
        let pos = (context + step) as u32;
        let positions = vec![pos; batch];
        be.synchronize()?;
        let start = Instant::now();
        dec.step(be, &dm, &slots, &tokens, &positions, None)?;
        let counters = vec![step as u64; batch];
        let picks = dec.sample(be, cfg.vocab_size, &params, &counters)?;
        if step >= WARMUP {
            times.push(start.elapsed().as_secs_f64());
            kv_positions_read += batch * (pos as usize + 1);
        }
        tokens = picks.iter().map(|p| p.token).collect();
    }
    let step_s = median(times.clone());
    let peaks = gpu_peaks(be.device_name());
    let total_s: f64 = times.iter().sum();
    let weight_bytes = 2.0 * host.layout.matmul_params(&cfg) as f64 * steps as f64;
    let kv_bytes = 2.0 * 2.0 * (cfg.num_layers * cfg.kv_dim()) as f64 * kv_positions_read as f64;
    let bytes_per_s = (weight_bytes + kv_bytes) / total_s;
    Ok(CudaBenchRow {
        test: "decode".into(),
        shape: format!("{batch}x{steps}@{context}"),
        tokens_per_s: (batch * steps) as f64 / total_s,
        achieved: bytes_per_s / 1e12,
        peak_percent: peaks.map(|p| 100.0 * bytes_per_s / p.hbm_bytes_per_s),
        device: be.device_name().to_string(),
        peaks_of: peaks.map(|p| p.model),
        step_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParamLayout;

    #[test]
    fn peaks_are_those_of_the_named_gpu_and_unknown_gpus_get_none() {
        let h100 = gpu_peaks("NVIDIA H100 80GB HBM3").unwrap();
        assert_eq!((h100.model, h100.hbm_bytes_per_s), ("H100 SXM", 3.35e12));
        assert_eq!(h100.bf16_flops, 989e12);
        assert_eq!(gpu_peaks("NVIDIA H100 PCIe").unwrap().model, "H100 PCIe");
        let h200 = gpu_peaks("NVIDIA H200").unwrap();
        assert_eq!((h200.model, h200.hbm_bytes_per_s), ("H200", 4.8e12));
        assert_eq!(gpu_peaks("NVIDIA GH200 480GB").unwrap().model, "GH200");
        assert_eq!(
            gpu_peaks("NVIDIA A100-SXM4-80GB").unwrap().model,
            "A100 SXM 80GB"
        );
        assert_eq!(
            gpu_peaks("NVIDIA A100-SXM4-40GB").unwrap().model,
            "A100 40GB"
        );
        assert_eq!(gpu_peaks("NVIDIA GeForce RTX 4090"), None);
    }

    #[test]
    fn the_benchmark_shape_is_qwen2_05b() {
        let cfg = qwen2_05b_config();
        let layout = ParamLayout::new(&cfg);
        // Hugging Face's parameter count of Qwen/Qwen2-0.5B (tied embeddings counted once).
        assert_eq!(layout.total, 494_032_768);
        // 6 FLOPs per matmul parameter per token, plus attention; the LM head counts.
        let flops = train_flops(&cfg, layout.matmul_params(&cfg), 4096, 512);
        let gemm = 6.0 * layout.matmul_params(&cfg) as f64 * 4096.0;
        assert!(flops > gemm && flops < 1.2 * gemm, "{flops} vs {gemm}");
    }
}
