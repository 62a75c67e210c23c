//! Final-answer extraction from a completion: the `<answer>` tag, the last `\boxed{}`, or the
//! answer stated in free text. Each scan is linear in the completion, so a 100 kB completion costs
//! microseconds, and brace matching is a counter, never recursion.

use super::latex::matching_brace;

/// Phrases after which free text states its answer, most specific first; searched lowercase.
const ANSWER_PHRASES: &[&str] = &["final answer is", "final answer:", "answer is", "answer:"];

/// Free text after an answer phrase longer than this is a sentence, not an answer; the last
/// number in it is taken instead.
const MAX_PHRASE_ANSWER_CHARS: usize = 40;

/// Chat-template tokens after which a completion is no longer the model's answer: a sampler that
/// misses its stop token runs on into a new user turn, whose numbers and boxes are not answers.
const CHAT_TURN_MARKERS: &[&str] = &[
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end|>",
    "<|user|>",
    "</s>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
];

/// The completion up to the first chat-template token (see [`CHAT_TURN_MARKERS`]).
pub fn before_chat_debris(text: &str) -> &str {
    let end = CHAT_TURN_MARKERS
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .unwrap_or(text.len());
    &text[..end]
}

/// The content of the last closed `<answer>…</answer>`; a boxed answer or math span inside it wins
/// over the surrounding words, and a leading "The answer is" is dropped.
pub fn answer_tag(text: &str) -> Option<String> {
    let open = text.rfind("<answer>")?;
    let body_start = open + "<answer>".len();
    let body_len = text[body_start..].find("</answer>")?;
    let body = text[body_start..body_start + body_len].trim();
    if let Some(boxed) = boxed_answers(body) {
        return Some(boxed);
    }
    if let Some(phrase) = after_answer_phrase(body) {
        return Some(phrase.to_string());
    }
    if let Some((_, _, span)) = last_math_span(body) {
        return Some(span.to_string());
    }
    Some(body.to_string())
}

/// Most boxes one answer may join: several solutions are a handful, not hundreds.
const MAX_JOINED_BOXES: usize = 16;

/// Words and LaTeX that may stand between the boxes of one answer (`\boxed{1}, \boxed{2}`,
/// `\boxed{(2, 2)} \text{and} \boxed{(6, 2)}`, `$\boxed{k = 45}$ and $\boxed{n = 2}$`).
const BOX_SEPARATORS: &[&str] = &[
    ",",
    ";",
    "$",
    "\\text{and}",
    "\\text{ and }",
    "\\text{or}",
    "\\text{ or }",
    "\\quad",
    "\\qquad",
    "\\,",
    "\\(",
    "\\)",
    "and",
    "or",
    "&",
];

/// The final boxed answer: the last `\boxed{…}`, joined (with `, `) with the boxes right before it
/// when only commas, `and`/`or` and spacing separate them, so several solutions boxed one by one
/// read as one list.
pub fn boxed_answers(text: &str) -> Option<String> {
    let (mut at, last) = last_boxed_at(text)?;
    let mut parts = vec![last];
    while parts.len() < MAX_JOINED_BOXES {
        let before = strip_box_separators(&text[..at]);
        if before.len() == at || !before.ends_with('}') {
            break;
        }
        match last_boxed_at(before) {
            // The previous box must end exactly where the separators begin.
            Some((prev_at, content)) if boxed_end(before, prev_at) == Some(before.len()) => {
                parts.push(content);
                at = prev_at;
            }
            _ => break,
        }
    }
    parts.reverse();
    Some(parts.join(", "))
}

/// `text` without the separators of [`BOX_SEPARATORS`] (and whitespace) at its end.
fn strip_box_separators(text: &str) -> &str {
    let mut rest = text.trim_end();
    loop {
        let next = BOX_SEPARATORS
            .iter()
            .find_map(|sep| rest.strip_suffix(sep))
            .map(str::trim_end);
        match next {
            Some(shorter) => rest = shorter,
            None => return rest,
        }
    }
}

/// The byte just past the `}` closing the box that starts at `at`.
fn boxed_end(text: &str, at: usize) -> Option<usize> {
    let open = at + text[at..].find('{')?;
    matching_brace(text, open).map(|close| close + 1)
}

/// The content of the last `\boxed{…}` or `\fbox{…}` (nested braces kept), or `\boxed 5`.
pub fn last_boxed(text: &str) -> Option<&str> {
    last_boxed_at(text).map(|(_, content)| content)
}

/// [`last_boxed`] with the offset of its backslash.
fn last_boxed_at(text: &str) -> Option<(usize, &str)> {
    let at = [text.rfind("\\boxed"), text.rfind("\\fbox")]
        .into_iter()
        .flatten()
        .max()?;
    let name_len = if text[at..].starts_with("\\boxed") {
        "\\boxed".len()
    } else {
        "\\fbox".len()
    };
    let after = &text[at + name_len..];
    let trimmed = after.trim_start();
    let open = at + name_len + (after.len() - trimmed.len());
    if trimmed.starts_with('{') {
        let close = matching_brace(text, open)?;
        return Some((at, text[open + 1..close].trim()));
    }
    // `\boxed 5`: one space-delimited token (a letter right after `\boxed` is another macro name).
    if trimmed.len() == after.len() {
        return None;
    }
    let end = trimmed
        .find(|c: char| c.is_whitespace() || c == '$')
        .unwrap_or(trimmed.len());
    Some(trimmed[..end].trim_end_matches('.'))
        .filter(|s| !s.is_empty())
        .map(|s| (at, s))
}

