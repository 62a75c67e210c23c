//! Answer equivalence: normalise both answers, parse them, and compare the trees — containers and
//! relations by structure, scalars by value at a few fixed points (so `2x+3` equals `3+2x` without
//! a computer-algebra system). What does not parse is compared as text.

use super::eval::{collect_vars, eval};
use super::latex::{normalize, strip_units, MAX_ANSWER_BYTES};
use super::number::{values_close, Rational, Value};
use super::parse::{parse, Node};
use super::syntax::{ParseError, RelOp};

/// Most free variables an answer may have; beyond it the answer is not a short closed form.
const MAX_VARIABLES: usize = 12;

/// Most items a set or list may have before the unordered match (quadratic) is refused.
const MAX_ITEMS: usize = 64;

/// Evaluation points for variables: small rationals of both signs, none of 0, ±1 or 2 where
/// distinct expressions often agree. Variable `j` at point `k` takes entry `(k + 3j) mod len`.
const POINTS: [(i128, i128); 10] = [
    (7, 3),
    (11, 5),
    (13, 4),
    (-5, 7),
    (29, 3),
    (2, 9),
    (-17, 6),
    (41, 7),
    (3, 11),
    (23, 2),
];

/// How many of [`POINTS`] an expression with variables is evaluated at.
const POINTS_USED: usize = 6;

/// Whether two answers agree. See [`super::equivalent`] for the contract.
pub fn answers_equivalent(predicted: &str, gold: &str) -> bool {
    if predicted.len() > MAX_ANSWER_BYTES || gold.len() > MAX_ANSWER_BYTES {
        return false;
    }
    let p = normalize(predicted);
    let g = normalize(gold);
    if p.is_empty() || g.is_empty() {
        return false;
    }
    if p == g {
        return true;
    }
    if let Some(letter) = gold_choice(&g) {
        return predicted_choice(&p) == Some(letter);
    }
    // Words compare without case before `No` can be read as the product N·o.
    let wordy = |s: &str| s.chars().all(|c| c.is_alphabetic() || c == ' ');
    if wordy(&p) && wordy(&g) && p.to_lowercase() == g.to_lowercase() {
        return true;
    }
    match (parse_answer(strip_units(&p)), parse_answer(strip_units(&g))) {
        // Both are mathematics: the mathematical verdict is final (text keys would let `-7` match
        // `7` by trimming the sign).
        (Ok(pn), Ok(gn)) => {
            nodes_equivalent(&distribute_over_tuples(pn), &distribute_over_tuples(gn))
        }
        _ => text_key(&p) == text_key(&g),
    }
}

/// Most cells a matrix product or sum is distributed over: a real answer's matrix is small.
const MAX_DISTRIBUTED_CELLS: usize = 64;

/// Simple matrix arithmetic, distributed cell by cell so it compares with its result: a scalar
/// times a matrix or vector (`2\begin{pmatrix}1&2\\3&4\end{pmatrix}`), a negated one, and sums of
/// same-shaped ones. Matrices are nested `(…)` tuples after normalisation; anything else is
/// returned as it was.
fn distribute_over_tuples(n: Node) -> Node {
    let is_tuple = |n: &Node| {
        matches!(
            n,
            Node::Bracketed {
                open: '(',
                close: ')',
                ..
            }
        )
    };
    let cells = |n: &Node| match n {
        Node::Bracketed { items, .. } => items.len(),
        _ => 0,
    };
    match n {
        Node::Neg(inner) if is_tuple(&inner) && cells(&inner) <= MAX_DISTRIBUTED_CELLS => {
            map_cells(*inner, |cell| {
                distribute_over_tuples(Node::Neg(Box::new(cell)))
            })
        }
        Node::Mul(factors)
            if factors.iter().filter(|f| is_tuple(f)).count() == 1
                && factors.iter().all(|f| is_tuple(f) || is_scalar(f))
                && factors.iter().map(cells).sum::<usize>() <= MAX_DISTRIBUTED_CELLS =>
        {
            let (mut tuples, scalars): (Vec<Node>, Vec<Node>) =
                factors.into_iter().partition(|f| is_tuple(f));
            let Some(tuple) = tuples.pop() else {
                return Node::Mul(scalars);
            };
            map_cells(tuple, |cell| {
                let mut product = scalars.clone();
                product.push(cell);
                distribute_over_tuples(Node::Mul(product))
            })
        }
        Node::Add(terms) if terms.len() > 1 => {
            let terms: Vec<Node> = terms.into_iter().map(distribute_over_tuples).collect();
            let shape = cells(&terms[0]);
            let same_shape = terms.iter().all(|t| is_tuple(t) && cells(t) == shape);
            if !same_shape || shape == 0 || shape > MAX_DISTRIBUTED_CELLS {
                return Node::Add(terms);
            }
            let columns: Vec<Vec<Node>> = terms
                .into_iter()
                .map(|t| match t {
                    Node::Bracketed { items, .. } => items,
                    other => vec![other],
                })
                .collect();
            let items = (0..shape)
                .map(|i| {
                    distribute_over_tuples(Node::Add(
                        columns.iter().map(|c| c[i].clone()).collect(),
                    ))
                })
                .collect();
            Node::Bracketed {
                open: '(',
                close: ')',
                items,
            }
        }
        other => other,
    }
}

