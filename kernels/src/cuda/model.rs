//! The decoder-only transformer on the GPU: a `Model` uploaded once (bf16 weights for the GEMMs,
//! f32 master weights, f32 gradients and AdamW moments, all in the CPU's flat layout), then
//! forward, the fused classifier, backward and AdamW — the learner's path. Mirrors `cpu::model`
//! op for op; the CPU backend is the reference the parity tests hold it to.
//!
//! Shape legend: B = batch, T = time, N = B·T, C = channels, L = layers, NH/NKV = query/kv heads,
//! HS = head size, QKV = (NH + 2·NKV)·HS, QD = NH·HS, I = MLP width, V = vocab.

use half::bf16;

use super::backend::{Arg, CudaBackend, DeviceBuffer};
use super::error::CudaError;
use super::ops::{self, AdamWStep, AttnWindows};
use crate::cpu::ops::{AttnShape, RopeTable};
use crate::cpu::SharedGroup;
pub use crate::cpu::SharedLayout;
use crate::model::{Model, ModelConfig, ParamLayout};
use crate::train::adamw::AdamWConfig;
use crate::train::head::{HeadOutput, TokenObjective};

/// Logit floats per head chunk on the GPU (256 MiB f32 + its bf16 gradient): large enough that
/// the chunk's GEMMs have hundreds of rows even for a 150k vocabulary.
const GPU_HEAD_CHUNK_FLOATS: usize = 64 << 20;

/// A model's parameters on the device.
pub struct DeviceModel {
    /// The model's shape.
    pub config: ModelConfig,
    /// Where each tensor lives in the flat buffers (same as on the CPU).
    pub layout: ParamLayout,
    /// f32 master weights: what AdamW updates.
    params: DeviceBuffer<f32>,
    /// bf16 copy of the weights: the GEMM operands, refreshed by every AdamW step.
    params_bf16: DeviceBuffer<bf16>,
    /// Gradients, f32, accumulated by backward (empty when uploaded for inference only).
    grads: DeviceBuffer<f32>,
    /// AdamW first and second moments (empty for inference).
    m: DeviceBuffer<f32>,
    v: DeviceBuffer<f32>,
    /// AdamW steps taken (bias correction).
    step: u64,
    /// RoPE cos/sin tables [P, HS/2] for positions 0..rope_positions.
    rope_cos: DeviceBuffer<f32>,
    rope_sin: DeviceBuffer<f32>,
    rope_positions: usize,
}

impl DeviceModel {
    /// Uploads `model` for positions up to `max_positions`. `trainable` also allocates gradients
    /// and AdamW moments (three more f32 copies of the parameters).
    pub fn upload(
        be: &CudaBackend,
        model: &Model,
        max_positions: usize,
        trainable: bool,
    ) -> Result<Self, CudaError> {
        let total = model.layout.total;
        if model.params.len() != total {
            return Err(CudaError::Input(format!(
                "model has {} parameters, its layout {total}",
                model.params.len()
            )));
        }
        let cfg = &model.config;
        refuse_unsupported(cfg)?;
        if cfg.head_dim > ops::MAX_HEAD_SIZE {
            return Err(CudaError::Input(format!(
                "head_dim {} is larger than the CUDA attention kernels' {}",
                cfg.head_dim,
                ops::MAX_HEAD_SIZE
            )));
        }
        let params = be.upload(&model.params)?;
        let params_bf16 = be.alloc::<bf16>(total)?;
        ops::cast_to_bf16(be, params_bf16.ptr(), params.ptr(), total)?;
        let opt_len = if trainable { total } else { 0 };
        let rope = RopeTable::new(&cfg.rope_inv_freq(), max_positions.max(1));
        Ok(DeviceModel {
            config: cfg.clone(),
            layout: model.layout.clone(),
            params,
            params_bf16,
            grads: be.zeros(opt_len)?,
            m: be.zeros(opt_len)?,
            v: be.zeros(opt_len)?,
            step: 0,
            rope_cos: be.upload(&rope.cos)?,
            rope_sin: be.upload(&rope.sin)?,
            rope_positions: max_positions.max(1),
        })
    }

    /// `src`, a model on another device (`src_be`'s), copied here for inference device to
    /// device (`CudaBackend::copy_from_peer`: its f32 weights, then this device's bf16 copy cast
    /// from them): a sampler on another GPU than the learner's, without a trip through the host.
    pub fn from_peer(
        be: &CudaBackend,
        src_be: &CudaBackend,
        src: &DeviceModel,
        max_positions: usize,
    ) -> Result<Self, CudaError> {
        let total = src.layout.total;
        let params = be.alloc::<f32>(total)?;
        be.copy_from_peer(&params, src_be, &src.params)?;
        let params_bf16 = be.alloc::<bf16>(total)?;
        ops::cast_to_bf16(be, params_bf16.ptr(), params.ptr(), total)?;
        let rope = RopeTable::new(&src.config.rope_inv_freq(), max_positions.max(1));
        Ok(DeviceModel {
            config: src.config.clone(),
            layout: src.layout.clone(),
            params,
            params_bf16,
            grads: be.zeros(0)?,
            m: be.zeros(0)?,
            v: be.zeros(0)?,
            step: 0,
            rope_cos: be.upload(&rope.cos)?,
            rope_sin: be.upload(&rope.sin)?,
            rope_positions: max_positions.max(1),
        })
    }

    /// Positions the RoPE tables cover.
    pub fn max_positions(&self) -> usize {
        self.rope_positions
    }

    /// The f32 master weights, copied to the host (checkpoints, weight sync to a CPU sampler).
    pub fn download_params(&self, be: &CudaBackend) -> Result<Vec<f32>, CudaError> {
        be.download(&self.params)
    }

    /// The bf16 copy of the weights (the GEMM operands), widened to f32 on the host: what
    /// `adamw_step` refreshed, for tests and weight sync checks.
    pub fn download_weights_bf16(&self, be: &CudaBackend) -> Result<Vec<f32>, CudaError> {
        Ok(be
            .download(&self.params_bf16)?
            .into_iter()
            .map(f32::from)
            .collect())
    }

