//! The decoder-only transformer (Qwen2 / Llama / Qwen3) on the CPU: forward and backward over a batch of
//! equal-length sequences, activations kept in an arena planned once per (B, T).
//!
//! Shape legend: B = batch, T = time, N = B·T, C = channels, L = layers, NH/NKV = query/kv heads,
//! HS = head size, QKV = (NH + 2·NKV)·HS, QD = NH·HS, I = MLP width, V = vocab.
//!
//! One layer: x_mid = x + o_proj(attn(rope(qkv(rmsnorm(x)))));  (Qwen3: rope(qk_norm(qkv(…))))
//!            x_out = x_mid + down(silu(gate(rmsnorm(x_mid))) ⊙ up(…)).

use super::ops::{self, AttnShape, RopeTable};
use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::train::head::{lm_head, HeadGrads, HeadOutput, TokenObjective};

/// Every activation the backward pass needs, plus its gradient scratch, for one (B, T).
/// Allocated once and reused for every step of that shape: the hot loop never allocates.
pub struct Activations {
    /// Sequences in the batch.
    pub b: usize,
    /// Tokens per sequence.
    pub t: usize,
    /// Residual stream entering each layer, and leaving the last: [(L+1), N, C].
    x: Vec<f32>,
    /// Residual stream between attention and MLP: [L, N, C].
    x_mid: Vec<f32>,
    /// input_layernorm outputs [L, N, C] and their 1/rms [L, N].
    ln1: Vec<f32>,
    rstd1: Vec<f32>,
    /// q|k|v after RoPE [L, N, QKV].
    qkv: Vec<f32>,
    /// Qwen3 only (empty otherwise): q|k before the per-head RMSNorm [L, N, (NH+NKV)·HS] and each
    /// head's 1/rms [L, N, NH+NKV].
    qk_pre: Vec<f32>,
    qk_rstd: Vec<f32>,
    /// Attention probabilities [L, B, NH, T, T].
    att: Vec<f32>,
    /// Attention outputs before o_proj [L, N, QD].
    atty: Vec<f32>,
    /// post_attention_layernorm outputs [L, N, C] and 1/rms [L, N].
    ln2: Vec<f32>,
    rstd2: Vec<f32>,
    /// gate|up projections [L, N, 2I].
    gu: Vec<f32>,
    /// silu(gate) ⊙ up [L, N, I].
    h: Vec<f32>,
    /// Final norm output [N, C] (the LM head's input) and its 1/rms [N].
    xf: Vec<f32>,
    rstdf: Vec<f32>,
    /// Positions of the tokens [N]: 0..T per sequence, or per packed segment.
    positions: Vec<u32>,
    /// Row position where each token's segment starts [N] (0 unless sequences are packed).
    seg_start: Vec<u32>,
    /// The shared prompt each token also attends to, as row positions [start, end) [N each]
    /// (empty vectors unless a layout with shared prompts is set: `set_layout`).
    shared_start: Vec<u32>,
    shared_end: Vec<u32>,
    /// Gradient scratch: residual [N, C], head input [N, C], norm outputs [N, C], q|k|v [N, QKV],
    /// attention probabilities [B, NH, T, T], attention output [N, QD], gate|up [N, 2I], MLP hidden [N, I].
    dres: Vec<f32>,
    dxf: Vec<f32>,
    dln: Vec<f32>,
    dqkv: Vec<f32>,
    datt: Vec<f32>,
    datty: Vec<f32>,
    dgu: Vec<f32>,
    dh: Vec<f32>,
    /// Logit chunk reused by the LM head.
    head_scratch: Vec<f32>,
    /// cos/sin tables for positions 0..T.
    rope: RopeTable,
    /// Activation checkpointing: the per-layer buffers hold one layer (the one being computed)
    /// and `backward` recomputes each layer from the residual stream entering it.
    checkpointed: bool,
}

impl Activations {
    /// Plans the arena for `b` sequences of `t` tokens of `model`.
    pub fn new(model: &Model, b: usize, t: usize) -> Self {
        Self::with_checkpointing(model, b, t, false)
    }

