//! The evaluation stage: pass@1 averaged over k samples (the paper: temperature 0.6, top-p 0.95)
//! and cons@k by majority vote over normalised answers, or greedy decoding (one sample), on one or
//! more datasets; a report per dataset as a table and as JSON (`<output_dir>/eval.json`), and
//! every problem's samples with their verdicts in `<output_dir>/samples.jsonl` (one
//! [`EvalSample`] a line, readable with `r1ctl samples OUTPUT_DIR`).
//!
//! A built-in task is evaluated on its held-out test split; a file on all its items. The stop flag
//! is checked between datasets; a stopped run reports the datasets done.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use r1_kernels::sample::{Completion, SamplingParams};

use crate::data::DataSource;
use crate::judge::reward::{CodeSandbox, RewardReport, RewardRules};
use crate::judge::sandbox::SandboxConfig;
use crate::judge::tasks::Split;
use crate::messages::SampleRecord;
use crate::report::SAMPLES_FILE;
use crate::stages::grpo::{evaluate_judged, StageEval, StageSettings, StepContext};
use crate::stages::job::{stop_requested, write_json, ModelSpec, RunError, RunSpec, StageEvent};
use crate::stages::problem::PromptProblem;
use crate::stages::rl::judged_sample;

/// The evaluation stage's settings (the job config's `[eval]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Samples per problem (k) for pass@1 and cons@k.
    pub samples: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling threshold.
    pub top_p: f32,
    /// Greedy decoding instead (one sample per problem; temperature and top-p unused).
    pub greedy: bool,
    /// Most sequences decoded at once.
    pub max_batch: usize,
    /// Datasets by name; empty: the job's `[data]`.
    pub datasets: BTreeMap<String, DataSource>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            samples: 4,
            temperature: 0.6,
            top_p: 0.95,
            greedy: false,
            max_batch: 64,
            datasets: BTreeMap::new(),
        }
    }
}

impl EvalConfig {
    /// Range checks; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.samples == 0 || self.max_batch == 0 {
            return Err("samples and max_batch must be at least 1".into());
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        Ok(())
    }
}

/// Everything the evaluation stage needs.
#[derive(Debug, Clone)]
pub struct EvalJob {
    /// Seed and output directory.
    pub run: RunSpec,
    /// The model evaluated.
    pub model: ModelSpec,
    /// The datasets, by name.
    pub datasets: Vec<(String, DataSource)>,
    /// Stop strings and length limit (temperature and top-p come from `eval`).
    pub sampling: SamplingParams,
    /// Reward rules (accuracy decides correctness; format is reported).
    pub rules: RewardRules,
    /// The stage's settings.
    pub eval: EvalConfig,
}

/// One dataset's row of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetEval {
    /// The dataset's name.
    pub name: String,
    /// Its scores.
    #[serde(flatten)]
    pub eval: StageEval,
}

/// One evaluated sample and its verdict, a line of the eval stage's `samples.jsonl`: the fields
/// of an RL run's sample record (step 0) plus where it came from, the answer read and whether it
/// was correct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSample {
    /// The dataset's name.
    pub dataset: String,
    /// The problem's dataset line or row (its index in a generated split).
    pub problem: usize,
    /// Which of the problem's k samples (0-based).
    pub sample: usize,
    /// Whether the accuracy check passed.
    pub correct: bool,
    /// The answer the accuracy check read, when one was found.
    pub answer: Option<String>,
    /// Prompt, completion, rewards and why they fell short.
    #[serde(flatten)]
    pub record: SampleRecord,
}

/// The evaluation report (`eval.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The model evaluated.
    pub model: PathBuf,
    /// Samples per problem.
    pub samples: usize,
    /// Whether decoding was greedy.
    pub greedy: bool,
    /// Temperature used (0 when greedy).
    pub temperature: f32,
    /// Top-p used.
    pub top_p: f32,
    /// One row per dataset, in name order.
    pub datasets: Vec<DatasetEval>,
    /// Whether the stop flag ended it early.
    pub stopped: bool,
    /// Where the JSON report was written.
    pub report: PathBuf,
    /// Where every sample and its verdict were written (`samples.jsonl`).
    #[serde(default)]
    pub samples_file: PathBuf,
}

