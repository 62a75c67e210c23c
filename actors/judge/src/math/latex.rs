//! LaTeX clean-up before parsing: the presentation macros a model may or may not write (`\left`,
//! `\,`, `\dfrac`, `^\circ`, `$`, `\text{}`) must not change the verdict, so they are rewritten to
//! one plain spelling here and the parser only ever sees that spelling.

/// Answers longer than this are not compared at all: no real answer is 4 kB, and the cap bounds
/// the cost of every later step (the clean-up passes, parsing, evaluation) on hostile input.
pub const MAX_ANSWER_BYTES: usize = 4096;

/// Macros whose argument is kept and the macro dropped: text and font wrappers, and boxes that
/// survive inside an extracted answer.
const UNWRAPPED: &[&str] = &[
    "text",
    "textbf",
    "textit",
    "textrm",
    "texttt",
    "textnormal",
    "textsf",
    "mathrm",
    "mathbf",
    "mathit",
    "mathsf",
    "mathtt",
    "mathbb",
    "mathcal",
    "boldsymbol",
    "bm",
    "operatorname",
    "mbox",
    "hbox",
    "boxed",
    "fbox",
    "underline",
    "overline",
];

/// What a backslash macro named by letters turns into; `None` keeps it for the parser.
fn macro_replacement(name: &str) -> Option<&'static str> {
    Some(match name {
        "left" | "right" | "bigl" | "bigr" | "Bigl" | "Bigr" | "big" | "Big" | "bigg" | "Bigg"
        | "biggl" | "biggr" | "displaystyle" | "textstyle" | "scriptstyle" | "limits"
        | "nolimits" | "circ" | "degree" | "dollar" | "hfill" | "noindent" | "phantom" => "",
        "quad" | "qquad" | "space" | "enspace" | "thinspace" | "medspace" => " ",
        "dfrac" | "tfrac" | "cfrac" => "\\frac",
        "dbinom" | "tbinom" => "\\binom",
        "cdot" | "times" | "ast" => "*",
        "div" | "colon" => "/",
        "le" | "leq" | "leqslant" => "≤",
        "ge" | "geq" | "geqslant" => "≥",
        "ne" | "neq" => "≠",
        "lt" => "<",
        "gt" => ">",
        // `x \in \{1, 2\}` states the answer like `x = …` does.
        "approx" | "simeq" | "eq" | "in" => "=",
        "infty" | "infinity" => "∞",
        "lbrace" => "\\{",
        "rbrace" => "\\}",
        "lvert" | "rvert" | "vert" | "lVert" | "rVert" | "mid" => "|",
        "langle" => "(",
        "rangle" => ")",
        "emptyset" | "varnothing" => "∅",
        "cup" => "∪",
        _ => return None,
    })
}

/// Rewrites one answer to the plain spelling the parser reads: spacing macros and `$` removed,
/// synonyms folded (`\dfrac` → `\frac`, `\le` → `≤`, `\cdot` → `*`), `\text{…}` unwrapped, degree
/// signs dropped, whitespace collapsed, a sentence-final period removed.
pub fn normalize(answer: &str) -> String {
    // `32,\! 349`: a negative thin space after a comma removes the comma's space, so the comma
    // groups thousands (`32,349`), not list items.
    let grouped = replace_all(answer.to_string(), &[(",\\! ", ","), (",\\!", ",")]);
    let degrees_dropped = replace_all(grouped, &[("^{\\circ}", ""), ("^\\circ", "")]);
    let folded = fold_macros(&matrices_to_tuples(&degrees_dropped));
    let unwrapped = unwrap_text_macros(&folded);
    // A power after an unwrapped unit (`\mathrm{cm}^2` → `cm ^2`) belongs to it.
    let mut out = String::with_capacity(unwrapped.len());
    for word in unwrapped.split_whitespace() {
        if !out.is_empty() && !word.starts_with('^') {
            out.push(' ');
        }
        out.push_str(word);
    }
    while out.ends_with('.') || out.ends_with(',') {
        out.pop();
    }
    // `{,}` is the LaTeX way to write a comma that does not add space: a thousands separator.
    // "x = 2 or x = 3" and "1 and 2" list several answers.
    let out = replace_all(out, &[("{,}", ","), (" or ", ", "), (" and ", ", ")]);
    match out.trim() {
        trimmed if trimmed.len() == out.len() => out,
        trimmed => trimmed.to_string(),
    }
}

/// `s` with each `(from, to)` replaced in turn, allocating only when `from` occurs: most answers
/// contain none of the patterns, and this runs twice per check.
fn replace_all(mut s: String, patterns: &[(&str, &str)]) -> String {
    for (from, to) in patterns {
        if s.contains(from) {
            s = s.replace(from, to);
        }
    }
    s
}

