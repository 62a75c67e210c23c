//! Lexer for normalised answers: numbers (with thousands commas, decimals and `e` exponents read
//! exactly), single-letter variables, the known function words and macros, operators and
//! brackets. Linear in the input; an unknown macro or a word ends lexing with an error.

use super::number::{Rational, Value};
use super::syntax::{Func, ParseError, RelOp};

/// One token of a normalised answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Num {
        value: Value,
        decimals: u32,
        text: String,
    },
    Ident(String),
    Func(Func),
    Log,
    Pi,
    Euler,
    Inf,
    Frac,
    Sqrt,
    Binom,
    Plus,
    Minus,
    Star,
    Slash,
    Caret,
    Underscore,
    Bang,
    Percent,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    SetOpen,
    SetClose,
    Bar,
    Rel(RelOp),
    Cup,
    EmptySet,
}

/// A token and the spacing before it.
#[derive(Clone, Debug)]
pub struct Token {
    /// What was read.
    pub tok: Tok,
    /// Whitespace came before it: tells the mixed number `1 1/2` from `11/2`.
    pub space_before: bool,
}

/// Multi-letter words that are mathematics, as plain text or after a backslash.
fn word_token(word: &str) -> Option<Tok> {
    Some(match word {
        "sin" => Tok::Func(Func::Sin),
        "cos" => Tok::Func(Func::Cos),
        "tan" => Tok::Func(Func::Tan),
        "cot" => Tok::Func(Func::Cot),
        "sec" => Tok::Func(Func::Sec),
        "csc" => Tok::Func(Func::Csc),
        "arcsin" => Tok::Func(Func::Asin),
        "arccos" => Tok::Func(Func::Acos),
        "arctan" => Tok::Func(Func::Atan),
        "sinh" => Tok::Func(Func::Sinh),
        "cosh" => Tok::Func(Func::Cosh),
        "tanh" => Tok::Func(Func::Tanh),
        "exp" => Tok::Func(Func::Exp),
        "ln" => Tok::Func(Func::Ln),
        "log" => Tok::Log,
        "sqrt" => Tok::Sqrt,
        "pi" => Tok::Pi,
        "inf" | "infty" | "infinity" => Tok::Inf,
        _ => return None,
    })
}

/// Macro names that are variables.
const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];

/// Splits a normalised answer into tokens; a word of three or more letters that is no function
/// makes the answer text, not mathematics.
pub fn lex(s: &str) -> Result<Vec<Token>, ParseError> {
    let bytes = s.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let mut space = false;
    // After `\frac`/`\sqrt`/`\binom` without braces, LaTeX takes single characters as arguments:
    // `\frac12` is 1/2. This counts how many such one-digit arguments may still follow.
    let mut single_digit_args = 0u8;
    while i < s.len() {
        let c = s[i..].chars().next().unwrap_or(' ');
        if c.is_whitespace() {
            space = true;
            i += c.len_utf8();
            continue;
        }
        let (tok, len) = if c.is_ascii_digit() || (c == '.' && next_is_digit(bytes, i + 1)) {
            if single_digit_args > 0 && c.is_ascii_digit() {
                single_digit_args -= 1;
                let d = i128::from(bytes[i] - b'0');
                let tok = Tok::Num {
                    value: Value::Exact(Rational::integer(d)),
                    decimals: 0,
                    text: s[i..i + 1].to_string(),
                };
                push(&mut toks, tok, &mut space);
                i += 1;
                continue;
            }
            lex_number(s, i)
        } else if c.is_ascii_alphabetic() {
            let len = bytes[i..]
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .count();
            let word = &s[i..i + len];
            let in_subscript = matches!(
                toks.as_slice(),
                [
                    ..,
                    Token {
                        tok: Tok::Underscore,
                        ..
                    }
                ] | [
                    ..,
                    Token {
                        tok: Tok::Underscore,
                        ..
                    },
                    Token {
                        tok: Tok::LBrace,
                        ..
                    }
                ]
            );
            if in_subscript {
                // A label in a subscript (`S_{MBCN}`) names a variable; it is not a word.
                (Tok::Ident(word.to_string()), len)
            } else if let Some(tok) = word_token(word) {
                (tok, len)
            } else if len >= 3 {
                // Three or more letters that are no function: a word, so the answer is text.
                return Err(ParseError::Unsupported(word.to_string()));
            } else {
                // `xy` is x times y: one letter at a time.
                match &s[i..i + 1] {
                    "e" => (Tok::Euler, 1),
                    letter => (Tok::Ident(letter.to_string()), 1),
                }
            }
        } else if c == '\\' {
            let len = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .count();
            if len == 0 {
                match bytes.get(i + 1) {
                    Some(b'{') => (Tok::SetOpen, 2),
                    Some(b'}') => (Tok::SetClose, 2),
                    Some(b'|') => (Tok::Bar, 2),
                    _ => return Err(ParseError::Unsupported(s[i..].chars().take(2).collect())),
                }
            } else {
                let name = &s[i + 1..i + 1 + len];
                let tok = match name {
                    "frac" => Tok::Frac,
                    "binom" => Tok::Binom,
                    "cup" => Tok::Cup,
                    _ if GREEK.contains(&name) => Tok::Ident(name.to_string()),
                    _ => word_token(name)
                        .ok_or_else(|| ParseError::Unsupported(format!("\\{name}")))?,
                };
                (tok, len + 1)
            }
        } else {
            let tok = match c {
                '+' => Tok::Plus,
                '-' => Tok::Minus,
                // `**` is the power operator of Python-style answers.
                '*' if bytes.get(i + 1) == Some(&b'*') => {
                    push(&mut toks, Tok::Caret, &mut space);
                    i += 2;
                    continue;
                }
                '*' => Tok::Star,
                // A ratio `7:32` is the quotient 7/32 (`S_{ABC}:S=7:32` states it with a label).
                '/' | ':' => Tok::Slash,
                '^' => Tok::Caret,
                '_' => Tok::Underscore,
                '%' => Tok::Percent,
                ',' | ';' => Tok::Comma,
                '(' => Tok::LParen,
                ')' => Tok::RParen,
                '[' => Tok::LBracket,
                ']' => Tok::RBracket,
                '{' => Tok::LBrace,
                '}' => Tok::RBrace,
                '|' => Tok::Bar,
                '∞' => Tok::Inf,
                'π' => Tok::Pi,
                '∅' => Tok::EmptySet,
                '∪' => Tok::Cup,
                '≤' => Tok::Rel(RelOp::Le),
                '≥' => Tok::Rel(RelOp::Ge),
                '≠' => Tok::Rel(RelOp::Ne),
                '=' => Tok::Rel(RelOp::Eq),
                '<' | '>' | '!' => {
                    let eq = bytes.get(i + 1) == Some(&b'=');
                    let tok = match (c, eq) {
                        ('<', false) => Tok::Rel(RelOp::Lt),
                        ('<', true) => Tok::Rel(RelOp::Le),
                        ('>', false) => Tok::Rel(RelOp::Gt),
                        ('>', true) => Tok::Rel(RelOp::Ge),
                        ('!', true) => Tok::Rel(RelOp::Ne),
                        _ => Tok::Bang,
                    };
                    let len = if eq { 2 } else { 1 };
                    push(&mut toks, tok, &mut space);
                    i += len;
                    continue;
                }
                other => return Err(ParseError::Unsupported(other.to_string())),
            };
            (tok, c.len_utf8())
        };
        single_digit_args = match tok {
            Tok::Frac | Tok::Binom => 2,
            Tok::Sqrt => 1,
            Tok::Num { .. } | Tok::Ident(_) if single_digit_args > 0 => single_digit_args - 1,
            _ => 0,
        };
        push(&mut toks, tok, &mut space);
        i += len;
    }
    Ok(toks)
}

