//! The device layer's two interfaces, and `open_*`, which picks their implementation for a
//! `Device`. Callers (the learners, the sampler, the reward-model trainer and scorer, the
//! benchmarks) hold a `Box<dyn TrainEngine>` or `Box<dyn DecodeEngine>` and never branch on the
//! device; the CPU implementation wraps `cpu::*` call for call (bit-identical to calling it
//! directly), the CUDA one wraps `cuda::DeviceModel` / `cuda::DeviceDecoder`.
//!
//! The host `Model` stays the source of truth the rest of r1 reads (checkpoints, weight sync,
//! exports): every call takes it. The CPU engine computes on it in place; the CUDA engine keeps
//! device copies, uploads a model the first time it sees it in a role (`ModelRole`) or when told
//! to (`upload`), and writes updated weights back into the host model after each AdamW step.
//!
//! Shape legend: B = sequences, T = tokens per sequence, N = B·T, V = vocab.

use rand_chacha::ChaCha8Rng;

use super::{Device, Precision};
use crate::alloc::MemoryPart;
use crate::error::{EngineError, Result};
use crate::model::{Model, RewardModel};
use crate::sample::{Pick, SamplingParams};
use crate::train::adamw::AdamW;
use crate::train::head::{HeadOutput, TokenObjective};

/// Which of a worker's models a call is about. A learner trains one model and may run a frozen
/// second one (GRPO's reference) on the same device; on the CPU both share one activation arena,
/// on a GPU each has its own resident copy of the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelRole {
    /// The model being trained: gradients, AdamW moments.
    Trained,
    /// A model only evaluated (GRPO's reference, a reward model that scores).
    Frozen,
}

/// One model resident on a device for training: forward over a packed batch, the fused LM head
/// with any `TokenObjective` (cross-entropy, log-prob + entropy, GRPO), the reward model's scalar
/// head, backward, the gradient norm and clipping, AdamW, and the transfers a learner needs
/// (weights up and down, gradients down and up for a data-parallel all-reduce).
///
/// Gradients live in the engine, in the model's flat layout; `backward` and `reward_backward`
/// accumulate into them (`+=`), `zero_grads` clears them.
pub trait TrainEngine: Send {
    /// The device this engine computes on.
    fn device(&self) -> Device;

    /// (Re)places `model`'s weights on the device in `role`, after the host copy changed outside
    /// the engine (a reference refreshed from the policy, weights loaded into a replica). A no-op
    /// on the CPU, which computes on the host copy.
    fn upload(&mut self, role: ModelRole, model: &Model) -> Result<()>;

    /// Runs the transformer over `ids` [B, T] and keeps what `head` and `backward` need. Each
    /// row holds the sequences of `segments[b]` back to back (positions restart and attention
    /// stops at each boundary); `segments` empty means one sequence per row.
    fn forward(
        &mut self,
        role: ModelRole,
        model: &Model,
        shape: (usize, usize),
        segments: &[Vec<usize>],
        ids: &[u32],
    ) -> Result<()>;

    /// Turns activation checkpointing on or off for the next forward passes
    /// (`cpu::Activations::with_checkpointing`: the residual stream entering each layer is
    /// kept, the rest recomputed by `backward`; the same results, less memory, one more forward
    /// pass of compute). Devices without it refuse `true`.
    fn set_activation_checkpointing(&mut self, on: bool) -> Result<()> {
        if on {
            return Err(unsupported(self.device(), "activation checkpointing"));
        }
        Ok(())
    }

    /// Whether `forward_shared` computes on this device. The learner lays a group's completions
    /// over one copy of their prompt where it does, and one rollout per row where it does not.
    fn shares_prompts(&self) -> bool {
        false
    }

    /// `forward` over rows of groups that share a prompt (`rows[b]`, as
    /// `cpu::Activations::set_layout` lays them out): each branch is computed as if it
    /// followed its prompt in a row of its own. Devices without it say so
    /// ([`TrainEngine::shares_prompts`]).
    fn forward_shared(
        &mut self,
        _role: ModelRole,
        _model: &Model,
        _shape: (usize, usize),
        _rows: &[Vec<crate::cpu::SharedGroup>],
        _ids: &[u32],
    ) -> Result<()> {
        Err(unsupported(self.device(), "forward with shared prompts"))
    }

    /// The fused LM head over the last forward pass: per-token log p(target) (and entropy when
    /// `want_entropy` or the objective reads it), the objective's loss, and with `train` its
    /// gradients (LM-head weight into the gradients, hidden states kept for `backward`).
    fn head(
        &mut self,
        role: ModelRole,
        model: &Model,
        targets: &[u32],
        objective: Option<&dyn TokenObjective>,
        train: bool,
        want_entropy: bool,
    ) -> Result<HeadOutput>;

    /// Backpropagates what `head` (or `reward_backward`'s head) left through the transformer of
    /// the trained model, accumulating every parameter's gradient.
    fn backward(&mut self, model: &Model, ids: &[u32]) -> Result<()>;