/// Matrix environments whose rows and cells become nested tuples, so matrices compare cell by
/// cell in order (a column vector becomes a flat tuple). `vmatrix` is a determinant, not a matrix,
/// and is left for the parser to refuse.
const MATRIX_ENVIRONMENTS: &[&str] = &[
    "pmatrix",
    "bmatrix",
    "Bmatrix",
    "matrix",
    "smallmatrix",
    "array",
];

/// Rewrites `\begin{pmatrix} a & b \\ c & d \end{pmatrix}` as `((a, b), (c, d))`. Runs before any
/// other clean-up because it needs the `&` and `\\` separators that the clean-up drops.
fn matrices_to_tuples(s: &str) -> String {
    let mut cur = s.to_string();
    // Each round replaces one environment, so the loop ends.
    loop {
        let found = MATRIX_ENVIRONMENTS.iter().find_map(|env| {
            let begin = format!("\\begin{{{env}}}");
            let end = format!("\\end{{{env}}}");
            let start = cur.find(&begin)?;
            let body_start = start + begin.len();
            let body_len = cur[body_start..].find(&end)?;
            Some((
                start,
                body_start,
                body_start + body_len,
                body_start + body_len + end.len(),
            ))
        });
        let Some((start, mut body_start, body_end, after)) = found else {
            return cur;
        };
        // `\begin{array}{cc}`: the column specification is layout, not a cell.
        if cur[body_start..body_end].trim_start().starts_with('{') {
            let open = body_start + cur[body_start..].find('{').unwrap_or(0);
            if let Some(close) = matching_brace(&cur[..body_end], open) {
                body_start = close + 1;
            }
        }
        let rows: Vec<String> = cur[body_start..body_end]
            .split("\\\\")
            .map(str::trim)
            .filter(|row| !row.is_empty())
            .map(|row| {
                format!(
                    "({})",
                    row.split('&').map(str::trim).collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        cur = format!("{} ({}) {}", &cur[..start], rows.join(", "), &cur[after..]);
    }
}

/// One left-to-right pass over the text, rewriting macros and symbols (see [`normalize`]).
fn fold_macros(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let rest = &s[i + 1..];
                let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
                if name_len > 0 {
                    let name = &rest[..name_len];
                    for _ in 0..name_len {
                        chars.next();
                    }
                    match macro_replacement(name) {
                        Some(rep) => {
                            out.push_str(rep);
                            // `\left.` and `\right.` are invisible delimiters: drop the dot too.
                            if (name == "left" || name == "right")
                                && chars.peek().map(|&(_, d)| d) == Some('.')
                            {
                                chars.next();
                            }
                        }
                        None => {
                            out.push('\\');
                            out.push_str(name);
                            // Keep `\pi r` from fusing into `\pir`.
                            out.push(' ');
                        }
                    }
                } else if let Some((_, d)) = chars.next() {
                    match d {
                        ',' | '!' | ';' | ':' | '$' | '&' => {}
                        ' ' | '\\' => out.push(' '),
                        '%' => out.push('%'),
                        // `\(…\)` and `\[…\]` delimit math; the content is the answer.
                        '(' | ')' | '[' | ']' => {}
                        '{' | '}' | '|' => {
                            out.push('\\');
                            out.push(d);
                        }
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                }
            }
            '$' | '&' | '°' => {}
            '~' => out.push(' '),
            '−' | '–' => out.push('-'),
            '×' | '·' | '⋅' => out.push('*'),
            '÷' => out.push('/'),
            _ => out.push(c),
        }
    }
    out
}

/// Replaces every `\text{…}`-like wrapper (see [`UNWRAPPED`]) by its content between spaces, and
/// drops `\begin{…}` / `\end{…}`. Iterative, so deep nesting costs time bounded by the length cap,
/// never stack.
fn unwrap_text_macros(s: &str) -> String {
    let mut cur = s.to_string();
    // Each round removes at least one macro name, so the number of rounds is bounded by the length.
    loop {
        let Some((start, name_end, name)) = find_wrapper(&cur) else {
            return cur;
        };
        let after = &cur[name_end..];
        let skipped = after.len() - after.trim_start().len();
        let open = name_end + skipped;
        let keep_content = name != "begin" && name != "end";
        let replaced = if cur[open..].starts_with('{') {
            match matching_brace(&cur, open) {
                Some(close) => {
                    let content = if keep_content {
                        &cur[open + 1..close]
                    } else {
                        ""
                    };
                    format!("{} {} {}", &cur[..start], content, &cur[close + 1..])
                }
                // Unbalanced: drop the macro name only, the parser will reject what is left.
                None => format!("{}{}", &cur[..start], &cur[name_end..]),
            }
        } else {
            format!("{} {}", &cur[..start], &cur[name_end..])
        };
        cur = replaced;
    }
}

/// The first `\name` in `s` whose name is a wrapper: (start of the backslash, end of the name, name).
fn find_wrapper(s: &str) -> Option<(usize, usize, &str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let len = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .count();
            let name = &s[i + 1..i + 1 + len];
            if len > 0 && (UNWRAPPED.contains(&name) || name == "begin" || name == "end") {
                return Some((i, i + 1 + len, name));
            }
            i += 1 + len.max(1);
        } else {
            i += 1;
        }
    }
    None
}

