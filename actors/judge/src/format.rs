//! The format reward: does a completion have the shape R1-Zero asks for?
//!
//! DeepSeek-R1-Zero rewards a completion for putting its reasoning between `<think>` and `</think>`
//! and its final answer between `<answer>` and `</answer>`. A lenient check is hacked within a few
//! hundred GRPO steps (repeated tags, the answer hidden in the reasoning, an empty answer), so this
//! check is strict, scores 0 or 1, and says *why* a completion failed: that reason is what a user
//! reads when a reward curve looks wrong.
//!
//! # The rules, in the order they are checked (the first that fails is reported)
//!
//! A *tag* is `<`, an optional `/`, optional ASCII whitespace, the name `think` or `answer` in any
//! letter case, optional whitespace, an optional `/`, and `>`. Only the exact lowercase spellings
//! `<think>`, `</think>`, `<answer>`, `</answer>` are valid; any other spelling (`<Think>`,
//! `< think >`, `<think/>`) is [`FormatFailure::MalformedTag`], so a variant can never smuggle a
//! second block past a downstream parser that only knows the exact spelling.
//!
//! Style [`FormatStyle::AnswerTags`] (the paper's): `<think>` reasoning `</think>` `<answer>` answer
//! `</answer>`, each tag exactly once, in that order, with only whitespace before, between and after
//! the two blocks. Style [`FormatStyle::Boxed`]: `<think>` reasoning `</think>` followed by a final
//! answer, which is free text (a short summary is fine) containing exactly one `\boxed{…}`; the
//! answer is the text inside its balanced braces (escaped `\{`, `\}` do not count as braces).
//! `<answer>` tags are not allowed in this style. A `\boxed` inside the think block is ignored:
//! drafts there are reasoning, only the final answer counts.
//!
//! With `prefilled_think` the prompt template already ends in `<think>`, so the completion starts
//! inside the think block: it must not contain `<think>` at all, and its think block is everything
//! before `</think>`.
//!
//! The think block must hold some non-whitespace text. R1 allows short reasoning, but an empty
//! block is the cheapest way to collect the format reward without reasoning at all, so it scores 0.
//! The answer (tag content or boxed content) must be non-empty after trimming whitespace.

use serde::{Deserialize, Serialize};

/// How the completion must present its final answer; one per run, from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormatStyle {
    /// The paper's R1-Zero template: `<think>…</think><answer>…</answer>`.
    #[default]
    AnswerTags,
    /// "answer-in-boxed": `<think>…</think>` then a final answer containing one `\boxed{…}`, as
    /// math-tuned models (Qwen2.5-Math) are used to writing.
    Boxed,
}

/// The format check's configuration: owned by the judge, composed into the run config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    /// Which answer shape is rewarded.
    #[serde(default)]
    pub style: FormatStyle,
    /// The prompt template already ends with `<think>`: the completion continues the reasoning and
    /// must not open the block again.
    #[serde(default)]
    pub prefilled_think: bool,
}

/// One of the four tags the format knows, named so a failure reason can say which one is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tag {
    /// `<think>`
    ThinkOpen,
    /// `</think>`
    ThinkClose,
    /// `<answer>`
    AnswerOpen,
    /// `</answer>`
    AnswerClose,
}

