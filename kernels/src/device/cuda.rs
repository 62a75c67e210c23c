//! The device layer on a CUDA GPU: `cuda::DeviceModel` (bf16 weights, f32 master weights,
//! gradients and AdamW moments on the device) for training, `cuda::DeviceDecoder` (KV cache,
//! decode step, sampling on the device) for generation. Only the CUDA backend's public API is
//! used; what it does not offer would be an `Unsupported` error naming the op, never a CPU
//! fallback.
//!
//! The trained weights and the AdamW moments live on the device between reads: `adamw_step`
//! updates them there and moves nothing over the bus (before, it downloaded 12 bytes per
//! parameter after every minibatch's update — 16 × 6 GB per RL step for a 0.5B model at the
//! default 16 minibatches). Only the host step count follows. The caller downloads the weights
//! when it reads them (`download_params`: the learner once per RL step, for the sampler, the
//! reference refresh and checkpoints) and the moments for a checkpoint (`download_optimizer`,
//! which knows from the step count whether the device holds the newest state).
//! `load_optimizer` uploads any state (moments and step count), so a GPU learner resumes mid-run.
//!
//! On a machine without a driver or without the device, `open` is an error naming the device
//! and the reason; nothing here panics.

use std::collections::HashMap;

use crate::cpu::SharedGroup;
use crate::cuda::{model as cuda_model, DeviceSampling};
use crate::cuda::{CudaBackend, CudaError, DeviceActivations, DeviceDecoder, DeviceModel};
use crate::error::{EngineError, Result};
use crate::model::{Model, RewardModel};
use crate::sample::Pick;
use crate::train::adamw::AdamW;
use crate::train::head::{HeadOutput, TokenObjective};

use super::backend::{DecodeEngine, Draw, ModelRole, PrefixState, PromptPrefix, TrainEngine};
use super::{Device, Precision};

/// Wraps a CUDA backend error with the device it happened on.
fn on(ordinal: usize) -> impl Fn(CudaError) -> EngineError {
    move |source| EngineError::Cuda {
        device: Device::Cuda(ordinal).to_string(),
        source,
    }
}

/// Opens the backend of device `ordinal`: an error when there is no driver or no such device.
fn backend(ordinal: usize) -> Result<CudaBackend> {
    CudaBackend::new(ordinal).map_err(on(ordinal))
}

/// Positions a resident model's RoPE tables cover: the model's whole context.
fn positions(model: &Model) -> usize {
    model.config.max_position_embeddings.max(1)
}

/// Training on one GPU: a resident copy of each role's model and one activation arena.
pub struct CudaTrainEngine {
    ordinal: usize,
    be: CudaBackend,
    /// Whether the trained role gets gradients and moments.
    trainable: bool,
    /// Each role's weights on the device, uploaded on first use or by `upload`.
    models: HashMap<ModelRole, DeviceModel>,
    /// Activations of the last forward pass, re-planned when (B, T) changes.
    acts: Option<DeviceActivations>,
    /// Whether the arena holds a layout other than one sequence per row (packed segments or
    /// shared prompts), so that a plain batch must reset it.
    packed: bool,
    /// The role of the last forward pass (the head reads that model's LM head).
    last_role: Option<ModelRole>,
    /// Activation checkpointing for the arenas it plans.
    checkpointing: bool,
    /// Whether the device's AdamW moments are newer than the host's (a step since they were
    /// loaded): what `download_optimizer` copies.
    moments_newer: bool,
}

impl CudaTrainEngine {
    /// Opens device `ordinal` and uploads `model` as the trained model.
    pub fn open(ordinal: usize, model: &Model, trainable: bool) -> Result<Self> {
        let be = backend(ordinal)?;
        let mut engine = CudaTrainEngine {
            ordinal,
            be,
            trainable,
            models: HashMap::new(),
            acts: None,
            packed: false,
            last_role: None,
            checkpointing: false,
            moments_newer: false,
        };
        engine.upload(ModelRole::Trained, model)?;
        Ok(engine)
    }

    fn resident(&mut self, role: ModelRole, model: &Model) -> Result<()> {
        if !self.models.contains_key(&role) {
            self.upload(role, model)?;
        }
        Ok(())
    }