/// A tuple with `f` applied to each cell.
fn map_cells(tuple: Node, f: impl Fn(Node) -> Node) -> Node {
    match tuple {
        Node::Bracketed { open, close, items } => Node::Bracketed {
            open,
            close,
            items: items.into_iter().map(f).collect(),
        },
        other => other,
    }
}

/// Parses a normalised answer; one `\pm` (or `±`) stands for both signs, so `x = \pm 2` is the
/// list `x = 2, x = -2`; semicolons separate whole solutions, so `p=5,q=2; p=7,q=2` is a list of
/// two pairs.
fn parse_answer(s: &str) -> Result<Node, ParseError> {
    if s.contains(';') {
        let groups = s
            .split(';')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(parse_answer)
            .collect::<Result<Vec<_>, _>>()?;
        return match groups.len() {
            0 => Err(ParseError::Unexpected("empty answer".into())),
            1 => Ok(groups.into_iter().next().unwrap_or(Node::List(Vec::new()))),
            _ => Ok(Node::List(groups)),
        };
    }
    for pm in ["\\pm", "±"] {
        if s.matches(pm).count() == 1 {
            let plus = parse(&s.replacen(pm, "+", 1))?;
            let minus = parse(&s.replacen(pm, "-", 1))?;
            return Ok(Node::List(vec![plus, minus]));
        }
    }
    parse(s)
}

/// A multiple-choice gold answer: one capital letter, maybe in parentheses (`B`, `(B)`).
fn gold_choice(g: &str) -> Option<char> {
    let inner = g
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .trim();
    let mut chars = inner.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_uppercase() => Some(c),
        _ => None,
    }
}

/// The letter a prediction picks: `B`, `b`, `(B)`, `B)`, `B.`, `Option B`, `(B) 42`.
fn predicted_choice(p: &str) -> Option<char> {
    let lower = p.trim().to_ascii_lowercase();
    let mut rest = lower.as_str();
    for prefix in ["the answer is", "answer:", "answer", "option", "choice"] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest).trim_start();
    }
    let rest = rest.trim_start_matches('(');
    let mut chars = rest.chars();
    let letter = chars.next().filter(char::is_ascii_alphabetic)?;
    let tail = chars.as_str().trim_start_matches([')', '.', ':']);
    // A lone letter, or a letter closed by `)`/`.`/`:` and followed by the option's text; but
    // not a hedge naming a second option, `(A) or (B)`.
    let closed = chars.as_str().starts_with([')', '.', ':']);
    let names_another = tail
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'(' && w[1].is_ascii_alphabetic() && w[2] == b')');
    ((tail.trim().is_empty() || (closed && tail.starts_with(' '))) && !names_another)
        .then(|| letter.to_ascii_uppercase())
}

