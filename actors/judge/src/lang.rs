//! The language-consistency reward: how much of the chain of thought is in the target language.
//!
//! DeepSeek-R1's reasoning RL adds this reward because RL alone drifts into mixing languages inside
//! one chain of thought, which people cannot read. The paper's score is
//! `Num(Words_target) / Num(Words)` over the chain of thought; this module pins down what a *word*
//! and the *chain of thought* are, so the number is the same on every machine and for every script.
//!
//! # What is counted
//!
//! - **The chain of thought** ([`chain_of_thought`]): the text after the first `<think>` (or from
//!   the start, when the prompt template opened it) up to the next `</think>` (or the end, for a
//!   truncated completion). A completion with neither tag is all chain of thought.
//! - **Not words**: fenced code (```` ``` ```` to ```` ``` ````, or to the end when unclosed), inline code
//!   (`` `…` ``), LaTeX math (`$$…$$`, `$…$`, `\(…\)`, `\[…\]`) and `\command` names anywhere.
//!   Code and formulas are the same in every language, so they neither help nor hurt. An inline
//!   `$…$` follows pandoc's rule (opening `$` followed by a non-space, closing `$` preceded by a
//!   non-space and not followed by a digit, no blank line inside, at most 1,000 bytes), so "costs
//!   $5 and $6" is prose.
//!   `\$` is a literal dollar. Unclosed `$`, `$$`, `` ` ``, `\(`, `\[` are left as text.
//! - **Words**, by script (Unicode ranges in [`script_of`]): a Latin, Cyrillic or Hangul word is a
//!   maximal run of letters of that script (combining marks stay in the run; an apostrophe or hyphen
//!   ends it, so "don't" is two words). Chinese has no spaces, so **each Han character is one word**.
//!   Letters of any other script (Greek, Arabic, kana, …) form runs that count as words of no
//!   supported language: they lower every language's share. Digits, punctuation, symbols and emoji
//!   are not words.
//! - **Languages are scripts**: English is the Latin script (so French text scores as English),
//!   Chinese is Han, Russian is Cyrillic, Korean is Hangul. Good enough to catch the
//!   English-Chinese mixing the paper targets; a vocabulary model is out of scope for a rule reward.
//! - **No words** (empty, or only code and math) ⇒ share 0.0: no chain of thought earns no
//!   consistency reward, otherwise skipping the reasoning would be a free reward.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A language the consistency reward can target, identified by its script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Latin-script words.
    English,
    /// Han characters, one word each.
    Chinese,
    /// Cyrillic-script words.
    Russian,
    /// Hangul words.
    Korean,
}

impl Language {
    /// Every supported language, for listings and error messages.
    pub const ALL: [Language; 4] = [
        Language::English,
        Language::Chinese,
        Language::Russian,
        Language::Korean,
    ];

    /// The name used in configs and by `FromStr`/serde.
    pub fn name(self) -> &'static str {
        match self {
            Language::English => "english",
            Language::Chinese => "chinese",
            Language::Russian => "russian",
            Language::Korean => "korean",
        }
    }

    /// The ISO 639-1 code, also accepted by `FromStr`.
    pub fn code(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::Chinese => "zh",
            Language::Russian => "ru",
            Language::Korean => "ko",
        }
    }

    /// The script whose words count as this language.
    pub fn script(self) -> Script {
        match self {
            Language::English => Script::Latin,
            Language::Chinese => Script::Han,
            Language::Russian => Script::Cyrillic,
            Language::Korean => Script::Hangul,
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A language name that is not supported (from a config or an API call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown language {0:?}: expected one of english (en), chinese (zh), russian (ru), korean (ko)"
)]
pub struct UnknownLanguage(pub String);

impl FromStr for Language {
    type Err = UnknownLanguage;

    /// Accepts the name or ISO 639-1 code in any case, with an optional region (`en-US`, `zh_CN`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let base = s.trim().split(['-', '_']).next().unwrap_or_default();
        Language::ALL
            .into_iter()
            .find(|l| base.eq_ignore_ascii_case(l.name()) || base.eq_ignore_ascii_case(l.code()))
            .ok_or_else(|| UnknownLanguage(s.to_string()))
    }
}