    fn model(&self, role: ModelRole) -> Result<&DeviceModel> {
        self.models.get(&role).ok_or_else(|| {
            EngineError::Input(format!("{role:?} model is not on {}", self.device()))
        })
    }

    /// The arena for (B, T) of `role`'s model (checkpointed or not, as set), laid out by `lay`,
    /// which says whether the layout is other than one sequence per row.
    fn plan(
        &mut self,
        role: ModelRole,
        (b, t): (usize, usize),
        lay: impl FnOnce(
            &CudaBackend,
            &mut DeviceActivations,
            bool,
        ) -> std::result::Result<bool, CudaError>,
    ) -> Result<()> {
        let err = on(self.ordinal);
        // The arena is laid out anew: the last forward pass is no longer in it.
        self.last_role = None;
        let dm = self
            .models
            .get(&role)
            .ok_or_else(|| EngineError::Input(format!("{role:?} model is not resident")))?;
        if self
            .acts
            .as_ref()
            .is_none_or(|a| a.b != b || a.t != t || a.checkpointed() != self.checkpointing)
        {
            self.acts = None;
            self.acts = Some(
                DeviceActivations::with_checkpointing(&self.be, dm, b, t, self.checkpointing)
                    .map_err(&err)?,
            );
            self.packed = false;
        }
        let was_laid_out = self.packed;
        // Counted as laid out until a layout is fully written (a refused one may be half-written).
        self.packed = true;
        let acts = self.acts.as_mut().expect("arena was just planned");
        self.packed = lay(&self.be, acts, was_laid_out).map_err(&err)?;
        Ok(())
    }

    /// The forward pass of `role`'s model over the arena `plan` laid out.
    fn run_forward(&mut self, role: ModelRole, ids: &[u32]) -> Result<()> {
        // A failed pass leaves the arena without a forward of any role (`plan` cleared it).
        let dm = self
            .models
            .get(&role)
            .ok_or_else(|| EngineError::Input(format!("{role:?} model is not resident")))?;
        let acts = self
            .acts
            .as_mut()
            .ok_or_else(|| EngineError::Input("forward before the arena was planned".into()))?;
        cuda_model::forward(&self.be, dm, acts, ids).map_err(on(self.ordinal))?;
        self.last_role = Some(role);
        Ok(())
    }
}

impl TrainEngine for CudaTrainEngine {
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn upload(&mut self, role: ModelRole, model: &Model) -> Result<()> {
        let err = on(self.ordinal);
        let same_shape = self
            .models
            .get(&role)
            .is_some_and(|dm| dm.config == model.config && dm.layout.total == model.params.len());
        if let (true, Some(dm)) = (same_shape, self.models.get_mut(&role)) {
            return dm.set_params(&self.be, &model.params).map_err(err);
        }
        // A model of another shape (or the first one in this role): the old copy goes first,
        // with its moments when it is the trained one.
        if role == ModelRole::Trained {
            self.moments_newer = false;
        }
        self.models.remove(&role);
        self.acts = None;
        self.last_role = None;
        let trainable = self.trainable && role == ModelRole::Trained;
        let dm = DeviceModel::upload(&self.be, model, positions(model), trainable).map_err(err)?;
        self.models.insert(role, dm);
        Ok(())
    }

    fn forward(
        &mut self,
        role: ModelRole,
        model: &Model,
        shape: (usize, usize),
        segments: &[Vec<usize>],
        ids: &[u32],
    ) -> Result<()> {
        self.resident(role, model)?;
        self.plan(role, shape, |be, acts, laid_out| {
            if laid_out || !segments.is_empty() {
                acts.set_segments(be, segments)?;
            }
            Ok(!segments.is_empty())
        })?;
        self.run_forward(role, ids)
    }

    fn set_activation_checkpointing(&mut self, on: bool) -> Result<()> {
        if on != self.checkpointing {
            // The next forward plans an arena of the other kind.
            self.acts = None;
            self.last_role = None;
            self.checkpointing = on;
        }
        Ok(())
    }

    fn shares_prompts(&self) -> bool {
        true
    }

    fn forward_shared(
        &mut self,
        role: ModelRole,
        model: &Model,
        shape: (usize, usize),
        rows: &[Vec<SharedGroup>],
        ids: &[u32],
    ) -> Result<()> {
        self.resident(role, model)?;
        self.plan(role, shape, |be, acts, _| {
            acts.set_layout(be, rows)?;
            Ok(true)
        })?;
        self.run_forward(role, ids)
    }

