//! Math accuracy reward: did the completion state the gold answer?
//!
//! The DeepSeek-R1 recipe rewards accuracy with rules, not a model, so this must be hard to game
//! and generous to every correct spelling of an answer. Two steps:
//!
//! 1. [`extract_answer`] finds the final answer per the dataset's [`ExtractMode`]: the
//!    `<answer>…</answer>` tag, the last `\boxed{…}`, or the answer stated in free text.
//! 2. [`equivalent`] decides whether it equals the gold answer: LaTeX presentation is ignored,
//!    numbers compare exactly as rationals (with a relative tolerance once irrational),
//!    expressions compare by value at fixed points, sets, tuples, intervals and equations by
//!    structure, anything else as text.
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
//! - A gold decimal (`3.14`) accepts an exact prediction that rounds to it (`\pi`), not another
//!   decimal (`3.1416`).
//! - A gold answer that is one capital letter (`B`, `(B)`) is a multiple-choice letter.

mod compare;
mod eval;
mod extract;
mod latex;
mod number;
mod parse;

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
/// unclosed tag or box, no number), which scores 0.
pub fn extract_answer(completion: &str, mode: ExtractMode) -> Option<String> {
    let found = match mode {
        ExtractMode::AnswerTag => extract::answer_tag(completion),
        ExtractMode::Boxed => extract::last_boxed(completion),
        ExtractMode::FreeText => extract::free_text(completion),
        ExtractMode::Auto => extract::answer_tag(completion)
            .or_else(|| extract::last_boxed(completion))
            .or_else(|| extract::free_text(completion)),
    };
    found
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
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
