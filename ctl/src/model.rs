//! `r1ctl model`: model files. `import` turns a llama.cpp GGUF file (Llama or Qwen3 architecture; F32, F16,
//! BF16, Q8_0, Q4_0 or Q4_1 tensors) into a Hugging Face directory that r1 trains and `transformers`
//! loads: f32 safetensors, config.json, tokenizer.json rebuilt from the GGUF's vocabulary, and
//! tokenizer_config.json with the chat template it carries. The work is
//! `r1_kernels::model::gguf::import_to_dir`; this file is wiring.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

/// Arguments of `r1ctl model`.
#[derive(Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

/// What `r1ctl model` can do.
#[derive(Subcommand)]
enum ModelCommand {
    /// Import a GGUF file into a Hugging Face model directory (dequantised to f32).
    #[command(after_help = "\
Example: scripts/fetch-smollm2.sh && \
r1ctl model import .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf runs/smollm2-135m-instruct

Exit status: 0 imported; 2 the file could not be read or imported (the message names the file and \
the key or tensor), or OUT_DIR already holds a model.")]
    Import(ImportArgs),
}

/// Arguments of `r1ctl model import`.
#[derive(Args)]
struct ImportArgs {
    /// The GGUF file to import.
    #[arg(value_name = "IN.gguf")]
    input: PathBuf,
    /// The directory to write (created if needed).
    #[arg(value_name = "OUT_DIR")]
    output: PathBuf,
    /// Overwrite a model already in OUT_DIR.
    #[arg(long)]
    force: bool,
}

/// Runs `r1ctl model …`; returns the exit code.
pub fn run(args: ModelArgs) -> anyhow::Result<i32> {
    match args.command {
        ModelCommand::Import(args) => import(args),
    }
}

fn import(args: ImportArgs) -> anyhow::Result<i32> {
    let existing = args.output.join("model.safetensors");
    if existing.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            existing.display()
        );
    }
    let model = r1_kernels::model::gguf::import_to_dir(&args.input, &args.output)
        .with_context(|| format!("importing {}", args.input.display()))?;
    let c = &model.config;
    eprintln!(
        "imported {} → {}: {} layers, hidden {}, {} heads / {} kv heads, vocab {}, {} parameters",
        args.input.display(),
        args.output.display(),
        c.num_layers,
        c.hidden_size,
        c.num_heads,
        c.num_kv_heads,
        c.vocab_size,
        model.layout.total
    );
    println!("{}", args.output.display());
    Ok(0)
}