    fn head(
        &mut self,
        role: ModelRole,
        _model: &Model,
        targets: &[u32],
        objective: Option<&dyn TokenObjective>,
        train: bool,
        want_entropy: bool,
    ) -> Result<HeadOutput> {
        if self.last_role != Some(role) {
            return Err(EngineError::Input(format!(
                "head of the {role:?} model without its forward pass"
            )));
        }
        if targets.len() != self.acts.as_ref().map_or(0, DeviceActivations::tokens) {
            return Err(EngineError::Input(format!(
                "head: {} targets for {} tokens",
                targets.len(),
                self.acts.as_ref().map_or(0, DeviceActivations::tokens)
            )));
        }
        let dm = self
            .models
            .get(&role)
            .ok_or_else(|| EngineError::Input(format!("{role:?} model is not resident")))?;
        let acts = self
            .acts
            .as_mut()
            .expect("a forward pass planned the arena");
        cuda_model::head(&self.be, dm, acts, targets, objective, train, want_entropy)
            .map_err(on(self.ordinal))
    }

    fn backward(&mut self, _model: &Model, ids: &[u32]) -> Result<()> {
        if self.last_role != Some(ModelRole::Trained) {
            return Err(EngineError::Input(
                "backward without a forward pass of the trained model".into(),
            ));
        }
        let dm = self
            .models
            .get(&ModelRole::Trained)
            .ok_or_else(|| EngineError::Input("the trained model is not resident".into()))?;
        // The device arena keeps the ids of its forward pass; `ids` is the same batch.
        let _ = ids;
        let acts = self
            .acts
            .as_mut()
            .expect("a forward pass planned the arena");
        cuda_model::backward(&self.be, dm, acts).map_err(on(self.ordinal))
    }

    fn reward_forward(
        &mut self,
        role: ModelRole,
        rm: &RewardModel,
        (b, t): (usize, usize),
        ids: &[u32],
        positions: &[usize],
    ) -> Result<Vec<f32>> {
        if positions.len() != b {
            return Err(EngineError::Input(format!(
                "reward head: {} positions for a batch of {b}",
                positions.len()
            )));
        }
        if let Some((s, &p)) = positions.iter().enumerate().find(|(_, &p)| p >= t) {
            return Err(EngineError::Input(format!(
                "reward head: position {p} of sequence {s} is outside {t} tokens"
            )));
        }
        self.forward(role, &rm.model, (b, t), &[], ids)?;
        // The score head is C multiply-adds per sequence: read the final hidden states of the
        // scored rows and apply it to them as they come back.
        let acts = self
            .acts
            .as_ref()
            .expect("a forward pass planned the arena");
        let xf = acts.hidden(&self.be).map_err(on(self.ordinal))?;
        let c = rm.hidden_size();
        let w = rm.score_weight();
        Ok(positions
            .iter()
            .enumerate()
            .map(|(s, &p)| {
                let row = &xf[(s * t + p) * c..(s * t + p + 1) * c];
                row.iter().zip(w).map(|(x, w)| x * w).sum()
            })
            .collect())
    }

    fn reward_backward(
        &mut self,
        rm: &RewardModel,
        ids: &[u32],
        positions: &[usize],
        d_rewards: &[f32],
    ) -> Result<()> {
        if self.last_role != Some(ModelRole::Trained) {
            return Err(EngineError::Input(
                "reward backward without a reward_forward of the trained model".into(),
            ));
        }
        let err = on(self.ordinal);
        let dm = self
            .models
            .get(&ModelRole::Trained)
            .ok_or_else(|| EngineError::Input("the trained model is not resident".into()))?;
        if dm.layout.total != rm.model.layout.total {
            return Err(EngineError::Input(format!(
                "reward backward: the reward model has {} parameters, the trained model on {} {}",
                rm.model.layout.total,
                Device::Cuda(self.ordinal),
                dm.layout.total
            )));
        }
        // The device arena keeps the ids of its forward pass; `ids` is the same batch.
        let _ = ids;
        let acts = self.acts.as_mut().ok_or_else(|| {
            EngineError::Input("reward backward: the arena was dropped since its forward".into())
        })?;
        // d score into the gradients and d hidden into the arena, then the transformer's backward
        // from there (as `train::reward_backward` does on the CPU).
        cuda_model::reward_head_backward(&self.be, dm, acts, rm.score, positions, d_rewards)
            .map_err(&err)?;
        cuda_model::backward(&self.be, dm, acts).map_err(err)
    }

