//! Incremental decoding: text for a sequence that grows one id at a time, handed out only in whole
//! characters.
//!
//! One token is often part of a character (byte-level BPE splits 🤖 into three tokens) and sometimes
//! changes how its neighbour decodes (SentencePiece strips the leading space of the first token).
//! Decoding each id alone is therefore wrong, and decoding the whole sequence at every step costs
//! O(n²). [`DecodeStream`] decodes a short window instead: the ids since the previous emission plus
//! the chunk before it as context, and emits the part of that window's text past what it already
//! emitted, once that text no longer ends in U+FFFD (an incomplete character). This is the algorithm
//! of the Hugging Face `tokenizers` crate's own `DecodeStream`, over r1's [`Tokenizer`] so it works the
//! same for the byte tokenizer, plus [`DecodeStream::finish`] to flush what is still held back when
//! the sequence ends, so that the streamed text always adds up to the full decode.

use super::{Result, Tokenizer, TokenizerError};

/// The decoding state of one growing sequence. Cheap: a few ids and two short strings.
#[derive(Debug, Clone)]
pub struct DecodeStream<'t> {
    /// The tokenizer whose ids these are.
    tokenizer: &'t Tokenizer,
    /// Passed to every decode.
    skip_special: bool,
    /// The window: the previously emitted chunk's ids (context) followed by the ids not yet emitted.
    ids: Vec<u32>,
    /// The text of the context ids alone; the window's text must start with it.
    prefix: String,
    /// How many of `ids` are context.
    prefix_len: usize,
    /// Everything emitted so far: the text the sampler checks stop strings against.
    text: String,
}

impl<'t> DecodeStream<'t> {
    /// A stream for a new sequence. Prompt ids need not be fed: the stream only decodes what is
    /// stepped into it.
    pub fn new(tokenizer: &'t Tokenizer, skip_special: bool) -> Self {
        DecodeStream {
            tokenizer,
            skip_special,
            ids: Vec::new(),
            prefix: String::new(),
            prefix_len: 0,
            text: String::new(),
        }
    }

