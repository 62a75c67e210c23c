//! Multi-digit arithmetic: one exact integer operation (`a + b`, `a - b`, `a × b`) on n-digit
//! operands.
//!
//! The smallest task where a longer chain of thought measurably helps (column-by-column carries),
//! and one whose answer is a single integer, so the check is exact. The verifier compares the
//! integer value of the answer with the true result computed in `i128` (operands have at most
//! [`MAX_DIGITS`] digits, so even a product fits).
//!
//! Accepted answers: optional sign (`+`, `-`, `−` U+2212), ASCII digits, optionally grouped in
//! thousands with one consistent separator: `,` `_` `'`, a space, a no-break space (U+00A0), a thin
//! space (U+2009) or a narrow no-break space (U+202F). When a separator is used the first group has
//! 1–3 digits and every later group exactly 3 (`12,345,678`), so a European decimal such as `1,5` is
//! rejected rather than read as 15. Leading zeros are allowed (`007` is 7). Anything else (a
//! decimal point, words, units, LaTeX) is rejected: the prompt asks for the integer alone.

use serde::{Deserialize, Serialize};

use super::{collect_examples, GenerateError, Problem, SeededDraws, Split, TaskExample};

/// Most digits an operand may have: 19-digit operands keep a product below `i128::MAX`.
pub const MAX_DIGITS: u32 = 19;
/// Longest answer the verifier reads, in characters.
pub const MAX_ANSWER_CHARS: usize = 128;

/// The operation of an arithmetic problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArithOp {
    /// `a + b`
    Add,
    /// `a - b` (the result may be negative)
    Subtract,
    /// `a × b`
    Multiply,
}

impl ArithOp {
    /// The symbol the prompt shows.
    pub fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Subtract => "-",
            ArithOp::Multiply => "×",
        }
    }

    fn is_commutative(self) -> bool {
        matches!(self, ArithOp::Add | ArithOp::Multiply)
    }
}

/// One arithmetic problem: `left op right`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArithmeticProblem {
    /// The first operand.
    pub left: u64,
    /// The operation.
    pub op: ArithOp,
    /// The second operand.
    pub right: u64,
}

impl ArithmeticProblem {
    /// The exact result. `u64` operands cannot overflow `i128` under any of the operations.
    pub fn result(&self) -> i128 {
        let (a, b) = (i128::from(self.left), i128::from(self.right));
        match self.op {
            ArithOp::Add => a + b,
            ArithOp::Subtract => a - b,
            ArithOp::Multiply => a * b,
        }
    }

    /// Canonical key: commutative operands sorted, since `3 × 5` and `5 × 3` are the same problem
    /// for the train/test split.
    pub fn key(&self) -> String {
        let (a, b) = if self.op.is_commutative() && self.right < self.left {
            (self.right, self.left)
        } else {
            (self.left, self.right)
        };
        format!("arithmetic:{a}{}{b}", self.op.symbol())
    }

    /// The question put to the model.
    pub fn prompt(&self) -> String {
        format!(
            "What is {} {} {}? Show your work in <think> </think> tags and return only the exact \
             integer result in <answer> </answer> tags, for example <answer>1234</answer>.",
            self.left,
            self.op.symbol(),
            self.right
        )
    }
}

/// How arithmetic problems are drawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArithmeticConfig {
    /// Operations to draw from, uniformly.
    pub ops: Vec<ArithOp>,
    /// Fewest digits per operand (1 draws from 0..=9).
    pub min_digits: u32,
    /// Most digits per operand (at most [`MAX_DIGITS`]); each operand's digit count is drawn
    /// independently in `min_digits..=max_digits`.
    pub max_digits: u32,
}

impl Default for ArithmeticConfig {
    /// All three operations on 2- to 5-digit operands.
    fn default() -> Self {
        ArithmeticConfig {
            ops: vec![ArithOp::Add, ArithOp::Subtract, ArithOp::Multiply],
            min_digits: 2,
            max_digits: 5,
        }
    }
}

