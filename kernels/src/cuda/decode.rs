//! The sampler's path on the GPU: a KV cache in device memory, a batched decode step (one new
//! token per row, each in its own slot at its own position, as `cpu::decode_step`), and sampling
//! on the device (temperature, top-k, min-p, top-p, seeded per sequence).
//!
//! Not batch-invariant: the step's GEMMs go through cuBLAS, whose kernel (and so the order of
//! additions) depends on the number of rows, so a sequence's logits may differ in their last bits
//! with the batch it is decoded in. The draw itself is a function of (logits, seed, counter)
//! only. The CPU decoder (`cpu::decode_step`) is batch-invariant; this one is not.
//!
//! Two decode-attention kernels: `DecodeAttention::PerHead` (a warp per (row, query head), the
//! reviewed original) and `DecodeAttention::Grouped` (a warp per (row, kv head), each key and
//! value read once per GQA group with 16-byte loads). `R1_CUDA_DECODE_ATTENTION=grouped|per-head`
//! picks the default; `DeviceDecoder::set_attention` overrides it per decoder.
//!
//! With `set_graphs(true)` (or `R1_CUDA_DECODE_GRAPHS=1`) each step shape runs once uncaptured,
//! is captured as a CUDA graph on its second step and replayed with one launch from then on; the
//! step's inputs are uploaded before the replay.
//!
//! Shape legend: S = rows this step, L = layers, C = channels, NH/NKV = query/kv heads, HS = head
//! size, KVD = NKV·HS, QKV = (NH + 2·NKV)·HS, QD = NH·HS, I = MLP width, V = vocab,
//! P = positions per slot.

use std::collections::{HashMap, HashSet};

use half::bf16;

use super::backend::{Arg, CudaBackend, DeviceBuffer, DeviceGraph, PinnedBuffer};
use super::error::CudaError;
use super::model::DeviceModel;
use super::ops::{self, SAMPLE_THREADS};
use crate::sample::Pick;

/// How one row's next token is drawn on the device. `temperature == 0` is greedy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceSampling {
    /// Softmax temperature; 0 picks the argmax (first index of the maximum).
    pub temperature: f32,
    /// Keep the k most likely tokens (0 keeps all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches this (1 keeps all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely (0 keeps all).
    pub min_p: f32,
    /// The sequence's seed: with the step counter it fixes the draw from a given row of logits,
    /// whatever the other rows (the logits themselves may vary with the batch: see the module).
    pub seed: u64,
}

impl DeviceSampling {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        DeviceSampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
        }
    }
}

/// Which kernel computes decode attention (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeAttention {
    /// A warp per (row, query head); keys and values read once per query head, 2-byte loads.
    PerHead,
    /// A warp per (row, kv head) for all the group's query heads, 16-byte loads. Falls back to
    /// `PerHead` for shapes it does not cover (head size not 8·2ᵏ ≤ 256, group > 8).
    Grouped,
}

impl DecodeAttention {
    /// The default: `R1_CUDA_DECODE_ATTENTION` (`grouped` or `per-head`), else `PerHead` (the
    /// kernel checked by review; `Grouped` awaits its first GPU parity run).
    pub fn from_env() -> Self {
        match std::env::var("R1_CUDA_DECODE_ATTENTION").as_deref() {
            Ok("grouped") => DecodeAttention::Grouped,
            _ => DecodeAttention::PerHead,
        }
    }

    /// Whether the grouped kernel covers this shape (see `decode_attention_grouped`).
    pub fn grouped_supports(nh: usize, nkv: usize, hs: usize) -> bool {
        let lanes = hs / 8;
        nkv > 0
            && nh.is_multiple_of(nkv)
            && nh / nkv <= GROUPED_MAX_GROUP
            && hs.is_multiple_of(8)
            && lanes.is_power_of_two()
            && lanes <= 32
    }
}

/// One layer's keys and values of a slot's prefix, [len, KVD] each (as `cpu::KvCache`).
pub type LayerKv = (Vec<f32>, Vec<f32>);

/// `DEC_MAX_GROUP` in decode.cu: most query heads per kv head the grouped kernel holds.
const GROUPED_MAX_GROUP: usize = 8;
/// `DEC_WARPS` in decode.cu: rows per block of both decode-attention kernels.
const DECODE_WARPS: usize = 4;

