//! The seeded mutator: from a corpus input to a new one, by a few stacked edits of one member.
//!
//! Without coverage feedback (libFuzzer needs nightly), the mutations carry the knowledge instead:
//! numbers in text are swapped for the values that break size arithmetic (0, -1, 2^31, 2^32,
//! 2^63, 1e12, NaN, …), binary files get the same values written as little-endian integers over
//! their counts and lengths, lines are duplicated, dropped and swapped, nesting is deepened, and
//! pieces of other corpus inputs are spliced in. The generator is ChaCha8 from a fixed seed, so a
//! run with the same seed and corpus tries the same inputs.

use rand::{Rng, RngCore};

use super::input::{Input, MAX_INPUT_BYTES};

/// Numbers written into text fields: the edges of every integer width, sizes that overflow a
/// product, and floats that are not numbers.
pub const TEXT_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "7",
    "-2147483648",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "65536",
    "1000000",
    "1000000000",
    "1000000000000",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e12",
    "1e300",
    "-1e300",
    "1e-300",
    "0.0",
    "-0.0",
    "nan",
    "inf",
    "-inf",
    "NaN",
    "1.5",
    "99999999999999999999999999999",
];

/// Integers written over binary fields (u64 little-endian, truncated to the width chosen).
pub const BINARY_NUMBERS: &[u64] = &[
    0,
    1,
    2,
    u64::MAX,
    u64::MAX - 1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 40,
    1_000_000_000_000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    1_000_000_000,
    1 << 20,
    4096,
];

/// What a mutation may use besides the input it edits: the rest of the corpus (for splices).
pub struct Mutator<'c, R> {
    /// The generator; every choice is drawn from it.
    pub rng: R,
    /// Inputs to splice from.
    pub corpus: &'c [Input],
}

