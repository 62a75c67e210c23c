//! The tokenizers and prompt templates against Hugging Face references
//! (../shared/fixtures/tokenizers): the ids the Python `tokenizers` library gives for the fixture
//! texts, decode round trips, streaming decode on every prefix, and chat templates tokenized with their
//! special tokens as single ids. Each real tokenizer loads once (about 0.3 s) for the whole file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use r1_kernels::template::{Message, PromptTemplate, TemplateError};
use r1_kernels::tokenizer::{Tokenizer, TokenizerError};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    std::env::var_os("R1_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

fn load(name: &str) -> Tokenizer {
    let dir = fixtures().join("tokenizers").join(name);
    Tokenizer::from_model_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
}

fn qwen3() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| load("qwen3"))
}

fn llama3() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| load("llama3"))
}

fn tokenizer(name: &str) -> &'static Tokenizer {
    match name {
        "qwen3" => qwen3(),
        "llama3" => llama3(),
        other => panic!("no fixture tokenizer {other}"),
    }
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

/// cases.json: for each tokenizer, texts and the ids Hugging Face gives them (no special tokens
/// added).
fn cases(name: &str) -> Vec<Case> {
    static CASES: OnceLock<serde_json::Value> = OnceLock::new();
    let all = CASES.get_or_init(|| {
        let path = fixtures().join("tokenizers/cases.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    });
    let cases: Vec<Case> = serde_json::from_value(all[name].clone()).unwrap();
    assert!(
        cases.len() >= 5,
        "{name}: fixture has {} cases",
        cases.len()
    );
    cases
}

const MODELS: [&str; 2] = ["qwen3", "llama3"];

#[test]
fn encoding_matches_hugging_face_ids() {
    for name in MODELS {
        let t = tokenizer(name);
        for case in cases(name) {
            assert_eq!(
                t.encode(&case.text, false).unwrap(),
                case.ids,
                "{name}: {:?}",
                case.text
            );
        }
    }
}

#[test]
fn decode_inverts_encode() {
    for name in MODELS {
        let t = tokenizer(name);
        for case in cases(name) {
            assert_eq!(
                t.decode(&case.ids, false).unwrap(),
                case.text,
                "{name}: {:?}",
                case.ids
            );
        }
    }
}

/// Feeds `ids` through a `DecodeStream`: after every id the streamed text must be the full decode of
/// the prefix (or a prefix of it while that decode ends in an incomplete character), and a fresh
/// stream over each prefix plus `finish` must give exactly the full decode.
fn check_stream(t: &Tokenizer, ids: &[u32], skip_special: bool, label: &str) {
    let mut stream = t.decode_stream(skip_special);
    let mut emitted = String::new();
    for k in 1..=ids.len() {
        if let Some(piece) = stream.step(ids[k - 1]).unwrap() {
            emitted.push_str(&piece);
        }
        let full = t.decode(&ids[..k], skip_special).unwrap();
        if full.ends_with('\u{FFFD}') {
            assert!(
                full.starts_with(&emitted),
                "{label}, {k} ids: {emitted:?} vs {full:?}"
            );
        } else {
            assert_eq!(emitted, full, "{label}, {k} ids");
        }
        let mut fresh = t.decode_stream(skip_special);
        let mut streamed = String::new();
        for &id in &ids[..k] {
            streamed.extend(fresh.step(id).unwrap());
        }
        streamed.push_str(&fresh.finish().unwrap());
        assert_eq!(streamed, full, "{label}, {k} ids, flushed");
    }
    assert_eq!(stream.text(), emitted);
}

#[test]
fn streaming_decode_equals_full_decode_on_every_prefix() {
    for name in MODELS {
        let t = tokenizer(name);
        for case in cases(name) {
            check_stream(t, &case.ids, false, &format!("{name} {:?}", case.text));
        }
    }
    // Qwen3 splits " 🤖" over three byte-level tokens: nothing may come out until the third.
    let robot = qwen3().encode(" 🤖", false).unwrap();
    assert_eq!(robot, [11162, 97, 244]);
    let mut stream = qwen3().decode_stream(false);
    assert_eq!(stream.step(robot[0]).unwrap(), None);
    assert_eq!(stream.step(robot[1]).unwrap(), None);
    assert_eq!(stream.step(robot[2]).unwrap().as_deref(), Some(" 🤖"));
}

#[test]
fn streaming_survives_random_ids() {
    // Random ids are mostly broken UTF-8 across token boundaries: the hardest input for the stream.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for name in MODELS {
        let t = tokenizer(name);
        let vocab = t.vocab_size() as u64;
        let ids: Vec<u32> = (0..120)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % vocab) as u32
            })
            .collect();
        check_stream(t, &ids, false, &format!("{name} random"));
        check_stream(t, &ids, true, &format!("{name} random, skip special"));
    }
}

