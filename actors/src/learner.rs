//! The learners: one GRPO update from a batch of scored rollouts, and one SFT step from a batch of
//! examples. Pure compute over `r1_kernels`; the learner actor and the stage loops drive them.
//!
//! A GRPO step (docs/DESIGN.md, "GRPO, exactly"):
//! 1. advantages per group of `group_size` consecutive rollouts;
//! 2. π_old = the log-probs of the policy that sampled, recomputed here before any update (the
//!    sampler's are equal within 1e-4, but the learner does not trust them) — except on-policy
//!    (one minibatch, one epoch), where the policy that sampled is the one being trained and
//!    π_old is the training pass's own log-probs, detached (ρ = 1, as TRL); π_ref from the
//!    frozen reference when β ≠ 0;
//! 3. for each epoch, for each minibatch: forward, the GRPO objective through the fused head,
//!    backward, gradient clipping, AdamW at the scheduled learning rate;
//! 4. every `ref_refresh_steps` steps the reference becomes a copy of the policy.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use r1_kernels::device::memory::MemoryPart;
use r1_kernels::device::{self, cpu::CpuTrainEngine, Device, ModelRole, TrainEngine};
use r1_kernels::model::Model;
use r1_kernels::train::grpo::{aggregation_weights, zero_std_groups};
use r1_kernels::train::{
    group_advantages, AdamW, AdamWConfig, GrpoConfig, GrpoObjective, ImportanceSamplingLevel,
    LrSchedule, SamplerMismatch, ScaleRewards, SequenceTerm, WeightedCrossEntropy,
};
use r1_kernels::train::{HeadOutput, TokenObjective};
use r1_kernels::EngineError;

use crate::shared_prompts::{self, SharedRows};

/// Errors of the learners: bad batches, or the engine refusing them.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    /// The batch cannot be trained on; the message says which item and why.
    #[error("bad batch: {0}")]
    Batch(String),
    /// The engine rejected an input (token id out of range, …).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The replicas of a data-parallel learner could not exchange gradients or weights.
    #[error("data-parallel replicas: {0}")]
    Collective(#[from] r1_kernels::collective::CollectiveError),
}

/// One sampled completion with its total reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The prompt as the policy saw it (template applied).
    pub prompt_ids: Vec<u32>,
    /// The generated tokens.
    pub completion_ids: Vec<u32>,
    /// Sum of the weighted reward components.
    pub reward: f64,
    /// Whether generation stopped at the length limit.
    pub truncated: bool,
    /// log π of each completion token under the sampler, when the sampler is not the learner
    /// (bf16 weights): the learner corrects for the difference (`[learner.grpo] sampler_is_mode`)
    /// and reports it. Empty for an f32 sampler, whose log-probs are the learner's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sampler_logp: Vec<f32>,
}

/// How the GRPO learner updates the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerConfig {
    /// The objective (clip ε, β, aggregation).
    pub grpo: GrpoConfig,
    /// Whether advantages are divided by the group std.
    pub scale_rewards: ScaleRewards,
    /// Completions per prompt; rollouts come in consecutive groups of this size.
    pub group_size: usize,
    /// Minibatches each rollout batch is split into (one optimizer step each).
    pub minibatches: usize,
    /// Passes over the rollout batch.
    pub epochs: usize,
    /// Learning rate per optimizer step.
    pub schedule: LrSchedule,
    /// AdamW moments and weight decay.
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip (0 disables).
    pub max_grad_norm: f64,
    /// Give truncated completions no loss (they have no final answer to judge).
    pub mask_truncated: bool,
    /// Replace the reference by the policy every this many steps (0: never).
    pub ref_refresh_steps: u64,
    /// Train the completions of a group over one copy of their prompt where the engine's
    /// device can (`crate::shared_prompts`): the same objective with fewer tokens computed.
    /// Off: one rollout per row.
    pub share_prompts: bool,
    /// Keep only the residual stream entering each layer through the training pass and
    /// recompute the rest in the backward pass (per-layer activation checkpointing): the same
    /// step, bit for bit, with a fraction of the activations' memory for one more forward pass
    /// of compute. For long completions or large minibatches.
    pub activation_checkpointing: bool,
}

impl Default for LearnerConfig {
    /// The paper's R1-Zero settings: lr 3e-6, β 0.001, G 16, 16 minibatches, one pass,
    /// reference refreshed every 400 steps.
    fn default() -> Self {
        LearnerConfig {
            grpo: GrpoConfig::default(),
            scale_rewards: ScaleRewards::Group,
            group_size: 16,
            minibatches: 16,
            epochs: 1,
            schedule: LrSchedule::constant(3e-6),
            adamw: AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
            max_grad_norm: 1.0,
            mask_truncated: false,
            ref_refresh_steps: 400,
            share_prompts: true,
            activation_checkpointing: false,
        }
    }
}

/// What one GRPO step did, for logs, metrics and sled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpoStepStats {
    /// The step just taken (1-based).
    pub step: u64,
    /// Mean of the minibatch losses of the last epoch.
    pub loss: f64,
    /// Mean and std of rewards over the batch.
    pub reward_mean: f64,
    /// Population std of rewards over the batch.
    pub reward_std: f64,
    /// Share of groups whose rewards were all equal (no signal).
    pub frac_zero_std: f64,
    /// Mean k3 KL to the reference over completion tokens (0 when β = 0).
    pub kl: f64,
    /// Mean entropy of the sampling policy over completion tokens.
    pub entropy: f64,
    /// Share of tokens clipped below and above.
    pub clip_low_fraction: f64,
    /// Share of tokens clipped above.
    pub clip_high_fraction: f64,
    /// Gradient norm before clipping (mean over minibatches).
    pub grad_norm: f64,
    /// Learning rate of the last optimizer step.
    pub lr: f64,
    /// Mean and max completion length in tokens.
    pub completion_len_mean: f64,
    /// Longest completion.
    pub completion_len_max: usize,
    /// Share of completions cut by the length limit.
    pub truncated_fraction: f64,
    /// Optimizer steps taken in this GRPO step.
    pub optimizer_steps: usize,
    /// Completion tokens that carried loss (truncated ones excluded under `mask_truncated`).
    #[serde(default)]
    pub tokens_trained: usize,
    /// How far a bf16 sampler's log-probs were from the learner's and what the correction did;
    /// `None` when the sampler was the learner's f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerMismatch>,
    /// What the learner holds, by category ([`GrpoLearner::memory_parts`]; summed over
    /// data-parallel replicas). Carried to the step report, whose `memory` records it with the
    /// sampler's; not stored twice.
    #[serde(skip)]
    pub memory: Vec<MemoryPart>,
}

