//! Evaluation of scalar answer trees at a point: exact rational arithmetic while it lasts, `f64`
//! beyond. Every operation is total: overflow, division by zero, a domain error or a non-finite
//! result is an [`EvalError`], never a panic and never a huge allocation (exponents are applied by
//! squaring with checked multiplication, factorials and binomials have small caps).

use super::number::{Rational, Value};
use super::parse::Node;
use super::syntax::Func;

/// Why a tree has no value at a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalError {
    /// Division by zero, a logarithm of a non-positive number, `\sqrt{-1}`, …
    Domain,
    /// The result is infinite, NaN, or too large to compute (`10^{10^{10}}`, `1000!`).
    NotFinite,
    /// A tuple, set, relation or infinity where a number is needed.
    NotScalar,
    /// A variable without a value at this point.
    Unbound,
}

/// Largest `n` for `n!` (171! overflows `f64`).
const MAX_FACTORIAL: i128 = 170;

/// Largest `n` for `\binom{n}{k}`; bounds the multiplication loop.
const MAX_BINOM: i128 = 10_000;

/// Evaluates `node` with the given variable values (a small sorted list, looked up linearly).
pub fn eval(node: &Node, vars: &[(&str, Value)]) -> Result<Value, EvalError> {
    let v = match node {
        Node::Num { value, .. } => *value,
        Node::Var(name) => vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .ok_or(EvalError::Unbound)?,
        Node::Pi => Value::Approx(std::f64::consts::PI),
        Node::Euler => Value::Approx(std::f64::consts::E),
        Node::Neg(x) => neg(eval(x, vars)?),
        Node::Add(terms) => {
            let mut acc = Value::Exact(Rational::integer(0));
            for t in terms {
                acc = add(acc, eval(t, vars)?);
            }
            acc
        }
        Node::Mul(factors) => {
            let mut acc = Value::Exact(Rational::integer(1));
            for f in factors {
                acc = mul(acc, eval(f, vars)?);
            }
            acc
        }
        Node::Div(a, b) => div(eval(a, vars)?, eval(b, vars)?)?,
        Node::Pow(a, b) => pow(eval(a, vars)?, eval(b, vars)?)?,
        Node::Func(f, x) => Value::Approx(apply(*f, eval(x, vars)?.to_f64())?),
        Node::Log { base, arg } => {
            let x = eval(arg, vars)?.to_f64();
            let b = match base {
                Some(b) => eval(b, vars)?.to_f64(),
                None => std::f64::consts::E,
            };
            if x <= 0.0 || b <= 0.0 || b == 1.0 {
                return Err(EvalError::Domain);
            }
            Value::Approx(x.ln() / b.ln())
        }
        Node::Root { index, arg } => {
            let x = eval(arg, vars)?;
            match index {
                None => sqrt(x)?,
                Some(n) => root(x, eval(n, vars)?)?,
            }
        }
        Node::Factorial(x) => factorial(eval(x, vars)?)?,
        Node::Percent(x) => div(eval(x, vars)?, Value::Exact(Rational::integer(100)))?,
        Node::Binom(n, k) => binom(eval(n, vars)?, eval(k, vars)?)?,
        Node::Abs(x) => match eval(x, vars)? {
            Value::Exact(r) if r.numer() < 0 => neg(Value::Exact(r)),
            Value::Exact(r) => Value::Exact(r),
            Value::Approx(f) => Value::Approx(f.abs()),
        },
        Node::Inf
        | Node::Bracketed { .. }
        | Node::Set(_)
        | Node::List(_)
        | Node::Relation { .. }
        | Node::Union(_) => return Err(EvalError::NotScalar),
    };
    if v.to_f64().is_finite() {
        Ok(v)
    } else {
        Err(EvalError::NotFinite)
    }
}

/// The free variables of a tree, appended to `out` (unsorted, possibly repeated); borrowed, so the
/// hot comparison path allocates no names.
pub fn collect_vars<'a>(node: &'a Node, out: &mut Vec<&'a str>) {
    match node {
        Node::Var(name) => out.push(name),
        Node::Num { .. } | Node::Pi | Node::Euler | Node::Inf => {}
        Node::Neg(x) | Node::Func(_, x) | Node::Factorial(x) | Node::Percent(x) | Node::Abs(x) => {
            collect_vars(x, out)
        }
        Node::Div(a, b) | Node::Pow(a, b) | Node::Binom(a, b) => {
            collect_vars(a, out);
            collect_vars(b, out);
        }
        Node::Log { base, arg } => {
            if let Some(b) = base {
                collect_vars(b, out);
            }
            collect_vars(arg, out);
        }
        Node::Root { index, arg } => {
            if let Some(i) = index {
                collect_vars(i, out);
            }
            collect_vars(arg, out);
        }
        Node::Add(xs) | Node::Mul(xs) | Node::Set(xs) | Node::List(xs) | Node::Union(xs) => {
            xs.iter().for_each(|x| collect_vars(x, out))
        }
        Node::Bracketed { items, .. } => items.iter().for_each(|x| collect_vars(x, out)),
        Node::Relation { first, rest } => {
            collect_vars(first, out);
            rest.iter().for_each(|(_, x)| collect_vars(x, out));
        }
    }
}