impl Tag {
    /// The tag's one valid spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::ThinkOpen => "<think>",
            Tag::ThinkClose => "</think>",
            Tag::AnswerOpen => "<answer>",
            Tag::AnswerClose => "</answer>",
        }
    }
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a completion scored 0. Byte offsets (`at`) point into the completion so a user can find the
/// spot in a logged rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FormatFailure {
    /// A tag-like token that is not one of the four exact spellings.
    #[error("malformed tag {found:?} at byte {at}: only <think>, </think>, <answer>, </answer> are valid")]
    MalformedTag {
        /// The token as written.
        found: String,
        /// Byte offset of its `<`.
        at: usize,
    },
    /// The template opened `<think>` already and the completion opened it again.
    #[error("<think> at byte {at}, but the prompt template already opened the think block")]
    ThinkReopened {
        /// Byte offset of the second `<think>`.
        at: usize,
    },
    /// A `<think>` inside the think block.
    #[error("<think> nested inside the think block at byte {at}")]
    NestedThink {
        /// Byte offset of the inner `<think>`.
        at: usize,
    },
    /// The answer opened inside the reasoning: the "answer only inside think" hack.
    #[error("<answer> inside the think block at byte {at}")]
    AnswerInsideThink {
        /// Byte offset of the `<answer>`.
        at: usize,
    },
    /// A tag inside the answer block (a nested or second block hidden in the answer).
    #[error("{tag} inside the answer block at byte {at}")]
    TagInsideAnswer {
        /// The tag found.
        tag: Tag,
        /// Its byte offset.
        at: usize,
    },
    /// A tag appears after its block was already closed.
    #[error("{tag} repeated at byte {at}")]
    RepeatedTag {
        /// The repeated tag.
        tag: Tag,
        /// Byte offset of the repetition.
        at: usize,
    },
    /// Tags out of order, e.g. `</think>` before `<think>`.
    #[error("{found} at byte {at} where {expected} was expected")]
    UnexpectedTag {
        /// The tag found.
        found: Tag,
        /// The tag the format needed next.
        expected: Tag,
        /// Byte offset of the tag found.
        at: usize,
    },
    /// The completion ended before this tag (often a truncated generation).
    #[error("missing {tag}")]
    MissingTag {
        /// The first tag that never came.
        tag: Tag,
    },
    /// Non-whitespace text before, between or after the blocks.
    #[error("text outside the tags at byte {at}")]
    TextOutsideTags {
        /// Byte offset of the first such character.
        at: usize,
    },
    /// The think block holds only whitespace.
    #[error("the think block is empty")]
    EmptyThink,
    /// The answer (tag content, or the final answer in the boxed style) holds only whitespace.
    #[error("the answer is empty")]
    EmptyAnswer,
    /// `<answer>` or `</answer>` in the boxed style, which has no answer tags.
    #[error("{tag} at byte {at}, but the boxed style has no answer tags")]
    AnswerTagInBoxedStyle {
        /// The tag found.
        tag: Tag,
        /// Its byte offset.
        at: usize,
    },
    /// The final answer has no `\boxed{`.
    #[error("the final answer has no \\boxed{{…}}")]
    MissingBoxed,
    /// More than one `\boxed` in the final answer: boxing several candidates is a hack.
    #[error("the final answer has {count} \\boxed, exactly one is allowed")]
    RepeatedBoxed {
        /// How many were found, nested ones included.
        count: usize,
    },
    /// `\boxed` without `{`, or whose braces never close.
    #[error("\\boxed at byte {at} is not followed by a closed {{…}}")]
    UnclosedBoxed {
        /// Byte offset of the backslash.
        at: usize,
    },
    /// `\boxed{}` with only whitespace inside.
    #[error("\\boxed{{}} is empty")]
    EmptyBoxed,
}

/// The result of the format check: the reward, why it is 0, and the extracted answer for the
/// accuracy judges (they score nothing a malformed completion says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormatVerdict {
    /// 1.0 when the format is right, else 0.0.
    pub reward: f32,
    /// Why the reward is 0; `None` when it is 1.
    pub failure: Option<FormatFailure>,
    /// The answer, whitespace-trimmed: the `<answer>` content or the `\boxed{}` content. `None`
    /// when the format failed.
    pub answer: Option<String>,
}

impl FormatVerdict {
    /// Whether the completion earned the format reward.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    fn fail(failure: FormatFailure) -> Self {
        FormatVerdict {
            reward: 0.0,
            failure: Some(failure),
            answer: None,
        }
    }

    fn pass(answer: &str) -> Self {
        FormatVerdict {
            reward: 1.0,
            failure: None,
            answer: Some(answer.to_string()),
        }
    }
}

