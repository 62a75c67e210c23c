//! The sampler: batched generation with a KV cache and continuous batching, returning what the
//! GRPO learner needs (token ids, both log-probs per token, why each sequence ended).
//!
//! - Each prompt is prefilled once, several prompts per pass, through the same batch-invariant
//!   kernels as decoding; its keys and values are copied into the cache slot of every sample of
//!   its group.
//! - Up to `max_batch` sequences decode together; a finished sequence frees its slot at once and
//!   the next waiting sequence takes it (continuous batching).
//! - Every sequence has its own RNG, seeded from its request's seed and its sample index, and its
//!   logits do not depend on what else is in the batch, so the same request gives the same tokens
//!   alone or in any mix.

pub mod pick;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use std::collections::HashMap;

use crate::device::{self, DecodeEngine, Device, Draw, Precision, PromptPrefix};
use crate::error::{EngineError, Result};
use crate::model::Model;
pub use pick::{pick, Pick, SamplingParams};

/// Turns token ids back into text, for stop strings and the returned completions. The tokenizer
/// implements it; tests may use anything.
pub trait Detokenizer {
    /// The text of `ids` (special tokens included as text or dropped, as the implementation
    /// documents).
    fn detokenize(&self, ids: &[u32]) -> String;
}

/// One prompt to complete `samples` times (a GRPO group when `samples` > 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    /// The tokenized prompt (template already applied).
    pub prompt_ids: Vec<u32>,
    /// Completions to draw from this prompt.
    pub samples: usize,
    /// Seed of this request; sample j uses stream j of it.
    pub seed: u64,
    /// How to draw.
    pub params: SamplingParams,
}

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// It produced an end-of-sequence (or stop) token.
    Eos,
    /// Its text contains one of the stop strings.
    Stop,
    /// It reached `max_new_tokens` or the model's context.
    Length,
}

/// One finished sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Index of its request.
    pub request: usize,
    /// Index of the sample within the request.
    pub sample: usize,
    /// Generated token ids (the end-of-sequence token included when that ended it).
    pub token_ids: Vec<u32>,
    /// Generated text, when a detokenizer was given: cut right after the stop string that ended it.
    pub text: Option<String>,
    /// log π_sample of each token (temperature and truncation applied; 0 when greedy).
    pub sampling_logprobs: Vec<f32>,
    /// log π of each token under the raw model (temperature 1): the learner's π_old.
    pub raw_logprobs: Vec<f32>,
    /// Why it ended.
    pub finish: FinishReason,
}

/// A prompt after its one prefill, until every sample of its group has started from it.
struct PrefilledPrompt {
    /// What the device keeps of it (keys, values and next-token logits on the CPU).
    prefix: PromptPrefix,
    /// Samples of the group not yet admitted; the prefill is dropped when it reaches 0.
    samples_left: usize,
}

/// A sequence being decoded.
struct Active {
    request: usize,
    slot: usize,
    rng: ChaCha8Rng,
    /// The sequence's seed for a device that draws from (seed, token index) instead of `rng`.
    seed: u64,
    prompt_len: usize,
    max_new: usize,
    out: Completion,
}

/// Generates completions for batches of requests on a device (`device::DecodeEngine`).
pub struct Sampler<'m> {
    model: &'m Model,
    /// Most sequences decoded at once.
    pub max_batch: usize,
    /// The device's decoder: KV cache and step buffers, kept between calls while large enough.
    engine: Box<dyn DecodeEngine + 'm>,
}

impl<'m> Sampler<'m> {
    /// A sampler for `model` on the CPU that decodes up to `max_batch` sequences together.
    pub fn new(model: &'m Model, max_batch: usize) -> Self {
        Sampler {
            model,
            max_batch: max_batch.max(1),
            engine: Box::new(device::cpu::CpuDecodeEngine::new(model)),
        }
    }

    /// A sampler for `model` on `device` (the CPU, or a GPU: an error naming the device when
    /// it cannot be opened).
    pub fn on_device(device: Device, model: &'m Model, max_batch: usize) -> Result<Self> {
        Self::with_precision(device, Precision::Auto, model, max_batch)
    }

