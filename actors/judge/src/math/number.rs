//! Numbers for the equivalence check: exact rationals while they fit in `i128`, `f64` after.
//!
//! Exactness matters because `1/3` and `0.333333` must differ while `2/4` and `0.5` must not; the
//! `f64` fallback keeps huge or irrational values (`10^{40}`, `\sqrt{2}`, `\pi`) comparable with a
//! relative tolerance instead of failing.

/// Relative tolerance for comparing values that are not both exact (irrational results, or values
/// beyond `i128`): wide enough for rounding noise in `f64` evaluation, narrow enough that `0.333`
/// and `1/3` stay different. Two exact values never use it: `8517213` is not `8517214`.
pub const RELATIVE_TOLERANCE: f64 = 1e-6;

/// Below this magnitude two approximate values count as zero, where a relative test means nothing.
const ABSOLUTE_ZERO: f64 = 1e-12;

/// An exact rational in lowest terms with a positive denominator; every operation is checked, so
/// overflow turns into `None` (and the caller falls back to `f64`) rather than a wrong answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rational {
    /// Numerator, carries the sign.
    num: i128,
    /// Denominator, always positive.
    den: i128,
}

/// Greatest common divisor, at least 1 so it can always divide.
fn gcd(a: i128, b: i128) -> i128 {
    // unsigned_abs avoids the overflow of `abs` on i128::MIN.
    let (mut x, mut y) = (a.unsigned_abs(), b.unsigned_abs());
    while y != 0 {
        let r = x % y;
        x = y;
        y = r;
    }
    i128::try_from(x).unwrap_or(1).max(1)
}

impl Rational {
    /// `num / den` in lowest terms; `None` when `den` is zero or the sign flip overflows.
    pub fn new(num: i128, den: i128) -> Option<Rational> {
        if den == 0 {
            return None;
        }
        let g = gcd(num, den);
        let (mut num, mut den) = (num / g, den / g);
        if den < 0 {
            num = num.checked_neg()?;
            den = den.checked_neg()?;
        }
        Some(Rational { num, den })
    }

    /// An integer as a rational.
    pub fn integer(n: i128) -> Rational {
        Rational { num: n, den: 1 }
    }

    /// The numerator (sign included).
    pub fn numer(self) -> i128 {
        self.num
    }

    /// The denominator (positive).
    pub fn denom(self) -> i128 {
        self.den
    }

    /// Whether this is a whole number.
    pub fn is_integer(self) -> bool {
        self.den == 1
    }

    /// The nearest `f64`.
    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// Checked sum.
    pub fn add(self, o: Rational) -> Option<Rational> {
        let g = gcd(self.den, o.den);
        let l = (self.den / g).checked_mul(o.den)?;
        let a = self.num.checked_mul(l / self.den)?;
        let b = o.num.checked_mul(l / o.den)?;
        Rational::new(a.checked_add(b)?, l)
    }

    /// Checked negation.
    pub fn neg(self) -> Option<Rational> {
        Some(Rational {
            num: self.num.checked_neg()?,
            den: self.den,
        })
    }

    /// Checked product (cross-reduced first to delay overflow).
    pub fn mul(self, o: Rational) -> Option<Rational> {
        let g1 = gcd(self.num, o.den);
        let g2 = gcd(o.num, self.den);
        let num = (self.num / g1).checked_mul(o.num / g2)?;
        let den = (self.den / g2).checked_mul(o.den / g1)?;
        Rational::new(num, den)
    }

    /// Checked reciprocal; `None` for zero.
    pub fn recip(self) -> Option<Rational> {
        Rational::new(self.den, self.num)
    }

