//! `r1ctl model`: model files. `pull` fetches a model folder from the Hugging Face Hub (pull.rs,
//! hub.rs). `import` turns a llama.cpp GGUF file (Llama or Qwen3 architecture; F32, F16,
//! BF16, Q8_0, Q4_0 or Q4_1 tensors) into a Hugging Face directory that r1 trains and `transformers`
//! loads: f32 safetensors, config.json, tokenizer.json rebuilt from the GGUF's vocabulary, and
//! tokenizer_config.json with the chat template it carries. The work is
//! `r1_kernels::model::gguf::import_to_dir`; this file is wiring.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

mod hub;
mod pull;

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
    /// Fetch a model folder (config, tokenizer, safetensors weights) from the Hugging Face Hub.
    #[command(after_help = "\
Example: r1ctl model pull Qwen/Qwen2.5-0.5B   (fills models/Qwen2.5-0.5B)

Files go through the Hub cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), \
as the Hub's own client keeps it, and DEST holds hard links to them (copies when the cache is on \
another file system). A pull that breaks resumes where it stopped when run again. Every file is \
checked against the checksum the Hub lists (SHA-256 for LFS files); a file that fails is removed \
from the cache.

Environment: HF_ENDPOINT (default https://huggingface.co), HF_HOME, HF_HUB_CACHE, HF_TOKEN (else \
the token file HF_TOKEN_PATH or HF_HOME/token that `huggingface-cli login` writes).

Exit status: 0 pulled; 2 an error (the repository, revision or endpoint is named: not found, a \
token needed, unreachable, no safetensors weights, a checksum mismatch, a broken transfer).")]
    Pull(pull::PullArgs),
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
        ModelCommand::Pull(args) => pull::run(args),
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
