//! Incremental decoding with a KV cache: one new token for each of S active sequences per step,
//! each at its own position, attending to the keys and values cached for its slot.
//!
//! Shape legend: S = active sequences this step, L = layers, C = channels, NH/NKV = query/kv
//! heads, HS = head size, KVD = NKV·HS, QKV = (NH + 2·NKV)·HS, I = MLP width, V = vocab,
//! P = cache positions per slot.

use super::ops::{self, RopeTable};
use half::bf16;
use rayon::prelude::*;

use super::rowmat::{dot, matmul_packed_bf16, matmul_rows, pack_bf16, packed_len};
use crate::error::{EngineError, Result};
use crate::model::limits::try_recycled;
use crate::model::{Model, ModelConfig};

/// Keys and values of every cached position, per layer and slot: [L, slots, P, KVD] each.
pub struct KvCache {
    /// Sequences that can be decoded at once.
    pub slots: usize,
    /// Positions per slot (prompt + generated tokens).
    pub max_len: usize,
    kv_dim: usize,
    layers: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvCache {
    /// A cache for `slots` sequences of up to `max_len` tokens of `model`. Its size is checked
    /// and its buffers allocated fallibly: a cache too large for memory is an error saying how
    /// large, not an abort.
    pub fn new(model: &Model, slots: usize, max_len: usize) -> Result<Self> {
        let cfg = &model.config;
        let len = [cfg.num_layers, slots, max_len, cfg.kv_dim()]
            .into_iter()
            .try_fold(1usize, |a, b| a.checked_mul(b))
            .ok_or_else(|| {
                EngineError::Input(format!(
                    "a KV cache for {slots} sequences of {max_len} tokens would need {}",
                    crate::model::limits::format_bytes(Self::bytes(cfg, slots, max_len))
                ))
            })?;
        let what = format!("the KV cache ({slots} sequences of {max_len} tokens)");
        Ok(KvCache {
            slots,
            max_len,
            kv_dim: cfg.kv_dim(),
            layers: cfg.num_layers,
            k: try_recycled(len, 0.0, &what)?,
            v: try_recycled(len, 0.0, &what)?,
        })
    }

    /// Bytes of a cache for `slots` sequences of `max_len` tokens (f64: never overflows), for
    /// memory estimates before a run starts.
    pub fn bytes(cfg: &ModelConfig, slots: usize, max_len: usize) -> f64 {
        2.0 * 4.0 * cfg.num_layers as f64 * slots as f64 * max_len as f64 * cfg.kv_dim() as f64
    }

    fn offset(&self, layer: usize, slot: usize, pos: usize) -> usize {
        ((layer * self.slots + slot) * self.max_len + pos) * self.kv_dim
    }

    /// Bytes its buffers hold.
    pub fn allocated_bytes(&self) -> f64 {
        4.0 * (self.k.len() + self.v.len()) as f64
    }

    /// Writes a prefilled prompt's keys and values (per layer, [len, KVD] each) into `slot`: every
    /// sample of a GRPO group starts from the one prefill of its prompt.
    pub fn load_prefix(&mut self, slot: usize, kv: &[(Vec<f32>, Vec<f32>)], len: usize) {
        let n = len * self.kv_dim;
        for (l, (k, v)) in kv.iter().enumerate().take(self.layers) {
            let at = self.offset(l, slot, 0);
            self.k[at..at + n].copy_from_slice(&k[..n]);
            self.v[at..at + n].copy_from_slice(&v[..n]);
        }
    }
}

impl KvCache {
    /// The keys and values of the first `len` positions of `slot` (per layer, [len, KVD] each):
    /// a prefilled prompt kept for the samples of its group not yet admitted.
    pub fn read_prefix(&self, slot: usize, len: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
        let n = len * self.kv_dim;
        (0..self.layers)
            .map(|l| {
                let at = self.offset(l, slot, 0);
                (self.k[at..at + n].to_vec(), self.v[at..at + n].to_vec())
            })
            .collect()
    }
}

/// Per-step buffers for up to `max_rows` sequences, allocated once per sampler.
pub struct DecodeScratch {
    max_rows: usize,
    x: Vec<f32>,
    ln: Vec<f32>,
    proj: Vec<f32>,
    rstd: Vec<f32>,
    qkv: Vec<f32>,
    /// Qwen3's per-head 1/rms of q and k [S, NH+NKV] (unused otherwise).
    qk_rstd: Vec<f32>,
    atty: Vec<f32>,
    gu: Vec<f32>,
    h: Vec<f32>,
    scores: Vec<f32>,
    /// Logits of the last step: [S, V].
    pub logits: Vec<f32>,
    rope: RopeTable,
}

impl DecodeScratch {
    /// Buffers for `max_rows` sequences of up to `max_len` positions, allocated fallibly.
    pub fn new(model: &Model, max_rows: usize, max_len: usize) -> Result<Self> {
        let cfg = &model.config;
        let r = max_rows.max(1);
        let what = format!("the decoding buffers ({r} rows of {max_len} positions)");
        let buffer = |width: usize| -> Result<Vec<f32>> {
            let len = r.checked_mul(width).ok_or_else(|| {
                EngineError::Input(format!(
                    "{what} would need {}",
                    crate::model::limits::format_bytes(Self::bytes(cfg, r, max_len))
                ))
            })?;
            try_recycled(len, 0.0, &what)
        };
        Ok(DecodeScratch {
            max_rows: r,
            x: buffer(cfg.hidden_size)?,
            ln: buffer(cfg.hidden_size)?,
            proj: buffer(cfg.hidden_size)?,
            rstd: buffer(1)?,
            qkv: buffer(cfg.qkv_dim())?,
            qk_rstd: buffer(cfg.num_heads + cfg.num_kv_heads)?,
            atty: buffer(cfg.q_dim())?,
            gu: buffer(2 * cfg.intermediate_size)?,
            h: buffer(cfg.intermediate_size)?,
            scores: buffer(cfg.num_heads.saturating_mul(max_len))?,
            logits: buffer(cfg.vocab_size)?,
            rope: RopeTable::new(&cfg.rope_inv_freq(), max_len),
        })
    }

