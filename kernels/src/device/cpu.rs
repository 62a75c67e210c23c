//! The device layer on the CPU: `cpu::*` call for call. Training computes on the host `Model`
//! in place with one activation arena shared by both roles (planned per (B, T), as the learners
//! did before the device layer), gradients in a flat host buffer, AdamW on the host; decoding
//! is `cpu::decode_step` with `sample::pick`. The results are the bits of the direct calls.

use crate::cpu::{self, Activations, DecodeScratch, KvCache, SharedGroup};
use crate::error::{EngineError, Result};
use crate::model::limits::{try_zeroed, MemoryPlan};
use crate::model::{Model, RewardModel};
use crate::sample::{pick, Pick};
use crate::train::adamw::{clip_grad_norm, AdamW};
use crate::train::head::{HeadOutput, TokenObjective};
use crate::train::reward::{reward_backward, reward_forward};

use super::backend::{DecodeEngine, Draw, ModelRole, PrefixState, PromptPrefix, TrainEngine};
use super::{Device, Precision};
use crate::alloc::MemoryPart;

/// Prompt tokens per prefill pass: bounds the scratch (attention scores grow with rows × context).
pub const PREFILL_ROWS: usize = 256;

/// Training on the CPU: the arena and the gradients; the weights are the caller's host model.
pub struct CpuTrainEngine {
    /// Activations of the last forward pass, re-planned only when (B, T) changes.
    acts: Option<Activations>,
    /// Whether the arena holds a packed layout (so an unpacked batch must reset it).
    packed: bool,
    /// Gradients in the model's flat layout (empty when not trainable).
    grads: Vec<f32>,
    /// Activation checkpointing for the arenas it plans.
    checkpointing: bool,
}

impl CpuTrainEngine {
    /// An engine for `model`; `trainable` allocates the gradients (fallibly: an error names the
    /// buffer and its size rather than aborting the process).
    pub fn try_new(model: &Model, trainable: bool) -> Result<Self> {
        let grads = if trainable {
            try_zeroed(model.layout.total, "the gradients")?
        } else {
            Vec::new()
        };
        Ok(CpuTrainEngine {
            acts: None,
            packed: false,
            grads,
            checkpointing: false,
        })
    }

    /// [`CpuTrainEngine::try_new`] for callers that abort on allocation failure anyway.
    pub fn new(model: &Model, trainable: bool) -> Self {
        CpuTrainEngine {
            acts: None,
            packed: false,
            grads: if trainable {
                crate::alloc::zeroed_f32(model.layout.total)
            } else {
                Vec::new()
            },
            checkpointing: false,
        }
    }

    fn arena(&mut self, model: &Model, b: usize, t: usize) -> &mut Activations {
        match &mut self.acts {
            Some(a) if a.b == b && a.t == t => {}
            // A learner's arena is reused at its new shape: its buffers are all touched by
            // every step (backward included), so keeping them costs no memory it would not use.
            Some(a) if !self.grads.is_empty() => {
                a.reshape(model, b, t);
                self.packed = false;
            }
            _ => {
                self.acts = None;
                self.acts = Some(Activations::with_checkpointing(
                    model,
                    b,
                    t,
                    self.checkpointing,
                ));
                self.packed = false;
            }
        }
        self.acts.as_mut().expect("arena was just planned")
    }

    /// Plans the arena for (b, t) and lays it out with `lay` (which says whether the layout is
    /// other than one sequence per row). The arena counts as laid out until `lay` succeeds: a
    /// refused layout may be half-written, and the next plain batch must reset it.
    fn laid_out(
        &mut self,
        model: &Model,
        (b, t): (usize, usize),
        lay: impl FnOnce(&mut Activations) -> Result<bool>,
    ) -> Result<()> {
        self.arena(model, b, t);
        self.packed = true;
        let acts = self.acts.as_mut().expect("arena was just planned");
        self.packed = lay(acts)?;
        Ok(())
    }

    fn trainable(&self, what: &str) -> Result<()> {
        if self.grads.is_empty() {
            return Err(EngineError::Input(format!(
                "{what}: this engine was opened for inference only (no gradients)"
            )));
        }
        Ok(())
    }