/// The script a letter belongs to; `Other` is any letter of a script no [`Language`] maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Script {
    /// Basic and extended Latin letters.
    Latin,
    /// CJK unified and compatibility ideographs.
    Han,
    /// Cyrillic letters.
    Cyrillic,
    /// Hangul syllables and jamo.
    Hangul,
    /// Letters of any other script.
    Other,
}

/// Word counts per script: the numerator and denominator of the share, kept apart so a user can
/// see *what* the chain of thought mixed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordCounts {
    /// Latin-script words.
    pub latin: usize,
    /// Han characters.
    pub han: usize,
    /// Cyrillic-script words.
    pub cyrillic: usize,
    /// Hangul words.
    pub hangul: usize,
    /// Words of other scripts.
    pub other: usize,
}

impl WordCounts {
    /// Words of one script.
    pub fn of(&self, script: Script) -> usize {
        match script {
            Script::Latin => self.latin,
            Script::Han => self.han,
            Script::Cyrillic => self.cyrillic,
            Script::Hangul => self.hangul,
            Script::Other => self.other,
        }
    }

    /// All words.
    pub fn total(&self) -> usize {
        self.latin + self.han + self.cyrillic + self.hangul + self.other
    }

    /// Share of words in `target`'s script, in [0, 1]; 0.0 when there are no words.
    pub fn share(&self, target: Language) -> f32 {
        match self.total() {
            0 => 0.0,
            total => self.of(target.script()) as f32 / total as f32,
        }
    }

    fn add(&mut self, script: Script) {
        match script {
            Script::Latin => self.latin += 1,
            Script::Han => self.han += 1,
            Script::Cyrillic => self.cyrillic += 1,
            Script::Hangul => self.hangul += 1,
            Script::Other => self.other += 1,
        }
    }
}

/// The language-consistency reward of one completion: the share of its chain-of-thought words in
/// `target`, in [0, 1] (see the module docs for what counts).
pub fn language_consistency(completion: &str, target: Language) -> f32 {
    count_words(chain_of_thought(completion)).share(target)
}

/// The part of a completion that is reasoning: inside `<think>…</think>` when the tags are there.
pub fn chain_of_thought(completion: &str) -> &str {
    let start = completion
        .find("<think>")
        .map_or(0, |i| i + "<think>".len());
    let rest = &completion[start..];
    rest.find("</think>").map_or(rest, |end| &rest[..end])
}

/// The language a prompt is written in: the script with the most words, when it is a supported
/// language's and no other script ties with it. `None` for no words, a tie, or another script.
pub fn detect_language(prompt: &str) -> Option<Language> {
    let counts = count_words(prompt);
    let scripts = [
        Script::Latin,
        Script::Han,
        Script::Cyrillic,
        Script::Hangul,
        Script::Other,
    ];
    let best = scripts
        .into_iter()
        .map(|s| counts.of(s))
        .max()
        .filter(|&n| n > 0)?;
    let mut winners = scripts.into_iter().filter(|&s| counts.of(s) == best);
    let winner = winners.next()?;
    if winners.next().is_some() {
        return None;
    }
    Language::ALL.into_iter().find(|l| l.script() == winner)
}

/// Counts the words of `text` per script, skipping code and LaTeX.
pub fn count_words(text: &str) -> WordCounts {
    let prose = strip_code_and_math(text);
    let mut counts = WordCounts::default();
    let mut run: Option<Script> = None;
    for c in prose.chars() {
        match script_of(c) {
            Some(Script::Han) => {
                counts.add(Script::Han);
                run = None;
            }
            Some(script) => {
                if run != Some(script) {
                    counts.add(script);
                    run = Some(script);
                }
            }
            // A combining mark (an accent written as its own code point) stays in the word.
            None if run.is_some() && is_combining_mark(c) => {}
            None => run = None,
        }
    }
    counts
}

