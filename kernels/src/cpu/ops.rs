//! The CPU reference ops, llm.c style: one forward and one backward function per op, plain slices,
//! backward functions accumulate (`+=`) into their gradient outputs.
//!
//! Shape legend: B = batch, T = time, N = B·T tokens, C = channels (hidden size), V = vocab,
//! NH = query heads, NKV = key/value heads, HS = head size, QKV = (NH + 2·NKV)·HS, I = MLP width.

use rayon::prelude::*;

use super::fastmath;
use super::gemm::{gemm, Mat, MatMut, Threads};

/// Rows per rayon task for row-wise elementwise ops: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

/// out[N,C] = wte[ids[n], :]. Ids are checked by the caller.
pub fn embedding_forward(out: &mut [f32], ids: &[u32], wte: &[f32], c: usize) {
    for (row, &id) in out.chunks_exact_mut(c).zip(ids) {
        let id = id as usize;
        row.copy_from_slice(&wte[id * c..(id + 1) * c]);
    }
}

/// dwte[ids[n], :] += dout[n, :].
pub fn embedding_backward(dwte: &mut [f32], dout: &[f32], ids: &[u32], c: usize) {
    for (row, &id) in dout.chunks_exact(c).zip(ids) {
        let id = id as usize;
        for (d, g) in dwte[id * c..(id + 1) * c].iter_mut().zip(row) {
            *d += g;
        }
    }
}

/// out = weight ⊙ inp / rms(inp) per row of C; rstd[n] = 1/sqrt(mean(inp²) + eps) is kept for backward.
pub fn rmsnorm_forward(
    out: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    c: usize,
    eps: f32,
) {
    out.par_chunks_mut(c * ROWS_PER_TASK)
        .zip(rstd.par_chunks_mut(ROWS_PER_TASK))
        .zip(inp.par_chunks(c * ROWS_PER_TASK))
        .for_each(|((out, rstd), inp)| {
            for ((o, r), x) in out
                .chunks_exact_mut(c)
                .zip(rstd.iter_mut())
                .zip(inp.chunks_exact(c))
            {
                let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / c as f32;
                let s = 1.0 / (mean_sq + eps).sqrt();
                *r = s;
                for ((o, x), w) in o.iter_mut().zip(x).zip(weight) {
                    *o = w * (x * s);
                }
            }
        });
}

/// dinp += ∂/∂inp, dweight += ∂/∂weight of `rmsnorm_forward`.
pub fn rmsnorm_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    rstd: &[f32],
    c: usize,
) {
    dinp.par_chunks_mut(c * ROWS_PER_TASK)
        .zip(dout.par_chunks(c * ROWS_PER_TASK))
        .zip(inp.par_chunks(c * ROWS_PER_TASK))
        .zip(rstd.par_chunks(ROWS_PER_TASK))
        .for_each(|(((dinp, dout), inp), rstd)| {
            for (((di, go), x), &s) in dinp
                .chunks_exact_mut(c)
                .zip(dout.chunks_exact(c))
                .zip(inp.chunks_exact(c))
                .zip(rstd)
            {
                // xhat = x·s; out = w·xhat; dx = s·(w·go − xhat·mean(w·go·xhat))
                let dot = go
                    .iter()
                    .zip(weight)
                    .zip(x)
                    .map(|((g, w), x)| g * w * x * s)
                    .sum::<f32>()
                    / c as f32;
                for (((d, g), w), x) in di.iter_mut().zip(go).zip(weight).zip(x) {
                    *d += s * (g * w - x * s * dot);
                }
            }
        });
    for (go, (x, &s)) in dout.chunks_exact(c).zip(inp.chunks_exact(c).zip(rstd)) {
        for ((dw, g), x) in dweight.iter_mut().zip(go).zip(x) {
            *dw += g * x * s;
        }
    }
}

/// out[N,OC] = inp[N,C] · weight[OC,C]ᵀ + bias[OC].
pub fn matmul_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
) {
    gemm(
        MatMut::rows(out, n, oc, oc),
        Mat::rows(inp, n, c, c),
        Mat::transposed(weight, c, oc, c),
        1.0,
        false,
        Threads::All,
    );
    if let Some(bias) = bias {
        add_bias(out, bias, oc);
    }
}