    /// The accumulated gradients, copied to the host.
    pub fn download_grads(&self, be: &CudaBackend) -> Result<Vec<f32>, CudaError> {
        self.check_trainable()?;
        be.download(&self.grads)
    }

    /// Replaces the weights (f32 master and bf16 copy) with `params`: a learner's update arriving
    /// at a sampler.
    pub fn set_params(&mut self, be: &CudaBackend, params: &[f32]) -> Result<(), CudaError> {
        if params.len() != self.layout.total {
            return Err(CudaError::Input(format!(
                "set_params: {} floats for {} parameters",
                params.len(),
                self.layout.total
            )));
        }
        be.copy_to_device(&self.params, 0, params)?;
        ops::cast_to_bf16(
            be,
            self.params_bf16.ptr(),
            self.params.ptr(),
            self.layout.total,
        )
    }

    fn check_trainable(&self) -> Result<(), CudaError> {
        if self.grads.len() != self.layout.total {
            return Err(CudaError::Input(
                "the model was uploaded for inference: no gradients or optimizer state".into(),
            ));
        }
        Ok(())
    }

    /// Replaces the gradients with `grads` (same layout as the parameters): gradients averaged
    /// across data-parallel learners on the host, or a test's known values.
    pub fn load_grads(&self, be: &CudaBackend, grads: &[f32]) -> Result<(), CudaError> {
        self.check_trainable()?;
        if grads.len() != self.layout.total {
            return Err(CudaError::Input(format!(
                "load_grads: {} floats for {} parameters",
                grads.len(),
                self.layout.total
            )));
        }
        be.copy_to_device(&self.grads, 0, grads)
    }

    /// The gradient buffer, for a collective that sums it in place across replicas (NCCL).
    pub fn grads_mut(&mut self) -> Result<&mut DeviceBuffer<f32>, CudaError> {
        self.check_trainable()?;
        Ok(&mut self.grads)
    }

    /// Sets every gradient to 0 (backward accumulates).
    pub fn zero_grads(&self, be: &CudaBackend) -> Result<(), CudaError> {
        self.check_trainable()?;
        be.memset_zero(&self.grads)
    }

    /// Clips the gradients' global norm to `max_norm` (≤ 0 disables); returns the norm before.
    pub fn clip_grad_norm(&self, be: &CudaBackend, max_norm: f64) -> Result<f64, CudaError> {
        self.check_trainable()?;
        ops::clip_grad_norm(be, self.grads.ptr(), self.layout.total, max_norm)
    }

    /// One AdamW step at learning rate `lr` (as `train::adamw::AdamW::update`): master weights and
    /// moments in f32, then the bf16 copy refreshed.
    pub fn adamw_step(
        &mut self,
        be: &CudaBackend,
        config: AdamWConfig,
        lr: f32,
    ) -> Result<(), CudaError> {
        self.check_trainable()?;
        self.step += 1;
        let t = self.step as i32;
        let step = AdamWStep {
            decay: 1.0 - lr * config.weight_decay,
            beta1: config.beta1,
            beta2: config.beta2,
            step_size: (lr as f64 / (1.0 - (config.beta1 as f64).powi(t))) as f32,
            bias2_sqrt: (1.0 - (config.beta2 as f64).powi(t)).sqrt() as f32,
            eps: config.eps,
        };
        let runs = decay_runs(&self.layout);
        for (start, len, decays) in runs {
            ops::adamw_update(
                be,
                self.params.at(start),
                self.params_bf16.at(start),
                self.m.at(start),
                self.v.at(start),
                self.grads.at(start),
                len,
                decays,
                step,
            )?;
        }
        Ok(())
    }

    /// AdamW steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Replaces the AdamW state with first moments `m`, second moments `v` (f32, the flat
    /// layout of the parameters) and `step` steps taken: a resumed learner's optimizer, which the
    /// next `adamw_step` continues from (its bias correction uses `step + 1`).
    pub fn load_optimizer(
        &mut self,
        be: &CudaBackend,
        m: &[f32],
        v: &[f32],
        step: u64,
    ) -> Result<(), CudaError> {
        self.check_trainable()?;
        let total = self.layout.total;
        if m.len() != total || v.len() != total {
            return Err(CudaError::Input(format!(
                "load_optimizer: AdamW moments of {} and {} floats for {total} parameters",
                m.len(),
                v.len()
            )));
        }
        // The next step's bias correction raises β to `step + 1` as an i32.
        if step
            .checked_add(1)
            .and_then(|next| i32::try_from(next).ok())
            .is_none()
        {
            return Err(CudaError::Input(format!(
                "load_optimizer: {step} AdamW steps is more than the bias correction counts"
            )));
        }
        be.copy_to_device(&self.m, 0, m)?;
        be.copy_to_device(&self.v, 0, v)?;
        self.step = step;
        Ok(())
    }

    /// Copies the AdamW moments into `m` and `v` (the flat layout) and returns the steps taken:
    /// what a checkpoint of a GPU learner stores.
    pub fn download_optimizer(
        &self,
        be: &CudaBackend,
        m: &mut [f32],
        v: &mut [f32],
    ) -> Result<u64, CudaError> {
        self.check_trainable()?;
        let total = self.layout.total;
        if m.len() != total || v.len() != total {
            return Err(CudaError::Input(format!(
                "download_optimizer: room for {} and {} moments, {total} parameters",
                m.len(),
                v.len()
            )));
        }
        be.copy_to_host(m, &self.m, 0)?;
        be.copy_to_host(v, &self.v, 0)?;
        Ok(self.step)
    }

    /// Device address of a parameter's bf16 copy.
    pub(crate) fn w(&self, offset: usize) -> u64 {
        self.params_bf16.at(offset)
    }