    /// Bytes its buffers hold.
    pub fn allocated_bytes(&self) -> f64 {
        let f32s = [
            &self.x,
            &self.ln,
            &self.proj,
            &self.rstd,
            &self.qkv,
            &self.qk_rstd,
            &self.atty,
            &self.gu,
            &self.h,
            &self.scores,
            &self.logits,
            &self.rope.cos,
            &self.rope.sin,
        ];
        4.0 * f32s.iter().map(|v| v.len()).sum::<usize>() as f64
    }

    /// Bytes of the buffers for `rows` sequences of `max_len` positions (f64: never overflows).
    pub fn bytes(cfg: &ModelConfig, rows: usize, max_len: usize) -> f64 {
        let per_row = 3.0 * cfg.hidden_size as f64
            + 1.0
            + cfg.qkv_dim() as f64
            + (cfg.num_heads + cfg.num_kv_heads) as f64
            + cfg.q_dim() as f64
            + 3.0 * cfg.intermediate_size as f64
            + cfg.num_heads as f64 * max_len as f64
            + cfg.vocab_size as f64;
        // The RoPE table: cos and sin for every position, HS/2 each.
        let rope = max_len as f64 * cfg.head_dim as f64;
        4.0 * (rows.max(1) as f64 * per_row + rope)
    }
}

/// Runs one decoding step: `tokens[s]` enters slot `slots[s]` at position `positions[s]` (the
/// number of tokens already cached there). Its key and value are cached, and the next-token
/// logits of every row (or of `logit_rows` only, in that order) land in `scratch.logits`.
///
/// Several rows may feed one slot at consecutive positions: that is a prompt's prefill (keys and
/// values of all rows are cached before any row attends, so each row sees its predecessors).
///
/// Every product goes through `rowmat::matmul_rows`, which is batch-invariant: a sequence gets
/// the same bits whatever else is in the batch.
pub fn decode_step(
    model: &Model,
    cache: &mut KvCache,
    scratch: &mut DecodeScratch,
    slots: &[usize],
    tokens: &[u32],
    positions: &[u32],
    logit_rows: Option<&[usize]>,
) -> Result<()> {
    decode_step_with(
        model,
        model.params.as_slice(),
        cache,
        scratch,
        slots,
        tokens,
        positions,
        logit_rows,
    )
}

/// Where a decoding step reads its weights: the model's f32 parameters in place, or the
/// sampler's bf16 copy ([`Bf16Weights`]). Offsets are the model layout's.
pub trait DecodeWeights: Sync {
    /// Parameters held (the layout's total).
    fn param_count(&self) -> usize;
    /// out[S, OC] = inp[S, C] · W[OC, C]ᵀ + bias for the [OC, C] matrix at `offset`,
    /// batch-invariant.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        offset: usize,
        out: &mut [f32],
        inp: &[f32],
        bias: Option<&[f32]>,
        s: usize,
        c: usize,
        oc: usize,
    );
    /// The `len` values at `offset` as f32 (norm weights, biases).
    fn vector(&self, offset: usize, len: usize) -> std::borrow::Cow<'_, [f32]>;
    /// Row `id` of the [·, C] table at `offset` (the embeddings) into `out`.
    fn row(&self, offset: usize, id: usize, out: &mut [f32]);
}

