//! Held-out evaluation of one model: pass@1 and cons@k from the evaluation stage, plus the
//! format rate and completion lengths of the same samples, every one of which is written to a
//! `samples.jsonl` (as the eval stage writes them).

use std::path::Path;

use serde::{Deserialize, Serialize};

use r1_kernels::model::Model;
use r1_kernels::sample::SamplingParams;
use r1_kernels::tokenizer::Tokenizer;

use crate::judge::tasks::TaskExample;
use crate::report::SAMPLES_FILE;
use crate::stages::eval_stage::sample_lines;
use crate::stages::grpo::evaluate_samples;
use crate::stages::StageSettings;

use super::{DefaultRunConfig, DefaultRunError, Result};

/// The held-out numbers of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeldOutScores {
    /// Test-split problems evaluated.
    pub problems: usize,
    /// Samples per problem.
    pub samples: usize,
    /// pass@1: mean correctness over the samples (the headline number).
    pub accuracy: f64,
    /// cons@k: correctness of the majority answer.
    pub cons_at_k: f64,
    /// Share of samples that pass the format rule.
    pub format_rate: f64,
    /// Mean completion length in tokens.
    pub mean_length: f64,
    /// Share of samples cut by the length limit.
    pub truncated_rate: f64,
}

/// Held-out scores of `model`: pass@1 and cons@k from the evaluation stage, plus the format rate
/// and completion lengths of the same samples, which go to `dir/samples.jsonl` with their
/// verdicts (`r1ctl samples DIR` reads them).
pub(super) fn held_out_scores(
    model: &Model,
    tokenizer: &Tokenizer,
    problems: &[TaskExample],
    settings: &StageSettings,
    config: &DefaultRunConfig,
    dir: &Path,
) -> Result<HeldOutScores> {
    let sampling = SamplingParams {
        temperature: config.eval.temperature as f32,
        top_p: config.eval.top_p as f32,
        max_new_tokens: config.grpo.max_new_tokens,
        ..SamplingParams::default()
    };
    let eval_seed = config.seed.wrapping_add(0xE7A1);
    let k = config.eval.samples;
    let (eval, completions, judged) =
        evaluate_samples(model, tokenizer, problems, settings, sampling, k, eval_seed)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DefaultRunError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(SAMPLES_FILE);
    let lines = sample_lines("held-out", problems, &completions, &judged, k);
    std::fs::write(&path, lines).map_err(io(&path))?;
    let scores = eval.scores;
    Ok(HeldOutScores {
        problems: scores.problems,
        samples: scores.k,
        accuracy: scores.pass_at_1,
        cons_at_k: scores.cons_at_k,
        format_rate: eval.format_rate,
        mean_length: eval.mean_length,
        truncated_rate: eval.truncated_rate,
    })
}