    pub(crate) fn rope_tables(&self) -> (u64, u64) {
        (self.rope_cos.ptr(), self.rope_sin.ptr())
    }

    fn g(&self, offset: usize) -> u64 {
        self.grads.at(offset)
    }
}

/// (start, length, decays) of maximal runs of adjacent tensors sharing a weight-decay flag: one
/// AdamW launch each.
pub fn decay_runs(layout: &ParamLayout) -> Vec<(usize, usize, bool)> {
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    for (range, decays) in layout.decay_ranges() {
        match runs.last_mut() {
            Some((start, len, d)) if *d == decays && *start + *len == range.start => {
                *len += range.len()
            }
            _ => runs.push((range.start, range.len(), decays)),
        }
    }
    runs
}

/// Positions and segment starts [B·T] of rows packed with sequences of the given lengths (the
/// rest of each row is one padding segment), as `cpu::Activations::set_segments` lays them out.
pub fn segment_layout(
    b: usize,
    t: usize,
    segments: &[Vec<usize>],
) -> Result<(Vec<u32>, Vec<u32>), CudaError> {
    if !segments.is_empty() && segments.len() != b {
        return Err(CudaError::Input(format!(
            "segments: {} rows given for a batch of {b}",
            segments.len()
        )));
    }
    let mut positions = vec![0u32; b * t];
    let mut starts = vec![0u32; b * t];
    for row in 0..b {
        let lengths: &[usize] = segments.get(row).map_or(&[], |v| v.as_slice());
        let total: usize = lengths.iter().sum();
        if total > t || lengths.contains(&0) {
            return Err(CudaError::Input(format!(
                "segments of row {row}: lengths {lengths:?} do not fit {t} positions"
            )));
        }
        let mut at = 0;
        for &len in lengths.iter().chain(std::iter::once(&(t - total))) {
            for k in 0..len {
                positions[row * t + at + k] = k as u32;
                starts[row * t + at + k] = at as u32;
            }
            at += len;
        }
    }
    Ok((positions, starts))
}

/// `rows[b]` laid out as `cpu::Activations::set_layout` lays them out (the one layout of both
/// engines, [`crate::cpu::shared_layout`]); a layout that does not fit is an input error.
pub fn shared_layout(
    b: usize,
    t: usize,
    rows: &[Vec<SharedGroup>],
) -> Result<SharedLayout, CudaError> {
    crate::cpu::shared_layout(b, t, rows).map_err(CudaError::Input)
}

/// Everything forward keeps for backward, and backward's scratch, for one (B, T), on the device.
/// Allocated once per shape. With activation checkpointing (`DeviceActivations::with_checkpointing`)
/// the per-layer buffers hold one layer, the one being computed, and `backward` recomputes each
/// layer from the residual stream entering it (as `cpu::Activations::with_checkpointing`).
pub struct DeviceActivations {
    /// Sequences.
    pub b: usize,
    /// Tokens per sequence.
    pub t: usize,
    /// Residual stream entering each layer and leaving the last [(L+1), N, C], f32.
    x: DeviceBuffer<f32>,
    /// Residual stream between attention and MLP [L, N, C] (checkpointed: [1, N, C], as every
    /// per-layer buffer below).
    x_mid: DeviceBuffer<f32>,
    /// Norm outputs [L, N, C] (bf16 GEMM operands) and 1/rms [L, N].
    ln1: DeviceBuffer<bf16>,
    rstd1: DeviceBuffer<f32>,
    ln2: DeviceBuffer<bf16>,
    rstd2: DeviceBuffer<f32>,
    /// q|k|v after RoPE [L, N, QKV], f32.
    qkv: DeviceBuffer<f32>,
    /// Attention output [L, N, QD]: f32 (backward's delta) and bf16 (o_proj operand).
    atty: DeviceBuffer<f32>,
    atty_bf16: DeviceBuffer<bf16>,
    /// Log-sum-exp of each query's scores [L, B, NH, T]: all flash backward keeps.
    lse: DeviceBuffer<f32>,
    /// gate|up [L, N, 2I] f32 and silu(gate)⊙up [L, N, I] bf16.
    gu: DeviceBuffer<f32>,
    h: DeviceBuffer<bf16>,
    /// Final norm output [N, C] (the head's operand) and 1/rms [N].
    xf: DeviceBuffer<bf16>,
    rstdf: DeviceBuffer<f32>,
    /// A projection's output before its residual add [N, C].
    proj: DeviceBuffer<f32>,
    /// Token ids of the last forward pass, on the host (embedding backward groups them by id).
    ids_host: Vec<u32>,
    /// Token ids, head targets, positions and segment starts [N].
    ids: DeviceBuffer<u32>,
    targets: DeviceBuffer<u32>,
    positions: DeviceBuffer<u32>,
    seg_start: DeviceBuffer<u32>,
    /// The shared prompt each token also attends to, [start, end) row positions [N each]: read
    /// by the attention kernels only while `shared` (a layout with shared prompts is set).
    shared_start: DeviceBuffer<u32>,
    shared_end: DeviceBuffer<u32>,
    shared: bool,
    /// Whether the per-layer buffers hold one layer (activation checkpointing).
    checkpointed: bool,
    /// Gradient scratch, f32, with bf16 copies of those that are GEMM operands.
    dres: DeviceBuffer<f32>,
    dres_bf16: DeviceBuffer<bf16>,
    dxf: DeviceBuffer<f32>,
    dln: DeviceBuffer<f32>,
    dqkv: DeviceBuffer<f32>,
    dqkv_bf16: DeviceBuffer<bf16>,
    datty: DeviceBuffer<f32>,
    delta: DeviceBuffer<f32>,
    dgu: DeviceBuffer<f32>,
    dgu_bf16: DeviceBuffer<bf16>,
    dh: DeviceBuffer<f32>,
    /// The head's chunk: logits [R, V] f32, their gradient bf16, per-row statistics [R].
    logits: DeviceBuffer<f32>,
    dlogits: DeviceBuffer<bf16>,
    row_lse: DeviceBuffer<f32>,
    /// log p | entropy per row [2, R]: one download per chunk.
    row_stats: DeviceBuffer<f32>,
    /// d loss / d log p | d loss / d entropy per row [2, R]: one upload per chunk.
    row_dstats: DeviceBuffer<f32>,
    /// Rows per head chunk.
    head_rows: usize,
}

