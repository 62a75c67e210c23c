//! `r1ctl train CONFIG.toml`: runs a job config's stage in-process (`run.stage`: grpo, sft,
//! rejection, distill, eval, preference) — the library's stage function, with a progress line per step on
//! stdout and notes on stderr. Stages with steps resume from the newest good checkpoint under
//! `<output_dir>/checkpoints` (damaged ones are reported and skipped) and checkpoint every
//! `checkpoint.every_steps`; a run stopped at any point and started again ends with the same
//! weights as one that never stopped. Ctrl-C / SIGTERM is acknowledged at once and stops after
//! the current step (exit 1, `stopped:` summary); a second one exits 130. `--check` validates the
//! config and what it reads and prints the job as TOML without running it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use sha2::{Digest, Sha256};

use r1_actors::stages::{
    run_distill, run_eval, run_grpo, run_preference, run_rejection, run_sft, StageEvent,
};
use r1_config::{JobConfig, Stage};
use r1_kernels::model::limits::format_bytes;

/// Arguments of `r1ctl train`.
#[derive(Args)]
#[command(after_help = "\
Exit status: 0 the stage ended; 1 stopped on request (Ctrl-C or SIGTERM: the current step ends and \
a checkpoint is written; run the same command to resume); 2 an error (the message names the key \
and file); 130 a second Ctrl-C or SIGTERM ended it at once (it resumes from its last checkpoint).")]
pub struct TrainArgs {
    /// The job config (TOML; see config/examples).
    config: PathBuf,
    /// Stop after this many steps in total (default: the config's); grpo, preference, sft and
    /// distill's student. Refused for rejection and eval, which take no steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Validate the config and what it reads (model, data, memory) and print the job as TOML,
    /// every default filled in; run nothing.
    #[arg(long)]
    check: bool,
}

/// Prints one event: step lines to stdout, the rest to stderr.
fn print_event(event: StageEvent, began: &mut Instant) {
    match event {
        StageEvent::Note { message } => eprintln!("r1ctl train: {message}"),
        StageEvent::Resumed { step } => eprintln!("r1ctl train: resuming at step {step}"),
        StageEvent::GrpoStep { steps, report } => {
            let stats = &report.learner;
            let p = &report.phases;
            println!(
                "step {:>5}/{steps}  reward {:.3}  accuracy {:.3}  format {:.3}  kl {:.4}  entropy {:.3}  length {:.1}  zero-std {:.2}  resampled {}  sample {:.1}s judge {:.1}s learn {:.1}s  {:.1}s  memory {:.2} GiB (peak RSS {:.2} GiB){}",
                stats.step,
                stats.reward_mean,
                report.accuracy,
                report.format,
                stats.kl,
                stats.entropy,
                stats.completion_len_mean,
                stats.frac_zero_std,
                report.dynamic.resampled_groups,
                p.sample,
                p.judge,
                p.learn,
                began.elapsed().as_secs_f64(),
                report.memory.total() / GIB,
                report.memory.peak_resident_bytes / GIB,
                stats
                    .sampler
                    .map(|m| format!(
                        "  sampler |Δlogp| mean {:.1e} max {:.1e}, weights {:.3}..{:.3}",
                        m.logp_diff_mean, m.logp_diff_max, m.is_min, m.is_max
                    ))
                    .unwrap_or_default()
            );
            *began = Instant::now();
        }
        StageEvent::PreferenceStep { steps, report } => {
            let stats = &report.report.learner;
            let p = &report.stats;
            let models: Vec<String> = p
                .reward_models
                .iter()
                .map(|m| {
                    format!(
                        "{} {:+.3}±{:.3} decided {:.2}",
                        m.name, m.mean, m.std, m.decided_share
                    )
                })
                .collect();
            println!(
                "step {:>5}/{steps}  reward {:.3}  preference {:+.3}{}  rule accuracy {:.3}  format {:.3}  [{}]  kl {:.4}  length {:.1}  {:.1}s",
                stats.step,
                stats.reward_mean,
                p.preference_reward,
                if p.preference_on { " (on)" } else { " (off)" },
                p.rule_accuracy,
                p.rule_format,
                models.join("; "),
                stats.kl,
                stats.completion_len_mean,
                began.elapsed().as_secs_f64()
            );
            *began = Instant::now();
        }
        StageEvent::SftStep {
            step,
            steps,
            epoch,
            stats,
        } => {
            println!(
                "step {step:>5}/{steps}  epoch {epoch}  loss {:.4}  lr {:.2e}  grad-norm {:.3}  tokens {}  {:.1}s",
                stats.loss,
                stats.lr,
                stats.grad_norm,
                stats.tokens,
                began.elapsed().as_secs_f64()
            );
            *began = Instant::now();
        }
        StageEvent::Sampled {
            prompts_done,
            prompts,
            kept,
        } => eprintln!("r1ctl train: sampled {prompts_done}/{prompts} prompts, {kept} kept"),
        StageEvent::Evaluated { dataset, eval } => eprintln!(
            "r1ctl train: {dataset}: pass@1 {:.3} cons@{} {:.3}",
            eval.scores.pass_at_1, eval.scores.k, eval.scores.cons_at_k
        ),
        StageEvent::Checkpoint { path, .. } => {
            eprintln!("r1ctl train: checkpoint {}", path.display())
        }
    }
}

