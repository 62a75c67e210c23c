//! The rejection-sampling stage as a whole run: k samples per prompt from a checkpoint, judged by
//! the reward rules, the correct and readable ones kept (`rejection::select`), written as a JSONL
//! SFT set with provenance (checkpoint, dataset, line, sample), plus a summary JSON beside it.
//!
//! Prompts are processed in batches of `prompts_per_batch`; batch `b` samples with the seed
//! (seed, b), so the set is the same however the work is split. After every batch its kept
//! records are appended to the set (flushed and fsynced) and the summary is rewritten (temp file,
//! rename) with the prompts done and `stopped: true`; the last batch writes `stopped: false`. The
//! stop flag is checked between batches.
//!
//! Resume: a run whose summary says `stopped` under the same config hash continues after the
//! prompts it had done, keeping the first `summary.kept` records of the set (a record appended
//! by a batch whose summary was never written — a crash between the two — is dropped and
//! sampled again), so a stopped or killed run started again writes the same set as one that never
//! stopped. A finished set, or one written under another config, is written anew.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use r1_kernels::sample::{Sampler, SamplingParams};
use r1_kernels::tokenizer::Tokenizer;

use crate::data::DataSource;
use crate::judge::reward::{CodeSandbox, RewardRules};
use crate::judge::sandbox::SandboxConfig;
use crate::judge::tasks::Split;
use crate::stages::grpo::{
    group_requests, judge_completions, round_seed, sampling_for, stage_rules, StageSettings,
};
use crate::stages::job::{stop_requested, write_json, ModelSpec, RunError, RunSpec, StageEvent};
use crate::stages::problem::{PromptProblem, StageProblem};
use crate::stages::rejection::{
    append_sft_records, select, write_sft_set, Candidate, ReadabilityFilter, RejectionSummary,
    SftRecord,
};

/// The rejection stage's settings (the job config's `[rejection]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RejectionConfig {
    /// Samples per prompt (k).
    pub samples_per_prompt: usize,
    /// Most samples kept per prompt.
    pub keep_per_prompt: usize,
    /// Prompts used from the data (0: all).
    pub prompts: usize,
    /// Prompts sampled together (the stop flag is checked between batches).
    pub prompts_per_batch: usize,
    /// Most sequences decoded at once.
    pub max_batch: usize,
    /// The JSONL set written (default `<output_dir>/sft.jsonl`).
    pub output: Option<PathBuf>,
    /// Readability thresholds.
    pub filter: ReadabilityFilter,
}

impl Default for RejectionConfig {
    fn default() -> Self {
        RejectionConfig {
            samples_per_prompt: 4,
            keep_per_prompt: 1,
            prompts: 0,
            prompts_per_batch: 16,
            max_batch: 64,
            output: None,
            filter: ReadabilityFilter::default(),
        }
    }
}

impl RejectionConfig {
    /// Range checks; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.samples_per_prompt == 0
            || self.keep_per_prompt == 0
            || self.prompts_per_batch == 0
            || self.max_batch == 0
        {
            return Err(
                "samples_per_prompt, keep_per_prompt, prompts_per_batch and max_batch must be at least 1"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&self.filter.min_language_share) {
            return Err(format!(
                "filter.min_language_share must be in [0, 1], got {}",
                self.filter.min_language_share
            ));
        }
        Ok(())
    }
}

/// Everything the rejection stage needs.
#[derive(Debug, Clone)]
pub struct RejectionJob {
    /// Seed and output directory.
    pub run: RunSpec,
    /// The checkpoint that samples.
    pub model: ModelSpec,
    /// The prompts (each needs an answer or tests).
    pub data: DataSource,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Reward rules (accuracy decides correctness).
    pub rules: RewardRules,
    /// The stage's settings.
    pub rejection: RejectionConfig,
}

/// What the rejection stage did (also written as `<output>.summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectionRunReport {
    /// Kept and dropped counts.
    pub summary: RejectionSummary,
    /// Prompts sampled.
    pub prompts: usize,
    /// Prompts planned.
    pub prompts_planned: usize,
    /// Whether the stop flag ended it early (the set holds what was kept until then).
    pub stopped: bool,
    /// The JSONL SFT set.
    pub output: PathBuf,
    /// Hash of the job config that wrote it (a stopped set is continued only under the same).
    #[serde(default)]
    pub config_hash: String,
}