fn approx(x: f64) -> Value {
    Value::Approx(x)
}

fn neg(a: Value) -> Value {
    match a {
        Value::Exact(r) => r.neg().map_or(approx(-r.to_f64()), Value::Exact),
        Value::Approx(x) => approx(-x),
    }
}

fn add(a: Value, b: Value) -> Value {
    match (a.exact(), b.exact()) {
        (Some(x), Some(y)) => x
            .add(y)
            .map_or(approx(x.to_f64() + y.to_f64()), Value::Exact),
        _ => approx(a.to_f64() + b.to_f64()),
    }
}

fn mul(a: Value, b: Value) -> Value {
    match (a.exact(), b.exact()) {
        (Some(x), Some(y)) => x
            .mul(y)
            .map_or(approx(x.to_f64() * y.to_f64()), Value::Exact),
        _ => approx(a.to_f64() * b.to_f64()),
    }
}

fn div(a: Value, b: Value) -> Result<Value, EvalError> {
    if b.to_f64() == 0.0 {
        return Err(EvalError::Domain);
    }
    Ok(match (a.exact(), b.exact()) {
        (Some(x), Some(y)) => y
            .recip()
            .and_then(|inv| x.mul(inv))
            .map_or(approx(x.to_f64() / y.to_f64()), Value::Exact),
        _ => approx(a.to_f64() / b.to_f64()),
    })
}

fn pow(base: Value, exp: Value) -> Result<Value, EvalError> {
    if let (Some(b), Some(e)) = (base.exact(), exp.exact()) {
        if e.is_integer() {
            if b.numer() == 0 && e.numer() < 0 {
                return Err(EvalError::Domain);
            }
            if let Some(r) = b.pow(e.numer()) {
                return Ok(Value::Exact(r));
            }
        } else if e.denom() == 2 {
            // x^{p/2} = sqrt(x)^p, exact for perfect squares.
            if let Some(r) = b.sqrt_exact().and_then(|s| s.pow(e.numer())) {
                return Ok(Value::Exact(r));
            }
        }
    }
    let (b, e) = (base.to_f64(), exp.to_f64());
    let r = if b < 0.0 && e.fract() != 0.0 {
        // Real odd roots of negatives: (-8)^{1/3} = -2.
        let inv = 1.0 / e;
        if inv.fract() == 0.0 && inv.abs() % 2.0 == 1.0 {
            -(-b).powf(e)
        } else {
            return Err(EvalError::Domain);
        }
    } else {
        b.powf(e)
    };
    finite(r)
}

fn sqrt(x: Value) -> Result<Value, EvalError> {
    if let Some(r) = x.exact().and_then(Rational::sqrt_exact) {
        return Ok(Value::Exact(r));
    }
    let f = x.to_f64();
    if f < 0.0 {
        return Err(EvalError::Domain);
    }
    Ok(approx(f.sqrt()))
}

fn root(x: Value, n: Value) -> Result<Value, EvalError> {
    let Some(n) = n.exact().filter(|n| n.is_integer() && n.numer() >= 2) else {
        return Err(EvalError::Domain);
    };
    let f = x.to_f64();
    let k = n.numer() as f64;
    let r = if f < 0.0 {
        if n.numer() % 2 == 0 {
            return Err(EvalError::Domain);
        }
        -(-f).powf(1.0 / k)
    } else {
        f.powf(1.0 / k)
    };
    // Snap to an exact integer root when there is one (\sqrt[3]{27} = 3).
    let rounded = r.round();
    if let (Some(xr), true) = (x.exact(), rounded.abs() < 1e15) {
        if Rational::integer(rounded as i128).pow(n.numer()) == Some(xr) {
            return Ok(Value::Exact(Rational::integer(rounded as i128)));
        }
    }
    finite(r)
}

