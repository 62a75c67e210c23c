//! r1ctl: the command-line client of r1. Thin: argument parsing, wiring and exit codes; the logic
//! lives in the library crates. Exit codes: 0 success, 1 a negative answer, 2 an error, 3 the
//! daemon is unreachable. Output into a pipe whose reader has gone (`r1ctl steps DIR | head -1`)
//! ends r1ctl quietly with status 0, as `r1ctl judge` and ripgrep do.

/// `println!` for every module of r1ctl (declared before them, so it shadows std's): std's panics
/// when stdout is a pipe whose reader has gone ("failed printing to stdout: Broken pipe"); this
/// one ends r1ctl quietly with status 0 (see [`write_stdout`]).
macro_rules! println {
    () => {
        $crate::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` with the same closed-pipe rule as `println!` above.
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

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
        // A write to stdout that failed because its reader has gone, passed up with `?`.
        Err(e) if closed_pipe(&e) => std::process::exit(0),
        Err(e) => {
            eprintln!("r1ctl: {}", error_text(&e));
            std::process::exit(2);
        }
    }
}

/// Writes to stdout; a reader that has gone (EPIPE) ends r1ctl with status 0 and no message,
/// any other write error with status 2 and the error.
pub(crate) fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("r1ctl: writing to stdout: {e}");
        std::process::exit(2);
    }
}

/// Whether `e` is, somewhere in its chain, a write into a closed pipe (and not a connection to
/// r1d or the Hub that broke, which is a real error).
fn closed_pipe(e: &anyhow::Error) -> bool {
    !e.chain().any(|cause| cause.is::<ureq::Error>())
        && e.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        })
}

/// `e` and its causes joined by `: `, each said once. Library errors often carry their source in
/// their own text (`#[error("tokenizer: {0}")]`) and return it as `source()` too, so anyhow's
/// `{:#}` printed it twice ("invalid input: x: invalid input: x"); a cause whose text is already
/// shown is skipped.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose message includes its source, as `#[error("...: {0}")]` with `#[from]` makes.
    #[derive(Debug, thiserror::Error)]
    #[error("tokenizer: {0}")]
    struct Wrapping(#[from] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("invalid input: token 7 out of range")]
    struct Inner;

    #[test]
    fn each_cause_is_said_once() {
        let e = anyhow::Error::new(Wrapping(Inner)).context("step 3");
        assert_eq!(
            format!("{e:#}"),
            "step 3: tokenizer: invalid input: token 7 out of range: invalid input: token 7 out of range",
            "anyhow's own chain repeats the cause"
        );
        assert_eq!(
            error_text(&e),
            "step 3: tokenizer: invalid input: token 7 out of range"
        );
        // Causes that add something are all kept.
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io)
            .context("models/x/config.json")
            .context("model.path");
        assert_eq!(
            error_text(&e),
            "model.path: models/x/config.json: no such file"
        );
    }

    #[test]
    fn a_broken_pipe_anywhere_in_the_chain_is_a_closed_pipe() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(closed_pipe(
            &anyhow::Error::new(pipe).context("writing scores")
        ));
        let other = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(!closed_pipe(&anyhow::Error::new(other)));
    }
}