/// Text answers compare without case, sentence punctuation at the end or a leading "the answer
/// is".
fn text_key(s: &str) -> String {
    let lower = s.to_lowercase();
    let mut t = lower.trim();
    for prefix in [
        "the final answer is",
        "the answer is",
        "final answer:",
        "answer:",
    ] {
        t = t.strip_prefix(prefix).unwrap_or(t).trim();
    }
    // Braces and backslashes stay: after `normalize` they are structure, and `{{1}}` is no word.
    t.trim_end_matches(['.', '!', '?', ';', ':'])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Structural comparison of two trees, numeric at the leaves.
pub fn nodes_equivalent(p: &Node, g: &Node) -> bool {
    match (p, g) {
        (Node::Relation { .. }, Node::Relation { .. }) => {
            relations_equivalent(p, g)
                || inequality_matches_membership(p, g)
                || inequality_matches_membership(g, p)
        }
        // `x > 5` against `(5, \infty)`; `x = 5` against `5`: the value after the last `=`.
        (Node::Relation { .. }, _) => {
            relation_as_interval(p).is_some_and(|i| nodes_equivalent(&i, g))
                || equation_value(p).is_some_and(|v| nodes_equivalent(v, g))
        }
        (_, Node::Relation { .. }) => {
            relation_as_interval(g).is_some_and(|i| nodes_equivalent(p, &i))
                || equation_value(g).is_some_and(|v| nodes_equivalent(p, v))
        }
        // `x < 1 \text{ or } x > 3` against `(-\infty, 1) \cup (3, \infty)`.
        (Node::List(items), Node::Union(_)) => {
            relations_as_union(items).is_some_and(|u| nodes_equivalent(&u, g))
        }
        (Node::Union(_), Node::List(items)) => {
            relations_as_union(items).is_some_and(|u| nodes_equivalent(p, &u))
        }
        (Node::Set(a) | Node::List(a), Node::Set(b) | Node::List(b))
        | (Node::Union(a), Node::Union(b)) => unordered_equivalent(a, b),
        (
            Node::Bracketed {
                open: o1,
                close: c1,
                items: a,
            },
            Node::Bracketed {
                open: o2,
                close: c2,
                items: b,
            },
        ) => o1 == o2 && c1 == c2 && ordered_equivalent(a, b),
        // A bare list matches a tuple in order (`1, 2` is `(1, 2)`), never an interval.
        (
            Node::List(a),
            Node::Bracketed {
                open: '(',
                close: ')',
                items: b,
            },
        )
        | (
            Node::Bracketed {
                open: '(',
                close: ')',
                items: a,
            },
            Node::List(b),
        ) => ordered_equivalent(a, b),
        // `\{5\}` against `5`.
        (Node::Set(a), other) | (other, Node::Set(a)) if a.len() == 1 && is_scalar(other) => {
            nodes_equivalent(&a[0], other)
        }
        _ if is_scalar(p) && is_scalar(g) => scalars_equivalent(p, g),
        _ => false,
    }
}

fn is_scalar(n: &Node) -> bool {
    !matches!(
        n,
        Node::Bracketed { .. }
            | Node::Set(_)
            | Node::List(_)
            | Node::Relation { .. }
            | Node::Union(_)
    )
}

/// `-2 ≤ x ≤ 7` against `x \in [-2, 7]` (normalised to `x = [-2, 7]`): the inequality's interval
/// against the interval the variable is said to lie in.
fn inequality_matches_membership(inequality: &Node, membership: &Node) -> bool {
    match (relation_as_interval(inequality), equation_value(membership)) {
        (Some(interval), Some(value)) if !is_scalar(value) => nodes_equivalent(&interval, value),
        _ => false,
    }
}

/// Several inequalities read as the union of their intervals; `None` when one is no inequality.
fn relations_as_union(items: &[Node]) -> Option<Node> {
    items
        .iter()
        .map(relation_as_interval)
        .collect::<Option<Vec<_>>>()
        .map(Node::Union)
}

/// The interval a one-variable inequality describes: `x > 5` is `(5, ∞)`, `1 ≤ x < 3` is `[1, 3)`;
/// the bounded quantity may also be a function value written `f(x)` (`0 < f(x) < 1` is `(0, 1)`).
fn relation_as_interval(n: &Node) -> Option<Node> {
    let Node::Relation { first, rest } = n else {
        return None;
    };
    // A variable, or a function of one written `f(x)` (a product of single variables); not
    // `x^2 < 4`, whose solution set is no ray.
    let is_var = |n: &Node| match n {
        Node::Var(_) => true,
        Node::Mul(factors) => factors.iter().all(|f| matches!(f, Node::Var(_))),
        _ => false,
    };
    let closed = |op: RelOp| matches!(op, RelOp::Le | RelOp::Ge);
    let infinity = |sign: bool| {
        if sign {
            Node::Inf
        } else {
            Node::Neg(Box::new(Node::Inf))
        }
    };
    let (low, low_closed, high, high_closed) = match rest.as_slice() {
        // a < x < b (or a > x > b).
        [(op1, x), (op2, b)] if is_var(x) && !is_var(first) && !is_var(b) => match (op1, op2) {
            (RelOp::Lt | RelOp::Le, RelOp::Lt | RelOp::Le) => {
                ((**first).clone(), closed(*op1), b.clone(), closed(*op2))
            }
            (RelOp::Gt | RelOp::Ge, RelOp::Gt | RelOp::Ge) => {
                (b.clone(), closed(*op2), (**first).clone(), closed(*op1))
            }
            _ => return None,
        },
        [(op, bound)] if is_var(first) && !is_var(bound) => match op {
            RelOp::Lt | RelOp::Le => (infinity(false), false, bound.clone(), closed(*op)),
            RelOp::Gt | RelOp::Ge => (bound.clone(), closed(*op), infinity(true), false),
            _ => return None,
        },
        [(op, x)] if is_var(x) && !is_var(first) => match op {
            RelOp::Lt | RelOp::Le => ((**first).clone(), closed(*op), infinity(true), false),
            RelOp::Gt | RelOp::Ge => (infinity(false), false, (**first).clone(), closed(*op)),
            _ => return None,
        },
        _ => return None,
    };
    Some(Node::Bracketed {
        open: if low_closed { '[' } else { '(' },
        close: if high_closed { ']' } else { ')' },
        items: vec![low, high],
    })
}

/// The right-hand side of an equation (`x = 5`, `x = y = 5`), `None` for inequalities.
fn equation_value(n: &Node) -> Option<&Node> {
    match n {
        Node::Relation { rest, .. } if rest.iter().all(|(op, _)| *op == RelOp::Eq) => {
            rest.last().map(|(_, v)| v)
        }
        _ => None,
    }
}

/// Relations as `lhs op rhs` with `>`/`≥` flipped to `<`/`≤`.
fn oriented(first: &Node, op: RelOp, rhs: &Node) -> (Node, RelOp, Node) {
    match op {
        RelOp::Gt => (rhs.clone(), RelOp::Lt, first.clone()),
        RelOp::Ge => (rhs.clone(), RelOp::Le, first.clone()),
        _ => (first.clone(), op, rhs.clone()),
    }
}

fn difference(a: &Node, b: &Node) -> Node {
    Node::Add(vec![a.clone(), Node::Neg(Box::new(b.clone()))])
}

/// Same relation, sides equivalent: `x < 3` ≡ `3 > x`; `y = 2x+1` ≡ `2x+1 = y` ≡ `2x - y + 1 = 0`
/// (equations also match when their differences agree up to sign).
fn relations_equivalent(p: &Node, g: &Node) -> bool {
    let (
        Node::Relation {
            first: pf,
            rest: pr,
        },
        Node::Relation {
            first: gf,
            rest: gr,
        },
    ) = (p, g)
    else {
        return false;
    };
    if pr.len() != 1 || gr.len() != 1 {
        // Chains (`1 < x < 3`) compare link by link.
        return pr.len() == gr.len()
            && nodes_equivalent(pf, gf)
            && pr
                .iter()
                .zip(gr)
                .all(|((o1, a), (o2, b))| o1 == o2 && nodes_equivalent(a, b));
    }
    let (pl, pop, prr) = oriented(pf, pr[0].0, &pr[0].1);
    let (gl, gop, grr) = oriented(gf, gr[0].0, &gr[0].1);
    if pop != gop {
        return false;
    }
    if nodes_equivalent(&pl, &gl) && nodes_equivalent(&prr, &grr) {
        return true;
    }
    if !is_scalar(&pl) || !is_scalar(&prr) || !is_scalar(&gl) || !is_scalar(&grr) {
        return false;
    }
    let pd = difference(&pl, &prr);
    let gd = difference(&gl, &grr);
    match pop {
        RelOp::Eq | RelOp::Ne => {
            (nodes_equivalent(&pl, &grr) && nodes_equivalent(&prr, &gl))
                || scalars_equivalent(&pd, &gd)
                || proportional(&pd, &gd)
        }
        _ => scalars_equivalent(&pd, &gd),
    }
}

/// Whether `p = c·g` for one nonzero constant `c`, judged at the evaluation points: two equations
/// `p = 0` and `g = 0` then have the same solutions (`2x+4y-3=0` and `y=-\frac12 x+\frac34`).
fn proportional(p: &Node, g: &Node) -> bool {
    let mut names = Vec::new();
    collect_vars(p, &mut names);
    collect_vars(g, &mut names);
    names.sort();
    names.dedup();
    if names.is_empty() || names.len() > MAX_VARIABLES {
        return false;
    }
    let mut ratio: Option<Value> = None;
    let mut agreeing = 0;
    for k in 0..POINTS_USED {
        let vars = point(&names, k);
        let (Ok(a), Ok(b)) = (eval(p, &vars), eval(g, &vars)) else {
            return false;
        };
        let zero = |v: Value| v.to_f64() == 0.0;
        match (zero(a), zero(b)) {
            (true, true) => continue,
            (false, false) => {}
            _ => return false,
        }
        let r = match (a, b) {
            (Value::Exact(x), Value::Exact(y)) => match y.recip().and_then(|inv| x.mul(inv)) {
                Some(q) => Value::Exact(q),
                None => Value::Approx(a.to_f64() / b.to_f64()),
            },
            _ => Value::Approx(a.to_f64() / b.to_f64()),
        };
        match ratio {
            None => ratio = Some(r),
            Some(first) if values_close(first, r) => {}
            Some(_) => return false,
        }
        agreeing += 1;
    }
    agreeing >= 2
}

/// The values of `names` at evaluation point `k` (see [`POINTS`]).
fn point<'a>(names: &[&'a str], k: usize) -> Vec<(&'a str, Value)> {
    names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let (n, d) = POINTS[(k + 3 * j) % POINTS.len()];
            let value =
                Rational::new(n, d).map_or(Value::Approx(n as f64 / d as f64), Value::Exact);
            (*name, value)
        })
        .collect()
}

