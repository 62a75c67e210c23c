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
//! The bf16 product (`matmul_packed_bf16`, the sampler in `device::Precision::Bf16`) rounds the
//! inputs to bf16 (nearest even) and reads bf16 weights packed for it (`pack_bf16`): half the
//! bytes of the f32 weights, and on a CPU with AVX512-BF16 twice the multiply-adds per instruction
//! (`vdpbf16ps`: 16 lanes, each adding two exact bf16 products to an f32 sum, the odd one first).
//! Where that instruction is missing, a scalar kernel does the same arithmetic in the same order,
//! bit for bit (tested on a machine that has it). GPUs run bf16 GEMM operands with f32
//! accumulation the same way.

use half::bf16;
use rayon::prelude::*;

/// Lanes per accumulator (one AVX-512 register).
const LANES: usize = 16;
/// Fewest output columns per rayon task: below this, scheduling costs more than it saves.
const MIN_COLS_PER_TASK: usize = 32;

/// out[S, OC] = inp[S, C] · weight[OC, C]ᵀ + bias, batch-invariant (see the module docs).
pub fn matmul_rows(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
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
    // Tasks of 4-column tiles.
    tasks(oc, 4, MIN_COLS_PER_TASK).for_each(|cols| {
        // SAFETY: each task writes its columns of every row, disjoint from other tasks.
        unsafe { dispatch(out.ptr(), inp, weight, bias, s, c, oc, cols.start, cols.end) };
    });
}