    /// [`Activations::new`] with activation checkpointing on or off. On, the arena keeps the
    /// residual stream entering each layer and one layer's intermediates: `backward` recomputes
    /// each layer's forward before its backward (one more forward pass of compute, the same
    /// bits), and the activations take about (L+1)·N·C floats plus one layer's instead of L
    /// layers'.
    pub fn with_checkpointing(model: &Model, b: usize, t: usize, checkpointed: bool) -> Self {
        let mut acts = Activations {
            b,
            t,
            x: Vec::new(),
            x_mid: Vec::new(),
            ln1: Vec::new(),
            rstd1: Vec::new(),
            qkv: Vec::new(),
            qk_pre: Vec::new(),
            qk_rstd: Vec::new(),
            att: Vec::new(),
            atty: Vec::new(),
            ln2: Vec::new(),
            rstd2: Vec::new(),
            gu: Vec::new(),
            h: Vec::new(),
            xf: Vec::new(),
            rstdf: Vec::new(),
            positions: Vec::new(),
            seg_start: Vec::new(),
            shared_start: Vec::new(),
            shared_end: Vec::new(),
            dres: Vec::new(),
            dxf: Vec::new(),
            dln: Vec::new(),
            dqkv: Vec::new(),
            datt: Vec::new(),
            datty: Vec::new(),
            dgu: Vec::new(),
            dh: Vec::new(),
            head_scratch: Vec::new(),
            rope: RopeTable::new(&[], 0),
            checkpointed,
        };
        for (buffer, len) in
            acts.buffers()
                .into_iter()
                .zip(Self::lengths(model, b, t, checkpointed))
        {
            *buffer = crate::alloc::zeroed_f32(len);
        }
        acts.set_shape(model, b, t);
        acts
    }

    /// Plans the arena for `b` sequences of `t` tokens again, keeping each buffer's allocation
    /// where it is large enough: a learner sees a new padded length almost every step, and a new
    /// arena each time maps (and the kernel zeroes, page by page) gigabytes again. The contents
    /// are left as they are: forward, the head and backward write every element they read before
    /// reading it (a NaN-filled arena gives the bits of a new one: `fill`'s test). Buffers grow
    /// to the largest shape seen.
    pub fn reshape(&mut self, model: &Model, b: usize, t: usize) {
        let lengths = Self::lengths(model, b, t, self.checkpointed);
        for (buffer, len) in self.buffers().into_iter().zip(lengths) {
            if buffer.capacity() >= len {
                if len > buffer.len() {
                    // SAFETY: `len` ≤ capacity, of a buffer that was allocated zeroed and only
                    // ever written with f32s since: every element up to the capacity is one.
                    unsafe { buffer.set_len(len) };
                } else {
                    buffer.truncate(len);
                }
            } else {
                *buffer = Vec::new();
                *buffer = crate::alloc::zeroed_f32(len);
            }
        }
        self.set_shape(model, b, t);
    }

    /// Sets every element of every buffer to `value`: tests fill an arena with NaN to show that
    /// nothing reads what it did not write (the assumption `reshape` relies on).
    #[doc(hidden)]
    pub fn fill(&mut self, value: f32) {
        for buffer in self.buffers() {
            buffer.fill(value);
        }
    }

    /// Whether the arena checkpoints activations ([`Activations::with_checkpointing`]).
    pub fn checkpointed(&self) -> bool {
        self.checkpointed
    }

    /// The per-layer slot layer `l`'s intermediates live in.
    fn slot(&self, l: usize) -> usize {
        if self.checkpointed {
            0
        } else {
            l
        }
    }