fn ordered_equivalent(a: &[Node], b: &[Node]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| nodes_equivalent(x, y))
}

/// Multiset match: every item pairs with a distinct equivalent item on the other side.
fn unordered_equivalent(a: &[Node], b: &[Node]) -> bool {
    if a.len() != b.len() || a.len() > MAX_ITEMS {
        return false;
    }
    let mut used = vec![false; b.len()];
    a.iter().all(|x| {
        let found = (0..b.len()).find(|&j| !used[j] && nodes_equivalent(x, &b[j]));
        if let Some(j) = found {
            used[j] = true;
        }
        found.is_some()
    })
}

/// Scalars, with the percent reading: `10%` matches both `0.1` and `10` (a model that drops the
/// sign of a "what percent" answer is right; `10%` is also exactly 0.1).
fn scalars_equivalent(p: &Node, g: &Node) -> bool {
    let (pv, gv) = (percent_readings(p), percent_readings(g));
    pv.iter()
        .flatten()
        .any(|x| gv.iter().flatten().any(|y| values_equivalent(x, y)))
}

/// A scalar read as written, and a percentage also as its bare number; borrowed, not cloned.
fn percent_readings(n: &Node) -> [Option<&Node>; 2] {
    match n {
        Node::Percent(inner) => [Some(n), Some(&**inner)],
        _ => [Some(n), None],
    }
}

