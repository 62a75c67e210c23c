//! The task and its cold-start data: `a+b` or `a*b` problems asked compactly, and
//! column-by-column chain-of-thought traces, some of them flawed on purpose (see the parent
//! module's docs).

use r1_kernels::template::PromptTemplate;
use r1_kernels::tokenizer::Tokenizer;

use crate::judge::tasks::{
    arithmetic, ArithOp, ArithmeticConfig, ArithmeticProblem, Problem, Split, TaskExample,
};
use crate::learner::SftExample;

use super::{DefaultRunError, Result, TaskConfig, TaskOp};

/// The compact question put to the model (see the module docs for why it is not the task's own).
fn compact_prompt(p: &ArithmeticProblem) -> String {
    let op = if p.op == ArithOp::Multiply { "*" } else { "+" };
    format!("{}{op}{}", p.left, p.right)
}

/// How a cold-start trace goes wrong, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TraceFlaw {
    /// Forget the carry in the first column that has one.
    DroppedCarry,
    /// Answer after `</think>` without `<answer>` tags.
    BrokenFormat,
}

/// The column-by-column chain of thought for `a + b`, least significant column first, and the
/// answer it arrives at: `7+5=12 1+2+1=4` and 42 for 17 + 25. With `drop_carry`, the first carry
/// is forgotten (and the answer follows the wrong chain).
fn addition_trace(a: u64, b: u64, drop_carry: bool) -> (String, u64) {
    let (mut a, mut b) = (a, b);
    let mut steps = Vec::new();
    let mut carry = 0u64;
    let mut dropped = !drop_carry;
    let mut answer_digits = Vec::new();
    loop {
        let (x, y) = (a % 10, b % 10);
        let mut terms = vec![x.to_string(), y.to_string()];
        let mut sum = x + y;
        if carry > 0 {
            if dropped {
                terms.push(carry.to_string());
                sum += carry;
            } else {
                dropped = true;
            }
        }
        steps.push(format!("{}={sum}", terms.join("+")));
        a /= 10;
        b /= 10;
        carry = sum / 10;
        if a == 0 && b == 0 {
            answer_digits.push(sum);
            break;
        }
        answer_digits.push(sum % 10);
    }
    let answer =
        answer_digits.iter().rev().fold(
            0u64,
            |acc, &d| if d >= 10 { acc * 100 + d } else { acc * 10 + d },
        );
    (steps.join(" "), answer)
}

/// The chain of thought for `a * b` with one-digit `b`: `a`'s digits times `b` from the right,
/// each plus the carry from the column before, each followed by the answer's digits so far (so
/// the answer is the last step's, not the partial products' digits read backwards):
/// `7*8=56 so 6, 4*8+5=37 so 76, 3*8+3=27 so 2776` and 2776 for 347 × 8. With `drop_carry`,
/// the first carry is forgotten (and the answer follows the wrong chain).
fn multiplication_trace(a: u64, b: u64, drop_carry: bool) -> (String, u64) {
    let mut a = a;
    let mut steps = Vec::new();
    let mut carry = 0u64;
    let mut dropped = !drop_carry;
    // The answer's low digits written so far, as text (a product of 0 still writes its 0).
    let mut written = String::new();
    loop {
        let x = a % 10;
        let mut product = x * b;
        let mut step = format!("{x}*{b}");
        if carry > 0 {
            if dropped {
                step += &format!("+{carry}");
                product += carry;
            } else {
                dropped = true;
            }
        }
        a /= 10;
        carry = product / 10;
        written = if a == 0 {
            format!("{product}{written}")
        } else {
            format!("{}{written}", product % 10)
        };
        steps.push(format!("{step}={product} so {written}"));
        if a == 0 {
            break;
        }
    }
    // Digits only, at most 10 of them (a < 10^9, b <= 9): the parse cannot fail.
    let answer = written.parse().unwrap_or(0);
    (steps.join(", "), answer)
}

/// Whether `a * b` (one-digit `b`) carries into a next column of `a`.
fn multiplication_has_droppable_carry(a: u64, b: u64) -> bool {
    let (mut a, mut carry) = (a, 0);
    while a > 0 {
        carry = (a % 10 * b + carry) / 10;
        a /= 10;
        if carry > 0 && a > 0 {
            return true;
        }
    }
    false
}

/// Whether `a + b` carries into a next column: a carry the trace can forget (a carry out of the
/// last column only adds a leading 1, and no trace drops that).
fn has_droppable_carry(a: u64, b: u64) -> bool {
    let (mut a, mut b, mut carry) = (a, b, 0);
    while a > 0 || b > 0 {
        carry = (a % 10 + b % 10 + carry) / 10;
        a /= 10;
        b /= 10;
        if carry > 0 && (a > 0 || b > 0) {
            return true;
        }
    }
    false
}