/// Rows of equal length ready for the engine: inputs, targets and a loss mask, [B, T] each.
pub(crate) struct PaddedBatch {
    pub(crate) b: usize,
    pub(crate) t: usize,
    pub(crate) inputs: Vec<u32>,
    pub(crate) targets: Vec<u32>,
    pub(crate) mask: Vec<f32>,
    /// The sampler's log-prob of each target, [B, T], when the rollouts carry them; else empty.
    pub(crate) sampler_logp: Vec<f32>,
    /// The engine's rows when the rollouts' prompts are shared (`PaddedBatch::share_prompts`).
    pub(crate) shared: Option<SharedRows>,
}

impl PaddedBatch {
    /// Lays the batch out with shared prompts for `engine` where it can and where that computes
    /// less (`shared_prompts::plan`); `rollouts` are the batch's rows.
    pub(crate) fn share_prompts(
        &mut self,
        engine: &dyn TrainEngine,
        model: &Model,
        rollouts: &[&Rollout],
        checkpointed: bool,
    ) {
        if !engine.shares_prompts() {
            return;
        }
        let prompts: Vec<&[u32]> = rollouts.iter().map(|r| r.prompt_ids.as_slice()).collect();
        let completions: Vec<&[u32]> = rollouts
            .iter()
            .map(|r| r.completion_ids.as_slice())
            .collect();
        let arena = |rows, len| engine.arena_bytes_for(model, (rows, len), checkpointed);
        self.shared = shared_prompts::plan(model, self.t, &prompts, &completions, &arena);
    }

    /// Tokens the engine computes for this batch.
    pub(crate) fn engine_tokens(&self) -> usize {
        self.shared
            .as_ref()
            .map_or(self.b * self.t, SharedRows::tokens)
    }

    /// The forward pass of `model` over the batch.
    fn forward(
        &self,
        engine: &mut dyn TrainEngine,
        role: ModelRole,
        model: &Model,
    ) -> Result<(), LearnerError> {
        match &self.shared {
            Some(s) => engine.forward_shared(role, model, (s.b, s.t), &s.rows, &s.inputs)?,
            None => engine.forward(role, model, (self.b, self.t), &[], &self.inputs)?,
        }
        Ok(())
    }

    /// The head over the last forward pass, its outputs per token of the batch.
    fn head(
        &self,
        engine: &mut dyn TrainEngine,
        role: ModelRole,
        model: &Model,
        objective: Option<&dyn TokenObjective>,
        train: bool,
        entropy: bool,
    ) -> Result<HeadOutput, LearnerError> {
        Ok(match &self.shared {
            Some(s) => {
                let remapped = objective.map(|o| s.objective(o));
                let objective = remapped.as_ref().map(|o| o as &dyn TokenObjective);
                let out = engine.head(role, model, &s.targets, objective, train, entropy)?;
                s.scatter(out, self.b)
            }
            None => engine.head(role, model, &self.targets, objective, train, entropy)?,
        })
    }

    /// The backward pass after `forward` and a training `head`.
    fn backward(&self, engine: &mut dyn TrainEngine, model: &Model) -> Result<(), LearnerError> {
        let inputs = self.shared.as_ref().map_or(&self.inputs, |s| &s.inputs);
        Ok(engine.backward(model, inputs)?)
    }

    /// The sampler's log-probs for an objective (`None` when the sampler was the learner).
    pub(crate) fn sampler(&self) -> Option<&[f32]> {
        (!self.sampler_logp.is_empty()).then_some(self.sampler_logp.as_slice())
    }
}

/// Lays out (prompt, completion) pairs as next-token rows of length `t`; the mask covers the
/// positions whose target is a completion token.
pub(crate) fn pad_rollouts(rollouts: &[&Rollout], t: usize, mask_truncated: bool) -> PaddedBatch {
    let b = rollouts.len();
    let mut batch = PaddedBatch {
        b,
        t,
        inputs: vec![0; b * t],
        targets: vec![0; b * t],
        mask: vec![0.0; b * t],
        sampler_logp: Vec::new(),
        shared: None,
    };
    if rollouts.iter().any(|r| !r.sampler_logp.is_empty()) {
        batch.sampler_logp = vec![0.0; b * t];
    }
    for (row, r) in rollouts.iter().enumerate() {
        let ids: Vec<u32> = r
            .prompt_ids
            .iter()
            .chain(&r.completion_ids)
            .copied()
            .collect();
        let n = ids.len() - 1;
        batch.inputs[row * t..row * t + n].copy_from_slice(&ids[..n]);
        batch.targets[row * t..row * t + n].copy_from_slice(&ids[1..]);
        let completion = row * t + r.prompt_ids.len() - 1..row * t + n;
        if !(mask_truncated && r.truncated) {
            batch.mask[completion.clone()].fill(1.0);
        }
        if !batch.sampler_logp.is_empty() {
            batch.sampler_logp[completion].copy_from_slice(&r.sampler_logp);
        }
    }
    batch
}

/// Log-probs (and optionally entropies) of a padded batch's targets under `model` (in `role`
/// on the engine's device).
fn logprobs(
    engine: &mut dyn TrainEngine,
    role: ModelRole,
    model: &Model,
    batch: &PaddedBatch,
    entropy: bool,
) -> Result<(Vec<f32>, Vec<f32>), LearnerError> {
    batch.forward(engine, role, model)?;
    let out = batch.head(engine, role, model, None, false, entropy)?;
    Ok((out.logp, out.entropy))
}