/// Runs the rejection stage; see the module doc.
pub fn run_rejection(
    job: &RejectionJob,
    progress: &mut dyn FnMut(StageEvent),
    stop: &AtomicBool,
) -> Result<RejectionRunReport, RunError> {
    let cfg = &job.rejection;
    cfg.validate()
        .map_err(|m| RunError::Invalid(format!("rejection: {m}")))?;
    // The workers' devices: a GPU this machine lacks is refused here, `auto` says where it went.
    let placement = crate::stages::job::announce_placement(&job.run, progress)?;
    let tokenizer = job.model.tokenizer()?;
    let model = job.model.load()?;
    let mut problems = job.data.problems(job.run.seed, Split::Train)?;
    if cfg.prompts > 0 {
        problems.truncate(cfg.prompts);
    }
    let output = cfg
        .output
        .clone()
        .unwrap_or_else(|| job.run.output_dir.join("sft.jsonl"));
    let settings = StageSettings {
        template: job.model.template,
        sampling: job.sampling.clone(),
        rules: job.rules,
        max_batch: cfg.max_batch,
    };
    let sandbox = CodeSandbox::lazy(SandboxConfig::default());
    let checkpoint = job.model.path.display().to_string();
    let dataset = job.data.name();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { path, source }
    };
    if let Some(parent) = output.parent() {
        crate::stages::job::create_dir(parent)?;
    }
    let mut report = match resumable(&output, &job.run.config_hash, problems.len())? {
        Some((report, records)) => {
            progress(StageEvent::Note {
                message: format!(
                    "resuming after {} of {} prompts ({} samples kept) in {}",
                    report.prompts,
                    report.prompts_planned,
                    records.len(),
                    output.display()
                ),
            });
            write_sft_set(&output, &records).map_err(io(&output))?;
            report
        }
        None => {
            write_sft_set(&output, &[]).map_err(io(&output))?;
            RejectionRunReport {
                summary: RejectionSummary::default(),
                prompts: 0,
                prompts_planned: problems.len(),
                stopped: true,
                output: output.clone(),
                config_hash: job.run.config_hash.clone(),
            }
        }
    };
    let per_batch = cfg.prompts_per_batch;
    let mut stopped = false;
    // One sampler for the stage: on a GPU the weights go up once.
    let mut sampler = Sampler::with_precision(
        placement.sampler,
        placement.sampler_precision,
        &model,
        settings.max_batch,
    )
    .map_err(crate::stages::grpo::StageError::from)?;
    for (b, batch) in problems.chunks(per_batch).enumerate() {
        if b * per_batch < report.prompts {
            continue;
        }
        if stop_requested(stop) {
            stopped = true;
            break;
        }
        let candidates = sample_candidates(
            &mut sampler,
            &tokenizer,
            &settings,
            &sandbox,
            batch,
            cfg.samples_per_prompt,
            round_seed(job.run.seed, b),
        )?;
        let (kept, summary) = select(
            &candidates,
            &cfg.filter,
            cfg.keep_per_prompt,
            &checkpoint,
            &dataset,
        );
        append_sft_records(&output, &kept).map_err(io(&output))?;
        report.summary.merge(&summary);
        report.prompts += batch.len();
        write_json(&summary_path(&output), &report)?;
        progress(StageEvent::Sampled {
            prompts_done: report.prompts,
            prompts: report.prompts_planned,
            kept: report.summary.kept,
        });
    }
    report.stopped = stopped;
    write_json(&summary_path(&output), &report)?;
    Ok(report)
}

/// A stopped set under the same config and plan: its summary and the records it vouches for.
fn resumable(
    output: &Path,
    config_hash: &str,
    planned: usize,
) -> Result<Option<(RejectionRunReport, Vec<SftRecord>)>, RunError> {
    let Ok(text) = std::fs::read_to_string(summary_path(output)) else {
        return Ok(None);
    };
    let Ok(report) = serde_json::from_str::<RejectionRunReport>(&text) else {
        return Ok(None);
    };
    if !report.stopped
        || report.config_hash != config_hash
        || report.prompts_planned != planned
        || !output.is_file()
    {
        return Ok(None);
    }
    let mut records = Vec::new();
    let file = std::fs::File::open(output).map_err(|source| RunError::Io {
        path: output.to_path_buf(),
        source,
    })?;
    for (i, line) in std::io::BufRead::lines(std::io::BufReader::new(file))
        .take(report.summary.kept)
        .enumerate()
    {
        let bad = |message: String| {
            RunError::Invalid(format!(
                "{}:{}: {message} (remove the set and its summary to start over)",
                output.display(),
                i + 1
            ))
        };
        let line = line.map_err(|e| bad(e.to_string()))?;
        records.push(serde_json::from_str::<SftRecord>(&line).map_err(|e| bad(e.to_string()))?);
    }
    if records.len() != report.summary.kept {
        return Err(RunError::Invalid(format!(
            "{}: {} records, but its summary counts {} kept (remove the set and its summary to start over)",
            output.display(),
            records.len(),
            report.summary.kept
        )));
    }
    Ok(Some((report, records)))
}

/// `<set>.summary.json` beside the SFT set.
pub fn summary_path(output: &std::path::Path) -> PathBuf {
    output.with_extension("summary.json")
}

/// Samples `k` completions of each problem, judges them, and returns them as candidates.
fn sample_candidates(
    sampler: &mut Sampler<'_>,
    tokenizer: &Tokenizer,
    settings: &StageSettings,
    sandbox: &CodeSandbox,
    problems: &[StageProblem],
    k: usize,
    seed: u64,
) -> Result<Vec<Candidate>, RunError> {
    let sampling = sampling_for(settings, tokenizer);
    let batch = group_requests(problems, settings, tokenizer, &sampling, k, seed)?;
    let completions = sampler
        .generate(&batch.requests, Some(tokenizer))
        .map_err(crate::stages::grpo::StageError::from)?;
    let rules = stage_rules(settings, batch.prefilled_think);
    let reports = judge_completions(problems, &completions, &rules, sandbox)?;
    Ok(completions
        .iter()
        .zip(&reports)
        .map(|(c, r)| {
            let problem = &problems[c.request];
            Candidate {
                prompt: problem.prompt().to_string(),
                completion: c.text.clone().unwrap_or_default(),
                answer: problem.judge.answer.clone(),
                correct: r.accuracy.reward > 0.0,
                reward: r.total,
                language: problem.judge.language,
                line: problem.source(),
                sample: c.sample,
            }
        })
        .collect())
}