    /// Elements of each f32 buffer of [`Activations::buffers`] for `b` sequences of `t` tokens
    /// (per-layer buffers for one layer when `checkpointed`; the residual stream for all).
    fn lengths(model: &Model, b: usize, t: usize, checkpointed: bool) -> [usize; 24] {
        let cfg = &model.config;
        let (n, c, layers) = (b * t, cfg.hidden_size, cfg.num_layers);
        let l = if checkpointed { 1 } else { layers };
        let (qkv, qd, i) = (cfg.qkv_dim(), cfg.q_dim(), cfg.intermediate_size);
        let att = b * cfg.num_heads * t * t;
        let qk_heads = if cfg.qk_norm() {
            cfg.num_heads + cfg.num_kv_heads
        } else {
            0
        };
        [
            (layers + 1) * n * c,            // x
            l * n * c,                       // x_mid
            l * n * c,                       // ln1
            l * n,                           // rstd1
            l * n * qkv,                     // qkv
            l * n * qk_heads * cfg.head_dim, // qk_pre
            l * n * qk_heads,                // qk_rstd
            l * att,                         // att
            l * n * qd,                      // atty
            l * n * c,                       // ln2
            l * n,                           // rstd2
            l * n * 2 * i,                   // gu
            l * n * i,                       // h
            n * c,                           // xf
            n,                               // rstdf
            n * c,                           // dres
            n * c,                           // dxf
            n * c,                           // dln
            n * qkv,                         // dqkv
            att,                             // datt
            n * qd,                          // datty
            n * 2 * i,                       // dgu
            n * i,                           // dh
            0,                               // head_scratch: sized by the head
        ]
    }

    /// The f32 buffers, in the order of [`Activations::lengths`].
    fn buffers(&mut self) -> [&mut Vec<f32>; 24] {
        [
            &mut self.x,
            &mut self.x_mid,
            &mut self.ln1,
            &mut self.rstd1,
            &mut self.qkv,
            &mut self.qk_pre,
            &mut self.qk_rstd,
            &mut self.att,
            &mut self.atty,
            &mut self.ln2,
            &mut self.rstd2,
            &mut self.gu,
            &mut self.h,
            &mut self.xf,
            &mut self.rstdf,
            &mut self.dres,
            &mut self.dxf,
            &mut self.dln,
            &mut self.dqkv,
            &mut self.datt,
            &mut self.datty,
            &mut self.dgu,
            &mut self.dh,
            &mut self.head_scratch,
        ]
    }

    /// The shape, positions (one sequence per row) and RoPE table for `b` × `t`.
    fn set_shape(&mut self, model: &Model, b: usize, t: usize) {
        self.b = b;
        self.t = t;
        self.positions = (0..b).flat_map(|_| 0..t as u32).collect();
        self.seg_start = vec![0; b * t];
        self.shared_start = Vec::new();
        self.shared_end = Vec::new();
        self.rope = RopeTable::new(&model.config.rope_inv_freq(), t);
    }

    /// Lays out groups of sequences that share a prompt: `rows[row]` lists the groups laid one
    /// after another in that row (the rest is padding, one sequence of its own). A group is its
    /// prompt's tokens, then each branch's: the prompt has positions 0.. and attends to itself
    /// causally; each branch continues at the prompt's length and attends to the prompt and to
    /// itself, never to the other branches. Every branch is computed as if it followed the
    /// prompt in a row of its own (the learner's shared-prompt rows, where the G completions of
    /// a group are trained over one copy of the prompt). An empty list restores one sequence
    /// per row.
    pub fn set_layout(&mut self, rows: &[Vec<SharedGroup>]) -> Result<()> {
        let layout = shared_layout(self.b, self.t, rows).map_err(EngineError::Input)?;
        self.positions = layout.positions;
        self.seg_start = layout.seg_start;
        (self.shared_start, self.shared_end) = layout.shared.unwrap_or_default();
        Ok(())
    }

    /// Packs several sequences into each row: `segments[row]` lists the lengths of the sequences
    /// laid one after another in that row (the rest of the row is padding). Each sequence gets
    /// positions from 0 and attends only to itself, exactly as if it had a row of its own.
    /// An empty list restores one sequence per row.
    pub fn set_segments(&mut self, segments: &[Vec<usize>]) -> Result<()> {
        let t = self.t;
        self.shared_start = Vec::new();
        self.shared_end = Vec::new();
        if !segments.is_empty() && segments.len() != self.b {
            return Err(EngineError::Input(format!(
                "segments: {} rows given for a batch of {}",
                segments.len(),
                self.b
            )));
        }
        for row in 0..self.b {
            let lengths: &[usize] = segments.get(row).map_or(&[], |v| v.as_slice());
            let total: usize = lengths.iter().sum();
            if total > t || lengths.contains(&0) {
                return Err(EngineError::Input(format!(
                    "segments of row {row}: lengths {lengths:?} do not fit {t} positions"
                )));
            }
            let (mut at, positions, starts) = (
                0,
                &mut self.positions[row * t..(row + 1) * t],
                &mut self.seg_start[row * t..(row + 1) * t],
            );
            for &len in lengths.iter().chain(std::iter::once(&(t - total))) {
                for k in 0..len {
                    positions[at + k] = k as u32;
                    starts[at + k] = at as u32;
                }
                at += len;
            }
        }
        Ok(())
    }

