//! Held-out evaluation of one model: pass@1 and cons@k from the evaluation stage, plus the
//! format rate and completion lengths of the same samples.

use serde::{Deserialize, Serialize};

use r1_kernels::model::Model;
use r1_kernels::sample::{FinishReason, GenerationRequest, Sampler, SamplingParams};
use r1_kernels::tokenizer::{ByteTokenizer, Tokenizer};

use crate::eval::EvalScores;
use crate::judge::reward::{score_item, CodeSandbox, RewardItem};
use crate::judge::tasks::TaskExample;
use crate::stages::{evaluate, StageSettings};

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
/// and completion lengths of the same samples (same seed, so the same completions).
pub(super) fn held_out_scores(
    model: &Model,
    tokenizer: &Tokenizer,
    problems: &[TaskExample],
    settings: &StageSettings,
    config: &DefaultRunConfig,
) -> Result<HeldOutScores> {
    let sampling = SamplingParams {
        temperature: config.eval.temperature as f32,
        top_p: config.eval.top_p as f32,
        max_new_tokens: config.grpo.max_new_tokens,
        ..SamplingParams::default()
    };
    let k = config.eval.samples;
    let eval_seed = config.seed.wrapping_add(0xE7A1);
    let scores: EvalScores = evaluate(
        model,
        tokenizer,
        problems,
        settings,
        sampling.clone(),
        k,
        eval_seed,
    )?;
    let (format_rate, mean_length, truncated_rate) =
        format_and_length(model, tokenizer, problems, settings, sampling, k, eval_seed)?;
    Ok(HeldOutScores {
        problems: scores.problems,
        samples: scores.k,
        accuracy: scores.pass_at_1,
        cons_at_k: scores.cons_at_k,
        format_rate,
        mean_length,
        truncated_rate,
    })
}

/// Format rate, mean completion length and truncation rate of `k` samples per problem.
fn format_and_length(
    model: &Model,
    tokenizer: &Tokenizer,
    problems: &[TaskExample],
    settings: &StageSettings,
    mut sampling: SamplingParams,
    k: usize,
    seed: u64,
) -> Result<(f64, f64, f64)> {
    // The stop rules `evaluate` applies: the template's end of turn, the eos ids, `</answer>`.
    sampling.stop_token_ids.push(ByteTokenizer::IM_END);
    sampling
        .stop_token_ids
        .extend(tokenizer.eos_ids().iter().copied());
    sampling.stop_strings.push("</answer>".into());
    let requests = problems
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ids = settings
                .template
                .render_prompt(&p.prompt)
                .encode(tokenizer)
                .map_err(|e| DefaultRunError::Tokenizer(e.to_string()))?;
            Ok(GenerationRequest {
                prompt_ids: ids,
                samples: k,
                // `evaluate`'s per-request seeds, so these are its completions.
                seed: seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(i as u64),
                params: sampling.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let completions = Sampler::new(model, settings.max_batch)
        .generate(&requests, Some(tokenizer))
        .map_err(DefaultRunError::Sample)?;
    let sandbox = CodeSandbox::unavailable("the default run has no code task");
    let (mut formatted, mut tokens, mut truncated) = (0usize, 0usize, 0usize);
    for c in &completions {
        let item = RewardItem::for_task(
            c.text.clone().unwrap_or_default(),
            &problems[c.request],
            false,
        );
        let report = score_item(&item, &settings.rules, &sandbox)
            .map_err(|e| DefaultRunError::Judge(e.to_string()))?;
        formatted += usize::from(report.format.reward > 0.0);
        tokens += c.token_ids.len();
        truncated += usize::from(c.finish == FinishReason::Length);
    }
    let n = completions.len().max(1) as f64;
    Ok((
        formatted as f64 / n,
        tokens as f64 / n,
        truncated as f64 / n,
    ))
}