/// A GRPO step's batch is whole groups of `g`, each rollout with a prompt, a completion and a
/// finite reward; anything else is an error naming the rollout.
pub(crate) fn check_rollouts(rollouts: &[Rollout], g: usize) -> Result<(), LearnerError> {
    if rollouts.is_empty() || !rollouts.len().is_multiple_of(g) {
        return Err(LearnerError::Batch(format!(
            "{} rollouts is not a whole number of groups of {g}",
            rollouts.len()
        )));
    }
    for (i, r) in rollouts.iter().enumerate() {
        if r.prompt_ids.is_empty() || r.completion_ids.is_empty() {
            return Err(LearnerError::Batch(format!(
                "rollout {i} has an empty prompt or completion"
            )));
        }
        if !r.reward.is_finite() {
            return Err(LearnerError::Batch(format!(
                "rollout {i} has reward {}",
                r.reward
            )));
        }
        // The sampler's log-probs come for every rollout or for none, one per completion token.
        let expected = if rollouts[0].sampler_logp.is_empty() {
            0
        } else {
            r.completion_ids.len()
        };
        if r.sampler_logp.len() != expected {
            return Err(LearnerError::Batch(format!(
                "rollout {i} has {} sampler log-probs for {} completion tokens (rollout 0 has {})",
                r.sampler_logp.len(),
                r.completion_ids.len(),
                rollouts[0].sampler_logp.len()
            )));
        }
        if let Some(bad) = r
            .sampler_logp
            .iter()
            .find(|l| !(l.is_finite() && **l <= 0.0))
        {
            return Err(LearnerError::Batch(format!(
                "rollout {i} has a sampler log-prob of {bad}"
            )));
        }
    }
    Ok(())
}

/// What a GRPO step derives from its batch before any pass, for the single and the data-parallel
/// learner alike: the group advantages, the padded length (longest prompt + completion − 1) and
/// the rows per minibatch.
pub(crate) fn step_shape(
    rollouts: &[Rollout],
    rewards: &[f64],
    cfg: &LearnerConfig,
) -> (Vec<f64>, usize, usize) {
    let advantages = group_advantages(rewards, cfg.group_size.max(1), cfg.scale_rewards);
    let t = rollouts
        .iter()
        .map(|r| r.prompt_ids.len() + r.completion_ids.len() - 1)
        .max()
        .unwrap_or(1);
    let minibatches = cfg.minibatches.clamp(1, rollouts.len());
    (advantages, t, rollouts.len().div_ceil(minibatches))
}

/// Where a GRPO step takes π_old's log-probs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldLogp {
    /// From the training pass itself when the step is on-policy ([`GrpoLearner::on_policy`]),
    /// else from a forward pass of the policy before any update.
    Auto,
    /// Always from a separate forward pass before any update (the reference behaviour the
    /// on-policy shortcut is tested against).
    Recompute,
}

/// Wall time of a GRPO step's phases in the learner, in seconds, summed over minibatches and
/// epochs: what `r1ctl bench grpo` sets beside the FLOPs each phase does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LearnerPhases {
    /// Forward + head passes recomputing π_old (0 when on-policy).
    pub old_logp: f64,
    /// Forward + head passes of the reference (0 when β = 0).
    pub ref_logp: f64,
    /// The training forward passes through the transformer.
    pub forward: f64,
    /// The fused LM head with the objective and its gradients.
    pub head: f64,
    /// Backward through the transformer.
    pub backward: f64,
    /// Gradient clipping and AdamW.
    pub optimizer: f64,
    /// Whether π_old was the training pass's own log-probs (no recompute).
    pub reused_policy_logp: bool,
    /// Token positions of the training passes' padded batches (one rollout per row).
    #[serde(default)]
    pub batch_tokens: usize,
    /// Token positions the engine computed in those passes: fewer with shared prompts.
    #[serde(default)]
    pub engine_tokens: usize,
    /// Positions per engine row of the last training pass.
    #[serde(default)]
    pub engine_row: usize,
}

/// `engine`, having taken over `optimizer`'s state (a learner or trainer moving to it).
fn taking_over(
    mut engine: Box<dyn TrainEngine>,
    optimizer: &AdamW,
) -> Result<Box<dyn TrainEngine>, LearnerError> {
    engine.load_optimizer(optimizer)?;
    Ok(engine)
}

/// A copy of `optimizer` with the moments as `engine` holds them (downloaded from a device that
/// keeps them; the host's own on the CPU).
fn as_held(engine: &dyn TrainEngine, optimizer: &AdamW) -> Result<AdamW, EngineError> {
    let mut state = optimizer.clone();
    engine.download_optimizer(&mut state)?;
    Ok(state)
}

/// The GRPO learner: the policy, its frozen reference, and the optimizer state.
pub struct GrpoLearner {
    /// The policy being trained: current after every step (on a GPU the weights live on the
    /// device during a step and are downloaded at its end).
    pub policy: Model,
    /// π_ref; `None` when β = 0 (no KL term, no second model in memory).
    pub reference: Option<Model>,
    /// AdamW state. On a GPU the moments stay on the device between checkpoints (only the step
    /// count follows): read them through [`GrpoLearner::optimizer_state`] or after
    /// [`GrpoLearner::sync_optimizer`].
    pub optimizer: AdamW,
    /// GRPO steps taken.
    pub step: u64,
    /// Optimizer steps taken (the schedule's clock).
    pub optimizer_step: u64,
    /// Settings.
    pub config: LearnerConfig,
    /// The device the policy (and the reference) compute on: activations, gradients, AdamW.
    engine: Box<dyn TrainEngine>,
}

impl GrpoLearner {
    /// [`GrpoLearner::new`] for a policy read from a file: what training adds to the loaded
    /// weights (gradients, both AdamW moments, the reference when β ≠ 0) is checked against the
    /// memory available and allocated fallibly, so a model too big to train is an error with
    /// the figures rather than an abort of the process (the daemon and its other runs).
    pub fn try_new(policy: Model, config: LearnerConfig) -> Result<Self, LearnerError> {
        Self::try_new_on(Device::Cpu, policy, config)
    }