impl DecodeWeights for [f32] {
    fn param_count(&self) -> usize {
        self.len()
    }
    fn matmul(
        &self,
        offset: usize,
        out: &mut [f32],
        inp: &[f32],
        bias: Option<&[f32]>,
        s: usize,
        c: usize,
        oc: usize,
    ) {
        matmul_rows(out, inp, &self[offset..offset + oc * c], bias, s, c, oc)
    }
    fn vector(&self, offset: usize, len: usize) -> std::borrow::Cow<'_, [f32]> {
        std::borrow::Cow::Borrowed(&self[offset..offset + len])
    }
    fn row(&self, offset: usize, id: usize, out: &mut [f32]) {
        let c = out.len();
        out.copy_from_slice(&self[offset + id * c..offset + (id + 1) * c]);
    }
}

/// The sampler's bf16 copy of a model (`device::Precision::Bf16`): every parameter rounded to
/// nearest even, in layout order, except that each product's matrix is stored packed
/// (`rowmat::pack_bf16`) — in its own place when packing adds no padding (whole panels of 16
/// outputs, an even input count: every real model's shapes), on its own otherwise, and always on
/// its own for a tied LM head, whose place is also the embedding table read by rows. Products run
/// `rowmat::matmul_packed_bf16`.
pub struct Bf16Weights {
    params: Vec<bf16>,
    /// Matrices packed on their own, by offset (sorted): padded shapes and a tied LM head.
    apart: Vec<(usize, Vec<bf16>)>,
}

impl Bf16Weights {
    /// The copy of `model`, made now (in parallel). Its size is checked against the memory
    /// available first and allocated fallibly.
    pub fn new(model: &Model) -> Result<Self> {
        let cfg = &model.config;
        let lay = &model.layout;
        let (c, v) = (cfg.hidden_size, cfg.vocab_size);
        let tied = lay.lm_head == lay.embed;
        let (qkv, qd, i) = (cfg.qkv_dim(), cfg.q_dim(), cfg.intermediate_size);
        // (offset, outputs, inputs) of every product's matrix.
        let mut matrices: Vec<(usize, usize, usize)> = Vec::new();
        for o in &lay.layers {
            matrices.push((o.qkv_w, qkv, c));
            matrices.push((o.o_w, c, qd));
            matrices.push((o.gate_up_w, 2 * i, c));
            matrices.push((o.down_w, c, i));
        }
        matrices.push((lay.lm_head, v, c));
        let apart = |&(offset, oc, ic): &(usize, usize, usize)| {
            packed_len(oc, ic) != oc * ic || (tied && offset == lay.lm_head)
        };
        let n = model.params.len();
        let extra: usize = matrices
            .iter()
            .filter(|m| apart(m))
            .map(|&(_, oc, ic)| packed_len(oc, ic))
            .sum();
        crate::model::limits::MemoryPlan::default()
            .add("the sampler's bf16 weights", 2.0 * (n + extra) as f64)
            .check("decoding in bf16")?;
        let mut w = Bf16Weights {
            params: try_bf16(n)?,
            apart: Vec::new(),
        };
        w.params
            .par_chunks_mut(1 << 16)
            .zip(model.params.par_chunks(1 << 16))
            .for_each(|(out, from)| {
                for (o, &x) in out.iter_mut().zip(from) {
                    *o = bf16::from_f32(x);
                }
            });
        for m in &matrices {
            let &(offset, oc, ic) = m;
            let from = &model.params[offset..offset + oc * ic];
            if apart(m) {
                let mut packed = try_bf16(packed_len(oc, ic))?;
                pack_bf16(&mut packed, from, oc, ic);
                w.apart.push((offset, packed));
            } else {
                pack_bf16(&mut w.params[offset..offset + oc * ic], from, oc, ic);
            }
        }
        w.apart.sort_unstable_by_key(|(offset, _)| *offset);
        Ok(w)
    }

    /// Bytes it holds.
    pub fn bytes(&self) -> f64 {
        2.0 * (self.params.len() + self.apart.iter().map(|(_, m)| m.len()).sum::<usize>()) as f64
    }
}