    /// The reward model's scalar head after a forward pass of `ids` [B, T] (run here): the reward
    /// of each sequence at its scored position `positions[b]`.
    fn reward_forward(
        &mut self,
        role: ModelRole,
        rm: &RewardModel,
        shape: (usize, usize),
        ids: &[u32],
        positions: &[usize],
    ) -> Result<Vec<f32>>;

    /// Backpropagates d loss / d r_b from the last `reward_forward` (trained role) through the
    /// score head and the transformer, accumulating into the gradients.
    fn reward_backward(
        &mut self,
        rm: &RewardModel,
        ids: &[u32],
        positions: &[usize],
        d_rewards: &[f32],
    ) -> Result<()>;

    /// Sets every gradient to 0.
    fn zero_grads(&mut self) -> Result<()>;

    /// Scales the gradients so their global L2 norm is at most `max_norm` (≤ 0 disables);
    /// returns the norm before clipping.
    fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64>;

    /// One AdamW step of the trained model at learning rate `lr` with `optimizer`'s
    /// hyper-parameters and state; `optimizer.step` counts it. The CPU engine updates `model`
    /// and `optimizer` (the host copies it computes on) in place. A device that keeps the
    /// weights and moments (CUDA) updates its own and leaves the host copies as they were, so a
    /// step of many minibatches moves nothing over the bus: the caller brings them up to date
    /// when it reads them (`download_params`, `download_optimizer`).
    fn adamw_step(&mut self, model: &mut Model, optimizer: &mut AdamW, lr: f32) -> Result<()>;

    /// Copies the moments the device's `adamw_step` left into `optimizer` (host), when the
    /// device holds its latest state (its step count is `optimizer.step`); otherwise the host
    /// state is the newer one and stays. A no-op on the CPU, which steps the host `AdamW`.
    fn download_optimizer(&self, _optimizer: &mut AdamW) -> Result<()> {
        Ok(())
    }

    /// Makes `optimizer`'s state (moments, step count) the one `adamw_step` continues from: a
    /// resumed learner calls it once. The CPU engine steps the host `AdamW` itself (nothing to
    /// do); a device that keeps moments of its own must take them over or refuse.
    fn load_optimizer(&mut self, optimizer: &AdamW) -> Result<()>;

    /// Copies the accumulated gradients into `out` (the model's flat layout): what a
    /// data-parallel learner all-reduces.
    fn download_grads(&self, out: &mut [f32]) -> Result<()>;

    /// Replaces the gradients with `grads` (e.g. the all-reduced mean across replicas).
    fn load_grads(&mut self, grads: &[f32]) -> Result<()>;

    /// Sums the gradients across `group` in place on the device (NCCL): what
    /// `download_grads`, a host all-reduce and `load_grads` do through host memory. Every rank
    /// calls it at the same point with the same layout. Devices without it say so.
    fn all_reduce_grads(&mut self, _group: &crate::collective::nccl::NcclCollective) -> Result<()> {
        Err(unsupported(
            self.device(),
            "all-reducing gradients through NCCL",
        ))
    }

    /// Copies the trained model's weights as the device holds them into `model.params` (a no-op
    /// on the CPU, which computes on them in place).
    fn download_params(&self, model: &mut Model) -> Result<()>;

    /// A decode engine on `device` generating with the trained model's weights as this engine
    /// holds them, in `precision`; `model` is that role's host copy, current (the learner's
    /// policy after its step). A device that keeps the weights (CUDA) decodes from them where
    /// they are when `device` is its own — no second copy, nothing moved — and copies them
    /// device to device onto another GPU; otherwise (the CPU, a CPU sampler) the decoder is
    /// opened on `model` as `open_decoder_with` does.
    fn decoder<'a>(
        &'a mut self,
        device: Device,
        model: &'a Model,
        precision: Precision,
    ) -> Result<Box<dyn DecodeEngine + 'a>> {
        open_decoder_with(device, precision, model)
    }

    /// Bytes of the activation arena as last planned (0 before the first forward).
    fn arena_bytes(&self) -> usize;

    /// Bytes of the activation arena this engine would plan for a forward pass of `model` over
    /// `shape` = (rows, positions), with activation checkpointing when `checkpointed`: what the
    /// learner's shared-prompt planner compares layouts by.
    fn arena_bytes_for(&self, model: &Model, shape: (usize, usize), checkpointed: bool) -> f64;
}

/// How one sequence draws its next token: its parameters, and its randomness. The CPU draws
/// from `rng` (the sequence's own ChaCha stream); the GPU from a counter-based generator keyed
/// by `seed` and `counter` (the sequence's token index), so that a draw does not depend on the
/// batch. The two devices draw different tokens from the same request; each is deterministic.
pub struct Draw<'a> {
    /// Temperature, top-k, top-p, min-p.
    pub params: &'a SamplingParams,
    /// The sequence's RNG (CPU).
    pub rng: &'a mut ChaCha8Rng,
    /// The sequence's seed (GPU).
    pub seed: u64,
    /// Tokens the sequence has generated so far (GPU).
    pub counter: u64,
}