/// out[N,OC] += inp[N,C] · weight[OC,C]ᵀ: a projection added onto a residual stream in place.
pub fn matmul_forward_accumulate(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    c: usize,
    oc: usize,
) {
    gemm(
        MatMut::rows(out, n, oc, oc),
        Mat::rows(inp, n, c, c),
        Mat::transposed(weight, c, oc, c),
        1.0,
        true,
        Threads::All,
    );
}

fn add_bias(out: &mut [f32], bias: &[f32], oc: usize) {
    out.par_chunks_mut(oc * ROWS_PER_TASK).for_each(|rows| {
        for row in rows.chunks_exact_mut(oc) {
            for (o, b) in row.iter_mut().zip(bias) {
                *o += b;
            }
        }
    });
}

/// dinp += dout·weight, dweight += doutᵀ·inp, dbias += Σₙ dout.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    c: usize,
    oc: usize,
) {
    gemm(
        MatMut::rows(dinp, n, c, c),
        Mat::rows(dout, n, oc, oc),
        Mat::rows(weight, oc, c, c),
        1.0,
        true,
        Threads::All,
    );
    gemm(
        MatMut::rows(dweight, oc, c, c),
        Mat::transposed(dout, oc, n, oc),
        Mat::rows(inp, n, c, c),
        1.0,
        true,
        Threads::All,
    );
    if let Some(dbias) = dbias {
        for row in dout.chunks_exact(oc) {
            for (d, g) in dbias.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}

/// Rotary position tables: cos and sin of position·inv_freq for every position and pair.
#[derive(Debug, Clone)]
pub struct RopeTable {
    /// HS/2: one frequency per rotated pair.
    pub half: usize,
    /// cos[pos·half + i].
    pub cos: Vec<f32>,
    /// sin[pos·half + i].
    pub sin: Vec<f32>,
}

impl RopeTable {
    /// Tables for positions 0..max_pos; angles in f64 then rounded, as Hugging Face does.
    pub fn new(inv_freq: &[f64], max_pos: usize) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for pos in 0..max_pos {
            for f in inv_freq {
                let angle = pos as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeTable { half, cos, sin }
    }

    /// How many positions the tables cover.
    pub fn max_positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }
}

/// Rotates `heads` heads of HS = 2·half starting at column `col` of each row of `x` (row stride
/// `stride`), in place, by the angle of that row's position (HF rotate-half layout: pair i is
/// (x[i], x[i + half])). `inverse` rotates backwards, which is RoPE's backward pass.
pub fn rope_apply(
    x: &mut [f32],
    positions: &[u32],
    table: &RopeTable,
    stride: usize,
    col: usize,
    heads: usize,
    inverse: bool,
) {
    let half = table.half;
    let sign = if inverse { -1.0 } else { 1.0 };
    x.par_chunks_mut(stride * ROWS_PER_TASK)
        .zip(positions.par_chunks(ROWS_PER_TASK))
        .for_each(|(rows, positions)| {
            for (row, &pos) in rows.chunks_exact_mut(stride).zip(positions) {
                let cos = &table.cos[pos as usize * half..(pos as usize + 1) * half];
                let sin = &table.sin[pos as usize * half..(pos as usize + 1) * half];
                for h in 0..heads {
                    let head = &mut row[col + h * 2 * half..col + (h + 1) * 2 * half];
                    let (lo, hi) = head.split_at_mut(half);
                    for i in 0..half {
                        let (a, b) = (lo[i], hi[i]);
                        let s = sign * sin[i];
                        lo[i] = a * cos[i] - b * s;
                        hi[i] = b * cos[i] + a * s;
                    }
                }
            }
        });
}

/// RoPE forward on the q and k parts of a fused [N, QKV] buffer.
pub fn rope_forward(
    qkv: &mut [f32],
    positions: &[u32],
    table: &RopeTable,
    nh: usize,
    nkv: usize,
    hs: usize,
) {
    let stride = (nh + 2 * nkv) * hs;
    rope_apply(qkv, positions, table, stride, 0, nh + nkv, false);
}

/// RoPE backward: the gradient is rotated back by the same angle (rotations are orthogonal).
pub fn rope_backward(
    dqkv: &mut [f32],
    positions: &[u32],
    table: &RopeTable,
    nh: usize,
    nkv: usize,
    hs: usize,
) {
    let stride = (nh + 2 * nkv) * hs;
    rope_apply(dqkv, positions, table, stride, 0, nh + nkv, true);
}

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Sequences.
    pub b: usize,
    /// Tokens per sequence.
    pub t: usize,
    /// Query heads.
    pub nh: usize,
    /// Key/value heads.
    pub nkv: usize,
    /// Head size.
    pub hs: usize,
}

impl AttnShape {
    fn qkv(&self) -> usize {
        (self.nh + 2 * self.nkv) * self.hs
    }
    fn q_dim(&self) -> usize {
        self.nh * self.hs
    }
}

/// A pointer that may be shared across rayon tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32, usize);
// SAFETY: only used where each task touches a disjoint set of elements (argued at each use).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
impl SharedMut {
    fn new(s: &mut [f32]) -> Self {
        SharedMut(s.as_mut_ptr(), s.len())
    }

    /// A [rows, cols] view with rows `stride` apart starting at element `start`.
    ///
    /// SAFETY: the caller guarantees no other task accesses the elements this view touches.
    unsafe fn view(&self, start: usize, rows: usize, cols: usize, stride: usize) -> MatMut<'_> {
        assert!(
            rows == 0 || start + (rows - 1) * stride + cols <= self.1,
            "view out of bounds"
        );
        MatMut::from_raw(self.0.add(start), rows, cols, stride)
    }

    /// The contiguous block start..start+len.
    ///
    /// SAFETY: the caller guarantees no other task accesses this block.
    #[allow(clippy::mut_from_ref)]
    unsafe fn block(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.1, "block out of bounds");
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

#[inline(always)]
fn softmax_window_body(row: &mut [f32], start: usize, end: usize) {
    let (head, rest) = row.split_at_mut(start);
    let (live, tail) = rest.split_at_mut(end - start);
    let max = fastmath::max16(live);
    for x in live.iter_mut() {
        *x = fastmath::exp(*x - max);
    }
    let inv = 1.0 / fastmath::sum16(live);
    for x in live.iter_mut() {
        *x *= inv;
    }
    head.fill(0.0);
    tail.fill(0.0);
}

fastmath::multiversion! {
    /// Softmax of `row[start..end]` in place; the rest of the row (masked keys) set to 0.
    pub fn softmax_window(row: &mut [f32], start: usize, end: usize) = softmax_window_body;
}

#[inline(always)]
fn softmax_two_windows_body(row: &mut [f32], first: (usize, usize), second: (usize, usize)) {
    let max =
        fastmath::max16(&row[first.0..first.1]).max(fastmath::max16(&row[second.0..second.1]));
    let mut total = 0.0;
    for (a, z) in [first, second] {
        let live = &mut row[a..z];
        for x in live.iter_mut() {
            *x = fastmath::exp(*x - max);
        }
        total += fastmath::sum16(live);
    }
    let inv = 1.0 / total;
    for (a, z) in [first, second] {
        for x in row[a..z].iter_mut() {
            *x *= inv;
        }
    }
    row[..first.0].fill(0.0);
    row[first.1..second.0].fill(0.0);
    row[second.1..].fill(0.0);
}

fastmath::multiversion! {
    /// Softmax over `row[first]` and `row[second]` together (`first` ends at or before `second`
    /// starts) in place; every other key set to 0.
    pub fn softmax_two_windows(row: &mut [f32], first: (usize, usize), second: (usize, usize)) = softmax_two_windows_body;
}

/// Softmax of `row[..len]` in place; `row[len..]` set to 0.
pub fn softmax_prefix(row: &mut [f32], len: usize) {
    softmax_window(row, 0, len);
}

#[inline(always)]
fn swiglu_rows_body(h: &mut [f32], gu: &[f32], i: usize) {
    for (h, gu) in h.chunks_exact_mut(i).zip(gu.chunks_exact(2 * i)) {
        let (gate, up) = gu.split_at(i);
        for ((h, &g), &u) in h.iter_mut().zip(gate).zip(up) {
            *h = g / (1.0 + fastmath::exp(-g)) * u;
        }
    }
}

fastmath::multiversion! {
    fn swiglu_rows(h: &mut [f32], gu: &[f32], i: usize) = swiglu_rows_body;
}

#[inline(always)]
fn swiglu_rows_backward_body(dgu: &mut [f32], dh: &[f32], gu: &[f32], i: usize) {
    for ((dgu, dh), gu) in dgu
        .chunks_exact_mut(2 * i)
        .zip(dh.chunks_exact(i))
        .zip(gu.chunks_exact(2 * i))
    {
        let (gate, up) = gu.split_at(i);
        let (dgate, dup) = dgu.split_at_mut(i);
        for k in 0..i {
            let g = gate[k];
            let sig = 1.0 / (1.0 + fastmath::exp(-g));
            dgate[k] += dh[k] * up[k] * sig * (1.0 + g * (1.0 - sig));
            dup[k] += dh[k] * g * sig;
        }
    }
}

fastmath::multiversion! {
    fn swiglu_rows_backward(dgu: &mut [f32], dh: &[f32], gu: &[f32], i: usize) = swiglu_rows_backward_body;
}

/// Query rows per causal block: each block of queries only multiplies the keys up to its last
/// row, which skips (almost) all of the masked upper triangle.
const CAUSAL_BLOCK: usize = 64;

/// Causal grouped-query attention. qkv[N, QKV] holds q|k|v per token (RoPE applied);
/// att[B,NH,T,T] receives the softmax probabilities (kept for backward; zero above the diagonal);
/// out[N, NH·HS] the result. `seg_start[n]` is the row position where token n's segment begins:
/// a token attends to keys seg_start..=itself only (packed sequences do not see each other; 0
/// everywhere is plain causal attention). The backward pass needs no segments: masked
/// probabilities are 0, and so are their gradients.
pub fn attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    qkv: &[f32],
    seg_start: &[u32],
    s: AttnShape,
) {
    attention_forward_shared(out, att, qkv, seg_start, None, s)
}