#[test]
fn special_ids_come_from_the_config_files() {
    let q = qwen3();
    assert_eq!(
        q.eos_ids(),
        &[151645],
        "tokenizer_config.json eos_token <|im_end|>"
    );
    assert_eq!(q.bos_id(), None);
    assert_eq!(q.vocab_size(), 151_669);
    assert_eq!(q.token_id("<|im_start|>"), Some(151_644));
    assert_eq!(q.token_id("<think>"), Some(151_667));
    assert_eq!(q.token_id("</think>"), Some(151_668));

    let l = llama3();
    assert_eq!(l.eos_ids(), &[128_001]);
    assert_eq!(l.bos_id(), Some(128_000));
    assert_eq!(l.vocab_size(), 128_256);
    assert_eq!(l.token_id("<|eot_id|>"), Some(128_009));
    assert_eq!(l.token_id("<think>"), None);
}

#[test]
fn ids_outside_the_vocabulary_are_errors() {
    for name in MODELS {
        let t = tokenizer(name);
        let size = t.vocab_size() as u32;
        // Qwen models have 151,936 embedding rows for 151,669 tokens: the padding rows are not tokens.
        for id in [size, size + 267, u32::MAX] {
            match t.decode(&[9, id], false) {
                Err(TokenizerError::UnknownId {
                    id: got,
                    vocab_size,
                }) => {
                    assert_eq!((got, vocab_size), (id, t.vocab_size()), "{name}");
                }
                other => panic!("{name}, id {id}: expected UnknownId, got {other:?}"),
            }
            let mut stream = t.decode_stream(false);
            assert!(stream.step(id).is_err(), "{name}, id {id}");
        }
        assert_eq!(t.decode(&[], false).unwrap(), "");
    }
}

