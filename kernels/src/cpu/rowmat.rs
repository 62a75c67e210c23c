//! A batch-invariant matrix product for decoding: out[S, OC] = inp[S, C] · weight[OC, C]ᵀ (+ bias),
//! where every output element is computed by the same sequence of operations whatever S is, where
//! its row sits, and how columns are split across threads.
//!
//! GEMM libraries pick kernels by problem size (a matrix-vector path for one row, small-matrix
//! paths for a few), so a sequence's logits would change in the last bits with the batch around
//! it. The sampler promises the same tokens and log-probs alone or in any batch, so decoding uses
//! this kernel: each (row, column) is a dot product accumulated in 16 lanes in C order, reduced
//! by a fixed tree. Tiles of 4 rows × 4 columns share loads; they do not change the arithmetic.
//!
//! The weights are f32 (the policy itself) or bf16 (the sampler's half-size copy, see
//! `device::Precision`): a bf16 weight is widened to f32 as it is loaded (exactly: a bf16 is the
//! top half of an f32), and the products and sums are the f32 kernel's. The input stays f32, so a
//! bf16 sampler differs from the learner only by the rounding of its weights, and reads half the
//! bytes per step.

use half::bf16;
use rayon::prelude::*;

/// A weight element the decode product reads: f32, or bf16 widened on load.
pub trait WeightElem: Copy + Send + Sync + 'static {
    /// Whether this is bf16 (the AVX-512 kernel loads 16 of them as 256 bits).
    const BF16: bool;
    /// The value as f32 (exact for both).
    fn to_f32(self) -> f32;
    /// The slice itself when the elements are f32, so f32 vectors are borrowed, not copied.
    fn as_f32(slice: &[Self]) -> Option<&[f32]>;
}

impl WeightElem for f32 {
    const BF16: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    fn as_f32(slice: &[f32]) -> Option<&[f32]> {
        Some(slice)
    }
}

impl WeightElem for bf16 {
    const BF16: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    fn as_f32(_: &[bf16]) -> Option<&[f32]> {
        None
    }
}

/// `slice` as f32: borrowed when it is f32, widened into a new vector when bf16.
pub fn widen<T: WeightElem>(slice: &[T]) -> std::borrow::Cow<'_, [f32]> {
    match T::as_f32(slice) {
        Some(f) => std::borrow::Cow::Borrowed(f),
        None => std::borrow::Cow::Owned(slice.iter().map(|w| w.to_f32()).collect()),
    }
}

/// Lanes per accumulator (one AVX-512 register).
const LANES: usize = 16;
/// Fewest output columns per rayon task: below this, scheduling costs more than it saves.
const MIN_COLS_PER_TASK: usize = 32;

/// out[S, OC] = inp[S, C] · weight[OC, C]ᵀ + bias, batch-invariant (see the module docs).
pub fn matmul_rows<T: WeightElem>(
    out: &mut [f32],
    inp: &[f32],
    weight: &[T],
    bias: Option<&[f32]>,
    s: usize,
    c: usize,
    oc: usize,
) {
    assert!(
        out.len() >= s * oc && inp.len() >= s * c && weight.len() >= oc * c,
        "matmul_rows: buffers too small"
    );
    let out = SharedOut(out.as_mut_ptr());
    // A few tasks per thread, in multiples of 4 columns. The split changes which thread computes
    // a column, never how it is computed.
    let per_task =
        (oc.div_ceil(4 * rayon::current_num_threads()).div_ceil(4) * 4).max(MIN_COLS_PER_TASK);
    (0..oc.div_ceil(per_task)).into_par_iter().for_each(|task| {
        let j0 = task * per_task;
        let j1 = (j0 + per_task).min(oc);
        // SAFETY: each task writes columns j0..j1 of every row, disjoint from other tasks.
        unsafe { dispatch(out.ptr(), inp, weight, bias, s, c, oc, j0, j1) };
    });
}

