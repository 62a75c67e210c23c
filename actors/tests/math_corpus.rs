//! Behaviour of the math accuracy reward on a corpus of answer pairs (`data/math_equivalence.tsv`:
//! everyday spellings that must match and near misses that must not) and on whole completions in
//! every extraction mode.

use r1_actors::judge::math::{equivalent, extract_answer, math_reward, ExtractMode};

/// One line of the corpus.
struct Case {
    line: usize,
    expected: bool,
    predicted: String,
    gold: String,
    why: String,
}

fn corpus() -> Vec<Case> {
    let text = include_str!("data/math_equivalence.tsv");
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
        .map(|(i, l)| {
            let fields: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                fields.len(),
                4,
                "corpus line {} has {} fields",
                i + 1,
                fields.len()
            );
            Case {
                line: i + 1,
                expected: match fields[0] {
                    "yes" => true,
                    "no" => false,
                    other => panic!("corpus line {}: verdict {other:?} is not yes/no", i + 1),
                },
                predicted: fields[1].to_string(),
                gold: fields[2].to_string(),
                why: fields[3].to_string(),
            }
        })
        .collect()
}

#[test]
fn corpus_verdicts() {
    let cases = corpus();
    assert!(cases.len() >= 150, "corpus has only {} cases", cases.len());
    let wrong: Vec<String> = cases
        .iter()
        .filter(|c| equivalent(&c.predicted, &c.gold) != c.expected)
        .map(|c| {
            format!(
                "line {}: equivalent({:?}, {:?}) should be {} ({})",
                c.line, c.predicted, c.gold, c.expected, c.why
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} corpus cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn corpus_has_both_verdicts() {
    let cases = corpus();
    let negatives = cases.iter().filter(|c| !c.expected).count();
    assert!(negatives >= 50, "only {negatives} negative cases");
    assert!(cases.len() - negatives >= 100);
}

#[test]
fn every_corpus_answer_equals_itself_unless_degenerate() {
    // Reflexivity: anything a model can write that is not empty, infinite-valued or undefined
    // should match its own copy.
    for c in corpus() {
        for s in [&c.predicted, &c.gold] {
            if !s.trim().is_empty() {
                assert!(
                    equivalent(s, s),
                    "line {}: {s:?} is not equivalent to itself",
                    c.line
                );
            }
        }
    }
}

#[test]
fn r1_zero_answer_tag() {
    let completion = "<think>2+2 is 4, minus 1 is 3</think> <answer>3</answer>";
    let score = math_reward(completion, "3", ExtractMode::AnswerTag);
    assert_eq!(score.reward, 1.0);
    assert_eq!(score.extracted.as_deref(), Some("3"));
    assert_eq!(
        math_reward(completion, "4", ExtractMode::AnswerTag).reward,
        0.0
    );
}

#[test]
fn answer_tag_takes_the_last_closed_tag() {
    let completion = "<answer>1</answer> wait, <answer>\\frac{1}{2}</answer>";
    assert_eq!(
        extract_answer(completion, ExtractMode::AnswerTag).as_deref(),
        Some("\\frac{1}{2}")
    );
    assert_eq!(
        math_reward(completion, "0.5", ExtractMode::AnswerTag).reward,
        1.0
    );
}

#[test]
fn unclosed_answer_tag_scores_zero() {
    let score = math_reward("<think>…</think><answer>3", "3", ExtractMode::AnswerTag);
    assert_eq!(
        score,
        r1_actors::judge::math::MathScore {
            reward: 0.0,
            extracted: None
        }
    );
}

#[test]
fn answer_tag_with_box_or_prose_inside() {
    let boxed = "<answer>Therefore $\\boxed{2\\sqrt{2}}$.</answer>";
    assert_eq!(
        extract_answer(boxed, ExtractMode::AnswerTag).as_deref(),
        Some("2\\sqrt{2}")
    );
    let prose = "<answer>The answer is $x = 4$.</answer>";
    assert_eq!(math_reward(prose, "4", ExtractMode::AnswerTag).reward, 1.0);
}

#[test]
fn boxed_mode_takes_the_last_box() {
    let completion = "First guess \\boxed{3}. Actually \\boxed{\\frac{\\sqrt{3}}{2}}.";
    let score = math_reward(completion, "\\frac{1}{2}\\sqrt{3}", ExtractMode::Boxed);
    assert_eq!(score.extracted.as_deref(), Some("\\frac{\\sqrt{3}}{2}"));
    assert_eq!(score.reward, 1.0);
}

#[test]
fn boxed_variants() {
    assert_eq!(
        extract_answer("so $\\fbox{12}$", ExtractMode::Boxed).as_deref(),
        Some("12")
    );
    assert_eq!(
        extract_answer("so $\\boxed 5$", ExtractMode::Boxed).as_deref(),
        Some("5")
    );
    assert_eq!(
        extract_answer("\\boxed{\\{1,2\\}}", ExtractMode::Boxed).as_deref(),
        Some("\\{1,2\\}")
    );
    assert_eq!(extract_answer("\\boxed{}", ExtractMode::Boxed), None);
    assert_eq!(extract_answer("no box at all: 5", ExtractMode::Boxed), None);
}

#[test]
fn free_text_mode() {
    let gsm8k =
        "Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 72 clips.\n#### 72";
    assert_eq!(math_reward(gsm8k, "72", ExtractMode::FreeText).reward, 1.0);
    let stated = "So the final answer is 1,250 dollars. Let me double check 3 things.";
    assert_eq!(
        math_reward(stated, "1250", ExtractMode::FreeText).reward,
        1.0
    );
    let latex = "The roots satisfy $x^2 = 4$, so $x = -2$";
    assert_eq!(math_reward(latex, "-2", ExtractMode::FreeText).reward, 1.0);
    assert_eq!(
        math_reward("I cannot solve this.", "3", ExtractMode::FreeText).extracted,
        None
    );
}

#[test]
fn auto_mode_prefers_tag_then_box_then_text() {
    let both = "\\boxed{1} <answer>2</answer>";
    assert_eq!(
        extract_answer(both, ExtractMode::Auto).as_deref(),
        Some("2")
    );
    let boxed = "we get 7 and finally \\boxed{8} (not 9)";
    assert_eq!(
        extract_answer(boxed, ExtractMode::Auto).as_deref(),
        Some("8")
    );
    assert_eq!(
        extract_answer("it is 9", ExtractMode::Auto).as_deref(),
        Some("9")
    );
}

#[test]
fn extract_mode_names() {
    for (name, mode) in [
        ("answer_tag", ExtractMode::AnswerTag),
        ("boxed", ExtractMode::Boxed),
        ("free_text", ExtractMode::FreeText),
        ("auto", ExtractMode::Auto),
    ] {
        assert_eq!(name.parse::<ExtractMode>(), Ok(mode));
        assert_eq!(mode.to_string(), name);
        assert_eq!(
            serde_json::to_string(&mode).ok(),
            Some(format!("\"{name}\""))
        );
        let back: ExtractMode = serde_json::from_str(&format!("\"{name}\"")).expect("deserialises");
        assert_eq!(back, mode);
    }
    let err = "boxxed".parse::<ExtractMode>().expect_err("unknown name");
    let message = err.to_string();
    assert!(
        message.contains("boxxed") && message.contains("answer_tag"),
        "{message}"
    );
    assert!(serde_json::from_str::<ExtractMode>("\"Boxed\"").is_err());
}

#[test]
fn reward_is_symmetric_in_spelling_not_in_correctness() {
    for completion in [
        "<answer>\\dfrac{3}{4}</answer>",
        "<answer>0.75</answer>",
        "<answer>75\\%</answer>",
    ] {
        assert_eq!(
            math_reward(completion, "\\frac34", ExtractMode::AnswerTag).reward,
            1.0,
            "{completion}"
        );
    }
    assert_eq!(
        math_reward("<answer>0.57</answer>", "\\frac34", ExtractMode::AnswerTag).reward,
        0.0
    );
}
