//! Behaviour of the math accuracy reward on a corpus of answer pairs (`data/math_equivalence.tsv`:
//! everyday spellings that must match and near misses that must not), on whole completions in
//! every extraction mode, and on the generated corpus of model-like completions
//! (`data/math_corpus.jsonl`) beside math-verify's committed verdicts
//! (`differential_against_math_verify`, the Rust side of `scripts/math-verify-diff.sh`).

mod math_cases;

use std::collections::BTreeMap;

use r1_judge::math::{equivalent, extract_answer, math_reward, ExtractMode};

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
        r1_judge::math::MathScore {
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

/// Per-category tallies of the differential comparison with math-verify.
#[derive(Default)]
struct Tally {
    cases: usize,
    known: usize,
    r1_right: usize,
    mv_right: usize,
    agree: usize,
}

fn percent(n: usize, d: usize) -> f64 {
    if d == 0 {
        100.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

/// The differential harness's Rust side: r1's verdict (`"extract": "auto"`) on every generated
/// case beside math-verify's committed verdict, by category: how often each is right where the
/// truth is known, their agreement where only math-verify's verdict is the reference, and every
/// case they differ on. `scripts/math-verify-diff.sh` re-derives math-verify's verdicts first.
#[test]
fn differential_against_math_verify() {
    let cases = math_cases::corpus();
    let verdicts = math_cases::math_verify_verdicts();
    let documented = math_cases::documented_differences();
    assert!(
        cases.len() >= 1_000,
        "corpus has only {} cases",
        cases.len()
    );

    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut differences = Vec::new();
    let mut false_positives = Vec::new();
    let mut r1_wrong = Vec::new();
    let mut undocumented = Vec::new();
    let mut reference_disagreements = Vec::new();
    for case in &cases {
        let mv = *verdicts
            .get(&case.id)
            .unwrap_or_else(|| panic!("no math-verify verdict for {}", case.id));
        let score = math_reward(&case.completion, &case.gold, ExtractMode::Auto);
        let r1 = score.reward == 1.0;
        let t = tallies.entry(case.category.as_str()).or_default();
        t.cases += 1;
        t.agree += usize::from(r1 == mv);
        let line = format!(
            "{} [{}] gold {:?}, r1 extracted {:?}: r1 {}, math-verify {}{}",
            case.id,
            case.template,
            case.gold,
            score.extracted,
            if r1 { "yes" } else { "no" },
            if mv { "yes" } else { "no" },
            match case.truth {
                Some(truth) => format!(", truth {}", if truth { "yes" } else { "no" }),
                None => String::new(),
            }
        );
        match case.truth {
            Some(truth) => {
                t.known += 1;
                t.r1_right += usize::from(r1 == truth);
                t.mv_right += usize::from(mv == truth);
                if r1 && !truth {
                    false_positives.push(line.clone());
                }
                if r1 != truth {
                    r1_wrong.push(line.clone());
                }
            }
            None if r1 != mv => {
                reference_disagreements.push(case.id.clone());
                if !documented.contains_key(&case.id) {
                    undocumented.push(line.clone());
                }
            }
            None => {}
        }
        if r1 != mv {
            differences.push(line);
        }
    }

    println!(
        "{:<18} {:>6} {:>6} {:>9} {:>9} {:>9}",
        "category", "cases", "known", "r1 right", "mv right", "agree"
    );
    let mut below = Vec::new();
    for (category, t) in &tallies {
        let right = |n: usize| {
            if t.known == 0 {
                "-".to_string()
            } else {
                format!("{:.1}%", percent(n, t.known))
            }
        };
        println!(
            "{:<18} {:>6} {:>6} {:>9} {:>9} {:>8.1}%",
            category,
            t.cases,
            t.known,
            right(t.r1_right),
            right(t.mv_right),
            percent(t.agree, t.cases)
        );
        if t.known > 0 && (percent(t.r1_right, t.known) < 99.0 || t.r1_right < t.mv_right) {
            below.push(format!(
                "{category}: r1 right on {}/{}, math-verify on {}/{}",
                t.r1_right, t.known, t.mv_right, t.known
            ));
        }
    }
    let reference: Vec<&Tally> = tallies
        .iter()
        .filter(|(_, t)| t.known == 0)
        .map(|(_, t)| t)
        .collect();
    let reference_cases: usize = reference.iter().map(|t| t.cases).sum();
    let reference_agree: usize = reference.iter().map(|t| t.agree).sum();
    let documented_count = reference_disagreements.len() - undocumented.len();
    println!(
        "reference (math-verify's verdict only): agree on {reference_agree}/{reference_cases} \
         ({:.1}%); {documented_count} documented differences (data/math_verify_differences.tsv), \
         agreement on the rest {:.1}%",
        percent(reference_agree, reference_cases),
        percent(reference_agree, reference_cases - documented_count)
    );
    println!(
        "\nevery case where r1 and math-verify differ ({}):",
        differences.len()
    );
    for d in &differences {
        println!("  {d}");
    }
    let stale: Vec<&String> = documented
        .keys()
        .filter(|id| !reference_disagreements.contains(id))
        .collect();

    assert!(
        false_positives.is_empty(),
        "r1 says correct to {} wrong answers:\n{}",
        false_positives.len(),
        false_positives.join("\n")
    );
    assert!(
        below.is_empty(),
        "categories below 99% or below math-verify:\n{}\nr1 wrong on:\n{}",
        below.join("\n"),
        r1_wrong.join("\n")
    );
    assert!(
        undocumented.is_empty(),
        "{} undocumented differences with math-verify in the reference category:\n{}",
        undocumented.len(),
        undocumented.join("\n")
    );
    assert!(
        stale.is_empty(),
        "documented differences that no longer differ: {stale:?}"
    );
    assert!(
        percent(reference_agree, reference_cases) >= 97.0,
        "agreement with math-verify on the reference category is {reference_agree}/{reference_cases}"
    );
}

#[test]
fn issue_17_extraction_kinds() {
    let auto = |completion: &str, gold: &str| math_reward(completion, gold, ExtractMode::Auto);
    // A label or variable in the sentence is not the answer.
    let volume = auto(
        "We stack the cubes.\n\nThe volume of $ABCDEFGH$ is 120.",
        "120",
    );
    assert_eq!(volume.extracted.as_deref(), Some("120"));
    assert_eq!(volume.reward, 1.0);
    assert_eq!(
        auto("Checking all cases, the largest $n$ is 34.", "34").reward,
        1.0
    );
    assert_eq!(
        auto("Checking all cases, the largest $n$ is 35.", "34").reward,
        0.0
    );
    // Chat-template debris after the answer: the new turn's box is not the answer.
    let debris = "So $\\boxed{42}$.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n\
                  <|im_start|>assistant\n\\boxed{5}";
    assert_eq!(auto(debris, "42").reward, 1.0);
    assert_eq!(auto(debris, "5").reward, 0.0);
    // Several answers, boxed one by one.
    assert_eq!(
        auto(
            "The roots are $\\boxed{1}, \\boxed{2}, \\boxed{3}$.",
            "\\{1,2,3\\}"
        )
        .reward,
        1.0
    );
    assert_eq!(
        auto("The roots are $\\boxed{1}, \\boxed{2}$.", "\\{1,2,3\\}").reward,
        0.0,
        "a missing solution"
    );
    assert_eq!(
        auto(
            "$\\boxed{(2, 2)} \\text{and} \\boxed{(6, 2)}$",
            "\\{(2,2),(6,2)\\}"
        )
        .reward,
        1.0
    );
    assert_eq!(
        auto("So $\\boxed{k = 45}$ and $\\boxed{n = 2}$.", "(45, 2)").reward,
        1.0
    );
    assert_eq!(
        auto("So $\\boxed{k = 45}$ and $\\boxed{n = 3}$.", "(45, 2)").reward,
        0.0
    );
    // Thin spaces in a boxed number.
    assert_eq!(auto("Total: $\\boxed{32,\\! 349}$", "32349").reward, 1.0);
    assert_eq!(auto("Total: $\\boxed{32,\\! 348}$", "32349").reward, 0.0);
}