    fn zero_grads(&mut self) -> Result<()> {
        let dm = self.model(ModelRole::Trained)?;
        dm.zero_grads(&self.be).map_err(on(self.ordinal))
    }

    fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        let dm = self.model(ModelRole::Trained)?;
        dm.clip_grad_norm(&self.be, max_norm)
            .map_err(on(self.ordinal))
    }

    fn adamw_step(&mut self, model: &mut Model, optimizer: &mut AdamW, lr: f32) -> Result<()> {
        let err = on(self.ordinal);
        let dm = self
            .models
            .get_mut(&ModelRole::Trained)
            .ok_or_else(|| EngineError::Input("the trained model is not resident".into()))?;
        let total = dm.layout.total;
        if optimizer.m.len() != total || optimizer.v.len() != total {
            return Err(EngineError::Input(format!(
                "adamw_step: AdamW moments of {} and {} floats for {total} parameters",
                optimizer.m.len(),
                optimizer.v.len()
            )));
        }
        // A state the device does not hold (a resume, or a host-side update in between) is
        // taken over first, so the step continues exactly the host `AdamW`.
        if dm.steps() != optimizer.step {
            dm.load_optimizer(&self.be, &optimizer.m, &optimizer.v, optimizer.step)
                .map_err(&err)?;
        }
        if model.params.len() != total {
            return Err(EngineError::Input(format!(
                "adamw_step: {total} device parameters for a host model of {}",
                model.params.len()
            )));
        }
        dm.adamw_step(&self.be, optimizer.config, lr)
            .map_err(&err)?;
        // Weights and moments stay on the device (see the module doc): only the step count
        // follows, so the next step knows the device holds the newest state. The caller
        // downloads the weights when it reads them (once per RL step) and the moments for a
        // checkpoint.
        optimizer.step = dm.steps();
        self.moments_newer = true;
        Ok(())
    }

    fn download_optimizer(&self, optimizer: &mut AdamW) -> Result<()> {
        let dm = self.model(ModelRole::Trained)?;
        if !self.moments_newer || dm.steps() != optimizer.step {
            // The host state was loaded or stepped since (a resume, ZeRO-1's host updates): it
            // is the newer one.
            return Ok(());
        }
        let total = dm.layout.total;
        if optimizer.m.len() != total || optimizer.v.len() != total {
            return Err(EngineError::Input(format!(
                "download_optimizer: AdamW moments of {} and {} floats for {total} parameters",
                optimizer.m.len(),
                optimizer.v.len()
            )));
        }
        optimizer.step = dm
            .download_optimizer(&self.be, &mut optimizer.m, &mut optimizer.v)
            .map_err(on(self.ordinal))?;
        Ok(())
    }

    fn load_optimizer(&mut self, optimizer: &AdamW) -> Result<()> {
        let err = on(self.ordinal);
        let dm = self
            .models
            .get_mut(&ModelRole::Trained)
            .ok_or_else(|| EngineError::Input("the trained model is not resident".into()))?;
        dm.load_optimizer(&self.be, &optimizer.m, &optimizer.v, optimizer.step)
            .map_err(err)?;
        self.moments_newer = false;
        Ok(())
    }

    fn download_grads(&self, out: &mut [f32]) -> Result<()> {
        let dm = self.model(ModelRole::Trained)?;
        let grads = dm.download_grads(&self.be).map_err(on(self.ordinal))?;
        if grads.len() != out.len() {
            return Err(EngineError::Input(format!(
                "download_grads: {} floats for {} gradients",
                out.len(),
                grads.len()
            )));
        }
        out.copy_from_slice(&grads);
        Ok(())
    }

    fn load_grads(&mut self, grads: &[f32]) -> Result<()> {
        let dm = self.model(ModelRole::Trained)?;
        dm.load_grads(&self.be, grads).map_err(on(self.ordinal))
    }

    fn all_reduce_grads(&mut self, group: &crate::collective::nccl::NcclCollective) -> Result<()> {
        use crate::collective::Collective;
        if group.ordinal() != self.ordinal {
            return Err(EngineError::Input(format!(
                "NCCL rank {} computes on cuda:{}, this engine on cuda:{}",
                group.rank(),
                group.ordinal(),
                self.ordinal
            )));
        }
        let err = on(self.ordinal);
        // The rank's stream is not this engine's: the gradients must be finished before it
        // reads them (the collective waits for its own stream before returning).
        self.be.synchronize().map_err(&err)?;
        let dm = self
            .models
            .get_mut(&ModelRole::Trained)
            .ok_or_else(|| EngineError::Input("Trained model is not on the device".into()))?;
        let grads = dm.grads_mut().map_err(&err)?;
        Ok(group.all_reduce_sum(grads)?)
    }

    fn download_params(&self, model: &mut Model) -> Result<()> {
        let dm = self.model(ModelRole::Trained)?;
        let params = dm.download_params(&self.be).map_err(on(self.ordinal))?;
        if params.len() != model.params.len() {
            return Err(EngineError::Input(format!(
                "download_params: {} device parameters for a host model of {}",
                params.len(),
                model.params.len()
            )));
        }
        model.params.copy_from_slice(&params);
        Ok(())
    }

    fn arena_bytes(&self) -> usize {
        // The device arena is GPU memory, not the host's; the host side is the ids.
        0
    }

    fn arena_bytes_for(&self, model: &Model, (b, t): (usize, usize), checkpointed: bool) -> f64 {
        super::memory::cuda_activations_bytes(&model.config, b, t, checkpointed)
    }

    fn decoder<'a>(
        &'a mut self,
        device: Device,
        model: &'a Model,
        precision: Precision,
    ) -> Result<Box<dyn DecodeEngine + 'a>> {
        let Device::Cuda(ordinal) = device else {
            // A CPU sampler decodes the host copy.
            return super::backend::open_decoder_with(device, precision, model);
        };
        if precision.on(device) == Precision::F32 {
            return Err(super::backend::bf16_only(device));
        }
        let weights = self.model(ModelRole::Trained)?;
        if weights.config != model.config || weights.layout.total != model.params.len() {
            return Err(EngineError::Input(
                "decoder: the host model is not the trained model's shape".into(),
            ));
        }
        let resident = if ordinal == self.ordinal {
            // The trained weights' bf16 copy, refreshed by every AdamW step, is what the decode
            // GEMMs read: the sampler decodes the newest weights with no copy of its own.
            Resident::Borrowed(&self.be, weights)
        } else {
            // Another GPU: the weights go there device to device, not through the host.
            let be = backend(ordinal)?;
            let copy = DeviceModel::from_peer(&be, &self.be, weights, positions(model))
                .map_err(on(ordinal))?;
            Resident::Owned(Box::new((be, copy)))
        };
        Ok(Box::new(CudaDecodeEngine {
            ordinal,
            model,
            resident,
            decoder: None,
        }))
    }
}