impl DeviceActivations {
    /// Plans the arena for `b` sequences of `t` tokens of `model`.
    pub fn new(
        be: &CudaBackend,
        model: &DeviceModel,
        b: usize,
        t: usize,
    ) -> Result<Self, CudaError> {
        Self::with_checkpointing(be, model, b, t, false)
    }

    /// [`DeviceActivations::new`] with activation checkpointing on or off. On, the arena keeps
    /// the residual stream entering each layer ((L+1)·N·C floats) and one layer's intermediates
    /// (x_mid, norms, q|k|v, attention output and lse, gate|up, MLP hidden) instead of L layers';
    /// `backward` recomputes each layer's forward before its backward: one more forward pass of
    /// compute, the same ops on the same inputs.
    pub fn with_checkpointing(
        be: &CudaBackend,
        model: &DeviceModel,
        b: usize,
        t: usize,
        checkpointed: bool,
    ) -> Result<Self, CudaError> {
        if t > model.max_positions() {
            return Err(CudaError::Input(format!(
                "{t} tokens per sequence, but the model was uploaded for {} positions",
                model.max_positions()
            )));
        }
        let cfg = &model.config;
        let (n, c, layers) = (b * t, cfg.hidden_size, cfg.num_layers);
        // Layers the per-layer buffers hold.
        let l = if checkpointed { 1 } else { layers };
        let (qkv, qd, i, v) = (
            cfg.qkv_dim(),
            cfg.q_dim(),
            cfg.intermediate_size,
            cfg.vocab_size,
        );
        let head_rows = (GPU_HEAD_CHUNK_FLOATS / v).clamp(1, n.max(1));
        let positions: Vec<u32> = (0..b).flat_map(|_| 0..t as u32).collect();
        Ok(DeviceActivations {
            b,
            t,
            x: be.alloc((layers + 1) * n * c)?,
            x_mid: be.alloc(l * n * c)?,
            ln1: be.alloc(l * n * c)?,
            rstd1: be.alloc(l * n)?,
            ln2: be.alloc(l * n * c)?,
            rstd2: be.alloc(l * n)?,
            qkv: be.alloc(l * n * qkv)?,
            atty: be.alloc(l * n * qd)?,
            atty_bf16: be.alloc(l * n * qd)?,
            lse: be.alloc(l * b * cfg.num_heads * t)?,
            gu: be.alloc(l * n * 2 * i)?,
            h: be.alloc(l * n * i)?,
            xf: be.alloc(n * c)?,
            rstdf: be.alloc(n)?,
            proj: be.alloc(n * c)?,
            ids_host: Vec::new(),
            ids: be.alloc(n)?,
            targets: be.alloc(n)?,
            positions: be.upload(&positions)?,
            seg_start: be.zeros(n)?,
            shared_start: be.zeros(n)?,
            shared_end: be.zeros(n)?,
            shared: false,
            checkpointed,
            dres: be.alloc(n * c)?,
            dres_bf16: be.alloc(n * c)?,
            dxf: be.zeros(n * c)?,
            dln: be.alloc(n * c)?,
            dqkv: be.alloc(n * qkv)?,
            dqkv_bf16: be.alloc(n * qkv)?,
            datty: be.alloc(n * qd)?,
            delta: be.alloc(b * cfg.num_heads * t)?,
            dgu: be.alloc(n * 2 * i)?,
            dgu_bf16: be.alloc(n * 2 * i)?,
            dh: be.alloc(n * i)?,
            logits: be.alloc(head_rows * v)?,
            dlogits: be.alloc(head_rows * v)?,
            row_lse: be.alloc(head_rows)?,
            row_stats: be.alloc(2 * head_rows)?,
            row_dstats: be.alloc(2 * head_rows)?,
            head_rows,
        })
    }

    /// Tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.b * self.t
    }

    /// Rows of the batch the head takes per chunk.
    pub fn head_chunk_rows(&self) -> usize {
        self.head_rows
    }

    /// Makes the head take at most `rows` (≥ 1) rows per chunk, below what the arena holds: the
    /// chunked path with a small vocabulary (tests), or a smaller logits peak.
    pub fn limit_head_chunk_rows(&mut self, rows: usize) {
        self.head_rows = rows.clamp(1, self.head_rows);
    }

    /// Packs several sequences into each row, as `cpu::Activations::set_segments`.
    pub fn set_segments(
        &mut self,
        be: &CudaBackend,
        segments: &[Vec<usize>],
    ) -> Result<(), CudaError> {
        let (positions, starts) = segment_layout(self.b, self.t, segments)?;
        self.shared = false;
        be.copy_to_device(&self.positions, 0, &positions)?;
        be.copy_to_device(&self.seg_start, 0, &starts)
    }

    /// Lays out rows of groups that share a prompt, as `cpu::Activations::set_layout`
    /// ([`shared_layout`]): each branch is computed as if it followed its prompt in a row of its
    /// own. An empty list restores one sequence per row.
    pub fn set_layout(
        &mut self,
        be: &CudaBackend,
        rows: &[Vec<SharedGroup>],
    ) -> Result<(), CudaError> {
        let layout = shared_layout(self.b, self.t, rows)?;
        // Off until the tables are all written: a failed copy leaves no half-shared layout.
        self.shared = false;
        be.copy_to_device(&self.positions, 0, &layout.positions)?;
        be.copy_to_device(&self.seg_start, 0, &layout.seg_start)?;
        if let Some((starts, ends)) = &layout.shared {
            be.copy_to_device(&self.shared_start, 0, starts)?;
            be.copy_to_device(&self.shared_end, 0, ends)?;
            self.shared = true;
        }
        Ok(())
    }

    /// Whether the arena checkpoints activations ([`DeviceActivations::with_checkpointing`]).
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

    /// The keys each token attends to, as the attention kernels take them.
    fn windows(&self) -> AttnWindows {
        AttnWindows {
            seg_start: self.seg_start.ptr(),
            shared: self
                .shared
                .then(|| (self.shared_start.ptr(), self.shared_end.ptr())),
        }
    }

    /// The final hidden states [N, C] (bf16 widened to f32) of the last forward pass.
    pub fn hidden(&self, be: &CudaBackend) -> Result<Vec<f32>, CudaError> {
        Ok(be.download(&self.xf)?.into_iter().map(f32::from).collect())
    }

    /// q|k|v after RoPE of layer `l` from the last forward pass [N, QKV] (f32, device): what a
    /// sampler copies into its KV cache after a prefill. A checkpointed arena holds one layer's
    /// (the last computed): `l` is then read as 0.
    pub fn layer_qkv_ptr(&self, l: usize, qkv_dim: usize) -> u64 {
        self.qkv.at(self.slot(l) * self.tokens() * qkv_dim)
    }
}

