//! Evaluation metrics of the paper: pass@1 averaged over k samples per problem, and cons@k, the
//! accuracy of the majority answer among k samples.
//!
//! The metrics take plain per-sample facts (correct or not; the extracted answer) so that any
//! task — math, countdown, code — can be evaluated the same way; the stage that samples and judges
//! produces them.

use serde::{Deserialize, Serialize};

/// One problem's k samples: whether each was judged correct and the answer it gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemSamples {
    /// Per sample: judged correct.
    pub correct: Vec<bool>,
    /// Per sample: the extracted answer (None when none could be extracted).
    pub answers: Vec<Option<String>>,
}

/// The scores of one evaluated dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalScores {
    /// Problems evaluated.
    pub problems: usize,
    /// Samples per problem (the largest k seen).
    pub k: usize,
    /// Mean over problems of the share of correct samples.
    pub pass_at_1: f64,
    /// Share of problems whose majority answer is correct.
    pub cons_at_k: f64,
}

/// pass@1 over k samples: for each problem the share of correct samples, averaged over problems.
pub fn pass_at_1(problems: &[ProblemSamples]) -> f64 {
    let scored: Vec<f64> = problems
        .iter()
        .filter(|p| !p.correct.is_empty())
        .map(|p| p.correct.iter().filter(|&&c| c).count() as f64 / p.correct.len() as f64)
        .collect();
    if scored.is_empty() {
        0.0
    } else {
        scored.iter().sum::<f64>() / scored.len() as f64
    }
}

/// The majority answer among `answers`, clustering answers that `same` calls equal (e.g. `2/4`
/// and `0.5`). Ties go to the cluster seen first; samples without an answer do not vote. Returns
/// the index of a sample holding the winning answer.
pub fn majority<F: Fn(&str, &str) -> bool>(answers: &[Option<String>], same: F) -> Option<usize> {
    // (index of the cluster's first member, votes)
    let mut clusters: Vec<(usize, usize)> = Vec::new();
    for (i, answer) in answers.iter().enumerate() {
        let Some(answer) = answer else { continue };
        match clusters
            .iter_mut()
            .find(|(first, _)| answers[*first].as_deref().is_some_and(|a| same(a, answer)))
        {
            Some(cluster) => cluster.1 += 1,
            None => clusters.push((i, 1)),
        }
    }
    let best = clusters.iter().map(|c| c.1).max()?;
    clusters.iter().find(|c| c.1 == best).map(|c| c.0)
}

/// cons@k: the share of problems whose majority answer (see `majority`) belongs to a correct sample.
pub fn cons_at_k<F: Fn(&str, &str) -> bool>(problems: &[ProblemSamples], same: F) -> f64 {
    if problems.is_empty() {
        return 0.0;
    }
    let hits = problems
        .iter()
        .filter(|p| {
            majority(&p.answers, &same).is_some_and(|i| p.correct.get(i).copied().unwrap_or(false))
        })
        .count();
    hits as f64 / problems.len() as f64
}

/// Both metrics for one dataset.
pub fn score<F: Fn(&str, &str) -> bool>(problems: &[ProblemSamples], same: F) -> EvalScores {
    EvalScores {
        problems: problems.len(),
        k: problems.iter().map(|p| p.correct.len()).max().unwrap_or(0),
        pass_at_1: pass_at_1(problems),
        cons_at_k: cons_at_k(problems, same),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::math::equivalent;

    fn problem(correct: &[bool], answers: &[Option<&str>]) -> ProblemSamples {
        ProblemSamples {
            correct: correct.to_vec(),
            answers: answers.iter().map(|a| a.map(String::from)).collect(),
        }
    }

    #[test]
    fn pass_at_1_averages_per_problem_shares() {
        let p = [
            problem(&[true, false, false, false], &[None; 4]),
            problem(&[true, true], &[None; 2]),
        ];
        assert!((pass_at_1(&p) - (0.25 + 1.0) / 2.0).abs() < 1e-12);
        assert_eq!(pass_at_1(&[]), 0.0);
    }

    #[test]
    fn cons_at_k_votes_over_equivalent_answers() {
        // 0.5 and 1/2 are one answer with two votes; 3 has one.
        let p = problem(
            &[true, false, true],
            &[Some("0.5"), Some("3"), Some("\\frac{1}{2}")],
        );
        assert_eq!(majority(&p.answers, equivalent), Some(0));
        assert_eq!(cons_at_k(std::slice::from_ref(&p), equivalent), 1.0);
        // Exact-string voting would tie 0.5 / 3 / 1/2 and pick the first.
        let wrong_majority = problem(&[false, false, true], &[Some("7"), Some("7"), Some("8")]);
        assert_eq!(cons_at_k(&[p.clone(), wrong_majority], equivalent), 0.5);
        // No answers at all: no majority, not correct.
        let silent = problem(&[false, false], &[None, None]);
        assert_eq!(majority(&silent.answers, equivalent), None);
        let s = score(&[p, silent], equivalent);
        assert_eq!((s.problems, s.k), (2, 3));
        assert!((s.cons_at_k - 0.5).abs() < 1e-12);
    }
}