/// Generation on one GPU: the model's weights (inference upload), the device decoder, and the
/// sampling kernel. A prompt's keys and values are computed into each of its samples' slots at
/// admission (the decoder has no slot-to-slot copy), and its first token drawn there.
pub struct CudaDecodeEngine<'m> {
    ordinal: usize,
    model: &'m Model,
    resident: Resident<'m>,
    decoder: Option<DeviceDecoder>,
}

/// The backend and weights a decode engine computes with: its own (opened and uploaded for
/// it), or a training engine's (its trained model, borrowed while it decodes).
enum Resident<'m> {
    Owned(Box<(CudaBackend, DeviceModel)>),
    Borrowed(&'m CudaBackend, &'m DeviceModel),
}

impl Resident<'_> {
    fn parts(&self) -> (&CudaBackend, &DeviceModel) {
        match self {
            Resident::Owned(owned) => (&owned.0, &owned.1),
            Resident::Borrowed(be, weights) => (be, weights),
        }
    }
}

impl<'m> CudaDecodeEngine<'m> {
    /// Opens device `ordinal` and uploads `model` for inference.
    pub fn open(ordinal: usize, model: &'m Model) -> Result<Self> {
        let be = backend(ordinal)?;
        let weights =
            DeviceModel::upload(&be, model, positions(model), false).map_err(on(ordinal))?;
        Ok(CudaDecodeEngine {
            ordinal,
            model,
            resident: Resident::Owned(Box::new((be, weights))),
            decoder: None,
        })
    }

