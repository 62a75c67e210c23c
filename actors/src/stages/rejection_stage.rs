//! The rejection-sampling stage as a whole run: k samples per prompt from a checkpoint, judged by
//! the reward rules, the correct and readable ones kept (`rejection::select`), written as a JSONL
//! SFT set with provenance (checkpoint, dataset, line, sample), plus a summary JSON beside it.
//!
//! Prompts are processed in batches of `prompts_per_batch`; batch `b` samples with the seed
//! (seed, b), so the set is the same however the work is split. The stop flag is checked between
//! batches; a stopped run writes the records it has and says so.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use r1_kernels::model::Model;
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
    select, write_sft_set, Candidate, ReadabilityFilter, RejectionSummary, SftRecord,
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
    let mut records: Vec<SftRecord> = Vec::new();
    let mut report = RejectionRunReport {
        summary: RejectionSummary::default(),
        prompts: 0,
        prompts_planned: problems.len(),
        stopped: false,
        output: output.clone(),
    };
    for (b, batch) in problems.chunks(cfg.prompts_per_batch).enumerate() {
        if stop_requested(stop) {
            report.stopped = true;
            break;
        }
        let candidates = sample_candidates(
            &model,
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
        records.extend(kept);
        report.summary.merge(&summary);
        report.prompts += batch.len();
        progress(StageEvent::Sampled {
            prompts_done: report.prompts,
            prompts: report.prompts_planned,
            kept: records.len(),
        });
    }
    if let Some(parent) = output.parent() {
        crate::stages::job::create_dir(parent)?;
    }
    write_sft_set(&output, &records).map_err(|source| RunError::Io {
        path: output.clone(),
        source,
    })?;
    write_json(&summary_path(&output), &report)?;
    Ok(report)
}

/// `<set>.summary.json` beside the SFT set.
pub fn summary_path(output: &std::path::Path) -> PathBuf {
    output.with_extension("summary.json")
}

/// Samples `k` completions of each problem, judges them, and returns them as candidates.
fn sample_candidates(
    model: &Model,
    tokenizer: &Tokenizer,
    settings: &StageSettings,
    sandbox: &CodeSandbox,
    problems: &[StageProblem],
    k: usize,
    seed: u64,
) -> Result<Vec<Candidate>, RunError> {
    let sampling = sampling_for(settings, tokenizer);
    let batch = group_requests(problems, settings, tokenizer, &sampling, k, seed)?;
    let completions = Sampler::new(model, settings.max_batch)
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