fn check_ids(
    cfg: &ModelConfig,
    acts: &DeviceActivations,
    ids: &[u32],
    what: &str,
) -> Result<(), CudaError> {
    if ids.len() != acts.tokens() {
        return Err(CudaError::Input(format!(
            "{what}: {} ids for an arena of {}x{} tokens",
            ids.len(),
            acts.b,
            acts.t
        )));
    }
    let v = cfg.vocab_size;
    if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
        return Err(CudaError::Input(format!(
            "{what}: token id {bad} at position {i} is outside the vocabulary of {v}"
        )));
    }
    Ok(())
}

fn attn_shape(cfg: &ModelConfig, acts: &DeviceActivations) -> AttnShape {
    AttnShape {
        b: acts.b,
        t: acts.t,
        nh: cfg.num_heads,
        nkv: cfg.num_kv_heads,
        hs: cfg.head_dim,
    }
}

/// Runs the transformer over `ids` [B, T] and leaves the final hidden states (bf16) in the arena,
/// with everything `backward` needs (with activation checkpointing, the residual stream entering
/// each layer; `backward` recomputes the rest).
pub fn forward(
    be: &CudaBackend,
    model: &DeviceModel,
    acts: &mut DeviceActivations,
    ids: &[u32],
) -> Result<(), CudaError> {
    let cfg = &model.config;
    check_ids(cfg, acts, ids, "forward")?;
    be.copy_to_device(&acts.ids, 0, ids)?;
    acts.ids_host.clear();
    acts.ids_host.extend_from_slice(ids);
    let lay = &model.layout;
    let (n, c) = (acts.tokens(), cfg.hidden_size);
    let eps = cfg.rms_norm_eps as f32;

    ops::embedding_forward(be, acts.x.ptr(), acts.ids.ptr(), model.w(lay.embed), n, c)?;
    for l in 0..cfg.num_layers {
        layer_forward(be, model, acts, l)?;
    }
    let l = cfg.num_layers;
    ops::rmsnorm_forward(
        be,
        acts.xf.ptr(),
        acts.rstdf.ptr(),
        acts.x.at(l * n * c),
        model.w(lay.final_norm),
        n,
        c,
        eps,
    )
}

/// Layer `l` from the residual stream entering it (`x[l]`) to the one leaving it (`x[l + 1]`),
/// its intermediates kept in the arena's slot for `l` (the one slot when checkpointed).
fn layer_forward(
    be: &CudaBackend,
    model: &DeviceModel,
    acts: &DeviceActivations,
    l: usize,
) -> Result<(), CudaError> {
    let cfg = &model.config;
    let o = &model.layout.layers[l];
    let (n, c, qkv_w, qd, i) = (
        acts.tokens(),
        cfg.hidden_size,
        cfg.qkv_dim(),
        cfg.q_dim(),
        cfg.intermediate_size,
    );
    let heads = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let shape = attn_shape(cfg, acts);
    let eps = cfg.rms_norm_eps as f32;
    let lse_len = acts.b * cfg.num_heads * acts.t;
    let k = acts.slot(l);

    let x = acts.x.at(l * n * c);
    let x_out = acts.x.at((l + 1) * n * c);
    let x_mid = acts.x_mid.at(k * n * c);
    let ln1 = acts.ln1.at(k * n * c);
    let qkv = acts.qkv.at(k * n * qkv_w);
    let atty = acts.atty.at(k * n * qd);
    let atty_bf16 = acts.atty_bf16.at(k * n * qd);
    let lse = acts.lse.at(k * lse_len);
    let ln2 = acts.ln2.at(k * n * c);
    let gu = acts.gu.at(k * n * 2 * i);
    let h = acts.h.at(k * n * i);

    ops::rmsnorm_forward(be, ln1, acts.rstd1.at(k * n), x, model.w(o.ln1), n, c, eps)?;
    let bias = o.qkv_b.map(|b| model.w(b));
    ops::matmul_forward(be, qkv, ln1, model.w(o.qkv_w), bias, n, c, qkv_w, false)?;
    ops::rope_forward(be, qkv, acts.positions.ptr(), model.rope_tables(), n, heads)?;
    ops::attention_forward_windows(
        be,
        atty,
        lse,
        qkv,
        acts.windows(),
        shape,
        ops::TrainAttention::from_env(),
    )?;
    ops::cast_to_bf16(be, atty_bf16, atty, n * qd)?;
    ops::matmul_forward(
        be,
        acts.proj.ptr(),
        atty_bf16,
        model.w(o.o_w),
        None,
        n,
        qd,
        c,
        false,
    )?;
    ops::residual_forward(be, x_mid, x, acts.proj.ptr(), n * c)?;

    ops::rmsnorm_forward(
        be,
        ln2,
        acts.rstd2.at(k * n),
        x_mid,
        model.w(o.ln2),
        n,
        c,
        eps,
    )?;
    ops::matmul_forward(be, gu, ln2, model.w(o.gate_up_w), None, n, c, 2 * i, false)?;
    ops::swiglu_forward(be, h, gu, n, i)?;
    ops::matmul_forward(
        be,
        acts.proj.ptr(),
        h,
        model.w(o.down_w),
        None,
        n,
        i,
        c,
        false,
    )?;
    ops::residual_forward(be, x_out, x_mid, acts.proj.ptr(), n * c)
}

