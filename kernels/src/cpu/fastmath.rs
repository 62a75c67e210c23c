//! A vectorisable `exp` for the hot loops (softmax, log-sum-exp, SiLU): glibc's `expf` is a
//! scalar call, and those loops spent more time in it than in their arithmetic.
//!
//! Cephes' single-precision method: x = k·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6
//! polynomial, 2^k by building the exponent bits. Relative error below 2e-7 over the range
//! where the result is a normal f32; below −87.3 it returns 0, above 88.7 +∞. Written with plain
//! f32 operations (rounding by the 1.5·2²³ trick, no `floor` call) so the compiler vectorises it.

/// e^x, the same function as `exp_in_place`, for single values.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
    if x.is_nan() {
        return x;
    }
    let x = x.clamp(-87.3, 88.7);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let scale = f32::from_bits(((k as i32 + 127) << 23) as u32);
    let y = er * scale;
    if x <= -87.3 {
        0.0
    } else if x >= 88.7 {
        f32::INFINITY
    } else {
        y
    }
}

/// xs[i] = e^(xs[i]) for every element.
pub fn exp_in_place(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = exp(*x);
    }
}

/// Σ e^(x − shift) over `xs`, accumulated in f64 in a fixed order (16-element blocks).
pub fn sum_exp(xs: &[f32], shift: f32) -> f64 {
    let mut total = 0.0f64;
    let mut block = [0f32; 16];
    for chunk in xs.chunks(16) {
        let n = chunk.len();
        for (b, &x) in block.iter_mut().zip(chunk) {
            *b = exp(x - shift);
        }
        total += block[..n].iter().map(|&v| v as f64).sum::<f64>();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_library_exp_to_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(1000.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
        let mut v = vec![0.5f32, -3.0, 10.0];
        exp_in_place(&mut v);
        assert_eq!(v, vec![exp(0.5), exp(-3.0), exp(10.0)]);
        let s = sum_exp(&[1.0, 2.0, 3.0], 3.0);
        assert!((s - ((-2f64).exp() + (-1f64).exp() + 1.0)).abs() < 1e-6);
    }
}
