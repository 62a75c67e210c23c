//! A Hugging Face model directory's tokenizer: `tokenizer.json` through the `tokenizers` crate, plus
//! the special ids that the vocabulary file alone does not say. Hugging Face spreads those over three
//! files, and models disagree about which one is right:
//! - `tokenizer_config.json`: `eos_token` / `bos_token`, as strings (or `{"content": ...}` objects);
//! - `generation_config.json`: `eos_token_id` / `bos_token_id`, an id or a list of ids (Qwen2.5-Instruct
//!   stops on both `<|im_end|>` and `<|endoftext|>`; Llama 3 Instruct on `<|end_of_text|>` and
//!   `<|eot_id|>`);
//! - `config.json`: the same keys, what the model was trained with.
//!
//! r1 stops a generation on the union of all of them (stopping on any id some file calls eos is never
//! wrong), tokenizer_config.json's first; the bos id comes from the first file that names one.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Result, TokenizerError};

/// A loaded `tokenizer.json` with its eos and bos ids resolved.
#[derive(Debug, Clone)]
pub struct HfTokenizer {
    /// The Hugging Face tokenizer that does the work.
    inner: tokenizers::Tokenizer,
    /// Every id that ends a generation, deduplicated, never empty.
    eos_ids: Vec<u32>,
    /// The beginning-of-sequence id, when the model has one.
    bos_id: Option<u32>,
    /// `known[id]`: whether `id` is a token. The tokenizers crate silently skips unknown ids when
    /// decoding; r1 reports them instead, and a vocabulary may have holes.
    known: Vec<bool>,
}

/// The largest token id a tokenizer.json may use: far above every real vocabulary (the largest
/// have about 260k tokens) and small enough that a per-id table stays a few megabytes.
pub const MAX_TOKEN_ID: u32 = (1 << 24) - 1;