/// The fused classifier over the last forward pass (as `cpu::head`): per-token log p(target)
/// and entropy from the LM head a chunk of tokens at a time; with `objective` and `grads`, the
/// objective's d/d hidden kept for `backward` and d/d LM-head weight accumulated into the model's
/// gradients. The objective runs on the host on each chunk's per-token statistics.
pub fn head(
    be: &CudaBackend,
    model: &DeviceModel,
    acts: &mut DeviceActivations,
    targets: &[u32],
    objective: Option<&dyn TokenObjective>,
    grads: bool,
    want_entropy: bool,
) -> Result<HeadOutput, CudaError> {
    let cfg = &model.config;
    check_ids(cfg, acts, targets, "head targets")?;
    if grads {
        model.check_trainable()?;
    }
    be.copy_to_device(&acts.targets, 0, targets)?;
    let (n, c, v) = (acts.tokens(), cfg.hidden_size, cfg.vocab_size);
    let w = model.w(model.layout.lm_head);
    let dw = if grads {
        model.g(model.layout.lm_head)
    } else {
        0
    };
    be.memset_zero(&acts.dxf)?;
    let entropy_needed = want_entropy || objective.is_some_and(|o| o.uses_entropy());
    let mut out = HeadOutput {
        logp: vec![0.0; n],
        entropy: if entropy_needed {
            vec![0.0; n]
        } else {
            Vec::new()
        },
        loss: 0.0,
    };
    let hr = acts.head_rows;
    // Host copies of row_stats and row_dstats: log p | entropy, d log p | d entropy.
    let mut stats = vec![0.0f32; 2 * hr];
    let mut dstats = vec![0.0f32; 2 * hr];
    let mut start = 0;
    while start < n {
        let rows = acts.head_rows.min(n - start);
        // logits[rows, V] = xf[start.., C] · Wᵀ
        ops::matmul_forward(
            be,
            acts.logits.ptr(),
            acts.xf.at(start * c),
            w,
            None,
            rows,
            c,
            v,
            false,
        )?;
        ops::classifier_stats(
            be,
            acts.row_lse.ptr(),
            acts.row_stats.ptr(),
            acts.row_stats.at(hr),
            acts.logits.ptr(),
            acts.targets.at(start),
            rows,
            v,
        )?;
        // One download (one host sync) per chunk: the whole [2, R] block, rows used.
        be.copy_to_host(&mut stats, &acts.row_stats, 0)?;
        let (logp, entropy) = stats.split_at(hr);
        out.logp[start..start + rows].copy_from_slice(&logp[..rows]);
        if entropy_needed {
            out.entropy[start..start + rows].copy_from_slice(&entropy[..rows]);
        }
        let Some(objective) = objective else {
            start += rows;
            continue;
        };
        let mut any = false;
        for r in 0..rows {
            let tl = objective.token(start + r, logp[r], entropy[r]);
            out.loss += tl.loss;
            dstats[r] = tl.d_logp;
            dstats[hr + r] = tl.d_entropy;
            any |= tl.d_logp != 0.0 || tl.d_entropy != 0.0;
        }
        if grads && any {
            // One upload per chunk (rows past `rows` are never read).
            be.copy_to_device(&acts.row_dstats, 0, &dstats)?;
            ops::classifier_grad(
                be,
                acts.dlogits.ptr(),
                acts.logits.ptr(),
                acts.targets.at(start),
                (acts.row_lse.ptr(), acts.row_stats.at(hr)),
                (acts.row_dstats.ptr(), acts.row_dstats.at(hr)),
                rows,
                v,
            )?;
            // dxf[rows, C] += dlogits[rows, V] · W[V, C]
            be.gemm_bf16(
                acts.dxf.at(start * c),
                acts.dlogits.ptr(),
                w,
                (rows, c, v),
                false,
                false,
                1.0,
                1.0,
            )?;
            // dW[V, C] += dlogitsᵀ · xf[rows, C]
            be.gemm_bf16(
                dw,
                acts.dlogits.ptr(),
                acts.xf.at(start * c),
                (v, c, rows),
                true,
                false,
                1.0,
                1.0,
            )?;
        }
        start += rows;
    }
    Ok(out)
}

/// Logits [N, V] of the last forward pass (materialised: for tests and small vocabularies).
pub fn logits(
    be: &CudaBackend,
    model: &DeviceModel,
    acts: &DeviceActivations,
) -> Result<Vec<f32>, CudaError> {
    let cfg = &model.config;
    let (n, c, v) = (acts.tokens(), cfg.hidden_size, cfg.vocab_size);
    let out = be.alloc::<f32>(n * v)?;
    ops::matmul_forward(
        be,
        out.ptr(),
        acts.xf.ptr(),
        model.w(model.layout.lm_head),
        None,
        n,
        c,
        v,
        false,
    )?;
    be.download(&out)
}