#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint columns (see `matmul_rows`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}
impl SharedOut {
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// Picks the widest instruction set this CPU has; the choice is fixed per machine, so results
/// are reproducible on it.
#[allow(clippy::too_many_arguments)]
unsafe fn dispatch<T: WeightElem>(
    out: *mut f32,
    inp: &[f32],
    w: &[T],
    bias: Option<&[f32]>,
    s: usize,
    c: usize,
    oc: usize,
    j0: usize,
    j1: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return tile_avx512(out, inp, w, bias, s, c, oc, j0, j1);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return tile_avx2(out, inp, w, bias, s, c, oc, j0, j1);
        }
    }
    tile::<false, T>(out, inp, w, bias, s, c, oc, j0, j1)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512<T: WeightElem>(
    out: *mut f32,
    inp: &[f32],
    w: &[T],
    bias: Option<&[f32]>,
    s: usize,
    c: usize,
    oc: usize,
    j0: usize,
    j1: usize,
) {
    use std::arch::x86_64::*;
    let full = c / 16 * 16;
    let tail_mask: __mmask16 = ((1u32 << (c - full)) - 1) as __mmask16;
    /// 16 weights from `p`, widened to f32 when they are bf16 (a bf16 is the top half of an f32).
    #[inline(always)]
    unsafe fn load<T: WeightElem>(p: *const T) -> __m512 {
        if T::BF16 {
            let half = _mm256_loadu_si256(p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16))
        } else {
            _mm512_loadu_ps(p.cast())
        }
    }
    /// The first lanes of `tail` from `p`, zero beyond (`n` = the number of lanes set).
    #[inline(always)]
    unsafe fn load_tail<T: WeightElem>(p: *const T, tail: __mmask16, n: usize) -> __m512 {
        if T::BF16 {
            let mut buf = [0u16; 16];
            std::ptr::copy_nonoverlapping(p.cast::<u16>(), buf.as_mut_ptr(), n);
            load::<T>(buf.as_ptr().cast())
        } else {
            _mm512_maskz_loadu_ps(tail, p.cast())
        }
    }
    // Dot products of `ROWS` input rows with 4 weight rows; the same per-accumulator sequence
    // (16-lane FMAs in C order, masked tail, fixed reduction) whatever ROWS is.
    #[inline(always)]
    unsafe fn block<const ROWS: usize, T: WeightElem>(
        xs: [*const f32; ROWS],
        ws: [*const T; 4],
        full: usize,
        c: usize,
        tail: __mmask16,
    ) -> [[f32; 4]; ROWS] {
        let mut acc = [[_mm512_setzero_ps(); 4]; ROWS];
        let mut k = 0;
        while k < full {
            let wv = [
                load(ws[0].add(k)),
                load(ws[1].add(k)),
                load(ws[2].add(k)),
                load(ws[3].add(k)),
            ];
            for r in 0..ROWS {
                let xv = _mm512_loadu_ps(xs[r].add(k));
                for q in 0..4 {
                    acc[r][q] = _mm512_fmadd_ps(xv, wv[q], acc[r][q]);
                }
            }
            k += 16;
        }
        if full < c {
            let n = c - full;
            let wv = [
                load_tail(ws[0].add(full), tail, n),
                load_tail(ws[1].add(full), tail, n),
                load_tail(ws[2].add(full), tail, n),
                load_tail(ws[3].add(full), tail, n),
            ];
            for r in 0..ROWS {
                let xv = _mm512_maskz_loadu_ps(tail, xs[r].add(full));
                for q in 0..4 {
                    acc[r][q] = _mm512_fmadd_ps(xv, wv[q], acc[r][q]);
                }
            }
        }
        let mut out = [[0f32; 4]; ROWS];
        for r in 0..ROWS {
            for q in 0..4 {
                out[r][q] = _mm512_reduce_add_ps(acc[r][q]);
            }
        }
        out
    }
    /// Writes a block of dot products (plus bias) to rows r.. and columns j..j+n.
    #[inline(always)]
    unsafe fn store<const ROWS: usize>(
        out: *mut f32,
        dots: &[[f32; 4]; ROWS],
        r: usize,
        j: usize,
        n: usize,
        oc: usize,
        bias: Option<&[f32]>,
    ) {
        for (dr, row) in dots.iter().enumerate() {
            for q in 0..n {
                *out.add((r + dr) * oc + j + q) = row[q] + bias.map_or(0.0, |b| b[j + q]);
            }
        }
    }
    let mut j = j0;
    while j < j1 {
        let n = (j1 - j).min(4);
        // Fewer than 4 columns left: repeat the last one; its extra results are dropped.
        let ws: [*const T; 4] = std::array::from_fn(|q| w.as_ptr().add((j + q.min(n - 1)) * c));
        let mut r = 0;
        while r + 4 <= s {
            let xs = [
                inp.as_ptr().add(r * c),
                inp.as_ptr().add((r + 1) * c),
                inp.as_ptr().add((r + 2) * c),
                inp.as_ptr().add((r + 3) * c),
            ];
            let dots = block::<4, T>(xs, ws, full, c, tail_mask);
            store(out, &dots, r, j, n, oc, bias);
            r += 4;
        }
        while r < s {
            let dots = block::<1, T>([inp.as_ptr().add(r * c)], ws, full, c, tail_mask);
            store(out, &dots, r, j, n, oc, bias);
            r += 1;
        }
        j += 4;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<T: WeightElem>(
    out: *mut f32,
    inp: &[f32],
    w: &[T],
    bias: Option<&[f32]>,
    s: usize,
    c: usize,
    oc: usize,
    j0: usize,
    j1: usize,
) {
    tile::<true, T>(out, inp, w, bias, s, c, oc, j0, j1)
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, acc: f32) -> f32 {
    if FMA {
        a.mul_add(b, acc)
    } else {
        a * b + acc
    }
}

/// Fixed-tree sum of the 16 lanes.
#[inline(always)]
fn reduce(acc: &[f32; LANES]) -> f32 {
    let mut v = *acc;
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            v[i] += v[i + width];
        }
        width /= 2;
    }
    v[0]
}