impl HfTokenizer {
    /// Loads `dir/tokenizer.json` and resolves eos/bos from `tokenizer_config.json`,
    /// `generation_config.json` and `config.json` in `dir` (each optional; at least one must name an
    /// eos). Errors name the file and key that is missing or wrong.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        let bytes = std::fs::read(&path).map_err(|source| TokenizerError::Io {
            path: path.clone(),
            source,
        })?;
        // The tokenizers crate panics ("Helper") on a JSON syntax error inside `decoder` instead of
        // returning an error (found by fuzzing), so the syntax is checked first; a panic of the
        // crate on anything else still becomes an error naming the file.
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|e| {
            TokenizerError::Parse {
                path: path.clone(),
                message: e.to_string(),
            }
        })?;
        let parsed = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(&bytes))
            .map_err(|panic| TokenizerError::Parse {
                path: path.clone(),
                message: format!(
                    "the tokenizers crate failed on it: {}",
                    panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default()
                ),
            })?;
        let inner = parsed.map_err(|e| TokenizerError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        check_added_token_ids(&inner, &bytes, &path)?;
        let vocab = inner.get_vocab(true);
        // `known` below has one entry per id up to the largest: an id like 2^31 would ask for
        // gigabytes (found by fuzzing), so ids past any real vocabulary are refused.
        if let Some((token, &id)) = vocab.iter().max_by_key(|(_, &id)| id) {
            if id > MAX_TOKEN_ID {
                return Err(TokenizerError::Parse {
                    path: path.clone(),
                    message: format!(
                        "token `{token}` has id {id}; r1 reads vocabularies of at most {} ids",
                        MAX_TOKEN_ID as usize + 1
                    ),
                });
            }
        }
        let size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        let mut known = vec![false; size];
        for &id in vocab.values() {
            known[id as usize] = true;
        }
        let mut tokenizer = HfTokenizer {
            inner,
            eos_ids: Vec::new(),
            bos_id: None,
            known,
        };
        tokenizer.resolve_special_ids(dir)?;
        tracing::debug!(
            path = %path.display(),
            vocab_size = tokenizer.vocab_size(),
            eos = ?tokenizer.eos_ids,
            bos = ?tokenizer.bos_id,
            "loaded tokenizer"
        );
        Ok(tokenizer)
    }

    /// Fills `eos_ids` and `bos_id` from the three config files of `dir`.
    fn resolve_special_ids(&mut self, dir: &Path) -> Result<()> {
        let mut eos = Vec::new();
        let mut bos = None;

        let path = dir.join("tokenizer_config.json");
        if let Some(config) = read_optional_json(&path)? {
            if let Some(id) = self.token_setting(&config, &path, "eos_token")? {
                eos.push(id);
            }
            bos = self.token_setting(&config, &path, "bos_token")?;
        }
        for name in ["generation_config.json", "config.json"] {
            let path = dir.join(name);
            let Some(config) = read_optional_json(&path)? else {
                continue;
            };
            eos.extend(self.id_setting(&config, &path, "eos_token_id")?);
            if bos.is_none() {
                bos = match self.id_setting(&config, &path, "bos_token_id")?.as_slice() {
                    [] => None,
                    [id] => Some(*id),
                    more => {
                        return Err(config_error(
                            &path,
                            "bos_token_id",
                            format!("expected one id, found {} ids", more.len()),
                        ))
                    }
                };
            }
        }

        let mut seen = Vec::with_capacity(eos.len());
        for id in eos {
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
        if seen.is_empty() {
            return Err(TokenizerError::NoEos {
                dir: dir.to_path_buf(),
            });
        }
        self.eos_ids = seen;
        self.bos_id = bos;
        Ok(())
    }

    /// A token given by its string in tokenizer_config.json (`"eos_token": "<|im_end|>"`, or the older
    /// `{"content": "<|im_end|>", ...}` form), as an id. `null` or absent: `None`.
    fn token_setting(&self, config: &Value, path: &Path, key: &str) -> Result<Option<u32>> {
        let token = match config.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(o)) => match o.get("content") {
                Some(Value::String(s)) => s.as_str(),
                _ => {
                    return Err(config_error(
                        path,
                        key,
                        "an object here needs a string `content`".into(),
                    ))
                }
            },
            Some(other) => {
                return Err(config_error(
                    path,
                    key,
                    format!("expected a token string, found {other}"),
                ))
            }
        };
        self.inner.token_to_id(token).map(Some).ok_or_else(|| {
            config_error(
                path,
                key,
                format!("`{token}` is not a token of tokenizer.json"),
            )
        })
    }

    /// Ids given as a number or a list of numbers (`"eos_token_id": [151645, 151643]`), each checked
    /// against the vocabulary. `null` or absent: empty.
    fn id_setting(&self, config: &Value, path: &Path, key: &str) -> Result<Vec<u32>> {
        let values = match config.get(key) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().collect(),
            Some(one) => vec![one],
        };
        values
            .into_iter()
            .map(|value| {
                let id = value
                    .as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| {
                        config_error(path, key, format!("expected a token id, found {value}"))
                    })?;
                if self.is_known(id) {
                    Ok(id)
                } else {
                    Err(config_error(
                        path,
                        key,
                        format!(
                            "id {id} is not in tokenizer.json's vocabulary ({} ids)",
                            self.vocab_size()
                        ),
                    ))
                }
            })
            .collect()
    }

    /// Whether `id` is a token of the vocabulary.
    fn is_known(&self, id: u32) -> bool {
        self.known.get(id as usize).copied().unwrap_or(false)
    }

    /// Text to ids; special tokens in the text are parsed as single ids; `add_special_tokens` runs
    /// tokenizer.json's post-processor (which may add a BOS, or nothing: the Qwen and original Llama 3
    /// files add nothing).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Ids to text. Every id is checked first: the tokenizers crate would silently drop unknown ones.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(&id) = ids.iter().find(|&&id| !self.is_known(id)) {
            return Err(TokenizerError::UnknownId {
                id,
                vocab_size: self.vocab_size(),
            });
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// Every id that ends a generation (see the module docs for where they come from).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The beginning-of-sequence id, if any file names one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The id of a vocabulary string (an added token like `<think>`, or a byte-level BPE token
    /// string like `Ġthe`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// One more than the largest id in the vocabulary (added tokens included). Often smaller than
    /// the model's `vocab_size`, whose extra embedding rows are padding.
    pub fn vocab_size(&self) -> usize {
        self.known.len()
    }

    /// The underlying Hugging Face tokenizer, for what this wrapper does not expose (offsets, batch
    /// encoding).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The `tokenizers` crate numbers added tokens itself (the model's vocabulary size, then onwards)