/// The answer stated in free text: after "the answer is" when present, else the last math span
/// (`$…$`, `\(…\)`, `\[…\]`), else the last number. A number the sentence states for the last
/// span wins over it: in "The volume of $ABCDEFGH$ is 120." the span names the solid and 120 is
/// the answer.
pub fn free_text(text: &str) -> Option<&str> {
    if let Some(answer) = after_answer_phrase(text) {
        return Some(answer);
    }
    if let Some((_, end, span)) = last_math_span(text) {
        let rest = &text[end..];
        let sentence_end = [rest.find(". "), rest.find(".\n"), rest.find('\n')]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rest.len());
        return Some(stated_after_span(&rest[..sentence_end]).unwrap_or(span));
    }
    last_number(text)
}

/// Verbs that state a value: "$ABCDEFGH$ is 120", "$P(10)$ equals 60".
const STATING_VERBS: &[&str] = &[
    "is equal to ",
    "is ",
    "equals ",
    "= ",
    "was ",
    "are ",
    "becomes ",
];

/// The number stated right after a math span by a verb of [`STATING_VERBS`] (` is 120.`), if the
/// rest of its sentence does that; `None` for anything else (`, which is 2 more than 3`).
fn stated_after_span(rest: &str) -> Option<&str> {
    let tail = rest.trim_start();
    let after_verb = STATING_VERBS
        .iter()
        .find_map(|verb| tail.strip_prefix(verb))?
        .trim_start();
    let token = after_verb.split_whitespace().next()?;
    if !token.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return None;
    }
    last_number(token)
}

/// What follows the last answer phrase, up to the end of its line or sentence.
fn after_answer_phrase(text: &str) -> Option<&str> {
    // ASCII lowercasing keeps byte offsets valid for slicing the original.
    let lower = text.to_ascii_lowercase();
    let (at, phrase) = ANSWER_PHRASES
        .iter()
        .filter_map(|p| lower.rfind(p).map(|i| (i, *p)))
        .max_by_key(|&(i, p)| (i + p.len(), p.len()))?;
    // Markdown emphasis and a colon may sit between the phrase and the answer: `**Answer:** 3`.
    let tail = text[at + phrase.len()..].trim_start_matches([':', '*', ' ']);
    let line = tail.split('\n').next().unwrap_or("");
    if let Some(boxed) = last_boxed(line) {
        return Some(boxed);
    }
    // "The answer is $5$, since $2+3=5$": the first span after the phrase is the answer.
    if let Some(&(_, _, span)) = math_spans(line).first() {
        return Some(span);
    }
    let sentence = match line.find(". ") {
        Some(i) => &line[..i],
        None => line,
    };
    let answer = sentence.trim().trim_end_matches(['.', '*']).trim();
    if answer.is_empty() {
        return None;
    }
    if answer.chars().count() > MAX_PHRASE_ANSWER_CHARS {
        return last_number(answer);
    }
    Some(answer)
}

/// The last complete math span: (start offset of its opening delimiter, offset just past its
/// closing delimiter, trimmed content).
fn last_math_span(text: &str) -> Option<(usize, usize, &str)> {
    math_spans(text).pop()
}

/// Every complete, non-empty math span in order: (start of its opening delimiter, end of its
/// closing delimiter, content).
fn math_spans(text: &str) -> Vec<(usize, usize, &str)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let (close, open_len): (&str, usize) = match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'(')) => ("\\)", 2),
            (b'\\', Some(b'[')) => ("\\]", 2),
            (b'\\', _) => {
                // An escaped character such as `\$` opens nothing.
                i += 2;
                continue;
            }
            (b'$', Some(b'$')) => ("$$", 2),
            (b'$', _) => ("$", 1),
            _ => {
                i += 1;
                continue;
            }
        };
        let body_start = i + open_len;
        match find_unescaped(text, body_start, close) {
            Some(end) => {
                let body = text[body_start..end].trim();
                if !body.is_empty() {
                    spans.push((i, end + close.len(), body));
                }
                i = end + close.len();
            }
            None => break,
        }
    }
    spans
}

/// First `needle` at or after `from` that is not preceded by a backslash escape (for `$`).
fn find_unescaped(text: &str, from: usize, needle: &str) -> Option<usize> {
    let mut at = from;
    loop {
        let i = at + text.get(at..)?.find(needle)?;
        if needle.starts_with('$') && i > 0 && text.as_bytes()[i - 1] == b'\\' {
            at = i + 1;
            continue;
        }
        return Some(i);
    }
}

