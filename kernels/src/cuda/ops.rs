//! The GPU ops, llm.c style and named as their CPU twins in `cpu::ops`: one function per op and
//! direction, device addresses (`DeviceBuffer::at`) and sizes in, backward functions accumulate
//! (`+=`) into their gradient outputs. Everything is queued on the backend's stream.
//!
//! Shape legend: B = batch, T = time, N = B·T tokens, C = channels, V = vocab, NH = query heads,
//! NKV = key/value heads, HS = head size, QKV = (NH + 2·NKV)·HS, QD = NH·HS, I = MLP width.
//! Precision: weights and GEMM operands bf16, residual stream, norms' statistics, attention,
//! gradients and optimizer state f32.

use super::backend::{Arg, CudaBackend};
use super::error::CudaError;
use crate::cpu::ops::AttnShape;

/// A device address (see `DeviceBuffer::at`).
pub type Ptr = u64;

/// Threads per block for row-wise kernels (RMSNorm, classifier).
const ROW_THREADS: u32 = 256;
/// Threads per block of the sampling kernel (one block per row of logits).
pub(crate) const SAMPLE_THREADS: u32 = 1024;
/// Warps per block of the attention kernels (`WARPS` in attention.cu, `DEC_WARPS` in decode.cu).
const ATTN_WARPS: usize = 4;
/// Largest head size the attention kernels hold in registers (`MAX_HS` in attention.cu).
pub const MAX_HEAD_SIZE: usize = 256;

fn int(v: usize) -> Result<Arg, CudaError> {
    Arg::int(v)
}

fn grid(v: usize) -> Result<u32, CudaError> {
    u32::try_from(v).map_err(|_| CudaError::Input(format!("grid of {v} blocks is too large")))
}

/// out[N,C] (f32) = wte[ids[n], :] (bf16). Ids are checked by the caller.
pub fn embedding_forward(
    be: &CudaBackend,
    out: Ptr,
    ids: Ptr,
    wte: Ptr,
    n: usize,
    c: usize,
) -> Result<(), CudaError> {
    be.launch_1d(
        ("elementwise", "embedding_forward"),
        n * c,
        &[
            Arg::Ptr(out),
            Arg::Ptr(ids),
            Arg::Ptr(wte),
            int(n)?,
            int(c)?,
        ],
    )
}

/// dwte[ids[n], :] += dout[n, :]. Tokens are grouped by id on the host, so each (id, column) is
/// summed by one thread in token order: deterministic, and the CPU twin's order of additions.
pub fn embedding_backward(
    be: &CudaBackend,
    dwte: Ptr,
    dout: Ptr,
    ids: &[u32],
    c: usize,
) -> Result<(), CudaError> {
    let (order, starts, unique) = group_by_id(ids);
    if unique.is_empty() {
        return Ok(());
    }
    // order | starts | unique in one upload to the backend's reusable index scratch: no per-call
    // allocation, no free (which would synchronise the device). The copy is stream-ordered after
    // any earlier kernel that read the scratch.
    let mut packed = Vec::with_capacity(order.len() + starts.len() + unique.len());
    packed.extend_from_slice(&order);
    packed.extend_from_slice(&starts);
    packed.extend_from_slice(&unique);
    let base = be.scratch_u32(packed.len())?;
    be.copy_to_scratch(base, &packed)?;
    let g_order = base;
    let g_starts = base + 4 * order.len() as u64;
    let g_unique = g_starts + 4 * starts.len() as u64;
    be.launch(
        ("elementwise", "embedding_backward"),
        (grid(unique.len())?, grid(c.div_ceil(256))?, 1),
        256,
        &[
            Arg::Ptr(dwte),
            Arg::Ptr(dout),
            Arg::Ptr(g_order),
            Arg::Ptr(g_starts),
            Arg::Ptr(g_unique),
            int(unique.len())?,
            int(c)?,
        ],
    )
}

