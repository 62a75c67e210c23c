//! The sampler: greedy decoding against transformers, batch-independence, log-probs that match
//! the learner's recomputation, continuous batching, stop strings and bad input.

use std::path::{Path, PathBuf};

use r1_kernels::cpu::{self, Activations};
use r1_kernels::model::{load_model_dir, Model};
use r1_kernels::sample::{
    Completion, Detokenizer, FinishReason, GenerationRequest, Sampler, SamplingParams,
};
use r1_kernels::train::WeightedCrossEntropy;

fn model_dir(name: &str) -> PathBuf {
    std::env::var_os("R1_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("models")
        .join(name)
}

fn request(prompt: &[u32], samples: usize, seed: u64, params: SamplingParams) -> GenerationRequest {
    GenerationRequest {
        prompt_ids: prompt.to_vec(),
        samples,
        seed,
        params,
    }
}

/// The learner's log-prob of each completion token after `prompt` (its forward pass and head).
fn learner_logprobs(model: &Model, prompt: &[u32], completion: &[u32]) -> Vec<f32> {
    let ids: Vec<u32> = prompt.iter().chain(completion).copied().collect();
    let (inputs, targets) = (&ids[..ids.len() - 1], &ids[1..]);
    let mut acts = Activations::new(model, 1, inputs.len());
    cpu::forward(model, &mut acts, inputs).unwrap();
    let zero = vec![0.0; inputs.len()];
    let head = cpu::head(
        model,
        &mut acts,
        targets,
        Some(&WeightedCrossEntropy { weights: &zero }),
        None,
        false,
    )
    .unwrap();
    head.logp[prompt.len() - 1..].to_vec()
}

fn sampling(max_new_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        max_new_tokens,
        ignore_eos: true,
        ..Default::default()
    }
}

