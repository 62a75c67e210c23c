//! r1's byte-level tokenizer for the tiny built-in models: ids 0..=255 are the bytes of the UTF-8
//! text, ids 256.. are special tokens. Nothing to train or download, every string encodes, and the
//! vocabulary ([`ByteTokenizer::VOCAB_SIZE`] = 264) is small enough for a test-sized embedding.
//!
//! Special tokens written in the text are matched as whole strings (`"<think>"` becomes id 258, not
//! seven bytes), exactly as the Hugging Face tokenizers parse their special tokens by default: prompt
//! templates render to text, and the text must tokenize to the template's special ids on either
//! tokenizer. The cost is the same as there: a user prompt that literally contains `<think>` gets the
//! special token. Strings that are only a prefix of a special token (`"<thin"`) stay bytes.

use super::{Result, TokenizerError};

/// The byte tokenizer. It holds no state: the vocabulary is fixed by the constants below, so any two
/// byte-tokenized models agree on ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// Beginning of sequence; added by `encode(.., add_special_tokens = true)`.
    pub const BOS: u32 = 256;
    /// End of sequence: the one id that stops a generation.
    pub const EOS: u32 = 257;
    /// Opens the reasoning block.
    pub const THINK: u32 = 258;
    /// Closes the reasoning block.
    pub const THINK_END: u32 = 259;
    /// Opens the final answer (R1-Zero format).
    pub const ANSWER: u32 = 260;
    /// Closes the final answer.
    pub const ANSWER_END: u32 = 261;
    /// Opens a ChatML turn.
    pub const IM_START: u32 = 262;
    /// Closes a ChatML turn.
    pub const IM_END: u32 = 263;
    /// Number of ids: a tiny model using this tokenizer sets `vocab_size` to this (or more).
    pub const VOCAB_SIZE: usize = 264;

    /// The special tokens' strings, in id order starting at [`Self::BOS`].
    pub const SPECIAL_TOKENS: [&'static str; 8] = [
        "<|bos|>",
        "<|eos|>",
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "<|im_start|>",
        "<|im_end|>",
    ];

    /// Text to ids: bytes, with special-token strings replaced by their ids; a BOS first when
    /// `add_special_tokens`. Cannot fail: every string is bytes.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Vec<u32> {
        let bytes = text.as_bytes();
        let mut ids = Vec::with_capacity(bytes.len() + usize::from(add_special_tokens));
        if add_special_tokens {
            ids.push(Self::BOS);
        }
        let mut i = 0;
        while i < bytes.len() {
            // Every special token starts with `<`; only there is a match possible.
            if bytes[i] == b'<' {
                if let Some((id, len)) = Self::special_at(&bytes[i..]) {
                    ids.push(id);
                    i += len;
                    continue;
                }
            }
            ids.push(u32::from(bytes[i]));
            i += 1;
        }
        ids
    }

    /// The special token that `rest` starts with, as (id, byte length). No special token is a prefix
    /// of another, so the first match is the only one.
    fn special_at(rest: &[u8]) -> Option<(u32, usize)> {
        Self::SPECIAL_TOKENS
            .iter()
            .zip(Self::BOS..)
            .find(|(s, _)| rest.starts_with(s.as_bytes()))
            .map(|(s, id)| (id, s.len()))
    }

    /// Ids to text. Runs of byte ids are decoded as UTF-8 with invalid sequences replaced by U+FFFD
    /// (what the Hugging Face byte-level decoder does); special tokens are written as their strings
    /// unless `skip_special`, in which case they are dropped before decoding (so bytes on both sides of
    /// a skipped special join up, again as Hugging Face does). An id ≥ [`Self::VOCAB_SIZE`] is an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut text = String::with_capacity(ids.len());
        let mut pending: Vec<u8> = Vec::new();
        for &id in ids {
            match u8::try_from(id) {
                Ok(byte) => pending.push(byte),
                Err(_) => {
                    let special = Self::special_str(id).ok_or(TokenizerError::UnknownId {
                        id,
                        vocab_size: Self::VOCAB_SIZE,
                    })?;
                    if !skip_special {
                        text.push_str(&String::from_utf8_lossy(&pending));
                        pending.clear();
                        text.push_str(special);
                    }
                }
            }
        }
        text.push_str(&String::from_utf8_lossy(&pending));
        Ok(text)
    }

    /// The string of a special id, `None` for byte ids and ids past the vocabulary.
    fn special_str(id: u32) -> Option<&'static str> {
        let index = usize::try_from(id.checked_sub(Self::BOS)?).ok()?;
        Self::SPECIAL_TOKENS.get(index).copied()
    }

    /// The ids that end a generation: only [`Self::EOS`]. (A ChatML run also stops on `<|im_end|>`
    /// through its template's end-of-turn token.)
    pub fn eos_ids(&self) -> &'static [u32] {
        &[Self::EOS]
    }

    /// The beginning-of-sequence id.
    pub fn bos_id(&self) -> Option<u32> {
        Some(Self::BOS)
    }

    /// The id of a special token's string, or of a string that is exactly one byte long.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        if let [byte] = token.as_bytes() {
            return Some(u32::from(*byte));
        }
        Self::SPECIAL_TOKENS
            .iter()
            .zip(Self::BOS..)
            .find(|(s, _)| **s == token)
            .map(|(_, id)| id)
    }

    /// [`Self::VOCAB_SIZE`].
    pub fn vocab_size(&self) -> usize {
        Self::VOCAB_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ids_follow_the_table() {
        let t = ByteTokenizer;
        assert_eq!(
            ByteTokenizer::SPECIAL_TOKENS.len() + 256,
            ByteTokenizer::VOCAB_SIZE
        );
        let named = [
            ("<|bos|>", ByteTokenizer::BOS),
            ("<|eos|>", ByteTokenizer::EOS),
            ("<think>", ByteTokenizer::THINK),
            ("</think>", ByteTokenizer::THINK_END),
            ("<answer>", ByteTokenizer::ANSWER),
            ("</answer>", ByteTokenizer::ANSWER_END),
            ("<|im_start|>", ByteTokenizer::IM_START),
            ("<|im_end|>", ByteTokenizer::IM_END),
        ];
        for (s, id) in named {
            assert_eq!(t.token_id(s), Some(id), "{s}");
            assert_eq!(t.encode(s, false), vec![id], "{s}");
            assert_eq!(t.decode(&[id], false).unwrap(), s);
        }
        assert_eq!(t.token_id("a"), Some(97));
        assert_eq!(t.token_id("ab"), None);
        assert_eq!(t.token_id(""), None);
        assert_eq!(t.token_id("é"), None, "two bytes are not one token");
    }

    #[test]
    fn encodes_bytes_and_whole_special_strings() {
        let t = ByteTokenizer;
        assert_eq!(t.encode("hi", false), vec![104, 105]);
        assert_eq!(t.encode("hi", true), vec![ByteTokenizer::BOS, 104, 105]);
        assert_eq!(t.encode("", true), vec![ByteTokenizer::BOS]);
        assert_eq!(t.encode("é", false), vec![0xC3, 0xA9]);
        assert_eq!(
            t.encode("<think>x</think><answer>4</answer>", false),
            vec![
                ByteTokenizer::THINK,
                120,
                ByteTokenizer::THINK_END,
                ByteTokenizer::ANSWER,
                52,
                ByteTokenizer::ANSWER_END
            ]
        );
        // A prefix of a special token, or a near miss, stays bytes.
        assert_eq!(t.encode("<thin", false), b"<thin".map(u32::from).to_vec());
        assert_eq!(t.encode("<<think>", false)[0], u32::from(b'<'));
        assert_eq!(t.encode("<<think>", false)[1], ByteTokenizer::THINK);
    }

    #[test]
    fn decode_round_trips_and_handles_bad_input() {
        let t = ByteTokenizer;
        for text in [
            "",
            "plain",
            "<|im_start|>user\n2+2?<|im_end|>\n",
            "Ünïcödé 🤖 解方程",
            "<thin<think>",
        ] {
            assert_eq!(t.decode(&t.encode(text, false), false).unwrap(), text);
        }
        assert_eq!(t.decode(&t.encode("hi", true), true).unwrap(), "hi");
        assert_eq!(t.decode(&t.encode("hi", true), false).unwrap(), "<|bos|>hi");
        // A lone continuation byte and a truncated character become U+FFFD.
        assert_eq!(t.decode(&[0x80, 104], false).unwrap(), "\u{FFFD}h");
        assert_eq!(t.decode(&[0xE4, 0xBD], false).unwrap(), "\u{FFFD}");
        // Skipped specials vanish before decoding, so the bytes around them join up.
        assert_eq!(
            t.decode(&[0xC3, ByteTokenizer::THINK, 0xA9], true).unwrap(),
            "é"
        );
        assert_eq!(
            t.decode(&[0xC3, ByteTokenizer::THINK, 0xA9], false)
                .unwrap(),
            "\u{FFFD}<think>\u{FFFD}"
        );
        for id in [264, 1000, u32::MAX] {
            match t.decode(&[104, id], false) {
                Err(TokenizerError::UnknownId {
                    id: got,
                    vocab_size,
                }) => {
                    assert_eq!((got, vocab_size), (id, 264));
                }
                other => panic!("id {id}: expected UnknownId, got {other:?}"),
            }
        }
    }
}