/// `attention_forward` where some tokens also see a shared prompt: with `shared = Some((start,
/// end))`, token n attends to keys start[n]..end[n] besides seg_start[n]..=itself (a completion
/// laid after its group's prompt and the other completions of the group; `start == end` for
/// tokens without one). Tokens without a shared prompt are computed exactly as by
/// `attention_forward`; the backward pass is the same function.
pub fn attention_forward_shared(
    out: &mut [f32],
    att: &mut [f32],
    qkv: &[f32],
    seg_start: &[u32],
    shared: Option<(&[u32], &[u32])>,
    s: AttnShape,
) {
    let (t, hs, qkv_w, q_dim) = (s.t, s.hs, s.qkv(), s.q_dim());
    let group = s.nh / s.nkv;
    let scale = 1.0 / (hs as f32).sqrt();
    let out_ptr = SharedMut::new(out);
    att.par_chunks_mut(t * t).enumerate().for_each(|(bh, p)| {
        let (b, h) = (bh / s.nh, bh % s.nh);
        let g = h / group;
        let seq = &qkv[b * t * qkv_w..(b + 1) * t * qkv_w];
        let (q, k, v) = (
            &seq[h * hs..],
            &seq[q_dim + g * hs..],
            &seq[q_dim + s.nkv * hs + g * hs..],
        );
        for i0 in (0..t).step_by(CAUSAL_BLOCK) {
            let i1 = (i0 + CAUSAL_BLOCK).min(t);
            let rows = i1 - i0;
            // S[i0..i1, 0..i1] = scale · Q[i0..i1] · K[0..i1]ᵀ
            let block = &mut p[i0 * t..];
            gemm(
                MatMut::rows(block, rows, i1, t),
                Mat::rows(&q[i0 * qkv_w..], rows, hs, qkv_w),
                Mat::transposed(k, hs, i1, qkv_w),
                scale,
                false,
                Threads::One,
            );
            for (r, row) in block.chunks_exact_mut(t).take(rows).enumerate() {
                let i = i0 + r;
                let start = (seg_start[b * t + i] as usize).min(i);
                match shared.map(|(a, z)| (a[b * t + i] as usize, z[b * t + i] as usize)) {
                    Some((a, z)) if a < z && z <= start => {
                        softmax_two_windows(row, (a, z), (start, i + 1))
                    }
                    _ => softmax_window(row, start, i + 1),
                }
            }
            // SAFETY: task (b, h) writes only columns h·HS..(h+1)·HS of rows b·T..(b+1)·T.
            let dst = unsafe { out_ptr.view((b * t + i0) * q_dim + h * hs, rows, hs, q_dim) };
            gemm(
                dst,
                Mat::rows(&p[i0 * t..], rows, i1, t),
                Mat::rows(v, i1, hs, qkv_w),
                1.0,
                false,
                Threads::One,
            );
        }
    });
}

