//! `r1ctl rm`: reward models. `train CONFIG.toml` trains one (config/examples/rm/), `score
//! MODEL_DIR FILE.jsonl` scores responses or pairs with one, `demo` runs the tiny preference-RL
//! stage and prints its curves. The logic is `r1_actors::reward_model` and
//! `r1_actors::stages::preference`; this file is wiring.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

use r1_actors::reward_model::{
    load_labels, load_pairs, train_reward_model, OverLong, RewardData, RewardModelScorer,
    RmProgress, TextEncoder,
};
use r1_actors::stages::preference::demo::{run_preference_demo, PreferenceDemoConfig};
use r1_config::preference::{RewardModelJob, RmDataSection, RmInit};
use r1_kernels::model::{
    load_model_dir, load_reward_model_dir, save_reward_model_dir, Architecture, ModelConfig,
    RewardModel, RopeScaling,
};
use r1_kernels::tokenizer::{ByteTokenizer, Tokenizer};

/// Arguments of `r1ctl rm`.
#[derive(Args)]
pub struct RmArgs {
    #[command(subcommand)]
    command: RmCommand,
}

#[derive(Subcommand)]
enum RmCommand {
    /// Train a reward model from a config (Bradley–Terry on pairs, or point-wise on labels).
    #[command(after_help = "\
Example: r1ctl rm train config/examples/rm/tiny-pairs.toml

Writes OUTPUT_DIR/final (a Qwen2/LlamaForSequenceClassification directory transformers loads) and \
OUTPUT_DIR/report.json (loss and validation accuracy per epoch). Exit status: 0 trained; 2 an error \
(the message names the file and line or key).")]
    Train(TrainArgs),
    /// Score a JSONL file: lines with `response` get a score; lines with `chosen` and `rejected`
    /// get both, and the pairwise accuracy is reported.
    #[command(after_help = "\
Example: r1ctl rm score runs/rm-tiny/final config/examples/rm/tiny-pairs.jsonl --tokenizer byte

One JSON line per input line on stdout; the summary on stderr. Exit status: 0 scored; 2 an error.")]
    Score(ScoreArgs),
    /// Run the tiny preference-RL stage (rule rewards for additions, two reward models for
    /// greetings) and print the preference reward and rule accuracy per step, start and end.
    Demo(DemoArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// The reward-model config (TOML).
    config: PathBuf,
}

#[derive(Args)]
struct ScoreArgs {
    /// A reward model directory.
    model: PathBuf,
    /// The JSONL file to score.
    file: PathBuf,
    /// `byte` for r1's byte tokenizer; default: the directory's tokenizer.json.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Longest scored sequence in tokens (longer ones keep their end).
    #[arg(long, default_value_t = 4096)]
    max_tokens: usize,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
}

#[derive(Args)]
struct DemoArgs {
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stage steps.
    #[arg(long, default_value_t = PreferenceDemoConfig::default().steps)]
    steps: usize,
    /// Also write the cold-start policy, both reward models, the prompts and a job config
    /// (DIR/preference.toml) that runs this stage with `r1ctl train` or `r1ctl start` (from DIR).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: RmArgs) -> anyhow::Result<i32> {
    match args.command {
        RmCommand::Train(a) => train(a),
        RmCommand::Score(a) => score(a),
        RmCommand::Demo(a) => demo(a),
    }
}

pub(crate) fn tokenizer_for(name: Option<&str>, dir: Option<&Path>) -> anyhow::Result<Tokenizer> {
    match (name, dir) {
        (Some("byte"), _) => Ok(Tokenizer::byte()),
        (Some(other), _) => bail!("--tokenizer {other}: only `byte` is built in"),
        (None, Some(dir)) => Tokenizer::from_model_dir(dir).with_context(|| {
            format!(
                "tokenizer of {} (a byte-tokenizer model needs --tokenizer byte)",
                dir.display()
            )
        }),
        (None, None) => {
            bail!("no tokenizer: set tokenizer = \"byte\" or start from a model directory")
        }
    }
}

fn train(args: TrainArgs) -> anyhow::Result<i32> {
    let job = RewardModelJob::from_file(&args.config)?;
    let init_dir = match &job.model.init {
        RmInit::CausalLm { path } | RmInit::RewardModel { path } => Some(path.as_path()),
        RmInit::Tiny { .. } => None,
    };
    let tokenizer = tokenizer_for(job.model.tokenizer.as_deref(), init_dir)?;
    let pad = job
        .model
        .pad_token_id
        .or_else(|| tokenizer.eos_ids().first().copied());
    let rm = match &job.model.init {
        RmInit::CausalLm { path } => {
            let lm = load_model_dir(path).with_context(|| format!("loading {}", path.display()))?;
            RewardModel::from_causal_lm(&lm, pad, job.train.seed, 0.02)
        }
        RmInit::RewardModel { path } => {
            let mut rm = load_reward_model_dir(path)
                .with_context(|| format!("loading {}", path.display()))?;
            if job.model.pad_token_id.is_some() {
                rm.pad_token_id = pad;
            }
            rm
        }
        RmInit::Tiny {
            hidden_size,
            num_layers,
        } => RewardModel::random(
            ModelConfig {
                architecture: Architecture::Qwen2,
                hidden_size: *hidden_size,
                intermediate_size: 4 * hidden_size,
                num_layers: *num_layers,
                num_heads: 4,
                num_kv_heads: 2,
                head_dim: hidden_size / 4,
                vocab_size: ByteTokenizer::VOCAB_SIZE,
                rms_norm_eps: 1e-6,
                rope_theta: 10_000.0,
                rope_scaling: RopeScaling::None,
                attention_bias: true,
                tie_word_embeddings: true,
                max_position_embeddings: job.train.max_tokens,
                eos_token_ids: vec![ByteTokenizer::EOS],
                bos_token_id: Some(ByteTokenizer::BOS),
            },
            pad,
            job.train.seed,
            0.02,
        ),
    };
    let (train_set, validation) = match &job.data {
        RmDataSection::Pairs {
            path,
            fields,
            validation_path,
            validation_fraction,
        } => {
            let data = RewardData::Pairs(load_pairs(path, fields)?);
            match validation_path {
                Some(v) => (data, RewardData::Pairs(load_pairs(v, fields)?)),
                None => data.split_off(*validation_fraction),
            }
        }
        RmDataSection::Labels {
            path,
            fields,
            validation_path,
            validation_fraction,
        } => {
            let data = RewardData::Labels(load_labels(path, fields)?);
            match validation_path {
                Some(v) => (data, RewardData::Labels(load_labels(v, fields)?)),
                None => data.split_off(*validation_fraction),
            }
        }
    };
    eprintln!(
        "r1ctl rm train: {} — {} training items, {} validation, {} parameters",
        job.name,
        train_set.len(),
        validation.len(),
        rm.model.layout.total
    );
    let encoder = TextEncoder {
        tokenizer: tokenizer.clone(),
        max_tokens: job.train.max_tokens,
        over_long: job.train.over_long,
    };
    let stop = AtomicBool::new(false);
    let mut on_progress = |p: RmProgress| match p {
        RmProgress::Step {
            step,
            steps,
            loss,
            accuracy,
            lr,
        } if step % 10 == 0 || step == steps => eprintln!(
            "step {step}/{steps}: loss {loss:.4}, batch accuracy {:.1}%, lr {lr:.2e}",
            100.0 * accuracy
        ),
        RmProgress::Epoch(e) => eprintln!(
            "epoch {}: train loss {:.4}, validation loss {:.4}, validation accuracy {:.1}%",
            e.epoch,
            e.train_loss,
            e.validation_loss,
            100.0 * e.validation_accuracy
        ),
        _ => {}
    };
    let outcome = train_reward_model(
        rm,
        &encoder,
        &train_set,
        &validation,
        &job.train,
        &mut on_progress,
        &stop,
    )?;
    let final_dir = job.output_dir.join("final");
    save_reward_model_dir(&outcome.rm, &final_dir)
        .with_context(|| format!("saving {}", final_dir.display()))?;
    if let Some(dir) = init_dir {
        for name in ["tokenizer.json", "tokenizer_config.json"] {
            let from = dir.join(name);
            if from.exists() {
                std::fs::copy(&from, final_dir.join(name))
                    .with_context(|| format!("copying {}", from.display()))?;
            }
        }
    }
    let report = serde_json::json!({
        "name": job.name,
        "steps": outcome.steps,
        "epochs": outcome.epochs,
        "model": final_dir,
    });
    let report_path = job.output_dir.join("report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", report_path.display()))?;
    eprintln!("r1ctl rm train: wrote {}", final_dir.display());
    Ok(0)
}

