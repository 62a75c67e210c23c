//! `r1ctl train CONFIG.toml`: runs a job config's stage in-process (`run.stage`: grpo, sft,
//! rejection, distill, eval, preference) — the library's stage function, with a progress line per step on
//! stdout and notes on stderr. Stages with steps resume from the newest good checkpoint under
//! `<output_dir>/checkpoints` (damaged ones are reported and skipped) and checkpoint every
//! `checkpoint.every_steps`; a run stopped at any point and started again ends with the same
//! weights as one that never stopped.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use sha2::{Digest, Sha256};

use r1_actors::stages::{
    run_distill, run_eval, run_grpo, run_preference, run_rejection, run_sft, StageEvent,
};
use r1_config::{JobConfig, Stage};

/// Arguments of `r1ctl train`.
#[derive(Args)]
pub struct TrainArgs {
    /// The job config (TOML; see config/examples).
    config: PathBuf,
    /// Stop after this many steps in total (default: the config's); GRPO and SFT.
    #[arg(long)]
    steps: Option<u64>,
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
                "step {:>5}/{steps}  reward {:.3}  accuracy {:.3}  format {:.3}  kl {:.4}  entropy {:.3}  length {:.1}  zero-std {:.2}  resampled {}  sample {:.1}s judge {:.1}s learn {:.1}s  {:.1}s",
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
                began.elapsed().as_secs_f64()
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

/// Runs the stage; returns the exit code.
pub fn run(args: TrainArgs) -> anyhow::Result<i32> {
    let text = std::fs::read(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let job = JobConfig::from_file(&args.config)?;
    // What the stage will read and the memory it needs, before anything is loaded: a model too
    // big for this machine is refused with the figures instead of aborting mid-load.
    job.check_resources(&args.config)?;
    let config_hash: String = Sha256::digest(&text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let run = job.run_spec(config_hash, args.steps);
    // The first SIGINT / SIGTERM asks the stage to stop after its current step, writing what it
    // has (a checkpoint); a second one ends the process at once.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
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
                "done: step {} (checkpoints in {})",
                report.steps,
                grpo.run.checkpoint_root().display()
            );
            if let Some(dir) = &report.final_model {
                println!("final model: {}", dir.display());
            }
            report.stopped
        }
        Stage::Preference => {
            let Some(preference) = job.preference_job(run) else {
                bail!("{name}: stage = \"preference\" needs [grpo] and [preference] tables")
            };
            let report = run_preference(&preference, &mut progress, stop)?;
            println!(
                "done: step {} (checkpoints in {})",
                report.steps,
                preference.run.checkpoint_root().display()
            );
            if let Some(dir) = &report.final_model {
                println!("final model: {}", dir.display());
            }
            report.stopped
        }
        Stage::Sft => {
            let Some(sft) = job.sft_job(run) else {
                bail!("{name}: no [sft] table")
            };
            let report = run_sft(&sft, &mut progress, stop)?;
            println!(
                "done: step {}/{} over {} examples (checkpoints in {})",
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
                "done: {} prompts, {} samples: {} kept, {} incorrect, {} unreadable -> {}",
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
                "done: teacher kept {} of {} samples -> {}",
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
            let report = run_eval(&job.eval_job(run), &mut progress, stop)?;
            print!("{}", report.table());
            println!("report: {}", report.report.display());
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