    fn check_len(&self, what: &str, len: usize) -> Result<()> {
        self.trainable(what)?;
        if len != self.grads.len() {
            return Err(EngineError::Input(format!(
                "{what}: {len} floats for {} gradients",
                self.grads.len()
            )));
        }
        Ok(())
    }
}

impl TrainEngine for CpuTrainEngine {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn upload(&mut self, _role: ModelRole, _model: &Model) -> Result<()> {
        Ok(())
    }

    fn forward(
        &mut self,
        _role: ModelRole,
        model: &Model,
        (b, t): (usize, usize),
        segments: &[Vec<usize>],
        ids: &[u32],
    ) -> Result<()> {
        let reset = self.packed || !segments.is_empty();
        self.laid_out(model, (b, t), |acts| {
            if reset {
                acts.set_segments(segments)?;
            }
            Ok(!segments.is_empty())
        })?;
        let acts = self.acts.as_mut().expect("arena was just planned");
        cpu::forward(model, acts, ids)
    }

    fn set_activation_checkpointing(&mut self, on: bool) -> Result<()> {
        if on != self.checkpointing {
            // The next forward plans an arena of the other kind.
            self.acts = None;
            self.checkpointing = on;
        }
        Ok(())
    }

    fn shares_prompts(&self) -> bool {
        true
    }

    fn forward_shared(
        &mut self,
        _role: ModelRole,
        model: &Model,
        (b, t): (usize, usize),
        rows: &[Vec<SharedGroup>],
        ids: &[u32],
    ) -> Result<()> {
        self.laid_out(model, (b, t), |acts| acts.set_layout(rows).map(|()| true))?;
        let acts = self.acts.as_mut().expect("arena was just planned");
        cpu::forward(model, acts, ids)
    }

    fn head(
        &mut self,
        _role: ModelRole,
        model: &Model,
        targets: &[u32],
        objective: Option<&dyn TokenObjective>,
        train: bool,
        want_entropy: bool,
    ) -> Result<HeadOutput> {
        if train {
            self.trainable("head")?;
        }
        let acts = self
            .acts
            .as_mut()
            .ok_or_else(|| EngineError::Input("head before any forward pass".into()))?;
        let grads = train.then_some(self.grads.as_mut_slice());
        cpu::head(model, acts, targets, objective, grads, want_entropy)
    }

    fn backward(&mut self, model: &Model, ids: &[u32]) -> Result<()> {
        self.trainable("backward")?;
        let acts = self
            .acts
            .as_mut()
            .ok_or_else(|| EngineError::Input("backward before any forward pass".into()))?;
        cpu::backward(model, acts, ids, &mut self.grads)
    }

    fn reward_forward(
        &mut self,
        _role: ModelRole,
        rm: &RewardModel,
        (b, t): (usize, usize),
        ids: &[u32],
        positions: &[usize],
    ) -> Result<Vec<f32>> {
        let reset = self.packed;
        let acts = self.arena(&rm.model, b, t);
        if reset {
            // An empty layout is always accepted: every row is one sequence again.
            acts.set_segments(&[])?;
        }
        self.packed = false;
        let acts = self.acts.as_mut().expect("arena was just planned");
        reward_forward(rm, acts, ids, positions)
    }

    fn reward_backward(
        &mut self,
        rm: &RewardModel,
        ids: &[u32],
        positions: &[usize],
        d_rewards: &[f32],
    ) -> Result<()> {
        self.trainable("reward backward")?;
        let acts = self
            .acts
            .as_mut()
            .ok_or_else(|| EngineError::Input("reward backward before any forward".into()))?;
        reward_backward(rm, acts, ids, positions, d_rewards, &mut self.grads)
    }

    fn zero_grads(&mut self) -> Result<()> {
        self.grads.fill(0.0);
        Ok(())
    }

    fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        self.trainable("clip_grad_norm")?;
        Ok(clip_grad_norm(&mut self.grads, max_norm))
    }

    fn adamw_step(&mut self, model: &mut Model, optimizer: &mut AdamW, lr: f32) -> Result<()> {
        self.check_len("adamw_step", model.params.len())?;
        if optimizer.m.len() != model.params.len() || optimizer.v.len() != model.params.len() {
            return Err(EngineError::Input(format!(
                "adamw_step: AdamW moments of {} and {} floats for {} parameters",
                optimizer.m.len(),
                optimizer.v.len(),
                model.params.len()
            )));
        }
        optimizer.update(&mut model.params, &self.grads, &model.layout, lr);
        Ok(())
    }

    fn load_optimizer(&mut self, _optimizer: &AdamW) -> Result<()> {
        // `adamw_step` updates the caller's `AdamW` in place: its state is already the one used.
        Ok(())
    }

    fn download_grads(&self, out: &mut [f32]) -> Result<()> {
        self.check_len("download_grads", out.len())?;
        out.copy_from_slice(&self.grads);
        Ok(())
    }

    fn load_grads(&mut self, grads: &[f32]) -> Result<()> {
        self.check_len("load_grads", grads.len())?;
        self.grads.copy_from_slice(grads);
        Ok(())
    }

    fn download_params(&self, _model: &mut Model) -> Result<()> {
        // The CPU engine computes on the host copy: it is already current.
        Ok(())
    }

    fn arena_bytes(&self) -> usize {
        self.acts.as_ref().map_or(0, Activations::bytes)
    }

    fn arena_bytes_for(&self, model: &Model, (b, t): (usize, usize), checkpointed: bool) -> f64 {
        4.0 * cpu::arena_floats(model, b, t, checkpointed) as f64
    }
}

/// Decoding on the CPU: the KV cache and step scratch of `cpu::decode_step`, kept between calls
/// while they are large enough, and the truncation scratch of `pick`.
pub struct CpuDecodeEngine<'m> {
    model: &'m Model,
    /// The sampler's bf16 copy of the weights, when it decodes in bf16; `None` reads the
    /// model's f32 weights in place.
    bf16: Option<cpu::decode::Bf16Weights>,
    /// Cache and scratch, planned together.
    state: Option<(KvCache, DecodeScratch)>,
    /// `pick`'s candidate list (reused).
    order: Vec<u32>,
}

impl<'m> CpuDecodeEngine<'m> {
    /// A decoder for `model`; nothing is allocated before `reserve`.
    pub fn new(model: &'m Model) -> Self {
        CpuDecodeEngine {
            model,
            bf16: None,
            state: None,
            order: Vec::new(),
        }
    }

    /// A decoder reading a bf16 copy of `model`'s weights (rounded to nearest even), made now:
    /// half the bytes per decoding step. The copy is checked against the memory available and
    /// allocated fallibly.
    pub fn bf16(model: &'m Model) -> Result<Self> {
        let copy = cpu::decode::Bf16Weights::new(model)?;
        Ok(CpuDecodeEngine {
            bf16: Some(copy),
            ..Self::new(model)
        })
    }

    /// One `decode_step` on the weights this engine reads.
    fn decode(
        &mut self,
        slots: &[usize],
        tokens: &[u32],
        positions: &[u32],
        logit_rows: Option<&[usize]>,
    ) -> Result<()> {
        let model = self.model;
        let (cache, scratch) = self
            .state
            .as_mut()
            .ok_or_else(|| EngineError::Input("decoding before reserve".into()))?;
        match &self.bf16 {
            Some(weights) => cpu::decode::decode_step_with(
                model, weights, cache, scratch, slots, tokens, positions, logit_rows,
            ),
            None => cpu::decode_step(model, cache, scratch, slots, tokens, positions, logit_rows),
        }
    }

    fn state(&mut self) -> Result<&mut (KvCache, DecodeScratch)> {
        self.state
            .as_mut()
            .ok_or_else(|| EngineError::Input("decoding before reserve".into()))
    }
}