    /// Checked integer power by squaring; stops at the first overflow, so a huge exponent costs at
    /// most ~128 multiplications before giving up.
    pub fn pow(self, exp: i128) -> Option<Rational> {
        if exp == 0 {
            return Some(Rational::integer(1));
        }
        let base = if exp < 0 { self.recip()? } else { self };
        let mut e = exp.unsigned_abs();
        // Powers of 0, 1 and -1 never overflow, whatever the exponent.
        if base.num == 0 || (base.den == 1 && base.num == 1) {
            return Some(base);
        }
        if base.den == 1 && base.num == -1 {
            return Some(if e % 2 == 1 {
                base
            } else {
                Rational::integer(1)
            });
        }
        let mut acc = Rational::integer(1);
        let mut sq = base;
        while e > 0 {
            if e & 1 == 1 {
                acc = acc.mul(sq)?;
            }
            e >>= 1;
            if e > 0 {
                sq = sq.mul(sq)?;
            }
        }
        Some(acc)
    }

    /// Whether the value has a finite decimal expansion (its reduced denominator has no prime factor
    /// other than 2 and 5): `1/8` is `0.125`, `1/3` has none.
    pub fn is_terminating_decimal(self) -> bool {
        let mut d = self.den;
        while d % 2 == 0 {
            d /= 2;
        }
        while d % 5 == 0 {
            d /= 5;
        }
        d == 1
    }

    /// The value rounded to `places` decimals, half away from zero; `None` on overflow.
    pub fn round_to_places(self, places: u32) -> Option<Rational> {
        let scale = 10i128.checked_pow(places)?;
        let scaled_num = self.num.checked_mul(scale)?;
        // Round |num·scale / den| half up, then restore the sign.
        let magnitude = scaled_num.checked_abs()?;
        let (q, r) = (magnitude / self.den, magnitude % self.den);
        let rounded = if r.checked_mul(2)? >= self.den {
            q + 1
        } else {
            q
        };
        let signed = if scaled_num < 0 { -rounded } else { rounded };
        Rational::new(signed, scale)
    }

    /// The exact square root when numerator and denominator are perfect squares.
    pub fn sqrt_exact(self) -> Option<Rational> {
        if self.num < 0 {
            return None;
        }
        let n = isqrt(self.num)?;
        let d = isqrt(self.den)?;
        Rational::new(n, d)
    }
}

/// Integer square root when `n` is a perfect square.
fn isqrt(n: i128) -> Option<i128> {
    if n < 0 {
        return None;
    }
    let guess = (n as f64).sqrt().round() as i128;
    [guess - 1, guess, guess + 1]
        .into_iter()
        .find(|&r| r >= 0 && r.checked_mul(r) == Some(n))
}

/// A value met while evaluating an answer: exact when it can be, approximate otherwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// An exact rational (integers, decimals, fractions and what arithmetic keeps exact).
    Exact(Rational),
    /// An approximation: irrational results, or exact values that outgrew `i128`.
    Approx(f64),
}

impl Value {
    /// The value as `f64`.
    pub fn to_f64(self) -> f64 {
        match self {
            Value::Exact(r) => r.to_f64(),
            Value::Approx(x) => x,
        }
    }

    /// The exact rational, when there is one.
    pub fn exact(self) -> Option<Rational> {
        match self {
            Value::Exact(r) => Some(r),
            Value::Approx(_) => None,
        }
    }
}