/// `Some(±1)` for `∞` and `-∞`.
fn infinity_sign(n: &Node) -> Option<i8> {
    match n {
        Node::Inf => Some(1),
        Node::Neg(x) => infinity_sign(x).map(|s| -s),
        Node::Add(terms) if terms.len() == 1 => infinity_sign(&terms[0]),
        _ => None,
    }
}

/// Digits after the point when `n` is a plain decimal literal (`3.14`, `-0.5`).
fn literal_decimals(n: &Node) -> Option<u32> {
    match n {
        Node::Num { decimals, .. } => Some(*decimals),
        Node::Neg(x) => literal_decimals(x),
        _ => None,
    }
}

/// Numeric comparison, at several points when there are variables. A point where both sides are
/// undefined is skipped; where only one is, they differ.
fn values_equivalent(p: &Node, g: &Node) -> bool {
    match (infinity_sign(p), infinity_sign(g)) {
        (Some(a), Some(b)) => return a == b,
        (Some(_), None) | (None, Some(_)) => return false,
        (None, None) => {}
    }
    let mut names = Vec::new();
    collect_vars(p, &mut names);
    collect_vars(g, &mut names);
    names.sort();
    names.dedup();
    if names.len() > MAX_VARIABLES {
        return false;
    }
    if names.is_empty() {
        return match (eval(p, &[]), eval(g, &[])) {
            (Ok(a), Ok(b)) => numbers_equivalent(p, a, g, b),
            _ => false,
        };
    }
    let mut agreeing = 0;
    for k in 0..POINTS_USED {
        let vars = point(&names, k);
        match (eval(p, &vars), eval(g, &vars)) {
            (Ok(a), Ok(b)) if values_close(a, b) => agreeing += 1,
            (Err(_), Err(_)) => {}
            _ => return false,
        }
    }
    agreeing >= 2
}

