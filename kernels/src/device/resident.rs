//! The CPU engine under a GPU engine's residency rules, so that callers' bookkeeping can be
//! checked on a machine without one.
//!
//! [`ResidentCpuEngine`] computes exactly what [`CpuTrainEngine`] computes (it is one), but on
//! copies of the weights and of the AdamW state that it keeps itself, as the CUDA engine keeps
//! them on the device: a role's weights are copied on first use or by `upload` (a host change
//! made without `upload` is not seen), `adamw_step` updates its own weights and moments and
//! only advances the host step count, and the host copies change only through
//! `download_params` and `download_optimizer`. A caller that reads the host weights or moments
//! without bringing them up to date, or changes them without uploading, gets other numbers than
//! on the plain CPU engine: tests run a learner on both and compare the bits.
//!
//! `decoder` decodes from its trained copy, as a device decodes from the weights it holds.
//! Reward models (`reward_forward`, `reward_backward`) are passed through as they are.

use std::collections::HashMap;

use super::backend::{DecodeEngine, ModelRole, TrainEngine};
use super::cpu::CpuTrainEngine;
use super::{Device, Precision};
use crate::cpu::SharedGroup;
use crate::error::{EngineError, Result};
use crate::model::{Model, RewardModel};
use crate::train::adamw::AdamW;
use crate::train::head::{HeadOutput, TokenObjective};

/// `role`'s resident weights in `models`, copied from `model` on first use.
fn resident<'a>(
    models: &'a mut HashMap<ModelRole, Model>,
    role: ModelRole,
    model: &Model,
) -> &'a Model {
    models.entry(role).or_insert_with(|| model.clone())
}

/// The CPU engine keeping its own weights and moments, as a device does (module doc).
pub struct ResidentCpuEngine {
    inner: CpuTrainEngine,
    /// Each role's weights as "the device" holds them.
    models: HashMap<ModelRole, Model>,
    /// The AdamW state "on the device", once a step or `load_optimizer` made one.
    state: Option<AdamW>,
    /// Whether that state is newer than the host's (a step since it was loaded).
    state_newer: bool,
}

impl ResidentCpuEngine {
    /// An engine training `model` (copied in as the trained role).
    pub fn new(model: &Model) -> Result<Self> {
        Ok(ResidentCpuEngine {
            inner: CpuTrainEngine::try_new(model, true)?,
            models: HashMap::from([(ModelRole::Trained, model.clone())]),
            state: None,
            state_newer: false,
        })
    }

    fn trained(&self) -> Result<&Model> {
        self.models
            .get(&ModelRole::Trained)
            .ok_or_else(|| EngineError::Input("the trained model is not resident".into()))
    }
}

impl TrainEngine for ResidentCpuEngine {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn upload(&mut self, role: ModelRole, model: &Model) -> Result<()> {
        self.models.insert(role, model.clone());
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
        let resident = resident(&mut self.models, role, model);
        self.inner.forward(role, resident, shape, segments, ids)
    }

    fn set_activation_checkpointing(&mut self, on: bool) -> Result<()> {
        self.inner.set_activation_checkpointing(on)
    }

    fn shares_prompts(&self) -> bool {
        self.inner.shares_prompts()
    }

    fn forward_shared(
        &mut self,
        role: ModelRole,
        model: &Model,
        shape: (usize, usize),
        rows: &[Vec<SharedGroup>],
        ids: &[u32],
    ) -> Result<()> {
        let resident = resident(&mut self.models, role, model);
        self.inner.forward_shared(role, resident, shape, rows, ids)
    }

    fn head(
        &mut self,
        role: ModelRole,
        model: &Model,
        targets: &[u32],
        objective: Option<&dyn TokenObjective>,
        train: bool,
        want_entropy: bool,
    ) -> Result<HeadOutput> {
        let resident = resident(&mut self.models, role, model);
        self.inner
            .head(role, resident, targets, objective, train, want_entropy)
    }

