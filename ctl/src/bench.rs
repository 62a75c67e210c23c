//! `r1ctl bench`: throughput of the engine on a model, beside a baseline when one is given.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use r1_actors::bench_grpo::{run_grpo_bench, BenchRewards, GrpoBenchOptions, GrpoBenchReport};
use r1_kernels::bench::{self, BenchOptions, BenchReport, BenchTest, BUILTIN_SHAPES};
use r1_kernels::device::memory::{self, DeviceEstimate, LearnerShape, SamplerShape};
use r1_kernels::device::{self as devices, Device, DeviceSpec, Precision, RunShape};
use r1_kernels::model::{load_model_dir, Model, ModelConfig};
use r1_kernels::template::PromptTemplate;
use r1_kernels::tokenizer::Tokenizer;
use r1_kernels::train::SamplerIsMode;

/// Output format.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// A table for people.
    Table,
    /// One JSON object for scripts.
    Json,
}

/// Arguments of `r1ctl bench`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// `grpo`: GRPO steps of a fixed shape on a real model, phase by phase.
    #[command(subcommand)]
    sub: Option<BenchSub>,
    /// A Hugging Face model directory, or a built-in shape (qwen2-30m, tiny-qwen2, llama-60m).
    #[arg(default_value = "qwen2-30m")]
    model: String,
    /// Sequences per batch.
    #[arg(short = 'b', long, default_value_t = 4)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(short = 't', long, default_value_t = 256)]
    seq_len: usize,
    /// Timed repetitions of each test (after one warm-up).
    #[arg(short = 'r', long, default_value_t = 5)]
    repeats: usize,
    /// Measurements to run (comma-separated: train, prefill, decode).
    #[arg(long, value_delimiter = ',', default_value = "train,prefill,decode", value_parser = parse_test)]
    tests: Vec<TestArg>,
    /// New tokens per sequence in the decode tests.
    #[arg(long, default_value_t = 128)]
    decode_tokens: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Device to run on: `cpu`, `cuda:N`, or `auto` (the first GPU, else the CPU).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// JSON printed by scripts/torch_cpu_baseline.py (scripts/bench.sh), shown beside our figures.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// The benchmarks that are not throughput tests of the engine alone.
#[derive(clap::Subcommand)]
pub enum BenchSub {
    /// GRPO steps of a fixed shape (prompts × G × forced completion length) on a model directory:
    /// seconds per step, each phase's time and share of the GEMM peak, memory by category.
    Grpo(GrpoBenchArgs),
}

/// Arguments of `r1ctl bench grpo`.
#[derive(Args)]
pub struct GrpoBenchArgs {
    /// A Hugging Face model directory with tokenizer.json (e.g. one `r1ctl model import` wrote).
    model: PathBuf,
    /// Prompts per step.
    #[arg(long, default_value_t = 8)]
    prompts: usize,
    /// Completions per prompt (G).
    #[arg(short = 'g', long, default_value_t = 4)]
    group_size: usize,
    /// Tokens decoded per completion, exactly (end-of-sequence and stop strings ignored).
    #[arg(long, default_value_t = 64)]
    completion_tokens: usize,
    /// Minibatches per step (1 with one epoch: π_old is the training pass's own log-probs).
    #[arg(long, default_value_t = 1)]
    minibatches: usize,
    /// Passes over the rollouts per step.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// KL weight β (non-zero adds the reference model).
    #[arg(long, default_value_t = 0.0)]
    beta: f64,
    /// Timed steps.
    #[arg(long, default_value_t = 2)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    warmup_steps: usize,
    /// Seed of prompts, sampling and seeded rewards.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Rewards: `rules` (the arithmetic task's) or `seeded-random` (text-independent, every
    /// group carries a signal: a benchmark option, labelled in the output).
    #[arg(long, default_value = "rules", value_parser = parse_rewards)]
    rewards: BenchRewards,
    /// Chat template of the prompts.
    #[arg(long, default_value = "chatml")]
    template: String,
    /// Recompute π_old even when the step is on-policy (measures what skipping it saves).
    #[arg(long)]
    recompute_old_logp: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Device to run on: `cpu`, `cuda:N`, or `auto` (the first GPU, else the CPU).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// The sampler's weights: `f32`, `bf16` (a half-size copy; the learner corrects for the
    /// mismatch and it is reported), or `auto` (f32 on the CPU, bf16 on CUDA).
    #[arg(long, default_value = "auto", value_parser = parse_precision)]
    sampler_precision: Precision,
    /// The learner's correction for a bf16 sampler: none, token-truncate, token-mask,
    /// sequence-truncate, sequence-mask.
    #[arg(long, default_value = "token-truncate", value_parser = parse_is_mode)]
    sampler_is_mode: SamplerIsMode,
    /// Train each group's completions over one copy of their prompt (`[learner]
    /// share_prompts`, on by default); `false` lays out one rollout per row.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    share_prompts: bool,
    /// Keep only each layer's input through the training pass and recompute the rest in the
    /// backward pass (`[learner] activation_checkpointing`): less memory, one more forward.
    #[arg(long)]
    activation_checkpointing: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

fn parse_precision(name: &str) -> Result<Precision, String> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| format!("unknown precision `{name}` (auto, f32, bf16)"))
}