/// The KV cache and per-step buffers of a batched decoder on the device.
pub struct DeviceDecoder {
    /// Sequences that can be decoded at once.
    pub slots: usize,
    /// Positions per slot.
    pub max_len: usize,
    /// Most rows one step may carry (decode rows plus prefill rows).
    pub max_rows: usize,
    /// Keys and values [L, slots, P, KVD], bf16.
    cache_k: DeviceBuffer<bf16>,
    cache_v: DeviceBuffer<bf16>,
    x: DeviceBuffer<f32>,
    ln: DeviceBuffer<bf16>,
    rstd: DeviceBuffer<f32>,
    qkv: DeviceBuffer<f32>,
    atty: DeviceBuffer<f32>,
    atty_bf16: DeviceBuffer<bf16>,
    gu: DeviceBuffer<f32>,
    h: DeviceBuffer<bf16>,
    /// Rows of `ln` whose logits are wanted, gathered [S, C].
    picked: DeviceBuffer<bf16>,
    /// Logits of the last step [S, V].
    logits: DeviceBuffer<f32>,
    /// The step's inputs in one upload: tokens | slots | positions | logit rows, [4, max_rows].
    step_inputs: DeviceBuffer<u32>,
    /// Page-locked staging of `step_inputs` on the host.
    staging: PinnedBuffer<u32>,
    /// Per-row sampling parameters, 4 words a row (see sample.cu): one upload per `sample`.
    sample_params: DeviceBuffer<u64>,
    /// Per-row results, 4 words a row (token, two log-probs, status): one download per `sample`.
    sample_results: DeviceBuffer<u32>,
    /// Rows of logits the last step produced.
    logit_count: usize,
    /// The model's vocabulary: the width of every logits row.
    vocab: usize,
    /// Rows of the last `sample` that fell back to token 0 (no usable logit).
    fallback_rows: Vec<usize>,
    /// The decode-attention kernel.
    attention: DecodeAttention,
    /// Whether steps run as captured CUDA graphs (`set_graphs`, `R1_CUDA_DECODE_GRAPHS=1`).
    use_graphs: bool,
    /// Captured steps by shape: one `cuGraphLaunch` instead of ~13 launches per layer.
    graphs: HashMap<GraphKey, DeviceGraph>,
    /// Shapes stepped once uncaptured (the second step of a shape captures it).
    warmed: HashSet<GraphKey>,
}

/// What a captured decode step bakes in besides the decoder's own buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GraphKey {
    /// Rows of the step.
    rows: usize,
    /// Rows whose logits are gathered (None: all).
    logit_rows: Option<usize>,
    /// The decode-attention kernel.
    attention: DecodeAttention,
    /// Device address of the model's bf16 weights (another model, another graph).
    weights: u64,
}

impl DeviceDecoder {
    /// A cache for `slots` sequences of up to `max_len` positions, steps of up to `max_rows` rows.
    pub fn new(
        be: &CudaBackend,
        model: &DeviceModel,
        slots: usize,
        max_len: usize,
        max_rows: usize,
    ) -> Result<Self, CudaError> {
        let cfg = &model.config;
        if max_len > model.max_positions() {
            return Err(CudaError::Input(format!(
                "decoder of {max_len} positions for a model uploaded with {}",
                model.max_positions()
            )));
        }
        let r = max_rows.max(1);
        let (c, v, i) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
        let cache = cfg.num_layers * slots * max_len * cfg.kv_dim();
        Ok(DeviceDecoder {
            slots,
            max_len,
            max_rows: r,
            cache_k: be.zeros(cache)?,
            cache_v: be.zeros(cache)?,
            x: be.alloc(r * c)?,
            ln: be.alloc(r * c)?,
            rstd: be.alloc(r)?,
            qkv: be.alloc(r * cfg.qkv_dim())?,
            atty: be.alloc(r * cfg.q_dim())?,
            atty_bf16: be.alloc(r * cfg.q_dim())?,
            gu: be.alloc(r * 2 * i)?,
            h: be.alloc(r * i)?,
            picked: be.alloc(r * c)?,
            logits: be.alloc(r * v)?,
            step_inputs: be.alloc(4 * r)?,
            staging: be.alloc_pinned(4 * r)?,
            sample_params: be.alloc(4 * r)?,
            sample_results: be.alloc(4 * r)?,
            logit_count: 0,
            vocab: v,
            fallback_rows: Vec::new(),
            attention: DecodeAttention::from_env(),
            use_graphs: std::env::var("R1_CUDA_DECODE_GRAPHS").as_deref() == Ok("1"),
            graphs: HashMap::new(),
            warmed: HashSet::new(),
        })
    }