/// Token indices grouped by id, for `embedding_backward`: `order` lists the tokens id by id (in
/// token order within an id), `starts[k]..starts[k + 1]` are the entries of `unique[k]`.
pub fn group_by_id(ids: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..ids.len() as u32).collect();
    order.sort_by_key(|&t| (ids[t as usize], t));
    let mut unique = Vec::new();
    let mut starts = Vec::new();
    for (k, &t) in order.iter().enumerate() {
        let id = ids[t as usize];
        if unique.last() != Some(&id) {
            unique.push(id);
            starts.push(k as u32);
        }
    }
    starts.push(order.len() as u32);
    (order, starts, unique)
}

/// Row chunks of the two-pass column sums: enough blocks to fill the GPU, few partials to add.
const COLUMN_CHUNKS: usize = 64;

/// out[C] += Σₙ a[n, :] ⊙ (b[n, :]) · (row_scale[n]), b and row_scale optional; deterministic.
pub fn column_sum(
    be: &CudaBackend,
    out: Ptr,
    a: Ptr,
    b: Option<Ptr>,
    row_scale: Option<Ptr>,
    n: usize,
    c: usize,
) -> Result<(), CudaError> {
    let chunks = COLUMN_CHUNKS.min(n.max(1));
    let rows_per_chunk = n.div_ceil(chunks).max(1);
    let partials = be.scratch_f32(chunks * c)?;
    be.launch(
        ("elementwise", "column_partials"),
        (grid(c.div_ceil(256))?, grid(chunks)?, 1),
        256,
        &[
            Arg::Ptr(partials),
            Arg::Ptr(a),
            Arg::Ptr(b.unwrap_or(0)),
            Arg::Ptr(row_scale.unwrap_or(0)),
            int(n)?,
            int(c)?,
            int(rows_per_chunk)?,
        ],
    )?;
    be.launch_1d(
        ("elementwise", "column_reduce"),
        c,
        &[Arg::Ptr(out), Arg::Ptr(partials), int(chunks)?, int(c)?],
    )
}

/// out = a + b over `n` floats (out may be a).
pub fn residual_forward(
    be: &CudaBackend,
    out: Ptr,
    a: Ptr,
    b: Ptr,
    n: usize,
) -> Result<(), CudaError> {
    be.launch_1d(
        ("elementwise", "residual_forward"),
        n,
        &[Arg::Ptr(out), Arg::Ptr(a), Arg::Ptr(b), Arg::I64(n as i64)],
    )
}

/// out += a over `n` floats: the residual add's backward (the gradient flows to both inputs).
pub fn residual_backward(be: &CudaBackend, out: Ptr, a: Ptr, n: usize) -> Result<(), CudaError> {
    be.launch_1d(
        ("elementwise", "accumulate"),
        n,
        &[Arg::Ptr(out), Arg::Ptr(a), Arg::I64(n as i64)],
    )
}

/// out (bf16) = in (f32), rounding to nearest even.
pub fn cast_to_bf16(be: &CudaBackend, out: Ptr, inp: Ptr, n: usize) -> Result<(), CudaError> {
    be.launch_1d(
        ("elementwise", "cast_f32_bf16"),
        n,
        &[Arg::Ptr(out), Arg::Ptr(inp), Arg::I64(n as i64)],
    )
}

/// out (f32) = in (bf16).
pub fn cast_to_f32(be: &CudaBackend, out: Ptr, inp: Ptr, n: usize) -> Result<(), CudaError> {
    be.launch_1d(
        ("elementwise", "cast_bf16_f32"),
        n,
        &[Arg::Ptr(out), Arg::Ptr(inp), Arg::I64(n as i64)],
    )
}

/// x *= s over `n` floats.
pub fn scale(be: &CudaBackend, x: Ptr, s: f32, n: usize) -> Result<(), CudaError> {
    be.launch_1d(
        ("elementwise", "scale_f32"),
        n,
        &[Arg::Ptr(x), Arg::F32(s), Arg::I64(n as i64)],
    )
}