/// One line to score: a single response or a pair.
enum Line {
    One(String, String),
    Pair(String, String, String),
}

fn read_score_lines(path: &Path) -> anyhow::Result<Vec<(usize, Line)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let text = line.with_context(|| format!("{}:{n}", path.display()))?;
        if text.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}:{n}: invalid JSON", path.display()))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let Some(prompt) = field("prompt") else {
            bail!("{}:{n}: no string field `prompt`", path.display());
        };
        let line = match (field("chosen"), field("rejected"), field("response")) {
            (Some(c), Some(r), _) => Line::Pair(prompt, c, r),
            (_, _, Some(r)) => Line::One(prompt, r),
            _ => bail!(
                "{}:{n}: needs `response`, or `chosen` and `rejected`",
                path.display()
            ),
        };
        out.push((n, line));
    }
    Ok(out)
}

fn score(args: ScoreArgs) -> anyhow::Result<i32> {
    let rm = load_reward_model_dir(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let tokenizer = tokenizer_for(args.tokenizer.as_deref(), Some(&args.model))?;
    let scorer = RewardModelScorer {
        rm,
        encoder: TextEncoder {
            tokenizer,
            max_tokens: args.max_tokens,
            over_long: OverLong::KeepEnd,
        },
        max_batch: args.batch,
    };
    let lines = read_score_lines(&args.file)?;
    let mut items = Vec::new();
    for (_, line) in &lines {
        match line {
            Line::One(p, r) => items.push((p.clone(), r.clone())),
            Line::Pair(p, c, r) => {
                items.push((p.clone(), c.clone()));
                items.push((p.clone(), r.clone()));
            }
        }
    }
    let scores = scorer.score(&items)?;
    let mut at = 0;
    let (mut pairs, mut right, mut sum) = (0usize, 0usize, 0f64);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (n, line) in &lines {
        match line {
            Line::One(..) => {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"line": n, "score": scores[at]})
                )?;
                sum += scores[at] as f64;
                at += 1;
            }
            Line::Pair(..) => {
                let (c, r) = (scores[at], scores[at + 1]);
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"line": n, "chosen": c, "rejected": r})
                )?;
                pairs += 1;
                right += usize::from(c > r);
                sum += (c + r) as f64;
                at += 2;
            }
        }
    }
    eprintln!(
        "r1ctl rm score: {} lines, mean score {:.4}{}",
        lines.len(),
        sum / scores.len().max(1) as f64,
        if pairs > 0 {
            format!(
                ", pairwise accuracy {:.1}% ({right}/{pairs})",
                100.0 * right as f64 / pairs as f64
            )
        } else {
            String::new()
        }
    );
    Ok(0)
}