    /// Tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.b * self.t
    }

    /// The final hidden states [N, C] of the last forward pass.
    pub fn hidden(&self) -> &[f32] {
        &self.xf
    }

    /// The gradient w.r.t. the final hidden states [N, C] that `backward` starts from. `head` fills
    /// it for the LM head; a different head (the reward model's scalar score) zeroes it and writes
    /// its own gradient here before calling `backward`.
    pub fn hidden_grad_mut(&mut self) -> &mut [f32] {
        &mut self.dxf
    }

    /// q|k|v (after RoPE) of layer `l` from the last forward pass: [N, QKV]. The sampler copies
    /// keys and values out of it into its KV cache after prefilling a prompt.
    /// (An inference arena: a checkpointed one keeps the last layer's only.)
    pub fn layer_qkv(&self, l: usize) -> &[f32] {
        debug_assert!(!self.checkpointed, "layer_qkv of a checkpointed arena");
        // x holds L + 1 residual streams of xf's size.
        let layers = (self.x.len() / self.xf.len().max(1))
            .saturating_sub(1)
            .max(1);
        let per_layer = self.qkv.len() / layers;
        &self.qkv[l * per_layer..(l + 1) * per_layer]
    }

    /// Bytes of the arena's buffers at its current shape.
    pub fn bytes(&self) -> usize {
        4 * [
            &self.x,
            &self.x_mid,
            &self.ln1,
            &self.rstd1,
            &self.qkv,
            &self.qk_pre,
            &self.qk_rstd,
            &self.att,
            &self.atty,
            &self.ln2,
            &self.rstd2,
            &self.gu,
            &self.h,
            &self.xf,
            &self.rstdf,
            &self.dres,
            &self.dxf,
            &self.dln,
            &self.dqkv,
            &self.datt,
            &self.datty,
            &self.dgu,
            &self.dh,
            &self.head_scratch,
        ]
        .iter()
        // What this shape uses; a reshaped arena may hold more (its largest shape's buffers),
        // which the process's peak resident set shows.
        .map(|v| v.len())
        .sum::<usize>()
    }
}

/// A prompt shared by several sequences in one row of the arena ([`Activations::set_layout`]):
/// `prompt` tokens, then `branches` of the given lengths, each continuing the prompt on its own.
/// A group without branches is one plain sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedGroup {
    /// Tokens of the shared prompt.
    pub prompt: usize,
    /// Tokens of each branch.
    pub branches: Vec<usize>,
}

impl SharedGroup {
    /// Positions the group takes in its row.
    pub fn len(&self) -> usize {
        self.prompt + self.branches.iter().sum::<usize>()
    }

    /// Whether the group takes no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Positions, segment starts and shared-prompt windows [B·T] of a batch whose rows hold groups
/// of sequences sharing a prompt: what `shared_layout` lays out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedLayout {
    /// Position id of each token (a branch continues at its prompt's length).
    pub positions: Vec<u32>,
    /// Row position where each token's own segment (a prompt, a branch, a padding run) starts.
    pub seg_start: Vec<u32>,
    /// Row positions [start, end) of the prompt each token also attends to (0, 0 for none);
    /// `None` when no group has a branch (the layout is packed segments only).
    pub shared: Option<(Vec<u32>, Vec<u32>)>,
}

