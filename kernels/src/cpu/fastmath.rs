//! A vectorisable `exp` for the hot loops (softmax, log-sum-exp, SiLU): glibc's `expf` is a
//! scalar call, and those loops spent more time in it than in their arithmetic.
//!
//! Cephes' single-precision method: x = k·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6
//! polynomial, 2^k by building the exponent bits. Relative error below 2e-7 over the range
//! where the result is a normal f32; below −87.3 it returns 0, above 88.7 +∞. Written with plain
//! f32 operations (rounding by the 1.5·2²³ trick, no `floor` call) so the compiler vectorises it.

/// e^x, the same function as `exp_in_place`, for single values. Branch-free (selects only),
/// so loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
    let xc = x.clamp(-87.3, 88.7);
    let k = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let scale = f32::from_bits(((k as i32 + 127) << 23) as u32);
    let y = er * scale;
    let y = if x <= -87.3 { 0.0 } else { y };
    let y = if x >= 88.7 { f32::INFINITY } else { y };
    if x.is_nan() {
        x
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

/// Σ e^(x − shift) over `xs`: 256-element blocks summed by `sum16`, blocks accumulated in f64.
#[inline(always)]
pub fn sum_exp(xs: &[f32], shift: f32) -> f64 {
    let mut total = 0.0f64;
    let mut block = [0f32; 256];
    for chunk in xs.chunks(256) {
        let n = chunk.len();
        for (b, &x) in block.iter_mut().zip(chunk) {
            *b = exp(x - shift);
        }
        total += sum16(&block[..n]) as f64;
    }
    total
}

/// The largest element (−∞ for an empty slice), over 16 lanes so it vectorises; max is exact, so
/// the order does not change the result.
#[inline(always)]
pub fn max16(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for chunk in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = if x > *l { x } else { *l };
        }
    }
    let mut m = lanes
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for &x in chunks.remainder() {
        m = if x > m { x } else { m };
    }
    m
}

/// Σ xs with 16 partial sums in a fixed order (vectorises; the same bits on every code path).
#[inline(always)]
pub fn sum16(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for chunk in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l += x;
        }
    }
    let mut width = 8;
    while width > 0 {
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
        width /= 2;
    }
    let mut total = lanes[0];
    for &x in chunks.remainder() {
        total += x;
    }
    total
}

/// Defines a function that runs `$body` compiled for AVX-512 or AVX2+FMA when the CPU has them,
/// else for the baseline. `$body` must be `#[inline(always)]` so each copy is vectorised for its
/// instruction set. The code paths give the same bits: they vectorise the same operations, and
/// floating-point contraction is never enabled.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the features the copy was compiled for were detected.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

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