/// Backward of `attention_forward`: dqkv += ∂/∂qkv given dout. `datt` [B,NH,T,T] is scratch.
pub fn attention_backward(
    dqkv: &mut [f32],
    datt: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    att: &[f32],
    s: AttnShape,
) {
    let (t, hs, qkv_w, q_dim) = (s.t, s.hs, s.qkv(), s.q_dim());
    let group = s.nh / s.nkv;
    let scale = 1.0 / (hs as f32).sqrt();
    let dqkv_ptr = SharedMut::new(dqkv);
    let datt_ptr = SharedMut::new(datt);
    // One task per (b, kv head): the heads of a group share dK and dV, so they run in sequence.
    (0..s.b * s.nkv).into_par_iter().for_each(|bg| {
        let (b, g) = (bg / s.nkv, bg % s.nkv);
        let seq = &qkv[b * t * qkv_w..(b + 1) * t * qkv_w];
        let dseq = b * t * qkv_w;
        let (k, v) = (&seq[q_dim + g * hs..], &seq[q_dim + s.nkv * hs + g * hs..]);
        for h in g * group..(g + 1) * group {
            let p = &att[(b * s.nh + h) * t * t..(b * s.nh + h + 1) * t * t];
            // SAFETY: the (b, h) block of datt belongs to this task alone.
            let dp = unsafe { datt_ptr.block((b * s.nh + h) * t * t, t * t) };
            let d_o = &dout[b * t * q_dim + h * hs..];
            let q = &seq[h * hs..];
            for i0 in (0..t).step_by(CAUSAL_BLOCK) {
                let i1 = (i0 + CAUSAL_BLOCK).min(t);
                let rows = i1 - i0;
                let d_o_blk = Mat::rows(&d_o[i0 * q_dim..], rows, hs, q_dim);
                let p_blk = &p[i0 * t..];
                let dp_blk = &mut dp[i0 * t..];
                // dP = dO · Vᵀ over the keys this block sees.
                gemm(
                    MatMut::rows(dp_blk, rows, i1, t),
                    d_o_blk,
                    Mat::transposed(v, hs, i1, qkv_w),
                    1.0,
                    false,
                    Threads::One,
                );
                // dV[0..i1] += Pᵀ · dO
                // SAFETY: dV of (b, g) is written by this task only.
                let dv =
                    unsafe { dqkv_ptr.view(dseq + q_dim + s.nkv * hs + g * hs, i1, hs, qkv_w) };
                gemm(
                    dv,
                    Mat::transposed(p_blk, i1, rows, t),
                    d_o_blk,
                    1.0,
                    true,
                    Threads::One,
                );
                // dS = P ⊙ (dP − rowsum(dP ⊙ P)), then the 1/sqrt(HS) of the forward.
                for (r, (dprow, prow)) in dp_blk
                    .chunks_exact_mut(t)
                    .zip(p_blk.chunks_exact(t))
                    .take(rows)
                    .enumerate()
                {
                    let i = i0 + r;
                    let dot: f32 = dprow[..=i]
                        .iter()
                        .zip(&prow[..=i])
                        .map(|(a, b)| a * b)
                        .sum();
                    for (d, &pv) in dprow[..=i].iter_mut().zip(&prow[..=i]) {
                        *d = pv * (*d - dot) * scale;
                    }
                    dprow[i + 1..i1].fill(0.0);
                }
                let ds = &dp[i0 * t..];
                // dQ[i0..i1] += dS · K[0..i1]
                // SAFETY: dQ columns of head h in sequence b belong to this task.
                let dq = unsafe { dqkv_ptr.view(dseq + i0 * qkv_w + h * hs, rows, hs, qkv_w) };
                gemm(
                    dq,
                    Mat::rows(ds, rows, i1, t),
                    Mat::rows(k, i1, hs, qkv_w),
                    1.0,
                    true,
                    Threads::One,
                );
                // dK[0..i1] += dSᵀ · Q[i0..i1]
                // SAFETY: dK of (b, g) is written by this task only.
                let dk = unsafe { dqkv_ptr.view(dseq + q_dim + g * hs, i1, hs, qkv_w) };
                gemm(
                    dk,
                    Mat::transposed(ds, i1, rows, t),
                    Mat::rows(&q[i0 * qkv_w..], rows, hs, qkv_w),
                    1.0,
                    true,
                    Threads::One,
                );
            }
        }
    });
}