    /// [`GrpoLearner::try_new`] on `device`: the policy (and the reference) are placed there;
    /// a device that cannot be opened is an error naming it.
    pub fn try_new_on(
        device: Device,
        policy: Model,
        config: LearnerConfig,
    ) -> Result<Self, LearnerError> {
        use r1_kernels::model::limits::{try_zeroed, MemoryPlan};
        let p = policy.layout.total as f64 * 4.0;
        let reference = config.grpo.beta != 0.0;
        let mut plan = MemoryPlan::default();
        if device == Device::Cpu {
            plan.add("gradients", p);
        }
        plan.add("AdamW moments", 2.0 * p);
        if reference {
            plan.add("reference model", p);
        }
        plan.check("training the loaded model")?;
        let optimizer = AdamW::try_new(config.adamw, policy.layout.total)?;
        let engine = device::open(device, &policy, true)?;
        let reference = if reference {
            let params = try_zeroed(policy.layout.total, "the reference model")?;
            let mut copy = Model {
                config: policy.config.clone(),
                layout: policy.layout.clone(),
                params,
            };
            copy.params.copy_from_slice(&policy.params);
            Some(copy)
        } else {
            None
        };
        Ok(GrpoLearner {
            policy,
            reference,
            optimizer,
            step: 0,
            optimizer_step: 0,
            config,
            engine,
        })
    }

    /// [`GrpoLearner::resume`] with [`GrpoLearner::try_new`]'s checks (the checkpoint brings its
    /// own moments and reference; the gradients are allocated fallibly).
    pub fn try_resume(
        checkpoint: crate::keeper::Checkpoint,
        config: LearnerConfig,
    ) -> Result<Self, LearnerError> {
        Self::try_resume_on(Device::Cpu, checkpoint, config)
    }

    /// [`GrpoLearner::try_resume`] on `device`.
    pub fn try_resume_on(
        device: Device,
        checkpoint: crate::keeper::Checkpoint,
        config: LearnerConfig,
    ) -> Result<Self, LearnerError> {
        let mut engine = device::open(device, &checkpoint.model, true)?;
        let reference = if config.grpo.beta != 0.0 {
            match checkpoint.reference {
                Some(reference) => Some(reference),
                None => Some(checkpoint.model.clone()),
            }
        } else {
            None
        };
        let mut optimizer = checkpoint.optimizer;
        optimizer.config = config.adamw;
        engine.load_optimizer(&optimizer)?;
        Ok(GrpoLearner {
            policy: checkpoint.model,
            reference,
            optimizer,
            step: checkpoint.state.step,
            optimizer_step: checkpoint.state.optimizer_step,
            config,
            engine,
        })
    }

    /// A learner starting from `policy`; the reference starts as a copy of it.
    pub fn new(policy: Model, config: LearnerConfig) -> Self {
        let reference = (config.grpo.beta != 0.0).then(|| policy.clone());
        let optimizer = AdamW::new(config.adamw, policy.layout.total);
        let engine = Box::new(CpuTrainEngine::new(&policy, true));
        GrpoLearner {
            policy,
            reference,
            optimizer,
            step: 0,
            optimizer_step: 0,
            config,
            engine,
        }
    }

    /// Continues from a checkpoint: its weights, reference, moments and counters, under `config`
    /// (hyper-parameters come from the config, state from the checkpoint). A run resumed this way
    /// continues bit-identically to one that never stopped.
    pub fn resume(checkpoint: crate::keeper::Checkpoint, config: LearnerConfig) -> Self {
        let mut learner = GrpoLearner::new(checkpoint.model, config);
        if learner.config.grpo.beta != 0.0 {
            if let Some(reference) = checkpoint.reference {
                learner.reference = Some(reference);
            }
        }
        learner.optimizer = checkpoint.optimizer;
        learner.optimizer.config = learner.config.adamw;
        learner.step = checkpoint.state.step;
        learner.optimizer_step = checkpoint.state.optimizer_step;
        learner
    }

    /// This learner computing through `engine` instead (a device layer of the caller's; the
    /// tests use `device::resident::ResidentCpuEngine`), which takes over its optimizer state.
    pub fn with_engine(mut self, engine: Box<dyn TrainEngine>) -> Result<Self, LearnerError> {
        self.engine = taking_over(engine, &self.optimizer)?;
        Ok(self)
    }

    /// A copy of this learner for another data-parallel replica: the same weights, reference
    /// and counters, `optimizer` as its moments (all of them, or its ZeRO-1 shard), computing on
    /// `device` with an engine of its own.
    pub(crate) fn replica(
        &self,
        optimizer: AdamW,
        device: Device,
    ) -> Result<GrpoLearner, LearnerError> {
        let engine = device::open(device, &self.policy, true)?;
        Ok(GrpoLearner {
            policy: self.policy.clone(),
            reference: self.reference.clone(),
            optimizer,
            step: self.step,
            optimizer_step: self.optimizer_step,
            config: self.config.clone(),
            engine,
        })
    }

    /// Bytes of the learner's activation arena (head chunk included), as last planned.
    pub fn arena_bytes(&self) -> usize {
        self.engine.arena_bytes()
    }

    /// The host bytes this learner holds, by category: weights, gradients, AdamW moments (its
    /// shard under ZeRO-1), the reference, the activation arena with the head's logit chunk. On a
    /// GPU the gradients and the arena are on the device and not counted here.
    pub fn memory_parts(&self) -> Vec<MemoryPart> {
        let bytes = |n: usize| 4.0 * n as f64;
        let on_cpu = self.engine.device() == Device::Cpu;
        let mut parts = vec![
            ("weights", bytes(self.policy.params.len())),
            (
                "gradients",
                if on_cpu {
                    bytes(self.policy.layout.total)
                } else {
                    0.0
                },
            ),
            (
                "AdamW moments",
                bytes(self.optimizer.m.len() + self.optimizer.v.len()),
            ),
            (
                "reference model",
                self.reference
                    .as_ref()
                    .map_or(0.0, |r| bytes(r.params.len())),
            ),
            (
                "activations + head chunk",
                if on_cpu {
                    self.arena_bytes() as f64
                } else {
                    0.0
                },
            ),
        ];
        parts.retain(|(_, b)| *b > 0.0);
        parts
            .into_iter()
            .map(|(category, bytes)| MemoryPart {
                category: category.into(),
                bytes,
            })
            .collect()
    }

