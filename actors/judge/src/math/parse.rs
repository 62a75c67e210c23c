//! Answer parser: normalised LaTeX or plain text to a [`Node`] tree.
//!
//! Recursive descent with an explicit depth budget ([`MAX_DEPTH`]) so `((((…))))` ten thousand
//! levels deep is refused instead of overflowing the stack. Nothing here evaluates anything; the
//! grammar only knows arithmetic, a fixed list of functions, relations, tuples, intervals and sets.

use super::lex::{lex, Tok, Token};
use super::number::{Rational, Value};
use super::syntax::{Func, ParseError, RelOp};

/// Deepest nesting the parser follows. Real answers nest a handful of levels; the bound keeps the
/// recursion (here, in evaluation, in comparison and in `Drop`) far inside any thread's stack.
pub const MAX_DEPTH: usize = 64;

/// A parsed answer. Scalars (numbers, variables, arithmetic) evaluate to values; the containers and
/// relations are compared structurally around those scalars.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A literal; `decimals` counts the digits written after the point (for rounded gold answers).
    Num { value: Value, decimals: u32 },
    /// A free variable such as `x`, `x_1` or `alpha`.
    Var(String),
    /// π.
    Pi,
    /// Euler's number: a lone `e` is read as the constant, as SymPy-based checkers do.
    Euler,
    /// `\infty`: only meaningful as an interval end or compared with another infinity.
    Inf,
    /// Negation; subtraction is a sum with a negated term.
    Neg(Box<Node>),
    /// A flat sum, so long sums do not nest.
    Add(Vec<Node>),
    /// A flat product, explicit or implicit (`2x`).
    Mul(Vec<Node>),
    /// Quotient: `a/b` or `\frac{a}{b}`.
    Div(Box<Node>, Box<Node>),
    /// Power: base, exponent.
    Pow(Box<Node>, Box<Node>),
    /// A named function applied to its argument.
    Func(Func, Box<Node>),
    /// `\log_b x` (natural logarithm when there is no base, as SymPy reads `\log`).
    Log {
        base: Option<Box<Node>>,
        arg: Box<Node>,
    },
    /// `\sqrt{x}` (index `None`) or `\sqrt[n]{x}`.
    Root {
        index: Option<Box<Node>>,
        arg: Box<Node>,
    },
    /// `n!`.
    Factorial(Box<Node>),
    /// `x%`: evaluates to `x/100`; the comparison also tries plain `x`.
    Percent(Box<Node>),
    /// `\binom{n}{k}`.
    Binom(Box<Node>, Box<Node>),
    /// `|x|`.
    Abs(Box<Node>),
    /// `(a, b)`, `[a, b)`, …: a tuple or an interval, told apart by the comparison.
    Bracketed {
        open: char,
        close: char,
        items: Vec<Node>,
    },
    /// `\{a, b\}`: order does not matter.
    Set(Vec<Node>),
    /// A bare `a, b` list, as models write several solutions.
    List(Vec<Node>),
    /// `a = b`, `a < b ≤ c`, …
    Relation {
        first: Box<Node>,
        rest: Vec<(RelOp, Node)>,
    },
    /// `(a, b) \cup [c, d]`.
    Union(Vec<Node>),
}

