//! `r1ctl train CONFIG.toml`: runs a job config's GRPO stage in-process — the director's loop until
//! the daemon exists. It resumes from the newest good checkpoint under `<output_dir>/checkpoints`
//! (damaged ones are reported and skipped), checkpoints every `checkpoint.every_steps`, and prints a
//! line per step. Per-step randomness derives from (seed, step) and the data order from the step,
//! so a run stopped at any point and started again ends with the same weights as one that never
//! stopped. Today: `stage = "grpo"` with built-in task data.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use sha2::{Digest, Sha256};

use r1_actors::data::builtin_task;
use r1_actors::judge::tasks::Split;
use r1_actors::keeper::{checkpoint_dir, latest_good, prune, save_checkpoint, TrainerState};
use r1_actors::learner::GrpoLearner;
use r1_actors::stages::{grpo_step, StageSettings};
use r1_config::{DataConfig, JobConfig, Stage};
use r1_kernels::model::load_model_dir;
use r1_kernels::tokenizer::Tokenizer;

/// Arguments of `r1ctl train`.
#[derive(Args)]
pub struct TrainArgs {
    /// The job config (TOML; see config/examples).
    config: PathBuf,
    /// Stop after this many steps in total (default: the config's `grpo.steps`).
    #[arg(long)]
    steps: Option<u64>,
}

/// Runs the stage; returns the exit code.
pub fn run(args: TrainArgs) -> anyhow::Result<i32> {
    let text = std::fs::read(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let job = JobConfig::from_file(&args.config)?;
    if job.run.stage != Stage::Grpo {
        bail!(
            "{}: r1ctl train runs stage = \"grpo\" today; {:?} is not wired yet",
            args.config.display(),
            job.run.stage
        );
    }
    let Some(grpo) = job.grpo.clone() else {
        bail!("{}: no [grpo] table", args.config.display())
    };
    let DataConfig::Builtin {
        task, train_size, ..
    } = &job.data
    else {
        bail!(
            "{}: r1ctl train reads built-in task data today (data.kind = \"builtin\")",
            args.config.display()
        );
    };
    let pool = builtin_task(task, job.run.seed, Split::Train, *train_size)?;
    let tokenizer = match job.model.tokenizer.as_deref() {
        Some("byte") => Tokenizer::byte(),
        _ => Tokenizer::from_model_dir(&job.model.path)
            .with_context(|| format!("tokenizer of {}", job.model.path.display()))?,
    };
    let config_hash: String = Sha256::digest(&text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = job.run.output_dir.join("checkpoints");
    let (latest, skipped) = latest_good(&root)?;
    for damaged in skipped {
        eprintln!("r1ctl train: skipping {damaged}");
    }
    let mut learner = match latest {
        Some(checkpoint) => {
            if checkpoint.state.config_hash != config_hash {
                bail!(
                    "{}: the checkpoints in {} were written under a different config; use a new output_dir",
                    args.config.display(),
                    root.display()
                );
            }
            eprintln!("r1ctl train: resuming at step {}", checkpoint.state.step);
            GrpoLearner::resume(checkpoint, job.learner.clone())
        }
        None => GrpoLearner::new(load_model_dir(&job.model.path)?, job.learner.clone()),
    };
    let settings = StageSettings {
        template: job.model.template,
        sampling: job.sampling.clone(),
        rules: job.rewards,
        max_batch: grpo.max_batch,
    };
    let total = args.steps.unwrap_or(grpo.steps);
    while learner.step < total {
        let step = learner.step;
        let start = (step as usize * grpo.prompts_per_step) % pool.len();
        let batch: Vec<_> = pool
            .iter()
            .cycle()
            .skip(start)
            .take(grpo.prompts_per_step)
            .cloned()
            .collect();
        let began = Instant::now();
        let seed = job.run.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step;
        let report = grpo_step(&mut learner, &tokenizer, &batch, &settings, seed)?;
        let stats = &report.learner;
        println!(
            "step {:>5}  reward {:.3}  accuracy {:.3}  format {:.3}  kl {:.4}  entropy {:.3}  length {:.1}  zero-std {:.2}  {:.1}s",
            stats.step,
            stats.reward_mean,
            report.accuracy,
            report.format,
            stats.kl,
            stats.entropy,
            stats.completion_len_mean,
            stats.frac_zero_std,
            began.elapsed().as_secs_f64()
        );
        if learner.step % job.checkpoint.every_steps == 0 || learner.step == total {
            let dir = checkpoint_dir(&root, learner.step);
            let state = TrainerState {
                step: learner.step,
                optimizer_step: learner.optimizer_step,
                data_cursor: learner.step * grpo.prompts_per_step as u64,
                seed: job.run.seed,
                config_hash: config_hash.clone(),
            };
            std::fs::create_dir_all(&root)
                .with_context(|| format!("creating {}", root.display()))?;
            save_checkpoint(
                &dir,
                &learner.policy,
                learner.reference.as_ref(),
                &learner.optimizer,
                &state,
            )?;
            prune(&root, job.checkpoint.keep_last, None)?;
            eprintln!("r1ctl train: checkpoint {}", dir.display());
        }
    }
    println!(
        "done: step {} (checkpoints in {})",
        learner.step,
        root.display()
    );
    Ok(0)
}