    /// [`Sampler::on_device`] with its weights in `precision` (a bf16 copy of `model`'s, made
    /// here, or `model`'s own f32 weights).
    pub fn with_precision(
        device: Device,
        precision: Precision,
        model: &'m Model,
        max_batch: usize,
    ) -> Result<Self> {
        Ok(Sampler {
            model,
            max_batch: max_batch.max(1),
            engine: device::open_decoder_with(device, precision, model)?,
        })
    }

    /// A sampler for `model` decoding through `engine` (e.g. a training engine's
    /// `TrainEngine::decoder`, which decodes the weights that engine holds).
    pub fn with_engine(
        model: &'m Model,
        max_batch: usize,
        engine: Box<dyn DecodeEngine + 'm>,
    ) -> Self {
        Sampler {
            model,
            max_batch: max_batch.max(1),
            engine,
        }
    }

    /// The device it decodes on.
    pub fn device(&self) -> Device {
        self.engine.device()
    }

    /// What its engine holds now (KV cache, decoding buffers, a bf16 copy), by category.
    pub fn memory_parts(&self) -> Vec<crate::alloc::MemoryPart> {
        self.engine.memory_parts()
    }

    /// The precision of the weights it decodes with: f32 gives the learner's own log-probs;
    /// bf16's differ by the weights' rounding (the learner corrects for it).
    pub fn precision(&self) -> Precision {
        self.engine.precision()
    }

    /// The longest sequence (prompt + completion) the model accepts.
    pub fn context_len(&self) -> usize {
        self.model.config.max_position_embeddings
    }

    fn validate(&self, requests: &[GenerationRequest]) -> Result<()> {
        if requests.is_empty() {
            return Err(EngineError::Input("generate: the batch is empty".into()));
        }
        let v = self.model.config.vocab_size;
        for (i, r) in requests.iter().enumerate() {
            if r.prompt_ids.is_empty() {
                return Err(EngineError::Input(format!(
                    "request {i}: the prompt is empty"
                )));
            }
            if r.samples == 0 {
                return Err(EngineError::Input(format!(
                    "request {i}: samples must be at least 1"
                )));
            }
            if r.prompt_ids.len() >= self.context_len() {
                return Err(EngineError::Input(format!(
                    "request {i}: the prompt has {} tokens, the model's context is {}",
                    r.prompt_ids.len(),
                    self.context_len()
                )));
            }
            if let Some((p, &bad)) = r
                .prompt_ids
                .iter()
                .enumerate()
                .find(|(_, &t)| t as usize >= v)
            {
                return Err(EngineError::Input(format!(
                    "request {i}: token id {bad} at position {p} is outside the vocabulary of {v}"
                )));
            }
            r.params
                .validate()
                .map_err(|e| EngineError::Input(format!("request {i}: {e}")))?;
        }
        Ok(())
    }

    /// Prefills `prompts` (request index, slot) and returns what each prompt's samples start
    /// from.
    fn prefill(
        &mut self,
        requests: &[GenerationRequest],
        prompts: &[(usize, usize)],
    ) -> Result<Vec<PromptPrefix>> {
        let views: Vec<(&[u32], usize)> = prompts
            .iter()
            .map(|&(ri, slot)| (requests[ri].prompt_ids.as_slice(), slot))
            .collect();
        self.engine.prefill(&views)
    }

    /// Generates every sample of every request. Results are ordered by (request, sample).
    pub fn generate(
        &mut self,
        requests: &[GenerationRequest],
        detok: Option<&dyn Detokenizer>,
    ) -> Result<Vec<Completion>> {
        self.generate_streaming(requests, detok, &mut |_, _, _| {})
    }