#[test]
fn greedy_decoding_matches_transformers() {
    // The KV-cache decoder (prefill + one step per token) against transformers' cached greedy.
    for name in ["tiny-qwen2", "tiny-llama", "tiny-qwen3"] {
        let model = load_model_dir(&model_dir(name)).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(model_dir(name).join("reference.json")).unwrap())
                .unwrap();
        let ids = |k: &str| -> Vec<u32> {
            json["greedy"][k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        let greedy = SamplingParams {
            temperature: 0.0,
            max_new_tokens: 16,
            ignore_eos: true,
            ..Default::default()
        };
        let out = Sampler::new(&model, 4)
            .generate(&[request(&ids("prompt_ids"), 1, 0, greedy)], None)
            .unwrap();
        assert_eq!(out[0].token_ids, ids("new_ids"), "{name}");
        assert_eq!(out[0].finish, FinishReason::Length);
    }
}

#[test]
fn a_request_gives_the_same_tokens_alone_and_in_any_batch() {
    let model = load_model_dir(&model_dir("tiny-qwen2")).unwrap();
    let target = request(&[10, 124, 253, 105, 215], 3, 42, sampling(24));
    let alone = Sampler::new(&model, 8)
        .generate(std::slice::from_ref(&target), None)
        .unwrap();
    // Mixed: other prompts of other lengths before and after, and only 2 slots, so the target's
    // samples are admitted at different times next to different neighbours.
    let batch = vec![
        request(&[3, 4, 5, 6, 7, 8, 9, 10, 11], 2, 7, sampling(5)),
        target.clone(),
        request(
            &[200],
            4,
            9,
            SamplingParams {
                temperature: 0.7,
                top_k: 20,
                ..sampling(31)
            },
        ),
    ];
    for max_batch in [1, 2, 5, 16] {
        let mixed = Sampler::new(&model, max_batch)
            .generate(&batch, None)
            .unwrap();
        let mine: Vec<&Completion> = mixed.iter().filter(|c| c.request == 1).collect();
        assert_eq!(mine.len(), 3);
        for (a, b) in alone.iter().zip(mine) {
            assert_eq!(
                a.token_ids, b.token_ids,
                "max_batch {max_batch}, sample {}",
                a.sample
            );
            assert_eq!(a.raw_logprobs, b.raw_logprobs);
            assert_eq!(a.sampling_logprobs, b.sampling_logprobs);
        }
        assert_eq!(mixed.len(), 9);
    }
    // Samples of one group differ from each other (each has its own RNG stream).
    assert_ne!(alone[0].token_ids, alone[1].token_ids);
}

#[test]
fn a_bf16_sampler_is_batch_invariant_and_its_logprobs_stay_near_the_learners() {
    use r1_kernels::device::{Device, Precision};
    for name in ["tiny-qwen2", "tiny-llama", "tiny-qwen3"] {
        let model = load_model_dir(&model_dir(name)).unwrap();
        let prompt = [5u32, 17, 99, 3];
        let mine = request(&prompt, 3, 7, sampling(24));
        let other = request(&[9, 8, 7, 6, 5, 4], 5, 2, sampling(30));
        let bf16 = |requests: &[GenerationRequest], batch: usize| {
            let mut s =
                Sampler::with_precision(Device::Cpu, Precision::Bf16, &model, batch).unwrap();
            assert_eq!(s.precision(), Precision::Bf16);
            s.generate(requests, None).unwrap()
        };
        // The same tokens and log-probs alone, in a batch with another request, and again.
        let alone = bf16(std::slice::from_ref(&mine), 3);
        let mixed = bf16(&[other.clone(), mine.clone()], 8);
        let mixed_mine: Vec<Completion> = mixed
            .into_iter()
            .filter(|c| c.request == 1)
            .map(|c| Completion { request: 0, ..c })
            .collect();
        assert_eq!(alone, mixed_mine, "{name}: batch changed a bf16 sequence");
        assert_eq!(alone, bf16(std::slice::from_ref(&mine), 3), "{name}");
        // The learner's f32 log-probs of the tokens the bf16 sampler drew: the mismatch the
        // learner corrects for.
        let mut worst = 0.0f32;
        for c in &alone {
            for (a, b) in learner_logprobs(&model, &prompt, &c.token_ids)
                .iter()
                .zip(&c.raw_logprobs)
            {
                worst = worst.max((a - b).abs());
            }
        }
        // Rounding weights and products' inputs to bf16 moves a log-prob a little, not nothing.
        assert!(worst > 0.0 && worst < 0.1, "{name}: bf16 mismatch {worst}");
    }
}

#[test]
fn raw_logprobs_equal_the_learners_recomputation() {
    for name in ["tiny-qwen2", "tiny-llama"] {
        let model = load_model_dir(&model_dir(name)).unwrap();
        let prompt = [5u32, 17, 99, 3, 250, 8, 64];
        let out = Sampler::new(&model, 4)
            .generate(&[request(&prompt, 4, 1, sampling(40))], None)
            .unwrap();
        for c in &out {
            let worst = learner_logprobs(&model, &prompt, &c.token_ids)
                .iter()
                .zip(&c.raw_logprobs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-4,
                "{name}: sampler vs learner log-prob differ by {worst}"
            );
        }
    }
}

#[test]
fn continuous_batching_completes_every_sequence_of_a_large_group() {
    let model = load_model_dir(&model_dir("tiny-llama")).unwrap();
    let eos = model.config.eos_token_ids.clone();
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: 20,
        ..Default::default()
    };
    let requests: Vec<_> = (0..3)
        .map(|i| request(&[7 + i, 8, 9], 6, i as u64, params.clone()))
        .collect();
    let out = Sampler::new(&model, 4).generate(&requests, None).unwrap();
    assert_eq!(out.len(), 18);
    for c in &out {
        assert_eq!(c.token_ids.len(), c.raw_logprobs.len());
        match c.finish {
            FinishReason::Eos => assert!(eos.contains(c.token_ids.last().unwrap())),
            FinishReason::Length => assert_eq!(c.token_ids.len(), 20),
            FinishReason::Stop => panic!("no stop strings were given"),
        }
        assert!(c.raw_logprobs.iter().all(|&l| l <= 0.0 && l.is_finite()));
    }
}