/// The script of a letter, or `None` for anything that is not a letter (digits, punctuation,
/// symbols, whitespace, combining marks).
pub fn script_of(c: char) -> Option<Script> {
    let script = match u32::from(c) {
        0x41..=0x5A | 0x61..=0x7A => Script::Latin,
        0xD7 | 0xF7 => return None, // × and ÷ sit inside the Latin-1 letter block
        0xC0..=0x24F
        | 0x1E00..=0x1EFF
        | 0x2C60..=0x2C7F
        | 0xA720..=0xA7FF
        | 0xFF21..=0xFF3A
        | 0xFF41..=0xFF5A => Script::Latin,
        0x3007
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xF900..=0xFAFF
        | 0x20000..=0x2FA1F
        | 0x30000..=0x323AF => Script::Han,
        0x400..=0x52F | 0x1C80..=0x1C8F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Script::Cyrillic,
        0x1100..=0x11FF | 0x3130..=0x318F | 0xA960..=0xA97F | 0xAC00..=0xD7FF => Script::Hangul,
        _ if c.is_alphabetic() => Script::Other,
        _ => return None,
    };
    // Ranges above include a few non-letters (e.g. unassigned code points); only letters count.
    (c.is_alphabetic() || script == Script::Han).then_some(script)
}

fn is_combining_mark(c: char) -> bool {
    matches!(u32::from(c), 0x300..=0x36F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// `text` with code and LaTeX replaced by spaces (so the words on either side stay apart).
fn strip_code_and_math(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut delimiters = Delimiters::default();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if let Some(skip) = delimiters.skip_code_or_math(rest) {
            out.push(' ');
            i += skip;
            continue;
        }
        // `rest` is non-empty and starts on a char boundary.
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Longest inline `$…$` span, in bytes: longer is prose with two stray dollars. The bound keeps
/// the scan linear on text full of unmatched `$`.
const MAX_INLINE_MATH_BYTES: usize = 1_000;

/// Finds code and math spans, remembering which closing delimiters are absent from the rest of
/// the text: once a search for a closer fails it fails from every later position too, so
/// skipping it keeps the whole scan linear on text full of unclosed openers.
#[derive(Default)]
struct Delimiters {
    /// No closing `` ` `` ahead.
    no_backtick: bool,
    /// No closing `$$` ahead.
    no_double_dollar: bool,
    /// No closing `\)` ahead.
    no_paren_close: bool,
    /// No closing `\]` ahead.
    no_bracket_close: bool,
}

impl Delimiters {
    /// If `rest` starts with code or math, the number of bytes it spans.
    fn skip_code_or_math(&mut self, rest: &str) -> Option<usize> {
        if let Some(body) = rest.strip_prefix("```") {
            return Some(3 + body.find("```").map_or(body.len(), |end| end + 3));
        }
        if let Some(body) = rest.strip_prefix('`') {
            return closed_span(body, "`", 1, &mut self.no_backtick);
        }
        if let Some(body) = rest.strip_prefix("$$") {
            return closed_span(body, "$$", 2, &mut self.no_double_dollar);
        }
        if rest.starts_with('$') {
            return inline_dollar_math(rest);
        }
        if let Some(body) = rest.strip_prefix("\\(") {
            return closed_span(body, "\\)", 2, &mut self.no_paren_close);
        }
        if let Some(body) = rest.strip_prefix("\\[") {
            return closed_span(body, "\\]", 2, &mut self.no_bracket_close);
        }
        if let Some(body) = rest.strip_prefix('\\') {
            // `\command` (ASCII letters), or an escaped character such as `\$` or `\\`.
            let letters = body.bytes().take_while(u8::is_ascii_alphabetic).count();
            let escaped = if letters == 0 {
                body.chars().next().map_or(0, char::len_utf8)
            } else {
                letters
            };
            return Some(1 + escaped);
        }
        None
    }
}

/// Span of opener (`open_len` bytes) + `body` up to and including `close`, or `None` (and
/// `*missing` set) when `close` is not in `body`.
fn closed_span(body: &str, close: &str, open_len: usize, missing: &mut bool) -> Option<usize> {
    if *missing {
        return None;
    }
    let end = body.find(close);
    *missing = end.is_none();
    end.map(|end| open_len + end + close.len())
}

/// Span of `$…$` at the start of `rest` under pandoc's rule, or `None` if the `$` is a literal.
fn inline_dollar_math(rest: &str) -> Option<usize> {
    let body = &rest[1..];
    if body.chars().next().is_none_or(char::is_whitespace) {
        return None;
    }
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len().min(MAX_INLINE_MATH_BYTES) {
        match bytes[i] {
            b'\\' => i += 1, // `\$` inside math does not close it
            b'\n' if bytes.get(i + 1) == Some(&b'\n') => return None,
            b'$' => {
                let after_space = i > 0 && bytes[i - 1].is_ascii_whitespace();
                let before_digit = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                if i > 0 && !after_space && !before_digit {
                    return Some(1 + i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(text: &str) -> WordCounts {
        count_words(text)
    }

    #[test]
    fn latin_words_are_maximal_letter_runs() {
        assert_eq!(counts("The sum, twice: 2x+3y = 7.").latin, 5);
        assert_eq!(counts("don't re-use naïve café").latin, 6);
        assert_eq!(counts("ÉCOLE Ḍ").latin, 2);
    }

    #[test]
    fn combining_marks_stay_in_the_word() {
        assert_eq!(counts("cafe\u{301} ok").latin, 2);
    }

    #[test]
    fn each_han_character_is_a_word() {
        let c = counts("我们计算一下，答案是 42。");
        assert_eq!(c.han, 9);
        assert_eq!(c.total(), 9);
    }

    #[test]
    fn digits_punctuation_symbols_and_emoji_are_not_words() {
        assert_eq!(counts("12 + 3.5 = 15.5 !? ×÷ → 🦀 …").total(), 0);
    }

    #[test]
    fn other_scripts_count_against_every_language() {
        let c = counts("Пусть x равно два, α + β, カタカナ, 한국어 단어");
        assert_eq!(
            c,
            WordCounts {
                latin: 1,
                han: 0,
                cyrillic: 3,
                hangul: 2,
                other: 3
            }
        );
    }

    #[test]
    fn mixed_script_run_splits_by_script() {
        assert_eq!(
            counts("abcд"),
            WordCounts {
                latin: 1,
                cyrillic: 1,
                ..WordCounts::default()
            }
        );
        assert_eq!(
            counts("x是y"),
            WordCounts {
                latin: 2,
                han: 1,
                ..WordCounts::default()
            }
        );
    }

    #[test]
    fn code_blocks_and_inline_code_do_not_count() {
        let text =
            "First 我们\n```python\nfor word in words: print(word)\n```\nthen `let x = y;` done";
        assert_eq!(
            counts(text),
            WordCounts {
                latin: 3,
                han: 2,
                ..WordCounts::default()
            }
        );
        assert_eq!(counts("text ```unclosed code runs to the end").latin, 1);
        assert_eq!(counts("a stray ` backtick").latin, 3);
    }

    #[test]
    fn latex_does_not_count() {
        let text = r"令 $x = \frac{a}{b}$ 且 $$\sum_i a_i$$ 和 \(y\) 与 \[\int f\] 以及 \alpha 完";
        assert_eq!(
            counts(text),
            WordCounts {
                han: 7,
                ..WordCounts::default()
            }
        );
    }

    #[test]
    fn dollar_amounts_are_prose_not_math() {
        assert_eq!(counts("it costs $5 and $6 today").latin, 4);
        assert_eq!(counts(r"a literal \$ sign and \$x\$ too").latin, 6);
        assert_eq!(counts("$ x $ is not math").latin, 4);
        assert_eq!(counts("$a\n\nb$ spans a paragraph").latin, 5);
    }

    #[test]
    fn inline_math_longer_than_the_bound_is_prose() {
        let long = format!("$a{}b$ word", " x".repeat(MAX_INLINE_MATH_BYTES));
        assert_eq!(counts(&long).latin, MAX_INLINE_MATH_BYTES + 2);
        let short = format!("$a{}b$ word", " x".repeat(10));
        assert_eq!(counts(&short).latin, 1);
    }

    #[test]
    fn many_unclosed_openers_still_count_the_words() {
        // Each opener's closer search fails; the prose around them still counts (and the scan
        // stays linear, so this finishes quickly).
        for opener in ["$5 ", "\\( ", "\\[ ", "$$ ", "` "] {
            let text = format!("{}word", opener.repeat(50_000));
            assert_eq!(counts(&text).latin, 1, "{opener:?}");
        }
    }

    #[test]
    fn escaped_dollar_inside_math_does_not_close_it() {
        assert_eq!(counts(r"$a \$ b$ word").latin, 1);
    }

    #[test]
    fn only_the_think_block_counts() {
        let completion = "<think>我们计算</think><answer>The answer is four</answer>";
        assert_eq!(chain_of_thought(completion), "我们计算");
        assert_eq!(language_consistency(completion, Language::Chinese), 1.0);
        assert_eq!(language_consistency(completion, Language::English), 0.0);
    }

    #[test]
    fn chain_of_thought_handles_prefilled_truncated_and_tagless_completions() {
        assert_eq!(
            chain_of_thought("reasoning</think><answer>1</answer>"),
            "reasoning"
        );
        assert_eq!(chain_of_thought("<think>cut off"), "cut off");
        assert_eq!(chain_of_thought("no tags at all"), "no tags at all");
    }

    #[test]
    fn share_is_target_words_over_all_words() {
        let completion = "<think>First 我们 add the numbers 然后</think>";
        let english = language_consistency(completion, Language::English);
        let chinese = language_consistency(completion, Language::Chinese);
        assert_eq!(english, 4.0 / 8.0);
        assert_eq!(chinese, 4.0 / 8.0);
        assert_eq!(
            language_consistency("<think>Пусть x</think>", Language::Russian),
            0.5
        );
        assert_eq!(
            language_consistency("<think>한국어 단어</think>", Language::Korean),
            1.0
        );
    }

    #[test]
    fn no_words_scores_zero() {
        assert_eq!(language_consistency("", Language::English), 0.0);
        assert_eq!(
            language_consistency("<think></think><answer>4</answer>", Language::English),
            0.0
        );
        assert_eq!(
            language_consistency("<think>$x^2$ `code` 1 + 1 = 2</think>", Language::Chinese),
            0.0
        );
    }

    #[test]
    fn detect_language_takes_the_majority_script() {
        assert_eq!(detect_language("What is 2 + 2?"), Some(Language::English));
        assert_eq!(
            detect_language("计算 2 + 2 的值 (use ASCII)"),
            Some(Language::Chinese)
        );
        assert_eq!(
            detect_language("Сколько будет два плюс два?"),
            Some(Language::Russian)
        );
        assert_eq!(detect_language("이 문제를 풀어라"), Some(Language::Korean));
    }

    #[test]
    fn detect_language_is_none_without_a_clear_supported_majority() {
        assert_eq!(detect_language("1 + 1 = ?"), None);
        assert_eq!(detect_language("$x^2$"), None);
        assert_eq!(detect_language("hello 你"), None);
        assert_eq!(detect_language("Πόσο κάνει δύο και δύο;"), None);
    }

    #[test]
    fn language_parses_names_and_codes() {
        assert_eq!("English".parse(), Ok(Language::English));
        assert_eq!("zh".parse(), Ok(Language::Chinese));
        assert_eq!("zh-CN".parse(), Ok(Language::Chinese));
        assert_eq!("en_US".parse(), Ok(Language::English));
        assert_eq!(" RU ".parse(), Ok(Language::Russian));
        assert_eq!("korean".parse(), Ok(Language::Korean));
        assert_eq!(
            "klingon".parse::<Language>(),
            Err(UnknownLanguage("klingon".into()))
        );
        assert!("".parse::<Language>().is_err());
        for language in Language::ALL {
            assert_eq!(language.to_string().parse(), Ok(language));
        }
    }

    #[test]
    fn language_serde_uses_lowercase_names() {
        assert_eq!(
            serde_json::to_string(&Language::Chinese).ok().as_deref(),
            Some("\"chinese\"")
        );
        assert_eq!(
            serde_json::from_str::<Language>("\"english\"").ok(),
            Some(Language::English)
        );
        assert!(serde_json::from_str::<Language>("\"French\"").is_err());
    }

    #[test]
    fn arbitrary_strings_never_panic_and_share_stays_in_range() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "$",
            "$$",
            "`",
            "```",
            "\\",
            "\\(",
            "\\)",
            "\\[",
            "\\]",
            "<think>",
            "</think>",
            "a",
            "数",
            "д",
            "\n",
            " ",
            "é",
            "\u{301}",
            "🦀",
            "7",
            "{",
            "\u{10FFFF}",
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..20_000 {
            let len = rng.random_range(0..16);
            let text: String = (0..len)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            for language in Language::ALL {
                let share = language_consistency(&text, language);
                assert!((0.0..=1.0).contains(&share), "{text:?} → {share}");
            }
            let _ = detect_language(&text);
        }
    }
}