fn parse_is_mode(name: &str) -> Result<SamplerIsMode, String> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        format!(
            "unknown mode `{name}` (none, token-truncate, token-mask, sequence-truncate, sequence-mask)"
        )
    })
}

fn parse_rewards(name: &str) -> Result<BenchRewards, String> {
    match name {
        "rules" => Ok(BenchRewards::Rules),
        "seeded-random" => Ok(BenchRewards::SeededRandom),
        other => Err(format!("unknown rewards `{other}` (rules, seeded-random)")),
    }
}

/// Runs `r1ctl bench grpo`; returns the exit code.
fn run_grpo(args: GrpoBenchArgs) -> anyhow::Result<i32> {
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("setting the thread count")?;
    }
    let template: PromptTemplate = args
        .template
        .parse()
        .map_err(|e| anyhow::anyhow!("--template: {e}"))?;
    let dir = &args.model;
    let model = load_model_dir(dir).with_context(|| format!("loading {}", dir.display()))?;
    let tokenizer = Tokenizer::from_model_dir(dir)
        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    let options = GrpoBenchOptions {
        prompts: args.prompts,
        group_size: args.group_size,
        completion_tokens: args.completion_tokens,
        minibatches: args.minibatches,
        epochs: args.epochs,
        beta: args.beta,
        steps: args.steps,
        warmup_steps: args.warmup_steps,
        seed: args.seed,
        rewards: args.rewards,
        template,
        recompute_old_logp: args.recompute_old_logp,
        device: resolve_device(args.device)?,
        sampler_precision: args.sampler_precision,
        sampler_is_mode: args.sampler_is_mode,
        share_prompts: args.share_prompts,
        activation_checkpointing: args.activation_checkpointing,
    };
    let threads = rayon::current_num_threads();
    eprintln!(
        "r1ctl bench grpo: {} ({} parameters), {} threads, {} prompts x G={} x {} tokens, {} + {} steps…",
        dir.display(),
        model.layout.total,
        threads,
        options.prompts,
        options.group_size,
        options.completion_tokens,
        options.warmup_steps,
        options.steps
    );
    let config = model.config.clone();
    let report = run_grpo_bench(model, &tokenizer, &dir.display().to_string(), &options)?;
    let estimate = grpo_estimate(&config, &report);
    match args.output {
        Format::Json => {
            let json = serde_json::json!({"r1": report, "threads": threads, "estimate": estimate});
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Format::Table => print_grpo_table(&report, threads, &estimate),
    }
    Ok(0)
}

/// The pre-start estimate (`r1_kernels::device::memory`, what `r1ctl train` checks) of the
/// bench's shape on the CPU: one minibatch of rows of the (mean, rounded up) prompt and the
/// forced completion, the sampler decoding every completion of a step at once with the learner's
/// weights (the bench samples from the policy itself, so no second copy).
fn grpo_estimate(config: &ModelConfig, report: &GrpoBenchReport) -> DeviceEstimate {
    let o = &report.options;
    let rollouts = o.prompts * o.group_size;
    let tokens = report.prompt_tokens_mean.ceil() as usize + o.completion_tokens;
    let shape = RunShape {
        model: config.clone(),
        learner: Some(LearnerShape {
            rows: rollouts.div_ceil(o.minibatches.max(1)),
            tokens: tokens.saturating_sub(1).max(1),
            loss_tokens: o.completion_tokens,
            reference: o.beta != 0.0,
            checkpointed: o.activation_checkpointing,
        }),
        sampler: Some(SamplerShape {
            slots: rollouts,
            max_len: tokens,
            own_copy: false,
            precision: o.sampler_precision,
        }),
        reward_models: Vec::new(),
        learners: 1,
        shard_optimizer: false,
    };
    let estimate = memory::estimate(&shape, &[Device::Cpu], Device::Cpu, Device::Cpu);
    estimate
        .devices
        .into_iter()
        .next()
        .unwrap_or(DeviceEstimate {
            device: Device::Cpu,
            parts: Vec::new(),
        })
}