impl ArithmeticConfig {
    /// A uniform operand with a uniformly drawn digit count in `min_digits..=max_digits` (so
    /// short and long operands are equally common, instead of nearly all operands having the
    /// maximum length).
    pub fn draw_operand(&self, draws: &mut SeededDraws) -> u64 {
        let digits = draws.between(u64::from(self.min_digits), u64::from(self.max_digits)) as u32;
        let low = if digits == 1 {
            0
        } else {
            10u64.pow(digits - 1)
        };
        let high = 10u64.saturating_pow(digits).saturating_sub(1);
        draws.between(low, high)
    }

    fn validate(&self) -> Result<(), GenerateError> {
        let invalid = |field, value: String, why| {
            Err(GenerateError::InvalidConfig {
                task: "arithmetic",
                field,
                value,
                why,
            })
        };
        if self.ops.is_empty() {
            return invalid("ops", "[]".to_string(), "needs at least one operation");
        }
        if !(1..=MAX_DIGITS).contains(&self.min_digits) {
            return invalid(
                "min_digits",
                self.min_digits.to_string(),
                "must be in 1..=19",
            );
        }
        if !(self.min_digits..=MAX_DIGITS).contains(&self.max_digits) {
            return invalid(
                "max_digits",
                self.max_digits.to_string(),
                "must be in min_digits..=19",
            );
        }
        Ok(())
    }
}

/// `n` distinct problems of `split` from `seed`, with the default config.
pub fn generate(seed: u64, split: Split, n: usize) -> Result<Vec<TaskExample>, GenerateError> {
    generate_with(&ArithmeticConfig::default(), seed, split, n)
}

/// `n` distinct problems of `split` from `seed`; the gold answer is the exact result in plain
/// digits.
pub fn generate_with(
    config: &ArithmeticConfig,
    seed: u64,
    split: Split,
    n: usize,
) -> Result<Vec<TaskExample>, GenerateError> {
    config.validate()?;
    generate_by(seed, split, n, |draws| {
        let op = config.ops[draws.below(config.ops.len() as u64) as usize];
        let left = config.draw_operand(draws);
        let right = config.draw_operand(draws);
        Some(ArithmeticProblem { left, op, right })
    })
}

/// `n` distinct problems of `split` from `seed`, each drawn by `draw` (which may refuse a draw
/// with `None`): for distributions [`ArithmeticConfig`] cannot express, such as a multi-digit
/// number times one digit. Problems fall in the same splits as every other arithmetic problem
/// (by their key), so a test problem is never a train problem, whoever drew it.
pub fn generate_by(
    seed: u64,
    split: Split,
    n: usize,
    mut draw: impl FnMut(&mut SeededDraws) -> Option<ArithmeticProblem>,
) -> Result<Vec<TaskExample>, GenerateError> {
    collect_examples("arithmetic", seed, split, n, |draws| {
        let problem = draw(draws)?;
        Some(TaskExample {
            prompt: problem.prompt(),
            answer: problem.result().to_string(),
            problem: Problem::Arithmetic(problem),
        })
    })
}

/// Why an arithmetic answer scored 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ArithmeticFailure {
    /// Nothing but whitespace.
    #[error("the answer is empty")]
    Empty,
    /// Longer than [`MAX_ANSWER_CHARS`].
    #[error("the answer is longer than {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A character that is neither a digit, a sign nor a separator.
    #[error("{found:?} at byte {at} is not part of an integer")]
    NotAnInteger {
        /// The character.
        found: char,
        /// Its byte offset in the trimmed answer.
        at: usize,
    },
    /// Separators that do not group the digits in thousands, or mixed separators.
    #[error("digits are not grouped in thousands with one separator")]
    BadGrouping,
    /// More digits than any result of these problems has.
    #[error("the number is too large")]
    NumberTooLarge,
    /// A well-formed integer that is not the result.
    #[error("{given} is not {expected}")]
    WrongValue {
        /// The integer given.
        given: i128,
        /// The true result.
        expected: i128,
    },
}

