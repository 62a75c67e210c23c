//! Text ⇄ token ids for every model r1 runs.
//!
//! Two tokenizers sit behind one enum, [`Tokenizer`], so the sampler, the learner and the judges never
//! care which one a run uses:
//! - [`HfTokenizer`]: a real model directory's `tokenizer.json`, read with the Hugging Face `tokenizers`
//!   crate (pure Rust regex backend, no C build), with the end-of-sequence and beginning-of-sequence ids
//!   gathered from `tokenizer_config.json`, `generation_config.json` and `config.json`.
//! - [`ByteTokenizer`]: r1's own byte-level tokenizer for the tiny built-in models: 256 byte tokens and
//!   a few special tokens, nothing to download, vocabulary size [`ByteTokenizer::VOCAB_SIZE`].
//!
//! Both parse special tokens written in the text (`<|im_start|>` in a rendered chat template becomes
//! one id), both reject ids outside their vocabulary with an error instead of skipping or panicking,
//! and both decode incrementally through [`DecodeStream`], which only hands out complete UTF-8
//! characters so that stop strings can be checked on the text as it grows.

mod byte;
mod hf;
mod resolve;
mod stream;

use std::path::{Path, PathBuf};

pub use byte::ByteTokenizer;
pub use hf::HfTokenizer;
pub use resolve::resolve;
pub use stream::DecodeStream;

/// Everything that can go wrong while loading a tokenizer or converting between text and ids. Each
/// variant names the file, key or id it is about.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A tokenizer or config file could not be read (most often: it does not exist).
    #[error("{path}: {source}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// `tokenizer.json` exists but the `tokenizers` crate cannot build a tokenizer from it.
    #[error("{path}: not a valid tokenizer.json: {message}")]
    Parse {
        /// The tokenizer.json file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A config file next to the tokenizer (tokenizer_config.json, generation_config.json,
    /// config.json) is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser's message, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A config key is present but unusable: a token string the vocabulary lacks, an id out of range,
    /// a value of the wrong type.
    #[error("{path}: key `{key}`: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The key, e.g. `eos_token_id`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// No file of the model directory names an end-of-sequence token, so generation could never stop
    /// on its own.
    #[error(
        "{dir}: no end-of-sequence token: set `eos_token` in tokenizer_config.json or \
         `eos_token_id` in generation_config.json or config.json"
    )]
    NoEos {
        /// The model directory.
        dir: PathBuf,
    },
    /// A token id that the vocabulary does not contain was given to `decode`. Models often have more
    /// embedding rows than the tokenizer has tokens; the sampler must never pick those.
    #[error("token id {id} is not in the vocabulary ({vocab_size} ids)")]
    UnknownId {
        /// The offending id.
        id: u32,
        /// One more than the largest id the tokenizer knows.
        vocab_size: usize,
    },
    /// The `tokenizers` crate failed to encode a text.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The `tokenizers` crate failed to decode ids.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// A config names a tokenizer r1 does not build in.
    #[error("tokenizer `{name}` is not one r1 builds in (byte)")]
    NotBuiltIn {
        /// The name given.
        name: String,
    },
    /// A model directory has no tokenizer.json and its config.json does not say it uses the byte
    /// vocabulary, so no tokenizer can be chosen for it.
    #[error(
        "{dir}: no tokenizer.json, and config.json's vocab_size ({}) is not the byte tokenizer's \
         ({}): copy the model's tokenizer.json there, or set tokenizer = \"byte\"",
        .vocab_size.map_or("absent".to_string(), |v| v.to_string()),
        ByteTokenizer::VOCAB_SIZE
    )]
    NoTokenizer {
        /// The model directory.
        dir: PathBuf,
        /// `vocab_size` of its config.json, when it has one.
        vocab_size: Option<u64>,
    },
    /// Incremental decoding saw already-emitted text change, which a tokenizer whose decoder is not
    /// left-to-right could cause. The message says what was emitted and what the decoder now gives.
    #[error("streaming decode: {0}")]
    Stream(String),
}

/// Shorthand for tokenizer results.
pub type Result<T> = std::result::Result<T, TokenizerError>;

/// The tokenizer of a run: a real model's `tokenizer.json` or r1's byte tokenizer. One enum rather than
/// a trait object so callers can clone it, send it across threads and match on it without boxing.
#[derive(Debug, Clone)]
pub enum Tokenizer {
    /// A Hugging Face tokenizer from a model directory (boxed: it is large, the byte tokenizer empty).
    HuggingFace(Box<HfTokenizer>),
    /// r1's byte-level tokenizer for tiny built-in models.
    Byte(ByteTokenizer),
}

