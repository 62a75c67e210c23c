//! Math accuracy reward: did the completion state the gold answer?
//!
//! The DeepSeek-R1 recipe rewards accuracy with rules, not a model, so this must be hard to game
//! and generous to every correct spelling of an answer. Two steps:
//!
//! 1. [`extract_answer`] finds the final answer per the dataset's [`ExtractMode`]: the
//!    `<answer>…</answer>` tag, the last `\boxed{…}`, or the answer stated in free text.
//! 2. [`equivalent`] decides whether it equals the gold answer: LaTeX presentation is ignored,
//!    numbers written exactly (integers, fractions, finite decimals) compare exactly as rationals,
//!    a decimal stands for a value with no finite decimal form only at the precision written,
//!    irrational values compare with a relative tolerance, expressions compare by value at fixed
//!    points, sets, tuples, intervals and equations by structure, anything else as text.
//!
//! Nothing is ever executed: the parser knows arithmetic, a fixed list of functions and the
//! containers, with depth and length caps so hostile answers end quickly as "not equal".
//!
//! Choices worth knowing (the tests in `tests/math_corpus.rs` pin each one):
//! - `10%` equals both `10` and `0.1`: models drop the sign of "what percent" answers.
//! - `1,000` is one thousand; `1.000` is one (no European grouping).
//! - `x = 5` equals `5` (the value after the last `=`), but `x = 5` and `y = 5` differ.
//! - A bare list `1, 2` equals the set `\{2, 1\}` and the tuple `(1, 2)`, never `(2, 1)`; a set
//!   never equals a tuple, and interval ends must match.
//! - Exact numbers are exact: `8517213` is not `8517214`. A decimal matches a value that no finite
//!   decimal writes (`\frac{8}{3}`, `\pi`) when that value rounds to it at the places written; a
//!   predicted decimal needs 4 significant digits for it (`2.6667` is `\frac{8}{3}`, `2.67` is not),
//!   a gold decimal sets its own precision (gold `3.14` accepts `\pi`). Two decimals compare
//!   exactly (`3.1416` is not `3.14`).
//! - Several boxes in a row are one list answer; `k = 45, n = 2` equals `(45, 2)`; `a:b` is a/b;
//!   inequalities equal intervals (`0 < f(x) < 1` is `(0, 1)`); equations equal when `lhs - rhs`
//!   agree up to a nonzero factor (`2x+4y-3=0` is `y=-\frac12 x+\frac34`).
//! - A gold answer that is one capital letter (`B`, `(B)`) is a multiple-choice letter; a
//!   prediction naming two options (`(A) or (B)`) picks none.
//! - `x = \pm 2` is the list `2, -2`; `x > 5` equals the interval `(5, \infty)`; matrices compare
//!   cell by cell as nested tuples, after scalar multiples and sums of them are worked out; `e` is Euler's number; `\sin^{-1}` is `\arcsin`.
//! - Words compare as text without case, and a run of three or more letters that is no known
//!   function makes the whole answer text, so `yes` is never the product y·e·s.
//! - Integrals, limits, sums and other unknown macros are not evaluated: such an answer only
//!   matches the same text.
//!
//! Bounds: answers over 4 kB are refused, nesting stops at 64 levels, sets and lists at 64 items,
//! numbers at `f64` range (`10^{10^{10}}` is "not equal"), factorials at 170!; so one check costs at
//! most tens of milliseconds on hostile input and microseconds on real answers.

mod compare;
mod eval;
mod extract;
mod latex;
mod lex;
mod number;
mod parse;
mod syntax;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a dataset's completions put their final answer. Chosen per dataset: R1-Zero prompts ask
/// for `<answer>` tags, MATH-style prompts for `\boxed{}`, GSM8K-style text for a stated number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtractMode {
    /// The content of the last closed `<answer>…</answer>` (a `\boxed{}` inside it wins).
    AnswerTag,
    /// The content of the last `\boxed{…}` or `\fbox{…}`.
    Boxed,
    /// The answer stated in prose: after "the answer is", else the last math span, else the last
    /// number.
    FreeText,
    /// The answer tag, else the last boxed, else free text: for mixed or unknown datasets.
    Auto,
}

impl ExtractMode {
    /// Every mode with its configuration name, for parsing and error messages.
    const NAMES: [(&'static str, ExtractMode); 4] = [
        ("answer_tag", ExtractMode::AnswerTag),
        ("boxed", ExtractMode::Boxed),
        ("free_text", ExtractMode::FreeText),
        ("auto", ExtractMode::Auto),
    ];

    /// The configuration name (`answer_tag`, `boxed`, `free_text`, `auto`).
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("auto", |(n, _)| n)
    }
}

impl fmt::Display for ExtractMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A configuration named an extraction mode that does not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown math extract mode {given:?}: expected one of answer_tag, boxed, free_text, auto")]
pub struct UnknownExtractMode {
    /// The name as written.
    pub given: String,
}

