//! Reward models end to end on the byte tokenizer: a tiny model trained on a generated preference
//! set ranks held-out pairs right; point-wise training on safety labels; bad data files are errors
//! with line numbers; over-long texts keep their end or are refused; the stop flag; the scorer.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use r1_actors::reward_model::{
    load_labels, load_pairs, train_reward_model, LabelFields, LabeledResponse, OverLong,
    PairFields, PreferencePair, RewardData, RewardModelScorer, RmProgress, RmTrainConfig,
    TextEncoder,
};
use r1_kernels::model::tiny::TinyModel;
use r1_kernels::model::RewardModel;
use r1_kernels::tokenizer::{ByteTokenizer, Tokenizer};

const NAMES: [&str; 30] = [
    "Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ida", "Jo", "Kay", "Lu", "Max", "Ned",
    "Oz", "Pam", "Quin", "Ray", "Sue", "Tom", "Uma", "Vic", "Wes", "Zoe", "Al", "Bea", "Cal",
    "Dot", "Eve", "Fay",
];
const RUDE: [&str; 4] = ["Go away.", "No.", "Leave me alone.", "Not now."];

fn tiny_rm(seed: u64) -> RewardModel {
    RewardModel::random(
        TinyModel::byte_qwen2(32, 1)
            .with(|c| c.bos_token_id = None)
            .into_config(),
        Some(ByteTokenizer::EOS),
        seed,
        0.02,
    )
}

fn encoder(max_tokens: usize, over_long: OverLong) -> TextEncoder {
    TextEncoder {
        tokenizer: Tokenizer::byte(),
        max_tokens,
        over_long,
    }
}

/// Pairs over `names`: a polite greeting (two phrasings) chosen over a rude one (four phrasings).
fn pairs(names: &[&str], n: usize) -> RewardData {
    RewardData::Pairs(
        (0..n)
            .map(|i| {
                let name = names[i % names.len()];
                PreferencePair {
                    prompt: format!("greet {name}"),
                    chosen: if i % 3 == 0 {
                        format!("Hello {name}, nice to meet you.")
                    } else {
                        format!("Thanks, {name}!")
                    },
                    rejected: RUDE[i % RUDE.len()].into(),
                    line: 0,
                }
            })
            .collect(),
    )
}

fn config(epochs: usize) -> RmTrainConfig {
    RmTrainConfig {
        epochs,
        batch_size: 16,
        lr: 2e-3,
        warmup_steps: 5,
        max_tokens: 96,
        ..RmTrainConfig::default()
    }
}

#[test]
fn a_tiny_reward_model_ranks_held_out_pairs_right() {
    // Held-out pairs greet names never seen in training.
    let (train_names, val_names) = NAMES.split_at(22);
    let stop = AtomicBool::new(false);
    let mut epochs = Vec::new();
    let outcome = train_reward_model(
        tiny_rm(1),
        &encoder(96, OverLong::KeepEnd),
        &pairs(train_names, 240),
        &pairs(val_names, 48),
        &config(3),
        &mut |p| {
            if let RmProgress::Epoch(e) = p {
                epochs.push(e)
            }
        },
        &stop,
    )
    .unwrap();
    assert_eq!(epochs.len(), 3, "one validation report per epoch");
    assert_eq!(outcome.steps, 3 * 15);
    let last = outcome.epochs.last().unwrap();
    eprintln!(
        "held-out pairwise accuracy per epoch: {:?}",
        outcome
            .epochs
            .iter()
            .map(|e| e.validation_accuracy)
            .collect::<Vec<_>>()
    );
    assert!(
        last.validation_accuracy >= 0.95,
        "held-out accuracy {}",
        last.validation_accuracy
    );
    assert!(last.train_loss < outcome.epochs[0].train_loss);

    // The scorer agrees, batched or not, and keeps the input order.
    let scorer = RewardModelScorer::new(outcome.rm.clone(), encoder(96, OverLong::KeepEnd), 3);
    let items: Vec<(String, String)> = vec![
        ("greet Eve".into(), "Thanks, Eve!".into()),
        ("greet Eve".into(), "Go away.".into()),
        ("greet Fay".into(), "Hello Fay, nice to meet you.".into()),
        ("greet Fay".into(), "Not now.".into()),
    ];
    let batched = scorer.score(&items).unwrap();
    for (item, b) in items.iter().zip(&batched) {
        let alone = scorer.score(std::slice::from_ref(item)).unwrap()[0];
        assert!((alone - b).abs() < 1e-5);
    }
    assert!(
        batched[0] > batched[1] && batched[2] > batched[3],
        "{batched:?}"
    );
    // The scorer keeps its engine between calls (and clones share it): after calls of other
    // shapes, the same items score the same bits as on a scorer's first call.
    assert_eq!(scorer.clone().score(&items).unwrap(), batched);
    let fresh = RewardModelScorer::new(outcome.rm.clone(), encoder(96, OverLong::KeepEnd), 3);
    assert_eq!(fresh.score(&items).unwrap(), batched);

    // Deterministic given the seed.
    let again = train_reward_model(
        tiny_rm(1),
        &encoder(96, OverLong::KeepEnd),
        &pairs(train_names, 240),
        &pairs(val_names, 48),
        &config(3),
        &mut |_| {},
        &stop,
    )
    .unwrap();
    assert!(again.rm.model.params == outcome.rm.model.params);
}

