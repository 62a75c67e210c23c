//! `r1ctl rm`: reward models. `train CONFIG.toml` trains one (config/examples/rm/), `score
//! MODEL_DIR FILE.jsonl` scores responses or pairs with one, `demo` runs the tiny preference-RL
//! stage and prints its curves. The logic is `r1_actors::reward_model` (`RewardModelJob`,
//! `score_jsonl`) and `r1_actors::stages::preference::demo`; this file parses arguments and prints.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use clap::{Args, Subcommand};

use r1_actors::reward_model::{
    score_jsonl, OverLong, RewardModelJob, RewardModelScorer, RmProgress, ScoredLine, TextEncoder,
};
use r1_actors::stages::preference::demo::{run_preference_demo, PreferenceDemoConfig};
use r1_config::preference::RewardModelJob as RmJobConfig;
use r1_kernels::model::load_reward_model_dir;
use r1_kernels::tokenizer;

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
Example: r1ctl rm score runs/rm-tiny/final config/examples/rm/tiny-pairs.jsonl

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
    /// `byte` for r1's byte tokenizer; default: the directory's tokenizer.json, or the byte
    /// tokenizer when the directory has none and its config.json has the byte vocabulary.
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

fn train(args: TrainArgs) -> anyhow::Result<i32> {
    let config = RmJobConfig::from_file(&args.config)?;
    let job = RewardModelJob {
        name: &config.name,
        output_dir: &config.output_dir,
        model: &config.model,
        data: &config.data,
        train: &config.train,
    }
    .prepare()?;
    eprintln!(
        "r1ctl rm train: {} — {} training items, {} validation, {} parameters",
        config.name,
        job.train_set.len(),
        job.validation.len(),
        job.rm.model.layout.total
    );
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
    let report = job.run(&mut on_progress, &stop)?;
    eprintln!("r1ctl rm train: wrote {}", report.final_dir.display());
    Ok(0)
}

fn score(args: ScoreArgs) -> anyhow::Result<i32> {
    let rm = load_reward_model_dir(&args.model)?;
    let tokenizer = tokenizer::resolve(&args.model, args.tokenizer.as_deref())?;
    let scorer = RewardModelScorer::new(
        rm,
        TextEncoder {
            tokenizer,
            max_tokens: args.max_tokens,
            over_long: OverLong::KeepEnd,
        },
        args.batch,
    );
    let scored = score_jsonl(&scorer, &args.file)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in &scored.lines {
        let json = match *line {
            ScoredLine::One { line, score } => serde_json::json!({"line": line, "score": score}),
            ScoredLine::Pair {
                line,
                chosen,
                rejected,
            } => serde_json::json!({"line": line, "chosen": chosen, "rejected": rejected}),
        };
        writeln!(out, "{json}")?;
    }
    eprintln!(
        "r1ctl rm score: {} lines, mean score {:.4}{}",
        scored.lines.len(),
        scored.mean_score,
        if scored.pairs > 0 {
            format!(
                ", pairwise accuracy {:.1}% ({}/{})",
                100.0 * scored.pairs_right as f64 / scored.pairs as f64,
                scored.pairs_right,
                scored.pairs
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
            "step {:>2}{}: preference reward {}, polite {:>5.1}%, rule accuracy {:>5.1}%, decided {:?}",
            s.step,
            if s.preference_on { " (on) " } else { " (off)" },
            signed(s.preference_reward),
            100.0 * s.polite_share,
            100.0 * s.rule_accuracy,
            s.decided
        )
    })?;
    println!(
        "reward models: helpfulness held-out pairwise accuracy {:.1}%, harmlessness held-out label accuracy {:.1}%",
        100.0 * report.helpfulness_accuracy,
        100.0 * report.harmlessness_accuracy
    );
    if report.steps.is_empty() {
        println!("preference stage: 0 steps, nothing trained (--steps 0)");
    } else {
        let (p0, p1) = report.start_end(3, |s| s.preference_reward);
        let (q0, q1) = report.start_end(3, |s| s.polite_share);
        let (a0, a1) = report.start_end(3, |s| s.rule_accuracy);
        println!(
            "preference reward (mean of first/last 3 steps): {} -> {}",
            signed(p0),
            signed(p1)
        );
        println!("polite summaries: {:.1}% -> {:.1}%", 100.0 * q0, 100.0 * q1);
        println!(
            "rule accuracy of the reasoning rollouts (mean of first/last 3 steps): {:.1}% -> {:.1}%",
            100.0 * a0,
            100.0 * a1
        );
    }
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

/// `x` with its sign and three decimals, never `-0.000`: a value that rounds to zero is zero.
fn signed(x: f64) -> String {
    let x = if (x * 1000.0).round() == 0.0 { 0.0 } else { x };
    format!("{x:+.3}")
}

#[cfg(test)]
mod tests {
    use super::signed;

    #[test]
    fn signed_values_never_print_a_negative_zero() {
        assert_eq!(signed(-0.0), "+0.000");
        assert_eq!(signed(-0.0004), "+0.000");
        assert_eq!(signed(-0.0006), "-0.001");
        assert_eq!(signed(1.25), "+1.250");
    }
}