/// The first SIGINT / SIGTERM asks the stage to stop after its current step, writing what it
/// has (a checkpoint), and says so at once; a second one ends the process at once (exit 130).
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing the signal handler")?;
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "r1ctl train: second signal: exiting now (status 130); the next run resumes \
                     from the last checkpoint"
                );
                std::process::exit(130);
            }
            eprintln!(
                "r1ctl train: stopping after the current step and writing a checkpoint \
                 (Ctrl-C again to quit at once)"
            );
        }
    });
    Ok(stop)
}

/// A refusal of what the config reads, with what a newcomer needs next: the folder relative paths
/// were resolved against, and where the config says how to get what is missing.
fn resources_error(e: r1_config::ConfigError, config: &std::path::Path) -> anyhow::Error {
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "the current folder".into());
    let missing = matches!(&e, r1_config::ConfigError::Invalid { message, .. }
        if message.contains("No such file or directory"));
    let mut text = format!("{e}\n  relative paths in the config resolve against {cwd}");
    if missing {
        text += &format!(
            "\n  the comments at the top of {} say what it needs and how to make or fetch it",
            config.display()
        );
    }
    anyhow::anyhow!(text)
}

/// The first word of a stage's summary line: whether it ran to its end or was stopped.
fn ended(stopped: bool) -> &'static str {
    if stopped {
        "stopped"
    } else {
        "done"
    }
}