/// Whether two values are the same number: exactly when both are exact (an integer off by one is
/// another integer, however large), else within [`RELATIVE_TOLERANCE`]. Rounded decimals written
/// by a model (`0.3333` for `1/3`) are the caller's business: only the caller knows what was
/// written as a decimal literal and to how many places.
pub fn values_close(a: Value, b: Value) -> bool {
    if let (Value::Exact(x), Value::Exact(y)) = (a, b) {
        return x == y;
    }
    let (x, y) = (a.to_f64(), b.to_f64());
    if !x.is_finite() || !y.is_finite() {
        return x == y;
    }
    if x == y {
        return true;
    }
    let scale = x.abs().max(y.abs());
    if scale < ABSOLUTE_ZERO {
        return true;
    }
    (x - y).abs() <= RELATIVE_TOLERANCE * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: i128, d: i128) -> Rational {
        Rational::new(n, d).expect("nonzero denominator")
    }

    #[test]
    fn reduces_and_normalises_sign() {
        assert_eq!(r(2, -4), r(-1, 2));
        assert_eq!(r(2, -4).denom(), 2);
        assert!(Rational::new(1, 0).is_none());
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(r(1, 2).add(r(1, 3)), Some(r(5, 6)));
        assert_eq!(r(2, 3).mul(r(9, 4)), Some(r(3, 2)));
        assert_eq!(r(2, 3).pow(-2), Some(r(9, 4)));
        assert_eq!(r(9, 4).sqrt_exact(), Some(r(3, 2)));
        assert_eq!(r(2, 1).sqrt_exact(), None);
    }

    #[test]
    fn pow_edge_cases() {
        assert_eq!(r(0, 1).pow(0), Some(r(1, 1)));
        assert_eq!(r(0, 1).pow(5), Some(r(0, 1)));
        assert_eq!(r(-1, 1).pow(3), Some(r(-1, 1)));
        assert_eq!(r(-1, 1).pow(4), Some(r(1, 1)));
        assert_eq!(r(1, 1).pow(i128::MAX), Some(r(1, 1)));
        assert_eq!(r(10, 1).pow(10_000_000_000), None);
        assert_eq!(r(0, 1).pow(-1), None);
    }

    #[test]
    fn overflow_is_reported_not_wrapped() {
        let big = Rational::integer(i128::MAX);
        assert!(big.add(big).is_none());
        assert!(big.mul(big).is_none());
        assert!(Rational::integer(i128::MIN).neg().is_none());
    }

    #[test]
    fn exact_values_compare_exactly() {
        let exact = |n: i128| Value::Exact(Rational::integer(n));
        // The near misses: within the relative tolerance, yet different integers.
        for (a, b) in [
            (8_517_213, 8_517_214),
            (123_456_700, 123_456_789),
            (1_000_001, 1_000_000),
        ] {
            assert!(!values_close(exact(a), exact(b)), "{a} vs {b}");
        }
        assert!(values_close(
            exact(1_000_000),
            Value::Exact(r(2_000_000, 2))
        ));
        let third = Value::Exact(r(1, 3));
        assert!(!values_close(third, Value::Exact(r(3_333_333, 10_000_000))));
    }

    #[test]
    fn terminating_decimals_and_rounding() {
        assert!(r(1, 8).is_terminating_decimal());
        assert!(r(7, 20).is_terminating_decimal());
        assert!(!r(1, 3).is_terminating_decimal());
        assert!(!r(8, 3).is_terminating_decimal());
        assert_eq!(r(8, 3).round_to_places(4), Some(r(26_667, 10_000)));
        assert_eq!(r(8, 3).round_to_places(2), Some(r(267, 100)));
        assert_eq!(r(-8, 3).round_to_places(2), Some(r(-267, 100)));
        assert_eq!(r(1, 3).round_to_places(3), Some(r(333, 1000)));
        assert_eq!(r(1, 8).round_to_places(2), Some(r(13, 100)));
    }

    #[test]
    fn closeness() {
        let third = Value::Exact(r(1, 3));
        assert!(values_close(third, Value::Approx(1.0 / 3.0)));
        assert!(!values_close(third, Value::Exact(r(333, 1000))));
        // A value written to 7 significant digits is within the tolerance; to 3 it is not.
        assert!(values_close(
            Value::Approx(2f64.sqrt()),
            Value::Exact(r(1_414_214, 1_000_000))
        ));
        assert!(!values_close(
            Value::Approx(2f64.sqrt()),
            Value::Exact(r(1_414, 1_000))
        ));
        assert!(!values_close(Value::Exact(r(1, 2)), Value::Exact(r(5, 1))));
        assert!(!values_close(
            Value::Approx(f64::NAN),
            Value::Approx(f64::NAN)
        ));
    }
}