/// A zeroed bf16 buffer of `n`, allocated fallibly.
fn try_bf16(n: usize) -> Result<Vec<bf16>> {
    crate::model::limits::try_recycled(n, bf16::ZERO, "the sampler's bf16 weights")
}

impl Drop for Bf16Weights {
    /// The sampler is opened for every step: its copy's buffers go to the next one.
    fn drop(&mut self) {
        crate::alloc::give_back(std::mem::take(&mut self.params));
        for (_, packed) in self.apart.drain(..) {
            crate::alloc::give_back(packed);
        }
    }
}

impl Drop for KvCache {
    /// Kept for the next sampler (`alloc::give_back`).
    fn drop(&mut self) {
        crate::alloc::give_back(std::mem::take(&mut self.k));
        crate::alloc::give_back(std::mem::take(&mut self.v));
    }
}

impl Drop for DecodeScratch {
    /// Its large buffers (the logits, the attention scores) are kept for the next sampler.
    fn drop(&mut self) {
        crate::alloc::give_back(std::mem::take(&mut self.logits));
        crate::alloc::give_back(std::mem::take(&mut self.scores));
        crate::alloc::give_back(std::mem::take(&mut self.gu));
    }
}

impl DecodeWeights for Bf16Weights {
    fn param_count(&self) -> usize {
        self.params.len()
    }
    fn matmul(
        &self,
        offset: usize,
        out: &mut [f32],
        inp: &[f32],
        bias: Option<&[f32]>,
        s: usize,
        c: usize,
        oc: usize,
    ) {
        let w = match self.apart.binary_search_by_key(&offset, |(at, _)| *at) {
            Ok(k) => &self.apart[k].1[..],
            Err(_) => &self.params[offset..offset + oc * c],
        };
        matmul_packed_bf16(out, inp, w, bias, s, c, oc)
    }
    fn vector(&self, offset: usize, len: usize) -> std::borrow::Cow<'_, [f32]> {
        std::borrow::Cow::Owned(
            self.params[offset..offset + len]
                .iter()
                .map(|x| x.to_f32())
                .collect(),
        )
    }
    fn row(&self, offset: usize, id: usize, out: &mut [f32]) {
        let c = out.len();
        for (o, x) in out
            .iter_mut()
            .zip(&self.params[offset + id * c..offset + (id + 1) * c])
        {
            *o = x.to_f32();
        }
    }
}