/// The reward model's scalar head over the last forward pass (as `train::reward_forward`):
/// r_b = score · xf[b, positions[b]], with `score` the offset of `score.weight` [C] in the
/// model's layout (`RewardModel::score`). bf16 operands, f32 sums.
pub fn reward_head(
    be: &CudaBackend,
    model: &DeviceModel,
    acts: &DeviceActivations,
    score: usize,
    positions: &[usize],
) -> Result<Vec<f32>, CudaError> {
    let rows = reward_rows(model, acts, score, positions)?;
    let b = positions.len();
    let c = model.config.hidden_size;
    let d_rows = be.scratch_u32(b)?;
    be.copy_to_scratch(d_rows, &rows)?;
    let out = be.scratch_f32(b)?;
    be.launch(
        ("classifier", "reward_scores"),
        (b as u32, 1, 1),
        256,
        &[
            Arg::Ptr(out),
            Arg::Ptr(acts.xf.ptr()),
            Arg::Ptr(model.w(score)),
            Arg::Ptr(d_rows),
            Arg::int(b)?,
            Arg::int(c)?,
        ],
    )?;
    let mut rewards = vec![0.0f32; b];
    be.copy_from_scratch(&mut rewards, out)?;
    Ok(rewards)
}

/// The backward of `reward_head` given d loss / d r_b: d score accumulated into the model's
/// gradients, d hidden left in the arena for `backward` (as `train::reward_backward` before its
/// `cpu::backward`).
pub fn reward_head_backward(
    be: &CudaBackend,
    model: &DeviceModel,
    acts: &mut DeviceActivations,
    score: usize,
    positions: &[usize],
    d_rewards: &[f32],
) -> Result<(), CudaError> {
    model.check_trainable()?;
    let rows = reward_rows(model, acts, score, positions)?;
    let b = positions.len();
    if d_rewards.len() != b {
        return Err(CudaError::Input(format!(
            "reward backward: {} reward gradients for {b} sequences",
            d_rewards.len()
        )));
    }
    let c = model.config.hidden_size;
    be.memset_zero(&acts.dxf)?;
    let d_rows = be.scratch_u32(b)?;
    be.copy_to_scratch(d_rows, &rows)?;
    let d_d = be.scratch_f32(b)?;
    be.copy_to_scratch(d_d, d_rewards)?;
    be.launch_1d(
        ("classifier", "reward_scores_backward"),
        c,
        &[
            Arg::Ptr(acts.dxf.ptr()),
            Arg::Ptr(model.g(score)),
            Arg::Ptr(acts.xf.ptr()),
            Arg::Ptr(model.w(score)),
            Arg::Ptr(d_rows),
            Arg::Ptr(d_d),
            Arg::int(b)?,
            Arg::int(c)?,
        ],
    )
}

/// Rows of the arena scored for each sequence, after checking the positions and the score slot.
fn reward_rows(
    model: &DeviceModel,
    acts: &DeviceActivations,
    score: usize,
    positions: &[usize],
) -> Result<Vec<u32>, CudaError> {
    let c = model.config.hidden_size;
    if score + c > model.layout.total {
        return Err(CudaError::Input(format!(
            "reward head: score.weight at {score} (+{c}) is outside the {} parameters",
            model.layout.total
        )));
    }
    if positions.len() != acts.b {
        return Err(CudaError::Input(format!(
            "reward head: {} positions for a batch of {}",
            positions.len(),
            acts.b
        )));
    }
    if let Some((b, &p)) = positions.iter().enumerate().find(|(_, &p)| p >= acts.t) {
        return Err(CudaError::Input(format!(
            "reward head: position {p} of sequence {b} is outside {} tokens",
            acts.t
        )));
    }
    Ok(positions
        .iter()
        .enumerate()
        .map(|(b, &p)| (b * acts.t + p) as u32)
        .collect())
}

/// Backpropagates the gradient `head` left in the arena through the transformer, accumulating
/// every parameter's gradient into the model's gradient buffer.
pub fn backward(
    be: &CudaBackend,
    model: &DeviceModel,
    acts: &mut DeviceActivations,
) -> Result<(), CudaError> {
    model.check_trainable()?;
    let cfg = &model.config;
    let lay = &model.layout;
    let (n, c, qkv_w, qd, i) = (
        acts.tokens(),
        cfg.hidden_size,
        cfg.qkv_dim(),
        cfg.q_dim(),
        cfg.intermediate_size,
    );
    let heads = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let shape = attn_shape(cfg, acts);
    let lse_len = acts.b * cfg.num_heads * acts.t;
    let l_count = cfg.num_layers;
    let (dres, dres_bf16) = (acts.dres.ptr(), acts.dres_bf16.ptr());

    be.memset_zero(&acts.dres)?;
    ops::rmsnorm_backward(
        be,
        dres,
        model.g(lay.final_norm),
        acts.dxf.ptr(),
        acts.x.at(l_count * n * c),
        model.w(lay.final_norm),
        acts.rstdf.ptr(),
        n,
        c,
    )?;
    if acts.ids_host.len() != n {
        return Err(CudaError::Input("backward before forward".into()));
    }
    let windows = acts.windows();
    for (l, o) in lay.layers.iter().enumerate().rev() {
        let k = acts.slot(l);
        if acts.checkpointed {
            // Only the residual stream entering the layer was kept: its intermediates again,
            // the same ops on the same inputs.
            layer_forward(be, model, acts, l)?;
        }
        let x = acts.x.at(l * n * c);
        let x_mid = acts.x_mid.at(k * n * c);
        let ln1 = acts.ln1.at(k * n * c);
        let qkv = acts.qkv.at(k * n * qkv_w);
        let atty = acts.atty.at(k * n * qd);
        let atty_bf16 = acts.atty_bf16.at(k * n * qd);
        let lse = acts.lse.at(k * lse_len);
        let ln2 = acts.ln2.at(k * n * c);
        let gu = acts.gu.at(k * n * 2 * i);
        let h = acts.h.at(k * n * i);

        // MLP: dres holds d x_out, which is also d x_mid through the residual.
        ops::cast_to_bf16(be, dres_bf16, dres, n * c)?;
        be.memset_zero(&acts.dh)?;
        ops::matmul_backward(
            be,
            acts.dh.ptr(),
            model.g(o.down_w),
            None,
            dres_bf16,
            dres,
            h,
            model.w(o.down_w),
            n,
            i,
            c,
        )?;
        be.memset_zero(&acts.dgu)?;
        ops::swiglu_backward(be, acts.dgu.ptr(), acts.dh.ptr(), gu, n, i)?;
        ops::cast_to_bf16(be, acts.dgu_bf16.ptr(), acts.dgu.ptr(), n * 2 * i)?;
        be.memset_zero(&acts.dln)?;
        ops::matmul_backward(
            be,
            acts.dln.ptr(),
            model.g(o.gate_up_w),
            None,
            acts.dgu_bf16.ptr(),
            acts.dgu.ptr(),
            ln2,
            model.w(o.gate_up_w),
            n,
            c,
            2 * i,
        )?;
        ops::rmsnorm_backward(
            be,
            dres,
            model.g(o.ln2),
            acts.dln.ptr(),
            x_mid,
            model.w(o.ln2),
            acts.rstd2.at(k * n),
            n,
            c,
        )?;

        // Attention: dres now holds d x_mid.
        ops::cast_to_bf16(be, dres_bf16, dres, n * c)?;
        be.memset_zero(&acts.datty)?;
        ops::matmul_backward(
            be,
            acts.datty.ptr(),
            model.g(o.o_w),
            None,
            dres_bf16,
            dres,
            atty_bf16,
            model.w(o.o_w),
            n,
            qd,
            c,
        )?;
        be.memset_zero(&acts.dqkv)?;
        ops::attention_backward_windows(
            be,
            acts.dqkv.ptr(),
            acts.delta.ptr(),
            acts.datty.ptr(),
            atty,
            qkv,
            lse,
            windows,
            shape,
            ops::TrainAttention::from_env(),
        )?;
        ops::rope_backward(
            be,
            acts.dqkv.ptr(),
            acts.positions.ptr(),
            model.rope_tables(),
            n,
            heads,
        )?;
        ops::cast_to_bf16(be, acts.dqkv_bf16.ptr(), acts.dqkv.ptr(), n * qkv_w)?;
        be.memset_zero(&acts.dln)?;
        ops::matmul_backward(
            be,
            acts.dln.ptr(),
            model.g(o.qkv_w),
            o.qkv_b.map(|b| model.g(b)),
            acts.dqkv_bf16.ptr(),
            acts.dqkv.ptr(),
            ln1,
            model.w(o.qkv_w),
            n,
            c,
            qkv_w,
        )?;
        ops::rmsnorm_backward(
            be,
            dres,
            model.g(o.ln1),
            acts.dln.ptr(),
            x,
            model.w(o.ln1),
            acts.rstd1.at(k * n),
            n,
            c,
        )?;
    }
    ops::embedding_backward(be, model.g(lay.embed), dres, &acts.ids_host, c)
}