    fn backward(&mut self, model: &Model, ids: &[u32]) -> Result<()> {
        let resident = resident(&mut self.models, ModelRole::Trained, model);
        self.inner.backward(resident, ids)
    }

    fn reward_forward(
        &mut self,
        role: ModelRole,
        rm: &RewardModel,
        shape: (usize, usize),
        ids: &[u32],
        positions: &[usize],
    ) -> Result<Vec<f32>> {
        self.inner.reward_forward(role, rm, shape, ids, positions)
    }

    fn reward_backward(
        &mut self,
        rm: &RewardModel,
        ids: &[u32],
        positions: &[usize],
        d_rewards: &[f32],
    ) -> Result<()> {
        self.inner.reward_backward(rm, ids, positions, d_rewards)
    }

    fn zero_grads(&mut self) -> Result<()> {
        self.inner.zero_grads()
    }

    fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        self.inner.clip_grad_norm(max_norm)
    }

    fn adamw_step(&mut self, model: &mut Model, optimizer: &mut AdamW, lr: f32) -> Result<()> {
        if model.params.len() != self.trained()?.params.len() {
            return Err(EngineError::Input(format!(
                "adamw_step: a host model of {} parameters for {} resident ones",
                model.params.len(),
                self.trained()?.params.len()
            )));
        }
        // A state "the device" does not hold (a resume, a host-side update in between) is
        // taken over first, as the CUDA engine does.
        let state = match &mut self.state {
            Some(state) if state.step == optimizer.step => state,
            held => held.insert(optimizer.clone()),
        };
        state.config = optimizer.config;
        let trained = self
            .models
            .get_mut(&ModelRole::Trained)
            .ok_or_else(|| EngineError::Input("the trained model is not resident".into()))?;
        self.inner.adamw_step(trained, state, lr)?;
        optimizer.step = state.step;
        self.state_newer = true;
        Ok(())
    }

    fn download_optimizer(&self, optimizer: &mut AdamW) -> Result<()> {
        match &self.state {
            Some(state) if self.state_newer && state.step == optimizer.step => {
                if (optimizer.m.len(), optimizer.v.len()) != (state.m.len(), state.v.len()) {
                    return Err(EngineError::Input(format!(
                        "download_optimizer: room for {} and {} moments, {} resident",
                        optimizer.m.len(),
                        optimizer.v.len(),
                        state.m.len()
                    )));
                }
                optimizer.m.copy_from_slice(&state.m);
                optimizer.v.copy_from_slice(&state.v);
                Ok(())
            }
            // The host state was loaded or stepped since: it is the newer one.
            _ => Ok(()),
        }
    }

    fn load_optimizer(&mut self, optimizer: &AdamW) -> Result<()> {
        self.state = Some(optimizer.clone());
        self.state_newer = false;
        Ok(())
    }

    fn download_grads(&self, out: &mut [f32]) -> Result<()> {
        self.inner.download_grads(out)
    }

    fn load_grads(&mut self, grads: &[f32]) -> Result<()> {
        self.inner.load_grads(grads)
    }

    fn download_params(&self, model: &mut Model) -> Result<()> {
        let trained = self.trained()?;
        if model.params.len() != trained.params.len() {
            return Err(EngineError::Input(format!(
                "download_params: {} resident parameters for a host model of {}",
                trained.params.len(),
                model.params.len()
            )));
        }
        model.params.copy_from_slice(&trained.params);
        Ok(())
    }

    fn decoder<'a>(
        &'a mut self,
        device: Device,
        _model: &'a Model,
        precision: Precision,
    ) -> Result<Box<dyn DecodeEngine + 'a>> {
        // As a device does: the weights it holds, not the host copy.
        let trained = self.trained()?;
        super::backend::open_decoder_with(device, precision, trained)
    }

    fn arena_bytes(&self) -> usize {
        self.inner.arena_bytes()
    }

    fn arena_bytes_for(&self, model: &Model, shape: (usize, usize), checkpointed: bool) -> f64 {
        self.inner.arena_bytes_for(model, shape, checkpointed)
    }
}