    /// `generate`, calling `on_token(request, sample, token)` with each token as its sequence
    /// takes it (`r1ctl generate` prints them as they come). The tokens are those of `generate`.
    pub fn generate_streaming(
        &mut self,
        requests: &[GenerationRequest],
        detok: Option<&dyn Detokenizer>,
        on_token: &mut dyn FnMut(usize, usize, u32),
    ) -> Result<Vec<Completion>> {
        self.validate(requests)?;
        let model = self.model;
        let max_prompt = requests
            .iter()
            .map(|r| r.prompt_ids.len())
            .max()
            .unwrap_or(1);
        let context = self.context_len();
        let max_new =
            |r: &GenerationRequest| r.params.max_new_tokens.min(context - r.prompt_ids.len());
        let max_len = requests
            .iter()
            .map(|r| r.prompt_ids.len() + max_new(r))
            .max()
            .unwrap_or(1);
        let total = requests
            .iter()
            .try_fold(0usize, |a, r| a.checked_add(r.samples))
            .ok_or_else(|| {
                EngineError::Input("generate: the number of samples overflows".into())
            })?;
        let slots = self.max_batch.min(total);
        // Kept between calls while large enough; sized from the batch and the context and
        // checked against the memory available before the buffers exist.
        self.engine.reserve(slots, max_len, max_prompt, total)?;
        let mut free: Vec<usize> = (0..slots).rev().collect();
        let mut order: Vec<(usize, usize)> = Vec::new();
        let mut done: Vec<Completion> = Vec::new();
        let bookkeeping = |_| EngineError::Allocation {
            what: format!("the bookkeeping of {total} sequences"),
            bytes: crate::model::limits::format_bytes(
                total as f64 * std::mem::size_of::<(usize, usize, Completion)>() as f64,
            ),
        };
        order.try_reserve_exact(total).map_err(bookkeeping)?;
        done.try_reserve_exact(total).map_err(bookkeeping)?;
        order.extend(
            requests
                .iter()
                .enumerate()
                .flat_map(|(i, r)| (0..r.samples).map(move |j| (i, j))),
        );
        let mut next = 0;
        let mut prefilled: HashMap<usize, PrefilledPrompt> = HashMap::new();
        let mut active: Vec<Active> = Vec::new();
        let eos = &model.config.eos_token_ids;

        loop {
            // Prefill, in one batch, the prompts of the waiting sequences that will get a slot now
            // and whose prompt has not been prefilled (each prompt once; its slot is borrowed for it).
            let admitting = free.len().min(order.len() - next);
            let mut to_prefill: Vec<(usize, usize)> = Vec::new();
            for &(ri, _) in &order[next..next + admitting] {
                if !prefilled.contains_key(&ri) && to_prefill.iter().all(|&(r, _)| r != ri) {
                    to_prefill.push((ri, free[free.len() - 1 - to_prefill.len()]));
                }
            }
            if !to_prefill.is_empty() {
                for (prefix, &(ri, _)) in self
                    .prefill(requests, &to_prefill)?
                    .into_iter()
                    .zip(&to_prefill)
                {
                    prefilled.insert(
                        ri,
                        PrefilledPrompt {
                            samples_left: requests[ri].samples,
                            prefix,
                        },
                    );
                }
            }
            // Admit: each sequence starts from its prompt's keys, values and logits.
            for _ in 0..admitting {
                let (Some(slot), Some(&(ri, sj))) = (free.pop(), order.get(next)) else {
                    break;
                };
                next += 1;
                let request = &requests[ri];
                let prompt = prefilled
                    .get_mut(&ri)
                    .ok_or_else(|| EngineError::Input(format!("request {ri} was not prefilled")))?;
                let mut rng = ChaCha8Rng::seed_from_u64(request.seed);
                rng.set_stream(sj as u64);
                let mut seq = Active {
                    request: ri,
                    slot,
                    rng,
                    seed: sequence_seed(request.seed, sj),
                    prompt_len: prompt.prefix.len(),
                    max_new: max_new(request),
                    out: Completion {
                        request: ri,
                        sample: sj,
                        token_ids: Vec::new(),
                        text: None,
                        sampling_logprobs: Vec::new(),
                        raw_logprobs: Vec::new(),
                        finish: FinishReason::Length,
                    },
                };
                let chosen = self.engine.admit(
                    &prompt.prefix,
                    slot,
                    Draw {
                        params: &request.params,
                        rng: &mut seq.rng,
                        seed: seq.seed,
                        counter: 0,
                    },
                )?;
                prompt.samples_left -= 1;
                if prompt.samples_left == 0 {
                    prefilled.remove(&ri);
                }
                on_token(ri, sj, chosen.token);
                if let Some(finish) = accept(&mut seq, chosen, &request.params, eos, detok) {
                    finalize(&mut seq, finish, &request.params, detok);
                    free.push(seq.slot);
                    done.push(seq.out);
                } else {
                    active.push(seq);
                }
            }
            if active.is_empty() {
                if next == order.len() {
                    break;
                }
                continue;
            }
            let slots_now: Vec<usize> = active.iter().map(|a| a.slot).collect();
            let tokens: Vec<u32> = active
                .iter()
                .map(|a| *a.out.token_ids.last().unwrap_or(&0))
                .collect();
            let positions: Vec<u32> = active
                .iter()
                .map(|a| (a.prompt_len + a.out.token_ids.len() - 1) as u32)
                .collect();
            let mut draws: Vec<Draw<'_>> = active
                .iter_mut()
                .map(|a| Draw {
                    params: &requests[a.request].params,
                    seed: a.seed,
                    counter: a.out.token_ids.len() as u64,
                    rng: &mut a.rng,
                })
                .collect();
            let picks = self
                .engine
                .step(&slots_now, &tokens, &positions, &mut draws)?;
            drop(draws);
            let mut still = Vec::with_capacity(active.len());
            for (mut seq, chosen) in active.drain(..).zip(picks) {
                let params = &requests[seq.request].params;
                on_token(seq.request, seq.out.sample, chosen.token);
                if let Some(finish) = accept(&mut seq, chosen, params, eos, detok) {
                    finalize(&mut seq, finish, params, detok);
                    free.push(seq.slot);
                    done.push(seq.out);
                } else {
                    still.push(seq);
                }
            }
            active = still;
        }
        done.sort_by_key(|c| (c.request, c.sample));
        Ok(done)
    }
}