/// Scores one completion's format under `config` (see the module docs for the exact rules).
pub fn check_format(completion: &str, config: &FormatConfig) -> FormatVerdict {
    match check(completion, config) {
        Ok(answer) => FormatVerdict::pass(answer),
        Err(failure) => FormatVerdict::fail(failure),
    }
}

/// The answer a correctly formatted completion gives, or `None`: what accuracy judges should score.
pub fn extract_answer(completion: &str, config: &FormatConfig) -> Option<String> {
    check_format(completion, config).answer
}

/// A valid tag and where it sits.
#[derive(Debug, Clone, Copy)]
struct TagAt {
    tag: Tag,
    start: usize,
    end: usize,
}

/// Where the walk over the tags is, in the expected order of the blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    BeforeThink,
    InThink,
    AfterThink,
    InAnswer,
    AfterAnswer,
}

fn check<'a>(completion: &'a str, config: &FormatConfig) -> Result<&'a str, FormatFailure> {
    let tags = scan_tags(completion)?;
    if config.prefilled_think {
        if let Some(t) = tags.iter().find(|t| t.tag == Tag::ThinkOpen) {
            return Err(FormatFailure::ThinkReopened { at: t.start });
        }
    }
    if config.style == FormatStyle::Boxed {
        if let Some(t) = tags
            .iter()
            .find(|t| matches!(t.tag, Tag::AnswerOpen | Tag::AnswerClose))
        {
            return Err(FormatFailure::AnswerTagInBoxedStyle {
                tag: t.tag,
                at: t.start,
            });
        }
    }

    let blocks = walk_tags(&tags, config)?;
    let think_start = blocks.think_open.map_or(0, |t| t.end);
    if let Some(open) = blocks.think_open {
        ensure_blank(completion, 0, open.start)?;
    }
    let think = &completion[think_start..blocks.think_close.start];
    if think.trim().is_empty() {
        return Err(FormatFailure::EmptyThink);
    }

    match config.style {
        FormatStyle::AnswerTags => {
            let (Some(open), Some(close)) = (blocks.answer_open, blocks.answer_close) else {
                // walk_tags only returns Ok for this style once both answer tags were seen.
                return Err(FormatFailure::MissingTag {
                    tag: Tag::AnswerOpen,
                });
            };
            ensure_blank(completion, blocks.think_close.end, open.start)?;
            ensure_blank(completion, close.end, completion.len())?;
            let answer = completion[open.end..close.start].trim();
            if answer.is_empty() {
                return Err(FormatFailure::EmptyAnswer);
            }
            Ok(answer)
        }
        FormatStyle::Boxed => {
            let final_start = blocks.think_close.end;
            let final_answer = &completion[final_start..];
            if final_answer.trim().is_empty() {
                return Err(FormatFailure::EmptyAnswer);
            }
            boxed_content(final_answer, final_start)
        }
    }
}

/// The tags that delimit the blocks, found by [`walk_tags`].
struct Blocks {
    think_open: Option<TagAt>,
    think_close: TagAt,
    answer_open: Option<TagAt>,
    answer_close: Option<TagAt>,
}

