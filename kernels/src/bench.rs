//! The measurements behind `r1ctl bench` (what `llama-bench` is to llama.cpp): the machine's GEMM
//! peak, then training, prefill and decode throughput of a model, each with achieved GFLOP/s and its share
//! of that peak. Library code only measures; the binary prints.

use std::time::Instant;

use serde::Serialize;

use crate::cpu::gemm::{gemm, Mat, MatMut, Threads};
use crate::device::{self, Device, ModelRole};
use crate::model::{Architecture, Model, ModelConfig, RopeScaling};
use crate::sample::{GenerationRequest, Sampler, SamplingParams};
use crate::train::{AdamW, AdamWConfig, WeightedCrossEntropy};
use crate::Result;

/// Built-in model shapes, so the benchmark runs without any download.
pub const BUILTIN_SHAPES: &[&str] = &["qwen2-30m", "tiny-qwen2", "llama-60m"];

/// The config of a built-in shape. `qwen2-30m` is the shape of ../shared/bench/torch_cpu_baseline.py.
pub fn builtin_config(name: &str) -> Option<ModelConfig> {
    let qwen = |hidden, inter, layers, heads, kv, vocab, tie| ModelConfig {
        architecture: Architecture::Qwen2,
        hidden_size: hidden,
        intermediate_size: inter,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim: hidden / heads,
        vocab_size: vocab,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        rope_scaling: RopeScaling::None,
        attention_bias: true,
        tie_word_embeddings: tie,
        max_position_embeddings: 1024,
        eos_token_ids: vec![1],
        bos_token_id: Some(0),
    };
    match name {
        "qwen2-30m" => Some(qwen(512, 1408, 8, 8, 2, 4096, true)),
        "tiny-qwen2" => Some(qwen(64, 128, 2, 4, 2, 256, true)),
        "llama-60m" => Some(ModelConfig {
            architecture: Architecture::Llama,
            attention_bias: false,
            rope_theta: 5e5,
            ..qwen(768, 2048, 8, 12, 4, 8192, false)
        }),
        _ => None,
    }
}

/// One measured row of the benchmark table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// `train`, `prefill` or `decode`.
    pub test: String,
    /// Batch × tokens measured.
    pub shape: String,
    /// Tokens processed per second.
    pub tokens_per_s: f64,
    /// Model FLOPs per second achieved.
    pub gflops: f64,
    /// Share of the measured GEMM peak, in percent.
    pub peak_percent: f64,
}

/// The whole benchmark result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// What was measured (a built-in shape or a model directory).
    pub model: String,
    /// Parameter count.
    pub params: usize,
    /// rayon threads used.
    pub threads: usize,
    /// Best f32 GEMM throughput measured on this machine, GFLOP/s.
    pub gemm_peak_gflops: f64,
    /// The measurements.
    pub rows: Vec<BenchRow>,
}

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Timed repetitions (after one warm-up).
    pub repeats: usize,
    /// New tokens per sequence in the decode tests.
    pub decode_tokens: usize,
    /// Which measurements to run.
    pub tests: Vec<BenchTest>,
    /// Where they run.
    pub device: Device,
}

/// The measurements `r1ctl bench` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchTest {
    /// Forward + backward + AdamW.
    Train,
    /// Forward + LM head over every position.
    Prefill,
    /// KV-cache generation (batch 16, batch 64, GRPO-shaped).
    Decode,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            batch: 4,
            seq_len: 256,
            repeats: 5,
            decode_tokens: 128,
            tests: vec![BenchTest::Train, BenchTest::Prefill, BenchTest::Decode],
            device: Device::Cpu,
        }
    }
}

