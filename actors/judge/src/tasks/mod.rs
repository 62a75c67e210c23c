//! Synthetic reasoning tasks with exact verifiers: Countdown and multi-digit arithmetic.
//!
//! R1-Zero-style runs (TinyZero and its kin) need problems whose answers a rule can check with no
//! doubt, generated in any number, reproducibly. Each task here has a seeded generator and a
//! verifier; examples serialise to JSON so a dataset can be written as JSONL and read back.
//!
//! Two promises every generator keeps:
//! - **Reproducible**: the same `(seed, split, n, config)` gives the same examples on every platform
//!   and build. Draws come from ChaCha8 seeded with `seed`, reduced to ranges by our own rejection
//!   sampling ([`SeededDraws`]) rather than `rand`'s distributions, whose exact values may change
//!   between `rand` versions. Asking for more examples extends the list: the first `n` of
//!   `generate(seed, split, n + k)` are `generate(seed, split, n)`.
//! - **Disjoint splits**: the split of a problem is a pure function of the problem
//!   ([`Problem::split`]: a fixed hash of its canonical key, about 10% test), and a generator keeps
//!   only the problems of the split asked for. So the same problem, however it was drawn, is never
//!   in both train and test. Within one generated list problems are distinct.

pub mod arithmetic;
pub mod countdown;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use arithmetic::{ArithOp, ArithmeticConfig, ArithmeticFailure, ArithmeticProblem};
pub use countdown::{CountdownConfig, CountdownFailure, CountdownProblem};

/// Which part of a dataset a problem belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Problems the policy trains on.
    Train,
    /// Held-out problems for evaluation, never trained on.
    Test,
}

/// Per-mille of problems that hash into the test split.
const TEST_PER_MILLE: u64 = 100;

impl Split {
    /// The split of the problem whose canonical key is `key`: a fixed 64-bit hash (FNV-1a, then a
    /// SplitMix64 finaliser to spread it), identical on every platform.
    pub fn of_key(key: &str) -> Split {
        if stable_hash(key) % 1000 < TEST_PER_MILLE {
            Split::Test
        } else {
            Split::Train
        }
    }
}

fn stable_hash(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The task-specific data of an example: what the verifier checks against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Problem {
    /// Reach a target from given numbers.
    Countdown(CountdownProblem),
    /// One exact integer operation.
    Arithmetic(ArithmeticProblem),
}

impl Problem {
    /// A canonical text naming the problem up to what does not change it (the order of the
    /// Countdown numbers, the order of commutative operands): what decides the split.
    pub fn key(&self) -> String {
        match self {
            Problem::Countdown(p) => p.key(),
            Problem::Arithmetic(p) => p.key(),
        }
    }

    /// The split this problem belongs to, whoever generated it.
    pub fn split(&self) -> Split {
        Split::of_key(&self.key())
    }
}

/// One task example: a dataset line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskExample {
    /// The natural-language question (the user turn; the chat/R1 template wraps it elsewhere). It
    /// asks for the final answer in `<answer>` tags.
    pub prompt: String,
    /// A gold answer: the exact result, or for Countdown one valid expression (others may exist).
    pub answer: String,
    /// What the verifier checks against.
    pub problem: Problem,
}

/// A task verifier's result: the reward and, when it is 0, why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// 1.0 for a correct answer, else 0.0.
    pub reward: f32,
    /// Why the reward is 0; `None` when it is 1.
    pub failure: Option<VerifyFailure>,
}

impl Verdict {
    /// Whether the answer was correct.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    fn from_result(result: Result<(), VerifyFailure>) -> Self {
        match result {
            Ok(()) => Verdict {
                reward: 1.0,
                failure: None,
            },
            Err(failure) => Verdict {
                reward: 0.0,
                failure: Some(failure),
            },
        }
    }
}

/// Why a task answer scored 0, per task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum VerifyFailure {
    /// A Countdown expression was rejected.
    #[error("countdown: {0}")]
    Countdown(#[from] CountdownFailure),
    /// An arithmetic answer was rejected.
    #[error("arithmetic: {0}")]
    Arithmetic(#[from] ArithmeticFailure),
}

/// Scores `extracted_answer` (the content of the `<answer>` block, see
/// [`crate::format::extract_answer`]) against the example's problem. Never panics.
pub fn verify(example: &TaskExample, extracted_answer: &str) -> Verdict {
    let result = match &example.problem {
        Problem::Countdown(p) => {
            countdown::verify(p, extracted_answer).map_err(VerifyFailure::from)
        }
        Problem::Arithmetic(p) => {
            arithmetic::verify(p, extracted_answer).map_err(VerifyFailure::from)
        }
    };
    Verdict::from_result(result)
}

/// Why a generator could not produce the examples asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// A config value outside what the task supports.
    #[error("{task} config: {field} = {value} is invalid: {why}")]
    InvalidConfig {
        /// The task ("countdown", "arithmetic").
        task: &'static str,
        /// The offending config field.
        field: &'static str,
        /// Its value, as written.
        value: String,
        /// The allowed range or rule.
        why: &'static str,
    },
    /// The config's problem space has too few distinct problems in this split.
    #[error("{task}: found only {found} of {wanted} distinct {split:?} problems in {attempts} draws; widen the config")]
    Exhausted {
        /// The task.
        task: &'static str,
        /// The split asked for.
        split: Split,
        /// How many examples were asked for.
        wanted: usize,
        /// How many distinct ones were found.
        found: usize,
        /// Draws made before giving up.
        attempts: u64,
    },
}

/// Portable uniform draws from ChaCha8: the same seed gives the same numbers everywhere.
pub struct SeededDraws(ChaCha8Rng);