/// out = weight ⊙ inp / rms(inp) per row of C, as bf16 (the next GEMM's operand); rstd[n] kept.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_forward(
    be: &CudaBackend,
    out: Ptr,
    rstd: Ptr,
    inp: Ptr,
    weight: Ptr,
    n: usize,
    c: usize,
    eps: f32,
) -> Result<(), CudaError> {
    be.launch(
        ("rmsnorm", "rmsnorm_forward"),
        (grid(n)?, 1, 1),
        ROW_THREADS,
        &[
            Arg::Ptr(out),
            Arg::Ptr(rstd),
            Arg::Ptr(inp),
            Arg::Ptr(weight),
            int(n)?,
            int(c)?,
            Arg::F32(eps),
        ],
    )
}

/// dinp += ∂/∂inp, dweight += ∂/∂weight of `rmsnorm_forward`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    be: &CudaBackend,
    dinp: Ptr,
    dweight: Ptr,
    dout: Ptr,
    inp: Ptr,
    weight: Ptr,
    rstd: Ptr,
    n: usize,
    c: usize,
) -> Result<(), CudaError> {
    be.launch(
        ("rmsnorm", "rmsnorm_backward"),
        (grid(n)?, 1, 1),
        ROW_THREADS,
        &[
            Arg::Ptr(dinp),
            Arg::Ptr(dout),
            Arg::Ptr(inp),
            Arg::Ptr(weight),
            Arg::Ptr(rstd),
            int(n)?,
            int(c)?,
        ],
    )?;
    column_sum(be, dweight, dout, Some(inp), Some(rstd), n, c)
}

/// out[N,OC] (f32) = inp[N,C] · weight[OC,C]ᵀ (+ bias[OC]), bf16 operands, f32 accumulation.
/// `accumulate` adds onto out instead of overwriting it.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    be: &CudaBackend,
    out: Ptr,
    inp: Ptr,
    weight: Ptr,
    bias: Option<Ptr>,
    n: usize,
    c: usize,
    oc: usize,
    accumulate: bool,
) -> Result<(), CudaError> {
    be.gemm_bf16(
        out,
        inp,
        weight,
        (n, oc, c),
        false,
        true,
        1.0,
        if accumulate { 1.0 } else { 0.0 },
    )?;
    if let Some(bias) = bias {
        be.launch_1d(
            ("elementwise", "add_bias"),
            n * oc,
            &[Arg::Ptr(out), Arg::Ptr(bias), int(n)?, int(oc)?],
        )?;
    }
    Ok(())
}

/// dinp += dout·weight, dweight += doutᵀ·inp (f32 outputs, bf16 operands), dbias += Σₙ dout
/// (from the f32 `dout_f32`).
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    be: &CudaBackend,
    dinp: Ptr,
    dweight: Ptr,
    dbias: Option<Ptr>,
    dout_bf16: Ptr,
    dout_f32: Ptr,
    inp: Ptr,
    weight: Ptr,
    n: usize,
    c: usize,
    oc: usize,
) -> Result<(), CudaError> {
    // dinp[N,C] += dout[N,OC] · W[OC,C]
    be.gemm_bf16(dinp, dout_bf16, weight, (n, c, oc), false, false, 1.0, 1.0)?;
    // dW[OC,C] += doutᵀ[OC,N] · inp[N,C]
    be.gemm_bf16(dweight, dout_bf16, inp, (oc, c, n), true, false, 1.0, 1.0)?;
    if let Some(dbias) = dbias {
        column_sum(be, dbias, dout_f32, None, None, n, oc)?;
    }
    Ok(())
}

/// Rotates `heads` heads of HS = 2·half from column `col` of each of `n` rows (row stride
/// `stride`) by the angle of the row's position; `inverse` is RoPE's backward. cos/sin are
/// `cpu::ops::RopeTable`'s tables on the device.
#[allow(clippy::too_many_arguments)]
pub fn rope_apply(
    be: &CudaBackend,
    x: Ptr,
    positions: Ptr,
    (cos, sin): (Ptr, Ptr),
    n: usize,
    stride: usize,
    col: usize,
    heads: usize,
    half: usize,
    inverse: bool,
) -> Result<(), CudaError> {
    be.launch_1d(
        ("rope", "rope_apply"),
        n * heads * half,
        &[
            Arg::Ptr(x),
            Arg::Ptr(positions),
            Arg::Ptr(cos),
            Arg::Ptr(sin),
            int(n)?,
            int(stride)?,
            int(col)?,
            int(heads)?,
            int(half)?,
            Arg::I32(inverse as i32),
        ],
    )
}