fn factorial(x: Value) -> Result<Value, EvalError> {
    let n = x
        .exact()
        .filter(|r| r.is_integer() && r.numer() >= 0)
        .ok_or(EvalError::Domain)?;
    if n.numer() > MAX_FACTORIAL {
        return Err(EvalError::NotFinite);
    }
    let mut acc = Value::Exact(Rational::integer(1));
    for k in 2..=n.numer() {
        acc = mul(acc, Value::Exact(Rational::integer(k)));
    }
    Ok(acc)
}

fn binom(n: Value, k: Value) -> Result<Value, EvalError> {
    let int = |v: Value| v.exact().filter(|r| r.is_integer()).map(Rational::numer);
    let (Some(n), Some(k)) = (int(n), int(k)) else {
        return Err(EvalError::Domain);
    };
    if !(0..=MAX_BINOM).contains(&n) {
        return Err(EvalError::Domain);
    }
    if k < 0 || k > n {
        return Ok(Value::Exact(Rational::integer(0)));
    }
    let k = k.min(n - k);
    let mut acc = Value::Exact(Rational::integer(1));
    for i in 0..k {
        acc = mul(acc, Value::Exact(Rational::integer(n - i)));
        acc = div(acc, Value::Exact(Rational::integer(i + 1)))?;
    }
    Ok(acc)
}

fn apply(f: Func, x: f64) -> Result<f64, EvalError> {
    let y = match f {
        Func::Sin => x.sin(),
        Func::Cos => x.cos(),
        Func::Tan => x.tan(),
        Func::Cot => 1.0 / x.tan(),
        Func::Sec => 1.0 / x.cos(),
        Func::Csc => 1.0 / x.sin(),
        Func::Asin => x.asin(),
        Func::Acos => x.acos(),
        Func::Atan => x.atan(),
        Func::Sinh => x.sinh(),
        Func::Cosh => x.cosh(),
        Func::Tanh => x.tanh(),
        Func::Exp => x.exp(),
        Func::Ln if x <= 0.0 => return Err(EvalError::Domain),
        Func::Ln => x.ln(),
    };
    if y.is_nan() {
        Err(EvalError::Domain)
    } else if y.is_infinite() {
        Err(EvalError::NotFinite)
    } else {
        Ok(y)
    }
}

fn finite(x: f64) -> Result<Value, EvalError> {
    if x.is_finite() {
        Ok(approx(x))
    } else if x.is_nan() {
        Err(EvalError::Domain)
    } else {
        Err(EvalError::NotFinite)
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    fn value_of(s: &str) -> Result<Value, EvalError> {
        eval(&parse(s).expect("parses"), &[])
    }

    fn exact(n: i128, d: i128) -> Result<Value, EvalError> {
        Ok(Value::Exact(Rational::new(n, d).expect("valid")))
    }

    #[test]
    fn exact_arithmetic() {
        assert_eq!(value_of("\\frac{1}{2}+\\frac{1}{3}"), exact(5, 6));
        assert_eq!(value_of("2^{10}"), exact(1024, 1));
        assert_eq!(value_of("4^{-1/2}"), exact(1, 2));
        assert_eq!(value_of("\\sqrt{\\frac{9}{4}}"), exact(3, 2));
        assert_eq!(value_of("\\sqrt[3]{27}"), exact(3, 1));
        assert_eq!(value_of("5!"), exact(120, 1));
        assert_eq!(value_of("\\binom{5}{2}"), exact(10, 1));
        assert_eq!(value_of("|-3|"), exact(3, 1));
        assert_eq!(value_of("50%"), exact(1, 2));
    }

    #[test]
    fn domain_errors_are_errors() {
        assert_eq!(value_of("1/0"), Err(EvalError::Domain));
        assert_eq!(value_of("\\sqrt{-1}"), Err(EvalError::Domain));
        assert_eq!(value_of("\\ln 0"), Err(EvalError::Domain));
        assert_eq!(value_of("0^{-1}"), Err(EvalError::Domain));
    }

    #[test]
    fn huge_values_are_refused_quickly() {
        assert_eq!(value_of("10^{10^{10}}"), Err(EvalError::NotFinite));
        assert_eq!(value_of("1000!"), Err(EvalError::NotFinite));
        assert_eq!(
            value_of("1e999999999999999999999999"),
            Err(EvalError::NotFinite)
        );
        assert_eq!(value_of("2^{2^{2^{2^{2^{2}}}}}"), Err(EvalError::NotFinite));
    }

    #[test]
    fn irrational_values_are_approximate() {
        let Ok(Value::Approx(x)) = value_of("2\\sqrt{2}") else {
            panic!("not approximate");
        };
        assert!((x - 2.0 * 2f64.sqrt()).abs() < 1e-12);
    }
}