    /// The device the learner computes on.
    pub fn device(&self) -> Device {
        self.engine.device()
    }

    /// One GRPO step over a rollout batch of whole groups.
    pub fn step(&mut self, rollouts: &[Rollout]) -> Result<GrpoStepStats, LearnerError> {
        self.step_with(rollouts, OldLogp::Auto)
            .map(|(stats, _)| stats)
    }

    /// Whether a step over `rollouts` trains the very policy that sampled them on every update:
    /// one minibatch and one epoch. π_old is then logπθ detached (ρ = 1), as TRL does, and its
    /// forward pass is skipped. Decided by the config alone, so a resumed run decides the same.
    pub fn on_policy(&self, rollouts: usize) -> bool {
        self.config.epochs.max(1) == 1 && self.config.minibatches.clamp(1, rollouts.max(1)) == 1
    }

    /// [`GrpoLearner::step`] with the source of π_old chosen by the caller and the wall time of
    /// each phase returned beside the statistics (`r1ctl bench grpo` prints them).
    pub fn step_with(
        &mut self,
        rollouts: &[Rollout],
        old_source: OldLogp,
    ) -> Result<(GrpoStepStats, LearnerPhases), LearnerError> {
        let result = self.updates(rollouts, old_source);
        // A device that keeps the weights (CUDA) updated them there: the host copy — what the
        // sampler, the reference refresh and checkpoints read — follows once per step, also
        // after a step that failed past an update (its updates stand, as on the CPU).
        let clock = Instant::now();
        let synced = self.sync_policy();
        let (mut stats, mut phases) = result?;
        synced?;
        phases.optimizer += clock.elapsed().as_secs_f64();
        self.step += 1;
        stats.step = self.step;
        self.refresh_reference_when_due()?;
        Ok((stats, phases))
    }

    /// Every `ref_refresh_steps` steps (counted by `self.step`), π_ref becomes a copy of the
    /// policy's host copy, placed on the engine's device again.
    pub(crate) fn refresh_reference_when_due(&mut self) -> Result<(), LearnerError> {
        let every = self.config.ref_refresh_steps;
        if every > 0 && self.step.is_multiple_of(every) {
            if let Some(reference) = self.reference.as_mut() {
                reference.params.copy_from_slice(&self.policy.params);
                self.engine.upload(ModelRole::Frozen, reference)?;
            }
        }
        Ok(())
    }