/// RoPE forward on the q and k parts of a fused [N, QKV] buffer.
pub fn rope_forward(
    be: &CudaBackend,
    qkv: Ptr,
    positions: Ptr,
    table: (Ptr, Ptr),
    n: usize,
    (nh, nkv, hs): (usize, usize, usize),
) -> Result<(), CudaError> {
    let stride = (nh + 2 * nkv) * hs;
    rope_apply(
        be,
        qkv,
        positions,
        table,
        n,
        stride,
        0,
        nh + nkv,
        hs / 2,
        false,
    )
}

/// RoPE backward: the gradient rotated back by the same angle.
pub fn rope_backward(
    be: &CudaBackend,
    dqkv: Ptr,
    positions: Ptr,
    table: (Ptr, Ptr),
    n: usize,
    (nh, nkv, hs): (usize, usize, usize),
) -> Result<(), CudaError> {
    let stride = (nh + 2 * nkv) * hs;
    rope_apply(
        be,
        dqkv,
        positions,
        table,
        n,
        stride,
        0,
        nh + nkv,
        hs / 2,
        true,
    )
}

fn check_attn(s: AttnShape) -> Result<(), CudaError> {
    if s.hs > MAX_HEAD_SIZE || s.nkv == 0 || !s.nh.is_multiple_of(s.nkv) {
        return Err(CudaError::Input(format!(
            "attention: head size {} (at most {MAX_HEAD_SIZE}), {} query heads over {} kv heads",
            s.hs, s.nh, s.nkv
        )));
    }
    Ok(())
}

/// Which kernel computes the training attention forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainAttention {
    /// attention.cu: a warp per query row, f32 CUDA cores (the reviewed original, default).
    Rows,
    /// attention_tc.cu: FlashAttention-2-style tiles on bf16 tensor cores (`mma.sync`), f32
    /// accumulation; q, k, v rounded to bf16. Head sizes 16, 32, 64, 128, else `Rows`.
    Tiled,
}

impl TrainAttention {
    /// `R1_CUDA_TRAIN_ATTENTION=tiled|rows`, else `Rows` (the tiled kernel awaits its first GPU
    /// parity run).
    pub fn from_env() -> Self {
        match std::env::var("R1_CUDA_TRAIN_ATTENTION").as_deref() {
            Ok("tiled") => TrainAttention::Tiled,
            _ => TrainAttention::Rows,
        }
    }

    /// Whether the tiled kernel covers head size `hs` (its shared memory holds 128).
    pub fn tiled_supports(hs: usize) -> bool {
        matches!(hs, 16 | 32 | 64 | 128)
    }
}

/// `TC_ROWS` in attention_tc.cu: query rows per block of the tiled kernel.
const TILED_ROWS: usize = 64;

/// The keys each query of a training batch attends to, as device tables [B·T] of row positions:
/// its segment's `seg_start..=i`, and with `shared` (`(shared_start, shared_end)`, a layout with
/// shared prompts: `cuda::model::shared_layout`) also its prompt's `shared_start..shared_end`
/// where that window is not empty and ends by the segment's start (the CPU's
/// `attention_forward_shared`). Without `shared` the kernels read no shared tables: attention.cu
/// runs its plain kernels, attention_tc.cu gets null tables. The dK/dV row kernel relies on the
/// queries that see a key being contiguous (a prompt, then its branches), as layouts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnWindows {
    /// Where each token's segment starts.
    pub seg_start: Ptr,
    /// Where each token's shared prompt starts and ends.
    pub shared: Option<(Ptr, Ptr)>,
}

impl AttnWindows {
    /// Segments only (one sequence per row, or packed rows).
    pub fn segments(seg_start: Ptr) -> Self {
        AttnWindows {
            seg_start,
            shared: None,
        }
    }

    /// The three table arguments the attention kernels take (null shared tables without
    /// `shared`).
    fn args(&self) -> [Arg; 3] {
        let (a, z) = self.shared.unwrap_or((0, 0));
        [Arg::Ptr(self.seg_start), Arg::Ptr(a), Arg::Ptr(z)]
    }
}