/// The seed of sample `sample` of a request seeded `seed`, for devices that draw from a
/// counter-based generator (splitmix64 of both, so neighbouring samples get unrelated streams).
fn sequence_seed(seed: u64, sample: usize) -> u64 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    mix(seed ^ mix((sample as u64).wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

/// Appends the chosen token; returns why the sequence ends, if it does.
fn accept(
    seq: &mut Active,
    chosen: Pick,
    params: &SamplingParams,
    eos: &[u32],
    detok: Option<&dyn Detokenizer>,
) -> Option<FinishReason> {
    seq.out.token_ids.push(chosen.token);
    seq.out.sampling_logprobs.push(chosen.sampling_logprob);
    seq.out.raw_logprobs.push(chosen.raw_logprob);
    if (!params.ignore_eos && eos.contains(&chosen.token))
        || params.stop_token_ids.contains(&chosen.token)
    {
        return Some(FinishReason::Eos);
    }
    if let (Some(detok), false) = (detok, params.stop_strings.is_empty()) {
        // A stop string that just appeared ends within the newest token and starts at most its
        // byte length earlier; each token is at least one byte, so a short tail suffices.
        let longest = params
            .stop_strings
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0);
        let tail = &seq.out.token_ids[seq.out.token_ids.len().saturating_sub(longest + 4)..];
        let text = detok.detokenize(tail);
        if params
            .stop_strings
            .iter()
            .any(|s| text.contains(s.as_str()))
        {
            return Some(FinishReason::Stop);
        }
    }
    if seq.out.token_ids.len() >= seq.max_new {
        return Some(FinishReason::Length);
    }
    None
}

/// Records the finish reason and the text (cut after the stop string that ended it).
fn finalize(
    seq: &mut Active,
    finish: FinishReason,
    params: &SamplingParams,
    detok: Option<&dyn Detokenizer>,
) {
    seq.out.finish = finish;
    let Some(detok) = detok else { return };
    let mut text = detok.detokenize(&seq.out.token_ids);
    if finish == FinishReason::Stop {
        let end = params
            .stop_strings
            .iter()
            .filter_map(|s| text.find(s.as_str()).map(|at| at + s.len()))
            .min();
        if let Some(end) = end {
            text.truncate(end);
        }
    }
    seq.out.text = Some(text);
}