/// and only logs a warning when tokenizer.json says otherwise. A file whose added-token ids do not
/// follow that rule would then encode to ids the model was not trained with, silently; refuse it.
fn check_added_token_ids(inner: &tokenizers::Tokenizer, bytes: &[u8], path: &Path) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        added_tokens: Vec<AddedToken>,
    }
    #[derive(serde::Deserialize)]
    struct AddedToken {
        id: u32,
        content: String,
    }
    let file: File = serde_json::from_slice(bytes).map_err(|e| TokenizerError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    for token in file.added_tokens {
        let assigned = inner.token_to_id(&token.content);
        if assigned != Some(token.id) {
            return Err(TokenizerError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "added token `{}` has id {} in the file but the tokenizers crate numbers it {}",
                    token.content,
                    token.id,
                    assigned.map_or("nothing".to_string(), |id| id.to_string())
                ),
            });
        }
    }
    Ok(())
}

/// Reads a JSON file that a model directory may or may not have: absent ⇒ `None`; unreadable for
/// another reason or invalid ⇒ an error naming it.
fn read_optional_json(path: &Path) -> Result<Option<Value>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TokenizerError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| TokenizerError::Json {
            path: path.to_path_buf(),
            source,
        })
}

fn config_error(path: &Path, key: &str, message: String) -> TokenizerError {
    TokenizerError::Config {
        path: PathBuf::from(path),
        key: key.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer.json small enough to write by hand: loads in microseconds, so the
    /// config-resolution rules are tested without the 10 MB real files.
    const TINY_TOKENIZER: &str = r#"{
      "version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [
        {"id": 4, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
         "normalized": false, "special": true},
        {"id": 5, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false,
         "normalized": false, "special": true},
        {"id": 6, "content": "<|eot|>", "single_word": false, "lstrip": false, "rstrip": false,
         "normalized": false, "special": true}
      ],
      "normalizer": null,
      "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": null,
      "decoder": null,
      "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1, "world": 2, "!": 3},
                "unk_token": "[UNK]"}
    }"#;

    fn model_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn eos_is_the_union_of_all_three_files_and_bos_the_first_named() {
        let dir = model_dir(&[
            ("tokenizer.json", TINY_TOKENIZER),
            (
                "tokenizer_config.json",
                r#"{"eos_token": {"content": "</s>"}, "bos_token": null}"#,
            ),
            (
                "generation_config.json",
                r#"{"eos_token_id": [6, 5], "bos_token_id": 4}"#,
            ),
            ("config.json", r#"{"eos_token_id": 2, "bos_token_id": 1}"#),
        ]);
        let t = HfTokenizer::from_model_dir(dir.path()).unwrap();
        assert_eq!(t.eos_ids(), &[5, 6, 2]);
        assert_eq!(t.bos_id(), Some(4));
        assert_eq!(t.vocab_size(), 7);
        assert_eq!(t.encode("hello <|eot|> world", false).unwrap(), [1, 6, 2]);
        // With no decoder in the file, the crate joins tokens with spaces.
        assert_eq!(t.decode(&[1, 6, 2], false).unwrap(), "hello <|eot|> world");
        assert_eq!(t.decode(&[1, 6, 2], true).unwrap(), "hello world");
        assert_eq!(t.token_id("<|eot|>"), Some(6));
        assert_eq!(t.token_id("nope"), None);
        for id in [7, 100, u32::MAX] {
            assert!(
                matches!(t.decode(&[1, id], false), Err(TokenizerError::UnknownId { id: got, vocab_size: 7 }) if got == id),
                "id {id}"
            );
        }
    }

    /// Found by fuzzing (tests/fuzz/corpus/tokenizer/regress-*): a JSON syntax error inside
    /// `decoder` panicked in the tokenizers crate ("Helper"), and a vocabulary id of 2^31 aborted
    /// the process allocating a 2 GB table. Both are now errors naming tokenizer.json.
    #[test]
    fn a_broken_decoder_and_a_huge_id_are_errors_not_crashes() {
        let eos = ("tokenizer_config.json", r#"{"eos_token": "</s>"}"#);
        let broken = TINY_TOKENIZER.replace(
            r#""decoder": null"#,
            r#""decoder": {"type": "ByteLevel", [[["use_regex": true}"#,
        );
        let huge = TINY_TOKENIZER.replace(r#""world": 2"#, r#""world": 2147483648"#);
        for (text, expected) in [
            (&broken, "tokenizer.json: not a valid tokenizer.json"),
            (
                &huge,
                "token `world` has id 2147483648; r1 reads vocabularies of at most 16777216 ids",
            ),
        ] {
            assert_ne!(text, TINY_TOKENIZER);
            let dir = model_dir(&[("tokenizer.json", text), eos]);
            let message = HfTokenizer::from_model_dir(dir.path())
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn added_token_ids_the_crate_would_renumber_are_refused() {
        // `<|eot|>` at id 9 leaves a hole after `</s>` (5); the crate would silently make it 6.
        let holey = TINY_TOKENIZER.replace(
            r#""id": 6, "content": "<|eot|>""#,
            r#""id": 9, "content": "<|eot|>""#,
        );
        assert_ne!(holey, TINY_TOKENIZER);
        let dir = model_dir(&[
            ("tokenizer.json", &holey),
            ("config.json", r#"{"eos_token_id": 5}"#),
        ]);
        let err = HfTokenizer::from_model_dir(dir.path()).unwrap_err();
        assert!(matches!(err, TokenizerError::Parse { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("tokenizer.json") && message.contains("<|eot|>"),
            "{message}"
        );
    }

    #[test]
    fn config_files_are_optional_but_eos_is_not() {
        let dir = model_dir(&[
            ("tokenizer.json", TINY_TOKENIZER),
            ("config.json", r#"{"eos_token_id": 5}"#),
        ]);
        let t = HfTokenizer::from_model_dir(dir.path()).unwrap();
        assert_eq!((t.eos_ids(), t.bos_id()), (&[5][..], None));

        let dir = model_dir(&[
            ("tokenizer.json", TINY_TOKENIZER),
            ("config.json", r#"{"eos_token_id": null}"#),
        ]);
        let err = HfTokenizer::from_model_dir(dir.path()).unwrap_err();
        assert!(matches!(err, TokenizerError::NoEos { .. }), "{err}");
        assert!(err.to_string().contains("eos_token"), "{err}");
    }

    #[test]
    fn missing_and_corrupt_files_are_named() {
        let dir = model_dir(&[("config.json", r#"{"eos_token_id": 5}"#)]);
        let err = HfTokenizer::from_model_dir(dir.path()).unwrap_err();
        assert!(matches!(err, TokenizerError::Io { .. }), "{err}");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");

        for corrupt in ["", "{", "{\"model\": 3}", &TINY_TOKENIZER[..200]] {
            let dir = model_dir(&[("tokenizer.json", corrupt)]);
            let err = HfTokenizer::from_model_dir(dir.path()).unwrap_err();
            assert!(matches!(err, TokenizerError::Parse { .. }), "{err}");
            assert!(err.to_string().contains("tokenizer.json"), "{err}");
        }

        let dir = model_dir(&[
            ("tokenizer.json", TINY_TOKENIZER),
            ("generation_config.json", "{\"eos_token_id\": "),
        ]);
        let err = HfTokenizer::from_model_dir(dir.path()).unwrap_err();
        assert!(matches!(err, TokenizerError::Json { .. }), "{err}");
        assert!(err.to_string().contains("generation_config.json"), "{err}");
    }

    #[test]
    fn bad_config_values_name_file_and_key() {
        let cases = [
            (
                "tokenizer_config.json",
                r#"{"eos_token": "<|nope|>"}"#,
                "eos_token",
            ),
            ("tokenizer_config.json", r#"{"eos_token": 5}"#, "eos_token"),
            (
                "tokenizer_config.json",
                r#"{"bos_token": {"x": 1}}"#,
                "bos_token",
            ),
            (
                "generation_config.json",
                r#"{"eos_token_id": 7}"#,
                "eos_token_id",
            ),
            (
                "generation_config.json",
                r#"{"eos_token_id": [5, -1]}"#,
                "eos_token_id",
            ),
            ("config.json", r#"{"eos_token_id": "5"}"#, "eos_token_id"),
            (
                "config.json",
                r#"{"eos_token_id": 5, "bos_token_id": [4, 5]}"#,
                "bos_token_id",
            ),
        ];
        for (file, text, key) in cases {
            let dir = model_dir(&[("tokenizer.json", TINY_TOKENIZER), (file, text)]);
            match HfTokenizer::from_model_dir(dir.path()) {
                Err(err @ TokenizerError::Config { .. }) => {
                    let message = err.to_string();
                    assert!(message.contains(file), "{message}");
                    assert!(message.contains(&format!("`{key}`")), "{message}");
                }
                other => panic!("{file} {text}: expected a config error, got {other:?}"),
            }
        }
    }
}