/// Bytes as Latin-1 characters: enough to test stop strings without a real tokenizer.
struct Latin1;
impl Detokenizer for Latin1 {
    fn detokenize(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| char::from(i as u8)).collect()
    }
}

#[test]
fn stop_strings_end_the_sequence_and_cut_the_text() {
    let model = load_model_dir(&model_dir("tiny-qwen2")).unwrap();
    // Greedy on this prompt produces 73,73,73,61,61…: 'I','I','I','=','=' in Latin-1.
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 16,
        stop_strings: vec!["I=".into()],
        ignore_eos: true,
        ..Default::default()
    };
    let out = Sampler::new(&model, 2)
        .generate(
            &[request(&[10, 124, 253, 105, 215], 1, 0, params)],
            Some(&Latin1),
        )
        .unwrap();
    assert_eq!(out[0].finish, FinishReason::Stop);
    assert_eq!(out[0].token_ids, vec![73, 73, 73, 61]);
    assert_eq!(out[0].text.as_deref(), Some("III="));
}

#[test]
fn bad_requests_are_clear_errors() {
    let model: Model = load_model_dir(&model_dir("tiny-qwen2")).unwrap();
    let mut sampler = Sampler::new(&model, 2);
    let err = sampler.generate(&[], None).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    let long = vec![1u32; model.config.max_position_embeddings];
    let err = sampler
        .generate(&[request(&long, 1, 0, sampling(4))], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("context") && err.contains("request 0"),
        "{err}"
    );
    let err = sampler
        .generate(&[request(&[1, 999], 1, 0, sampling(4))], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("999") && err.contains("vocabulary"), "{err}");
    let bad = SamplingParams {
        top_p: 1.5,
        ..sampling(4)
    };
    let err = sampler
        .generate(
            &[
                request(&[1, 2], 1, 0, sampling(4)),
                request(&[1], 1, 0, bad),
            ],
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("request 1") && err.contains("top_p"), "{err}");
    let err = sampler
        .generate(&[request(&[], 1, 0, sampling(4))], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prompt is empty"), "{err}");
    // Generation that would run past the context stops there with Length.
    let near = vec![2u32; model.config.max_position_embeddings - 3];
    let out = sampler
        .generate(&[request(&near, 1, 0, sampling(50))], None)
        .unwrap();
    assert_eq!(
        (out[0].token_ids.len(), out[0].finish),
        (3, FinishReason::Length)
    );
}

#[test]
fn absurd_sample_counts_and_lengths_are_errors_not_aborts() {
    let mut config = r1_kernels::bench::builtin_config("tiny-qwen2").unwrap();
    config.max_position_embeddings = 1 << 24;
    let model = Model::random(config, 5, 0.05);
    let mut sampler = Sampler::new(&model, 64);
    // A GRPO group of 1e12 samples: its bookkeeping alone would need terabytes.
    let err = sampler
        .generate(
            &[request(&[1, 2, 3], 1_000_000_000_000, 0, sampling(4))],
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1000000000000 sequences") && err.contains("needs"),
        "{err}"
    );
    // A completion limit as long as a 16M-token context: a KV cache of hundreds of GiB.
    let err = sampler
        .generate(&[request(&[1, 2, 3], 64, 0, sampling(1 << 24))], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("KV cache") && err.contains("available"),
        "{err}"
    );
    // The same sampler still serves a sane request.
    let out = sampler
        .generate(&[request(&[1, 2, 3], 2, 0, sampling(4))], None)
        .unwrap();
    assert_eq!(out.len(), 2);
}