#[test]
fn missing_tokenizer_json_names_the_file() {
    let dir = fixtures().join("tokenizers/no-such-model");
    let err = Tokenizer::from_model_dir(&dir).unwrap_err();
    assert!(matches!(err, TokenizerError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("no-such-model/tokenizer.json"),
        "{err}"
    );
}

/// Conversations, rendered, and the ids `transformers` gives for
/// `tokenizer.encode(apply_chat_template(conversation, tokenize=False, add_generation_prompt=True),
/// add_special_tokens=False)` with the fixture tokenizers.
fn template_cases() -> Vec<(Vec<Message>, [Vec<u32>; 2])> {
    vec![
        (
            vec![Message::user("What is 2+2?")],
            [
                vec![
                    151644, 872, 198, 3838, 374, 220, 17, 10, 17, 30, 151645, 198, 151644, 77091,
                    198,
                ],
                vec![
                    128000, 128006, 882, 128007, 271, 3923, 374, 220, 17, 10, 17, 30, 128009,
                    128006, 78191, 128007, 271,
                ],
            ],
        ),
        (
            vec![
                Message::system("Be brief."),
                Message::user("Hi"),
                Message::assistant("Hello! How can I help?"),
                Message::user("Ünïcödé 🤖 17 * 24?"),
            ],
            [
                vec![
                    151644, 8948, 198, 3430, 9814, 13, 151645, 198, 151644, 872, 198, 13048,
                    151645, 198, 151644, 77091, 198, 9707, 0, 2585, 646, 358, 1492, 30, 151645,
                    198, 151644, 872, 198, 52491, 77, 37572, 66, 2956, 128505, 11162, 97, 244, 220,
                    16, 22, 353, 220, 17, 19, 30, 151645, 198, 151644, 77091, 198,
                ],
                vec![
                    128000, 128006, 9125, 128007, 271, 3513, 10015, 13, 128009, 128006, 882,
                    128007, 271, 13347, 128009, 128006, 78191, 128007, 271, 9906, 0, 2650, 649,
                    358, 1520, 30, 128009, 128006, 882, 128007, 271, 53591, 77, 38672, 66, 3029,
                    67, 978, 11410, 97, 244, 220, 1114, 353, 220, 1187, 30, 128009, 128006, 78191,
                    128007, 271,
                ],
            ],
        ),
        (
            vec![Message::user("  padded question \n")],
            [
                vec![
                    151644, 872, 198, 220, 43868, 3405, 715, 151645, 198, 151644, 77091, 198,
                ],
                vec![
                    128000, 128006, 882, 128007, 271, 79, 17249, 3488, 128009, 128006, 78191,
                    128007, 271,
                ],
            ],
        ),
    ]
}

#[test]
fn chat_templates_tokenize_to_the_reference_ids() {
    let pairs = [("chatml", qwen3()), ("llama3", llama3())];
    for (messages, expected) in template_cases() {
        for ((name, t), expected) in pairs.iter().zip(expected) {
            let template: PromptTemplate = name.parse().unwrap();
            template.check_tokenizer(t).unwrap();
            let rendered = template.render(&messages, true).unwrap();
            let ids = rendered.encode(t).unwrap();
            assert_eq!(ids, expected, "{name}: {:?}", rendered.text);
            assert_eq!(t.decode(&ids, false).unwrap(), rendered.text, "{name}");
            check_stream(t, &ids, false, name);
            check_stream(t, &ids, true, name);
        }
    }
}

#[test]
fn reasoning_prefill_is_one_think_token_on_qwen3() {
    let template: PromptTemplate = "chatml+reasoning".parse().unwrap();
    let rendered = template.render_prompt("What is 2+2?");
    assert!(rendered.prefilled_think);
    let ids = rendered.encode(qwen3()).unwrap();
    assert_eq!(ids[ids.len() - 5..], [151644, 77091, 198, 151667, 198]);
    // Skipping special tokens drops the ChatML markers; Qwen3 marks `<think>` as an added token that
    // is not special, so the pre-fill stays (the format reward sees it either way).
    assert_eq!(
        qwen3().decode(&ids, true).unwrap(),
        "user\nWhat is 2+2?\nassistant\n<think>\n"
    );
}

#[test]
fn templates_refuse_tokenizers_without_their_special_tokens() {
    let chatml: PromptTemplate = "chatml".parse().unwrap();
    assert_eq!(
        chatml.check_tokenizer(llama3()),
        Err(TemplateError::MissingToken {
            template: chatml,
            token: "<|im_start|>"
        })
    );
    let llama: PromptTemplate = "llama3".parse().unwrap();
    assert!(matches!(
        llama.check_tokenizer(qwen3()),
        Err(TemplateError::MissingToken { .. })
    ));
    let r1_zero: PromptTemplate = "r1_zero".parse().unwrap();
    for t in [qwen3(), llama3()] {
        assert_eq!(r1_zero.check_tokenizer(t), Ok(()));
    }
    // The end-of-turn tokens a sampler adds to its stop ids exist as single ids.
    assert_eq!(
        chatml.end_of_turn().and_then(|s| qwen3().token_id(s)),
        Some(151_645)
    );
    assert_eq!(
        llama.end_of_turn().and_then(|s| llama3().token_id(s)),
        Some(128_009)
    );
}

#[test]
fn r1_zero_prompt_round_trips_through_both_tokenizers() {
    let rendered = "r1_zero"
        .parse::<PromptTemplate>()
        .unwrap()
        .render_prompt("Solve 17 * 24.");
    for name in MODELS {
        let t = tokenizer(name);
        let ids = rendered.encode(t).unwrap();
        assert_eq!(t.decode(&ids, false).unwrap(), rendered.text, "{name}");
    }
    // Qwen3's vocabulary has <think> as a special token, so the preamble's tag names become those ids.
    let ids = rendered.encode(qwen3()).unwrap();
    assert!(ids.contains(&151_667) && ids.contains(&151_668));
}
