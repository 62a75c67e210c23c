//! The generated math corpus (`data/math_corpus.jsonl`, made by `scripts/math_corpus_gen.py`) and
//! math-verify's committed verdicts on it (`data/math_corpus_math_verify.tsv`, made by
//! `scripts/math-verify-diff.sh`). Shared by the corpus test and the math benchmark.

#![allow(dead_code)]

use std::collections::HashMap;

use serde::Deserialize;

/// One generated case: a completion that looks like model output, and the gold answer.
#[derive(Clone, Debug, Deserialize)]
pub struct CorpusCase {
    /// `category-NNNN`, the key of math-verify's verdicts.
    pub id: String,
    /// What the answer is (integers, intervals, …) or `reference` where math-verify decides.
    pub category: String,
    /// The generator template that made the case (its provenance).
    pub template: String,
    /// How the completion states its answer (boxed, `<answer>` tag, plain sentence, …).
    pub wrapper: String,
    /// Whether the completion's answer is right, where the construction decides it.
    pub truth: Option<bool>,
    /// The gold answer as a dataset would store it.
    pub gold: String,
    /// The whole completion.
    pub completion: String,
}

/// Every corpus case, in file order. Panics naming the line when the committed file is malformed
/// (a test-data bug, not user input).
pub fn corpus() -> Vec<CorpusCase> {
    include_str!("../data/math_corpus.jsonl")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("data/math_corpus.jsonl line {}: {e}", i + 1))
        })
        .collect()
}

/// math-verify's verdict per case id (`true` = it said correct).
pub fn math_verify_verdicts() -> HashMap<String, bool> {
    include_str!("../data/math_corpus_math_verify.tsv")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
        .map(|(i, l)| {
            let (id, verdict) = l.split_once('\t').unwrap_or_else(|| {
                panic!("data/math_corpus_math_verify.tsv line {}: no tab", i + 1)
            });
            let verdict = match verdict {
                "yes" => true,
                "no" => false,
                other => panic!(
                    "data/math_corpus_math_verify.tsv line {}: verdict {other:?} is not yes/no",
                    i + 1
                ),
            };
            (id.to_string(), verdict)
        })
        .collect()
}

/// The documented differences with math-verify (`data/math_verify_differences.tsv`): case id to
/// the reason r1's verdict is kept (each also listed in docs/rewards.md).
pub fn documented_differences() -> HashMap<String, String> {
    include_str!("../data/math_verify_differences.tsv")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
        .map(|(i, l)| {
            let (id, why) = l.split_once('\t').unwrap_or_else(|| {
                panic!("data/math_verify_differences.tsv line {}: no tab", i + 1)
            });
            (id.to_string(), why.to_string())
        })
        .collect()
}