    /// A sampler on `device` generating with the policy as the learner's engine holds it, in
    /// `precision`: on the learner's GPU from its own device weights (no second copy, nothing
    /// uploaded), on another GPU from a device-to-device copy of them; on the CPU as
    /// `Sampler::with_precision` does. The learner is borrowed while it samples.
    pub fn sampler(
        &mut self,
        device: Device,
        precision: r1_kernels::device::Precision,
        max_batch: usize,
    ) -> Result<r1_kernels::sample::Sampler<'_>, LearnerError> {
        let engine = self.engine.decoder(device, &self.policy, precision)?;
        Ok(r1_kernels::sample::Sampler::with_engine(
            &self.policy,
            max_batch,
            engine,
        ))
    }

    /// Brings the host copy of the policy up to date with the engine's (a no-op on the CPU).
    pub fn sync_policy(&mut self) -> Result<(), LearnerError> {
        Ok(self.engine.download_params(&mut self.policy)?)
    }

    /// Brings the host AdamW moments up to date with the engine's (a no-op on the CPU): before
    /// reading `optimizer` for a checkpoint.
    pub fn sync_optimizer(&mut self) -> Result<(), LearnerError> {
        Ok(self.engine.download_optimizer(&mut self.optimizer)?)
    }

    /// The AdamW state as the engine holds it now (a copy of `optimizer`, its moments
    /// downloaded from the device where they live there).
    pub fn optimizer_state(&self) -> Result<AdamW, EngineError> {
        as_held(self.engine.as_ref(), &self.optimizer)
    }

    /// The optimizer updates of a step ([`GrpoLearner::step_with`] without the host copy's
    /// refresh, the step count and the reference refresh) and its statistics.
    fn updates(
        &mut self,
        rollouts: &[Rollout],
        old_source: OldLogp,
    ) -> Result<(GrpoStepStats, LearnerPhases), LearnerError> {
        let cfg = self.config.clone();
        let g = cfg.group_size.max(1);
        check_rollouts(rollouts, g)?;
        self.prepare_engine()?;
        let mut phases = LearnerPhases {
            reused_policy_logp: old_source == OldLogp::Auto && self.on_policy(rollouts.len()),
            ..LearnerPhases::default()
        };
        let rewards: Vec<f64> = rollouts.iter().map(|r| r.reward).collect();
        let (advantages, t, per) = step_shape(rollouts, &rewards, &cfg);
        let chunks: Vec<(usize, Vec<&Rollout>)> = rollouts
            .chunks(per)
            .enumerate()
            .map(|(i, c)| (i * per, c.iter().collect()))
            .collect();
        let batches: Vec<PaddedBatch> = chunks
            .iter()
            .map(|(_, c)| {
                let mut batch = pad_rollouts(c, t, cfg.mask_truncated);
                self.share_prompts(&mut batch, c);
                batch
            })
            .collect();

        // π_old (with the sampling policy's entropy) and π_ref, before any update. On-policy,
        // π_old is the training pass's own log-probs and the entropy comes from that pass too.
        let mut old = Vec::with_capacity(batches.len());
        let mut refs = Vec::with_capacity(batches.len());
        let (mut entropy_sum, mut entropy_n) = (0.0, 0.0);
        for batch in &batches {
            if !phases.reused_policy_logp {
                let clock = Instant::now();
                let (lp, ent) = logprobs(
                    self.engine.as_mut(),
                    ModelRole::Trained,
                    &self.policy,
                    batch,
                    true,
                )?;
                for (e, m) in ent.iter().zip(&batch.mask) {
                    entropy_sum += (*e * *m) as f64;
                    entropy_n += *m as f64;
                }
                old.push(lp);
                phases.old_logp += clock.elapsed().as_secs_f64();
            }
            let clock = Instant::now();
            refs.push(match &self.reference {
                Some(reference) => {
                    logprobs(
                        self.engine.as_mut(),
                        ModelRole::Frozen,
                        reference,
                        batch,
                        false,
                    )?
                    .0
                }
                None => Vec::new(),
            });
            phases.ref_logp += clock.elapsed().as_secs_f64();
        }

        let mut stats = GrpoStepStats::default();
        let mut mismatch = Vec::new();
        let (mut loss_sum, mut norm_sum, mut kl_sum, mut low_sum, mut high_sum) =
            (0.0, 0.0, 0.0, 0.0, 0.0);
        for epoch in 0..cfg.epochs.max(1) {
            for (k, ((start, _), batch)) in chunks.iter().zip(&batches).enumerate() {
                let adv = &advantages[*start..*start + batch.b];
                let weights = aggregation_weights(&batch.mask, batch.t, &cfg.grpo);
                let mut objective = GrpoObjective {
                    config: cfg.grpo,
                    old_logp: old.get(k).map(Vec::as_slice),
                    ref_logp: &refs[k],
                    advantages: adv,
                    weights: &weights,
                    t: batch.t,
                    sequence: Vec::new(),
                    sampler_logp: batch.sampler(),
                    sampler_sequence: Vec::new(),
                };
                let entropy = phases.reused_policy_logp;
                let out = self.accumulate_gradients(batch, &mut objective, entropy, &mut phases)?;
                if phases.reused_policy_logp {
                    for (e, m) in out.entropy.iter().zip(&batch.mask) {
                        entropy_sum += (*e * *m) as f64;
                        entropy_n += *m as f64;
                    }
                }
                let (norm, lr) = self.apply_update(None, &mut phases)?;
                stats.optimizer_steps += 1;
                stats.lr = lr;
                norm_sum += norm;
                if epoch + 1 == cfg.epochs.max(1) {
                    let token_stats = objective.stats(&out.logp);
                    mismatch.extend(objective.sampler_mismatch(&out.logp));
                    loss_sum += out.loss;
                    kl_sum += token_stats.kl_mean;
                    low_sum += token_stats.clip_low_fraction;
                    high_sum += token_stats.clip_high_fraction;
                }
            }
        }
        let n = rollouts.len() as f64;
        let lens: Vec<usize> = rollouts.iter().map(|r| r.completion_ids.len()).collect();
        let mean = rewards.iter().sum::<f64>() / n;
        let nb = batches.len() as f64;
        stats.loss = loss_sum / nb;
        stats.reward_mean = mean;
        stats.reward_std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
        stats.frac_zero_std = zero_std_groups(&rewards, g) as f64 / (rollouts.len() / g) as f64;
        stats.kl = if self.reference.is_some() {
            kl_sum / nb
        } else {
            0.0
        };
        stats.entropy = if entropy_n > 0.0 {
            entropy_sum / entropy_n
        } else {
            0.0
        };
        stats.clip_low_fraction = low_sum / nb;
        stats.clip_high_fraction = high_sum / nb;
        stats.grad_norm = norm_sum / stats.optimizer_steps.max(1) as f64;
        stats.completion_len_mean = lens.iter().sum::<usize>() as f64 / n;
        stats.completion_len_max = lens.iter().copied().max().unwrap_or(0);
        stats.truncated_fraction = rollouts.iter().filter(|r| r.truncated).count() as f64 / n;
        stats.sampler = SamplerMismatch::combine(&mismatch);
        stats.memory = self.memory_parts();
        stats.tokens_trained = rollouts
            .iter()
            .filter(|r| !(cfg.mask_truncated && r.truncated))
            .map(|r| r.completion_ids.len())
            .sum();
        Ok((stats, phases))
    }

    /// Sets the gradients to d loss / d params of `batch` under `objective`: forward, GSPO's
    /// sequence terms when the objective is at sequence level, the fused head (with entropies
    /// when `entropy`), backward. The head's output (loss, log-probs) is returned.
    /// [`GrpoLearner::step_with`] calls it per minibatch; a data-parallel replica per share of
    /// one.
    pub(crate) fn accumulate_gradients(
        &mut self,
        batch: &PaddedBatch,
        objective: &mut GrpoObjective<'_>,
        entropy: bool,
        phases: &mut LearnerPhases,
    ) -> Result<HeadOutput, LearnerError> {
        self.engine.zero_grads()?;
        let engine = self.engine.as_mut();
        let (policy, trained) = (&self.policy, ModelRole::Trained);
        let clock = Instant::now();
        batch.forward(engine, trained, policy)?;
        phases.forward += clock.elapsed().as_secs_f64();
        phases.batch_tokens += batch.b * batch.t;
        phases.engine_tokens += batch.engine_tokens();
        phases.engine_row = batch.shared.as_ref().map_or(batch.t, |s| s.t);
        let clock = Instant::now();
        let gspo = objective.config.importance_sampling_level == ImportanceSamplingLevel::Sequence;
        if gspo || objective.sampler_needs_current() {
            // GSPO, or a per-sequence sampler weight on-policy: a token's gradient depends on
            // its whole completion's log-probs, so they are computed first (one more pass of the
            // head's logits).
            let current = batch.head(engine, trained, policy, None, false, false)?;
            objective.set_sampler_rows(&current.logp);
            if gspo {
                objective.sequence = SequenceTerm::of_rows(objective, &current.logp);
            }
        } else if let Some(old) = objective.old_logp {
            // Per-sequence sampler weights from π_old, known before the pass.
            objective.set_sampler_rows(old);
        }
        let out = batch.head(engine, trained, policy, Some(&*objective), true, entropy)?;
        phases.head += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        batch.backward(engine, policy)?;
        phases.backward += clock.elapsed().as_secs_f64();
        Ok(out)
    }

    /// One optimizer step with the gradients as they are: clipped to the global norm, AdamW at
    /// the scheduled learning rate, the optimizer clock advanced. `owned` = `None` updates every
    /// parameter on the engine's device; `Some(range)` only `range`, whose moments are all
    /// `self.optimizer` holds (ZeRO-1: the other ranges are another replica's), on the host copy,
    /// which the caller completes with the other shards and uploads
    /// ([`GrpoLearner::upload_policy`]). Returns (norm before clipping, lr).
    pub(crate) fn apply_update(
        &mut self,
        owned: Option<std::ops::Range<usize>>,
        phases: &mut LearnerPhases,
    ) -> Result<(f64, f64), LearnerError> {
        let clock = Instant::now();
        let norm = self.engine.clip_grad_norm(self.config.max_grad_norm)?;
        let lr = self.config.schedule.lr_at(self.optimizer_step);
        match owned {
            None => self
                .engine
                .adamw_step(&mut self.policy, &mut self.optimizer, lr as f32)?,
            Some(range) => {
                let mut grads = vec![0.0f32; self.policy.layout.total];
                self.engine.download_grads(&mut grads)?;
                self.optimizer.update_range(
                    &mut self.policy.params,
                    &grads,
                    &self.policy.layout,
                    range,
                    lr as f32,
                );
            }
        }
        phases.optimizer += clock.elapsed().as_secs_f64();
        self.optimizer_step += 1;
        Ok((norm, lr))
    }

    /// Sets the gradients to zero (a replica with no rows in a minibatch).
    pub(crate) fn zero_gradients(&mut self) -> Result<(), LearnerError> {
        Ok(self.engine.zero_grads()?)
    }

    /// Copies the gradients (flat layout) into `out`: what a data-parallel replica all-reduces
    /// between [`GrpoLearner::accumulate_gradients`] and [`GrpoLearner::apply_update`].
    pub(crate) fn download_gradients(&self, out: &mut [f32]) -> Result<(), LearnerError> {
        Ok(self.engine.download_grads(out)?)
    }

    /// Replaces the gradients with `grads` (the all-reduced sum).
    pub(crate) fn load_gradients(&mut self, grads: &[f32]) -> Result<(), LearnerError> {
        Ok(self.engine.load_grads(grads)?)
    }

    /// Sums the gradients with the other replicas of `group` on the devices (NCCL).
    pub(crate) fn all_reduce_gradients(
        &mut self,
        group: &r1_kernels::collective::nccl::NcclCollective,
    ) -> Result<(), LearnerError> {
        self.engine.all_reduce_grads(group).map_err(|e| match e {
            EngineError::Collective(c) => LearnerError::Collective(c),
            other => other.into(),
        })
    }

    /// Sets the engine up for a step as the config asks (activation checkpointing).
    pub(crate) fn prepare_engine(&mut self) -> Result<(), LearnerError> {
        Ok(self
            .engine
            .set_activation_checkpointing(self.config.activation_checkpointing)?)
    }

    /// Lays `batch` (of `rollouts`) out with shared prompts when the config asks for it
    /// (`LearnerConfig::share_prompts`), the engine can, and it computes less.
    pub(crate) fn share_prompts(&self, batch: &mut PaddedBatch, rollouts: &[&Rollout]) {
        if self.config.share_prompts {
            batch.share_prompts(
                self.engine.as_ref(),
                &self.policy,
                rollouts,
                self.config.activation_checkpointing,
            );
        }
    }

    /// Places the host copy of the policy on the engine's device again, after the caller changed
    /// it (ZeRO-1's gathered shards).
    pub(crate) fn upload_policy(&mut self) -> Result<(), LearnerError> {
        Ok(self.engine.upload(ModelRole::Trained, &self.policy)?)
    }

    /// Log-probs of `batch`'s targets under the policy (and entropies when `entropy`).
    pub(crate) fn policy_logprobs(
        &mut self,
        batch: &PaddedBatch,
        entropy: bool,
    ) -> Result<(Vec<f32>, Vec<f32>), LearnerError> {
        logprobs(
            self.engine.as_mut(),
            ModelRole::Trained,
            &self.policy,
            batch,
            entropy,
        )
    }

    /// Log-probs of `batch`'s targets under the reference; empty without one (β = 0).
    pub(crate) fn reference_logprobs(
        &mut self,
        batch: &PaddedBatch,
    ) -> Result<Vec<f32>, LearnerError> {
        match &self.reference {
            Some(reference) => Ok(logprobs(
                self.engine.as_mut(),
                ModelRole::Frozen,
                reference,
                batch,
                false,
            )?
            .0),
            None => Ok(Vec::new()),
        }
    }
}