    /// Adds one id. Returns the new text it completes, or `None` while the text so far ends in an
    /// incomplete character (or the id adds no text, e.g. a skipped special token). An id outside the
    /// vocabulary is an error and leaves the stream as it was.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let decoded = match self.tokenizer.decode(&self.ids, self.skip_special) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.ids.pop();
                return Err(e);
            }
        };
        if decoded.len() <= self.prefix.len() || decoded.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let new_text = self.new_text(&decoded)?.to_string();
        // The ids just emitted become the next window's context.
        let emitted_len = self.ids.len() - self.prefix_len;
        self.ids.drain(..self.prefix_len);
        self.prefix = self.tokenizer.decode(&self.ids, self.skip_special)?;
        self.prefix_len = emitted_len;
        self.text.push_str(&new_text);
        Ok(Some(new_text))
    }

    /// Ends the sequence: returns whatever text is still held back (an incomplete character decodes
    /// as U+FFFD, as in a full decode), so that all `step` results plus this equal
    /// `tokenizer.decode(all ids)`. Meant for the end of a sequence; stepping on afterwards works
    /// unless the flush cut a character in two, which then surfaces as [`TokenizerError::Stream`].
    pub fn finish(&mut self) -> Result<String> {
        let decoded = self.tokenizer.decode(&self.ids, self.skip_special)?;
        if decoded.len() <= self.prefix.len() {
            return Ok(String::new());
        }
        let rest = self.new_text(&decoded)?.to_string();
        self.prefix = decoded;
        self.prefix_len = self.ids.len();
        self.text.push_str(&rest);
        Ok(rest)
    }

    /// The part of the window's text past the context's text.
    fn new_text<'a>(&self, decoded: &'a str) -> Result<&'a str> {
        decoded.strip_prefix(self.prefix.as_str()).ok_or_else(|| {
            TokenizerError::Stream(format!(
                "context decoded as {:?} alone but {:?} with the ids after it",
                self.prefix, decoded
            ))
        })
    }

    /// All text emitted so far (by `step` and `finish`).
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::ByteTokenizer;

    /// Feeds `ids` one by one; after each step the emitted text must be exactly the full decode of the
    /// prefix when that decode ends in a whole character, and a prefix of it otherwise; `finish`
    /// must then complete it.
    fn check_every_prefix(tokenizer: &Tokenizer, ids: &[u32], skip_special: bool) {
        let mut stream = tokenizer.decode_stream(skip_special);
        let mut emitted = String::new();
        for k in 1..=ids.len() {
            if let Some(piece) = stream.step(ids[k - 1]).unwrap() {
                assert!(!piece.is_empty());
                emitted.push_str(&piece);
            }
            assert_eq!(stream.text(), emitted);
            let full = tokenizer.decode(&ids[..k], skip_special).unwrap();
            if full.ends_with('\u{FFFD}') {
                assert!(full.starts_with(&emitted), "{full:?} vs {emitted:?}");
            } else {
                assert_eq!(emitted, full, "prefix of {k} ids");
            }
            let mut fresh = tokenizer.decode_stream(skip_special);
            let mut streamed = String::new();
            for &id in &ids[..k] {
                streamed.extend(fresh.step(id).unwrap());
            }
            streamed.push_str(&fresh.finish().unwrap());
            assert_eq!(streamed, full, "prefix of {k} ids, flushed");
        }
    }

    #[test]
    fn multi_byte_characters_are_held_until_complete() {
        let t = Tokenizer::byte();
        let mut stream = t.decode_stream(false);
        // 🤖 = F0 9F A4 96: nothing until the fourth byte.
        assert_eq!(stream.step(0xF0).unwrap(), None);
        assert_eq!(stream.step(0x9F).unwrap(), None);
        assert_eq!(stream.step(0xA4).unwrap(), None);
        assert_eq!(stream.step(0x96).unwrap().as_deref(), Some("🤖"));
        assert_eq!(stream.step(u32::from(b'!')).unwrap().as_deref(), Some("!"));
        assert_eq!(
            stream.step(ByteTokenizer::THINK).unwrap().as_deref(),
            Some("<think>")
        );
        assert_eq!(stream.text(), "🤖!<think>");
        assert_eq!(stream.finish().unwrap(), "");
    }

    #[test]
    fn streaming_equals_full_decode_on_every_prefix() {
        let t = Tokenizer::byte();
        let texts = [
            "<|im_start|>user\n解方程 x^2 = 4<|im_end|>\n<|im_start|>assistant\n<think>\n",
            "Ünïcödé — emoji 🤖 and numbers 1234567890</answer>",
        ];
        for text in texts {
            let ids = t.encode(text, true).unwrap();
            check_every_prefix(&t, &ids, false);
            check_every_prefix(&t, &ids, true);
        }
        // Broken UTF-8: a lone continuation byte, a truncated character before a special, then a
        // truncated character at the very end.
        let ids = [0x80, 104, 0xE4, 0xBD, ByteTokenizer::THINK, 105, 0xF0, 0x9F];
        check_every_prefix(&t, &ids, false);
        check_every_prefix(&t, &ids, true);
    }

    #[test]
    fn bad_ids_are_errors_and_leave_the_stream_intact() {
        let t = Tokenizer::byte();
        let mut stream = t.decode_stream(false);
        assert_eq!(stream.step(0xC3).unwrap(), None);
        assert!(matches!(
            stream.step(9999),
            Err(TokenizerError::UnknownId { id: 9999, .. })
        ));
        assert_eq!(stream.step(0xA9).unwrap().as_deref(), Some("é"));
    }

    #[test]
    fn finish_flushes_an_incomplete_character_and_stepping_goes_on() {
        let t = Tokenizer::byte();
        let mut stream = t.decode_stream(false);
        assert_eq!(stream.step(u32::from(b'a')).unwrap().as_deref(), Some("a"));
        assert_eq!(stream.step(0xE4).unwrap(), None);
        assert_eq!(stream.finish().unwrap(), "\u{FFFD}");
        assert_eq!(stream.finish().unwrap(), "");
        assert_eq!(stream.step(u32::from(b'b')).unwrap().as_deref(), Some("b"));
        assert_eq!(stream.text(), "a\u{FFFD}b");
    }
}