/// One row's dot with four weight rows, 16 lanes each, plus the scalar tail in order.
#[inline(always)]
fn dot_1x4<const FMA: bool, T: WeightElem>(x: &[f32], ws: [&[T]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; LANES]; 4];
    let full = x.len() / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        let xs = &x[k..k + LANES];
        for (a, w) in acc.iter_mut().zip(ws) {
            let wk = &w[k..k + LANES];
            for l in 0..LANES {
                a[l] = madd::<FMA>(xs[l], wk[l].to_f32(), a[l]);
            }
        }
    }
    let mut out = [0f32; 4];
    for ((o, a), w) in out.iter_mut().zip(&acc).zip(ws) {
        let mut sum = reduce(a);
        for k in full..x.len() {
            sum = madd::<FMA>(x[k], w[k].to_f32(), sum);
        }
        *o = sum;
    }
    out
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const FMA: bool, T: WeightElem>(
    out: *mut f32,
    inp: &[f32],
    w: &[T],
    bias: Option<&[f32]>,
    s: usize,
    c: usize,
    oc: usize,
    j0: usize,
    j1: usize,
) {
    let mut j = j0;
    while j < j1 {
        let n = (j1 - j).min(4);
        // Fewer than 4 columns left: repeat the last one; its extra results are dropped.
        let ws: [&[T]; 4] = std::array::from_fn(|q| {
            let col = j + q.min(n - 1);
            &w[col * c..(col + 1) * c]
        });
        for r in 0..s {
            let dots = dot_1x4::<FMA, T>(&inp[r * c..(r + 1) * c], ws);
            for q in 0..n {
                let b = bias.map_or(0.0, |b| b[j + q]);
                // SAFETY: r < s and j + q < j1 <= oc, inside the [s, oc] output owned by this task.
                *out.add(r * oc + j + q) = dots[q] + b;
            }
        }
        j += 4;
    }
}

/// Dot product with a fixed summation order per machine (16 lanes in order, fixed reduction):
/// the decode attention's scores, which must not depend on the batch either.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected; both slices hold at least n floats.
            return unsafe { dot_avx512(&a[..n], &b[..n]) };
        }
    }
    let mut acc = [0f32; LANES];
    let full = n / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        for l in 0..LANES {
            acc[l] += a[k + l] * b[k + l];
        }
    }
    let mut sum = reduce(&acc);
    for k in full..n {
        sum += a[k] * b[k];
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len();
    let full = n / 16 * 16;
    let mut acc = _mm512_setzero_ps();
    let mut k = 0;
    while k < full {
        acc = _mm512_fmadd_ps(
            _mm512_loadu_ps(a.as_ptr().add(k)),
            _mm512_loadu_ps(b.as_ptr().add(k)),
            acc,
        );
        k += 16;
    }
    if full < n {
        let mask = ((1u32 << (n - full)) - 1) as __mmask16;
        acc = _mm512_fmadd_ps(
            _mm512_maskz_loadu_ps(mask, a.as_ptr().add(full)),
            _mm512_maskz_loadu_ps(mask, b.as_ptr().add(full)),
            acc,
        );
    }
    _mm512_reduce_add_ps(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) * 1e-3)
            .collect()
    }

    #[test]
    fn matches_a_plain_product_and_is_identical_for_every_batch() {
        let (c, oc) = (83, 37); // neither a multiple of 16 nor of 4
        let w = data(oc * c, 1);
        let bias = data(oc, 2);
        let x = data(9 * c, 3);
        let mut all = vec![0.0; 9 * oc];
        matmul_rows(&mut all, &x, &w, Some(&bias), 9, c, oc);
        for r in 0..9 {
            for j in 0..oc {
                let want: f64 = bias[j] as f64
                    + (0..c)
                        .map(|k| x[r * c + k] as f64 * w[j * c + k] as f64)
                        .sum::<f64>();
                assert!((all[r * oc + j] as f64 - want).abs() < 1e-4);
            }
        }
        for (start, len) in [(0, 1), (3, 1), (2, 2), (4, 5)] {
            let mut part = vec![0.0; len * oc];
            matmul_rows(
                &mut part,
                &x[start * c..(start + len) * c],
                &w,
                Some(&bias),
                len,
                c,
                oc,
            );
            let same = part
                .iter()
                .zip(&all[start * oc..(start + len) * oc])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "rows {start}..{} differ when computed in a batch of {len}",
                start + len
            );
        }
    }

    #[test]
    fn bf16_weights_give_the_bits_of_their_f32_widening() {
        // Widths with and without a 16-lane tail; rows through both the 4-row and 1-row tiles.
        for (c, oc, rows) in [(83, 37, 9), (64, 8, 5), (576, 20, 3)] {
            let w: Vec<bf16> = data(oc * c, 4).iter().map(|&x| bf16::from_f32(x)).collect();
            let wide: Vec<f32> = w.iter().map(|x| x.to_f32()).collect();
            let bias = data(oc, 5);
            let x = data(rows * c, 6);
            let (mut a, mut b) = (vec![0.0; rows * oc], vec![0.0; rows * oc]);
            matmul_rows(&mut a, &x, &w, Some(&bias), rows, c, oc);
            matmul_rows(&mut b, &x, &wide, Some(&bias), rows, c, oc);
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "c {c} oc {oc}: bf16 weights differ from their widened f32"
            );
        }
    }
}
