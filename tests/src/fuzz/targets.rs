//! The fuzz targets that run inside a worker process: each takes an [`Input`], writes what the
//! real entry point reads from disk into a scratch folder, calls that entry point as `r1ctl` and
//! `r1d` do, and returns `Ok` (accepted) or `Err` (refused, with the message). A panic or an
//! abort is a finding; a refusal is the expected answer to most inputs. The HTTP target is not
//! here: it drives a separate r1d process (see [`super::http`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use r1_actors::data::{load_prompts, DataSource, FieldMap};
use r1_actors::judge::math::{equivalent, extract_answer, math_reward, ExtractMode};
use r1_actors::judge::tasks::Split;
use r1_actors::reward_model::{load_labels, load_pairs, LabelFields, PairFields};
use r1_actors::stages::sft::load_sft_set;
use r1_actors::stages::SftConfig;
use r1_config::JobConfig;
use r1_kernels::model::gguf::import_to_dir;
use r1_kernels::model::{load_model_dir, load_reward_model_dir};
use r1_kernels::template::{PromptTemplate, TemplateKind};
use r1_kernels::tokenizer::Tokenizer;

use super::input::Input;

/// What is fuzzed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A TOML job config: parse, validate, resolve paths and build each stage's job, as
    /// `r1ctl train` and r1d's start route do.
    Config,
    /// A JSONL or Parquet dataset through every reader: prompts/answers (`[data]`), SFT
    /// examples, preference pairs, labelled responses, general prompts.
    Data,
    /// A model directory (`config.json` + `model.safetensors` or a sharded index) through the
    /// causal-LM and the reward-model loaders.
    ModelDir,
    /// A GGUF file through `r1ctl model import` (reader, Llama mapping, tokenizer rebuild,
    /// export) and the exported directory's tokenizer.
    Gguf,
    /// A tokenizer directory (`tokenizer.json`, `tokenizer_config.json`,
    /// `generation_config.json`, `config.json`) loaded, then used to encode and decode.
    Tokenizer,
    /// The math judge: a completion and a gold answer (separated by a `=== gold ===` line)
    /// through extraction in every mode and both directions of the equivalence check.
    Math,
    /// The HTTP API of a real r1d on loopback (driven from the parent, see `super::http`).
    Http,
}

impl Target {
    /// Every target, in the order runs report them.
    pub const ALL: [Target; 7] = [
        Target::Config,
        Target::Data,
        Target::ModelDir,
        Target::Gguf,
        Target::Tokenizer,
        Target::Math,
        Target::Http,
    ];

    /// The name used on the command line and as the corpus folder.
    pub fn name(self) -> &'static str {
        match self {
            Target::Config => "config",
            Target::Data => "data",
            Target::ModelDir => "model_dir",
            Target::Gguf => "gguf",
            Target::Tokenizer => "tokenizer",
            Target::Math => "math",
            Target::Http => "http",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
                format!("unknown fuzz target `{s}` (one of {})", names.join(", "))
            })
    }
}

/// The line that separates a math input's completion from its gold answer.
pub const GOLD_SEPARATOR: &str = "\n=== gold ===\n";

/// Runs one input through an in-process target; `scratch` is an empty folder it may write in.
/// `Err` is a refusal (the message the user would see).
pub fn run(target: Target, input: &Input, scratch: &Path) -> Result<(), String> {
    match target {
        Target::Config => config(input, scratch),
        Target::Data => data(input, scratch),
        Target::ModelDir => model_dir(input, scratch),
        Target::Gguf => gguf(input, scratch),
        Target::Tokenizer => tokenizer(input, scratch),
        Target::Math => math(input),
        Target::Http => Err("the http target runs in the parent, against r1d".into()),
    }
}