impl<R: RngCore> Mutator<'_, R> {
    /// A new input: `base` with 1–6 stacked edits of one of its members (text members more often,
    /// they hold the sizes), capped at [`MAX_INPUT_BYTES`].
    pub fn mutate(&mut self, base: &Input) -> Input {
        let mut out = base.clone();
        if out.files.is_empty() {
            out.files.push(("input".into(), Vec::new()));
        }
        let member = self.pick_member(&out);
        let edits = 1 + self.rng.random_range(0..6);
        for _ in 0..edits {
            let name = out.files[member].0.clone();
            let mut bytes = std::mem::take(&mut out.files[member].1);
            self.edit(&name, &mut bytes);
            bytes.truncate(MAX_INPUT_BYTES);
            out.files[member].1 = bytes;
        }
        out
    }

    /// Which member to edit: a text one (JSON, TOML) three times in four when there is one.
    fn pick_member(&mut self, input: &Input) -> usize {
        let text: Vec<usize> = (0..input.files.len())
            .filter(|&i| std::str::from_utf8(&input.files[i].1).is_ok())
            .collect();
        if !text.is_empty() && text.len() < input.files.len() && self.rng.random_bool(0.75) {
            return text[self.rng.random_range(0..text.len())];
        }
        self.rng.random_range(0..input.files.len())
    }

    /// One edit of `bytes` (a member called `name`).
    fn edit(&mut self, name: &str, bytes: &mut Vec<u8>) {
        let is_text = std::str::from_utf8(bytes).is_ok();
        // Text formats get mostly structure-aware edits, binary ones mostly integer overwrites.
        let choice = self.rng.random_range(0..100);
        match (is_text, choice) {
            (true, 0..=34) => self.replace_number(bytes),
            (true, 35..=49) => self.edit_lines(bytes),
            (true, 50..=56) => self.deepen(bytes),
            (false, 0..=39) => self.overwrite_integer(bytes),
            (false, 40..=49) => self.replace_number(bytes),
            (_, 57..=64) => self.splice(name, bytes),
            (_, 65..=72) => self.delete_range(bytes),
            (_, 73..=80) => self.insert_bytes(bytes),
            (_, 81..=84) => {
                let cut = self.position(bytes);
                bytes.truncate(cut);
            }
            _ => self.flip(bytes),
        }
    }

    /// A position in `bytes` (0..=len).
    fn position(&mut self, bytes: &[u8]) -> usize {
        self.rng.random_range(0..=bytes.len())
    }

    /// Flips a bit or sets a byte to an edge value.
    fn flip(&mut self, bytes: &mut [u8]) {
        if bytes.is_empty() {
            return;
        }
        let at = self.rng.random_range(0..bytes.len());
        if self.rng.random_bool(0.5) {
            bytes[at] ^= 1 << self.rng.random_range(0..8);
        } else {
            bytes[at] = [0u8, 0xff, 0x7f, 0x80, b'"', b'\\', b'{', b'[', b'\n']
                [self.rng.random_range(0..9)];
        }
    }

    /// Replaces a run of number characters (or inserts at a random place when there is none)
    /// with one of [`TEXT_NUMBERS`].
    fn replace_number(&mut self, bytes: &mut Vec<u8>) {
        let number = TEXT_NUMBERS[self.rng.random_range(0..TEXT_NUMBERS.len())].as_bytes();
        let runs = number_runs(bytes);
        if runs.is_empty() {
            let at = self.position(bytes);
            bytes.splice(at..at, number.iter().copied());
            return;
        }
        let (start, end) = runs[self.rng.random_range(0..runs.len())];
        bytes.splice(start..end, number.iter().copied());
    }

    /// Duplicates, drops or swaps whole lines; duplication up to 64 copies (many tables, many
    /// records, repeated keys).
    fn edit_lines(&mut self, bytes: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
        if lines.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..lines.len());
        match self.rng.random_range(0..3) {
            0 => {
                let copies = [1, 2, 8, 64][self.rng.random_range(0..4)];
                let line = lines[i];
                for _ in 0..copies {
                    lines.insert(i, line);
                }
            }
            1 => {
                lines.remove(i);
            }
            _ => {
                let j = self.rng.random_range(0..lines.len());
                lines.swap(i, j);
            }
        }
        *bytes = lines.concat().into_bytes();
    }

    /// Wraps a slice in many brackets or braces: parsers that recurse must stop, not overflow
    /// the stack.
    fn deepen(&mut self, bytes: &mut Vec<u8>) {
        let (open, close): (&[u8], &[u8]) = match self.rng.random_range(0..5) {
            0 => (b"[", b"]"),
            1 => (b"{\"a\":", b"}"),
            2 => (b"\\frac{", b"}{2}"),
            3 => (b"(", b")"),
            _ => (b"\\sqrt{", b"}"),
        };
        let depth = [16, 100, 1000, 20000][self.rng.random_range(0..4)];
        let start = self.position(bytes);
        let end = start + self.rng.random_range(0..=(bytes.len() - start).min(32));
        let inner = bytes[start..end].to_vec();
        let mut wrapped = Vec::with_capacity(inner.len() + depth * (open.len() + close.len()));
        for _ in 0..depth {
            wrapped.extend_from_slice(open);
        }
        wrapped.extend(inner);
        for _ in 0..depth {
            wrapped.extend_from_slice(close);
        }
        bytes.splice(start..end, wrapped);
    }

    /// Writes one of [`BINARY_NUMBERS`] as a 1-, 2-, 4- or 8-byte little-endian integer; half the
    /// time at an 8-byte-aligned offset in the first 256 bytes, where formats keep their counts.
    fn overwrite_integer(&mut self, bytes: &mut [u8]) {
        let width = [1usize, 2, 4, 8][self.rng.random_range(0..4)];
        if bytes.len() < width {
            return;
        }
        let value = BINARY_NUMBERS[self.rng.random_range(0..BINARY_NUMBERS.len())].to_le_bytes();
        let limit = bytes.len() - width;
        let at = if self.rng.random_bool(0.5) {
            (self.rng.random_range(0..=limit.min(256)) / 8 * 8).min(limit)
        } else {
            self.rng.random_range(0..=limit)
        };
        bytes[at..at + width].copy_from_slice(&value[..width]);
    }

    /// Overwrites or inserts a piece of another corpus input (the same member name when it has
    /// one).
    fn splice(&mut self, name: &str, bytes: &mut Vec<u8>) {
        if self.corpus.is_empty() {
            return self.flip(bytes);
        }
        let other = &self.corpus[self.rng.random_range(0..self.corpus.len())];
        let Some(source) = other
            .get(name)
            .or_else(|| other.files.first().map(|(_, b)| b.as_slice()))
        else {
            return;
        };
        if source.is_empty() {
            return;
        }
        let start = self.rng.random_range(0..source.len());
        let end = start + self.rng.random_range(0..=(source.len() - start).min(256));
        let piece = source[start..end].to_vec();
        let at = self.position(bytes);
        if self.rng.random_bool(0.5) {
            bytes.splice(at..at, piece);
        } else {
            let end = (at + piece.len()).min(bytes.len());
            bytes.splice(at..end, piece);
        }
    }

    /// Deletes 1–64 bytes.
    fn delete_range(&mut self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let start = self.rng.random_range(0..bytes.len());
        let end = (start + 1 + self.rng.random_range(0..64)).min(bytes.len());
        bytes.drain(start..end);
    }

    /// Inserts 1–16 random bytes, or repeats a short piece of the input up to 4096 times.
    fn insert_bytes(&mut self, bytes: &mut Vec<u8>) {
        let at = self.position(bytes);
        if self.rng.random_bool(0.5) || bytes.is_empty() {
            let n = 1 + self.rng.random_range(0..16);
            let new: Vec<u8> = (0..n).map(|_| self.rng.random()).collect();
            bytes.splice(at..at, new);
        } else {
            let start = self.rng.random_range(0..bytes.len());
            let end = (start + 1 + self.rng.random_range(0..16)).min(bytes.len());
            let piece = bytes[start..end].to_vec();
            let times = [2, 16, 256, 4096][self.rng.random_range(0..4)];
            let new: Vec<u8> = piece
                .iter()
                .copied()
                .cycle()
                .take(piece.len() * times)
                .collect();
            bytes.splice(at..at, new);
        }
    }
}

