//! r1ctl: the command-line client of r1. Thin: argument parsing, wiring and exit codes; the logic
//! lives in the library crates. Exit codes: 0 success, 1 a negative answer, 2 an error, 3 the
//! daemon is unreachable.

mod bench;
mod devices;
mod generate;
mod judge;
mod model;
mod remote;
mod report;
mod rm;
mod run;
mod terminal;
mod train;

use clap::{Parser, Subcommand};

/// r1ctl — drive and inspect r1.
#[derive(Parser)]
#[command(
    name = "r1ctl",
    version,
    about = "r1ctl: run r1's stages in-process (run, train), benchmark, score completions, \
             import models, and control the r1d daemon (start, watch, status, …)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure training, prefill and decode throughput of a model directory or a built-in shape.
    Bench(bench::BenchArgs),
    /// This machine's devices (cpu, cuda:N) with their memory, and why CUDA is unavailable.
    Devices(devices::DevicesArgs),
    /// Score completions in a JSONL file with the reward rules, offline: every component and why.
    Judge(judge::JudgeArgs),
    /// The embedded default: tiny model, cold-start SFT, GRPO, held-out evaluation before and after.
    Run(run::RunArgs),
    /// Run a job config's stage (grpo, sft, rejection, distill, eval, preference) in-process,
    /// resuming.
    Train(train::TrainArgs),
    /// Complete a prompt with a model directory, streaming the text (templates, sampling options).
    Generate(generate::GenerateArgs),
    /// Model files: import a GGUF file into a Hugging Face directory.
    Model(model::ModelArgs),
    #[command(flatten)]
    Remote(remote::Remote),
    /// (Re)write the SVG charts of an in-process RL run (reward, accuracy, format, length,
    /// reflection rate, KL, entropy by step) from its steps.jsonl; prints their paths.
    Report(report::ReportArgs),
    /// Reward models: train, score, and the tiny preference-RL demo.
    Rm(rm::RmArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Devices(args) => devices::run(args),
        Command::Judge(args) => judge::run(args),
        Command::Run(args) => run::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Model(args) => model::run(args),
        Command::Train(args) => train::run(args),
        // A run directory's records are read locally; everything else goes to r1d.
        Command::Remote(command) => report::local(&command).unwrap_or_else(|| remote::run(command)),
        Command::Report(args) => report::run(args),
        Command::Rm(args) => rm::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("r1ctl: {e:#}");
            std::process::exit(2);
        }
    }
}