/// One supervised example: a token sequence and which of its tokens are learned (1) — the
/// response — and which are only context (0) — the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftExample {
    /// Prompt and response tokens.
    pub ids: Vec<u32>,
    /// Per token of `ids`: 1 where the model is trained to predict it.
    pub loss_mask: Vec<f32>,
}

/// What one SFT step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SftStepStats {
    /// Mean cross-entropy over the learned tokens.
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Learned tokens in the batch.
    pub tokens: usize,
}

/// Checks that every example has at least one next-token pair and a mask entry per token.
fn validate_sft(batch: &[SftExample]) -> Result<(), LearnerError> {
    if batch.is_empty() {
        return Err(LearnerError::Batch("the SFT batch is empty".into()));
    }
    for (i, ex) in batch.iter().enumerate() {
        if ex.ids.len() < 2 || ex.ids.len() != ex.loss_mask.len() {
            return Err(LearnerError::Batch(format!(
                "example {i}: {} ids and {} mask entries (need equal lengths of at least 2)",
                ex.ids.len(),
                ex.loss_mask.len()
            )));
        }
    }
    Ok(())
}

/// Supervised fine-tuning: masked cross-entropy on the response tokens.
pub struct SftTrainer {
    /// The model being trained.
    pub model: Model,
    /// AdamW state.
    pub optimizer: AdamW,
    /// Learning rate per step.
    pub schedule: LrSchedule,
    /// Global gradient-norm clip (0 disables).
    pub max_grad_norm: f64,
    /// Optimizer steps taken.
    pub step: u64,
    /// The device the model computes on: activations, gradients, AdamW.
    engine: Box<dyn TrainEngine>,
}