/// Refuses what the CUDA kernels do not compute, before anything is uploaded: Qwen3's per-head
/// q/k RMSNorm has no kernel here, and running a Qwen3 without it would silently give another
/// model's outputs (the CPU backend runs it). `DeviceDecoder` needs an uploaded model, so this
/// covers decoding too.
pub(crate) fn refuse_unsupported(cfg: &ModelConfig) -> Result<(), CudaError> {
    if cfg.qk_norm() {
        return Err(CudaError::Input(format!(
            "{} (per-head q/k RMSNorm) is not implemented by the CUDA backend; use the CPU backend",
            cfg.architecture.hf_name()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Architecture, RopeScaling};

    #[test]
    fn qwen3_is_refused_with_a_clear_error_and_the_others_pass() {
        let mut cfg = ModelConfig::from_json(
            &serde_json::json!({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 8,
                "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                "head_dim": 8, "vocab_size": 11}),
            std::path::Path::new("config.json"),
        )
        .unwrap();
        let message = refuse_unsupported(&cfg).unwrap_err().to_string();
        assert!(
            message.contains("Qwen3ForCausalLM") && message.contains("q/k RMSNorm"),
            "{message}"
        );
        cfg.architecture = Architecture::Llama;
        assert!(refuse_unsupported(&cfg).is_ok());
    }

    #[test]
    fn adamw_runs_cover_every_parameter_once_and_split_at_decay_changes() {
        let cfg = ModelConfig {
            architecture: Architecture::Qwen2,
            hidden_size: 8,
            intermediate_size: 16,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            vocab_size: 11,
            rms_norm_eps: 1e-6,
            rope_theta: 1e4,
            rope_scaling: RopeScaling::None,
            attention_bias: true,
            tie_word_embeddings: false,
            max_position_embeddings: 16,
            eos_token_ids: vec![],
            bos_token_id: None,
        };
        let layout = ParamLayout::new(&cfg);
        let runs = decay_runs(&layout);
        let mut at = 0;
        for (i, &(start, len, decays)) in runs.iter().enumerate() {
            assert_eq!(start, at, "runs are contiguous");
            at += len;
            if i > 0 {
                assert_ne!(decays, runs[i - 1].2, "adjacent runs differ in decay");
            }
            for slot in layout
                .slots
                .iter()
                .filter(|s| s.offset >= start && s.offset < start + len)
            {
                assert_eq!(slot.decays(), decays, "{}", slot.name);
            }
        }
        assert_eq!(at, layout.total);
    }

    #[test]
    fn packed_segments_restart_positions_and_bad_lengths_are_refused() {
        let (pos, starts) = segment_layout(2, 5, &[vec![2, 2], vec![5]]).unwrap();
        assert_eq!(pos, vec![0, 1, 0, 1, 0, 0, 1, 2, 3, 4]);
        assert_eq!(starts, vec![0, 0, 2, 2, 4, 0, 0, 0, 0, 0]);
        let (pos, starts) = segment_layout(1, 3, &[]).unwrap();
        assert_eq!((pos, starts), (vec![0, 1, 2], vec![0, 0, 0]));
        assert!(segment_layout(2, 5, &[vec![6], vec![1]]).is_err());
        assert!(segment_layout(2, 5, &[vec![0], vec![1]]).is_err());
        assert!(segment_layout(2, 5, &[vec![1]]).is_err());
    }
}