/// Walks the tags in order and names the first one out of place.
fn walk_tags(tags: &[TagAt], config: &FormatConfig) -> Result<Blocks, FormatFailure> {
    let mut phase = if config.prefilled_think {
        Phase::InThink
    } else {
        Phase::BeforeThink
    };
    let mut think_open = None;
    let mut think_close = None;
    let mut answer_open = None;
    let mut answer_close = None;
    for &t in tags {
        let at = t.start;
        phase = match (phase, t.tag) {
            (Phase::BeforeThink, Tag::ThinkOpen) => {
                think_open = Some(t);
                Phase::InThink
            }
            (Phase::BeforeThink, found) => {
                return Err(FormatFailure::UnexpectedTag {
                    found,
                    expected: Tag::ThinkOpen,
                    at,
                })
            }
            (Phase::InThink, Tag::ThinkClose) => {
                think_close = Some(t);
                Phase::AfterThink
            }
            (Phase::InThink, Tag::ThinkOpen) => return Err(FormatFailure::NestedThink { at }),
            (Phase::InThink, Tag::AnswerOpen) => {
                return Err(FormatFailure::AnswerInsideThink { at })
            }
            (Phase::InThink, found) => {
                return Err(FormatFailure::UnexpectedTag {
                    found,
                    expected: Tag::ThinkClose,
                    at,
                })
            }
            (Phase::AfterThink, Tag::AnswerOpen) => {
                answer_open = Some(t);
                Phase::InAnswer
            }
            (Phase::AfterThink, tag @ (Tag::ThinkOpen | Tag::ThinkClose)) => {
                return Err(FormatFailure::RepeatedTag { tag, at })
            }
            (Phase::AfterThink, found) => {
                return Err(FormatFailure::UnexpectedTag {
                    found,
                    expected: Tag::AnswerOpen,
                    at,
                })
            }
            (Phase::InAnswer, Tag::AnswerClose) => {
                answer_close = Some(t);
                Phase::AfterAnswer
            }
            (Phase::InAnswer, tag) => return Err(FormatFailure::TagInsideAnswer { tag, at }),
            (Phase::AfterAnswer, tag) => return Err(FormatFailure::RepeatedTag { tag, at }),
        };
    }
    let done = match config.style {
        FormatStyle::AnswerTags => phase == Phase::AfterAnswer,
        FormatStyle::Boxed => phase == Phase::AfterThink,
    };
    let missing = match phase {
        Phase::BeforeThink => Tag::ThinkOpen,
        Phase::InThink => Tag::ThinkClose,
        Phase::AfterThink => Tag::AnswerOpen,
        Phase::InAnswer | Phase::AfterAnswer => Tag::AnswerClose,
    };
    match think_close {
        Some(think_close) if done => Ok(Blocks {
            think_open,
            think_close,
            answer_open,
            answer_close,
        }),
        _ => Err(FormatFailure::MissingTag { tag: missing }),
    }
}

/// Fails with the offset of the first non-whitespace character in `text[start..end]`.
fn ensure_blank(text: &str, start: usize, end: usize) -> Result<(), FormatFailure> {
    match text[start..end]
        .char_indices()
        .find(|(_, c)| !c.is_whitespace())
    {
        Some((i, _)) => Err(FormatFailure::TextOutsideTags { at: start + i }),
        None => Ok(()),
    }
}

/// Finds every tag-like token; fails on the first that is not an exact valid spelling.
fn scan_tags(text: &str) -> Result<Vec<TagAt>, FormatFailure> {
    let bytes = text.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        match tag_like_at(bytes, i) {
            Some((end, name_is_think, closing)) => {
                // Tags are ASCII, so `i..end` is on char boundaries.
                let found = &text[i..end];
                let tag = match (name_is_think, closing) {
                    (true, false) => Tag::ThinkOpen,
                    (true, true) => Tag::ThinkClose,
                    (false, false) => Tag::AnswerOpen,
                    (false, true) => Tag::AnswerClose,
                };
                if found != tag.as_str() {
                    return Err(FormatFailure::MalformedTag {
                        found: found.to_string(),
                        at: i,
                    });
                }
                tags.push(TagAt { tag, start: i, end });
                i = end;
            }
            None => i += 1,
        }
    }
    Ok(tags)
}