/// A prompt after its one prefill: what every sample of its group starts from.
pub struct PromptPrefix {
    /// Prompt tokens.
    pub(crate) len: usize,
    /// What the device keeps to start a sample from it.
    pub(crate) state: PrefixState,
}

/// The device's form of a prefilled prompt.
pub(crate) enum PrefixState {
    /// Host copies: the next-token logits after the prompt [V] and keys/values per layer
    /// ([len, KVD] each), loaded into each sample's cache slot (CPU).
    Host {
        logits: Vec<f32>,
        kv: Vec<(Vec<f32>, Vec<f32>)>,
    },
    /// The prompt's tokens: each sample's slot is prefilled from them on the device and its
    /// first token drawn there (GPU; the device decoder has no cache-to-cache copy).
    Replay { ids: Vec<u32> },
}

impl PromptPrefix {
    /// Tokens of the prompt.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the prompt is empty (never, for a validated request).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Generation on a device: a KV cache of `slots` sequences, prompt prefill, batched decode
/// steps, and sampling next to the logits. The sampler's continuous batching, stop rules and
/// bookkeeping drive it (`sample::Sampler`).
pub trait DecodeEngine: Send {
    /// The device this engine decodes on.
    fn device(&self) -> Device;

    /// The precision of the weights it decodes with (never `Auto`).
    fn precision(&self) -> Precision;

    /// What it holds now, by category (host bytes; a GPU engine reports none here).
    fn memory_parts(&self) -> Vec<MemoryPart> {
        Vec::new()
    }

    /// Makes room for `slots` sequences of up to `max_len` positions and prompts of up to
    /// `max_prompt` tokens (`sequences` in all, for the memory check); keeps the current cache
    /// when it is large enough. Checks the memory before allocating.
    fn reserve(
        &mut self,
        slots: usize,
        max_len: usize,
        max_prompt: usize,
        sequences: usize,
    ) -> Result<()>;

    /// Prefills each prompt (`ids`, the cache slot it may borrow) and returns what its samples
    /// start from.
    fn prefill(&mut self, prompts: &[(&[u32], usize)]) -> Result<Vec<PromptPrefix>>;

    /// Starts a sequence in `slot` from `prefix` and draws its first token.
    fn admit(&mut self, prefix: &PromptPrefix, slot: usize, draw: Draw<'_>) -> Result<Pick>;

    /// One decode step: `tokens[s]` enters slot `slots[s]` at position `positions[s]`; draws
    /// each row's next token with `draws[s]`.
    fn step(
        &mut self,
        slots: &[usize],
        tokens: &[u32],
        positions: &[u32],
        draws: &mut [Draw<'_>],
    ) -> Result<Vec<Pick>>;
}

/// A training engine for `model` on `device`: gradients and optimizer work on the device when
/// `trainable`. The CPU engine allocates its gradient buffer fallibly; a CUDA device that is not
/// there is an error naming it (never a panic).
pub fn open(device: Device, model: &Model, trainable: bool) -> Result<Box<dyn TrainEngine>> {
    match device {
        Device::Cpu => Ok(Box::new(super::cpu::CpuTrainEngine::try_new(
            model, trainable,
        )?)),
        Device::Cuda(ordinal) => Ok(Box::new(super::cuda::CudaTrainEngine::open(
            ordinal, model, trainable,
        )?)),
    }
}

/// A decode engine for `model` on `device` (the sampler's), in the device's own precision.
pub fn open_decoder<'m>(device: Device, model: &'m Model) -> Result<Box<dyn DecodeEngine + 'm>> {
    open_decoder_with(device, Precision::Auto, model)
}

/// A decode engine for `model` on `device` with its weights in `precision`. The CUDA decoder
/// computes in bf16 only: f32 there is an `Unsupported` error naming the device.
pub fn open_decoder_with<'m>(
    device: Device,
    precision: Precision,
    model: &'m Model,
) -> Result<Box<dyn DecodeEngine + 'm>> {
    match (device, precision.on(device)) {
        (Device::Cpu, Precision::Bf16) => Ok(Box::new(super::cpu::CpuDecodeEngine::bf16(model)?)),
        (Device::Cpu, _) => Ok(Box::new(super::cpu::CpuDecodeEngine::new(model))),
        (Device::Cuda(_), Precision::F32) => Err(bf16_only(device)),
        (Device::Cuda(ordinal), _) => Ok(Box::new(super::cuda::CudaDecodeEngine::open(
            ordinal, model,
        )?)),
    }
}

/// The error for f32 decoding on a CUDA device, whose decoder computes in bf16 only.
pub(crate) fn bf16_only(device: Device) -> EngineError {
    unsupported(
        device,
        "f32 decoding (the CUDA decoder computes in bf16: sampler_precision = \"bf16\" or \"auto\")",
    )
}

/// The error for an op a device's backend does not implement: names the device and the op.
pub fn unsupported(device: Device, op: &str) -> EngineError {
    EngineError::Unsupported {
        device: device.to_string(),
        op: op.to_string(),
    }
}