/// h[N,I] = silu(gate) ⊙ up, where gu[N, 2I] holds gate|up per token.
pub fn swiglu_forward(h: &mut [f32], gu: &[f32], i: usize) {
    h.par_chunks_mut(i * ROWS_PER_TASK)
        .zip(gu.par_chunks(2 * i * ROWS_PER_TASK))
        .for_each(|(h, gu)| swiglu_rows(h, gu, i));
}

/// dgu += ∂/∂(gate|up) of `swiglu_forward`.
pub fn swiglu_backward(dgu: &mut [f32], dh: &[f32], gu: &[f32], i: usize) {
    dgu.par_chunks_mut(2 * i * ROWS_PER_TASK)
        .zip(dh.par_chunks(i * ROWS_PER_TASK))
        .zip(gu.par_chunks(2 * i * ROWS_PER_TASK))
        .for_each(|((dgu, dh), gu)| swiglu_rows_backward(dgu, dh, gu, i));
}

/// Qwen3's per-head RMSNorm of the q and k heads of a fused [N, QKV] buffer, in place, before
/// RoPE: each of the NH query heads is normalised over its HS values and scaled by `q_weight`
/// [HS], each of the NKV key heads by `k_weight` [HS]; v is untouched. `rstd` [N, NH + NKV] keeps
/// each head's 1/rms for backward.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_forward(
    qkv: &mut [f32],
    rstd: &mut [f32],
    q_weight: &[f32],
    k_weight: &[f32],
    nh: usize,
    nkv: usize,
    hs: usize,
    eps: f32,
) {
    let stride = (nh + 2 * nkv) * hs;
    let heads = nh + nkv;
    qkv.par_chunks_mut(stride * ROWS_PER_TASK)
        .zip(rstd.par_chunks_mut(heads * ROWS_PER_TASK))
        .for_each(|(rows, rstd)| {
            for (row, rstd) in rows
                .chunks_exact_mut(stride)
                .zip(rstd.chunks_exact_mut(heads))
            {
                for (h, (head, r)) in row[..heads * hs]
                    .chunks_exact_mut(hs)
                    .zip(rstd.iter_mut())
                    .enumerate()
                {
                    let weight = if h < nh { q_weight } else { k_weight };
                    let mean_sq = head.iter().map(|v| v * v).sum::<f32>() / hs as f32;
                    let s = 1.0 / (mean_sq + eps).sqrt();
                    *r = s;
                    for (x, w) in head.iter_mut().zip(weight) {
                        *x = w * (*x * s);
                    }
                }
            }
        });
}