/// Recognises `< /? ws* (think|answer) ws* /? >` (name in any case) starting at `start`, returning
/// its end, whether the name is `think`, and whether it is a closing tag.
fn tag_like_at(bytes: &[u8], start: usize) -> Option<(usize, bool, bool)> {
    let mut i = start + 1;
    let closing = bytes.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    let name_start = i;
    while bytes.get(i).is_some_and(u8::is_ascii_alphabetic) {
        i += 1;
    }
    let name = bytes.get(name_start..i)?;
    let is_think = if name.eq_ignore_ascii_case(b"think") {
        true
    } else if name.eq_ignore_ascii_case(b"answer") {
        false
    } else {
        return None;
    };
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if bytes.get(i) == Some(&b'/') {
        i += 1;
    }
    (bytes.get(i) == Some(&b'>')).then_some((i + 1, is_think, closing))
}

/// The trimmed content of the one `\boxed{…}` in `final_answer`, which starts at byte `offset` of
/// the completion.
fn boxed_content(final_answer: &str, offset: usize) -> Result<&str, FormatFailure> {
    let starts = boxed_starts(final_answer);
    let first = match starts.as_slice() {
        [] => return Err(FormatFailure::MissingBoxed),
        [only] => *only,
        many => return Err(FormatFailure::RepeatedBoxed { count: many.len() }),
    };
    let bytes = final_answer.as_bytes();
    let mut i = first + "\\boxed".len();
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    let unclosed = FormatFailure::UnclosedBoxed { at: offset + first };
    if bytes.get(i) != Some(&b'{') {
        return Err(unclosed);
    }
    let content_start = i + 1;
    let mut depth = 1usize;
    let mut j = content_start;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 1, // skip the escaped character (`\{`, `\}`, `\\`)
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    let content = final_answer[content_start..j].trim();
                    if content.is_empty() {
                        return Err(FormatFailure::EmptyBoxed);
                    }
                    return Ok(content);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(unclosed)
}