/// Causal grouped-query attention, flash-style: out[N, QD] and lse[B, NH, T] (log-sum-exp of each
/// query's scaled scores, all the backward pass keeps) from qkv[N, QKV] with RoPE applied.
/// `seg_start[n]`: the row position where token n's packed segment begins. The kernel is
/// `TrainAttention::from_env()`'s.
pub fn attention_forward(
    be: &CudaBackend,
    out: Ptr,
    lse: Ptr,
    qkv: Ptr,
    seg_start: Ptr,
    s: AttnShape,
) -> Result<(), CudaError> {
    attention_forward_with(be, out, lse, qkv, seg_start, s, TrainAttention::from_env())
}

/// `attention_forward` with an explicit kernel (`Tiled` falls back to `Rows` for head sizes it
/// does not cover).
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_with(
    be: &CudaBackend,
    out: Ptr,
    lse: Ptr,
    qkv: Ptr,
    seg_start: Ptr,
    s: AttnShape,
    kernel: TrainAttention,
) -> Result<(), CudaError> {
    attention_forward_windows(
        be,
        out,
        lse,
        qkv,
        AttnWindows::segments(seg_start),
        s,
        kernel,
    )
}

/// `attention_forward_with` over `windows`: segments, and shared prompts when it has them.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_windows(
    be: &CudaBackend,
    out: Ptr,
    lse: Ptr,
    qkv: Ptr,
    windows: AttnWindows,
    s: AttnShape,
    kernel: TrainAttention,
) -> Result<(), CudaError> {
    check_attn(s)?;
    let [seg, shared_start, shared_end] = windows.args();
    let args = [
        Arg::Ptr(out),
        Arg::Ptr(lse),
        Arg::Ptr(qkv),
        seg,
        shared_start,
        shared_end,
        int(s.b)?,
        int(s.t)?,
        int(s.nh)?,
        int(s.nkv)?,
        int(s.hs)?,
    ];
    if kernel == TrainAttention::Tiled && TrainAttention::tiled_supports(s.hs) {
        return be.launch(
            ("attention_tc", "attention_forward_tc"),
            (grid(s.t.div_ceil(TILED_ROWS))?, grid(s.nh)?, grid(s.b)?),
            128,
            &args,
        );
    }
    let name = if windows.shared.is_some() {
        "attention_forward_shared"
    } else {
        "attention_forward"
    };
    be.launch(
        ("attention", name),
        (grid(s.t.div_ceil(ATTN_WARPS))?, grid(s.nh)?, grid(s.b)?),
        (32 * ATTN_WARPS) as u32,
        &args,
    )
}

/// Backward of `attention_forward`: dqkv += ∂/∂qkv given dout[N, QD]. `delta` [B, NH, T] is
/// scratch. Recomputes the probabilities from q, k and lse instead of reading a [T, T] tensor.
/// The kernels are `TrainAttention::from_env()`'s.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    be: &CudaBackend,
    dqkv: Ptr,
    delta: Ptr,
    dout: Ptr,
    out: Ptr,
    qkv: Ptr,
    lse: Ptr,
    seg_start: Ptr,
    s: AttnShape,
) -> Result<(), CudaError> {
    attention_backward_with(
        be,
        dqkv,
        delta,
        dout,
        out,
        qkv,
        lse,
        seg_start,
        s,
        TrainAttention::from_env(),
    )
}

/// `attention_backward` with explicit kernels: `Tiled` runs dQ and dK/dV on tensor cores
/// (attention_tc.cu; bf16 operands), falling back to the row kernels for head sizes it does not
/// cover.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_with(
    be: &CudaBackend,
    dqkv: Ptr,
    delta: Ptr,
    dout: Ptr,
    out: Ptr,
    qkv: Ptr,
    lse: Ptr,
    seg_start: Ptr,
    s: AttnShape,
    kernel: TrainAttention,
) -> Result<(), CudaError> {
    attention_backward_windows(
        be,
        dqkv,
        delta,
        dout,
        out,
        qkv,
        lse,
        AttnWindows::segments(seg_start),
        s,
        kernel,
    )
}

