//! GPU throughput table: `cuda_bench [--train-batch B] [--train-len T] [--train-steps N]
//! [--decode-batch S] [--decode-context P] [--decode-steps N] [--skip-train]` on a random-weight
//! Qwen2-0.5B-shaped model. Prints a table (and one JSON line per row for scripts, plus a `peaks`
//! line naming the GPU and the spec peaks the percentages use). The attention kernels are
//! `R1_CUDA_TRAIN_ATTENTION` (`rows` or `tiled`) and `R1_CUDA_DECODE_ATTENTION` (`per-head` or
//! `grouped`). Exit 2 without a GPU.

use r1_kernels::cuda::bench::{
    bench_decode, bench_train, gpu_peaks, qwen2_05b_config, CudaBenchRow,
};
use r1_kernels::cuda::ops::TrainAttention;
use r1_kernels::cuda::{CudaBackend, DecodeAttention};
use r1_kernels::model::Model;

fn arg(args: &[String], name: &str, default: usize) -> Result<usize, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .ok_or_else(|| format!("{name} needs a value"))?
            .parse()
            .map_err(|e| format!("{name}: {e}")),
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (tb, tt, ts) = (
        arg(&args, "--train-batch", 8)?,
        arg(&args, "--train-len", 512)?,
        arg(&args, "--train-steps", 5)?,
    );
    let (db, dp, ds) = (
        arg(&args, "--decode-batch", 64)?,
        arg(&args, "--decode-context", 512)?,
        arg(&args, "--decode-steps", 64)?,
    );
    let be = CudaBackend::new(0).map_err(|e| e.to_string())?;
    be.load_all_kernels().map_err(|e| e.to_string())?;
    let config = qwen2_05b_config();
    let model = Model::random(config, 0, 0.02);
    eprintln!(
        "{}: Qwen2-0.5B shape, {} parameters (random weights)",
        be.device_name(),
        model.layout.total
    );
    let mut rows: Vec<CudaBenchRow> = Vec::new();
    if !args.iter().any(|a| a == "--skip-train") {
        rows.push(bench_train(&be, &model, tb, tt, ts).map_err(|e| format!("train: {e}"))?);
    }
    rows.push(bench_decode(&be, &model, db, dp, ds).map_err(|e| format!("decode: {e}"))?);
    println!(
        "{:<8} {:<14} {:>12} {:>12} {:>8} {:>10}",
        "test", "shape", "tokens/s", "achieved", "% peak", "step ms"
    );
    for r in &rows {
        let unit = if r.test == "train" { "TFLOP/s" } else { "TB/s" };
        let percent = r
            .peak_percent
            .map_or_else(|| "n/a".to_string(), |p| format!("{p:.1}"));
        println!(
            "{:<8} {:<14} {:>12.0} {:>7.1} {unit:<4} {percent:>8} {:>10.2}",
            r.test,
            r.shape,
            r.tokens_per_s,
            r.achieved,
            r.step_s * 1e3
        );
    }
    match gpu_peaks(be.device_name()) {
        Some(p) => eprintln!(
            "% peak: {} spec, {:.0} TFLOP/s bf16 dense, {:.2} TB/s HBM",
            p.model,
            p.bf16_flops / 1e12,
            p.hbm_bytes_per_s / 1e12
        ),
        None => eprintln!(
            "% peak: {} is not in the peaks table (cuda::bench::gpu_peaks); no percentages",
            be.device_name()
        ),
    }
    let peaks = gpu_peaks(be.device_name());
    println!(
        "JSON {}",
        serde_json::json!({
            "test": "peaks",
            "device": be.device_name(),
            "peaks_of": peaks.map(|p| p.model),
            "bf16_tflops": peaks.map(|p| p.bf16_flops / 1e12),
            "hbm_tb_per_s": peaks.map(|p| p.hbm_bytes_per_s / 1e12),
            "decode_attention": format!("{:?}", DecodeAttention::from_env()),
            "train_attention": format!("{:?}", TrainAttention::from_env()),
        })
    );
    for r in &rows {
        println!(
            "JSON {}",
            serde_json::to_string(r).map_err(|e| e.to_string())?
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("cuda_bench: {e}");
        std::process::exit(2);
    }
}
