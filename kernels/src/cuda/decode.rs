//! The sampler's path on the GPU: a KV cache in device memory, a batched decode step (one new
//! token per row, each in its own slot at its own position, as `cpu::decode_step`), and sampling
//! on the device (temperature, top-k, min-p, top-p, seeded per sequence).
//!
//! Shape legend: S = rows this step, L = layers, C = channels, NH/NKV = query/kv heads, HS = head
//! size, KVD = NKV·HS, QKV = (NH + 2·NKV)·HS, QD = NH·HS, I = MLP width, V = vocab,
//! P = positions per slot.

use half::bf16;

use super::backend::{Arg, CudaBackend, DeviceBuffer};
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
    /// The sequence's seed: with the step counter it fixes the draw, whatever the batch.
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
    /// The step's inputs in one upload: tokens | slots | positions, [3, max_rows].
    step_inputs: DeviceBuffer<u32>,
    logit_rows: DeviceBuffer<u32>,
    /// Per-row sampling parameters and results.
    temperature: DeviceBuffer<f32>,
    top_k: DeviceBuffer<i32>,
    top_p: DeviceBuffer<f32>,
    min_p: DeviceBuffer<f32>,
    seeds: DeviceBuffer<u64>,
    counters: DeviceBuffer<u64>,
    out_tokens: DeviceBuffer<u32>,
    out_sampling_lp: DeviceBuffer<f32>,
    out_raw_lp: DeviceBuffer<f32>,
    /// Rows of logits the last step produced.
    logit_count: usize,
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
            step_inputs: be.alloc(3 * r)?,
            logit_rows: be.alloc(r)?,
            temperature: be.alloc(r)?,
            top_k: be.alloc(r)?,
            top_p: be.alloc(r)?,
            min_p: be.alloc(r)?,
            seeds: be.alloc(r)?,
            counters: be.alloc(r)?,
            out_tokens: be.alloc(r)?,
            out_sampling_lp: be.alloc(r)?,
            out_raw_lp: be.alloc(r)?,
            logit_count: 0,
        })
    }

    /// Bytes of the KV cache.
    pub fn cache_bytes(&self) -> usize {
        2 * self.cache_k.len() * 2
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
        // One host-to-device copy per step instead of three.
        let r = self.max_rows;
        let mut inputs = vec![0u32; 3 * r];
        inputs[..s].copy_from_slice(tokens);
        for (dst, &slot) in inputs[r..r + s].iter_mut().zip(slots) {
            *dst = slot as u32;
        }
        inputs[2 * r..2 * r + s].copy_from_slice(positions);
        be.copy_to_device(&self.step_inputs, 0, &inputs)?;
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
            be.launch(
                ("decode", "decode_attention"),
                (s.div_ceil(4) as u32, nh as u32, 1),
                128,
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
        match logit_rows {
            None => {
                ops::matmul_forward(be, self.logits.ptr(), ln, head, None, s, c, v, false)?;
                self.logit_count = s;
            }
            Some(rows) => {
                let rows_u32: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
                be.copy_to_device(&self.logit_rows, 0, &rows_u32)?;
                let n = rows.len();
                be.launch_1d(
                    ("decode", "gather_rows"),
                    n * c,
                    &[
                        Arg::Ptr(self.picked.ptr()),
                        Arg::Ptr(ln),
                        Arg::Ptr(self.logit_rows.ptr()),
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
                )?;
                self.logit_count = n;
            }
        }
        Ok(())
    }

    /// The logits of the last step [rows, V], copied to the host (tests, small vocabularies).
    pub fn logits(&self, be: &CudaBackend, vocab: usize) -> Result<Vec<f32>, CudaError> {
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
        let col = |f: &dyn Fn(&DeviceSampling) -> f32| params.iter().map(f).collect::<Vec<f32>>();
        be.copy_to_device(&self.temperature, 0, &col(&|p| p.temperature))?;
        be.copy_to_device(&self.top_p, 0, &col(&|p| p.top_p))?;
        be.copy_to_device(&self.min_p, 0, &col(&|p| p.min_p))?;
        let top_k: Vec<i32> = params
            .iter()
            .map(|p| p.top_k.min(i32::MAX as usize) as i32)
            .collect();
        be.copy_to_device(&self.top_k, 0, &top_k)?;
        let seeds: Vec<u64> = params.iter().map(|p| p.seed).collect();
        be.copy_to_device(&self.seeds, 0, &seeds)?;
        be.copy_to_device(&self.counters, 0, counters)?;
        be.launch(
            ("sample", "sample_rows"),
            (rows as u32, 1, 1),
            SAMPLE_THREADS,
            &[
                Arg::Ptr(self.out_tokens.ptr()),
                Arg::Ptr(self.out_sampling_lp.ptr()),
                Arg::Ptr(self.out_raw_lp.ptr()),
                Arg::Ptr(self.logits.ptr()),
                Arg::Ptr(self.temperature.ptr()),
                Arg::Ptr(self.top_k.ptr()),
                Arg::Ptr(self.top_p.ptr()),
                Arg::Ptr(self.min_p.ptr()),
                Arg::Ptr(self.seeds.ptr()),
                Arg::Ptr(self.counters.ptr()),
                Arg::int(rows)?,
                Arg::int(vocab)?,
            ],
        )?;
        let mut tokens = vec![0u32; rows];
        let mut slp = vec![0f32; rows];
        let mut raw = vec![0f32; rows];
        be.copy_to_host(&mut tokens, &self.out_tokens, 0)?;
        be.copy_to_host(&mut slp, &self.out_sampling_lp, 0)?;
        be.copy_to_host(&mut raw, &self.out_raw_lp, 0)?;
        Ok((0..rows)
            .map(|r| Pick {
                token: tokens[r],
                sampling_logprob: slp[r],
                raw_logprob: raw[r],
            })
            .collect())
    }
}