/// (start, end) of every maximal run of `[0-9.eE+-]` that holds a digit.
fn number_runs(bytes: &[u8]) -> Vec<(usize, usize)> {
    let in_number = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E');
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if in_number(bytes[i]) {
            let start = i;
            while i < bytes.len() && in_number(bytes[i]) {
                i += 1;
            }
            if bytes[start..i].iter().any(u8::is_ascii_digit) {
                runs.push((start, i));
            }
        } else {
            i += 1;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn the_same_seed_gives_the_same_inputs_and_they_differ_from_the_base() {
        let base = Input::single(
            "job.toml",
            b"[grpo]\nsteps = 10\nprompts_per_step = 4\n".to_vec(),
        );
        let corpus = vec![base.clone()];
        let run = |seed| {
            let mut m = Mutator {
                rng: ChaCha8Rng::seed_from_u64(seed),
                corpus: &corpus,
            };
            (0..200).map(|_| m.mutate(&base)).collect::<Vec<_>>()
        };
        let a = run(1);
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
        let changed = a.iter().filter(|i| **i != base).count();
        assert!(
            changed > 150,
            "only {changed} of 200 mutations changed the input"
        );
        // Size edges reach the numeric fields.
        assert!(a.iter().any(|i| {
            let t = String::from_utf8_lossy(&i.files[0].1).into_owned();
            t.contains("steps = 1000000000000") || t.contains("steps = 18446744073709551615")
        }));
    }

    #[test]
    fn number_runs_find_numbers_not_words() {
        let text = b"a = 12, b = -3.5e2, c = e, d = x1";
        let runs: Vec<&[u8]> = number_runs(text)
            .iter()
            .map(|&(s, e)| &text[s..e])
            .collect();
        assert_eq!(runs, vec![&b"12"[..], b"-3.5e2", b"1"]);
    }
}