/// Checks an arithmetic answer (the integer alone) against `problem`.
pub fn verify(problem: &ArithmeticProblem, answer: &str) -> Result<(), ArithmeticFailure> {
    let given = parse_integer(answer)?;
    let expected = problem.result();
    if given != expected {
        return Err(ArithmeticFailure::WrongValue { given, expected });
    }
    Ok(())
}

const SEPARATORS: [char; 7] = [',', '_', '\'', ' ', '\u{a0}', '\u{2009}', '\u{202f}'];

/// Parses an integer with an optional sign and optional thousands separators (see module docs).
pub fn parse_integer(answer: &str) -> Result<i128, ArithmeticFailure> {
    let text = answer.trim();
    if text.is_empty() {
        return Err(ArithmeticFailure::Empty);
    }
    if text.chars().count() > MAX_ANSWER_CHARS {
        return Err(ArithmeticFailure::TooLong {
            max: MAX_ANSWER_CHARS,
        });
    }
    let (negative, digits_start) = match text.chars().next() {
        Some('-') => (true, 1),
        Some('\u{2212}') => (true, '\u{2212}'.len_utf8()),
        Some('+') => (false, 1),
        _ => (false, 0),
    };
    let mut value: i128 = 0;
    let mut separator: Option<char> = None;
    // Digits in each group, to check the thousands grouping once a separator appears.
    let mut groups: Vec<usize> = vec![0];
    for (i, c) in text[digits_start..].char_indices() {
        let at = digits_start + i;
        match c {
            '0'..='9' => {
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(i128::from(c as u8 - b'0')))
                    .ok_or(ArithmeticFailure::NumberTooLarge)?;
                if let Some(last) = groups.last_mut() {
                    *last += 1;
                }
            }
            c if SEPARATORS.contains(&c) => {
                if separator.is_some_and(|s| s != c) {
                    return Err(ArithmeticFailure::BadGrouping);
                }
                separator = Some(c);
                groups.push(0);
            }
            found => return Err(ArithmeticFailure::NotAnInteger { found, at }),
        }
    }
    let first_ok = groups.first().is_some_and(|&g| {
        if groups.len() == 1 {
            g >= 1
        } else {
            (1..=3).contains(&g)
        }
    });
    if !first_ok || groups.iter().skip(1).any(|&g| g != 3) {
        return Err(if groups.len() == 1 {
            ArithmeticFailure::Empty
        } else {
            ArithmeticFailure::BadGrouping
        });
    }
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(left: u64, op: ArithOp, right: u64) -> ArithmeticProblem {
        ArithmeticProblem { left, op, right }
    }

    #[test]
    fn results_are_exact_even_at_the_largest_operands() {
        assert_eq!(problem(12, ArithOp::Add, 30).result(), 42);
        assert_eq!(problem(12, ArithOp::Subtract, 30).result(), -18);
        let big = 9_999_999_999_999_999_999;
        assert_eq!(
            problem(big, ArithOp::Multiply, big).result(),
            99_999_999_999_999_999_980_000_000_000_000_000_001
        );
    }

    #[test]
    fn plain_and_signed_integers_pass() {
        let p = problem(1234, ArithOp::Multiply, 5678);
        assert_eq!(verify(&p, "7006652"), Ok(()));
        assert_eq!(verify(&p, " +7006652\n"), Ok(()));
        assert_eq!(verify(&p, "0007006652"), Ok(()));
        let negative = problem(3, ArithOp::Subtract, 1003);
        assert_eq!(verify(&negative, "-1000"), Ok(()));
        assert_eq!(verify(&negative, "−1,000"), Ok(()));
    }

    #[test]
    fn thousands_separators_are_allowed() {
        let p = problem(1234, ArithOp::Multiply, 5678);
        for answer in [
            "7,006,652",
            "7_006_652",
            "7'006'652",
            "7 006 652",
            "7\u{a0}006\u{a0}652",
            "7\u{2009}006\u{2009}652",
            "7\u{202f}006\u{202f}652",
        ] {
            assert_eq!(verify(&p, answer), Ok(()), "{answer:?}");
        }
    }

    #[test]
    fn malformed_grouping_is_rejected() {
        let p = problem(1234, ArithOp::Multiply, 5678);
        for answer in [
            "7,006652",
            "70,06,652",
            "7,006_652",
            "7006,652,",
            ",7006652",
            "7,,006,652",
            "7006,652",
        ] {
            assert_eq!(
                verify(&p, answer),
                Err(ArithmeticFailure::BadGrouping),
                "{answer:?}"
            );
        }
        assert_eq!(
            verify(&problem(1, ArithOp::Add, 14), "1,5"),
            Err(ArithmeticFailure::BadGrouping)
        );
    }

    #[test]
    fn non_integers_are_rejected() {
        let p = problem(2, ArithOp::Add, 2);
        assert_eq!(
            verify(&p, "4.0"),
            Err(ArithmeticFailure::NotAnInteger { found: '.', at: 1 })
        );
        assert_eq!(
            verify(&p, "4 apples"),
            Err(ArithmeticFailure::NotAnInteger { found: 'a', at: 2 })
        );
        assert_eq!(
            verify(&p, "2+2"),
            Err(ArithmeticFailure::NotAnInteger { found: '+', at: 1 })
        );
        assert_eq!(
            verify(&p, "--4"),
            Err(ArithmeticFailure::NotAnInteger { found: '-', at: 1 })
        );
        assert_eq!(
            verify(&p, "$4$"),
            Err(ArithmeticFailure::NotAnInteger { found: '$', at: 0 })
        );
        assert_eq!(verify(&p, "   "), Err(ArithmeticFailure::Empty));
        assert_eq!(verify(&p, "-"), Err(ArithmeticFailure::Empty));
    }

    #[test]
    fn wrong_values_and_huge_numbers_are_rejected() {
        let p = problem(2, ArithOp::Add, 2);
        assert_eq!(
            verify(&p, "5"),
            Err(ArithmeticFailure::WrongValue {
                given: 5,
                expected: 4
            })
        );
        assert_eq!(
            verify(&p, "-4"),
            Err(ArithmeticFailure::WrongValue {
                given: -4,
                expected: 4
            })
        );
        assert_eq!(
            verify(&p, &"9".repeat(60)),
            Err(ArithmeticFailure::NumberTooLarge)
        );
        assert_eq!(
            verify(&p, &"4".repeat(MAX_ANSWER_CHARS + 1)),
            Err(ArithmeticFailure::TooLong {
                max: MAX_ANSWER_CHARS
            })
        );
    }

    #[test]
    fn generated_problems_match_config_and_gold_answers_verify() {
        let config = ArithmeticConfig {
            ops: vec![ArithOp::Multiply],
            min_digits: 3,
            max_digits: 3,
        };
        let examples = generate_with(&config, 9, Split::Train, 200).expect("generates");
        for example in &examples {
            let Problem::Arithmetic(p) = &example.problem else {
                panic!("arithmetic generator made {example:?}")
            };
            assert_eq!(p.op, ArithOp::Multiply);
            assert!((100..=999).contains(&p.left) && (100..=999).contains(&p.right));
            assert_eq!(verify(p, &example.answer), Ok(()));
            assert_eq!(example.problem.split(), Split::Train);
            assert!(example
                .prompt
                .starts_with(&format!("What is {} × {}?", p.left, p.right)));
        }
        let one_digit = ArithmeticConfig {
            ops: vec![ArithOp::Add],
            min_digits: 1,
            max_digits: 1,
        };
        let examples = generate_with(&one_digit, 9, Split::Train, 20).expect("generates");
        assert!(examples
            .iter()
            .all(|e| matches!(&e.problem, Problem::Arithmetic(p) if p.left <= 9 && p.right <= 9)));
    }

    #[test]
    fn nineteen_digit_operands_generate_and_verify() {
        let config = ArithmeticConfig {
            ops: vec![ArithOp::Multiply],
            min_digits: 19,
            max_digits: 19,
        };
        for example in generate_with(&config, 1, Split::Test, 20).expect("generates") {
            assert_eq!(verify(&example_problem(&example), &example.answer), Ok(()));
        }
    }

    fn example_problem(example: &TaskExample) -> ArithmeticProblem {
        match &example.problem {
            Problem::Arithmetic(p) => p.clone(),
            other => panic!("expected an arithmetic problem, got {other:?}"),
        }
    }

    #[test]
    fn splits_are_disjoint_even_for_swapped_operands() {
        let config = ArithmeticConfig {
            ops: vec![ArithOp::Add, ArithOp::Multiply],
            min_digits: 1,
            max_digits: 2,
        };
        let train = generate_with(&config, 4, Split::Train, 1_000).expect("generates");
        let test = generate_with(&config, 4, Split::Test, 100).expect("generates");
        let train_keys: std::collections::HashSet<String> =
            train.iter().map(|e| e.problem.key()).collect();
        assert!(test.iter().all(|e| !train_keys.contains(&e.problem.key())));
        assert_eq!(
            problem(3, ArithOp::Multiply, 5).key(),
            problem(5, ArithOp::Multiply, 3).key()
        );
        assert_ne!(
            problem(3, ArithOp::Subtract, 5).key(),
            problem(5, ArithOp::Subtract, 3).key()
        );
    }

    #[test]
    fn generation_is_deterministic_and_pinned() {
        assert_eq!(
            generate(11, Split::Train, 30),
            generate(11, Split::Train, 30)
        );
        let first = generate(0, Split::Train, 1).expect("generates").remove(0);
        assert_eq!(first.problem, Problem::Arithmetic(PINNED));
        assert_eq!(first.answer, PINNED.result().to_string());
    }
    const PINNED: ArithmeticProblem = ArithmeticProblem {
        left: 57878,
        op: ArithOp::Add,
        right: 21,
    };

    #[test]
    fn invalid_configs_are_named() {
        let empty = ArithmeticConfig {
            ops: vec![],
            ..ArithmeticConfig::default()
        };
        assert!(matches!(
            generate_with(&empty, 0, Split::Train, 1),
            Err(GenerateError::InvalidConfig { field: "ops", .. })
        ));
        let too_long = ArithmeticConfig {
            max_digits: 20,
            ..ArithmeticConfig::default()
        };
        assert!(matches!(
            generate_with(&too_long, 0, Split::Train, 1),
            Err(GenerateError::InvalidConfig {
                field: "max_digits",
                ..
            })
        ));
        let zero = ArithmeticConfig {
            min_digits: 0,
            ..ArithmeticConfig::default()
        };
        assert!(matches!(
            generate_with(&zero, 0, Split::Train, 1),
            Err(GenerateError::InvalidConfig {
                field: "min_digits",
                ..
            })
        ));
    }

    #[test]
    fn config_reads_from_json() {
        let config: ArithmeticConfig =
            serde_json::from_str(r#"{"ops":["multiply"],"max_digits":7}"#).expect("valid");
        assert_eq!(
            config,
            ArithmeticConfig {
                ops: vec![ArithOp::Multiply],
                min_digits: 2,
                max_digits: 7
            }
        );
        assert!(serde_json::from_str::<ArithmeticConfig>(r#"{"digits":3}"#).is_err());
    }

    #[test]
    fn adversarial_answers_never_panic() {
        let p = problem(1234, ArithOp::Multiply, 5678);
        let pieces = [
            "-",
            "−",
            "+",
            ",",
            "_",
            " ",
            "\u{a0}",
            "0",
            "7",
            "006",
            "9999999999",
            ".",
            "e",
            "数",
            "\u{0}",
            "🦀",
        ];
        let mut draws = SeededDraws::new(13);
        for _ in 0..50_000 {
            let len = draws.below(30);
            let text: String = (0..len)
                .map(|_| pieces[draws.below(pieces.len() as u64) as usize])
                .collect();
            let _ = verify(&p, &text);
        }
    }
}