/// Fewest significant digits a predicted decimal needs to pass for a value it rounds: `3.1416` is
/// π, `3.14` is not (nor is `0.33` a third); a gold decimal sets its own precision.
const MIN_PREDICTED_SIGNIFICANT_DIGITS: u32 = 4;

/// Two closed-form numbers. Numbers written exactly (integers, fractions, finite decimals) compare
/// exactly, so `8517213` is never `8517214`. A decimal literal is read as a rounding only of a value
/// that no finite decimal can write (`8/3`, `\sqrt{2}`, `\pi`): it matches when that value rounded
/// to the places written is the literal, and, for a predicted decimal, when it carries at least
/// [`MIN_PREDICTED_SIGNIFICANT_DIGITS`]. Other approximate values (irrational on both sides, or
/// beyond `i128`) compare within the relative tolerance.
fn numbers_equivalent(p: &Node, pv: Value, g: &Node, gv: Value) -> bool {
    if let (Value::Exact(x), Value::Exact(y)) = (pv, gv) {
        if x == y {
            return true;
        }
    }
    let predicted_rounding = literal_decimals(p)
        .filter(|&places| places >= 1)
        .filter(|_| significant_digits(pv) >= MIN_PREDICTED_SIGNIFICANT_DIGITS)
        .is_some_and(|places| rounds_to(gv, places, pv));
    let gold_rounding = literal_decimals(g)
        .filter(|&places| places >= 1)
        .is_some_and(|places| rounds_to(pv, places, gv));
    if predicted_rounding || gold_rounding {
        return true;
    }
    if literal_decimals(p).is_some_and(|d| d >= 1) || literal_decimals(g).is_some_and(|d| d >= 1) {
        // A decimal that is not the rounding of the other side is a different number, whatever
        // the tolerance says (`3.14` is not π).
        return false;
    }
    values_close(pv, gv)
}

/// Whether `value`, having no finite decimal expansion, rounds to `literal` at `places` decimals.
fn rounds_to(value: Value, places: u32, literal: Value) -> bool {
    let Value::Exact(lit) = literal else {
        return false;
    };
    match value {
        Value::Exact(r) => !r.is_terminating_decimal() && r.round_to_places(places) == Some(lit),
        Value::Approx(x) => {
            if places > 15 || !x.is_finite() {
                return false;
            }
            let scale = 10f64.powi(places as i32);
            let rounded = (x * scale).round();
            let target = lit.to_f64() * scale;
            (rounded - target).abs() < 0.5
        }
    }
}