/// The last number in the text: `-12`, `1,000`, `3.5`, `3/4`, `12%`.
fn last_number(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut last = None;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut start = i;
        if start > 0 && bytes[start - 1] == b'-' {
            start -= 1;
        }
        let mut end = i;
        while end < bytes.len() {
            let b = bytes[end];
            let next_digit = bytes.get(end + 1).is_some_and(u8::is_ascii_digit);
            if b.is_ascii_digit() || (matches!(b, b'.' | b',' | b'/') && next_digit) {
                end += 1;
            } else {
                break;
            }
        }
        if bytes.get(end) == Some(&b'%') {
            end += 1;
        }
        last = Some(&text[start..end]);
        i = end.max(i + 1);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_with_nested_braces() {
        assert_eq!(
            last_boxed("so \\boxed{\\frac{1}{2}} done"),
            Some("\\frac{1}{2}")
        );
        assert_eq!(last_boxed("\\boxed{1} then \\boxed{2}"), Some("2"));
        assert_eq!(last_boxed("\\fbox{7}"), Some("7"));
        assert_eq!(last_boxed("$\\boxed 5$"), Some("5"));
        assert_eq!(last_boxed("\\boxed{\\{1,2\\}}"), Some("\\{1,2\\}"));
        assert_eq!(last_boxed("\\boxed{unclosed"), None);
        assert_eq!(last_boxed("no box"), None);
    }

    #[test]
    fn answer_tag_content() {
        assert_eq!(
            answer_tag("<think>4</think><answer> 5 </answer>").as_deref(),
            Some("5")
        );
        assert_eq!(
            answer_tag("<answer>The answer is $x=3$.</answer>").as_deref(),
            Some("x=3")
        );
        assert_eq!(
            answer_tag("<answer>so \\boxed{9}</answer>").as_deref(),
            Some("9")
        );
        assert_eq!(answer_tag("<answer>5"), None);
    }

    #[test]
    fn several_boxes_are_one_answer() {
        let joined = |t: &str| boxed_answers(t);
        assert_eq!(
            joined("so $\\boxed{1}, \\boxed{2}, \\boxed{3}$").as_deref(),
            Some("1, 2, 3")
        );
        assert_eq!(
            joined("\\boxed{(2, 2)} \\text{and} \\boxed{(6, 2)}").as_deref(),
            Some("(2, 2), (6, 2)")
        );
        assert_eq!(
            joined("So $\\boxed{k = 45}$ and $\\boxed{n = 2}$.").as_deref(),
            Some("k = 45, n = 2")
        );
        // Words other than and/or between boxes: a revised answer, the last one counts.
        assert_eq!(joined("\\boxed{1} then \\boxed{2}").as_deref(), Some("2"));
        assert_eq!(
            joined("First \\boxed{3}. Actually \\boxed{4}").as_deref(),
            Some("4")
        );
    }

    #[test]
    fn chat_debris_is_cut() {
        let text = "so \\boxed{42}.<|im_end|>\n<|im_start|>user\nWhat is 2+3? \\boxed{5}";
        assert_eq!(before_chat_debris(text), "so \\boxed{42}.");
        assert_eq!(before_chat_debris("no debris"), "no debris");
    }

    #[test]
    fn free_text_answers() {
        assert_eq!(free_text("So the answer is 42."), Some("42"));
        assert_eq!(free_text("First $x=1$, then $x = 2$ works"), Some("x = 2"));
        assert_eq!(free_text("We get 3 apples and 1,000 pears."), Some("1,000"));
        assert_eq!(free_text("It is -3/4 of it"), Some("-3/4"));
        assert_eq!(free_text("Growth was 12%."), Some("12%"));
        assert_eq!(
            free_text("Final answer: \\(\\frac{1}{2}\\)"),
            Some("\\frac{1}{2}")
        );
        assert_eq!(free_text("nothing here"), None);
        assert_eq!(free_text("The answer is: \\boxed{5}"), Some("5"));
        assert_eq!(free_text("The answer is **42**."), Some("42"));
        assert_eq!(free_text("**Answer:** 3"), Some("3"));
    }

    #[test]
    fn free_text_skips_labels_before_the_answer() {
        assert_eq!(free_text("The volume of $ABCDEFGH$ is 120."), Some("120"));
        assert_eq!(free_text("Thus the largest $n$ is 34."), Some("34"));
        assert_eq!(free_text("Therefore $m + n = 27$."), Some("m + n = 27"));
        // A number in a later sentence is not the answer of the span's sentence.
        assert_eq!(free_text("So $x = 5$. It took 3 steps"), Some("x = 5"));
        // Only a value the sentence states for the span replaces it.
        assert_eq!(
            free_text("We get $x = 5$, which is 2 more than 3"),
            Some("x = 5")
        );
        assert_eq!(free_text("In total, $P(10)$ equals 1,774."), Some("1,774"));
        assert_eq!(
            free_text("So the area of triangle $ABC$ is 54 square units."),
            Some("54")
        );
    }

    #[test]
    fn escaped_dollars_are_not_math() {
        assert_eq!(last_math_span("costs \\$5 and \\$6"), None);
        assert_eq!(free_text("costs \\$5 and \\$6"), Some("6"));
    }
}