/// Index of the `}` closing the `{` at `open`, skipping escaped braces `\{` and `\}`.
pub fn matching_brace(s: &str, open: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Words that look like units but are mathematics, so a trailing one is never stripped.
const NOT_UNITS: &[&str] = &[
    "pi", "sin", "cos", "tan", "cot", "sec", "csc", "ln", "log", "exp", "sqrt", "inf", "infty",
];

/// Drops trailing unit words after a number (`5 cm`, `12 square meters`, `50 km/h`, `9 cm^2`):
/// the issue asks for units to be ignored, and a word of two or more letters after a space cannot
/// be a product of variables a model meant (that would be written without the space).
pub fn strip_units(s: &str) -> &str {
    let mut end = s.len();
    // Each round moves `end` left past one word, so the loop ends.
    loop {
        let head = s[..end].trim_end();
        let Some(space) = head.rfind(' ') else {
            return s;
        };
        if !is_unit_word(&head[space + 1..]) {
            return s;
        }
        let before = head[..space].trim_end();
        match before.chars().last() {
            None => return s,
            Some(c) if c.is_ascii_digit() || matches!(c, '}' | ')' | '%') => return before,
            Some(_) => end = before.len(),
        }
    }
}

/// A unit-like word: letters (two or more), optionally `/letters` and a `^2`-style power.
fn is_unit_word(word: &str) -> bool {
    let base = match word.find('^') {
        Some(i) => {
            let pow = word[i + 1..].trim_matches(|c| c == '{' || c == '}');
            if pow.is_empty() || !pow.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            &word[..i]
        }
        None => word,
    };
    let letters = base.chars().filter(|c| c.is_ascii_alphabetic()).count();
    letters >= 2
        && base.chars().all(|c| c.is_ascii_alphabetic() || c == '/')
        && !base.starts_with('/')
        && !base.ends_with('/')
        && !NOT_UNITS.contains(&base.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_and_delimiters_vanish() {
        assert_eq!(normalize("\\left( 1 ,\\, 2 \\right)"), "( 1 , 2 )");
        assert_eq!(normalize("$\\dfrac{1}{2}$"), "\\frac{1}{2}");
        assert_eq!(normalize("90^\\circ"), "90");
        assert_eq!(normalize("1{,}000"), "1,000");
        assert_eq!(normalize("50\\%"), "50%");
        assert_eq!(normalize("\\left\\{1, 2\\right\\}"), "\\{1, 2\\}");
        assert_eq!(normalize("x \\le 3."), "x ≤ 3");
    }

    #[test]
    fn matrices_become_nested_tuples() {
        assert_eq!(
            normalize("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"),
            "((1, 2), (3, 4))"
        );
        assert_eq!(
            normalize("\\begin{bmatrix}1\\\\2\\end{bmatrix}"),
            "((1), (2))"
        );
    }

    #[test]
    fn arrays_and_thin_spaced_numbers() {
        assert_eq!(
            normalize("\\left[\\begin{array}{cc} 1 & 2 \\\\ 3 & 4 \\end{array}\\right]"),
            "[ ((1, 2), (3, 4)) ]"
        );
        assert_eq!(normalize("32,\\! 349"), "32,349");
        assert_eq!(normalize("1,\\!234,\\!567"), "1,234,567");
    }

    #[test]
    fn text_wrappers_are_unwrapped() {
        assert_eq!(normalize("\\text{(B)}"), "(B)");
        assert_eq!(normalize("5\\text{ cm}"), "5 cm");
        assert_eq!(normalize("\\textbf{\\text{yes}}"), "yes");
        assert_eq!(normalize("\\begin{cases}1\\end{cases}"), "1");
    }

    #[test]
    fn units_are_stripped_only_after_a_quantity() {
        assert_eq!(strip_units("5 cm"), "5");
        assert_eq!(strip_units("12 square meters"), "12");
        assert_eq!(strip_units("50 km/h"), "50");
        assert_eq!(strip_units("9 cm^2"), "9");
        assert_eq!(strip_units("2 \\pi"), "2 \\pi");
        assert_eq!(strip_units("2 x"), "2 x");
        assert_eq!(strip_units("yes"), "yes");
        assert_eq!(strip_units("no solution"), "no solution");
    }

    #[test]
    fn braces_match_across_escapes() {
        assert_eq!(matching_brace("{a\\}b}", 0), Some(5));
        assert_eq!(matching_brace("{{}", 0), None);
    }
}