/// `rows[b]` laid out for both engines (`Activations::set_layout`, the CUDA arena): each group's
/// prompt from position 0, attending to itself causally; each branch after it, positions
/// continuing at the prompt's length, attending to the prompt and to itself, never to the other
/// branches; the rest of the row one padding sequence. `rows` empty: one sequence per row. Groups that do not fit their
/// row, empty groups and empty branches are refused.
pub fn shared_layout(
    b: usize,
    t: usize,
    rows: &[Vec<SharedGroup>],
) -> std::result::Result<SharedLayout, String> {
    if !rows.is_empty() && rows.len() != b {
        return Err(format!(
            "layout: {} rows given for a batch of {b}",
            rows.len()
        ));
    }
    for (row, groups) in rows.iter().enumerate() {
        // Checked sums: lengths from a caller never wrap into a layout that seems to fit.
        let total = groups.iter().try_fold(0usize, |acc, g| {
            g.branches
                .iter()
                .try_fold(g.prompt, |len, &x| len.checked_add(x))
                .and_then(|len| acc.checked_add(len))
        });
        if total.is_none_or(|total| total > t)
            || groups
                .iter()
                .any(|g| g.is_empty() || g.branches.contains(&0))
        {
            return Err(format!(
                "layout of row {row}: groups {groups:?} do not fit {t} positions"
            ));
        }
    }
    let n = b * t;
    let mut positions: Vec<u32> = (0..b).flat_map(|_| 0..t as u32).collect();
    let mut seg_start = vec![0u32; n];
    let shared = rows
        .iter()
        .any(|g| g.iter().any(|g| !g.branches.is_empty()));
    let (mut shared_start, mut shared_end) = if shared {
        (vec![0u32; n], vec![0u32; n])
    } else {
        (Vec::new(), Vec::new())
    };
    for (row, groups) in rows.iter().enumerate() {
        let base = row * t;
        // (first row position, tokens, first position id, shared prompt) per span.
        let mut spans = Vec::new();
        let mut at = 0;
        for group in groups {
            let prompt = at;
            spans.push((at, group.prompt, 0, None));
            at += group.prompt;
            for &len in &group.branches {
                spans.push((at, len, group.prompt, Some((prompt, prompt + group.prompt))));
                at += len;
            }
        }
        spans.push((at, t - at, 0, None));
        for (at, len, first_pos, window) in spans {
            for k in 0..len {
                positions[base + at + k] = (first_pos + k) as u32;
                seg_start[base + at + k] = at as u32;
                if let Some((a, z)) = window {
                    shared_start[base + at + k] = a as u32;
                    shared_end[base + at + k] = z as u32;
                }
            }
        }
    }
    Ok(SharedLayout {
        positions,
        seg_start,
        shared: shared.then_some((shared_start, shared_end)),
    })
}

/// Floats of an arena for `b` sequences of `t` tokens of `model` (without the head's chunk),
/// checkpointed or not: what a layout costs in memory, for the learner choosing one.
pub fn arena_floats(model: &Model, b: usize, t: usize, checkpointed: bool) -> usize {
    Activations::lengths(model, b, t, checkpointed).iter().sum()
}

fn check_ids(model: &Model, acts: &Activations, ids: &[u32], what: &str) -> Result<()> {
    if ids.len() != acts.tokens() {
        return Err(EngineError::Input(format!(
            "{what}: {} ids for an arena of {}x{} tokens",
            ids.len(),
            acts.b,
            acts.t
        )));
    }
    let v = model.config.vocab_size;
    if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
        return Err(EngineError::Input(format!(
            "{what}: token id {bad} at position {i} is outside the vocabulary of {v}"
        )));
    }
    Ok(())
}

/// The attention shape of `model` over the arena's batch.
fn attn_shape(model: &Model, acts: &Activations) -> AttnShape {
    let cfg = &model.config;
    AttnShape {
        b: acts.b,
        t: acts.t,
        nh: cfg.num_heads,
        nkv: cfg.num_kv_heads,
        hs: cfg.head_dim,
    }
}

/// Runs the transformer over `ids` [B, T] (row-major) and leaves the final hidden states in the
/// arena (`acts.hidden()`), along with everything `backward` needs (with activation
/// checkpointing, the residual stream entering each layer; `backward` recomputes the rest).
pub fn forward(model: &Model, acts: &mut Activations, ids: &[u32]) -> Result<()> {
    check_ids(model, acts, ids, "forward")?;
    let cfg = &model.config;
    let p = &model.params;
    let lay = &model.layout;
    let (n, c) = (acts.tokens(), cfg.hidden_size);
    let eps = cfg.rms_norm_eps as f32;

    ops::embedding_forward(
        &mut acts.x[..n * c],
        ids,
        &p[lay.embed..lay.embed + cfg.vocab_size * c],
        c,
    );
    for l in 0..cfg.num_layers {
        let slot = acts.slot(l);
        layer_forward(model, acts, l, slot);
    }
    let l = cfg.num_layers;
    ops::rmsnorm_forward(
        &mut acts.xf,
        &mut acts.rstdf,
        &acts.x[l * n * c..(l + 1) * n * c],
        &p[lay.final_norm..lay.final_norm + c],
        c,
        eps,
    );
    Ok(())
}