/// Splits `units` (output columns, or panels of them) into a few tasks per thread, each a
/// multiple of `granule` units and at least `min`. The split changes which thread computes a
/// unit, never how it is computed.
fn tasks(
    units: usize,
    granule: usize,
    min: usize,
) -> impl ParallelIterator<Item = std::ops::Range<usize>> {
    let per = (units
        .div_ceil(4 * rayon::current_num_threads())
        .div_ceil(granule)
        * granule)
        .max(min);
    (0..units.div_ceil(per))
        .into_par_iter()
        .map(move |task| task * per..((task + 1) * per).min(units))
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
unsafe fn dispatch(
    out: *mut f32,
    inp: &[f32],
    w: &[f32],
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
    tile::<false>(out, inp, w, bias, s, c, oc, j0, j1)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512(
    out: *mut f32,
    inp: &[f32],
    w: &[f32],
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
    // Dot products of `ROWS` input rows with 4 weight rows; the same per-accumulator sequence
    // (16-lane FMAs in C order, masked tail, fixed reduction) whatever ROWS is.
    #[inline(always)]
    unsafe fn block<const ROWS: usize>(
        xs: [*const f32; ROWS],
        ws: [*const f32; 4],
        full: usize,
        c: usize,
        tail: __mmask16,
    ) -> [[f32; 4]; ROWS] {
        let mut acc = [[_mm512_setzero_ps(); 4]; ROWS];
        let mut k = 0;
        while k < full {
            let wv = [
                _mm512_loadu_ps(ws[0].add(k)),
                _mm512_loadu_ps(ws[1].add(k)),
                _mm512_loadu_ps(ws[2].add(k)),
                _mm512_loadu_ps(ws[3].add(k)),
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
            let wv = [
                _mm512_maskz_loadu_ps(tail, ws[0].add(full)),
                _mm512_maskz_loadu_ps(tail, ws[1].add(full)),
                _mm512_maskz_loadu_ps(tail, ws[2].add(full)),
                _mm512_maskz_loadu_ps(tail, ws[3].add(full)),
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
        let ws: [*const f32; 4] = std::array::from_fn(|q| w.as_ptr().add((j + q.min(n - 1)) * c));
        let mut r = 0;
        while r + 4 <= s {
            let xs = [
                inp.as_ptr().add(r * c),
                inp.as_ptr().add((r + 1) * c),
                inp.as_ptr().add((r + 2) * c),
                inp.as_ptr().add((r + 3) * c),
            ];
            let dots = block::<4>(xs, ws, full, c, tail_mask);
            store(out, &dots, r, j, n, oc, bias);
            r += 4;
        }
        while r < s {
            let dots = block::<1>([inp.as_ptr().add(r * c)], ws, full, c, tail_mask);
            store(out, &dots, r, j, n, oc, bias);
            r += 1;
        }
        j += 4;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2(
    out: *mut f32,
    inp: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    s: usize,
    c: usize,
    oc: usize,
    j0: usize,
    j1: usize,
) {
    tile::<true>(out, inp, w, bias, s, c, oc, j0, j1)
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
fn dot_1x4<const FMA: bool>(x: &[f32], ws: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; LANES]; 4];
    let full = x.len() / LANES * LANES;
    for k in (0..full).step_by(LANES) {
        let xs = &x[k..k + LANES];
        for (a, w) in acc.iter_mut().zip(ws) {
            let wk = &w[k..k + LANES];
            for l in 0..LANES {
                a[l] = madd::<FMA>(xs[l], wk[l], a[l]);
            }
        }
    }
    let mut out = [0f32; 4];
    for ((o, a), w) in out.iter_mut().zip(&acc).zip(ws) {
        let mut sum = reduce(a);
        for k in full..x.len() {
            sum = madd::<FMA>(x[k], w[k], sum);
        }
        *o = sum;
    }
    out
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const FMA: bool>(
    out: *mut f32,
    inp: &[f32],
    w: &[f32],
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
        let ws: [&[f32]; 4] = std::array::from_fn(|q| {
            let col = j + q.min(n - 1);
            &w[col * c..(col + 1) * c]
        });
        for r in 0..s {
            let dots = dot_1x4::<FMA>(&inp[r * c..(r + 1) * c], ws);
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

/// Whether this CPU has `vdpbf16ps` (AVX512-BF16, with AVX-512F).
pub fn has_dpbf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What `vdpbf16ps` does to one lane: the odd product, then the even one, each sum rounded to
/// f32 (the products of two bf16 are exact in f32); denormal inputs and results are zero.
#[inline(always)]
fn dp_lane(acc: f32, x0: bf16, x1: bf16, w0: bf16, w1: bf16) -> f32 {
    let daz = |v: f32| if v.abs() < f32::MIN_POSITIVE { 0.0 } else { v };
    let (x0, x1, w0, w1) = (
        daz(x0.to_f32()),
        daz(x1.to_f32()),
        daz(w0.to_f32()),
        daz(w1.to_f32()),
    );
    let acc = daz(acc + x1 * w1);
    daz(acc + x0 * w0)
}

/// Outputs per panel of a packed bf16 matrix: one AVX-512 register of f32 sums.
pub const PANEL: usize = 16;

/// Elements of an [oc, c] matrix packed by [`pack_bf16`]: outputs padded to whole panels, inputs
/// to whole pairs.
pub fn packed_len(oc: usize, c: usize) -> usize {
    oc.div_ceil(PANEL) * PANEL * c.div_ceil(2) * 2
}

/// Writes the [oc, c] row-major matrix `w` into `dst` ([`packed_len`] elements) rounded to bf16
/// (nearest even), packed: panel p of 16 outputs, input pair q, output o, half h at
/// ((p·⌈c/2⌉ + q)·16 + o)·2 + h, zeros past the matrix. One 64-byte load then holds one input pair
/// of 16 outputs: what `vdpbf16ps` multiplies by a broadcast pair of inputs.
pub fn pack_bf16(dst: &mut [bf16], w: &[f32], oc: usize, c: usize) {
    assert!(dst.len() == packed_len(oc, c) && w.len() >= oc * c && c > 0);
    let c2 = c.div_ceil(2);
    dst.par_chunks_mut(c2 * PANEL * 2)
        .enumerate()
        .for_each(|(p, panel)| {
            for q in 0..c2 {
                for o in 0..PANEL {
                    for h in 0..2 {
                        let (j, k) = (p * PANEL + o, 2 * q + h);
                        panel[(q * PANEL + o) * 2 + h] = if j < oc && k < c {
                            bf16::from_f32(w[j * c + k])
                        } else {
                            bf16::ZERO
                        };
                    }
                }
            }
        });
}

/// out[S, OC] = bf16(inp)[S, C] · W[OC, C]ᵀ + bias for `w` packed by [`pack_bf16`]: each output
/// sums its input pairs in C order, the odd product then the even one, in f32 (`vdpbf16ps`'s
/// lane, with the input pair broadcast), then adds its bias. No horizontal sums, and every
/// output's arithmetic is the same whatever S is and however the work is split: batch-invariant.
pub fn matmul_packed_bf16(
    out: &mut [f32],
    inp: &[f32],
    w: &[bf16],
    bias: Option<&[f32]>,
    s: usize,
    c: usize,
    oc: usize,
) {
    assert!(
        c > 0 && out.len() >= s * oc && inp.len() >= s * c && w.len() >= packed_len(oc, c),
        "matmul_packed_bf16: shapes or buffers"
    );
    let c2 = c.div_ceil(2);
    // Each row's inputs as bf16 pairs, the even one in the low half (what a broadcast dword
    // gives `vdpbf16ps` as its (2i, 2i+1) elements); an odd C's last pair ends in zero.
    let mut x: Vec<u32> = Vec::with_capacity(s * c2);
    for row in inp[..s * c].chunks_exact(c) {
        x.extend(row.chunks(2).map(|p| {
            let hi = p.get(1).map_or(0, |&v| bf16::from_f32(v).to_bits() as u32);
            (bf16::from_f32(p[0]).to_bits() as u32) | (hi << 16)
        }));
    }
    let panels = oc.div_ceil(PANEL);
    let out = SharedOut(out.as_mut_ptr());
    let simd = has_dpbf16();
    // Tasks of panel pairs.
    tasks(panels, 2, 2).for_each(|panels| {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: the features were detected; each task writes its panels' columns.
            unsafe { packed_dpbf16(out.ptr(), &x, w, bias, s, c2, oc, panels) };
            return;
        }
        let _ = simd;
        // SAFETY: each task writes its panels' columns of every row, disjoint from others.
        unsafe { packed_scalar(out.ptr(), &x, w, bias, s, c2, oc, panels) };
    });
}

/// [`matmul_packed_bf16`] without `vdpbf16ps`: the same lanes in the same order.
#[allow(clippy::too_many_arguments)]
unsafe fn packed_scalar(
    out: *mut f32,
    x: &[u32],
    w: &[bf16],
    bias: Option<&[f32]>,
    s: usize,
    c2: usize,
    oc: usize,
    panels: std::ops::Range<usize>,
) {
    for p in panels {
        let wp = &w[p * c2 * PANEL * 2..(p + 1) * c2 * PANEL * 2];
        for r in 0..s {
            let mut acc = [0f32; PANEL];
            for (q, &pair) in x[r * c2..(r + 1) * c2].iter().enumerate() {
                let (x0, x1) = (
                    bf16::from_bits(pair as u16),
                    bf16::from_bits((pair >> 16) as u16),
                );
                let wq = &wp[q * PANEL * 2..(q + 1) * PANEL * 2];
                for (o, a) in acc.iter_mut().enumerate() {
                    *a = dp_lane(*a, x0, x1, wq[2 * o], wq[2 * o + 1]);
                }
            }
            for (o, a) in acc.iter().enumerate().take(oc - p * PANEL) {
                let j = p * PANEL + o;
                *out.add(r * oc + j) = a + bias.map_or(0.0, |b| b[j]);
            }
        }
    }
}

/// [`matmul_packed_bf16`] with `vdpbf16ps`: 4 rows × 2 panels (32 outputs) share the loads of
/// each input pair; 8 registers of sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bf16,avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn packed_dpbf16(
    out: *mut f32,
    x: &[u32],
    w: &[bf16],
    bias: Option<&[f32]>,
    s: usize,
    c2: usize,
    oc: usize,
    panels: std::ops::Range<usize>,
) {
    use std::arch::x86_64::{
        __m512, __m512bh, __mmask16, _mm512_add_ps, _mm512_dpbf16_ps, _mm512_loadu_si512,
        _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_set1_epi32, _mm512_setzero_ps,
    };
    #[inline(always)]
    unsafe fn block<const ROWS: usize>(
        xs: [*const u32; ROWS],
        wp: [*const bf16; 2],
        c2: usize,
    ) -> [[__m512; 2]; ROWS] {
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        for q in 0..c2 {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(wp[0].add(q * 32).cast()));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(wp[1].add(q * 32).cast()));
            for r in 0..ROWS {
                let xv: __m512bh = std::mem::transmute(_mm512_set1_epi32(*xs[r].add(q) as i32));
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], xv, w0);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], xv, w1);
            }
        }
        acc
    }
    let mut p = panels.start;
    while p < panels.end {
        let n = (panels.end - p).min(2);
        // One panel left: the second slot repeats it and its sums are dropped.
        let wp = [
            w.as_ptr().add(p * c2 * 32),
            w.as_ptr().add((p + n - 1) * c2 * 32),
        ];
        let store = |acc: &[[__m512; 2]], r0: usize| {
            for (dr, row) in acc.iter().enumerate() {
                for (k, &sums) in row.iter().enumerate().take(n) {
                    let j = (p + k) * PANEL;
                    // The last panel of an output count that is not a multiple of 16.
                    let lanes = (oc - j).min(PANEL);
                    let mask: __mmask16 = ((1u32 << lanes) - 1) as __mmask16;
                    let v = match bias {
                        Some(b) => {
                            _mm512_add_ps(sums, _mm512_maskz_loadu_ps(mask, b.as_ptr().add(j)))
                        }
                        None => sums,
                    };
                    _mm512_mask_storeu_ps(out.add((r0 + dr) * oc + j), mask, v);
                }
            }
        };
        let mut r = 0;
        while r + 4 <= s {
            let xs = std::array::from_fn(|i| x.as_ptr().add((r + i) * c2));
            store(&block::<4>(xs, wp, c2), r);
            r += 4;
        }
        while r < s {
            store(&block::<1>([x.as_ptr().add(r * c2)], wp, c2), r);
            r += 1;
        }
        p += n;
    }
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

    /// Rows of bf16-exact values of mixed sign and scale, with some exact zeros.
    fn bf16_data(n: usize, seed: usize) -> Vec<f32> {
        data(n, seed)
            .iter()
            .map(|&v| bf16::from_f32(v * 3.0).to_f32())
            .collect()
    }

    #[test]
    fn the_packed_bf16_product_is_a_plain_product_and_the_same_on_every_cpu() {
        // Whole panels and pairs, and neither (83 inputs, 37 outputs).
        for (c, oc, rows) in [
            (64, 48, 9),
            (576, 32, 5),
            (2, 16, 1),
            (30, 80, 6),
            (83, 37, 7),
        ] {
            let wf = bf16_data(oc * c, 9);
            let mut packed = vec![bf16::ZERO; packed_len(oc, c)];
            pack_bf16(&mut packed, &wf, oc, c);
            let bias = data(oc, 10);
            let x = bf16_data(rows * c, 11);
            let mut all = vec![0f32; rows * oc];
            matmul_packed_bf16(&mut all, &x, &packed, Some(&bias), rows, c, oc);
            for r in 0..rows {
                for j in 0..oc {
                    let (mut want, mut scale) = (bias[j] as f64, bias[j].abs() as f64);
                    for k in 0..c {
                        let p = x[r * c + k] as f64 * wf[j * c + k] as f64;
                        want += p;
                        scale += p.abs();
                    }
                    let got = all[r * oc + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-6 * scale.max(1e-3),
                        "c {c} ({r}, {j}): {got} vs {want}"
                    );
                }
            }
            // Alone, each row gets the same bits.
            for r in [0, rows - 1] {
                let mut one = vec![0f32; oc];
                let xs = &x[r * c..(r + 1) * c];
                matmul_packed_bf16(&mut one, xs, &packed, Some(&bias), 1, c, oc);
                assert!(
                    one.iter()
                        .zip(&all[r * oc..(r + 1) * oc])
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "c {c}: row {r} differs alone"
                );
            }
            // The scalar kernel (a CPU without AVX512-BF16) gives the same bits.
            let pairs: Vec<u32> = x
                .chunks_exact(c)
                .flat_map(|row| {
                    row.chunks(2).map(|p| {
                        let hi = p.get(1).map_or(0, |&v| bf16::from_f32(v).to_bits() as u32);
                        (bf16::from_f32(p[0]).to_bits() as u32) | (hi << 16)
                    })
                })
                .collect();
            let mut scalar = vec![0f32; rows * oc];
            unsafe {
                packed_scalar(
                    scalar.as_mut_ptr(),
                    &pairs,
                    &packed,
                    Some(&bias),
                    rows,
                    c.div_ceil(2),
                    oc,
                    0..oc.div_ceil(PANEL),
                )
            };
            let differ = scalar
                .iter()
                .zip(&all)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                differ, 0,
                "c {c}: the scalar kernel differs on {differ} outputs"
            );
        }
    }
}