impl SftTrainer {
    /// A trainer for `model`.
    pub fn new(model: Model, adamw: AdamWConfig, schedule: LrSchedule, max_grad_norm: f64) -> Self {
        let optimizer = AdamW::new(adamw, model.layout.total);
        let engine = Box::new(CpuTrainEngine::new(&model, true));
        SftTrainer {
            model,
            optimizer,
            schedule,
            max_grad_norm,
            step: 0,
            engine,
        }
    }

    /// A trainer for `model` on `device`; a device that cannot be opened is an error naming it.
    pub fn new_on(
        device: Device,
        model: Model,
        adamw: AdamWConfig,
        schedule: LrSchedule,
        max_grad_norm: f64,
    ) -> Result<Self, LearnerError> {
        let optimizer = AdamW::try_new(adamw, model.layout.total)?;
        let engine = device::open(device, &model, true)?;
        Ok(SftTrainer {
            model,
            optimizer,
            schedule,
            max_grad_norm,
            step: 0,
            engine,
        })
    }

    /// The device the trainer computes on.
    pub fn device(&self) -> Device {
        self.engine.device()
    }

    /// This trainer computing through `engine` instead (a device layer of the caller's; the
    /// tests use `device::resident::ResidentCpuEngine`), which takes over its optimizer state.
    pub fn with_engine(mut self, engine: Box<dyn TrainEngine>) -> Result<Self, LearnerError> {
        self.engine = taking_over(engine, &self.optimizer)?;
        Ok(self)
    }

    /// The AdamW state as the engine holds it now (the moments downloaded from the device
    /// where they live there): what a checkpoint saves.
    pub fn optimizer_state(&self) -> Result<AdamW, EngineError> {
        as_held(self.engine.as_ref(), &self.optimizer)
    }

    /// Continues from `optimizer` (a checkpoint's moments and step count); a device that cannot
    /// take them over says so.
    pub fn resume_optimizer(&mut self, optimizer: AdamW) -> Result<(), LearnerError> {
        self.engine.load_optimizer(&optimizer)?;
        self.optimizer = optimizer;
        Ok(())
    }

    /// One optimizer step on a batch (rows padded to the longest).
    pub fn step(&mut self, batch: &[SftExample]) -> Result<SftStepStats, LearnerError> {
        validate_sft(batch)?;
        let t = batch.iter().map(|e| e.ids.len() - 1).max().unwrap_or(1);
        let rows: Vec<Vec<&SftExample>> = batch.iter().map(|e| vec![e]).collect();
        self.train_rows(&rows, t, false)
    }

    /// One optimizer step with the examples packed into rows of `row_len` positions (first fit,
    /// in order): fewer padded positions, and each example still sees only itself (positions
    /// restart and attention stops at its boundary), so the loss equals `step`'s on the same batch.
    pub fn step_packed(
        &mut self,
        batch: &[SftExample],
        row_len: usize,
    ) -> Result<SftStepStats, LearnerError> {
        validate_sft(batch)?;
        if let Some((i, e)) = batch
            .iter()
            .enumerate()
            .find(|(_, e)| e.ids.len() - 1 > row_len)
        {
            return Err(LearnerError::Batch(format!(
                "example {i}: {} positions do not fit rows of {row_len}",
                e.ids.len() - 1
            )));
        }
        let mut rows: Vec<Vec<&SftExample>> = Vec::new();
        let mut used: Vec<usize> = Vec::new();
        for ex in batch {
            let need = ex.ids.len() - 1;
            match used.iter().position(|&u| u + need <= row_len) {
                Some(r) => {
                    rows[r].push(ex);
                    used[r] += need;
                }
                None => {
                    rows.push(vec![ex]);
                    used.push(need);
                }
            }
        }
        self.train_rows(&rows, row_len, true)
    }

    /// Lays out rows of examples (next-token pairs of each, back to back), trains one step.
    fn train_rows(
        &mut self,
        rows: &[Vec<&SftExample>],
        t: usize,
        packed: bool,
    ) -> Result<SftStepStats, LearnerError> {
        let b = rows.len();
        let mut inputs = vec![0u32; b * t];
        let mut targets = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        let mut segments: Vec<Vec<usize>> = Vec::with_capacity(b);
        for (row, examples) in rows.iter().enumerate() {
            let mut at = row * t;
            let mut lengths = Vec::with_capacity(examples.len());
            for ex in examples {
                let n = ex.ids.len() - 1;
                inputs[at..at + n].copy_from_slice(&ex.ids[..n]);
                targets[at..at + n].copy_from_slice(&ex.ids[1..]);
                mask[at..at + n].copy_from_slice(&ex.loss_mask[1..]);
                lengths.push(n);
                at += n;
            }
            segments.push(lengths);
        }
        let tokens = mask.iter().filter(|&&m| m != 0.0).count();
        let weights = WeightedCrossEntropy::mean_weights(&mask);
        let objective = WeightedCrossEntropy { weights: &weights };
        let engine = self.engine.as_mut();
        let trained = ModelRole::Trained;
        engine.zero_grads()?;
        let segments: &[Vec<usize>] = if packed { &segments } else { &[] };
        engine.forward(trained, &self.model, (b, t), segments, &inputs)?;
        let out = engine.head(
            trained,
            &self.model,
            &targets,
            Some(&objective),
            true,
            false,
        )?;
        engine.backward(&self.model, &inputs)?;
        let grad_norm = engine.clip_grad_norm(self.max_grad_norm)?;
        let lr = self.schedule.lr_at(self.step);
        engine.adamw_step(&mut self.model, &mut self.optimizer, lr as f32)?;
        // One update per step: the host weights follow each (the moments only for a
        // checkpoint, `SftTrainer::optimizer_state`).
        engine.download_params(&mut self.model)?;
        self.step += 1;
        Ok(SftStepStats {
            loss: out.loss,
            grad_norm,
            lr,
            tokens,
        })
    }
}