/// Layer `l` from the residual stream entering it (`x[l]`) to the one leaving it (`x[l + 1]`),
/// its intermediates kept in the arena's per-layer slot `slot`.
fn layer_forward(model: &Model, acts: &mut Activations, l: usize, slot: usize) {
    let cfg = &model.config;
    let p = &model.params;
    let o = &model.layout.layers[l];
    let (n, c, qkv_w, qd, i) = (
        acts.tokens(),
        cfg.hidden_size,
        cfg.qkv_dim(),
        cfg.q_dim(),
        cfg.intermediate_size,
    );
    let shape = attn_shape(model, acts);
    let eps = cfg.rms_norm_eps as f32;
    let att_len = acts.b * cfg.num_heads * acts.t * acts.t;
    let k = slot;

    let (x_in, x_rest) = acts.x.split_at_mut((l + 1) * n * c);
    let x = &x_in[l * n * c..];
    let x_out = &mut x_rest[..n * c];
    let x_mid = &mut acts.x_mid[k * n * c..(k + 1) * n * c];
    let ln1 = &mut acts.ln1[k * n * c..(k + 1) * n * c];
    let qkv = &mut acts.qkv[k * n * qkv_w..(k + 1) * n * qkv_w];
    let att = &mut acts.att[k * att_len..(k + 1) * att_len];
    let atty = &mut acts.atty[k * n * qd..(k + 1) * n * qd];
    let ln2 = &mut acts.ln2[k * n * c..(k + 1) * n * c];
    let gu = &mut acts.gu[k * n * 2 * i..(k + 1) * n * 2 * i];
    let h = &mut acts.h[k * n * i..(k + 1) * n * i];

    ops::rmsnorm_forward(
        ln1,
        &mut acts.rstd1[k * n..(k + 1) * n],
        x,
        &p[o.ln1..o.ln1 + c],
        c,
        eps,
    );
    let bias = o.qkv_b.map(|b| &p[b..b + qkv_w]);
    ops::matmul_forward(
        qkv,
        ln1,
        &p[o.qkv_w..o.qkv_w + qkv_w * c],
        bias,
        n,
        c,
        qkv_w,
    );
    if let Some(qn) = o.qk_norm {
        let (heads, hs) = (cfg.num_heads + cfg.num_kv_heads, cfg.head_dim);
        let pre = &mut acts.qk_pre[k * n * heads * hs..(k + 1) * n * heads * hs];
        for (dst, row) in pre
            .chunks_exact_mut(heads * hs)
            .zip(qkv.chunks_exact(qkv_w))
        {
            dst.copy_from_slice(&row[..heads * hs]);
        }
        ops::qk_norm_forward(
            qkv,
            &mut acts.qk_rstd[k * n * heads..(k + 1) * n * heads],
            &p[qn..qn + hs],
            &p[qn + hs..qn + 2 * hs],
            cfg.num_heads,
            cfg.num_kv_heads,
            hs,
            eps,
        );
    }
    ops::rope_forward(
        qkv,
        &acts.positions,
        &acts.rope,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
    );
    let shared = (!acts.shared_start.is_empty())
        .then_some((acts.shared_start.as_slice(), acts.shared_end.as_slice()));
    ops::attention_forward_shared(atty, att, qkv, &acts.seg_start, shared, shape);
    x_mid.copy_from_slice(x);
    ops::matmul_forward_accumulate(x_mid, atty, &p[o.o_w..o.o_w + c * qd], n, qd, c);

    ops::rmsnorm_forward(
        ln2,
        &mut acts.rstd2[k * n..(k + 1) * n],
        x_mid,
        &p[o.ln2..o.ln2 + c],
        c,
        eps,
    );
    ops::matmul_forward(
        gu,
        ln2,
        &p[o.gate_up_w..o.gate_up_w + 2 * i * c],
        None,
        n,
        c,
        2 * i,
    );
    ops::swiglu_forward(h, gu, i);
    x_out.copy_from_slice(x_mid);
    ops::matmul_forward_accumulate(x_out, h, &p[o.down_w..o.down_w + c * i], n, i, c);
}

