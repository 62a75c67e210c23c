//! `r1-fuzz`: the fuzzing harness's command line (the logic is in `r1_tests::fuzz`).
//!
//! - `r1-fuzz run [--targets config,data,...] [--inputs N | --seconds S] [--seed N]`: fuzzes each
//!   target, prints what it tried and found; exit 0 when nothing panicked, aborted or hung, 1 when
//!   something did (reproducers saved under the corpus's `crashes/`), 2 when the harness failed.
//! - `r1-fuzz replay TARGET PATH`: runs one saved input in this process, for a backtrace.
//! - `r1-fuzz seed CORPUS`: (re)writes the generated seeds (models, GGUF, Parquet, HTTP).
//! - `r1-fuzz worker TARGET`: what `run` starts under a memory limit; not for people.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use r1_tests::fuzz::{self, Budget, Options, Target};

#[derive(Parser)]
#[command(name = "r1-fuzz", about = "Fuzzes r1's input parsers and its HTTP API")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fuzz targets for a number of inputs or seconds each.
    Run {
        /// Comma-separated targets (config, data, model_dir, gguf, tokenizer, math, http);
        /// default: all.
        #[arg(long, value_delimiter = ',')]
        targets: Vec<String>,
        /// Mutated inputs per target (after the seeds).
        #[arg(long, conflicts_with = "seconds")]
        inputs: Option<u64>,
        /// Seconds per target instead of a count.
        #[arg(long)]
        seconds: Option<f64>,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Corpus root (seeds in <corpus>/<target>/, findings in <corpus>/crashes/).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus"))]
        corpus: PathBuf,
        /// Address-space limit of each worker and of r1d, MiB.
        #[arg(long, default_value_t = 2048)]
        memory_mb: u64,
        /// Seconds one input may take before it is a hang.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// The r1d binary for the http target (default: next to this one).
        #[arg(long)]
        r1d: Option<PathBuf>,
    },
    /// Run one saved input in-process.
    Replay {
        /// The target.
        target: String,
        /// A corpus entry or saved finding (file or folder).
        path: PathBuf,
    },
    /// Write the generated seeds into a corpus root.
    Seed {
        /// The corpus root.
        corpus: PathBuf,
    },
    /// Serve inputs on stdin (started by `run`).
    Worker {
        /// The target.
        target: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("r1-fuzz: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Worker { target } => {
            let target: Target = target.parse().map_err(anyhow::Error::msg)?;
            fuzz::worker_main(target)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Replay { target, path } => {
            let target: Target = target.parse().map_err(anyhow::Error::msg)?;
            match fuzz::replay(target, &path)? {
                Ok(()) => println!("accepted"),
                Err(e) => println!("refused: {e}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Seed { corpus } => {
            fuzz::seeds::write_generated(&corpus)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("writing seeds under {}", corpus.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            targets,
            inputs,
            seconds,
            seed,
            corpus,
            memory_mb,
            timeout,
            r1d,
        } => {
            let targets: Vec<Target> = if targets.is_empty() {
                Target::ALL.to_vec()
            } else {
                targets
                    .iter()
                    .map(|t| t.parse().map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?
            };
            let exe = std::env::current_exe().context("finding this executable")?;
            let r1d = r1d.unwrap_or_else(|| exe.with_file_name("r1d"));
            let options = Options {
                corpus,
                budget: match seconds {
                    Some(s) => Budget::Seconds(s),
                    None => Budget::Inputs(inputs.unwrap_or(1000)),
                },
                seed,
                memory_limit: memory_mb << 20,
                timeout: Duration::from_secs_f64(timeout),
                worker_exe: exe,
                r1d_exe: r1d,
            };
            let mut clean = true;
            let mut total = 0;
            for target in targets {
                let report = fuzz::fuzz_target(&options, target)
                    .with_context(|| format!("fuzzing {target}"))?;
                println!("{report}");
                total += report.inputs;
                clean &= report.clean();
            }
            println!(
                "total inputs {total}: {}",
                if clean {
                    "no panics, aborts or hangs"
                } else {
                    "FINDINGS (reproducers above)"
                }
            );
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
