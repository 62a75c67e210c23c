//! The tokenizer a GGUF carries (`tokenizer.ggml.*`), rebuilt as a Hugging Face `tokenizer.json` and
//! `tokenizer_config.json`, so an imported model needs no other file.
//!
//! Only GPT-2 style byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is rebuilt: vocabulary from
//! `tokens`, merges from `merges`, control tokens (`token_type` 3) and user-defined tokens (4) as added
//! tokens so they are matched whole in text. The pre-tokenizer follows `tokenizer.ggml.pre` the way
//! llama.cpp does: `smollm` splits every digit on its own before the GPT-2 regex (as SmolLM's own
//! tokenizer.json does), the `llama3`-like and `qwen2`-like names use their split regexes, anything
//! else the plain GPT-2 regex. SentencePiece vocabularies (`llama`) are refused by name.

use serde_json::{json, Map, Value};

use super::{GgufFile, Result};

/// The ChatML template written when the GGUF carries none (`tokenizer.chat_template`).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Token types of `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Llama 3's split regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The strings of `tokenizer.ggml.tokens`.
fn tokens(gguf: &GgufFile) -> Result<Vec<&str>> {
    let key = "tokenizer.ggml.tokens";
    let items = gguf
        .require(key)?
        .as_array()
        .ok_or_else(|| gguf.metadata_error(key, "expected an array of strings".into()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().ok_or_else(|| {
                gguf.metadata_error(
                    key,
                    format!("item {i} is a {}, not a string", v.type_name()),
                )
            })
        })
        .collect()
}

/// The token string of the id stored at `key`, if the key is present.
fn special_token<'a>(gguf: &GgufFile, tokens: &[&'a str], key: &str) -> Result<Option<&'a str>> {
    gguf.usize_optional(key)?
        .map(|id| {
            tokens.get(id).copied().ok_or_else(|| {
                gguf.metadata_error(
                    key,
                    format!("id {id} is outside the {} tokens", tokens.len()),
                )
            })
        })
        .transpose()
}

/// The pre-tokenizer of `tokenizer.json` for `tokenizer.ggml.pre`.
fn pre_tokenizer(pre: Option<&str>) -> Value {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    match pre {
        Some("smollm") => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        Some("llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" | "dbrx" | "falcon3") => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]})
        }
        Some("qwen2" | "deepseek-r1-qwen" | "megrez") => {
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]})
        }
        _ => byte_level(true),
    }
}

/// A Hugging Face `tokenizer.json` equivalent to the GGUF's tokenizer.
pub fn tokenizer_json(gguf: &GgufFile) -> Result<Value> {
    let model_key = "tokenizer.ggml.model";
    let kind = gguf.str_required(model_key)?;
    if kind != "gpt2" {
        return Err(gguf.metadata_error(
            model_key,
            format!("`{kind}` vocabularies are not supported (r1 rebuilds gpt2 byte-level BPE)"),
        ));
    }
    let tokens = tokens(gguf)?;
    let types_key = "tokenizer.ggml.token_type";
    let types: Vec<i64> = match gguf.get(types_key) {
        None => vec![1; tokens.len()],
        Some(v) => {
            let items = v
                .as_array()
                .filter(|a| a.len() == tokens.len())
                .ok_or_else(|| {
                    gguf.metadata_error(
                        types_key,
                        format!("expected an array of {} token types", tokens.len()),
                    )
                })?;
            items
                .iter()
                .map(|t| {
                    t.as_i64().ok_or_else(|| {
                        gguf.metadata_error(
                            types_key,
                            format!("a {} is not a token type", t.type_name()),
                        )
                    })
                })
                .collect::<Result<_>>()?
        }
    };
    let merges_key = "tokenizer.ggml.merges";
    let merges: Vec<Value> = gguf
        .require(merges_key)?
        .as_array()
        .ok_or_else(|| gguf.metadata_error(merges_key, "expected an array of strings".into()))?
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let pair = m.as_str().and_then(|s| s.split_once(' ')).ok_or_else(|| {
                gguf.metadata_error(
                    merges_key,
                    format!("item {i} is not a \"left right\" string"),
                )
            })?;
            Ok(json!([pair.0, pair.1]))
        })
        .collect::<Result<_>>()?;

    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (&token, &ty)) in tokens.iter().zip(&types).enumerate() {
        if vocab.insert(token.to_string(), id.into()).is_some() {
            return Err(gguf.metadata_error(
                "tokenizer.ggml.tokens",
                format!("token {token:?} appears twice (second at id {id})"),
            ));
        }
        if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": ty != TOKEN_TYPE_CONTROL,
                "special": ty == TOKEN_TYPE_CONTROL,
            }));
        }
    }
    let unk = special_token(gguf, &tokens, "tokenizer.ggml.unknown_token_id")?;
    let pre = gguf.str_optional("tokenizer.ggml.pre")?;
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(pre),
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}

/// A Hugging Face `tokenizer_config.json`: the special tokens by name, whether a BOS is added, and
/// the chat template the GGUF carries (ChatML when it carries none).
pub fn tokenizer_config_json(gguf: &GgufFile) -> Result<Value> {
    let tokens = tokens(gguf)?;
    let token = |key: &str| special_token(gguf, &tokens, key);
    let flag = |key: &str| -> Result<bool> {
        match gguf.get(key) {
            None => Ok(false),
            Some(super::GgufValue::Bool(b)) => Ok(*b),
            Some(v) => {
                Err(gguf.metadata_error(key, format!("expected a bool, found {}", v.type_name())))
            }
        }
    };
    let template = gguf
        .str_optional("tokenizer.chat_template")?
        .unwrap_or(CHATML_TEMPLATE);
    let max_len = gguf.usize_optional("llama.context_length")?;
    Ok(json!({
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": token("tokenizer.ggml.bos_token_id")?,
        "eos_token": token("tokenizer.ggml.eos_token_id")?,
        "unk_token": token("tokenizer.ggml.unknown_token_id")?,
        "pad_token": token("tokenizer.ggml.padding_token_id")?,
        "add_bos_token": flag("tokenizer.ggml.add_bos_token")?,
        "add_eos_token": flag("tokenizer.ggml.add_eos_token")?,
        "clean_up_tokenization_spaces": false,
        "model_max_length": max_len,
        "chat_template": template,
    }))
}