/// Runs the LM head over the last forward pass's hidden states. With `grads`, the objective's
/// gradient w.r.t. the LM head weight is accumulated into `grads` and w.r.t. the hidden states is
/// kept in the arena for `backward`, which must follow.
pub fn head(
    model: &Model,
    acts: &mut Activations,
    targets: &[u32],
    objective: Option<&dyn TokenObjective>,
    grads: Option<&mut [f32]>,
    want_entropy: bool,
) -> Result<HeadOutput> {
    if targets.len() != acts.tokens() {
        return Err(EngineError::Input(format!(
            "head: {} targets for {} tokens",
            targets.len(),
            acts.tokens()
        )));
    }
    let cfg = &model.config;
    let (c, v) = (cfg.hidden_size, cfg.vocab_size);
    let w = &model.params[model.layout.lm_head..model.layout.lm_head + v * c];
    acts.dxf.fill(0.0);
    let head_grads = grads.map(|g| HeadGrads {
        dxf: &mut acts.dxf,
        dweight: &mut g[model.layout.lm_head..model.layout.lm_head + v * c],
    });
    lm_head(
        &acts.xf,
        w,
        targets,
        c,
        v,
        objective,
        head_grads,
        want_entropy,
        &mut acts.head_scratch,
    )
}

/// Logits [N, V] of the last forward pass. Materialises the full tensor: for tests and small
/// vocabularies; training and sampling go through `head`.
pub fn logits(model: &Model, acts: &Activations) -> Vec<f32> {
    let cfg = &model.config;
    let (n, c, v) = (acts.tokens(), cfg.hidden_size, cfg.vocab_size);
    let mut out = vec![0.0; n * v];
    let w = &model.params[model.layout.lm_head..model.layout.lm_head + v * c];
    ops::matmul_forward(&mut out, &acts.xf, w, None, n, c, v);
    out
}