/// Runs the stage; returns the exit code.
pub fn run(args: TrainArgs) -> anyhow::Result<i32> {
    let text = std::fs::read(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let job = JobConfig::from_file(&args.config)?;
    if let (Some(_), Stage::Rejection | Stage::Eval) = (args.steps, job.run.stage) {
        bail!(
            "--steps: {}: the {} stage takes no steps (it samples every prompt once); drop \
             --steps (the config's data sizes bound the work)",
            args.config.display(),
            job.run.stage.name()
        );
    }
    // What the stage will read and the memory it needs, before anything is loaded: a model too
    // big for this machine, or a missing model, data file or distill student, is refused with
    // the key and the figures instead of failing mid-run.
    let resources = job
        .check_resources(&args.config)
        .map_err(|e| resources_error(e, &args.config))?;
    if args.check {
        eprintln!(
            "r1ctl train: {} is valid (stage {}); relative paths resolve against {}",
            args.config.display(),
            job.run.stage.name(),
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| ".".into())
        );
        // Where `auto` went (the CPU when there is no GPU); a run says so through its stage.
        for note in &resources.placement.notes {
            eprintln!("r1ctl train: {note}");
        }
        eprintln!("r1ctl train: devices: {}", resources.placement.describe());
        for device in &resources.estimate.devices {
            eprintln!(
                "r1ctl train: memory on {}: {} ({})",
                device.device,
                format_bytes(device.total()),
                device.describe()
            );
        }
        print!(
            "{}",
            toml::to_string_pretty(&job).context("serialising the job")?
        );
        return Ok(0);
    }
    let config_hash: String = Sha256::digest(&text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let run = job.run_spec(config_hash, args.steps);
    let stop = stop_on_signals()?;
    let stop: &AtomicBool = &stop;
    let mut began = Instant::now();
    let mut progress = |event: StageEvent| print_event(event, &mut began);
    let name = args.config.display();
    let stopped = match job.run.stage {
        Stage::Grpo => {
            let Some(grpo) = job.grpo_job(run) else {
                bail!("{name}: no [grpo] table")
            };
            let report = run_grpo(&grpo, &mut progress, stop)?;
            println!(
                "{}: step {} (checkpoints in {})",
                ended(report.stopped),
                report.steps,
                grpo.run.checkpoint_root().display()
            );
            if let Some(dir) = &report.final_model {
                println!("final model: {}", dir.display());
            }
            records_note(&grpo.run.output_dir);
            report.stopped
        }
        Stage::Preference => {
            let Some(preference) = job.preference_job(run) else {
                bail!("{name}: stage = \"preference\" needs [grpo] and [preference] tables")
            };
            let report = run_preference(&preference, &mut progress, stop)?;
            println!(
                "{}: step {} (checkpoints in {})",
                ended(report.stopped),
                report.steps,
                preference.run.checkpoint_root().display()
            );
            if let Some(dir) = &report.final_model {
                println!("final model: {}", dir.display());
            }
            records_note(&preference.run.output_dir);
            report.stopped
        }
        Stage::Sft => {
            let Some(sft) = job.sft_job(run) else {
                bail!("{name}: no [sft] table")
            };
            let report = run_sft(&sft, &mut progress, stop)?;
            println!(
                "{}: step {}/{} over {} examples (checkpoints in {})",
                ended(report.stopped),
                report.steps,
                report.steps_planned,
                report.examples,
                sft.run.checkpoint_root().display()
            );
            if let Some(dir) = &report.final_model {
                println!("final model: {}", dir.display());
            }
            report.stopped
        }
        Stage::Rejection => {
            let report = run_rejection(&job.rejection_job(run), &mut progress, stop)?;
            let s = &report.summary;
            println!(
                "{}: {} prompts, {} samples: {} kept, {} incorrect, {} unreadable -> {}",
                ended(report.stopped),
                report.prompts,
                s.seen,
                s.kept,
                s.incorrect,
                s.unreadable.values().sum::<usize>(),
                report.output.display()
            );
            report.stopped
        }
        Stage::Distill => {
            let Some(distill) = job.distill_job(run) else {
                bail!("{name}: no [distill] table")
            };
            let report = run_distill(&distill, &mut progress, stop)?;
            println!(
                "{}: teacher kept {} of {} samples -> {}",
                ended(report.stopped),
                report.teacher.summary.kept,
                report.teacher.summary.seen,
                report.teacher.output.display()
            );
            if let Some(student) = &report.student {
                println!(
                    "student: step {}/{}{}",
                    student.steps,
                    student.steps_planned,
                    student
                        .final_model
                        .as_ref()
                        .map(|d| format!(", final model: {}", d.display()))
                        .unwrap_or_default()
                );
            }
            report.stopped
        }
        Stage::Eval => {
            let eval = job.eval_job(run);
            let report = run_eval(&eval, &mut progress, stop)?;
            print!("{}", report.table());
            println!("report: {}", report.report.display());
            eprintln!(
                "r1ctl: every sample and its verdict: {} (`r1ctl samples {}`)",
                report.samples_file.display(),
                eval.run.output_dir.display()
            );
            report.stopped
        }
    };
    if stopped {
        eprintln!(
            "r1ctl train: stopped on request after the current step; run the same command to resume"
        );
    }
    Ok(if stopped { 1 } else { 0 })
}

/// Where an RL run's records and charts are, and the commands that read them (on stderr).
fn records_note(dir: &std::path::Path) {
    let dir = dir.display();
    eprintln!(
        "r1ctl: step records and samples in {dir}/steps.jsonl and {dir}/samples.jsonl          (`r1ctl steps {dir}`, `r1ctl samples {dir}`); charts {dir}/*.svg (`r1ctl report {dir}`)"
    );
}

/// Bytes in a GiB, for the step lines.
const GIB: f64 = (1u64 << 30) as f64;