fn print_grpo_table(report: &GrpoBenchReport, threads: usize, estimate: &DeviceEstimate) {
    let o = &report.options;
    println!(
        "model {} ({:.1}M parameters), {threads} threads, measured f32 GEMM peak {:.1} GFLOP/s",
        report.model,
        report.params as f64 / 1e6,
        report.gemm_peak_gflops
    );
    println!(
        "GRPO step: {} prompts (mean {:.1} tokens) x G={} x {} forced tokens, {} minibatch(es), {} epoch(s), beta {}, rewards {}{}",
        o.prompts,
        report.prompt_tokens_mean,
        o.group_size,
        o.completion_tokens,
        o.minibatches,
        o.epochs,
        o.beta,
        match o.rewards {
            BenchRewards::Rules => "rules",
            BenchRewards::SeededRandom => "SEEDED-RANDOM (bench option, text-independent)",
        },
        if report.reused_policy_logp {
            ", pi_old = training pass (on-policy)"
        } else {
            ""
        }
    );
    println!(
        "sampler weights {}, measured read bandwidth {:.1} GB/s",
        report.sampler_precision, report.read_bandwidth_gbs
    );
    println!(
        "learner positions per step: {:.0} computed (rows of {}) for {:.0} in the padded batch{}",
        report.engine_tokens,
        report.engine_row,
        report.batch_tokens,
        if report.engine_tokens < report.batch_tokens {
            " (completions share their prompt's positions)"
        } else {
            ""
        }
    );
    println!(
        "{:<14} {:>9} {:>7} {:>9} {:>9} {:>7} {:>8} {:>7}",
        "phase", "s/step", "share", "GFLOP", "GFLOP/s", "% peak", "GB read", "% bw"
    );
    for p in &report.phases {
        let (gb, bw) = if p.gbytes > 0.0 {
            (
                format!("{:.2}", p.gbytes),
                format!("{:.1}%", p.bandwidth_percent),
            )
        } else {
            (String::new(), String::new())
        };
        println!(
            "{:<14} {:>9.3} {:>6.1}% {:>9.1} {:>9.1} {:>6.1}% {gb:>8} {bw:>7}",
            p.phase, p.seconds, p.share_percent, p.gflop, p.gflops, p.peak_percent
        );
    }
    println!(
        "total {:.3} s/step, {:.1} completion tokens/s, reward mean {:.3}, groups without signal {:.0}%",
        report.seconds_per_step,
        report.completion_tokens_per_s,
        report.reward_mean,
        100.0 * report.frac_zero_std
    );
    if let Some(m) = &report.sampler_mismatch {
        println!(
            "sampler vs learner over {} tokens: |logp diff| mean {:.2e} max {:.2e}; weights ({}) min {:.3} mean {:.4} max {:.3}, {:.2}% cut",
            m.tokens,
            m.logp_diff_mean,
            m.logp_diff_max,
            serde_json::to_value(report.options.sampler_is_mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            m.is_min,
            m.is_mean,
            m.is_max,
            100.0 * m.is_cut_fraction
        );
    }
    println!("memory by category (planned):");
    let mut total = 0.0;
    for m in &report.memory {
        total += m.bytes;
        println!(
            "  {:<26} {:>9.1} MiB",
            m.category,
            m.bytes / (1u64 << 20) as f64
        );
    }
    println!(
        "  {:<26} {:>9.1} MiB   (peak RSS of the process: {:.1} MiB)",
        "total",
        total / (1u64 << 20) as f64,
        report.peak_rss_bytes / (1u64 << 20) as f64
    );
    println!("memory by category (pre-start estimate, what `r1ctl train` checks):");
    for p in &estimate.parts {
        println!(
            "  {:<30} {:>9.1} MiB",
            p.category,
            p.bytes / (1u64 << 20) as f64
        );
    }
    println!(
        "  {:<30} {:>9.1} MiB   (peak RSS of the process: {:.1} MiB)",
        "total",
        estimate.total() / (1u64 << 20) as f64,
        report.peak_rss_bytes / (1u64 << 20) as f64
    );
}

/// One `--tests` entry.
#[derive(Clone, Copy)]
struct TestArg(BenchTest);

fn parse_test(name: &str) -> Result<TestArg, String> {
    match name {
        "train" => Ok(TestArg(BenchTest::Train)),
        "prefill" => Ok(TestArg(BenchTest::Prefill)),
        "decode" => Ok(TestArg(BenchTest::Decode)),
        other => Err(format!("unknown test `{other}` (train, prefill, decode)")),
    }
}

/// Runs the benchmark and prints it; returns the exit code.
pub fn run(args: BenchArgs) -> anyhow::Result<i32> {
    if let Some(BenchSub::Grpo(grpo)) = args.sub {
        return run_grpo(grpo);
    }
    if args.batch == 0 || args.seq_len == 0 || args.repeats == 0 || args.decode_tokens == 0 {
        bail!("--batch, --seq-len, --repeats and --decode-tokens must be positive");
    }
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("setting the thread count")?;
    }
    let baseline = args.baseline.as_deref().map(read_baseline).transpose()?;
    let (mut model, name) = load(&args.model)?;
    let options = BenchOptions {
        batch: args.batch,
        seq_len: args.seq_len,
        repeats: args.repeats,
        decode_tokens: args.decode_tokens,
        tests: args.tests.iter().map(|t| t.0).collect(),
        device: resolve_device(args.device)?,
    };
    eprintln!(
        "r1ctl bench: {} ({} parameters), {} threads…",
        name,
        model.layout.total,
        rayon::current_num_threads()
    );
    let report = bench::run(&mut model, &name, &options)?;
    match args.output {
        Format::Json => {
            let json = serde_json::json!({"r1": report, "baseline": baseline});
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Format::Table => print_table(&report, baseline.as_ref()),
    }
    Ok(0)
}

/// The device `spec` names on this machine; `auto` without a GPU says it falls back to the CPU.
fn resolve_device(spec: DeviceSpec) -> anyhow::Result<Device> {
    let list = devices::list();
    if let Some(note) = spec.auto_fallback_note(&list) {
        eprintln!("{note}");
    }
    spec.resolve(&list).context("--device")
}

fn load(model: &str) -> anyhow::Result<(Model, String)> {
    if let Some(config) = bench::builtin_config(model) {
        return Ok((Model::random(config, 0, 0.02), model.to_string()));
    }
    let path = Path::new(model);
    if !path.is_dir() {
        bail!(
            "`{model}` is neither a model directory nor a built-in shape ({})",
            BUILTIN_SHAPES.join(", ")
        );
    }
    let loaded = load_model_dir(path).with_context(|| format!("loading {}", path.display()))?;
    Ok((loaded, path.display().to_string()))
}

fn read_baseline(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // The script prints one JSON object; take the last line that parses, so stray warnings above it do no harm.
    text.lines()
        .rev()
        .find_map(|line| {
            serde_json::from_str::<serde_json::Value>(line.trim())
                .ok()
                .filter(|v| v.is_object())
        })
        .with_context(|| format!("{}: no JSON object in the baseline output", path.display()))
}

fn print_table(report: &BenchReport, baseline: Option<&serde_json::Value>) {
    println!(
        "model {} ({:.1}M parameters), {} threads, measured f32 GEMM peak {:.1} GFLOP/s",
        report.model,
        report.params as f64 / 1e6,
        report.threads,
        report.gemm_peak_gflops
    );
    let base_name = baseline
        .and_then(|b| b.get("torch"))
        .and_then(|v| v.as_str())
        .map(|v| format!("torch {v}"))
        .unwrap_or_else(|| "baseline".into());
    println!(
        "{:<8} {:>12} {:>12} {:>9} {:>7} {:>20} {:>7}",
        "test", "shape", "tokens/s", "GFLOP/s", "% peak", base_name, "ratio"
    );
    for row in &report.rows {
        // The PyTorch script measures decode at batch 16 only.
        let comparable = row.test != "decode" || row.shape.starts_with("16x");
        let base = baseline
            .filter(|_| comparable)
            .and_then(|b| b.get(format!("{}_tokens_per_s", row.test)))
            .and_then(|v| v.as_f64());
        let (base_s, ratio_s) = match base {
            Some(b) if b > 0.0 => (format!("{b:.1}"), format!("{:.2}x", row.tokens_per_s / b)),
            _ => ("-".into(), "-".into()),
        };
        println!(
            "{:<8} {:>12} {:>12.1} {:>9.1} {:>6.1}% {:>20} {:>7}",
            row.test, row.shape, row.tokens_per_s, row.gflops, row.peak_percent, base_s, ratio_s
        );
    }
    if baseline.is_some() {
        println!("(the baseline measures decode at batch 16 only; grpo = prompts x samples x new tokens)");
    }
}