/// Byte offsets of each `\boxed` command (not `\boxedfoo`) in `text`.
fn boxed_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    text.match_indices("\\boxed")
        .map(|(i, _)| i)
        .filter(|&i| {
            !bytes
                .get(i + "\\boxed".len())
                .is_some_and(u8::is_ascii_alphabetic)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGS: FormatConfig = FormatConfig {
        style: FormatStyle::AnswerTags,
        prefilled_think: false,
    };
    const TAGS_PREFILLED: FormatConfig = FormatConfig {
        style: FormatStyle::AnswerTags,
        prefilled_think: true,
    };
    const BOXED: FormatConfig = FormatConfig {
        style: FormatStyle::Boxed,
        prefilled_think: false,
    };
    const BOXED_PREFILLED: FormatConfig = FormatConfig {
        style: FormatStyle::Boxed,
        prefilled_think: true,
    };

    fn failure(completion: &str, config: &FormatConfig) -> FormatFailure {
        let verdict = check_format(completion, config);
        assert_eq!(verdict.reward, 0.0, "{completion:?} should fail");
        assert_eq!(verdict.answer, None);
        verdict.failure.expect("a 0 reward carries its reason")
    }

    #[test]
    fn canonical_completion_passes_with_trimmed_answer() {
        let verdict = check_format("<think>2 + 2 is 4.</think> <answer> 4 </answer>", &TAGS);
        assert_eq!(
            verdict,
            FormatVerdict {
                reward: 1.0,
                failure: None,
                answer: Some("4".into())
            }
        );
        assert!(verdict.passed());
    }

    #[test]
    fn whitespace_around_and_between_blocks_is_allowed() {
        let completion = "\n  <think>\nreason\n</think>\n\n<answer>\n42\n</answer>\n";
        assert_eq!(extract_answer(completion, &TAGS).as_deref(), Some("42"));
    }

    #[test]
    fn text_before_between_or_after_blocks_fails() {
        assert_eq!(
            failure("Sure! <think>r</think><answer>1</answer>", &TAGS),
            FormatFailure::TextOutsideTags { at: 0 }
        );
        assert_eq!(
            failure("<think>r</think> so <answer>1</answer>", &TAGS),
            FormatFailure::TextOutsideTags { at: 17 }
        );
        assert_eq!(
            failure("<think>r</think><answer>1</answer>\nDone.", &TAGS),
            FormatFailure::TextOutsideTags { at: 35 }
        );
    }

    #[test]
    fn repeated_blocks_fail() {
        let twice = "<think>a</think><answer>1</answer><think>b</think><answer>2</answer>";
        assert_eq!(
            failure(twice, &TAGS),
            FormatFailure::RepeatedTag {
                tag: Tag::ThinkOpen,
                at: 34
            }
        );
        let two_answers = "<think>a</think><answer>1</answer><answer>2</answer>";
        assert_eq!(
            failure(two_answers, &TAGS),
            FormatFailure::RepeatedTag {
                tag: Tag::AnswerOpen,
                at: 34
            }
        );
        let two_closes = "<think>a</think></think><answer>1</answer>";
        assert_eq!(
            failure(two_closes, &TAGS),
            FormatFailure::RepeatedTag {
                tag: Tag::ThinkClose,
                at: 16
            }
        );
    }

    #[test]
    fn nested_think_fails() {
        let nested = "<think>a<think>b</think></think><answer>1</answer>";
        assert_eq!(failure(nested, &TAGS), FormatFailure::NestedThink { at: 8 });
    }

    #[test]
    fn answer_only_inside_think_fails() {
        let hidden = "<think>so <answer>1</answer></think>";
        assert_eq!(
            failure(hidden, &TAGS),
            FormatFailure::AnswerInsideThink { at: 10 }
        );
        let also_after = "<think>so <answer>1</answer></think><answer>1</answer>";
        assert_eq!(
            failure(also_after, &TAGS),
            FormatFailure::AnswerInsideThink { at: 10 }
        );
    }

    #[test]
    fn tags_inside_the_answer_fail() {
        let nested = "<think>a</think><answer><answer>1</answer></answer>";
        assert_eq!(
            failure(nested, &TAGS),
            FormatFailure::TagInsideAnswer {
                tag: Tag::AnswerOpen,
                at: 24
            }
        );
        let think_in_answer = "<think>a</think><answer>1<think>b</think></answer>";
        assert_eq!(
            failure(think_in_answer, &TAGS),
            FormatFailure::TagInsideAnswer {
                tag: Tag::ThinkOpen,
                at: 25
            }
        );
    }

    #[test]
    fn empty_answer_fails() {
        assert_eq!(
            failure("<think>a</think><answer> \n\t</answer>", &TAGS),
            FormatFailure::EmptyAnswer
        );
        assert_eq!(
            failure("<think>a</think><answer></answer>", &TAGS),
            FormatFailure::EmptyAnswer
        );
    }

    #[test]
    fn empty_think_fails() {
        assert_eq!(
            failure("<think>  \n</think><answer>1</answer>", &TAGS),
            FormatFailure::EmptyThink
        );
        assert_eq!(
            failure("</think><answer>1</answer>", &TAGS_PREFILLED),
            FormatFailure::EmptyThink
        );
    }

    #[test]
    fn missing_tags_are_named() {
        assert_eq!(
            failure("", &TAGS),
            FormatFailure::MissingTag {
                tag: Tag::ThinkOpen
            }
        );
        assert_eq!(
            failure("just an answer", &TAGS),
            FormatFailure::MissingTag {
                tag: Tag::ThinkOpen
            }
        );
        assert_eq!(
            failure("<think>truncated reasoning", &TAGS),
            FormatFailure::MissingTag {
                tag: Tag::ThinkClose
            }
        );
        assert_eq!(
            failure("<think>a</think>", &TAGS),
            FormatFailure::MissingTag {
                tag: Tag::AnswerOpen
            }
        );
        assert_eq!(
            failure("<think>a</think><answer>1", &TAGS),
            FormatFailure::MissingTag {
                tag: Tag::AnswerClose
            }
        );
    }

    #[test]
    fn out_of_order_tags_fail() {
        assert_eq!(
            failure("<answer>1</answer><think>a</think>", &TAGS),
            FormatFailure::UnexpectedTag {
                found: Tag::AnswerOpen,
                expected: Tag::ThinkOpen,
                at: 0
            }
        );
        assert_eq!(
            failure("<think>a</answer></think>", &TAGS),
            FormatFailure::UnexpectedTag {
                found: Tag::AnswerClose,
                expected: Tag::ThinkClose,
                at: 8
            }
        );
        assert_eq!(
            failure("<think>a</think>1</answer>", &TAGS),
            FormatFailure::UnexpectedTag {
                found: Tag::AnswerClose,
                expected: Tag::AnswerOpen,
                at: 17
            }
        );
    }

    #[test]
    fn tag_variants_are_malformed_not_ignored() {
        for variant in [
            "<Think>",
            "<THINK>",
            "< think>",
            "<think >",
            "</ answer>",
            "<think/>",
            "<Answer>",
        ] {
            let completion = format!("<think>a {variant} b</think><answer>1</answer>");
            assert_eq!(
                failure(&completion, &TAGS),
                FormatFailure::MalformedTag {
                    found: variant.to_string(),
                    at: 9
                },
                "{variant}"
            );
        }
    }

    #[test]
    fn other_angle_brackets_are_plain_text() {
        let completion =
            "<think>if a<b and b>c then <thinking> is not a tag</think><answer>a < c</answer>";
        assert_eq!(extract_answer(completion, &TAGS).as_deref(), Some("a < c"));
    }

    #[test]
    fn prefilled_think_starts_inside_the_block() {
        let completion = "The sum is 4.</think>\n<answer>4</answer>";
        assert_eq!(
            extract_answer(completion, &TAGS_PREFILLED).as_deref(),
            Some("4")
        );
    }

    #[test]
    fn prefilled_think_must_not_reopen() {
        let reopened = "<think>The sum is 4.</think><answer>4</answer>";
        assert_eq!(
            failure(reopened, &TAGS_PREFILLED),
            FormatFailure::ThinkReopened { at: 0 }
        );
        let later = "ok</think><answer>4</answer><think>";
        assert_eq!(
            failure(later, &TAGS_PREFILLED),
            FormatFailure::ThinkReopened { at: 28 }
        );
    }

    #[test]
    fn prefilled_completion_needs_its_closing_tag() {
        assert_eq!(
            failure("reasoning<answer>4</answer>", &TAGS_PREFILLED),
            FormatFailure::AnswerInsideThink { at: 9 }
        );
        assert_eq!(
            failure("reasoning only", &TAGS_PREFILLED),
            FormatFailure::MissingTag {
                tag: Tag::ThinkClose
            }
        );
    }

    #[test]
    fn boxed_style_takes_the_box_content() {
        let completion = "<think>x = 3/4</think>\nThe answer is $\\boxed{\\frac{3}{4}}$.";
        assert_eq!(
            extract_answer(completion, &BOXED).as_deref(),
            Some("\\frac{3}{4}")
        );
        let escaped = "<think>r</think>\\boxed{ \\{1, 2\\} }";
        assert_eq!(
            extract_answer(escaped, &BOXED).as_deref(),
            Some("\\{1, 2\\}")
        );
        let spaced = "<think>r</think>\\boxed {7}";
        assert_eq!(extract_answer(spaced, &BOXED).as_deref(), Some("7"));
    }

    #[test]
    fn boxed_style_with_prefilled_think() {
        assert_eq!(
            extract_answer("r</think>\\boxed{7}", &BOXED_PREFILLED).as_deref(),
            Some("7")
        );
        assert_eq!(
            failure("<think>r</think>\\boxed{7}", &BOXED_PREFILLED),
            FormatFailure::ThinkReopened { at: 0 }
        );
    }

    #[test]
    fn boxed_style_ignores_boxes_inside_think() {
        let completion = "<think>maybe \\boxed{6}? no</think> So \\boxed{7}.";
        assert_eq!(extract_answer(completion, &BOXED).as_deref(), Some("7"));
        assert_eq!(
            failure("<think>\\boxed{6}</think> I am done.", &BOXED),
            FormatFailure::MissingBoxed
        );
    }

    #[test]
    fn boxed_style_hacks_fail() {
        assert_eq!(
            failure("<think>r</think>\\boxed{1} or \\boxed{2}", &BOXED),
            FormatFailure::RepeatedBoxed { count: 2 }
        );
        assert_eq!(
            failure("<think>r</think>\\boxed{\\boxed{1}}", &BOXED),
            FormatFailure::RepeatedBoxed { count: 2 }
        );
        assert_eq!(
            failure("<think>r</think>\\boxed{ }", &BOXED),
            FormatFailure::EmptyBoxed
        );
        assert_eq!(
            failure("<think>r</think>\\boxed{1", &BOXED),
            FormatFailure::UnclosedBoxed { at: 16 }
        );
        assert_eq!(
            failure("<think>r</think>\\boxed 1", &BOXED),
            FormatFailure::UnclosedBoxed { at: 16 }
        );
        assert_eq!(
            failure("<think>r</think>  ", &BOXED),
            FormatFailure::EmptyAnswer
        );
        assert_eq!(
            failure("<think>r</think>\\boxedx{1}", &BOXED),
            FormatFailure::MissingBoxed
        );
        assert_eq!(
            failure("<think>r</think><answer>\\boxed{1}</answer>", &BOXED),
            FormatFailure::AnswerTagInBoxedStyle {
                tag: Tag::AnswerOpen,
                at: 16
            }
        );
        assert_eq!(
            failure("hi <think>r</think>\\boxed{1}", &BOXED),
            FormatFailure::TextOutsideTags { at: 0 }
        );
    }

    #[test]
    fn config_reads_from_json_with_defaults_and_rejects_unknown_keys() {
        let config: FormatConfig =
            serde_json::from_str(r#"{"style":"boxed","prefilled_think":true}"#).expect("valid");
        assert_eq!(config, BOXED_PREFILLED);
        let config: FormatConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(config, TAGS);
        let config: FormatConfig =
            serde_json::from_str(r#"{"style":"answer-tags"}"#).expect("valid");
        assert_eq!(config.style, FormatStyle::AnswerTags);
        assert!(serde_json::from_str::<FormatConfig>(r#"{"stile":"boxed"}"#).is_err());
    }

    #[test]
    fn failure_reasons_serialise_for_rollout_logs() {
        let failure = FormatFailure::RepeatedTag {
            tag: Tag::AnswerOpen,
            at: 3,
        };
        let json = serde_json::to_string(&failure).expect("serialises");
        assert_eq!(
            json,
            r#"{"reason":"repeated_tag","tag":"answer_open","at":3}"#
        );
        assert_eq!(failure.to_string(), "<answer> repeated at byte 3");
    }

    #[test]
    fn arbitrary_strings_never_panic_and_pass_only_with_an_answer() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "<think>",
            "</think>",
            "<answer>",
            "</answer>",
            "<",
            ">",
            "/",
            "think",
            "answer",
            " ",
            "\n",
            "\\boxed",
            "{",
            "}",
            "\\",
            "x",
            "é",
            "数",
            "🦀",
            "<Think",
            "</",
            "\u{0}",
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.random_range(0..12);
            let text: String = (0..len)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            for config in [TAGS, TAGS_PREFILLED, BOXED, BOXED_PREFILLED] {
                let verdict = check_format(&text, &config);
                assert_eq!(verdict.passed(), verdict.reward == 1.0);
                assert_eq!(
                    verdict.passed(),
                    verdict
                        .answer
                        .as_ref()
                        .is_some_and(|a| !a.trim().is_empty())
                );
            }
        }
    }
}