impl EvalReport {
    /// The report as a plain-text table, one row per dataset.
    pub fn table(&self) -> String {
        let metric = if self.greedy {
            "greedy".to_string()
        } else {
            format!("cons@{}", self.samples)
        };
        let mut out = format!(
            "{:<24} {:>8} {:>8} {:>9} {:>9} {:>8} {:>10}\n",
            "dataset", "problems", "pass@1", metric, "format", "length", "truncated"
        );
        for d in &self.datasets {
            let s = &d.eval;
            out.push_str(&format!(
                "{:<24} {:>8} {:>7.1}% {:>8.1}% {:>8.1}% {:>8.1} {:>9.1}%\n",
                d.name,
                s.scores.problems,
                100.0 * s.scores.pass_at_1,
                100.0 * s.scores.cons_at_k,
                100.0 * s.format_rate,
                s.mean_length,
                100.0 * s.truncated_rate
            ));
        }
        out
    }
}

/// Runs the evaluation; see the module doc.
pub fn run_eval(
    job: &EvalJob,
    progress: &mut dyn FnMut(StageEvent),
    stop: &AtomicBool,
) -> Result<EvalReport, RunError> {
    let cfg = &job.eval;
    cfg.validate()
        .map_err(|m| RunError::Invalid(format!("eval: {m}")))?;
    // The workers' devices: a GPU this machine lacks is refused here, `auto` says where it went.
    let placement = crate::stages::job::announce_placement(&job.run, progress)?;
    let tokenizer = job.model.tokenizer()?;
    let model = job.model.load()?;
    let (k, sampling) = if cfg.greedy {
        (
            1,
            SamplingParams {
                temperature: 0.0,
                top_p: 1.0,
                ..job.sampling.clone()
            },
        )
    } else {
        (
            cfg.samples,
            SamplingParams {
                temperature: cfg.temperature,
                top_p: cfg.top_p,
                ..job.sampling.clone()
            },
        )
    };
    let settings = StageSettings {
        template: job.model.template,
        sampling: sampling.clone(),
        rules: job.rules,
        max_batch: cfg.max_batch,
    };
    let sandbox = CodeSandbox::lazy(SandboxConfig::default());
    let ctx = StepContext {
        tokenizer: &tokenizer,
        settings: &settings,
        sandbox: &sandbox,
        device: placement.sampler,
        precision: placement.sampler_precision,
    };
    let mut report = EvalReport {
        model: job.model.path.clone(),
        samples: k,
        greedy: cfg.greedy,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        datasets: Vec::new(),
        stopped: false,
        report: job.run.output_dir.join("eval.json"),
        samples_file: job.run.output_dir.join(SAMPLES_FILE),
    };
    let mut samples = String::new();
    for (name, data) in &job.datasets {
        if stop_requested(stop) {
            report.stopped = true;
            break;
        }
        let problems = data.problems(job.run.seed, Split::Test)?;
        if problems.is_empty() {
            return Err(RunError::Invalid(format!("dataset {name}: no problems")));
        }
        let (eval, completions, judged) =
            evaluate_judged(&model, &ctx, &problems, sampling.clone(), k, job.run.seed)
                .map_err(|e| RunError::Invalid(format!("dataset {name}: {e}")))?;
        samples.push_str(&sample_lines(name, &problems, &completions, &judged, k));
        progress(StageEvent::Evaluated {
            dataset: name.clone(),
            eval,
        });
        report.datasets.push(DatasetEval {
            name: name.clone(),
            eval,
        });
    }
    std::fs::create_dir_all(&job.run.output_dir).map_err(|source| RunError::Io {
        path: job.run.output_dir.clone(),
        source,
    })?;
    std::fs::write(&report.samples_file, samples).map_err(|source| RunError::Io {
        path: report.samples_file.clone(),
        source,
    })?;
    write_json(&report.report, &report)?;
    Ok(report)
}

/// `samples.jsonl` lines of one dataset's evaluation: every completion (ordered by problem, then
/// sample, as [`evaluate_judged`] returns them) with its verdict.
pub(crate) fn sample_lines<P: PromptProblem>(
    dataset: &str,
    problems: &[P],
    completions: &[Completion],
    judged: &[RewardReport],
    k: usize,
) -> String {
    let mut lines = String::new();
    for (i, (c, r)) in completions.iter().zip(judged).enumerate() {
        let problem = &problems[c.request];
        let line = EvalSample {
            dataset: dataset.to_string(),
            problem: problem.source(),
            sample: i % k.max(1),
            correct: r.accuracy.reward > 0.0,
            answer: r.extracted.clone(),
            record: judged_sample(0, problem.prompt(), c, r),
        };
        // Plain data: serialising cannot fail.
        lines.push_str(&serde_json::to_string(&line).expect("samples serialise"));
        lines.push('\n');
    }
    lines
}