/// Best f32 GEMM GFLOP/s over the products the benchmark model runs, using every rayon thread:
/// the fastest of many timed calls of each (warm caches, no page faults), as `peak` is meant.
pub fn measure_gemm_peak() -> f64 {
    let mut best = 0.0f64;
    for &(m, n, k) in &[(1024, 1024, 1024), (1024, 2816, 512), (1024, 4096, 512)] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32) * 0.01).collect();
        let b: Vec<f32> = (0..n * k).map(|i| ((i % 89) as f32) * 0.01).collect();
        let mut c = vec![0f32; m * n];
        for _ in 0..8 {
            let start = Instant::now();
            gemm(
                MatMut::rows(&mut c, m, n, n),
                Mat::rows(&a, m, k, k),
                Mat::transposed(&b, k, n, k),
                1.0,
                false,
                Threads::All,
            );
            let secs = start.elapsed().as_secs_f64();
            best = best.max(2.0 * (m * n * k) as f64 / secs / 1e9);
        }
    }
    best
}

/// Best memory read bandwidth in bytes/s with every rayon thread: the fastest of several sums
/// over a 256 MiB buffer (far larger than any cache), the roof of a decoding step, which streams
/// every weight once.
pub fn measure_read_bandwidth() -> f64 {
    use rayon::prelude::*;
    let n = 64usize << 20;
    let data: Vec<f32> = (0..n).map(|i| (i % 251) as f32).collect();
    let mut best = 0.0f64;
    for _ in 0..6 {
        let start = Instant::now();
        let sum: f32 = data
            .par_chunks(1 << 16)
            .map(|c| {
                // 16 independent lanes, so the sum vectorises and memory is the limit.
                let mut acc = [0.0f32; 16];
                for block in c.chunks_exact(16) {
                    for (a, x) in acc.iter_mut().zip(block) {
                        *a += x;
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max((n * 4) as f64 / secs);
    }
    best
}

/// Forward FLOPs per token: 2 per matmul parameter, plus attention's two products (scores and
/// weighted values) over the (T+1)/2 keys a causal query sees on average.
pub fn forward_flops_per_token(model: &Model, seq_len: usize) -> f64 {
    let c = &model.config;
    let matmul = 2.0 * model.layout.matmul_params(c) as f64;
    let attention =
        4.0 * (seq_len + 1) as f64 / 2.0 * (c.head_dim * c.num_heads * c.num_layers) as f64;
    matmul + attention
}

/// Measures training (forward + loss + backward + clip + AdamW) and prefill (forward + LM head
/// over every position) throughput of `model`.
pub fn run(model: &mut Model, name: &str, options: &BenchOptions) -> Result<BenchReport> {
    let peak = measure_gemm_peak();
    let (b, t) = (options.batch, options.seq_len);
    let n = b * t;
    let v = model.config.vocab_size as u32;
    // Deterministic pseudo-random tokens (an LCG is enough for a throughput test).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let ids: Vec<u32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % v as u64) as u32
        })
        .collect();
    let mut targets = ids[1..].to_vec();
    targets.push(ids[0]);
    let fwd = forward_flops_per_token(model, t);
    let row = |test: &str, shape: String, tps: f64, flops_per_token: f64| {
        let gflops = tps * flops_per_token / 1e9;
        BenchRow {
            test: test.into(),
            shape,
            tokens_per_s: tps,
            gflops,
            peak_percent: 100.0 * gflops / peak,
        }
    };
    let mut rows = Vec::new();
    if options.tests.contains(&BenchTest::Train) {
        let tps = train_throughput(options.device, model, &ids, &targets, b, t, options.repeats)?;
        rows.push(row("train", format!("{b}x{t}"), tps, 3.0 * fwd));
    }
    if options.tests.contains(&BenchTest::Prefill) {
        let tps = prefill_throughput(options.device, model, &ids, &targets, b, t, options.repeats)?;
        rows.push(row("prefill", format!("{b}x{t}"), tps, fwd));
    }
    if options.tests.contains(&BenchTest::Decode) {
        // As the PyTorch baseline measures it: 32-token prompts, `decode_tokens` new tokens,
        // greedy, prefill included in the time; then a GRPO-shaped batch (8 prompts × 8 samples).
        let new = options.decode_tokens;
        let decode_flops = forward_flops_per_token(model, 32 + new / 2);
        for (test, prompts, samples, temperature) in [
            ("decode", 16, 1, 0.0),
            ("decode", 64, 1, 0.0),
            ("grpo", 8, 8, 1.0),
        ] {
            let tps = decode_throughput(
                options.device,
                model,
                &ids,
                (prompts, samples),
                temperature,
                32,
                new,
            )?;
            let shape = if samples > 1 {
                format!("{prompts}x{samples}x{new}")
            } else {
                format!("{prompts}x{new}")
            };
            rows.push(row(test, shape, tps, decode_flops));
        }
    }
    Ok(BenchReport {
        model: name.to_string(),
        params: model.layout.total,
        threads: rayon::current_num_threads(),
        gemm_peak_gflops: peak,
        rows,
    })
}

/// Tokens per second of full training steps: forward, cross-entropy head, backward, clipping, AdamW.
fn train_throughput(
    device: Device,
    model: &mut Model,
    ids: &[u32],
    targets: &[u32],
    b: usize,
    t: usize,
    repeats: usize,
) -> Result<f64> {
    let weights = WeightedCrossEntropy::mean_weights(&vec![1.0; b * t]);
    let objective = WeightedCrossEntropy { weights: &weights };
    let mut engine = device::open(device, model, true)?;
    let mut opt = AdamW::new(AdamWConfig::default(), model.layout.total);
    let trained = ModelRole::Trained;
    let mut step = |model: &mut Model| -> Result<()> {
        engine.zero_grads()?;
        engine.forward(trained, model, (b, t), &[], ids)?;
        engine.head(trained, model, targets, Some(&objective), true, false)?;
        engine.backward(model, ids)?;
        engine.clip_grad_norm(1.0)?;
        engine.adamw_step(model, &mut opt, 1e-4)
    };
    step(model)?;
    let start = Instant::now();
    for _ in 0..repeats {
        step(model)?;
    }
    Ok((repeats * b * t) as f64 / start.elapsed().as_secs_f64())
}

/// Tokens per second of a forward pass with the LM head over every position.
fn prefill_throughput(
    device: Device,
    model: &Model,
    ids: &[u32],
    targets: &[u32],
    b: usize,
    t: usize,
    repeats: usize,
) -> Result<f64> {
    let mut engine = device::open(device, model, false)?;
    let role = ModelRole::Trained;
    let mut pass = || -> Result<()> {
        engine.forward(role, model, (b, t), &[], ids)?;
        engine.head(role, model, targets, None, false, false)?;
        Ok(())
    };
    pass()?;
    let start = Instant::now();
    for _ in 0..repeats {
        pass()?;
    }
    Ok((repeats * b * t) as f64 / start.elapsed().as_secs_f64())
}

/// Generated tokens per second for `prompts` prompts of `prompt_len` tokens, `samples` each,
/// exactly `new_tokens` new tokens per sequence (EOS ignored), prefill included.
fn decode_throughput(
    device: Device,
    model: &Model,
    source: &[u32],
    (prompts, samples): (usize, usize),
    temperature: f32,
    prompt_len: usize,
    new_tokens: usize,
) -> Result<f64> {
    let params = SamplingParams {
        temperature,
        max_new_tokens: new_tokens,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let requests: Vec<GenerationRequest> = (0..prompts)
        .map(|p| GenerationRequest {
            prompt_ids: source
                .iter()
                .cycle()
                .skip(p * prompt_len)
                .take(prompt_len)
                .copied()
                .collect(),
            samples,
            seed: p as u64,
            params: params.clone(),
        })
        .collect();
    let mut sampler = Sampler::on_device(device, model, prompts * samples)?;
    // Warm-up: a few tokens, with the cache allocated for the full length.
    let warm_params = SamplingParams {
        max_new_tokens: 8,
        ..params.clone()
    };
    let warm: Vec<GenerationRequest> = requests
        .iter()
        .map(|r| GenerationRequest {
            params: warm_params.clone(),
            ..r.clone()
        })
        .collect();
    sampler.generate(&warm, None)?;
    let start = Instant::now();
    let out = sampler.generate(&requests, None)?;
    let generated: usize = out.iter().map(|c| c.token_ids.len()).sum();
    Ok(generated as f64 / start.elapsed().as_secs_f64())
}