/// [`decode_step`] reading the weights from `params` (the model's own f32 parameters, or the
/// sampler's [`Bf16Weights`]). Activations, caches and everything but the products' operands
/// are f32 either way.
#[allow(clippy::too_many_arguments)]
pub fn decode_step_with<W: DecodeWeights + ?Sized>(
    model: &Model,
    params: &W,
    cache: &mut KvCache,
    scratch: &mut DecodeScratch,
    slots: &[usize],
    tokens: &[u32],
    positions: &[u32],
    logit_rows: Option<&[usize]>,
) -> Result<()> {
    let cfg = &model.config;
    let s = tokens.len();
    if s == 0 || slots.len() != s || positions.len() != s || s > scratch.max_rows {
        return Err(EngineError::Input(format!(
            "decode step: {s} tokens, {} slots, {} positions",
            slots.len(),
            positions.len()
        )));
    }
    for (&slot, &pos) in slots.iter().zip(positions) {
        if slot >= cache.slots
            || pos as usize >= cache.max_len
            || pos as usize >= scratch.rope.max_positions()
        {
            return Err(EngineError::Input(format!(
                "decode step: slot {slot} position {pos} is outside the cache"
            )));
        }
    }
    if let Some(&bad) = logit_rows.and_then(|rows| rows.iter().find(|&&r| r >= s)) {
        return Err(EngineError::Input(format!(
            "decode step: logits asked for row {bad} of {s}"
        )));
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        return Err(EngineError::Input(format!(
            "decode step: token id {bad} is outside the vocabulary of {}",
            cfg.vocab_size
        )));
    }
    let s = tokens.len();
    let lay = &model.layout;
    if params.param_count() != lay.total {
        return Err(EngineError::Input(format!(
            "decode step: {} weights for a model of {}",
            params.param_count(),
            lay.total
        )));
    }
    let p = params;
    let (c, qkv_w, qd, kvd, i, v) = (
        cfg.hidden_size,
        cfg.qkv_dim(),
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.intermediate_size,
        cfg.vocab_size,
    );
    let (nh, hs) = (cfg.num_heads, cfg.head_dim);
    let group = nh / cfg.num_kv_heads;
    let eps = cfg.rms_norm_eps as f32;
    let sc = scratch;
    let (x, ln, rstd, proj) = (
        &mut sc.x[..s * c],
        &mut sc.ln[..s * c],
        &mut sc.rstd[..s],
        &mut sc.proj[..s * c],
    );
    let (qkv, atty) = (&mut sc.qkv[..s * qkv_w], &mut sc.atty[..s * qd]);
    let (gu, h) = (&mut sc.gu[..s * 2 * i], &mut sc.h[..s * i]);

    for (row, &id) in x.chunks_exact_mut(c).zip(tokens) {
        p.row(lay.embed, id as usize, row);
    }
    for (l, o) in lay.layers.iter().enumerate() {
        ops::rmsnorm_forward(ln, rstd, x, &p.vector(o.ln1, c), c, eps);
        let bias = o.qkv_b.map(|b| p.vector(b, qkv_w));
        p.matmul(o.qkv_w, qkv, ln, bias.as_deref(), s, c, qkv_w);
        if let Some(qn) = o.qk_norm {
            ops::qk_norm_forward(
                qkv,
                &mut sc.qk_rstd[..s * (nh + cfg.num_kv_heads)],
                &p.vector(qn, hs),
                &p.vector(qn + hs, hs),
                nh,
                cfg.num_kv_heads,
                hs,
                eps,
            );
        }
        ops::rope_apply(
            qkv,
            positions,
            &sc.rope,
            qkv_w,
            0,
            nh + cfg.num_kv_heads,
            false,
        );
        for (row, (&slot, &pos)) in qkv.chunks_exact(qkv_w).zip(slots.iter().zip(positions)) {
            let at = cache.offset(l, slot, pos as usize);
            cache.k[at..at + kvd].copy_from_slice(&row[qd..qd + kvd]);
            cache.v[at..at + kvd].copy_from_slice(&row[qd + kvd..qd + 2 * kvd]);
        }
        // Attention of each (row, head) over its slot's cached positions 0..=pos.
        let cache_ref = &*cache;
        let qkv_ref = &*qkv;
        let max_len = cache_ref.max_len;
        atty.par_chunks_mut(hs)
            .zip(sc.scores[..s * nh * max_len].par_chunks_mut(max_len))
            .enumerate()
            .for_each(|(rh, (out, scores))| {
                let (r, hd) = (rh / nh, rh % nh);
                let g = hd / group;
                let q = &qkv_ref[r * qkv_w + hd * hs..r * qkv_w + (hd + 1) * hs];
                let len = positions[r] as usize + 1;
                let base = cache_ref.offset(l, slots[r], 0);
                let scale = 1.0 / (hs as f32).sqrt();
                for (t, sc) in scores[..len].iter_mut().enumerate() {
                    let k = &cache_ref.k[base + t * kvd + g * hs..base + t * kvd + (g + 1) * hs];
                    *sc = dot(q, k) * scale;
                }
                ops::softmax_prefix(&mut scores[..len], len);
                out.fill(0.0);
                for (t, &w) in scores[..len].iter().enumerate() {
                    let vv = &cache_ref.v[base + t * kvd + g * hs..base + t * kvd + (g + 1) * hs];
                    for (o, val) in out.iter_mut().zip(vv) {
                        *o += w * val;
                    }
                }
            });
        p.matmul(o.o_w, proj, atty, None, s, qd, c);
        add_into(x, proj);
        ops::rmsnorm_forward(ln, rstd, x, &p.vector(o.ln2, c), c, eps);
        p.matmul(o.gate_up_w, gu, ln, None, s, c, 2 * i);
        ops::swiglu_forward(h, gu, i);
        p.matmul(o.down_w, proj, h, None, s, i, c);
        add_into(x, proj);
    }
    let final_norm = p.vector(lay.final_norm, c);
    ops::rmsnorm_forward(ln, rstd, x, &final_norm, c, eps);
    let head = lay.lm_head;
    match logit_rows {
        None => p.matmul(head, &mut sc.logits[..s * v], ln, None, s, c, v),
        Some(rows) => {
            // Only the rows that pick a token (the last of each prompt when prefilling).
            for (dst, &r) in proj.chunks_exact_mut(c).zip(rows) {
                dst.copy_from_slice(&ln[r * c..(r + 1) * c]);
            }
            let n = rows.len();
            p.matmul(head, &mut sc.logits[..n * v], &proj[..n * c], None, n, c, v);
        }
    }
    Ok(())
}

/// x += y, elementwise (the residual add after a projection).
fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