fn push(toks: &mut Vec<Token>, tok: Tok, space: &mut bool) {
    toks.push(Token {
        tok,
        space_before: *space,
    });
    *space = false;
}

fn next_is_digit(bytes: &[u8], i: usize) -> bool {
    bytes.get(i).is_some_and(u8::is_ascii_digit)
}

/// Lexes `1,234.5e-3`: thousands commas (groups of exactly three digits), a decimal part and an
/// exponent written `e`/`E` followed by digits. Returns the token and the bytes it used.
fn lex_number(s: &str, start: usize) -> (Tok, usize) {
    let bytes = s.as_bytes();
    let mut i = start;
    let mut digits = String::new();
    while next_is_digit(bytes, i) {
        digits.push(char::from(bytes[i]));
        i += 1;
    }
    // Thousands separators only on a first group of 1-3 digits, then exact groups of three.
    if (1..=3).contains(&digits.len()) {
        while bytes.get(i) == Some(&b',')
            && (1..=3).all(|k| next_is_digit(bytes, i + k))
            && !next_is_digit(bytes, i + 4)
        {
            digits.push_str(&s[i + 1..i + 4]);
            i += 4;
        }
    }
    let mut decimals = 0u32;
    if bytes.get(i) == Some(&b'.') && next_is_digit(bytes, i + 1) {
        i += 1;
        while next_is_digit(bytes, i) {
            digits.push(char::from(bytes[i]));
            decimals += 1;
            i += 1;
        }
    }
    let mut exponent: i128 = 0;
    let mut exponent_ok = true;
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let sign_len = usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
        if next_is_digit(bytes, i + 1 + sign_len) {
            let exp_start = i + 1;
            i += 1 + sign_len;
            while next_is_digit(bytes, i) {
                i += 1;
            }
            match s[exp_start..i].parse::<i128>() {
                Ok(e) => exponent = e,
                Err(_) => exponent_ok = false,
            }
        }
    }
    let text = s[start..i].to_string();
    let exact = exponent_ok
        .then(|| digits.parse::<i128>().ok())
        .flatten()
        .and_then(|mantissa| {
            let scale = i128::from(decimals).checked_sub(exponent)?;
            let ten = Rational::integer(10);
            let factor = ten.pow(scale.checked_neg()?)?;
            Rational::integer(mantissa).mul(factor)
        });
    let value = match exact {
        Some(r) => Value::Exact(r),
        // Too long or too large for i128: the f64 reading of the same text (possibly infinite,
        // which evaluation then refuses).
        None => Value::Approx(text.replace(',', "").parse::<f64>().unwrap_or(f64::NAN)),
    };
    (
        Tok::Num {
            value,
            decimals,
            text,
        },
        i - start,
    )
}