/// Parses one normalised answer.
pub fn parse(s: &str) -> Result<Node, ParseError> {
    let toks = lex(s)?;
    if toks.is_empty() {
        return Err(ParseError::Unexpected("empty answer".into()));
    }
    let mut p = Parser { toks, pos: 0 };
    let items = p.items(0)?;
    if p.pos != p.toks.len() {
        return Err(p.unexpected());
    }
    Ok(match items.len() {
        1 => items
            .into_iter()
            .next()
            .ok_or_else(|| ParseError::Unexpected("no item".into()))?,
        _ => Node::List(items),
    })
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, k: usize) -> Option<&Token> {
        self.toks.get(self.pos + k)
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok) -> Result<(), ParseError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn unexpected(&self) -> ParseError {
        match self.peek() {
            Some(t) => ParseError::Unexpected(format!("{t:?}")),
            None => ParseError::Unexpected("end of answer".into()),
        }
    }

    fn deeper(depth: usize) -> Result<usize, ParseError> {
        if depth >= MAX_DEPTH {
            Err(ParseError::TooDeep)
        } else {
            Ok(depth + 1)
        }
    }

    /// Comma-separated items up to (not including) a closing token or the end.
    fn items(&mut self, depth: usize) -> Result<Vec<Node>, ParseError> {
        let mut items = Vec::new();
        if matches!(
            self.peek(),
            None | Some(Tok::RParen | Tok::RBracket | Tok::RBrace | Tok::SetClose)
        ) {
            return Ok(items);
        }
        loop {
            items.push(self.union(depth)?);
            if !self.eat(&Tok::Comma) {
                return Ok(items);
            }
        }
    }

    fn union(&mut self, depth: usize) -> Result<Node, ParseError> {
        let first = self.relation(depth)?;
        if self.peek() != Some(&Tok::Cup) {
            return Ok(first);
        }
        let mut parts = vec![first];
        while self.eat(&Tok::Cup) {
            parts.push(self.relation(depth)?);
        }
        Ok(Node::Union(parts))
    }

    fn relation(&mut self, depth: usize) -> Result<Node, ParseError> {
        let first = self.sum(depth)?;
        let mut rest = Vec::new();
        while let Some(Tok::Rel(op)) = self.peek() {
            let op = *op;
            self.pos += 1;
            rest.push((op, self.sum(depth)?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Node::Relation {
                first: Box::new(first),
                rest,
            }
        })
    }

    fn sum(&mut self, depth: usize) -> Result<Node, ParseError> {
        let mut terms = vec![self.product(depth)?];
        loop {
            if self.eat(&Tok::Plus) {
                terms.push(self.product(depth)?);
            } else if self.eat(&Tok::Minus) {
                terms.push(Node::Neg(Box::new(self.product(depth)?)));
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 {
            terms.swap_remove(0)
        } else {
            Node::Add(terms)
        })
    }

    fn product(&mut self, depth: usize) -> Result<Node, ParseError> {
        let mut acc = self.unary(depth)?;
        // `a/b/c/…` nests to the left; each new level counts against the depth budget so later
        // recursive passes (evaluation, comparison, drop) stay shallow.
        let mut depth = depth;
        loop {
            let rhs = if self.eat(&Tok::Star) {
                self.unary(depth)?
            } else if self.eat(&Tok::Slash) {
                let rhs = self.unary(depth)?;
                depth = Self::deeper(depth)?;
                acc = Node::Div(Box::new(acc), Box::new(rhs));
                continue;
            } else if self.starts_implicit_factor() {
                self.power(depth)?
            } else {
                return Ok(acc);
            };
            if !matches!(acc, Node::Mul(_)) {
                depth = Self::deeper(depth)?;
            }
            acc = mul(acc, rhs);
        }
    }

    /// Whether the next token begins a factor written without `*` (`2x`, `3\sqrt{2}`, `2(x+1)`).
    fn starts_implicit_factor(&self) -> bool {
        matches!(
            self.peek(),
            Some(
                Tok::Num { .. }
                    | Tok::Ident(_)
                    | Tok::Func(_)
                    | Tok::Log
                    | Tok::Pi
                    | Tok::Euler
                    | Tok::Frac
                    | Tok::Sqrt
                    | Tok::Binom
                    | Tok::LParen
                    | Tok::LBrace
            )
        )
    }

    fn unary(&mut self, depth: usize) -> Result<Node, ParseError> {
        let depth = Self::deeper(depth)?;
        if self.eat(&Tok::Minus) {
            return Ok(Node::Neg(Box::new(self.unary(depth)?)));
        }
        if self.eat(&Tok::Plus) {
            return self.unary(depth);
        }
        self.power(depth)
    }

    /// A primary with its postfix operators: `!`, `%` and `^exponent` (right-associative).
    fn power(&mut self, depth: usize) -> Result<Node, ParseError> {
        let mut base = self.primary(depth)?;
        let mut depth = depth;
        loop {
            base = if self.eat(&Tok::Bang) {
                Node::Factorial(Box::new(base))
            } else if self.eat(&Tok::Percent) {
                Node::Percent(Box::new(base))
            } else if self.eat(&Tok::Caret) {
                let exp = self.script(depth)?;
                Node::Pow(Box::new(base), Box::new(exp))
            } else {
                return Ok(base);
            };
            // `5!!!…` and `x^{2}^{2}…` nest to the left: count each level.
            depth = Self::deeper(depth)?;
        }
    }

    /// An exponent: a braced group, or the next signed power, so `2^3^2` is `2^(3^2)` and
    /// `x^-1`, `2^10` read as written in plain text.
    fn script(&mut self, depth: usize) -> Result<Node, ParseError> {
        let depth = Self::deeper(depth)?;
        if self.peek() == Some(&Tok::LBrace) {
            self.group(depth)
        } else if self.eat(&Tok::Minus) {
            Ok(Node::Neg(Box::new(self.script(depth)?)))
        } else {
            self.power(depth)
        }
    }

    /// A LaTeX argument: `{…}` or one token (`\frac12`, `\sqrt2`, `\frac1x`).
    fn arg(&mut self, depth: usize) -> Result<Node, ParseError> {
        if self.peek() == Some(&Tok::LBrace) {
            self.group(depth)
        } else {
            self.primary(depth)
        }
    }

    /// `{ single expression }`.
    fn group(&mut self, depth: usize) -> Result<Node, ParseError> {
        self.expect(&Tok::LBrace)?;
        let inner = self.union(depth)?;
        self.expect(&Tok::RBrace)?;
        Ok(inner)
    }

    fn primary(&mut self, depth: usize) -> Result<Node, ParseError> {
        let depth = Self::deeper(depth)?;
        let Some(token) = self.toks.get(self.pos).cloned() else {
            return Err(self.unexpected());
        };
        self.pos += 1;
        match token.tok {
            Tok::Num {
                value, decimals, ..
            } => {
                let num = Node::Num { value, decimals };
                Ok(self.mixed_number(num).unwrap_or_else(|n| n))
            }
            Tok::Ident(name) => {
                if self.eat(&Tok::Underscore) {
                    let sub = self.subscript()?;
                    Ok(Node::Var(format!("{name}_{sub}")))
                } else {
                    Ok(Node::Var(name))
                }
            }
            Tok::Pi => Ok(Node::Pi),
            Tok::Euler => Ok(Node::Euler),
            Tok::Inf => Ok(Node::Inf),
            Tok::EmptySet => Ok(Node::Set(Vec::new())),
            Tok::Frac => {
                let num = self.arg(depth)?;
                let den = self.arg(depth)?;
                Ok(Node::Div(Box::new(num), Box::new(den)))
            }
            Tok::Binom => {
                let n = self.arg(depth)?;
                let k = self.arg(depth)?;
                Ok(Node::Binom(Box::new(n), Box::new(k)))
            }
            Tok::Sqrt => {
                let index = if self.eat(&Tok::LBracket) {
                    let index = self.sum(depth)?;
                    self.expect(&Tok::RBracket)?;
                    Some(Box::new(index))
                } else {
                    None
                };
                let arg = self.arg(depth)?;
                Ok(Node::Root {
                    index,
                    arg: Box::new(arg),
                })
            }
            Tok::Func(f) => {
                let power = self.function_power(depth)?;
                let arg = self.function_arg(depth)?;
                // `\sin^{-1}` is the inverse function, not a reciprocal.
                if power.as_ref().is_some_and(is_minus_one) {
                    if let Some(inverse) = inverse_trig(f) {
                        return Ok(Node::Func(inverse, Box::new(arg)));
                    }
                }
                Ok(with_power(Node::Func(f, Box::new(arg)), power))
            }
            Tok::Log => {
                let base = if self.eat(&Tok::Underscore) {
                    Some(Box::new(self.script(depth)?))
                } else {
                    None
                };
                let power = self.function_power(depth)?;
                let arg = self.function_arg(depth)?;
                Ok(with_power(
                    Node::Log {
                        base,
                        arg: Box::new(arg),
                    },
                    power,
                ))
            }
            Tok::LParen | Tok::LBracket => {
                let open = if token.tok == Tok::LParen { '(' } else { '[' };
                let items = self.items(depth)?;
                let close = match self.peek() {
                    Some(Tok::RParen) => ')',
                    Some(Tok::RBracket) => ']',
                    _ => return Err(self.unexpected()),
                };
                self.pos += 1;
                let grouping = items.len() == 1 && (open == '(') == (close == ')');
                if grouping {
                    Ok(items.into_iter().next().unwrap_or(Node::List(Vec::new())))
                } else {
                    Ok(Node::Bracketed { open, close, items })
                }
            }
            Tok::LBrace => {
                let mut items = self.items(depth)?;
                self.expect(&Tok::RBrace)?;
                if items.len() == 1 {
                    Ok(items.swap_remove(0))
                } else {
                    Ok(Node::Set(items))
                }
            }
            Tok::SetOpen => {
                let items = self.items(depth)?;
                self.expect(&Tok::SetClose)?;
                Ok(Node::Set(items))
            }
            Tok::Bar => {
                let inner = self.sum(depth)?;
                self.expect(&Tok::Bar)?;
                Ok(Node::Abs(Box::new(inner)))
            }
            other => Err(ParseError::Unexpected(format!("{other:?}"))),
        }
    }

    /// `\sin^2`: a power written between the function name and its argument.
    fn function_power(&mut self, depth: usize) -> Result<Option<Node>, ParseError> {
        if self.eat(&Tok::Caret) {
            Ok(Some(self.script(depth)?))
        } else {
            Ok(None)
        }
    }

    /// A function argument: parenthesised, braced, or the next signed factor (`\sin x`, `\ln 2`).
    fn function_arg(&mut self, depth: usize) -> Result<Node, ParseError> {
        self.unary(depth)
    }

    /// Subscript text: one token or a braced run of numbers and letters (`x_1`, `a_{n+1}` is not).
    fn subscript(&mut self) -> Result<String, ParseError> {
        let braced = self.eat(&Tok::LBrace);
        let mut text = String::new();
        loop {
            match self.peek() {
                Some(Tok::Num { text: t, .. }) => text.push_str(t),
                Some(Tok::Ident(t)) => text.push_str(t),
                _ => break,
            }
            self.pos += 1;
            if !braced {
                break;
            }
        }
        if braced {
            self.expect(&Tok::RBrace)?;
        }
        if text.is_empty() {
            return Err(self.unexpected());
        }
        Ok(text)
    }

    /// After an integer literal: the mixed numbers `1\frac{1}{2}` and `1 1/2` mean 1 + 1/2. Returns
    /// `Ok(sum)` when the tokens that follow form one, `Err(num)` (the literal, untouched) otherwise.
    fn mixed_number(&mut self, whole: Node) -> Result<Node, Node> {
        let Node::Num {
            value: Value::Exact(w),
            ..
        } = &whole
        else {
            return Err(whole);
        };
        if !w.is_integer() || matches!(self.peek(), Some(Tok::Caret)) {
            return Err(whole);
        }
        let int_at = |p: &Parser, k: usize| {
            p.peek_at(k).and_then(|t| match &t.tok {
                Tok::Num {
                    value: Value::Exact(r),
                    decimals: 0,
                    ..
                } if r.is_integer() => Some(*r),
                _ => None,
            })
        };
        let tok_at = |p: &Parser, k: usize| p.peek_at(k).map(|t| t.tok.clone());
        let (num, den, used) = if tok_at(self, 0) == Some(Tok::Frac) {
            match (
                tok_at(self, 1),
                tok_at(self, 3),
                tok_at(self, 4),
                tok_at(self, 6),
            ) {
                (Some(Tok::LBrace), Some(Tok::RBrace), Some(Tok::LBrace), Some(Tok::RBrace)) => {
                    match (int_at(self, 2), int_at(self, 5)) {
                        (Some(n), Some(d)) => (n, d, 7),
                        _ => return Err(whole),
                    }
                }
                _ => match (int_at(self, 1), int_at(self, 2)) {
                    (Some(n), Some(d)) => (n, d, 3),
                    _ => return Err(whole),
                },
            }
        } else if self.peek_at(0).is_some_and(|t| t.space_before)
            && tok_at(self, 1) == Some(Tok::Slash)
            && !matches!(
                tok_at(self, 3),
                Some(Tok::Caret | Tok::Ident(_) | Tok::LParen)
            )
        {
            match (int_at(self, 0), int_at(self, 2)) {
                (Some(n), Some(d)) => (n, d, 3),
                _ => return Err(whole),
            }
        } else {
            return Err(whole);
        };
        // A mixed number's fraction is proper; `2\frac{3}{2}` is more likely a product.
        if num.numer() < 0 || den.numer() <= 0 || num.numer() >= den.numer() {
            return Err(whole);
        }
        self.pos += used;
        let frac = Node::Div(Box::new(int_node(num)), Box::new(int_node(den)));
        Ok(Node::Add(vec![whole, frac]))
    }
}

fn int_node(r: Rational) -> Node {
    Node::Num {
        value: Value::Exact(r),
        decimals: 0,
    }
}

/// Appends a factor to a product, keeping products flat (no deep trees from `abcdef…`).
fn mul(acc: Node, rhs: Node) -> Node {
    match acc {
        Node::Mul(mut factors) => {
            factors.push(rhs);
            Node::Mul(factors)
        }
        other => Node::Mul(vec![other, rhs]),
    }
}

fn is_minus_one(n: &Node) -> bool {
    match n {
        Node::Neg(x) => {
            matches!(**x, Node::Num { value: Value::Exact(r), .. } if r == Rational::integer(1))
        }
        _ => false,
    }
}

fn inverse_trig(f: Func) -> Option<Func> {
    match f {
        Func::Sin => Some(Func::Asin),
        Func::Cos => Some(Func::Acos),
        Func::Tan => Some(Func::Atan),
        _ => None,
    }
}

fn with_power(node: Node, power: Option<Node>) -> Node {
    match power {
        Some(p) => Node::Pow(Box::new(node), Box::new(p)),
        None => node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(n: i128) -> Node {
        int_node(Rational::integer(n))
    }

    #[test]
    fn arithmetic_precedence() {
        let parsed = parse("1+2*3").expect("parses");
        assert_eq!(
            parsed,
            Node::Add(vec![num(1), Node::Mul(vec![num(2), num(3)])])
        );
    }

    #[test]
    fn thousands_and_decimals() {
        let Ok(Node::Num { value, decimals }) = parse("1,234,567.25") else {
            panic!("not a number");
        };
        assert_eq!(
            value,
            Value::Exact(Rational::new(123_456_725, 100).expect("valid"))
        );
        assert_eq!(decimals, 2);
        // Not a thousands group: a list.
        assert!(matches!(parse("1,23"), Ok(Node::List(_))));
    }

    #[test]
    fn scientific_notation_is_exact() {
        let Ok(Node::Num { value, .. }) = parse("1.5e3") else {
            panic!("not a number");
        };
        assert_eq!(value, Value::Exact(Rational::integer(1500)));
    }

    #[test]
    fn mixed_numbers() {
        let expected = Node::Add(vec![num(1), Node::Div(Box::new(num(1)), Box::new(num(2)))]);
        assert_eq!(parse("1\\frac{1}{2}"), Ok(expected.clone()));
        assert_eq!(parse("1 1/2"), Ok(expected.clone()));
        assert_eq!(parse("1\\frac12"), Ok(expected));
        // Not mixed: an improper fraction after an integer is a product.
        assert!(matches!(parse("2\\frac{3}{2}"), Ok(Node::Mul(_))));
    }

    #[test]
    fn containers() {
        assert!(matches!(
            parse("(1,2]"),
            Ok(Node::Bracketed {
                open: '(',
                close: ']',
                ..
            })
        ));
        assert!(matches!(parse("\\{1,2\\}"), Ok(Node::Set(_))));
        assert!(matches!(parse("1, 2"), Ok(Node::List(_))));
        assert!(matches!(parse("(1,2) ∪ (3,4)"), Ok(Node::Union(_))));
        assert_eq!(parse("(x)"), Ok(Node::Var("x".into())));
    }

    #[test]
    fn words_are_not_mathematics() {
        assert!(matches!(parse("yes"), Err(ParseError::Unsupported(_))));
        assert!(matches!(parse("\\int x"), Err(ParseError::Unsupported(_))));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(parse(&deep), Err(ParseError::TooDeep));
        let minus = "-".repeat(10_000) + "1";
        assert_eq!(parse(&minus), Err(ParseError::TooDeep));
        let powers = "2^".repeat(10_000) + "2";
        assert_eq!(parse(&powers), Err(ParseError::TooDeep));
        let quotients = "1".to_string() + &"/2".repeat(10_000);
        assert_eq!(parse(&quotients), Err(ParseError::TooDeep));
        let factorials = "3".to_string() + &"!".repeat(10_000);
        assert_eq!(parse(&factorials), Err(ParseError::TooDeep));
        let braces = format!("{}1{}", "{".repeat(10_000), "}".repeat(10_000));
        assert_eq!(parse(&braces), Err(ParseError::TooDeep));
    }
}