fn demo(args: DemoArgs) -> anyhow::Result<i32> {
    let config = PreferenceDemoConfig {
        seed: args.seed,
        steps: args.steps,
        keep_dir: args.keep.clone(),
        ..PreferenceDemoConfig::default()
    };
    let start = std::time::Instant::now();
    let report = run_preference_demo(&config, &mut |s| {
        eprintln!(
            "step {:>2}{}: preference reward {:+.3}, polite {:>5.1}%, rule accuracy {:>5.1}%, decided {:?}",
            s.step,
            if s.preference_on { " (on) " } else { " (off)" },
            s.preference_reward,
            100.0 * s.polite_share,
            100.0 * s.rule_accuracy,
            s.decided
        )
    })?;
    let (p0, p1) = report.start_end(3, |s| s.preference_reward);
    let (q0, q1) = report.start_end(3, |s| s.polite_share);
    let (a0, a1) = report.start_end(3, |s| s.rule_accuracy);
    println!(
        "reward models: helpfulness held-out pairwise accuracy {:.1}%, harmlessness held-out label accuracy {:.1}%",
        100.0 * report.helpfulness_accuracy,
        100.0 * report.harmlessness_accuracy
    );
    println!("preference reward (mean of first/last 3 steps): {p0:+.3} -> {p1:+.3}");
    println!("polite summaries: {:.1}% -> {:.1}%", 100.0 * q0, 100.0 * q1);
    println!(
        "rule accuracy of the reasoning rollouts (mean of first/last 3 steps): {:.1}% -> {:.1}%",
        100.0 * a0,
        100.0 * a1
    );
    println!(
        "rule accuracy on every addition (pass@1, 4 samples), before -> after the stage: {:.1}% -> {:.1}%",
        100.0 * report.rule_accuracy_before,
        100.0 * report.rule_accuracy_after
    );
    println!("{:.1} s", start.elapsed().as_secs_f64());
    if let Some(dir) = &args.keep {
        println!(
            "wrote {}: the stage from its files is `cd {} && r1ctl train preference.toml`",
            dir.display(),
            dir.display()
        );
    }
    Ok(0)
}
