//! The one place that decides which tokenizer a model directory is read with.
//!
//! A job config, a daemon run and `r1ctl rm` all name a model directory and, optionally, a built-in
//! tokenizer (`"byte"`). Without a name, the directory decides: its `tokenizer.json` when there is
//! one; otherwise r1's byte tokenizer when `config.json`'s `vocab_size` is the byte vocabulary (the
//! tiny models r1 trains itself write no tokenizer.json); otherwise an error that says what to set.

use std::path::Path;

use super::{ByteTokenizer, Result, Tokenizer, TokenizerError};

/// The tokenizer of `model_dir`: `name` when it is a built-in one (`"byte"`), else the directory's
/// `tokenizer.json`, else the byte tokenizer when `config.json` says the model has the byte
/// vocabulary. Errors name the unknown tokenizer, or the directory and what is missing.
pub fn resolve(model_dir: &Path, name: Option<&str>) -> Result<Tokenizer> {
    match name {
        Some("byte") => return Ok(Tokenizer::byte()),
        Some(other) => {
            return Err(TokenizerError::NotBuiltIn {
                name: other.to_string(),
            })
        }
        None => {}
    }
    if model_dir.join("tokenizer.json").exists() {
        return Tokenizer::from_model_dir(model_dir);
    }
    let config_path = model_dir.join("config.json");
    let vocab_size = match std::fs::read(&config_path) {
        Ok(bytes) => {
            let config: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|source| TokenizerError::Json {
                    path: config_path.clone(),
                    source,
                })?;
            config.get("vocab_size").and_then(serde_json::Value::as_u64)
        }
        Err(_) => None,
    };
    if vocab_size == Some(ByteTokenizer::VOCAB_SIZE as u64) {
        return Ok(Tokenizer::byte());
    }
    Err(TokenizerError::NoTokenizer {
        dir: model_dir.to_path_buf(),
        vocab_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_config(vocab_size: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(
            dir.path().join("config.json"),
            format!("{{\"vocab_size\": {vocab_size}}}"),
        )
        .expect("writes config.json");
        dir
    }

    #[test]
    fn a_byte_vocabulary_without_tokenizer_json_is_the_byte_tokenizer() {
        let dir = dir_with_config(ByteTokenizer::VOCAB_SIZE);
        let tokenizer = resolve(dir.path(), None).expect("inferred");
        assert!(matches!(tokenizer, Tokenizer::Byte(_)));
    }

    #[test]
    fn a_named_built_in_wins_and_an_unknown_name_is_an_error() {
        let dir = dir_with_config(32_000);
        assert!(matches!(
            resolve(dir.path(), Some("byte")).expect("named"),
            Tokenizer::Byte(_)
        ));
        let error = resolve(dir.path(), Some("sentencepiece")).unwrap_err();
        assert!(error.to_string().contains("`sentencepiece`"), "{error}");
    }

    #[test]
    fn another_vocabulary_without_tokenizer_json_names_the_directory() {
        let dir = dir_with_config(32_000);
        let error = resolve(dir.path(), None).unwrap_err().to_string();
        assert!(
            error.contains(&dir.path().display().to_string())
                && error.contains("tokenizer.json")
                && error.contains("32000"),
            "{error}"
        );
        let empty = tempfile::tempdir().expect("a temp dir");
        let error = resolve(empty.path(), None).unwrap_err().to_string();
        assert!(error.contains("tokenizer.json"), "{error}");
    }

    #[test]
    fn tokenizer_json_is_read_when_present() {
        let dir = dir_with_config(ByteTokenizer::VOCAB_SIZE);
        std::fs::write(dir.path().join("tokenizer.json"), "{").expect("writes");
        let error = resolve(dir.path(), None).unwrap_err();
        assert!(matches!(error, TokenizerError::Parse { .. }), "{error}");
    }
}