impl DecodeEngine for CpuDecodeEngine<'_> {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn memory_parts(&self) -> Vec<MemoryPart> {
        let mut parts = Vec::new();
        if let Some(copy) = &self.bf16 {
            parts.push(MemoryPart {
                category: "sampler's bf16 weights".into(),
                bytes: copy.bytes(),
            });
        }
        if let Some((cache, scratch)) = &self.state {
            parts.push(MemoryPart {
                category: "KV cache".into(),
                bytes: cache.allocated_bytes(),
            });
            parts.push(MemoryPart {
                category: "decoding buffers".into(),
                bytes: scratch.allocated_bytes(),
            });
        }
        parts
    }

    fn precision(&self) -> Precision {
        if self.bf16.is_some() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    fn reserve(
        &mut self,
        slots: usize,
        max_len: usize,
        _max_prompt: usize,
        sequences: usize,
    ) -> Result<()> {
        if let Some((cache, _)) = &self.state {
            if cache.slots >= slots && cache.max_len >= max_len {
                return Ok(());
            }
        }
        // The old buffers go before the new ones are planned and allocated.
        self.state = None;
        let cfg = &self.model.config;
        let rows = slots.max(PREFILL_ROWS);
        let bookkeeping = sequences as f64
            * std::mem::size_of::<(usize, usize, crate::sample::Completion)>() as f64;
        let mut plan = MemoryPlan::default();
        plan.add("KV cache", KvCache::bytes(cfg, slots, max_len))
            .add("decoding buffers", DecodeScratch::bytes(cfg, rows, max_len))
            .add("bookkeeping", bookkeeping);
        plan.check(&format!(
            "sampling {sequences} sequences of up to {max_len} tokens, {slots} at a time"
        ))?;
        self.state = Some((
            KvCache::new(self.model, slots, max_len)?,
            DecodeScratch::new(self.model, rows, max_len)?,
        ));
        Ok(())
    }

    fn prefill(&mut self, prompts: &[(&[u32], usize)]) -> Result<Vec<PromptPrefix>> {
        let v = self.model.config.vocab_size;
        self.state()?;
        let mut logits: Vec<Vec<f32>> = vec![Vec::new(); prompts.len()];
        // (prompt index, position) of every prompt token, in order, cut into passes.
        let rows: Vec<(usize, usize)> = prompts
            .iter()
            .enumerate()
            .flat_map(|(p, &(ids, _))| (0..ids.len()).map(move |pos| (p, pos)))
            .collect();
        for pass in rows.chunks(PREFILL_ROWS) {
            let slots: Vec<usize> = pass.iter().map(|&(p, _)| prompts[p].1).collect();
            let tokens: Vec<u32> = pass.iter().map(|&(p, pos)| prompts[p].0[pos]).collect();
            let positions: Vec<u32> = pass.iter().map(|&(_, pos)| pos as u32).collect();
            let last: Vec<usize> = (0..pass.len())
                .filter(|&r| pass[r].1 + 1 == prompts[pass[r].0].0.len())
                .collect();
            self.decode(&slots, &tokens, &positions, Some(&last))?;
            let (_, scratch) = self.state()?;
            for (k, &r) in last.iter().enumerate() {
                logits[pass[r].0] = scratch.logits[k * v..(k + 1) * v].to_vec();
            }
        }
        let (cache, _) = self.state()?;
        Ok(prompts
            .iter()
            .zip(logits)
            .map(|(&(ids, slot), logits)| PromptPrefix {
                len: ids.len(),
                state: PrefixState::Host {
                    logits,
                    kv: cache.read_prefix(slot, ids.len()),
                },
            })
            .collect())
    }

    fn admit(&mut self, prefix: &PromptPrefix, slot: usize, draw: Draw<'_>) -> Result<Pick> {
        let PrefixState::Host { logits, kv } = &prefix.state else {
            return Err(EngineError::Input(
                "admit: the prompt was prefilled by another device".into(),
            ));
        };
        let (cache, _) = self.state()?;
        if slot >= cache.slots {
            return Err(EngineError::Input(format!(
                "admit: slot {slot} of a cache of {}",
                cache.slots
            )));
        }
        cache.load_prefix(slot, kv, prefix.len);
        Ok(pick(logits, draw.params, draw.rng, &mut self.order))
    }

    fn step(
        &mut self,
        slots: &[usize],
        tokens: &[u32],
        positions: &[u32],
        draws: &mut [Draw<'_>],
    ) -> Result<Vec<Pick>> {
        let v = self.model.config.vocab_size;
        if draws.len() != tokens.len() {
            return Err(EngineError::Input(format!(
                "decode step: {} draws for {} rows",
                draws.len(),
                tokens.len()
            )));
        }
        self.decode(slots, tokens, positions, None)?;
        let Some((_, scratch)) = self.state.as_ref() else {
            return Err(EngineError::Input("decoding before reserve".into()));
        };
        let order = &mut self.order;
        Ok(draws
            .iter_mut()
            .enumerate()
            .map(|(row, d)| {
                pick(
                    &scratch.logits[row * v..(row + 1) * v],
                    d.params,
                    &mut *d.rng,
                    order,
                )
            })
            .collect())
    }
}
