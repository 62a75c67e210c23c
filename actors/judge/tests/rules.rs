//! The rule rewards together, as the judge applies them to one rollout: the format check extracts
//! the answer, the task verifier scores it, and the language scorer reads the chain of thought.

use std::io::{BufRead, BufReader, Write};

use r1_judge::format::{check_format, FormatConfig, FormatFailure, FormatStyle};
use r1_judge::lang::{detect_language, language_consistency, Language};
use r1_judge::tasks::{self, arithmetic, countdown, Split, TaskExample, VerifyFailure};

/// Format reward + accuracy reward of one completion, the way R1-Zero sums them.
fn rule_rewards(example: &TaskExample, completion: &str, config: &FormatConfig) -> (f32, f32) {
    let format = check_format(completion, config);
    let accuracy = format
        .answer
        .as_deref()
        .map_or(0.0, |answer| tasks::verify(example, answer).reward);
    (format.reward, accuracy)
}

#[test]
fn a_correct_countdown_rollout_earns_both_rewards() {
    let example = countdown::generate(2024, Split::Train, 1)
        .expect("generates")
        .remove(0);
    let completion = format!(
        "<think>Let me try combining them.</think>\n<answer>{}</answer>",
        example.answer
    );
    assert_eq!(
        rule_rewards(&example, &completion, &FormatConfig::default()),
        (1.0, 1.0)
    );
}

#[test]
fn a_well_formatted_wrong_answer_earns_only_the_format_reward() {
    let example = countdown::generate(2024, Split::Train, 1)
        .expect("generates")
        .remove(0);
    let completion = "<think>Guessing.</think><answer>1 + 1</answer>";
    assert_eq!(
        rule_rewards(&example, completion, &FormatConfig::default()),
        (1.0, 0.0)
    );
    let verdict = tasks::verify(&example, "1 + 1");
    assert!(
        matches!(verdict.failure, Some(VerifyFailure::Countdown(_))),
        "{verdict:?}"
    );
}

#[test]
fn a_right_answer_hidden_in_the_reasoning_earns_nothing() {
    let example = arithmetic::generate(5, Split::Test, 1)
        .expect("generates")
        .remove(0);
    let completion = format!("<think>It is <answer>{}</answer></think>", example.answer);
    let format = check_format(&completion, &FormatConfig::default());
    assert!(matches!(
        format.failure,
        Some(FormatFailure::AnswerInsideThink { .. })
    ));
    assert_eq!(
        rule_rewards(&example, &completion, &FormatConfig::default()),
        (0.0, 0.0)
    );
}

#[test]
fn boxed_style_with_a_prefilled_think_scores_arithmetic() {
    let config = FormatConfig {
        style: FormatStyle::Boxed,
        prefilled_think: true,
    };
    let example = arithmetic::generate(5, Split::Train, 1)
        .expect("generates")
        .remove(0);
    let completion = format!(
        "Carry the ones.</think>\nThe result is $\\boxed{{{}}}$.",
        example.answer
    );
    assert_eq!(rule_rewards(&example, &completion, &config), (1.0, 1.0));
}

#[test]
fn language_consistency_reads_the_same_rollout() {
    let example = arithmetic::generate(5, Split::Train, 1)
        .expect("generates")
        .remove(0);
    let target = detect_language(&example.prompt).expect("the prompts are English");
    assert_eq!(target, Language::English);
    let mixed = format!(
        "<think>先算个位, then carry the ten.</think><answer>{}</answer>",
        example.answer
    );
    let share = language_consistency(&mixed, target);
    assert!(share > 0.0 && share < 1.0, "{share}");
    let clean = format!(
        "<think>Add the units, then carry the ten.</think><answer>{}</answer>",
        example.answer
    );
    assert_eq!(language_consistency(&clean, target), 1.0);
}

#[test]
fn a_jsonl_dataset_round_trips_and_keeps_verifying() {
    let mut examples = countdown::generate(1, Split::Test, 20).expect("generates");
    examples.extend(arithmetic::generate(1, Split::Test, 20).expect("generates"));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("test.jsonl");
    let mut file = std::fs::File::create(&path).expect("create");
    for example in &examples {
        let line = serde_json::to_string(example).expect("serialises");
        writeln!(file, "{line}").expect("write");
    }
    drop(file);
    let file = std::fs::File::open(&path).expect("open");
    let read: Vec<TaskExample> = BufReader::new(file)
        .lines()
        .map(|line| serde_json::from_str(&line.expect("read")).expect("parses"))
        .collect();
    assert_eq!(read, examples);
    for example in &read {
        assert_eq!(example.problem.split(), Split::Test);
        assert!(
            tasks::verify(example, &example.answer).passed(),
            "{example:?}"
        );
    }
}

#[test]
fn dataset_lines_with_unknown_fields_are_rejected() {
    let line = r#"{"prompt":"p","answer":"4","problem":{"task":"arithmetic","left":2,"op":"add","right":2},"extra":1}"#;
    assert!(serde_json::from_str::<TaskExample>(line).is_err());
    let inner = r#"{"prompt":"p","answer":"4","problem":{"task":"arithmetic","left":2,"op":"add","right":2,"junk":0}}"#;
    assert!(serde_json::from_str::<TaskExample>(inner).is_err());
    let unknown_task = r#"{"prompt":"p","answer":"4","problem":{"task":"sudoku"}}"#;
    assert!(serde_json::from_str::<TaskExample>(unknown_task).is_err());
    let valid = r#"{"prompt":"p","answer":"4","problem":{"task":"arithmetic","left":2,"op":"add","right":2}}"#;
    let example: TaskExample = serde_json::from_str(valid).expect("parses");
    assert!(tasks::verify(&example, "4").passed());
}