    fn decoder(&mut self) -> Result<&mut DeviceDecoder> {
        self.decoder
            .as_mut()
            .ok_or_else(|| EngineError::Input("decoding before reserve".into()))
    }
}

fn device_sampling(draw: &Draw<'_>) -> DeviceSampling {
    DeviceSampling {
        temperature: draw.params.temperature,
        top_k: draw.params.top_k,
        top_p: draw.params.top_p,
        min_p: draw.params.min_p,
        seed: draw.seed,
    }
}

impl DecodeEngine for CudaDecodeEngine<'_> {
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn precision(&self) -> Precision {
        Precision::Bf16
    }

    fn reserve(
        &mut self,
        slots: usize,
        max_len: usize,
        max_prompt: usize,
        _sequences: usize,
    ) -> Result<()> {
        let rows = slots.max(max_prompt).max(1);
        if let Some(d) = &self.decoder {
            if d.slots >= slots && d.max_len >= max_len && d.max_rows >= rows {
                return Ok(());
            }
        }
        self.decoder = None;
        let (be, weights) = self.resident.parts();
        let decoder =
            DeviceDecoder::new(be, weights, slots, max_len, rows).map_err(on(self.ordinal))?;
        self.decoder = Some(decoder);
        Ok(())
    }

    fn prefill(&mut self, prompts: &[(&[u32], usize)]) -> Result<Vec<PromptPrefix>> {
        let v = self.model.config.vocab_size;
        prompts
            .iter()
            .map(|&(ids, _)| {
                if let Some(&bad) = ids.iter().find(|&&t| t as usize >= v) {
                    return Err(EngineError::Input(format!(
                        "prefill: token id {bad} is outside the vocabulary of {v}"
                    )));
                }
                Ok(PromptPrefix {
                    len: ids.len(),
                    state: PrefixState::Replay { ids: ids.to_vec() },
                })
            })
            .collect()
    }

    fn admit(&mut self, prefix: &PromptPrefix, slot: usize, draw: Draw<'_>) -> Result<Pick> {
        let PrefixState::Replay { ids } = &prefix.state else {
            return Err(EngineError::Input(
                "admit: the prompt was prefilled by another device".into(),
            ));
        };
        let err = on(self.ordinal);
        let v = self.model.config.vocab_size;
        let (be, weights) = self.resident.parts();
        let decoder = self
            .decoder
            .as_mut()
            .ok_or_else(|| EngineError::Input("decoding before reserve".into()))?;
        let len = ids.len();
        let slots = vec![slot; len];
        let positions: Vec<u32> = (0..len as u32).collect();
        decoder
            .step(be, weights, &slots, ids, &positions, Some(&[len - 1]))
            .map_err(&err)?;
        let picks = decoder
            .sample(be, v, &[device_sampling(&draw)], &[draw.counter])
            .map_err(&err)?;
        picks
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Input("admit: the device drew no token".into()))
    }

    fn step(
        &mut self,
        slots: &[usize],
        tokens: &[u32],
        positions: &[u32],
        draws: &mut [Draw<'_>],
    ) -> Result<Vec<Pick>> {
        if draws.len() != tokens.len() {
            return Err(EngineError::Input(format!(
                "decode step: {} draws for {} rows",
                draws.len(),
                tokens.len()
            )));
        }
        let err = on(self.ordinal);
        let v = self.model.config.vocab_size;
        let params: Vec<DeviceSampling> = draws.iter().map(device_sampling).collect();
        let counters: Vec<u64> = draws.iter().map(|d| d.counter).collect();
        self.decoder()?;
        let (be, weights) = self.resident.parts();
        let decoder = self.decoder.as_mut().expect("checked above");
        decoder
            .step(be, weights, slots, tokens, positions, None)
            .map_err(&err)?;
        decoder.sample(be, v, &params, &counters).map_err(&err)
    }
}