/// Writes the input's members into `scratch/<folder>` and returns that folder.
fn materialise(input: &Input, scratch: &Path, folder: &str) -> Result<PathBuf, String> {
    let dir = scratch.join(folder);
    input
        .write_into(&dir)
        .map_err(|e| format!("writing the input into {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The first member's name and bytes (single-file targets).
fn first(input: &Input) -> Result<(&str, &[u8]), String> {
    input
        .files
        .first()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .ok_or_else(|| "an input with no file".to_string())
}

/// Parse and validation, then everything r1d and `r1ctl train` derive from the config before a
/// stage starts: resolved paths, the run spec, each stage's job and, for the preference stage,
/// its settings and prompt split. A built-in `[data]` task is generated as r1d's planner does.
fn config(input: &Input, scratch: &Path) -> Result<(), String> {
    let (_, bytes) = first(input)?;
    let path = scratch.join("job.toml");
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut job = JobConfig::from_file(&path).map_err(|e| e.to_string())?;
    job.resolve_paths(scratch);
    let run = job.run_spec("0".repeat(64), None);
    let _ = job.model_spec();
    let _ = job.grpo_job(run.clone());
    let _ = job.sft_job(run.clone());
    let _ = job.rejection_job(run.clone());
    let _ = job.distill_job(run.clone());
    let _ = job.eval_job(run.clone());
    if let Some(preference) = job.preference_job(run) {
        preference.settings().validate()?;
        let _ = preference.split();
    }
    if matches!(job.data, DataSource::Builtin { .. }) {
        job.data
            .problems(job.run.seed, Split::Train)
            .map_err(|e| e.to_string())?;
        job.data
            .problems(job.run.seed, Split::Test)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Every dataset reader on the same file: `.parquet` members are read as Parquet, others as
/// JSONL (the readers decide by the extension, as with a user's file).
fn data(input: &Input, scratch: &Path) -> Result<(), String> {
    let (name, bytes) = first(input)?;
    let parquet = name.ends_with(".parquet");
    let path = scratch.join(if parquet { "set.parquet" } else { "set.jsonl" });
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let source = if parquet {
        DataSource::Parquet {
            path: path.clone(),
            fields: FieldMap::default(),
        }
    } else {
        DataSource::Jsonl {
            path: path.clone(),
            fields: FieldMap::default(),
        }
    };
    let mut refusals = Vec::new();
    let mut note = |r: Result<(), String>| {
        if let Err(e) = r {
            refusals.push(e);
        }
    };
    note(source.items().map(drop).map_err(|e| e.to_string()));
    note(
        source
            .problems(1, Split::Train)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        load_prompts(&path, "prompt")
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        load_pairs(&path, &PairFields::default())
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        load_labels(&path, &LabelFields::default())
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    for kind in TemplateKind::ALL {
        let template = PromptTemplate::new(kind).with_reasoning();
        note(
            load_sft_set(&path, &SftConfig::default(), &template, &Tokenizer::byte())
                .map(drop)
                .map_err(|e| e.to_string()),
        );
    }
    if refusals.len() == 5 + TemplateKind::ALL.len() {
        return Err(refusals.swap_remove(0));
    }
    Ok(())
}

/// The causal-LM loader, then the reward-model loader, on the same directory.
fn model_dir(input: &Input, scratch: &Path) -> Result<(), String> {
    let dir = materialise(input, scratch, "model")?;
    let lm = load_model_dir(&dir).map(drop).map_err(|e| e.to_string());
    let rm = load_reward_model_dir(&dir)
        .map(drop)
        .map_err(|e| e.to_string());
    lm.or(rm)
}

/// `r1ctl model import FILE DIR`, then the tokenizer of the directory it wrote.
fn gguf(input: &Input, scratch: &Path) -> Result<(), String> {
    let (_, bytes) = first(input)?;
    let path = scratch.join("model.gguf");
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = scratch.join("imported");
    import_to_dir(&path, &out).map_err(|e| e.to_string())?;
    let tokenizer = Tokenizer::from_model_dir(&out).map_err(|e| e.to_string())?;
    exercise_tokenizer(&tokenizer)
}

/// A tokenizer directory loaded as a run loads it, then used.
fn tokenizer(input: &Input, scratch: &Path) -> Result<(), String> {
    let dir = materialise(input, scratch, "tokenizer")?;
    let tokenizer = Tokenizer::from_model_dir(&dir).map_err(|e| e.to_string())?;
    exercise_tokenizer(&tokenizer)
}

/// What a run does with a tokenizer: render and encode a prompt in each template, check the
/// template's special tokens, decode every id (and one past the end) whole and streamed.
fn exercise_tokenizer(tokenizer: &Tokenizer) -> Result<(), String> {
    for kind in TemplateKind::ALL {
        let template = PromptTemplate::new(kind).with_reasoning();
        // A tokenizer without the template's special tokens is refused; others must encode.
        if template.check_tokenizer(tokenizer).is_ok() {
            template
                .render_prompt("What is 2 + 2? Ünïcödé, 数学, 🙂")
                .encode(tokenizer)
                .map_err(|e| e.to_string())?;
        }
    }
    let ids = tokenizer
        .encode("hi <|im_end|> there\n\t  <think>x</think>", true)
        .map_err(|e| e.to_string())?;
    let _ = tokenizer.decode(&ids, false);
    let vocab = tokenizer.vocab_size().min(4096) as u32;
    let all: Vec<u32> = (0..=vocab).collect();
    let _ = tokenizer.decode(&all, true);
    let mut stream = tokenizer.decode_stream(false);
    for id in all {
        if stream.step(id).is_err() {
            break;
        }
    }
    Ok(())
}

/// Extraction in every mode, then equivalence both ways between the extracted answer (or the
/// whole completion) and the gold answer.
fn math(input: &Input) -> Result<(), String> {
    let (_, bytes) = first(input)?;
    let text = String::from_utf8_lossy(bytes);
    let (completion, gold) = text
        .split_once(GOLD_SEPARATOR)
        .unwrap_or((text.as_ref(), text.lines().last().unwrap_or("")));
    let mut correct = false;
    for mode in [
        ExtractMode::AnswerTag,
        ExtractMode::Boxed,
        ExtractMode::FreeText,
        ExtractMode::Auto,
    ] {
        let score = math_reward(completion, gold, mode);
        correct |= score.reward > 0.0;
        if let Some(answer) = extract_answer(completion, mode) {
            let _ = equivalent(gold, &answer);
        }
    }
    let _ = equivalent(completion, gold);
    let _ = equivalent(gold, gold);
    if correct {
        Ok(())
    } else {
        Err("not equal".into())
    }
}