    /// Bytes of the KV cache.
    pub fn cache_bytes(&self) -> usize {
        2 * self.cache_k.len() * 2
    }

    /// Runs later steps as CUDA graphs, captured once per shape (rows, logit rows, kernel,
    /// model) and replayed with one launch; off by default until a GPU run confirms it
    /// (`R1_CUDA_DECODE_GRAPHS=1` turns it on for new decoders).
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graphs = on;
    }

    /// Chooses the decode-attention kernel for later steps.
    pub fn set_attention(&mut self, kernel: DecodeAttention) {
        self.attention = kernel;
    }

    /// The decode-attention kernel in use.
    pub fn attention(&self) -> DecodeAttention {
        self.attention
    }

    /// Rows of the last `sample` whose logits had no usable value (all NaN or −inf): they got
    /// token 0, as the CPU sampler gives, and a warning was logged.
    pub fn fallback_rows(&self) -> &[usize] {
        &self.fallback_rows
    }

    fn check_vocab(&self, vocab: usize, what: &str) -> Result<(), CudaError> {
        if vocab != self.vocab {
            return Err(CudaError::Input(format!(
                "{what}: vocab {vocab} given, but the decoder's model has a vocabulary of {}",
                self.vocab
            )));
        }
        Ok(())
    }

    /// Replaces the last step's logits with `logits` [rows, V] (row count ≤ `max_rows`): sampling
    /// logits computed elsewhere, or a test's chosen values.
    pub fn set_logits(&mut self, be: &CudaBackend, logits: &[f32]) -> Result<(), CudaError> {
        let v = self.vocab;
        if logits.is_empty() || !logits.len().is_multiple_of(v) || logits.len() / v > self.max_rows
        {
            return Err(CudaError::Input(format!(
                "set_logits: {} floats is not 1..={} rows of {v}",
                logits.len(),
                self.max_rows
            )));
        }
        be.copy_to_device(&self.logits, 0, logits)?;
        self.logit_count = logits.len() / v;
        Ok(())
    }

    /// Writes a prefilled prompt's keys and values (per layer, [len, KVD] each, as
    /// `cpu::KvCache::read_prefix` returns them) into positions 0..len of `slot`, rounded to bf16:
    /// every sample of a GRPO group starts from the one prefill of its prompt.
    pub fn load_prefix(
        &mut self,
        be: &CudaBackend,
        model: &DeviceModel,
        slot: usize,
        kv: &[LayerKv],
        len: usize,
    ) -> Result<(), CudaError> {
        let cfg = &model.config;
        let kvd = cfg.kv_dim();
        let n = len * kvd;
        if slot >= self.slots || len > self.max_len || kv.len() != cfg.num_layers {
            return Err(CudaError::Input(format!(
                "load_prefix: slot {slot} of {}, {len} positions of {}, {} layers of {}",
                self.slots,
                self.max_len,
                kv.len(),
                cfg.num_layers
            )));
        }
        if let Some(l) = kv.iter().position(|(k, v)| k.len() < n || v.len() < n) {
            return Err(CudaError::Input(format!(
                "load_prefix: layer {l} holds fewer than {len} positions of {kvd} values"
            )));
        }
        let per_layer = self.slots * self.max_len * kvd;
        let at = slot * self.max_len * kvd;
        for (l, (k, v)) in kv.iter().enumerate() {
            let kh: Vec<bf16> = k[..n].iter().map(|&x| bf16::from_f32(x)).collect();
            let vh: Vec<bf16> = v[..n].iter().map(|&x| bf16::from_f32(x)).collect();
            be.copy_to_device(&self.cache_k, l * per_layer + at, &kh)?;
            be.copy_to_device(&self.cache_v, l * per_layer + at, &vh)?;
        }
        Ok(())
    }

    /// The keys and values of positions 0..len of `slot` (per layer, [len, KVD] each, widened
    /// to f32): a prefilled prompt kept for the samples of its group not yet admitted.
    pub fn read_prefix(
        &self,
        be: &CudaBackend,
        model: &DeviceModel,
        slot: usize,
        len: usize,
    ) -> Result<Vec<LayerKv>, CudaError> {
        let cfg = &model.config;
        let kvd = cfg.kv_dim();
        if slot >= self.slots || len > self.max_len {
            return Err(CudaError::Input(format!(
                "read_prefix: slot {slot} of {}, {len} positions of {}",
                self.slots, self.max_len
            )));
        }
        let per_layer = self.slots * self.max_len * kvd;
        let at = slot * self.max_len * kvd;
        let mut k = vec![bf16::ZERO; len * kvd];
        let mut v = vec![bf16::ZERO; len * kvd];
        (0..cfg.num_layers)
            .map(|l| {
                be.copy_to_host(&mut k, &self.cache_k, l * per_layer + at)?;
                be.copy_to_host(&mut v, &self.cache_v, l * per_layer + at)?;
                Ok((
                    k.iter().map(|x| x.to_f32()).collect(),
                    v.iter().map(|x| x.to_f32()).collect(),
                ))
            })
            .collect()
    }

    /// One decoding step: `tokens[s]` enters slot `slots[s]` at position `positions[s]`; its key
    /// and value are cached and the next-token logits of every row (or of `logit_rows` only, in
    /// that order) are left on the device for `sample` / `logits`. Several rows may feed one slot
    /// at consecutive positions (a prompt's prefill): all keys are cached before any row attends.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        be: &CudaBackend,
        model: &DeviceModel,
        slots: &[usize],
        tokens: &[u32],
        positions: &[u32],
        logit_rows: Option<&[usize]>,
    ) -> Result<(), CudaError> {
        let cfg = &model.config;
        self.check_vocab(cfg.vocab_size, "decode step")?;
        let s = tokens.len();
        if s == 0 || slots.len() != s || positions.len() != s || s > self.max_rows {
            return Err(CudaError::Input(format!(
                "decode step: {s} tokens, {} slots, {} positions (at most {} rows)",
                slots.len(),
                positions.len(),
                self.max_rows
            )));
        }
        for (&slot, &pos) in slots.iter().zip(positions) {
            if slot >= self.slots || pos as usize >= self.max_len {
                return Err(CudaError::Input(format!(
                    "decode step: slot {slot} position {pos} is outside the cache"
                )));
            }
        }
        if let Some(rows) = logit_rows.filter(|rows| rows.len() > self.max_rows) {
            return Err(CudaError::Input(format!(
                "decode step: logits asked for {} rows, at most {}",
                rows.len(),
                self.max_rows
            )));
        }
        if let Some(&bad) = logit_rows.and_then(|rows| rows.iter().find(|&&r| r >= s)) {
            return Err(CudaError::Input(format!(
                "decode step: logits asked for row {bad} of {s}"
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(CudaError::Input(format!(
                "decode step: token id {bad} is outside the vocabulary of {}",
                cfg.vocab_size
            )));
        }
        // One asynchronous host-to-device copy per step, from page-locked staging: tokens |
        // slots | positions | logit rows.
        let r = self.max_rows;
        let staged = self.staging.write()?;
        staged[..s].copy_from_slice(tokens);
        for (dst, &slot) in staged[r..r + s].iter_mut().zip(slots) {
            *dst = slot as u32;
        }
        staged[2 * r..2 * r + s].copy_from_slice(positions);
        let n_staged = match logit_rows {
            Some(rows) => {
                for (dst, &row) in staged[3 * r..].iter_mut().zip(rows) {
                    *dst = row as u32;
                }
                3 * r + rows.len()
            }
            None => 3 * r,
        };
        be.copy_pinned_to_device(&self.step_inputs, 0, &self.staging, n_staged)?;
        let n_logits = logit_rows.map(|rows| rows.len());
        if self.use_graphs {
            // Every pointer and size the launches bake in is in the key; tokens, slots,
            // positions and logit rows are read from device buffers, so one graph serves every
            // step of the same shape.
            let key = GraphKey {
                rows: s,
                logit_rows: n_logits,
                attention: self.attention,
                weights: model.w(0),
            };
            if let Some(graph) = self.graphs.get(&key) {
                graph.launch(be)?;
            } else if self.warmed.insert(key) {
                // The first step of a shape runs uncaptured: modules, functions and cuBLAS's
                // lazily loaded kernels are loaded outside any capture.
                self.enqueue(be, model, s, n_logits)?;
            } else {
                be.load_all_kernels()?;
                let graph = be.capture(|| self.enqueue(be, model, s, n_logits))?;
                graph.launch(be)?;
                self.graphs.insert(key, graph);
            }
        } else {
            self.enqueue(be, model, s, n_logits)?;
        }
        self.logit_count = n_logits.unwrap_or(s);
        Ok(())
    }

    /// Queues one step's launches for `s` rows whose inputs are in `step_inputs` (and
    /// `logit_rows` for `n_logits` of them): the sequence `step` runs or captures as a graph.
    fn enqueue(
        &self,
        be: &CudaBackend,
        model: &DeviceModel,
        s: usize,
        n_logits: Option<usize>,
    ) -> Result<(), CudaError> {
        let cfg = &model.config;
        let r = self.max_rows;
        let (d_tokens, d_slots, d_positions) = (
            self.step_inputs.ptr(),
            self.step_inputs.at(r),
            self.step_inputs.at(2 * r),
        );

        let lay = &model.layout;
        let (c, qkv_w, qd, kvd, i, v) = (
            cfg.hidden_size,
            cfg.qkv_dim(),
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
            cfg.vocab_size,
        );
        let (nh, nkv, hs) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let eps = cfg.rms_norm_eps as f32;
        let per_layer = self.slots * self.max_len * kvd;
        let (x, ln, rstd) = (self.x.ptr(), self.ln.ptr(), self.rstd.ptr());
        let (qkv, atty, atty_bf16) = (self.qkv.ptr(), self.atty.ptr(), self.atty_bf16.ptr());
        let (gu, h) = (self.gu.ptr(), self.h.ptr());

        ops::embedding_forward(be, x, d_tokens, model.w(lay.embed), s, c)?;
        for (l, o) in lay.layers.iter().enumerate() {
            ops::rmsnorm_forward(be, ln, rstd, x, model.w(o.ln1), s, c, eps)?;
            let bias = o.qkv_b.map(|b| model.w(b));
            ops::matmul_forward(be, qkv, ln, model.w(o.qkv_w), bias, s, c, qkv_w, false)?;
            ops::rope_apply(
                be,
                qkv,
                d_positions,
                model.rope_tables(),
                s,
                qkv_w,
                0,
                nh + nkv,
                hs / 2,
                false,
            )?;
            let (ck, cv) = (
                self.cache_k.at(l * per_layer),
                self.cache_v.at(l * per_layer),
            );
            be.launch_1d(
                ("decode", "kv_cache_write"),
                s * kvd,
                &[
                    Arg::Ptr(ck),
                    Arg::Ptr(cv),
                    Arg::Ptr(qkv),
                    Arg::Ptr(d_slots),
                    Arg::Ptr(d_positions),
                    Arg::int(s)?,
                    Arg::int(qd)?,
                    Arg::int(kvd)?,
                    Arg::int(self.max_len)?,
                ],
            )?;
            let grouped = self.attention == DecodeAttention::Grouped
                && DecodeAttention::grouped_supports(nh, nkv, hs);
            let (kernel, heads) = if grouped {
                ("decode_attention_grouped", nkv)
            } else {
                ("decode_attention", nh)
            };
            be.launch(
                ("decode", kernel),
                (s.div_ceil(DECODE_WARPS) as u32, heads as u32, 1),
                (32 * DECODE_WARPS) as u32,
                &[
                    Arg::Ptr(atty),
                    Arg::Ptr(qkv),
                    Arg::Ptr(ck),
                    Arg::Ptr(cv),
                    Arg::Ptr(d_slots),
                    Arg::Ptr(d_positions),
                    Arg::int(s)?,
                    Arg::int(nh)?,
                    Arg::int(nkv)?,
                    Arg::int(hs)?,
                    Arg::int(self.max_len)?,
                ],
            )?;
            ops::cast_to_bf16(be, atty_bf16, atty, s * qd)?;
            // x += atty · W_oᵀ: the residual add is the GEMM's beta = 1.
            ops::matmul_forward(be, x, atty_bf16, model.w(o.o_w), None, s, qd, c, true)?;
            ops::rmsnorm_forward(be, ln, rstd, x, model.w(o.ln2), s, c, eps)?;
            ops::matmul_forward(be, gu, ln, model.w(o.gate_up_w), None, s, c, 2 * i, false)?;
            ops::swiglu_forward(be, h, gu, s, i)?;
            ops::matmul_forward(be, x, h, model.w(o.down_w), None, s, i, c, true)?;
        }
        ops::rmsnorm_forward(be, ln, rstd, x, model.w(lay.final_norm), s, c, eps)?;
        let head = model.w(lay.lm_head);
        match n_logits {
            None => ops::matmul_forward(be, self.logits.ptr(), ln, head, None, s, c, v, false),
            Some(n) => {
                be.launch_1d(
                    ("decode", "gather_rows"),
                    n * c,
                    &[
                        Arg::Ptr(self.picked.ptr()),
                        Arg::Ptr(ln),
                        Arg::Ptr(self.step_inputs.at(3 * r)),
                        Arg::int(n)?,
                        Arg::int(c)?,
                    ],
                )?;
                ops::matmul_forward(
                    be,
                    self.logits.ptr(),
                    self.picked.ptr(),
                    head,
                    None,
                    n,
                    c,
                    v,
                    false,
                )
            }
        }
    }

    /// The logits of the last step [rows, V], copied to the host (tests, small vocabularies).
    pub fn logits(&self, be: &CudaBackend, vocab: usize) -> Result<Vec<f32>, CudaError> {
        self.check_vocab(vocab, "logits")?;
        let mut out = vec![0.0; self.logit_count * vocab];
        be.copy_to_host(&mut out, &self.logits, 0)?;
        Ok(out)
    }

    /// Draws one token for each row of the last step's logits on the device. `params[r]` and
    /// `counters[r]` (the sequence's step number: with the seed it fixes the draw) per row.
    pub fn sample(
        &mut self,
        be: &CudaBackend,
        vocab: usize,
        params: &[DeviceSampling],
        counters: &[u64],
    ) -> Result<Vec<Pick>, CudaError> {
        self.check_vocab(vocab, "sample")?;
        let rows = self.logit_count;
        if params.len() != rows || counters.len() != rows {
            return Err(CudaError::Input(format!(
                "sample: {} parameter sets and {} counters for {rows} rows of logits",
                params.len(),
                counters.len()
            )));
        }
        for (r, p) in params.iter().enumerate() {
            let valid = p.temperature >= 0.0
                && p.temperature.is_finite()
                && p.top_p > 0.0
                && p.top_p <= 1.0
                && (0.0..=1.0).contains(&p.min_p);
            if !valid {
                return Err(CudaError::Input(format!(
                    "sample: row {r} has temperature {}, top_p {}, min_p {}",
                    p.temperature, p.top_p, p.min_p
                )));
            }
        }
        // One upload: temperature | top_k, top_p | min_p, seed, counter per row.
        let packed: Vec<u64> = params
            .iter()
            .zip(counters)
            .flat_map(|(p, &counter)| {
                let top_k = p.top_k.min(i32::MAX as usize) as u64;
                [
                    p.temperature.to_bits() as u64 | (top_k << 32),
                    p.top_p.to_bits() as u64 | ((p.min_p.to_bits() as u64) << 32),
                    p.seed,
                    counter,
                ]
            })
            .collect();
        be.copy_to_device(&self.sample_params, 0, &packed)?;
        be.launch(
            ("sample", "sample_rows"),
            (rows as u32, 1, 1),
            SAMPLE_THREADS,
            &[
                Arg::Ptr(self.sample_results.ptr()),
                Arg::Ptr(self.logits.ptr()),
                Arg::Ptr(self.sample_params.ptr()),
                Arg::int(rows)?,
                Arg::int(vocab)?,
            ],
        )?;
        // One download (it synchronises the stream).
        let mut results = vec![0u32; 4 * rows];
        be.copy_to_host(&mut results, &self.sample_results, 0)?;
        let status: Vec<u32> = results.chunks_exact(4).map(|r| r[3]).collect();
        self.fallback_rows = (0..rows).filter(|&r| status[r] != 0).collect();
        if !self.fallback_rows.is_empty() {
            tracing::warn!(
                rows = ?self.fallback_rows,
                "device sampling: rows with no usable logit (all NaN or -inf) got token 0"
            );
        }
        Ok(results
            .chunks_exact(4)
            .map(|r| Pick {
                token: r[0],
                sampling_logprob: f32::from_bits(r[1]),
                raw_logprob: f32::from_bits(r[2]),
            })
            .collect())
    }
}
