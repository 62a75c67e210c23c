//! The device layer (`r1_kernels::device`): every op of the CPU engine is the direct `cpu::` /
//! `train::` call bit for bit; a CUDA device this machine lacks is a clear error from every entry
//! point, never a panic; and one test body runs on every device present (the CPU here; the GPU
//! too where there is one, held to the CPU within bf16 tolerance).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use r1_kernels::bench::builtin_config;
use r1_kernels::cpu::{self, Activations, DecodeScratch, KvCache, SharedGroup};
use r1_kernels::device::{self, Device, ModelRole, TrainEngine};
use r1_kernels::model::{Model, RewardModel};
use r1_kernels::sample::{pick, GenerationRequest, Sampler, SamplingParams};
use r1_kernels::train::reward::{reward_backward, reward_forward};
use r1_kernels::train::{clip_grad_norm, AdamW, AdamWConfig, WeightedCrossEntropy};

fn model() -> Model {
    Model::random(
        builtin_config("tiny-qwen2").expect("built-in shape"),
        5,
        0.05,
    )
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Ids and next-token targets of a [b, t] batch, deterministic.
fn batch(model: &Model, b: usize, t: usize, salt: u32) -> (Vec<u32>, Vec<u32>) {
    let v = model.config.vocab_size as u32;
    let ids: Vec<u32> = (0..(b * t) as u32)
        .map(|i| (i * 37 + salt * 11 + 3) % v)
        .collect();
    let targets: Vec<u32> = (0..(b * t) as u32)
        .map(|i| (i * 53 + salt + 1) % v)
        .collect();
    (ids, targets)
}

/// The devices of this machine: the CPU, and every GPU the driver lists.
fn devices() -> Vec<Device> {
    device::list().devices.iter().map(|d| d.device).collect()
}

#[test]
fn every_cpu_engine_op_is_the_direct_call_bit_for_bit() {
    // The engine's arena is reused across shapes (shrunk, then grown past its first size); the
    // direct calls get a new arena for each shape: the bits must not differ.
    let shapes = [(3, 7), (3, 7), (2, 5), (3, 9), (3, 7)];
    let (b, t) = shapes[0];
    let mut via = model();
    let mut direct = model();
    let mut engine = device::open(Device::Cpu, &via, true).unwrap();
    assert_eq!(engine.device(), Device::Cpu);
    let mut opt_via = AdamW::new(AdamWConfig::default(), via.layout.total);
    let mut opt_direct = opt_via.clone();
    let mut acts = Activations::new(&direct, b, t);
    let mut grads = vec![0f32; direct.layout.total];
    // Packed rows on the second step, one sequence per row on the others: the layout resets.
    let packed = vec![vec![3, 4], vec![7], vec![2, 2, 2]];
    for (step, &(b, t)) in (0..).zip(&shapes) {
        if (acts.b, acts.t) != (b, t) {
            acts = Activations::new(&direct, b, t);
        }
        let (ids, targets) = batch(&direct, b, t, step);
        let mask: Vec<f32> = (0..b * t).map(|i| (i % 3 != 0) as u32 as f32).collect();
        let weights = WeightedCrossEntropy::mean_weights(&mask);
        let objective = WeightedCrossEntropy { weights: &weights };
        let segments: &[Vec<usize>] = if step == 1 { &packed } else { &[] };

        engine.zero_grads().unwrap();
        engine
            .forward(ModelRole::Trained, &via, (b, t), segments, &ids)
            .unwrap();
        let out_via = engine
            .head(
                ModelRole::Trained,
                &via,
                &targets,
                Some(&objective),
                true,
                true,
            )
            .unwrap();
        engine.backward(&via, &ids).unwrap();
        let norm_via = engine.clip_grad_norm(0.5).unwrap();
        engine.adamw_step(&mut via, &mut opt_via, 1e-2).unwrap();

        grads.fill(0.0);
        acts.set_segments(segments).unwrap();
        cpu::forward(&direct, &mut acts, &ids).unwrap();
        let out = cpu::head(
            &direct,
            &mut acts,
            &targets,
            Some(&objective),
            Some(&mut grads),
            true,
        )
        .unwrap();
        cpu::backward(&direct, &mut acts, &ids, &mut grads).unwrap();
        let norm = clip_grad_norm(&mut grads, 0.5);
        let layout = direct.layout.clone();
        opt_direct.update(&mut direct.params, &grads, &layout, 1e-2);

        assert!(same_bits(&out_via.logp, &out.logp), "step {step}: logp");
        assert!(
            same_bits(&out_via.entropy, &out.entropy),
            "step {step}: entropy"
        );
        assert_eq!(
            out_via.loss.to_bits(),
            out.loss.to_bits(),
            "step {step}: loss"
        );
        assert_eq!(norm_via.to_bits(), norm.to_bits(), "step {step}: norm");
        let mut g = vec![0f32; via.layout.total];
        engine.download_grads(&mut g).unwrap();
        assert!(same_bits(&g, &grads), "step {step}: gradients");
        assert!(
            same_bits(&via.params, &direct.params),
            "step {step}: weights"
        );
        assert!(same_bits(&opt_via.m, &opt_direct.m), "step {step}: moments");
    }
    // Gradients loaded back (an all-reduce's result) are the ones the next step applies.
    let halves: Vec<f32> = grads.iter().map(|g| g * 0.5).collect();
    engine.load_grads(&halves).unwrap();
    let mut back = vec![0f32; halves.len()];
    engine.download_grads(&mut back).unwrap();
    assert!(same_bits(&back, &halves));
    assert!(engine.load_grads(&halves[1..]).is_err());
    assert!(engine.arena_bytes() > 0);
}

/// A Qwen3 shape (per-head q/k norms) of the tiny model's size.
fn qwen3() -> Model {
    let mut c = builtin_config("tiny-qwen2").expect("built-in shape");
    c.architecture = r1_kernels::model::Architecture::Qwen3;
    c.attention_bias = false;
    Model::random(c, 9, 0.05)
}

/// How the arena tests lay out their rows.
enum Layout<'a> {
    /// One sequence per row.
    Rows,
    /// Sequences packed back to back (`set_segments`).
    Packed(&'a [Vec<usize>]),
    /// Groups sharing a prompt (`set_layout`).
    Shared(&'a [Vec<SharedGroup>]),
}

/// One training pass of `model` over `acts` laid out as `layout`: forward, the head with
/// `objective` and entropies, backward. Returns (logp, entropy, loss, gradients).
fn train_pass(
    model: &Model,
    acts: &mut Activations,
    layout: &Layout<'_>,
    (ids, targets): (&[u32], &[u32]),
    objective: &WeightedCrossEntropy<'_>,
) -> (Vec<f32>, Vec<f32>, f64, Vec<f32>) {
    match layout {
        Layout::Rows => {}
        Layout::Packed(segments) => acts.set_segments(segments).unwrap(),
        Layout::Shared(groups) => acts.set_layout(groups).unwrap(),
    }
    let mut grads = vec![0f32; model.layout.total];
    cpu::forward(model, acts, ids).unwrap();
    let out = cpu::head(
        model,
        acts,
        targets,
        Some(objective),
        Some(&mut grads),
        true,
    )
    .unwrap();
    cpu::backward(model, acts, ids, &mut grads).unwrap();
    (out.logp, out.entropy, out.loss, grads)
}

#[test]
fn an_arena_full_of_nan_gives_the_bits_of_a_new_one() {
    // `Activations::reshape` keeps a learner's buffers with whatever they hold: this is what
    // makes that safe. Every op writes what it reads first — with and without packed rows, for a
    // Qwen2 and a Qwen3 (per-head norms) shape, and with groups sharing a prompt.
    let qwen3 = qwen3();
    let shared = vec![
        vec![SharedGroup {
            prompt: 3,
            branches: vec![2, 3],
        }],
        vec![SharedGroup {
            prompt: 9,
            branches: vec![],
        }],
        vec![
            SharedGroup {
                prompt: 2,
                branches: vec![2, 2],
            },
            SharedGroup {
                prompt: 1,
                branches: vec![1],
            },
        ],
    ];
    for model in [model(), qwen3] {
        // 0: one sequence per row; 1: packed rows; 2: groups sharing a prompt.
        for packed in [0, 1, 2] {
            let (b, t) = (3, 9);
            let (ids, targets) = batch(&model, b, t, 4);
            let mask: Vec<f32> = (0..b * t).map(|i| (i % 4 != 0) as u32 as f32).collect();
            let weights = WeightedCrossEntropy::mean_weights(&mask);
            let objective = WeightedCrossEntropy { weights: &weights };
            let segments = vec![vec![4, 5], vec![9], vec![2, 3, 3]];
            let layout = match packed {
                1 => Layout::Packed(&segments),
                2 => Layout::Shared(&shared),
                _ => Layout::Rows,
            };
            let run = |acts: &mut Activations| {
                train_pass(&model, acts, &layout, (&ids, &targets), &objective)
            };
            let fresh = run(&mut Activations::new(&model, b, t));
            let mut poisoned = Activations::new(&model, b, t);
            poisoned.fill(f32::NAN);
            let again = run(&mut poisoned);
            assert!(same_bits(&fresh.0, &again.0), "packed {packed}: logp");
            assert!(same_bits(&fresh.1, &again.1), "packed {packed}: entropy");
            assert_eq!(
                fresh.2.to_bits(),
                again.2.to_bits(),
                "packed {packed}: loss"
            );
            assert!(same_bits(&fresh.3, &again.3), "packed {packed}: gradients");
        }
    }
}

#[test]
fn activation_checkpointing_gives_the_same_bits_in_less_memory() {
    // The checkpointed arena keeps each layer's input and recomputes the rest in backward: the
    // same ops on the same inputs. Qwen2 and Qwen3 shapes; one sequence per row, packed rows,
    // shared prompts; a fresh arena and one full of NaN; the direct calls and the engine.
    let qwen3 = qwen3();
    let (b, t) = (3, 9);
    let segments = vec![vec![4, 5], vec![9], vec![2, 3, 3]];
    let shared = vec![
        vec![SharedGroup {
            prompt: 3,
            branches: vec![2, 3],
        }],
        vec![SharedGroup {
            prompt: 4,
            branches: vec![5],
        }],
        vec![SharedGroup {
            prompt: 2,
            branches: vec![2, 2, 2],
        }],
    ];
    for model in [model(), qwen3] {
        let (ids, targets) = batch(&model, b, t, 6);
        let mask: Vec<f32> = (0..b * t).map(|i| (i % 4 != 1) as u32 as f32).collect();
        let weights = WeightedCrossEntropy::mean_weights(&mask);
        let objective = WeightedCrossEntropy { weights: &weights };
        let layouts = [
            Layout::Rows,
            Layout::Packed(&segments),
            Layout::Shared(&shared),
        ];
        for (k, layout) in layouts.iter().enumerate() {
            let run = |acts: &mut Activations| {
                train_pass(&model, acts, layout, (&ids, &targets), &objective)
            };
            let mut full = Activations::new(&model, b, t);
            let want = run(&mut full);
            let mut kept = Activations::with_checkpointing(&model, b, t, true);
            // Two layers here: one layer's intermediates of two are saved.
            assert!(kept.checkpointed() && kept.bytes() < full.bytes());
            let got = run(&mut kept);
            kept.fill(f32::NAN);
            let again = run(&mut kept);
            for (what, got) in [("fresh", &got), ("NaN-filled", &again)] {
                let at = format!("layout {k}, {what} checkpointed arena");
                assert!(same_bits(&want.0, &got.0), "{at}: logp");
                assert!(same_bits(&want.1, &got.1), "{at}: entropy");
                assert_eq!(want.2.to_bits(), got.2.to_bits(), "{at}: loss");
                assert!(same_bits(&want.3, &got.3), "{at}: gradients");
            }
        }
        // Through the engine, switched on and off between steps.
        let mut engine = device::open(Device::Cpu, &model, true).unwrap();
        for on in [true, false, true] {
            engine.set_activation_checkpointing(on).unwrap();
            engine.zero_grads().unwrap();
            engine
                .forward(ModelRole::Trained, &model, (b, t), &segments, &ids)
                .unwrap();
            let out = engine
                .head(
                    ModelRole::Trained,
                    &model,
                    &targets,
                    Some(&objective),
                    true,
                    true,
                )
                .unwrap();
            engine.backward(&model, &ids).unwrap();
            let mut g = vec![0f32; model.layout.total];
            engine.download_grads(&mut g).unwrap();
            let (logp, _, _, grads) = train_pass(
                &model,
                &mut Activations::new(&model, b, t),
                &Layout::Packed(&segments),
                (&ids, &targets),
                &objective,
            );
            assert!(same_bits(&out.logp, &logp), "engine, on={on}: logp");
            assert!(same_bits(&g, &grads), "engine, on={on}: gradients");
        }
    }
}

#[test]
fn a_branch_after_a_shared_prompt_is_computed_as_a_row_of_its_own() {
    // Row 0: prompt p (4 tokens), then branches x (3) and y (2). Rows 1 and 2: p+x and p+y alone.
    let model = model();
    let (ids, _) = batch(&model, 1, 9, 2);
    let (p, x, y) = (&ids[..4], &ids[4..7], &ids[7..9]);
    let mut shared = Activations::new(&model, 1, 9);
    shared
        .set_layout(&[vec![SharedGroup {
            prompt: 4,
            branches: vec![3, 2],
        }]])
        .unwrap();
    cpu::forward(&model, &mut shared, &ids).unwrap();
    let c = model.config.hidden_size;
    let mut alone = Activations::new(&model, 2, 7);
    let rows: Vec<u32> = [p, x]
        .concat()
        .into_iter()
        .chain([p, y, &[0u32][..]].concat())
        .collect();
    cpu::forward(&model, &mut alone, &rows).unwrap();
    let (h, want) = (shared.hidden(), alone.hidden());
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(u, v)| (u - v).abs() <= 1e-5);
    // The prompt, and each branch, against the same positions of its own row.
    assert!(close(&h[..4 * c], &want[..4 * c]), "prompt");
    assert!(close(&h[4 * c..7 * c], &want[4 * c..7 * c]), "branch x");
    assert!(
        close(&h[7 * c..9 * c], &want[(7 + 4) * c..(7 + 6) * c]),
        "branch y"
    );
    // A layout that does not fit is refused.
    assert!(shared
        .set_layout(&[vec![SharedGroup {
            prompt: 4,
            branches: vec![3, 3],
        }]])
        .is_err());
    assert!(shared
        .set_layout(&[vec![SharedGroup {
            prompt: 4,
            branches: vec![0],
        }]])
        .is_err());
}

#[test]
fn the_reward_head_through_the_cpu_engine_is_the_direct_call() {
    let rm = RewardModel::from_causal_lm(&model(), Some(0), 9, 0.5);
    let (b, t) = (2, 6);
    let (ids, _) = batch(&rm.model, b, t, 4);
    let positions = [5, 3];
    let d = [0.25f32, -1.0];
    let mut engine = device::open(Device::Cpu, &rm.model, true).unwrap();
    let r_via = engine
        .reward_forward(ModelRole::Trained, &rm, (b, t), &ids, &positions)
        .unwrap();
    engine.zero_grads().unwrap();
    engine.reward_backward(&rm, &ids, &positions, &d).unwrap();
    let mut g_via = vec![0f32; rm.model.layout.total];
    engine.download_grads(&mut g_via).unwrap();

    let mut acts = Activations::new(&rm.model, b, t);
    let r = reward_forward(&rm, &mut acts, &ids, &positions).unwrap();
    let mut g = vec![0f32; rm.model.layout.total];
    reward_backward(&rm, &mut acts, &ids, &positions, &d, &mut g).unwrap();
    assert!(same_bits(&r_via, &r));
    assert!(same_bits(&g_via, &g));
    // A scored position outside the rows is an input error, not a panic.
    let err = engine
        .reward_forward(ModelRole::Trained, &rm, (b, t), &ids, &[9, 0])
        .unwrap_err();
    assert!(err.to_string().contains("position 9"), "{err}");
}

#[test]
fn an_inference_engine_refuses_training_ops_with_a_message() {
    let m = model();
    let mut engine = device::open(Device::Cpu, &m, false).unwrap();
    let err = engine.backward(&m, &[1, 2]).unwrap_err().to_string();
    assert!(
        err.contains("before any forward pass") || err.contains("inference only"),
        "{err}"
    );
    let (ids, targets) = batch(&m, 1, 4, 0);
    engine
        .forward(ModelRole::Frozen, &m, (1, 4), &[], &ids)
        .unwrap();
    let err = engine
        .head(ModelRole::Frozen, &m, &targets, None, true, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("inference only"), "{err}");
    assert!(engine.clip_grad_norm(1.0).is_err());
}

/// A CPU draw from `rng` (the GPU fields unused).
fn draw<'a>(params: &'a SamplingParams, rng: &'a mut ChaCha8Rng) -> device::Draw<'a> {
    device::Draw {
        params,
        rng,
        seed: 0,
        counter: 0,
    }
}

#[test]
fn the_cpu_decoder_is_decode_step_and_pick_bit_for_bit() {
    let m = model();
    let params = SamplingParams {
        temperature: 0.8,
        top_k: 10,
        ..SamplingParams::default()
    };
    let prompt: Vec<u32> = vec![3, 9, 27, 81];
    let mut engine = device::open_decoder(Device::Cpu, &m).unwrap();
    assert_eq!(engine.device(), Device::Cpu);
    engine.reserve(2, 12, prompt.len(), 2).unwrap();
    let prefix = engine.prefill(&[(&prompt, 0)]).unwrap().remove(0);
    assert_eq!(prefix.len(), prompt.len());
    let mut rng_a = ChaCha8Rng::seed_from_u64(1);
    let mut rng_b = ChaCha8Rng::seed_from_u64(2);
    let first_a = engine.admit(&prefix, 0, draw(&params, &mut rng_a)).unwrap();
    let first_b = engine.admit(&prefix, 1, draw(&params, &mut rng_b)).unwrap();
    let mut draws = vec![draw(&params, &mut rng_a), draw(&params, &mut rng_b)];
    let p = prompt.len() as u32;
    let picks = engine
        .step(
            &[0, 1],
            &[first_a.token, first_b.token],
            &[p, p],
            &mut draws,
        )
        .unwrap();

    // Direct: prefill slot 0, copy its prefix to slot 1, one step, `pick` per row.
    let mut cache = KvCache::new(&m, 2, 12).unwrap();
    let mut scratch = DecodeScratch::new(&m, 256, 12).unwrap();
    let positions: Vec<u32> = (0..p).collect();
    let last = [prompt.len() - 1];
    cpu::decode_step(
        &m,
        &mut cache,
        &mut scratch,
        &[0; 4],
        &prompt,
        &positions,
        Some(&last),
    )
    .unwrap();
    let logits = scratch.logits[..m.config.vocab_size].to_vec();
    let kv = cache.read_prefix(0, prompt.len());
    cache.load_prefix(1, &kv, prompt.len());
    let (mut ra, mut rb, mut order) = (
        ChaCha8Rng::seed_from_u64(1),
        ChaCha8Rng::seed_from_u64(2),
        Vec::new(),
    );
    let da = pick(&logits, &params, &mut ra, &mut order);
    let db = pick(&logits, &params, &mut rb, &mut order);
    assert_eq!((first_a, first_b), (da, db));
    cpu::decode_step(
        &m,
        &mut cache,
        &mut scratch,
        &[0, 1],
        &[da.token, db.token],
        &[p, p],
        None,
    )
    .unwrap();
    let v = m.config.vocab_size;
    let direct = [
        pick(&scratch.logits[..v], &params, &mut ra, &mut order),
        pick(&scratch.logits[v..2 * v], &params, &mut rb, &mut order),
    ];
    assert_eq!(picks, direct);
    // Draws must match the rows.
    assert!(engine.step(&[0], &[1], &[p + 1], &mut []).is_err());
}

#[test]
fn a_cuda_device_this_machine_lacks_is_a_clear_error_from_every_entry_point() {
    let list = device::list();
    let m = model();
    // The first ordinal this machine does not have: cuda:0 here, where there is no GPU.
    let missing = Device::Cuda(list.cuda_count());
    let name = missing.to_string();
    let err = device::open(missing, &m, true).err().expect("no such GPU");
    assert!(err.to_string().starts_with(&name), "{err}");
    let err = device::open(missing, &m, false).err().expect("no such GPU");
    assert!(err.to_string().contains(&name), "{err}");
    let err = device::open_decoder(missing, &m)
        .err()
        .expect("no such GPU");
    assert!(err.to_string().contains(&name), "{err}");
    let err = Sampler::on_device(missing, &m, 4)
        .err()
        .expect("no such GPU");
    assert!(err.to_string().contains(&name), "{err}");
    if list.cuda_count() == 0 {
        let why = device::open(Device::Cuda(0), &m, true)
            .err()
            .unwrap()
            .to_string();
        assert!(
            why.contains("no CUDA driver") || why.contains("does not exist"),
            "{why}"
        );
    }
}

/// One training step and one generation on `device`: the loss, the norm and a few sampled
/// tokens with their log-probs.
fn step_and_generate(dev: Device) -> (f64, f64, Vec<u32>) {
    let mut m = model();
    let mut engine: Box<dyn TrainEngine> = device::open(dev, &m, true).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default(), m.layout.total);
    let (b, t) = (2, 8);
    let (ids, targets) = batch(&m, b, t, 1);
    let weights = WeightedCrossEntropy::mean_weights(&vec![1.0; b * t]);
    let objective = WeightedCrossEntropy { weights: &weights };
    engine.zero_grads().unwrap();
    engine
        .forward(ModelRole::Trained, &m, (b, t), &[], &ids)
        .unwrap();
    let out = engine
        .head(
            ModelRole::Trained,
            &m,
            &targets,
            Some(&objective),
            true,
            false,
        )
        .unwrap();
    engine.backward(&m, &ids).unwrap();
    let norm = engine.clip_grad_norm(1.0).unwrap();
    engine.adamw_step(&mut m, &mut opt, 1e-3).unwrap();
    assert_eq!(opt.step, 1);
    let requests = [GenerationRequest {
        prompt_ids: vec![5, 6, 7],
        samples: 2,
        seed: 3,
        params: SamplingParams {
            temperature: 0.0,
            max_new_tokens: 4,
            ignore_eos: true,
            ..SamplingParams::default()
        },
    }];
    let mut sampler = Sampler::on_device(dev, &m, 2).unwrap();
    assert_eq!(sampler.device(), dev);
    let done = sampler.generate(&requests, None).unwrap();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|c| c.token_ids.len() == 4));
    (out.loss, norm, done[0].token_ids.clone())
}

#[test]
fn one_training_step_and_generation_on_every_device_present() {
    let (loss, norm, tokens) = step_and_generate(Device::Cpu);
    assert!(loss.is_finite() && norm > 0.0);
    for dev in devices().into_iter().filter(|d| *d != Device::Cpu) {
        let (l, n, toks) = step_and_generate(dev);
        // bf16 weights and activations on the GPU: the loss and norm within a few per cent.
        assert!(
            (l - loss).abs() <= 2e-2 * loss.abs(),
            "{dev}: loss {l} vs {loss}"
        );
        assert!((n - norm).abs() <= 5e-2 * norm, "{dev}: norm {n} vs {norm}");
        assert_eq!(toks.len(), tokens.len(), "{dev}");
    }
}