/// `attention_backward_with` over `windows` (the forward's).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_windows(
    be: &CudaBackend,
    dqkv: Ptr,
    delta: Ptr,
    dout: Ptr,
    out: Ptr,
    qkv: Ptr,
    lse: Ptr,
    windows: AttnWindows,
    s: AttnShape,
    kernel: TrainAttention,
) -> Result<(), CudaError> {
    check_attn(s)?;
    be.launch_1d(
        ("attention", "attention_backward_delta"),
        s.b * s.nh * s.t,
        &[
            Arg::Ptr(delta),
            Arg::Ptr(dout),
            Arg::Ptr(out),
            int(s.b)?,
            int(s.t)?,
            int(s.nh)?,
            int(s.hs)?,
        ],
    )?;
    let [seg, shared_start, shared_end] = windows.args();
    let args = [
        Arg::Ptr(dqkv),
        Arg::Ptr(dout),
        Arg::Ptr(qkv),
        Arg::Ptr(lse),
        Arg::Ptr(delta),
        seg,
        shared_start,
        shared_end,
        int(s.b)?,
        int(s.t)?,
        int(s.nh)?,
        int(s.nkv)?,
        int(s.hs)?,
    ];
    if kernel == TrainAttention::Tiled && TrainAttention::tiled_supports(s.hs) {
        let tiles = grid(s.t.div_ceil(TILED_ROWS))?;
        be.launch(
            ("attention_tc", "attention_backward_dq_tc"),
            (tiles, grid(s.nh)?, grid(s.b)?),
            128,
            &args,
        )?;
        return be.launch(
            ("attention_tc", "attention_backward_dkv_tc"),
            (tiles, grid(s.nkv)?, grid(s.b)?),
            128,
            &args,
        );
    }
    let rows = grid(s.t.div_ceil(ATTN_WARPS))?;
    let threads = (32 * ATTN_WARPS) as u32;
    let (dq, dkv) = if windows.shared.is_some() {
        (
            "attention_backward_dq_shared",
            "attention_backward_dkv_shared",
        )
    } else {
        ("attention_backward_dq", "attention_backward_dkv")
    };
    be.launch(
        ("attention", dq),
        (rows, grid(s.nh)?, grid(s.b)?),
        threads,
        &args,
    )?;
    be.launch(
        ("attention", dkv),
        (rows, grid(s.nkv)?, grid(s.b)?),
        threads,
        &args,
    )
}

/// h[N,I] (bf16) = silu(gate) ⊙ up, where gu[N, 2I] (f32) holds gate|up per token.
pub fn swiglu_forward(
    be: &CudaBackend,
    h: Ptr,
    gu: Ptr,
    n: usize,
    i: usize,
) -> Result<(), CudaError> {
    be.launch_1d(
        ("swiglu", "swiglu_forward"),
        n * i,
        &[Arg::Ptr(h), Arg::Ptr(gu), int(n)?, int(i)?],
    )
}

/// dgu += ∂/∂(gate|up) of `swiglu_forward`.
pub fn swiglu_backward(
    be: &CudaBackend,
    dgu: Ptr,
    dh: Ptr,
    gu: Ptr,
    n: usize,
    i: usize,
) -> Result<(), CudaError> {
    be.launch_1d(
        ("swiglu", "swiglu_backward"),
        n * i,
        &[Arg::Ptr(dgu), Arg::Ptr(dh), Arg::Ptr(gu), int(n)?, int(i)?],
    )
}

/// Per row of a [rows, V] chunk of f32 logits: lse, log p(target) and entropy.
#[allow(clippy::too_many_arguments)]
pub fn classifier_stats(
    be: &CudaBackend,
    lse: Ptr,
    logp: Ptr,
    entropy: Ptr,
    logits: Ptr,
    targets: Ptr,
    rows: usize,
    v: usize,
) -> Result<(), CudaError> {
    be.launch(
        ("classifier", "classifier_stats"),
        (grid(rows)?, 1, 1),
        1024,
        &[
            Arg::Ptr(lse),
            Arg::Ptr(logp),
            Arg::Ptr(entropy),
            Arg::Ptr(logits),
            Arg::Ptr(targets),
            int(rows)?,
            int(v)?,
        ],
    )
}

