//! `r1ctl run`: the embedded default run (tiny model, cold-start SFT, GRPO, evaluation before and
//! after) on this machine, with no downloads; or, with `--recipe`, the same pipeline on a real
//! model (`config/recipes/*.toml`, embedded). Progress goes to stderr as it runs; the table (or
//! the report JSON) goes to stdout.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use r1_actors::stages::default_run::{
    run_default, DefaultRunConfig, DefaultRunReport, HeldOutScores, Progress,
};

/// Output format.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// A table for people.
    Table,
    /// The report JSON (as written to report.json).
    Json,
}

/// The recipes `--recipe` knows: name, the TOML (its keys override the default config).
const RECIPES: &[(&str, &str)] = &[("smollm2", include_str!("../../config/recipes/smollm2.toml"))];

/// Arguments of `r1ctl run`.
#[derive(Args)]
pub struct RunArgs {
    /// A TOML file overriding the default config (any subset of its keys; unknown keys are errors).
    #[arg(long, conflicts_with = "recipe")]
    config: Option<PathBuf>,
    /// A real-model recipe instead of the tiny default: `smollm2` (SmolLM2-135M-Instruct, cold
    /// start on multiplication traces, GRPO, held-out evaluation of base, cold start and RL;
    /// prepare the model with scripts/recipe-smollm2.sh, which then runs this).
    #[arg(long)]
    recipe: Option<String>,
    /// The model directory a recipe starts from (overrides its `model_dir`).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Seed of the model, the problems, the traces and the samplers (overrides the file's).
    #[arg(long)]
    seed: Option<u64>,
    /// Run directory: report.json and the final checkpoint go here.
    #[arg(long, default_value = "runs/default")]
    dir: PathBuf,
    /// Wall-clock budget in seconds (0: none); GRPO stops early to fit it.
    #[arg(long)]
    time_budget: Option<u64>,
    /// Print the effective config (defaults and overrides) as TOML and exit without running: a
    /// starting point for `--config`.
    #[arg(long)]
    print_config: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// Runs the default and prints its report; returns the exit code.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<DefaultRunConfig>(&text)
                .with_context(|| format!("{}: not a default-run config", path.display()))?
        }
        None => match &args.recipe {
            Some(name) => recipe(name)?,
            None => DefaultRunConfig::default(),
        },
    };
    if let Some(dir) = args.model_dir {
        config.model_dir = Some(dir);
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(budget) = args.time_budget {
        config.time_budget_secs = budget;
    }
    if args.print_config {
        print!(
            "{}",
            toml::to_string_pretty(&config).context("serialising the config")?
        );
        return Ok(0);
    }
    config.validate().context("checking the config")?;
    let report = run_default(&config, &args.dir, &mut print_progress)
        .with_context(|| format!("default run in {}", args.dir.display()))?;
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serialising the report")?
        ),
        Format::Table => print!("{}", table(&report)),
    }
    Ok(0)
}

/// The config of recipe `name`.
fn recipe(name: &str) -> anyhow::Result<DefaultRunConfig> {
    let Some((_, text)) = RECIPES.iter().find(|(n, _)| *n == name) else {
        let known: Vec<&str> = RECIPES.iter().map(|(n, _)| *n).collect();
        anyhow::bail!(
            "--recipe {name}: no such recipe (known: {})",
            known.join(", ")
        );
    };
    toml::from_str(text).with_context(|| format!("the built-in recipe {name}"))
}

/// One progress line on stderr.
fn print_progress(event: Progress) {
    match event {
        Progress::Stage {
            stage,
            detail,
            elapsed_secs,
        } => eprintln!("[{elapsed_secs:6.1}s] {stage:?}: {detail}"),
        Progress::SftStep {
            step,
            steps,
            loss,
            elapsed_secs,
        } => eprintln!("[{elapsed_secs:6.1}s] sft {step}/{steps} loss {loss:.4}"),
        Progress::GrpoStep {
            step,
            steps,
            reward,
            accuracy,
            format,
            frac_zero_std,
            completion_len,
            elapsed_secs,
        } => eprintln!(
            "[{elapsed_secs:6.1}s] grpo {step}/{steps} reward {reward:.3} accuracy {accuracy:.3} \
             format {format:.3} zero-std groups {frac_zero_std:.2} length {completion_len:.1}"
        ),
        Progress::Eval {
            stage,
            scores,
            elapsed_secs,
        } => eprintln!(
            "[{elapsed_secs:6.1}s] {stage:?}: accuracy {:.3} (cons@{} {:.3}) format {:.3} \
             length {:.1}",
            scores.accuracy,
            scores.samples,
            scores.cons_at_k,
            scores.format_rate,
            scores.mean_length
        ),
    }
}

/// The before/after table, the stage times and the checkpoint path.
fn table(report: &DefaultRunReport) -> String {
    let row = |name: &str, s: &HeldOutScores| {
        format!(
            "{name:<22} {:>9.1}% {:>9.1}% {:>7.1}% {:>11.1}\n",
            100.0 * s.accuracy,
            100.0 * s.cons_at_k,
            100.0 * s.format_rate,
            s.mean_length
        )
    };
    let mut out = format!(
        "held-out: {} problems x {} samples (pass@1 = accuracy)\n",
        report.before.problems, report.before.samples
    );
    out += &format!(
        "{:<22} {:>10} {:>10} {:>8} {:>11}\n",
        "model",
        "accuracy",
        format!("cons@{}", report.before.samples),
        "format",
        "mean length"
    );
    if let Some(base) = &report.base {
        out += &row("base model", base);
    }
    out += &row("cold start (SFT)", &report.before);
    out += &row("after GRPO", &report.after);
    out += &format!(
        "change: {:+.1} points accuracy, {:+.1} points format\n",
        100.0 * (report.after.accuracy - report.before.accuracy),
        100.0 * (report.after.format_rate - report.before.format_rate)
    );
    out += &format!(
        "time: {:.0}s total (SFT {:.0}s, {} steps; GRPO {:.0}s, {}/{} steps{}; evaluation {:.0}s)\n",
        report.total_seconds,
        report.sft.seconds,
        report.sft.steps,
        report.grpo.seconds,
        report.grpo.steps,
        report.grpo.steps_planned,
        if report.grpo.stopped_by_time_budget {
            ", stopped by the time budget"
        } else {
            ""
        },
        report.eval_seconds
    );
    out += &format!("checkpoint: {}\n", report.checkpoint.display());
    out
}