#[test]
fn point_wise_training_learns_safety_labels() {
    let labels = |names: &[&str], n: usize| {
        RewardData::Labels(
            (0..n)
                .map(|i| {
                    let name = names[i % names.len()];
                    let safe = i % 2 == 0;
                    LabeledResponse {
                        prompt: format!("greet {name}"),
                        response: if safe {
                            format!("<think>be kind</think>Thanks, {name}!")
                        } else {
                            format!("<think>be rude</think>{}", RUDE[i % RUDE.len()])
                        },
                        label: if safe { 1.0 } else { 0.0 },
                        line: 0,
                    }
                })
                .collect(),
        )
    };
    let (train_names, val_names) = NAMES.split_at(22);
    let outcome = train_reward_model(
        tiny_rm(2),
        &encoder(96, OverLong::KeepEnd),
        &labels(train_names, 200),
        &labels(val_names, 40),
        &config(3),
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let last = outcome.epochs.last().unwrap();
    assert!(
        last.validation_accuracy >= 0.95,
        "held-out label accuracy {}",
        last.validation_accuracy
    );
}

#[test]
fn the_stop_flag_ends_training_between_steps() {
    let stop = AtomicBool::new(false);
    let outcome = train_reward_model(
        tiny_rm(3),
        &encoder(96, OverLong::KeepEnd),
        &pairs(&NAMES, 160),
        &pairs(&NAMES, 8),
        &config(5),
        &mut |p| {
            if matches!(p, RmProgress::Step { step: 3, .. }) {
                stop.store(true, Ordering::Relaxed);
            }
        },
        &stop,
    )
    .unwrap();
    assert!(outcome.stopped);
    assert_eq!(outcome.steps, 3);
    assert!(outcome.epochs.is_empty());
}

#[test]
fn bad_data_files_are_errors_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.jsonl");
    let write = |text: &str| std::fs::write(&path, text).unwrap();
    let err = |text: &str| {
        write(text);
        load_pairs(&path, &PairFields::default())
            .unwrap_err()
            .to_string()
    };
    let ok = r#"{"prompt": "p", "chosen": "a", "rejected": "b"}"#;
    let e = err(&format!(
        "{ok}\n\n{{\"prompt\": \"p\", \"chosen\": \"same\", \"rejected\": \"same\"}}\n"
    ));
    assert!(
        e.contains("pairs.jsonl:3") && e.contains("identical"),
        "{e}"
    );
    let e = err(&format!("{ok}\n{{\"prompt\": \"p\", \"chosen\": \"a\"}}\n"));
    assert!(e.contains(":2") && e.contains("no `rejected` field"), "{e}");
    let e = err(&format!(
        "{ok}\n{{\"prompt\": \"p\", \"chosen\": 3, \"rejected\": \"b\"}}\n"
    ));
    assert!(e.contains(":2") && e.contains("must be a string"), "{e}");
    let e = err("{oops\n");
    assert!(e.contains(":1") && e.contains("invalid JSON"), "{e}");
    let e = err("\n\n");
    assert!(e.contains("no preference pairs"), "{e}");
    let e = load_pairs(Path::new("/nonexistent/p.jsonl"), &PairFields::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/p.jsonl"), "{e}");

    // Mapped, nested fields and line numbers that skip blank lines.
    write("\n{\"q\": \"p\", \"r\": {\"good\": \"a\", \"bad\": \"\"}}\n");
    let fields = PairFields {
        prompt: "q".into(),
        chosen: "r.good".into(),
        rejected: "r.bad".into(),
    };
    let read = load_pairs(&path, &fields).unwrap();
    assert_eq!((read[0].line, read[0].rejected.as_str()), (2, ""));

    let labels = dir.path().join("labels.jsonl");
    std::fs::write(
        &labels,
        "{\"prompt\": \"p\", \"response\": \"r\", \"safe\": true}\n{\"prompt\": \"p\", \"response\": \"r\", \"safe\": 3}\n",
    )
    .unwrap();
    let e = load_labels(&labels, &LabelFields::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("labels.jsonl:2") && e.contains("[0, 1]"), "{e}");
}

/// A Parquet file of optional UTF-8 string columns, one row per entry of `rows`.
fn write_parquet(path: &Path, columns: &[&str], rows: &[Vec<Option<&str>>]) {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;
    let fields: String = columns
        .iter()
        .map(|c| format!("OPTIONAL BYTE_ARRAY {c} (UTF8); "))
        .collect();
    let schema = Arc::new(parse_message_type(&format!("message pair {{ {fields}}}")).unwrap());
    let file = std::fs::File::create(path).unwrap();
    let mut writer =
        SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build()))
            .unwrap();
    let mut group = writer.next_row_group().unwrap();
    for c in 0..columns.len() {
        let values: Vec<ByteArray> = rows
            .iter()
            .filter_map(|r| r[c])
            .map(ByteArray::from)
            .collect();
        let levels: Vec<i16> = rows.iter().map(|r| i16::from(r[c].is_some())).collect();
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&values, Some(&levels), None)
            .unwrap();
        col.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