impl SeededDraws {
    /// Draws seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SeededDraws(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A uniform value in `0..n` (0 when `n` is 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let limit = u64::MAX - u64::MAX % n;
        loop {
            let x = self.0.next_u64();
            if x < limit {
                return x % n;
            }
        }
    }

    /// A uniform value in `lo..=hi` (`lo` when `hi < lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            None => self.0.next_u64(), // the full u64 range
        }
    }
}

/// Draws problems until `n` distinct ones of `split` are found. `draw` returns `None` for a
/// rejected draw (e.g. a Countdown target out of range); `task` names the task in errors.
/// Draws in a row that found no new problem after which a split counts as used up: 1,000 times
/// what a 10% split with a high rejection rate needs per example.
const MAX_DRAWS_WITHOUT_NEW: u64 = 100_000;

fn collect_examples(
    task: &'static str,
    seed: u64,
    split: Split,
    n: usize,
    mut draw: impl FnMut(&mut SeededDraws) -> Option<TaskExample>,
) -> Result<Vec<TaskExample>, GenerateError> {
    let mut draws = SeededDraws::new(seed);
    let mut seen = std::collections::HashSet::new();
    // Grown as examples come: a huge `n` must end in `Exhausted`, not in one huge allocation.
    let mut examples = Vec::with_capacity(n.min(1 << 16));
    // Generous: a 10% split with a high rejection rate needs ~100 draws per example.
    let max_attempts = 10_000u64.saturating_add(1_000u64.saturating_mul(n as u64));
    let mut attempts = 0;
    let mut last_new = 0;
    while examples.len() < n {
        // A space that is used up shows as a long run of draws with nothing new; giving up then
        // answers a too-large size in a second rather than after `max_attempts` (found by
        // fuzzing: `test_size = 1000000` for countdown ran for minutes).
        if attempts == max_attempts || attempts - last_new > MAX_DRAWS_WITHOUT_NEW {
            return Err(GenerateError::Exhausted {
                task,
                split,
                wanted: n,
                found: examples.len(),
                attempts,
            });
        }
        attempts += 1;
        let Some(example) = draw(&mut draws) else {
            continue;
        };
        let key = example.problem.key();
        if Split::of_key(&key) == split && seen.insert(key) {
            examples.push(example);
            last_new = attempts;
        }
    }
    Ok(examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing the job config: `test_size = 1000000` for countdown drew for minutes
    /// before giving up, and a size like 10^12 asked for its whole capacity at once. Both now end
    /// quickly in `Exhausted`.
    #[test]
    fn a_split_larger_than_the_problem_space_is_exhausted_quickly() {
        let began = std::time::Instant::now();
        for n in [1_000_000, 1_000_000_000_000] {
            let result = collect_examples("tiny", 1, Split::Train, n, |draws| {
                // A space of 50 problems.
                let x = draws.below(50);
                Some(TaskExample {
                    prompt: format!("{x}"),
                    answer: format!("{x}"),
                    problem: Problem::Arithmetic(ArithmeticProblem {
                        left: x,
                        op: ArithOp::Add,
                        right: 0,
                    }),
                })
            });
            match result {
                Err(GenerateError::Exhausted { wanted, found, .. }) => {
                    assert_eq!(wanted, n);
                    assert!(found <= 50, "{found}");
                }
                other => panic!("{n}: {:?}", other.map(|v| v.len())),
            }
        }
        assert!(began.elapsed().as_secs() < 30, "{:?}", began.elapsed());
    }

    #[test]
    fn split_is_a_fixed_function_of_the_key() {
        // Pinned values: a change here would silently move problems between train and test.
        assert_eq!(stable_hash(""), PINNED_EMPTY_HASH);
        assert_eq!(stable_hash("countdown:1,2,3=6"), PINNED_KEY_HASH);
        let tests = (0..10_000)
            .filter(|i| Split::of_key(&format!("k{i}")) == Split::Test)
            .count();
        assert!(
            (800..1200).contains(&tests),
            "test share {tests}/10000 should be about 10%"
        );
    }

    const PINNED_EMPTY_HASH: u64 = 17_665_956_581_633_026_203;
    const PINNED_KEY_HASH: u64 = 5_867_941_074_808_135_732;

    #[test]
    fn draws_are_pinned() {
        let mut draws = SeededDraws::new(0);
        let values: Vec<u64> = (0..4).map(|_| draws.below(1000)).collect();
        assert_eq!(values, PINNED_DRAWS);
    }
    const PINNED_DRAWS: [u64; 4] = [652, 623, 878, 556];

    #[test]
    fn draws_are_uniform_in_range_and_reproducible() {
        let mut a = SeededDraws::new(3);
        let mut b = SeededDraws::new(3);
        let mut hits = [0u32; 6];
        for _ in 0..6_000 {
            let x = a.between(10, 15);
            assert_eq!(x, b.between(10, 15));
            hits[(x - 10) as usize] += 1;
        }
        assert!(hits.iter().all(|&h| (800..1200).contains(&h)), "{hits:?}");
        assert_eq!(a.below(0), 0);
        assert_eq!(a.between(5, 5), 5);
        assert_eq!(a.between(7, 2), 7);
        let _ = a.between(0, u64::MAX);
    }

    #[test]
    fn verdict_serialises_with_its_reason() {
        let verdict = Verdict::from_result(Err(ArithmeticFailure::Empty.into()));
        let json = serde_json::to_string(&verdict).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"reward":0.0,"failure":{"arithmetic":{"reason":"empty"}}}"#
        );
    }
}
