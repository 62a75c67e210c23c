//! Scoring a JSONL file with a reward model, as `r1ctl rm score` does: a line with `response` gets
//! one score, a line with `chosen` and `rejected` gets both, and pairs count toward the pairwise
//! accuracy. Errors name the file and line.

use std::io::BufRead;
use std::path::Path;

use serde_json::Value;

use crate::data::DataError;

use super::{RewardModelError, RewardModelScorer};

/// One scored line of the file.
#[derive(Debug, Clone, PartialEq)]
pub enum ScoredLine {
    /// A single response.
    One {
        /// 1-based line number.
        line: usize,
        /// Its score.
        score: f32,
    },
    /// A preference pair.
    Pair {
        /// 1-based line number.
        line: usize,
        /// Score of the chosen response.
        chosen: f32,
        /// Score of the rejected response.
        rejected: f32,
    },
}

/// Every scored line and the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredFile {
    /// One entry per non-blank line, in file order.
    pub lines: Vec<ScoredLine>,
    /// Mean of every score (a pair counts twice); 0 for an empty file.
    pub mean_score: f64,
    /// Pairs in the file.
    pub pairs: usize,
    /// Pairs whose chosen response scored above the rejected one.
    pub pairs_right: usize,
}

/// A line to score: (line number, prompt, responses: one, or chosen then rejected).
type TextLine = (usize, String, Vec<String>);

fn read_lines(path: &Path) -> Result<Vec<TextLine>, RewardModelError> {
    let invalid = |line: usize, message: String| {
        RewardModelError::Data(DataError::Line {
            path: path.to_path_buf(),
            line,
            message,
        })
    };
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, text) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let text = text.map_err(|e| invalid(n, e.to_string()))?;
        if text.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(&text).map_err(|e| invalid(n, format!("invalid JSON: {e}")))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let prompt =
            field("prompt").ok_or_else(|| invalid(n, "no string field `prompt`".into()))?;
        let responses = match (field("chosen"), field("rejected"), field("response")) {
            (Some(c), Some(r), _) => vec![c, r],
            (_, _, Some(r)) => vec![r],
            _ => {
                return Err(invalid(
                    n,
                    "needs `response`, or `chosen` and `rejected`".into(),
                ))
            }
        };
        out.push((n, prompt, responses));
    }
    Ok(out)
}

/// Scores every line of the JSONL file at `path` in batches of the scorer's size.
pub fn score_jsonl(
    scorer: &RewardModelScorer,
    path: &Path,
) -> Result<ScoredFile, RewardModelError> {
    let lines = read_lines(path)?;
    let items: Vec<(String, String)> = lines
        .iter()
        .flat_map(|(_, prompt, responses)| responses.iter().map(|r| (prompt.clone(), r.clone())))
        .collect();
    let scores = scorer.score(&items)?;
    let mut next = scores.iter().copied();
    let mut scored = ScoredFile {
        lines: Vec::with_capacity(lines.len()),
        mean_score: scores.iter().map(|&s| f64::from(s)).sum::<f64>() / scores.len().max(1) as f64,
        pairs: 0,
        pairs_right: 0,
    };
    for (line, _, responses) in &lines {
        let mut take = || next.next().unwrap_or(f32::NAN);
        scored.lines.push(if responses.len() == 2 {
            let (chosen, rejected) = (take(), take());
            scored.pairs += 1;
            scored.pairs_right += usize::from(chosen > rejected);
            ScoredLine::Pair {
                line: *line,
                chosen,
                rejected,
            }
        } else {
            ScoredLine::One {
                line: *line,
                score: take(),
            }
        });
    }
    Ok(scored)
}