#[test]
fn preference_pairs_and_prompts_read_from_parquet_and_bad_rows_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.parquet");
    let columns = ["prompt", "chosen", "rejected"];
    write_parquet(
        &path,
        &columns,
        &[
            vec![Some("greet Bo"), Some("Thanks, Bo!"), Some("Go away.")],
            vec![Some("greet Cy"), Some("Thanks, Cy!"), Some("")],
        ],
    );
    let pairs = load_pairs(&path, &PairFields::default()).unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(
        (
            pairs[1].prompt.as_str(),
            pairs[1].chosen.as_str(),
            pairs[1].rejected.as_str(),
            pairs[1].line
        ),
        ("greet Cy", "Thanks, Cy!", "", 2)
    );
    // The general prompts of the preference stage read from the same file.
    let prompts = r1_actors::data::load_prompts(&path, "prompt").unwrap();
    assert_eq!(prompts, ["greet Bo", "greet Cy"]);

    write_parquet(
        &path,
        &columns,
        &[
            vec![Some("p"), Some("a"), Some("b")],
            vec![Some("p"), Some("same"), Some("same")],
        ],
    );
    let e = load_pairs(&path, &PairFields::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pairs.parquet: row 2") && e.contains("identical"),
        "{e}"
    );
    write_parquet(
        &path,
        &columns,
        &[
            vec![Some("p"), Some("a"), Some("b")],
            vec![Some("p"), None, Some("b")],
        ],
    );
    let e = load_pairs(&path, &PairFields::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("row 2") && e.contains("no `chosen` field"),
        "{e}"
    );
    std::fs::write(&path, b"not parquet at all").unwrap();
    let e = load_pairs(&path, &PairFields::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a readable Parquet file"), "{e}");
}

#[test]
fn over_long_texts_keep_their_end_or_are_refused() {
    let what = || "line 7".to_string();
    let keep = encoder(8, OverLong::KeepEnd);
    let ids = keep.encode("a long prompt", "the end", &what).unwrap();
    // 20 tokens cut to 8: the prompt's last byte and the whole response.
    assert_eq!(ids, ByteTokenizer.encode("tthe end", false));
    let refuse = encoder(8, OverLong::Error);
    let e = refuse
        .encode("a long prompt", "the end", &what)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 7") && e.contains("20 tokens") && e.contains("8"),
        "{e}"
    );

    // Training refuses a too-long pair by its line number.
    let data = RewardData::Pairs(vec![PreferencePair {
        prompt: "x".repeat(50),
        chosen: "a".into(),
        rejected: "b".into(),
        line: 12,
    }]);
    let e = train_reward_model(
        tiny_rm(4),
        &encoder(16, OverLong::Error),
        &data,
        &RewardData::Pairs(Vec::new()),
        &config(1),
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 12 (chosen)"), "{e}");
}
