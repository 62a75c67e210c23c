//! Final-answer extraction from a completion: the `<answer>` tag, the last `\boxed{}`, or the
//! answer stated in free text. Each scan is linear in the completion, so a 100 kB completion costs
//! microseconds, and brace matching is a counter, never recursion.

use super::latex::matching_brace;

/// Phrases after which free text states its answer, most specific first; searched lowercase.
const ANSWER_PHRASES: &[&str] = &["final answer is", "final answer:", "answer is", "answer:"];

/// Free text after an answer phrase longer than this is a sentence, not an answer; the last
/// number in it is taken instead.
const MAX_PHRASE_ANSWER_CHARS: usize = 40;

/// The content of the last closed `<answer>…</answer>`; a boxed answer or math span inside it wins
/// over the surrounding words, and a leading "The answer is" is dropped.
pub fn answer_tag(text: &str) -> Option<&str> {
    let open = text.rfind("<answer>")?;
    let body_start = open + "<answer>".len();
    let body_len = text[body_start..].find("</answer>")?;
    let body = text[body_start..body_start + body_len].trim();
    if let Some(boxed) = last_boxed(body) {
        return Some(boxed);
    }
    if let Some(phrase) = after_answer_phrase(body) {
        return Some(phrase);
    }
    if let Some((_, span)) = last_math_span(body) {
        return Some(span);
    }
    Some(body)
}

/// The content of the last `\boxed{…}` or `\fbox{…}` (nested braces kept), or `\boxed 5`.
pub fn last_boxed(text: &str) -> Option<&str> {
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
        return Some(text[open + 1..close].trim());
    }
    // `\boxed 5`: one space-delimited token (a letter right after `\boxed` is another macro name).
    if trimmed.len() == after.len() {
        return None;
    }
    let end = trimmed
        .find(|c: char| c.is_whitespace() || c == '$')
        .unwrap_or(trimmed.len());
    Some(trimmed[..end].trim_end_matches('.')).filter(|s| !s.is_empty())
}

/// The answer stated in free text: after "the answer is" when present, else the last math span
/// (`$…$`, `\(…\)`, `\[…\]`), else the last number.
pub fn free_text(text: &str) -> Option<&str> {
    if let Some(answer) = after_answer_phrase(text) {
        return Some(answer);
    }
    if let Some((_, span)) = last_math_span(text) {
        return Some(span);
    }
    last_number(text)
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
    if let Some(&(_, span)) = math_spans(line).first() {
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

/// The last complete math span: (start offset of its opening delimiter, trimmed content).
fn last_math_span(text: &str) -> Option<(usize, &str)> {
    math_spans(text).pop()
}

/// Every complete, non-empty math span in order: (start offset of its opening delimiter, content).
fn math_spans(text: &str) -> Vec<(usize, &str)> {
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
                    spans.push((i, body));
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
            answer_tag("<think>4</think><answer> 5 </answer>"),
            Some("5")
        );
        assert_eq!(
            answer_tag("<answer>The answer is $x=3$.</answer>"),
            Some("x=3")
        );
        assert_eq!(answer_tag("<answer>so \\boxed{9}</answer>"), Some("9"));
        assert_eq!(answer_tag("<answer>5"), None);
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
    fn escaped_dollars_are_not_math() {
        assert_eq!(last_math_span("costs \\$5 and \\$6"), None);
        assert_eq!(free_text("costs \\$5 and \\$6"), Some("6"));
    }
}