/// Whether the trace of `p` has a carry it could forget.
fn has_carry_to_drop(p: &ArithmeticProblem) -> bool {
    match p.op {
        ArithOp::Multiply => multiplication_has_droppable_carry(p.left, p.right),
        _ => has_droppable_carry(p.left, p.right),
    }
}

/// A cold-start completion for `p`, with its flaw if any, ended by `end` (the template's end of
/// turn).
fn cold_start_completion(p: &ArithmeticProblem, flaw: Option<TraceFlaw>, end: &str) -> String {
    let drop = flaw == Some(TraceFlaw::DroppedCarry);
    let (think, answer) = match p.op {
        ArithOp::Multiply => multiplication_trace(p.left, p.right, drop),
        _ => addition_trace(p.left, p.right, drop),
    };
    match flaw {
        Some(TraceFlaw::BrokenFormat) => format!("<think>{think}</think>{answer}{end}"),
        _ => format!("<think>{think}</think><answer>{answer}</answer>{end}"),
    }
}

/// Deterministic per-example coin flips for the flaws (SplitMix64 of seed and index), so the
/// traces do not shift when another setting changes.
fn unit_draw(seed: u64, index: u64, salt: u64) -> f64 {
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Problems of `split` from the task config, re-prompted compactly.
pub(super) fn task_problems(
    task: &TaskConfig,
    seed: u64,
    split: Split,
    n: usize,
) -> Result<Vec<TaskExample>> {
    let mut examples = match task.op {
        TaskOp::Add => {
            let config = ArithmeticConfig {
                ops: vec![ArithOp::Add],
                min_digits: task.min_digits,
                max_digits: task.max_digits,
            };
            arithmetic::generate_with(&config, seed, split, n)?
        }
        TaskOp::Multiply => {
            // `a` drawn as any arithmetic operand is; `b` one digit in 2..=9.
            let left = ArithmeticConfig {
                ops: vec![ArithOp::Multiply],
                min_digits: task.min_digits,
                max_digits: task.max_digits,
            };
            arithmetic::generate_by(seed, split, n, |draws| {
                Some(ArithmeticProblem {
                    left: left.draw_operand(draws),
                    op: ArithOp::Multiply,
                    right: draws.between(2, 9),
                })
            })?
        }
    };
    for ex in &mut examples {
        if let Problem::Arithmetic(p) = &ex.problem {
            ex.prompt = compact_prompt(p);
        }
    }
    Ok(examples)
}

/// The cold-start SFT set and how many of its traces carry each flaw.
pub(super) struct ColdStart {
    /// Prompt + trace, loss on the trace only.
    pub examples: Vec<SftExample>,
    /// Traces that forget a carry.
    pub dropped: usize,
    /// Traces that break the format.
    pub broken: usize,
}

/// One trace per problem, flawed at the configured rates (each problem's flaws drawn from the seed
/// and its index), tokenized behind the prompt as the template renders it.
pub(super) fn cold_start_examples(
    problems: &[TaskExample],
    task: &TaskConfig,
    seed: u64,
    template: &PromptTemplate,
    tokenizer: &Tokenizer,
) -> Result<ColdStart> {
    let end = template.end_of_turn().unwrap_or_default();
    let mut out = ColdStart {
        examples: Vec::with_capacity(problems.len()),
        dropped: 0,
        broken: 0,
    };
    for (i, ex) in problems.iter().enumerate() {
        let Problem::Arithmetic(p) = &ex.problem else {
            continue;
        };
        let flaw = if unit_draw(seed, i as u64, 1) < task.broken_format_fraction {
            Some(TraceFlaw::BrokenFormat)
        } else if has_carry_to_drop(p) && unit_draw(seed, i as u64, 2) < task.dropped_carry_fraction
        {
            Some(TraceFlaw::DroppedCarry)
        } else {
            None
        };
        out.dropped += usize::from(flaw == Some(TraceFlaw::DroppedCarry));
        out.broken += usize::from(flaw == Some(TraceFlaw::BrokenFormat));
        let prompt = template
            .render_prompt(&ex.prompt)
            .encode(tokenizer)
            .map_err(|e| DefaultRunError::Tokenizer(e.to_string()))?;
        let completion = tokenizer
            .encode(&cold_start_completion(p, flaw, end), false)
            .map_err(|e| DefaultRunError::Tokenizer(e.to_string()))?;
        let mut loss_mask = vec![0.0; prompt.len()];
        loss_mask.extend(std::iter::repeat_n(1.0, completion.len()));
        let mut ids = prompt;
        ids.extend(completion);
        out.examples.push(SftExample { ids, loss_mask });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_add_column_by_column() {
        assert_eq!(
            addition_trace(17, 25, false),
            ("7+5=12 1+2+1=4".to_string(), 42)
        );
        assert_eq!(
            addition_trace(87, 25, false),
            ("7+5=12 8+2+1=11".to_string(), 112)
        );
        assert_eq!(
            addition_trace(5, 17, false),
            ("5+7=12 0+1+1=2".to_string(), 22)
        );
        for (a, b) in [(17, 25), (99, 99), (10, 10), (5, 17), (123_456, 987_654)] {
            assert_eq!(addition_trace(a, b, false).1, a + b, "{a}+{b}");
        }
    }

    #[test]
    fn a_dropped_carry_gives_a_fluent_wrong_answer() {
        assert_eq!(
            addition_trace(17, 25, true),
            ("7+5=12 1+2=3".to_string(), 32)
        );
        assert!(has_droppable_carry(17, 25) && !has_droppable_carry(12, 34));
        assert!(
            !has_droppable_carry(50, 60),
            "a carry out of the last column cannot be dropped"
        );
        // Without a carry there is nothing to drop.
        assert_eq!(addition_trace(12, 34, true).1, 46);
    }

    #[test]
    fn flawed_completions_fail_the_rule_they_break() {
        let p = ArithmeticProblem {
            left: 17,
            op: ArithOp::Add,
            right: 25,
        };
        assert_eq!(
            cold_start_completion(&p, None, "<|im_end|>"),
            "<think>7+5=12 1+2+1=4</think><answer>42</answer><|im_end|>"
        );
        assert_eq!(
            cold_start_completion(&p, Some(TraceFlaw::BrokenFormat), "<|im_end|>"),
            "<think>7+5=12 1+2+1=4</think>42<|im_end|>"
        );
    }

    #[test]
    fn multiplication_traces_carry_digit_by_digit() {
        assert_eq!(
            multiplication_trace(347, 8, false),
            (
                "7*8=56 so 6, 4*8+5=37 so 76, 3*8+3=27 so 2776".to_string(),
                2776
            )
        );
        assert_eq!(
            multiplication_trace(5, 7, false),
            ("5*7=35 so 35".to_string(), 35)
        );
        assert_eq!(
            multiplication_trace(102, 3, false),
            ("2*3=6 so 6, 0*3=0 so 06, 1*3=3 so 306".to_string(), 306)
        );
        for a in (0..2000).step_by(7) {
            for b in 2..=9 {
                assert_eq!(multiplication_trace(a, b, false).1, a * b, "{a}*{b}");
            }
        }
        // Dropping the first carry: 7*8=56, then 4*8=32 without the 5.
        assert_eq!(
            multiplication_trace(347, 8, true),
            (
                "7*8=56 so 6, 4*8=32 so 26, 3*8+3=27 so 2726".to_string(),
                2726
            )
        );
        assert!(multiplication_has_droppable_carry(347, 8));
        assert!(!multiplication_has_droppable_carry(12, 3));
        assert!(
            !multiplication_has_droppable_carry(9, 9),
            "a carry out of the last digit cannot be dropped"
        );
        let p = ArithmeticProblem {
            left: 347,
            op: ArithOp::Multiply,
            right: 8,
        };
        assert_eq!(compact_prompt(&p), "347*8");
        assert_eq!(
            cold_start_completion(&p, None, "<|eot_id|>"),
            "<think>7*8=56 so 6, 4*8+5=37 so 76, 3*8+3=27 so 2776</think><answer>2776</answer>\
             <|eot_id|>"
        );
    }

    #[test]
    fn multiplication_problems_are_multi_digit_times_one_digit_and_split() {
        let task = TaskConfig {
            op: TaskOp::Multiply,
            min_digits: 2,
            max_digits: 3,
            ..TaskConfig::default()
        };
        let train = task_problems(&task, 1, Split::Train, 300).unwrap();
        let test = task_problems(&task, 2, Split::Test, 50).unwrap();
        for ex in train.iter().chain(&test) {
            let Problem::Arithmetic(p) = &ex.problem else {
                panic!("not arithmetic: {ex:?}");
            };
            assert!(
                (10..=999).contains(&p.left) && (2..=9).contains(&p.right),
                "{p:?}"
            );
            assert_eq!(ex.prompt, format!("{}*{}", p.left, p.right));
            assert_eq!(ex.answer, (p.left * p.right).to_string());
        }
        let keys: std::collections::HashSet<_> = train.iter().map(|e| e.problem.key()).collect();
        assert!(test.iter().all(|e| !keys.contains(&e.problem.key())));
    }
}