/// Significant digits of an exact decimal literal's value: `2.6667` has 5, `0.0300` has 3.
fn significant_digits(v: Value) -> u32 {
    let Value::Exact(r) = v else {
        return 0;
    };
    // A decimal literal is n / 10^k in lowest terms; scaling back to the written digits would need
    // the text, so count the digits of the value's shortest decimal form instead (trailing zeros
    // written after the point are not significant to this rule).
    let mut num = r.numer().unsigned_abs();
    let mut den = r.denom().unsigned_abs();
    while den > 1 {
        if den % 10 == 0 {
            den /= 10;
        } else if den % 2 == 0 {
            den /= 2;
            num *= 5;
        } else if den % 5 == 0 {
            den /= 5;
            num *= 2;
        } else {
            return 0;
        }
    }
    let mut digits = 0;
    while num > 0 {
        num /= 10;
        digits += 1;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices() {
        assert_eq!(gold_choice("(B)"), Some('B'));
        assert_eq!(gold_choice("B"), Some('B'));
        assert_eq!(gold_choice("x"), None);
        assert_eq!(predicted_choice("b"), Some('B'));
        assert_eq!(predicted_choice("Option C"), Some('C'));
        assert_eq!(predicted_choice("(D) 42"), Some('D'));
        assert_eq!(predicted_choice("Dog"), None);
        assert_eq!(predicted_choice("(A) or (B)"), None);
    }

    #[test]
    fn text_keys_ignore_case_and_framing() {
        assert_eq!(text_key("The answer is Yes."), "yes");
        assert_eq!(text_key("No  Solution"), "no solution");
    }

    #[test]
    fn exact_numbers_compare_exactly() {
        for (p, g) in [
            ("8517213", "8517214"),
            ("123456700", "123456789"),
            ("1000001", "1000000"),
            ("1,000,001", "1000000"),
            ("-1000001", "-1000000"),
            ("0.5", "\\frac{51}{100}"),
            ("\\frac{1000001}{3}", "\\frac{1000000}{3}"),
            ("2.6666", "\\frac{8}{3}"),
            ("3.14", "\\pi"),
            ("0.333", "\\frac{1}{3}"),
        ] {
            assert!(!answers_equivalent(p, g), "{p} vs {g}");
        }
    }

    #[test]
    fn decimals_round_values_without_a_finite_expansion() {
        for (p, g) in [
            ("2.6667", "\\frac{8}{3}"),
            ("-2.6667", "-\\frac{8}{3}"),
            ("0.3333", "\\frac{1}{3}"),
            ("3.1416", "\\pi"),
            ("1.414214", "\\sqrt{2}"),
            ("\\pi", "3.14"),
            ("\\frac{1}{3}", "0.33"),
            ("0.5", "\\frac{1}{2}"),
            ("2.50", "2.5"),
        ] {
            assert!(answers_equivalent(p, g), "{p} vs {g}");
        }
    }

    #[test]
    fn significant_digits_of_decimals() {
        let lit = |n: i128, d: i128| Value::Exact(Rational::new(n, d).expect("valid"));
        assert_eq!(significant_digits(lit(26_667, 10_000)), 5);
        assert_eq!(significant_digits(lit(3, 100)), 1);
        assert_eq!(significant_digits(lit(1, 8)), 3);
        assert_eq!(significant_digits(lit(1, 3)), 0);
    }

    #[test]
    fn issue_kinds() {
        for (p, g) in [
            ("-2 ≤ x ≤ 7", "x = [-2,7]"),
            ("0<f(x)<1", "(0,1)"),
            ("x < 1, x > 3", "(-∞, 1) ∪ (3, ∞)"),
            ("S_{MBCN}:S=7:32", "7:32"),
            ("y=-\\frac12 x+\\frac34", "2x+4y-3=0"),
            ("6x+12y-9=0", "2x+4y-3=0"),
            ("p=5,q=2; p=7,q=2", "(5, 2), (7, 2)"),
            ("k = 45, n = 2", "(45, 2)"),
            ("(11,7), (7,11)", "(7, 11), (11, 7)"),
            ("(0.6, 2.6667]", "(\\frac{3}{5}, \\frac{8}{3}]"),
            ("2((1, 2), (3, 4))", "((2, 4), (6, 8))"),
            ("((1, 2), (3, 4)) + ((1, 0), (0, 1))", "((2, 2), (3, 5))"),
            ("-((1, -2))", "(-1, 2)"),
        ] {
            assert!(answers_equivalent(p, g), "{p} vs {g}");
        }
        for (p, g) in [
            ("y=-\\frac12 x-\\frac34", "2x+4y-3=0"),
            ("2x+4y=0", "2x+4y-3=0"),
            ("x < 1, x ≥ 3", "(-∞, 1) ∪ (3, ∞)"),
            ("32:7", "7:32"),
            ("0<f(x)≤1", "(0,1)"),
            ("x^2 < 4", "(-∞, 4)"),
            ("2((1, 2), (3, 4))", "((2, 4), (6, 9))"),
            ("((1, 2), (3, 4)) + ((1, 0))", "((2, 2), (3, 4))"),
        ] {
            assert!(!answers_equivalent(p, g), "{p} vs {g}");
        }
    }

    #[test]
    fn oversized_answers_are_unequal_even_to_themselves() {
        let huge = "1".repeat(MAX_ANSWER_BYTES + 1);
        assert!(!answers_equivalent(&huge, &huge));
    }
}