impl FromStr for ExtractMode {
    type Err = UnknownExtractMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == s.trim())
            .map(|(_, m)| *m)
            .ok_or_else(|| UnknownExtractMode {
                given: s.to_string(),
            })
    }
}

/// Extracts the final answer of `completion` per `mode`; `None` when there is none (no tag, an
/// unclosed tag or box, no number), which scores 0. Text after a chat-template token
/// (`<|im_end|>`, `<|im_start|>`, …) is a new turn, not the answer, and is ignored; boxes written
/// one after another (`\boxed{1}, \boxed{2}`) are one answer, the list `1, 2`.
pub fn extract_answer(completion: &str, mode: ExtractMode) -> Option<String> {
    let completion = extract::before_chat_debris(completion);
    let free_text = || extract::free_text(completion).map(str::to_string);
    let found = match mode {
        ExtractMode::AnswerTag => extract::answer_tag(completion),
        ExtractMode::Boxed => extract::boxed_answers(completion),
        ExtractMode::FreeText => free_text(),
        ExtractMode::Auto => extract::answer_tag(completion)
            .or_else(|| extract::boxed_answers(completion))
            .or_else(free_text),
    };
    found
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether a predicted answer equals the gold answer, mathematically or (for words and choice
/// letters) textually. Symmetric in spirit but not in letter: the gold answer decides whether the
/// question is multiple-choice and how many decimals a rounded value must match. Never panics;
/// answers over 4 kB, nesting over 64 levels or values beyond `f64` are "not equal".
pub fn equivalent(predicted: &str, gold: &str) -> bool {
    compare::answers_equivalent(predicted, gold)
}

/// The accuracy reward of one completion, with what was extracted (logged with rollouts so a wrong
/// reward can be traced to extraction or to comparison).
#[derive(Clone, Debug, PartialEq)]
pub struct MathScore {
    /// 1.0 when the extracted answer equals the gold answer, else 0.0.
    pub reward: f32,
    /// The extracted answer, `None` when the completion stated none.
    pub extracted: Option<String>,
}

/// Scores one completion against the gold answer: 1.0 when an answer is extracted per `mode` and
/// is [`equivalent`] to `gold`, else 0.0.
pub fn math_reward(completion: &str, gold: &str, mode: ExtractMode) -> MathScore {
    let extracted = extract_answer(completion, mode);
    let correct = extracted
        .as_deref()
        .is_some_and(|answer| equivalent(answer, gold));
    MathScore {
        reward: if correct { 1.0 } else { 0.0 },
        extracted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `check` on its own thread and asserts it finishes: hostile inputs must end, and a hang
    /// or stack overflow must fail the test rather than stall the suite. The bound is generous on
    /// purpose; speed is the benchmark's business.
    fn terminates<F: FnOnce() -> bool + Send + 'static>(what: &str, check: F) -> bool {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(check());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(verdict) => verdict,
            Err(e) => panic!("{what} did not finish: {e}"),
        }
    }

    #[test]
    fn huge_exponents_are_not_equal() {
        assert!(!terminates("10^{10^{10}}", || equivalent(
            "10^{10^{10}}",
            "1"
        )));
        assert!(!terminates("tower", || equivalent(
            "2^{2^{2^{2^{2^{2^{2}}}}}}",
            "2"
        )));
        assert!(!terminates("1e huge", || equivalent(
            "1e99999999999999999999999999",
            "1"
        )));
        assert!(!terminates("x^huge", || equivalent("x^{10^{10}}", "x")));
        assert!(!terminates("factorial", || equivalent("100000!", "1")));
        assert!(!terminates("binomial", || equivalent(
            "\\binom{10000}{5000}",
            "1"
        )));
    }

    #[test]
    fn deep_nesting_is_not_equal() {
        // 1,500 levels fit under the 4 kB answer cap and reach the parser's depth limit;
        // 10,000 levels are refused by the cap.
        for n in [1_500, 10_000] {
            deep_nesting_case(n);
        }
    }

    fn deep_nesting_case(n: usize) {
        let cases = [
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            format!("{}1{}", "{".repeat(n), "}".repeat(n)),
            format!("{}1{}", "\\frac{1}{".repeat(n), "}".repeat(n)),
            format!("{}2{}", "\\sqrt{".repeat(n), "}".repeat(n)),
            format!("{}1{}", "\\text{".repeat(n), "}".repeat(n)),
            format!("{}1{}", "\\left(".repeat(n), "\\right)".repeat(n)),
            format!("{}1{}", "\\{".repeat(n), "\\}".repeat(n)),
            "-".repeat(n) + "1",
            "2^".repeat(n) + "2",
            "1".to_string() + &"/2".repeat(n),
        ];
        for (i, deep) in cases.into_iter().enumerate() {
            let completion = format!("<answer>{deep}</answer> \\boxed{{{deep}}}");
            assert!(
                !terminates("deep equivalence", move || equivalent(&deep, "1")),
                "case {i}"
            );
            for mode in [
                ExtractMode::AnswerTag,
                ExtractMode::Boxed,
                ExtractMode::FreeText,
                ExtractMode::Auto,
            ] {
                let c = completion.clone();
                // Gold 7: free text may fairly pick the innermost number as the last number.
                let reward = terminates("deep reward", move || {
                    math_reward(&c, "7", mode).reward == 1.0
                });
                assert!(!reward, "case {i} mode {mode}");
            }
        }
    }

    #[test]
    fn huge_answers_are_not_equal() {
        let big = "9".repeat(100_000);
        let gold = big.clone();
        assert!(!terminates("100 kB number", move || equivalent(
            &big, &gold
        )));
        let list = "1,".repeat(50_000) + "1";
        assert!(!terminates("100 kB list", move || equivalent(&list, "1")));
        // Just under the length cap: long lists compare in bounded time.
        let a = (0..800)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let b = (0..800)
            .rev()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(!terminates("long unordered lists", move || equivalent(
            &a, &b
        )));
        let poly = (0..300)
            .map(|i| format!("x^{{{i}}}"))
            .collect::<Vec<_>>()
            .join("+");
        let poly2 = poly.clone() + "+1";
        assert!(!terminates("long polynomial", move || equivalent(
            &poly, &poly2
        )));
    }

    #[test]
    fn huge_completions_extract_in_bounded_time() {
        let mut completion = "$1$ \\boxed{2} <answer>3</answer> 4.5 ".repeat(3_000);
        completion.push_str("\\boxed{42}");
        let c = completion.clone();
        assert!(terminates("100 kB completion", move || math_reward(
            &c,
            "42",
            ExtractMode::Boxed
        )
        .reward
            == 1.0));
        let unclosed = "\\boxed{".repeat(20_000);
        assert!(!terminates("unclosed boxes", move || math_reward(
            &unclosed,
            "1",
            ExtractMode::Auto
        )
        .reward
            == 1.0));
        let dollars = "$".repeat(100_001);
        assert!(!terminates("dollars", move || math_reward(
            &dollars,
            "1",
            ExtractMode::FreeText
        )
        .reward
            == 1.0));
    }

    /// Pieces that random answers are built from: LaTeX that parses, LaTeX that half-parses, and
    /// bytes no parser expects.
    const FUZZ_PIECES: &[&str] = &[
        "1",
        "0",
        "-",
        "+",
        "*",
        "/",
        "^",
        "_",
        "!",
        "%",
        ",",
        ".",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "\\{",
        "\\}",
        "|",
        "=",
        "<",
        ">",
        "x",
        "y",
        "e",
        "\\frac",
        "\\sqrt",
        "\\pi",
        "\\infty",
        "\\cup",
        "\\left",
        "\\right",
        "\\text{",
        "\\boxed{",
        "<answer>",
        "</answer>",
        "$",
        "\\(",
        "\\)",
        " ",
        "\\",
        "é",
        "∞",
        "10^{",
        "\\binom",
        "\\log_",
        "\\sin",
        "e5",
        "1,000",
        "\\,",
        "ab",
        "cm",
        "\u{0}",
        "\u{202e}",
        "9999999999999999999999999999999999999999",
    ];

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = ChaCha8Rng::seed_from_u64(20_250_130);
        for _ in 0..20_000 {
            let make = |rng: &mut ChaCha8Rng| {
                let len = rng.random_range(0..24);
                (0..len)
                    .map(|_| FUZZ_PIECES[rng.random_range(0..FUZZ_PIECES.len())])
                    .collect::<String>()
            };
            let a = make(&mut rng);
            let b = make(&mut rng);
            let verdict = equivalent(&a, &b);
            // Deterministic: the same pair gets the same verdict (rewards must be reproducible).
            assert_eq!(verdict, equivalent(&a, &b), "{a:?} vs {b:?}");
            for mode in [
                ExtractMode::AnswerTag,
                ExtractMode::Boxed,
                ExtractMode::FreeText,
                ExtractMode::Auto,
            ] {
                let score = math_reward(&a, &b, mode);
                assert!(score.reward == 0.0 || score.reward == 1.0);
                assert_eq!(
                    score.reward == 1.0,
                    score
                        .extracted
                        .as_deref()
                        .is_some_and(|x| equivalent(x, &b))
                );
            }
        }
        // Random bytes read as (lossy) UTF-8 too.
        for _ in 0..5_000 {
            let len = rng.random_range(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let s = String::from_utf8_lossy(&bytes);
            let _ = equivalent(&s, "1");
            assert!(math_reward(&s, &s, ExtractMode::Auto).reward <= 1.0);
        }
    }
}