impl Tokenizer {
    /// Loads the tokenizer of a Hugging Face model directory (`tokenizer.json` plus whichever of
    /// `tokenizer_config.json`, `generation_config.json` and `config.json` exist).
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        HfTokenizer::from_model_dir(dir).map(Tokenizer::from)
    }

    /// r1's byte tokenizer, for the tiny built-in models.
    pub fn byte() -> Self {
        Tokenizer::Byte(ByteTokenizer)
    }

    /// Text to ids. Special tokens written in `text` (e.g. `<|im_start|>`) are always parsed as single
    /// ids, as Hugging Face does by default, so a rendered chat template tokenizes the way the model
    /// was trained. `add_special_tokens` adds what the tokenizer adds around a sequence (a BOS for
    /// the byte tokenizer; whatever `tokenizer.json`'s post-processor says for a real one).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        match self {
            Tokenizer::HuggingFace(t) => t.encode(text, add_special_tokens),
            Tokenizer::Byte(t) => Ok(t.encode(text, add_special_tokens)),
        }
    }

    /// Ids to text. `skip_special` leaves special tokens out of the text. An id outside the vocabulary
    /// is an error ([`TokenizerError::UnknownId`]); bytes that are not valid UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match self {
            Tokenizer::HuggingFace(t) => t.decode(ids, skip_special),
            Tokenizer::Byte(t) => t.decode(ids, skip_special),
        }
    }

    /// The ids that end a generation. Never empty; the first one is the tokenizer's own eos token when
    /// it names one.
    pub fn eos_ids(&self) -> &[u32] {
        match self {
            Tokenizer::HuggingFace(t) => t.eos_ids(),
            Tokenizer::Byte(t) => t.eos_ids(),
        }
    }

    /// Whether `id` ends a generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids().contains(&id)
    }

    /// The beginning-of-sequence id, if the model has one (Qwen models do not).
    pub fn bos_id(&self) -> Option<u32> {
        match self {
            Tokenizer::HuggingFace(t) => t.bos_id(),
            Tokenizer::Byte(t) => t.bos_id(),
        }
    }

    /// The id of one token given as its vocabulary string (`<think>`, `<|im_end|>`), or `None` when
    /// the vocabulary has no such single token. Used to find the ids of template tokens.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match self {
            Tokenizer::HuggingFace(t) => t.token_id(token),
            Tokenizer::Byte(t) => t.token_id(token),
        }
    }

    /// One more than the largest id the tokenizer can produce or decode: the model's embedding needs
    /// at least this many rows, and logits at or past it must never be sampled.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::HuggingFace(t) => t.vocab_size(),
            Tokenizer::Byte(t) => t.vocab_size(),
        }
    }

    /// Starts an incremental decode of a sequence that grows one id at a time.
    pub fn decode_stream(&self, skip_special: bool) -> DecodeStream<'_> {
        DecodeStream::new(self, skip_special)
    }
}

impl From<HfTokenizer> for Tokenizer {
    fn from(t: HfTokenizer) -> Self {
        Tokenizer::HuggingFace(Box::new(t))
    }
}

impl From<ByteTokenizer> for Tokenizer {
    fn from(t: ByteTokenizer) -> Self {
        Tokenizer::Byte(t)
    }
}

/// Sampler text for stop strings and completions: special tokens are kept as text, so a stop
/// string such as `</answer>` (a special token in the byte tokenizer) is seen. Ids the vocabulary
/// lacks render as U+FFFD rather than failing a generation midway.
impl crate::sample::Detokenizer for Tokenizer {
    fn detokenize(&self, ids: &[u32]) -> String {
        match self.decode(ids, false) {
            Ok(text) => text,
            Err(_) => ids
                .iter()
                .map(|&id| {
                    self.decode(&[id], false)
                        .unwrap_or_else(|_| "\u{FFFD}".to_string())
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizers_and_streams_can_cross_threads() {
        // The sampler decodes on worker threads and shares one tokenizer between them.
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Tokenizer>();
        send_sync::<DecodeStream<'static>>();
        send_sync::<TokenizerError>();
    }

    #[test]
    fn the_enum_forwards_to_the_byte_tokenizer() {
        let t = Tokenizer::byte();
        assert_eq!(t.vocab_size(), ByteTokenizer::VOCAB_SIZE);
        assert_eq!(t.bos_id(), Some(ByteTokenizer::BOS));
        assert!(t.is_eos(ByteTokenizer::EOS));
        assert!(!t.is_eos(ByteTokenizer::IM_END));
        assert_eq!(t.token_id("</answer>"), Some(ByteTokenizer::ANSWER_END));
        let ids = t.encode("<answer>42</answer>", true).unwrap();
        assert_eq!(t.decode(&ids, true).unwrap(), "42");
        assert!(matches!(
            t.decode(&[ByteTokenizer::VOCAB_SIZE as u32], false),
            Err(TokenizerError::UnknownId { .. })
        ));
    }
}
