//! `r1ctl generate MODEL_DIR [PROMPT]`: complete a prompt with a checkpoint, the first thing anyone
//! does with one. The prompt comes from the argument or stdin (or as raw ids), goes through a
//! prompt template, and the completion streams to stdout as it decodes — whole UTF-8 characters
//! only — through the same sampler (KV cache, seeded per-sample streams) GRPO samples with.
//! Messages go to stderr; exit 0 on success, 2 on any error.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

use r1_kernels::model::load_model_dir;
use r1_kernels::sample::{FinishReason, GenerationRequest, Sampler, SamplingParams};
use r1_kernels::template::PromptTemplate;
use r1_kernels::tokenizer::{DecodeStream, Tokenizer};

/// Arguments of `r1ctl generate`.
#[derive(Args)]
#[command(after_help = "\
Examples:
  r1ctl generate runs/default/final --tokenizer byte 'What is 2 + 3?'
  echo 'Explain RoPE briefly.' | r1ctl generate .cache/models/smollm2 --temperature 0.7 -n 2

The completion streams to stdout (one line per sample); the rendered prompt's length, each \
sample's token count and why it stopped go to stderr. Exit status: 0 generated; 2 an error.")]
pub struct GenerateArgs {
    /// A Hugging Face model directory (config.json + safetensors), e.g. a run's `final`.
    model: PathBuf,
    /// The prompt; read from stdin when absent.
    prompt: Option<String>,
    /// `auto` (the model's chat format when tokenizer_config.json's chat_template is ChatML or
    /// Llama 3, else plain), `plain` (the text as is), or r1's `r1_zero`, `chatml`, `llama3`,
    /// each optionally `+reasoning`.
    #[arg(long, default_value = "auto")]
    template: String,
    /// `byte` for r1's byte tokenizer (the tiny built-in models); default: the directory's
    /// tokenizer.json.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Token ids of the prompt, comma-separated, instead of text (no template is applied).
    #[arg(long, value_delimiter = ',', conflicts_with = "prompt")]
    prompt_ids: Option<Vec<u32>>,
    /// Softmax temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.6)]
    temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Keep only the k most likely tokens (0 keeps all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Most tokens to generate per sample.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Seed: the same seed gives the same samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples to draw from the prompt.
    #[arg(short = 'n', long = "samples", default_value_t = 1)]
    samples: usize,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
}

/// Runs the command; returns the exit code.
pub fn run(args: GenerateArgs) -> anyhow::Result<i32> {
    if !args.model.is_dir() {
        bail!("{}: not a model directory", args.model.display());
    }
    let tokenizer = r1_kernels::tokenizer::resolve(&args.model, args.tokenizer.as_deref())
        .with_context(|| format!("tokenizer of {}", args.model.display()))?;
    let (prompt_ids, template) = match &args.prompt_ids {
        Some(ids) if ids.is_empty() => bail!("--prompt-ids: no ids given"),
        Some(ids) => (ids.clone(), None),
        None => {
            let text = prompt_text(args.prompt.as_deref())?;
            let template = resolve_template(&args.template, &args.model)?;
            let ids = match template {
                Some(template) => {
                    template
                        .check_tokenizer(&tokenizer)
                        .with_context(|| format!("--template {}", args.template))?;
                    template.render_prompt(&text).encode(&tokenizer)
                }
                None => tokenizer.encode(&text, true),
            }
            .context("tokenizing the prompt")?;
            (ids, template)
        }
    };
    // A chat turn ends at the template's end-of-turn token (as in the stages' sampling), any
    // text at the tokenizer's end-of-sequence ids; neither is part of the printed text.
    let mut stop_ids: Vec<u32> = template
        .and_then(|t| t.end_of_turn())
        .and_then(|t| tokenizer.token_id(t))
        .into_iter()
        .collect();
    stop_ids.extend(tokenizer.eos_ids());
    if args.ignore_eos {
        stop_ids.clear();
    }
    let model =
        load_model_dir(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        ignore_eos: args.ignore_eos,
        stop_token_ids: stop_ids.clone(),
        ..Default::default()
    };
    params
        .validate()
        .map_err(|e| anyhow::anyhow!("sampling options: {e}"))?;
    if args.samples == 0 {
        bail!("-n: at least one sample");
    }
    eprintln!("prompt: {} tokens", prompt_ids.len());
    let request = GenerationRequest {
        prompt_ids,
        samples: args.samples,
        seed: args.seed,
        params,
    };
    // One sequence at a time, so each sample streams whole; the sampler's per-sample streams make
    // the tokens those of any batch size.
    let mut sampler = Sampler::new(&model, 1);
    let mut printer = StreamPrinter::new(&tokenizer, &stop_ids);
    let completions = sampler
        .generate_streaming(
            std::slice::from_ref(&request),
            None,
            &mut |_, sample, token| printer.token(sample, token),
        )
        .context("generating")?;
    printer.end_sample()?;
    if let Some(e) = printer.error.take() {
        return Err(e).context("writing to stdout");
    }
    for c in &completions {
        let why = match c.finish {
            FinishReason::Eos => "end of turn or sequence",
            FinishReason::Stop => "stop string",
            FinishReason::Length => "length limit",
        };
        eprintln!(
            "sample {}: {} tokens, stopped at the {why}",
            c.sample,
            c.token_ids.len()
        );
    }
    Ok(0)
}

/// The prompt from the argument, else from stdin (not an interactive terminal: that would wait
/// for input nobody was told to type).
fn prompt_text(arg: Option<&str>) -> anyhow::Result<String> {
    let text = match arg {
        Some(text) => text.to_string(),
        None if std::io::stdin().is_terminal() => {
            bail!("no prompt: give it as an argument, on stdin, or with --prompt-ids")
        }
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the prompt from stdin")?;
            // A trailing newline from `echo` is not part of the prompt.
            text.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if text.trim().is_empty() {
        bail!("no prompt: give it as an argument, on stdin, or with --prompt-ids");
    }
    Ok(text)
}

/// The template `name` asks for; `None` is plain text. `auto` reads the model's chat template
/// from tokenizer_config.json and picks the r1 format that writes the same markup (r1 renders its
/// own formats instead of running Jinja).
fn resolve_template(name: &str, dir: &Path) -> anyhow::Result<Option<PromptTemplate>> {
    match name {
        "plain" => Ok(None),
        "auto" => {
            let template = chat_template(dir)?;
            let kind = match template.as_deref() {
                Some(t) if t.contains("<|im_start|>") => Some("chatml"),
                Some(t) if t.contains("<|start_header_id|>") => Some("llama3"),
                _ => None,
            };
            match kind {
                Some(kind) => {
                    eprintln!("template: {kind} (from the model's chat template)");
                    Ok(Some(kind.parse()?))
                }
                None => {
                    eprintln!("template: plain (the model has no ChatML or Llama 3 chat template)");
                    Ok(None)
                }
            }
        }
        other => other
            .parse::<PromptTemplate>()
            .map(Some)
            .with_context(|| format!("--template {other} (or `auto`, `plain`)")),
    }
}

/// `chat_template` of the directory's tokenizer_config.json, when it has one.
fn chat_template(dir: &Path) -> anyhow::Result<Option<String>> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    Ok(match json.get("chat_template") {
        Some(Value::String(t)) => Some(t.clone()),
        // The list form: named templates; the default one is what generation uses.
        Some(Value::Array(items)) => items
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    })
}

/// Writes each sample's text to stdout as its tokens arrive, one line per sample.
struct StreamPrinter<'t> {
    tokenizer: &'t Tokenizer,
    /// Tokens that end a sequence rather than being part of its text.
    stop_ids: &'t [u32],
    /// The sample being printed and its decoder.
    current: Option<(usize, DecodeStream<'t>)>,
    /// The first write error (the sampler's callback cannot return one).
    error: Option<std::io::Error>,
}

impl<'t> StreamPrinter<'t> {
    fn new(tokenizer: &'t Tokenizer, stop_ids: &'t [u32]) -> Self {
        StreamPrinter {
            tokenizer,
            stop_ids,
            current: None,
            error: None,
        }
    }

    fn token(&mut self, sample: usize, token: u32) {
        if self.current.as_ref().map(|(s, _)| *s) != Some(sample) {
            if let Err(e) = self.end_sample() {
                self.error.get_or_insert(e);
            }
            self.current = Some((sample, self.tokenizer.decode_stream(false)));
        }
        if self.stop_ids.contains(&token) {
            return;
        }
        let Some((_, stream)) = self.current.as_mut() else {
            return;
        };
        let text = match stream.step(token) {
            Ok(text) => text,
            // An id the tokenizer lacks (models often have spare embedding rows).
            Err(_) => Some("\u{FFFD}".to_string()),
        };
        if let Some(text) = text {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                self.error.get_or_insert(e);
            }
        }
    }

    /// Flushes what the current sample's decoder holds back and ends its line.
    fn end_sample(&mut self) -> std::io::Result<()> {
        let Some((_, mut stream)) = self.current.take() else {
            return Ok(());
        };
        let rest = stream.finish().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        out.write_all(rest.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()
    }
}