/// Backward of `qk_norm_forward`, in place on the q|k part of `dqkv` [N, QKV]: the gradient
/// w.r.t. the normalised heads becomes the gradient w.r.t. the heads before normalisation (v's
/// gradient is untouched). `pre` [N, (NH + NKV)·HS] holds q|k as they were before the norm;
/// `dq_weight` and `dk_weight` accumulate (`+=`).
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_backward(
    dqkv: &mut [f32],
    dq_weight: &mut [f32],
    dk_weight: &mut [f32],
    pre: &[f32],
    q_weight: &[f32],
    k_weight: &[f32],
    rstd: &[f32],
    nh: usize,
    nkv: usize,
    hs: usize,
) {
    let stride = (nh + 2 * nkv) * hs;
    let heads = nh + nkv;
    // Weight gradients first: they need the incoming gradient before it is overwritten.
    for ((go, x), rstd) in dqkv
        .chunks_exact(stride)
        .zip(pre.chunks_exact(heads * hs))
        .zip(rstd.chunks_exact(heads))
    {
        for (h, ((go, x), &s)) in go[..heads * hs]
            .chunks_exact(hs)
            .zip(x.chunks_exact(hs))
            .zip(rstd)
            .enumerate()
        {
            let dweight = if h < nh {
                &mut *dq_weight
            } else {
                &mut *dk_weight
            };
            for ((dw, g), x) in dweight.iter_mut().zip(go).zip(x) {
                *dw += g * x * s;
            }
        }
    }
    dqkv.par_chunks_mut(stride * ROWS_PER_TASK)
        .zip(pre.par_chunks(heads * hs * ROWS_PER_TASK))
        .zip(rstd.par_chunks(heads * ROWS_PER_TASK))
        .for_each(|((rows, pre), rstd)| {
            for ((row, x), rstd) in rows
                .chunks_exact_mut(stride)
                .zip(pre.chunks_exact(heads * hs))
                .zip(rstd.chunks_exact(heads))
            {
                for (h, ((go, x), &s)) in row[..heads * hs]
                    .chunks_exact_mut(hs)
                    .zip(x.chunks_exact(hs))
                    .zip(rstd)
                    .enumerate()
                {
                    let weight = if h < nh { q_weight } else { k_weight };
                    // As rmsnorm_backward: dx = s·(w·go − xhat·mean(w·go·xhat)).
                    let dot = go
                        .iter()
                        .zip(weight)
                        .zip(x)
                        .map(|((g, w), x)| g * w * x * s)
                        .sum::<f32>()
                        / hs as f32;
                    for ((g, w), x) in go.iter_mut().zip(weight).zip(x) {
                        *g = s * (*g * w - x * s * dot);
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Attention written the obvious way, in f64, for checking the blocked kernel.
    fn naive_attention(qkv: &[f32], s: AttnShape) -> Vec<f64> {
        let (t, hs, w, qd) = (s.t, s.hs, s.qkv(), s.q_dim());
        let mut out = vec![0.0; s.b * t * qd];
        for b in 0..s.b {
            for h in 0..s.nh {
                let g = h / (s.nh / s.nkv);
                for i in 0..t {
                    let q = &qkv[(b * t + i) * w + h * hs..][..hs];
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            let k = &qkv[(b * t + j) * w + qd + g * hs..][..hs];
                            q.iter()
                                .zip(k)
                                .map(|(a, b)| *a as f64 * *b as f64)
                                .sum::<f64>()
                                / (hs as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                    for (j, sc) in scores.iter().enumerate() {
                        let p = (sc - max).exp() / z;
                        let v = &qkv[(b * t + j) * w + qd + s.nkv * hs + g * hs..][..hs];
                        for d in 0..hs {
                            out[(b * t + i) * qd + h * hs + d] += p * v[d] as f64;
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn blocked_causal_attention_matches_naive_attention_across_blocks() {
        // T spans three causal blocks, the last one partial; 4 query heads share 2 kv heads.
        let s = AttnShape {
            b: 2,
            t: 2 * CAUSAL_BLOCK + 7,
            nh: 4,
            nkv: 2,
            hs: 8,
        };
        let qkv = pseudo_random(s.b * s.t * s.qkv(), 1);
        let mut out = vec![0.0; s.b * s.t * s.q_dim()];
        let mut att = vec![f32::NAN; s.b * s.nh * s.t * s.t];
        attention_forward(&mut out, &mut att, &qkv, &vec![0; s.b * s.t], s);
        let want = naive_attention(&qkv, s);
        let err = out
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-5, "max error {err}");
        assert!(
            att.iter().all(|p| p.is_finite()),
            "every probability is written, masked ones as 0"
        );
    }

    #[test]
    fn attention_backward_matches_finite_differences() {
        let s = AttnShape {
            b: 1,
            t: CAUSAL_BLOCK + 5,
            nh: 2,
            nkv: 1,
            hs: 4,
        };
        let qkv = pseudo_random(s.t * s.qkv(), 2);
        let dout = pseudo_random(s.t * s.q_dim(), 3);
        let mut out = vec![0.0; s.t * s.q_dim()];
        let mut att = vec![0.0; s.nh * s.t * s.t];
        attention_forward(&mut out, &mut att, &qkv, &vec![0; s.b * s.t], s);
        let mut dqkv = vec![0.0; qkv.len()];
        let mut datt = vec![0.0; att.len()];
        attention_backward(&mut dqkv, &mut datt, &dout, &qkv, &att, s);
        // L = Σ dout ⊙ naive_attention(qkv): its derivative by central differences in f64.
        let loss = |x: &[f32]| {
            naive_attention(x, s)
                .iter()
                .zip(&dout)
                .map(|(o, g)| o * *g as f64)
                .sum::<f64>()
        };
        for idx in (0..qkv.len()).step_by(37) {
            let eps = 1e-2f32;
            let (mut plus, mut minus) = (qkv.clone(), qkv.clone());
            plus[idx] += eps;
            minus[idx] -= eps;
            let numeric = (loss(&plus) - loss(&minus)) / (2.0 * eps as f64);
            assert!(
                (numeric - dqkv[idx] as f64).abs() < 2e-3 * (1.0 + numeric.abs()),
                "d qkv[{idx}]: {numeric} vs {}",
                dqkv[idx]
            );
        }
    }

    #[test]
    fn rope_backward_inverts_forward_and_keeps_norms() {
        let inv: Vec<f64> = (0..4)
            .map(|i| 1.0 / 10000f64.powf(2.0 * i as f64 / 8.0))
            .collect();
        let table = RopeTable::new(&inv, 16);
        let x = pseudo_random(16 * 3 * 8, 4);
        let positions: Vec<u32> = (0..16).collect();
        let mut y = x.clone();
        rope_forward(&mut y, &positions, &table, 1, 1, 8);
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((norm(&x) - norm(&y)).abs() < 1e-3);
        for row in 0..16 {
            assert_eq!(
                &y[row * 24 + 16..row * 24 + 24],
                &x[row * 24 + 16..row * 24 + 24],
                "v is not rotated"
            );
        }
        assert_eq!(&y[..8], &x[..8], "position 0 is not rotated");
        assert_ne!(&y[24..32], &x[24..32], "position 1 is rotated");
        rope_backward(&mut y, &positions, &table, 1, 1, 8);
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-5));
    }

    #[test]
    fn rmsnorm_and_swiglu_backward_match_finite_differences() {
        let (n, c) = (3, 8);
        let x = pseudo_random(n * c, 5);
        let w = pseudo_random(c, 6);
        let dout = pseudo_random(n * c, 7);
        let f = |x: &[f32], w: &[f32]| {
            let mut out = vec![0.0; n * c];
            let mut rstd = vec![0.0; n];
            rmsnorm_forward(&mut out, &mut rstd, x, w, c, 1e-6);
            out.iter()
                .zip(&dout)
                .map(|(o, g)| (*o as f64) * (*g as f64))
                .sum::<f64>()
        };
        let mut out = vec![0.0; n * c];
        let mut rstd = vec![0.0; n];
        rmsnorm_forward(&mut out, &mut rstd, &x, &w, c, 1e-6);
        let (mut dx, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
        rmsnorm_backward(&mut dx, &mut dw, &dout, &x, &w, &rstd, c);
        let eps = 1e-3;
        for i in 0..n * c {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[i] += eps;
            m[i] -= eps;
            let numeric = (f(&p, &w) - f(&m, &w)) / (2.0 * eps as f64);
            assert!(
                (numeric - dx[i] as f64).abs() < 1e-2 * (1.0 + numeric.abs()),
                "dx[{i}]"
            );
        }
        for i in 0..c {
            let (mut p, mut m) = (w.clone(), w.clone());
            p[i] += eps;
            m[i] -= eps;
            let numeric = (f(&x, &p) - f(&x, &m)) / (2.0 * eps as f64);
            assert!(
                (numeric - dw[i] as f64).abs() < 1e-2 * (1.0 + numeric.abs()),
                "dw[{i}]"
            );
        }

        let i_dim = 5;
        let gu = pseudo_random(n * 2 * i_dim, 8);
        let dh = pseudo_random(n * i_dim, 9);
        let g = |gu: &[f32]| {
            let mut h = vec![0.0; n * i_dim];
            swiglu_forward(&mut h, gu, i_dim);
            h.iter()
                .zip(&dh)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum::<f64>()
        };
        let mut dgu = vec![0.0; gu.len()];
        swiglu_backward(&mut dgu, &dh, &gu, i_dim);
        for i in 0..gu.len() {
            let (mut p, mut m) = (gu.clone(), gu.clone());
            p[i] += eps;
            m[i] -= eps;
            let numeric = (g(&p) - g(&m)) / (2.0 * eps as f64);
            assert!(
                (numeric - dgu[i] as f64).abs() < 1e-2 * (1.0 + numeric.abs()),
                "dgu[{i}]"
            );
        }
    }
}
