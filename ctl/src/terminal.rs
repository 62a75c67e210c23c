//! Text that came from a model (or a candidate program, or a run's config) made safe to print on
//! a terminal: control characters (ESC sequences that move the cursor, retitle the window or
//! rewrite the screen, BEL, carriage returns) and bidirectional overrides are shown escaped
//! (`\u{1b}`), never written raw, so a completion cannot forge or hide what r1ctl prints.

/// Whether `c` changes what a terminal shows beyond printing a glyph: a control character
/// (C0, DEL, C1) or a bidirectional override/isolate or zero-width mark.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character escaped; line breaks are kept when `keep_newlines`
/// (a multi-line block), and shown as spaces otherwise, as are tabs (one table cell).
pub fn printable(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' | '\t' => out.push(' '),
            c if is_unsafe(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_bell_are_shown_not_sent() {
        let hostile = "7\u{1b}]0;owned\u{7}\u{1b}[2J\r\u{9b}31m\u{202e}x\nnext";
        let flat = printable(hostile, false);
        assert!(!flat.chars().any(is_unsafe), "{flat:?}");
        assert!(flat.contains("\\u{1b}]0;owned\\u{7}"), "{flat}");
        assert!(flat.contains("\\u{202e}x next"), "{flat}");
        let block = printable(hostile, true);
        assert!(block.ends_with("x\nnext"), "{block:?}");
        assert_eq!(printable("plain 数 text", false), "plain 数 text");
    }
}
