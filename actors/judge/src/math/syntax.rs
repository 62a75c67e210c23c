//! The words the lexer and the parser share: the functions and relations an answer may use, and
//! why an answer is not mathematics we can compare. Their own file so that the lexer, which
//! produces them, does not depend on the parser, which consumes its tokens.

/// Why an answer is not mathematics we can compare; the caller falls back to text comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A character or macro outside the grammar, e.g. a word or `\int`.
    Unsupported(String),
    /// The input ended or a token appeared where the grammar expected something else.
    Unexpected(String),
    /// Nesting deeper than the parser's `MAX_DEPTH`.
    TooDeep,
}

/// Functions of one argument the evaluator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Exp,
    Ln,
}

/// Relations between two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}