/// Backpropagates the gradient that `head` left in the arena through the transformer,
/// accumulating every parameter's gradient into `grads` (same layout as the parameters).
pub fn backward(
    model: &Model,
    acts: &mut Activations,
    ids: &[u32],
    grads: &mut [f32],
) -> Result<()> {
    check_ids(model, acts, ids, "backward")?;
    if grads.len() != model.layout.total {
        return Err(EngineError::Input(format!(
            "backward: {} gradient floats for {} parameters",
            grads.len(),
            model.layout.total
        )));
    }
    let cfg = &model.config;
    let p = &model.params;
    let lay = &model.layout;
    let (n, c, qkv_w, qd, i) = (
        acts.tokens(),
        cfg.hidden_size,
        cfg.qkv_dim(),
        cfg.q_dim(),
        cfg.intermediate_size,
    );
    let shape = attn_shape(model, acts);
    let att_len = acts.b * cfg.num_heads * acts.t * acts.t;
    let l_count = cfg.num_layers;

    acts.dres.fill(0.0);
    ops::rmsnorm_backward(
        &mut acts.dres,
        &mut grads[lay.final_norm..lay.final_norm + c],
        &acts.dxf,
        &acts.x[l_count * n * c..(l_count + 1) * n * c],
        &p[lay.final_norm..lay.final_norm + c],
        &acts.rstdf,
        c,
    );
    for (l, o) in lay.layers.iter().enumerate().rev() {
        let k = acts.slot(l);
        if acts.checkpointed() {
            // Only the residual stream entering the layer was kept: its intermediates again,
            // the same ops on the same inputs, so the same bits.
            layer_forward(model, acts, l, k);
        }
        let x = &acts.x[l * n * c..(l + 1) * n * c];
        let x_mid = &acts.x_mid[k * n * c..(k + 1) * n * c];
        let ln1 = &acts.ln1[k * n * c..(k + 1) * n * c];
        let qkv = &acts.qkv[k * n * qkv_w..(k + 1) * n * qkv_w];
        let att = &acts.att[k * att_len..(k + 1) * att_len];
        let atty = &acts.atty[k * n * qd..(k + 1) * n * qd];
        let ln2 = &acts.ln2[k * n * c..(k + 1) * n * c];
        let gu = &acts.gu[k * n * 2 * i..(k + 1) * n * 2 * i];
        let h = &acts.h[k * n * i..(k + 1) * n * i];

        // MLP: dres holds d x_out; the branch adds its share of d x_mid into dres itself.
        acts.dh.fill(0.0);
        ops::matmul_backward(
            &mut acts.dh,
            &mut grads[o.down_w..o.down_w + c * i],
            None,
            &acts.dres,
            h,
            &p[o.down_w..o.down_w + c * i],
            n,
            i,
            c,
        );
        acts.dgu.fill(0.0);
        ops::swiglu_backward(&mut acts.dgu, &acts.dh, gu, i);
        acts.dln.fill(0.0);
        ops::matmul_backward(
            &mut acts.dln,
            &mut grads[o.gate_up_w..o.gate_up_w + 2 * i * c],
            None,
            &acts.dgu,
            ln2,
            &p[o.gate_up_w..o.gate_up_w + 2 * i * c],
            n,
            c,
            2 * i,
        );
        ops::rmsnorm_backward(
            &mut acts.dres,
            &mut grads[o.ln2..o.ln2 + c],
            &acts.dln,
            x_mid,
            &p[o.ln2..o.ln2 + c],
            &acts.rstd2[k * n..(k + 1) * n],
            c,
        );

        // Attention: dres now holds d x_mid.
        acts.datty.fill(0.0);
        ops::matmul_backward(
            &mut acts.datty,
            &mut grads[o.o_w..o.o_w + c * qd],
            None,
            &acts.dres,
            atty,
            &p[o.o_w..o.o_w + c * qd],
            n,
            qd,
            c,
        );
        acts.dqkv.fill(0.0);
        ops::attention_backward(&mut acts.dqkv, &mut acts.datt, &acts.datty, qkv, att, shape);
        ops::rope_backward(
            &mut acts.dqkv,
            &acts.positions,
            &acts.rope,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        );
        if let Some(qn) = o.qk_norm {
            let (heads, hs) = (cfg.num_heads + cfg.num_kv_heads, cfg.head_dim);
            let (dq_weight, dk_weight) = grads[qn..qn + 2 * hs].split_at_mut(hs);
            ops::qk_norm_backward(
                &mut acts.dqkv,
                dq_weight,
                dk_weight,
                &acts.qk_pre[k * n * heads * hs..(k + 1) * n * heads * hs],
                &p[qn..qn + hs],
                &p[qn + hs..qn + 2 * hs],
                &acts.qk_rstd[k * n * heads..(k + 1) * n * heads],
                cfg.num_heads,
                cfg.num_kv_heads,
                hs,
            );
        }
        acts.dln.fill(0.0);
        // q|k|v weight and bias gradients are adjacent in the layout, as are the parameters.
        let (dw, dbias) = match o.qkv_b {
            Some(b) => {
                let (head, tail) = grads.split_at_mut(b);
                (
                    &mut head[o.qkv_w..o.qkv_w + qkv_w * c],
                    Some(&mut tail[..qkv_w]),
                )
            }
            None => (&mut grads[o.qkv_w..o.qkv_w + qkv_w * c], None),
        };
        ops::matmul_backward(
            &mut acts.dln,
            dw,
            dbias,
            &acts.dqkv,
            ln1,
            &p[o.qkv_w..o.qkv_w + qkv_w * c],
            n,
            c,
            qkv_w,
        );
        ops::rmsnorm_backward(
            &mut acts.dres,
            &mut grads[o.ln1..o.ln1 + c],
            &acts.dln,
            x,
            &p[o.ln1..o.ln1 + c],
            &acts.rstd1[k * n..(k + 1) * n],
            c,
        );
    }
    ops::embedding_backward(
        &mut grads[lay.embed..lay.embed + cfg.vocab_size * c],
        &acts.dres,
        ids,
        c,
    );
    Ok(())
}