/// dlogits (bf16) = d loss / d logits of each row given d loss / d logp and d loss / d entropy.
#[allow(clippy::too_many_arguments)]
pub fn classifier_grad(
    be: &CudaBackend,
    dlogits: Ptr,
    logits: Ptr,
    targets: Ptr,
    (lse, entropy): (Ptr, Ptr),
    (d_logp, d_entropy): (Ptr, Ptr),
    rows: usize,
    v: usize,
) -> Result<(), CudaError> {
    be.launch_1d(
        ("classifier", "classifier_grad"),
        rows * v,
        &[
            Arg::Ptr(dlogits),
            Arg::Ptr(logits),
            Arg::Ptr(targets),
            Arg::Ptr(lse),
            Arg::Ptr(entropy),
            Arg::Ptr(d_logp),
            Arg::Ptr(d_entropy),
            int(rows)?,
            int(v)?,
        ],
    )
}

/// AdamW's per-step constants, as the CPU twin computes them.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// 1 − lr·weight_decay for decaying tensors (the kernel gets 1 for the others).
    pub decay: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// lr / (1 − β1ᵗ).
    pub step_size: f32,
    /// √(1 − β2ᵗ).
    pub bias2_sqrt: f32,
    /// Denominator epsilon.
    pub eps: f32,
}

/// One AdamW update of `n` parameters (f32 master `p`, its bf16 copy, moments `m`, `v`) from `g`.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    be: &CudaBackend,
    p: Ptr,
    p_bf16: Ptr,
    m: Ptr,
    v: Ptr,
    g: Ptr,
    n: usize,
    decays: bool,
    step: AdamWStep,
) -> Result<(), CudaError> {
    be.launch_1d(
        ("adamw", "adamw_step"),
        n,
        &[
            Arg::Ptr(p),
            Arg::Ptr(p_bf16),
            Arg::Ptr(m),
            Arg::Ptr(v),
            Arg::Ptr(g),
            Arg::I64(n as i64),
            Arg::F32(if decays { step.decay } else { 1.0 }),
            Arg::F32(step.beta1),
            Arg::F32(step.beta2),
            Arg::F32(step.step_size),
            Arg::F32(step.bias2_sqrt),
            Arg::F32(step.eps),
        ],
    )
}

/// The global L2 norm of `n` gradients, summed in f64 in a fixed order (deterministic).
pub fn grad_norm(be: &CudaBackend, g: Ptr, n: usize) -> Result<f64, CudaError> {
    let blocks = (be.sm_count() * 4).clamp(1, n.div_ceil(256).max(1));
    let partials = be.scratch_f64(blocks)?;
    be.launch(
        ("adamw", "grad_norm_partials"),
        (grid(blocks)?, 1, 1),
        256,
        &[Arg::Ptr(partials), Arg::Ptr(g), Arg::I64(n as i64)],
    )?;
    let mut host = vec![0f64; blocks];
    be.copy_from_scratch(&mut host, partials)?;
    Ok(host.iter().sum::<f64>().sqrt())
}

/// Scales the gradients so their global norm is at most `max_norm` (as
/// `train::adamw::clip_grad_norm`); returns the norm before clipping. `max_norm <= 0` disables.
pub fn clip_grad_norm(be: &CudaBackend, g: Ptr, n: usize, max_norm: f64) -> Result<f64, CudaError> {
    let norm = grad_norm(be, g, n)?;
    if max_norm > 0.0 && norm.is_finite() {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            scale(be, g, coef as f32, n)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_grouped_by_id_in_token_order() {
        let (order, starts, unique) = group_by_id(&[5, 2, 5, 9, 2, 5]);
        assert_eq!(unique, vec![2, 5, 9]);
        assert_eq!(starts, vec![0, 2, 5, 6]);
        assert_eq!(order, vec![1, 4, 0, 2, 5, 3]);
        let (order, starts, unique) = group_by_id(&[]);
        assert!(order.is_empty() && unique.is_empty());
        assert_eq!(starts, vec![0]);
    }
}
