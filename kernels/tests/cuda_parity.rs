//! Every GPU op against its CPU twin on fresh random inputs (‖gpu − cpu‖/‖cpu‖ ≤ 1e-2 where bf16
//! rounds something, ≤ 1e-5 for f32 paths), the fixtures' logits, gradients and greedy decode on
//! the GPU, and the error a machine without a driver gets. The GPU tests print why and return
//! where no GPU exists; the driver test runs everywhere.

use std::path::{Path, PathBuf};

use half::bf16;
use r1_kernels::cpu::ops::{self as cpu_ops, AttnShape, RopeTable};
use r1_kernels::cpu::{self, Activations, DecodeScratch, KvCache};
use r1_kernels::cuda::backend::device_count;
use r1_kernels::cuda::model as gpu;
use r1_kernels::cuda::ops as gops;
use r1_kernels::cuda::{
    CudaBackend, CudaError, DeviceActivations, DeviceDecoder, DeviceModel, DeviceSampling,
};
use r1_kernels::model::tiny::TinyModel;
use r1_kernels::model::{load_model_dir, Architecture, Model, ModelConfig};
use r1_kernels::train::head::HeadGrads;
use r1_kernels::train::{clip_grad_norm, lm_head, AdamW, AdamWConfig, WeightedCrossEntropy};

const BF16_BOUND: f64 = 1e-2;
const F32_BOUND: f64 = 1e-5;

/// The GPU, or None after printing why the test cannot run here.
fn gpu(test: &str) -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(be) => Some(be),
        Err(e) => {
            eprintln!("SKIP {test}: no GPU here ({e})");
            None
        }
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Rounds to bf16 and back: what the GPU stores.
fn bf(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}

fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}

fn widen(x: &[bf16]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

fn check(what: &str, got: &[f32], want: &[f32], bound: f64) {
    let e = rel_err(got, want);
    eprintln!("{what}: relative error {e:.2e} (bound {bound:.0e})");
    assert!(e <= bound, "{what}: relative error {e:.3e} > {bound:.0e}");
}

#[test]
fn without_a_driver_or_device_the_backend_is_an_error_not_a_panic() {
    match device_count() {
        Err(e) => {
            assert!(matches!(e, CudaError::NoDriver(_)), "{e}");
            let err = CudaBackend::new(0).err().expect("no driver, no backend");
            assert!(matches!(err, CudaError::NoDriver(_)), "{err}");
            assert!(err.to_string().contains("no CUDA driver"), "{err}");
        }
        Ok(count) => {
            let err = CudaBackend::new(count)
                .err()
                .expect("ordinal past the last device");
            assert!(
                matches!(err, CudaError::NoDevice { ordinal, .. } if ordinal == count),
                "{err}"
            );
        }
    }
}

#[test]
fn embedding_residual_and_casts_match_the_cpu() {
    let Some(be) = gpu("embedding") else { return };
    let (n, c, v) = (37, 48, 101);
    let wte = bf(&random(v * c, 1));
    // Repeated ids: several tokens add into one row of the gradient.
    let ids: Vec<u32> = (0..n).map(|i| ((i * 17) % 11 * 7) as u32).collect();
    let mut want = vec![0.0; n * c];
    cpu_ops::embedding_forward(&mut want, &ids, &wte, c);
    let d_wte = be.upload(&to_bf16(&wte)).unwrap();
    let d_ids = be.upload(&ids).unwrap();
    let out = be.alloc::<f32>(n * c).unwrap();
    gops::embedding_forward(&be, out.ptr(), d_ids.ptr(), d_wte.ptr(), n, c).unwrap();
    check(
        "embedding forward",
        &be.download(&out).unwrap(),
        &want,
        F32_BOUND,
    );

    let dout = random(n * c, 2);
    let mut want = random(v * c, 3);
    let dwte = be.upload(&want).unwrap();
    let d_dout = be.upload(&dout).unwrap();
    cpu_ops::embedding_backward(&mut want, &dout, &ids, c);
    gops::embedding_backward(&be, dwte.ptr(), d_dout.ptr(), &ids, c).unwrap();
    check(
        "embedding backward",
        &be.download(&dwte).unwrap(),
        &want,
        F32_BOUND,
    );

    let (a, b) = (random(1000, 4), random(1000, 5));
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let (da, db) = (be.upload(&a).unwrap(), be.upload(&b).unwrap());
    let out = be.alloc::<f32>(1000).unwrap();
    gops::residual_forward(&be, out.ptr(), da.ptr(), db.ptr(), 1000).unwrap();
    check(
        "residual forward",
        &be.download(&out).unwrap(),
        &want,
        F32_BOUND,
    );
    gops::residual_backward(&be, da.ptr(), db.ptr(), 1000).unwrap();
    check(
        "residual backward",
        &be.download(&da).unwrap(),
        &want,
        F32_BOUND,
    );

    let half = be.alloc::<bf16>(1000).unwrap();
    gops::cast_to_bf16(&be, half.ptr(), db.ptr(), 1000).unwrap();
    let got = be.download(&half).unwrap();
    assert_eq!(
        got,
        to_bf16(&b),
        "f32 → bf16 rounds to nearest even like `half`"
    );
}

#[test]
fn rmsnorm_matches_the_cpu() {
    let Some(be) = gpu("rmsnorm") else { return };
    let (n, c) = (19, 96);
    let x = random(n * c, 6);
    let w = bf(&random(c, 7));
    let mut want = vec![0.0; n * c];
    let mut rstd = vec![0.0; n];
    cpu_ops::rmsnorm_forward(&mut want, &mut rstd, &x, &w, c, 1e-6);
    let (dx, dw) = (be.upload(&x).unwrap(), be.upload(&to_bf16(&w)).unwrap());
    let out = be.alloc::<bf16>(n * c).unwrap();
    let d_rstd = be.alloc::<f32>(n).unwrap();
    gops::rmsnorm_forward(&be, out.ptr(), d_rstd.ptr(), dx.ptr(), dw.ptr(), n, c, 1e-6).unwrap();
    check(
        "rmsnorm forward",
        &widen(&be.download(&out).unwrap()),
        &want,
        BF16_BOUND,
    );
    check(
        "rmsnorm rstd",
        &be.download(&d_rstd).unwrap(),
        &rstd,
        F32_BOUND,
    );

    let dout = random(n * c, 8);
    let (mut dinp, mut dweight) = (random(n * c, 9), random(c, 10));
    let g_dinp = be.upload(&dinp).unwrap();
    let g_dweight = be.upload(&dweight).unwrap();
    let g_dout = be.upload(&dout).unwrap();
    cpu_ops::rmsnorm_backward(&mut dinp, &mut dweight, &dout, &x, &w, &rstd, c);
    gops::rmsnorm_backward(
        &be,
        g_dinp.ptr(),
        g_dweight.ptr(),
        g_dout.ptr(),
        dx.ptr(),
        dw.ptr(),
        d_rstd.ptr(),
        n,
        c,
    )
    .unwrap();
    check(
        "rmsnorm backward dinp",
        &be.download(&g_dinp).unwrap(),
        &dinp,
        F32_BOUND,
    );
    check(
        "rmsnorm backward dweight",
        &be.download(&g_dweight).unwrap(),
        &dweight,
        F32_BOUND,
    );
}

#[test]
fn matmul_forward_and_backward_match_the_cpu() {
    let Some(be) = gpu("matmul") else { return };
    let (n, c, oc) = (33, 64, 80);
    let (x, w, bias) = (
        bf(&random(n * c, 11)),
        bf(&random(oc * c, 12)),
        bf(&random(oc, 13)),
    );
    let mut want = vec![0.0; n * oc];
    cpu_ops::matmul_forward(&mut want, &x, &w, Some(&bias), n, c, oc);
    let (gx, gw, gb) = (
        be.upload(&to_bf16(&x)).unwrap(),
        be.upload(&to_bf16(&w)).unwrap(),
        be.upload(&to_bf16(&bias)).unwrap(),
    );
    let out = be.alloc::<f32>(n * oc).unwrap();
    gops::matmul_forward(
        &be,
        out.ptr(),
        gx.ptr(),
        gw.ptr(),
        Some(gb.ptr()),
        n,
        c,
        oc,
        false,
    )
    .unwrap();
    check(
        "matmul forward",
        &be.download(&out).unwrap(),
        &want,
        BF16_BOUND,
    );

    let dout = bf(&random(n * oc, 14));
    let (mut dinp, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; oc * c], vec![0.0; oc]);
    cpu_ops::matmul_backward(&mut dinp, &mut dw, Some(&mut db), &dout, &x, &w, n, c, oc);
    let (g_dinp, g_dw, g_db) = (
        be.zeros::<f32>(n * c).unwrap(),
        be.zeros::<f32>(oc * c).unwrap(),
        be.zeros::<f32>(oc).unwrap(),
    );
    let (g_dout16, g_dout32) = (
        be.upload(&to_bf16(&dout)).unwrap(),
        be.upload(&dout).unwrap(),
    );
    gops::matmul_backward(
        &be,
        g_dinp.ptr(),
        g_dw.ptr(),
        Some(g_db.ptr()),
        g_dout16.ptr(),
        g_dout32.ptr(),
        gx.ptr(),
        gw.ptr(),
        n,
        c,
        oc,
    )
    .unwrap();
    check(
        "matmul backward dinp",
        &be.download(&g_dinp).unwrap(),
        &dinp,
        BF16_BOUND,
    );
    check(
        "matmul backward dweight",
        &be.download(&g_dw).unwrap(),
        &dw,
        BF16_BOUND,
    );
    check(
        "matmul backward dbias",
        &be.download(&g_db).unwrap(),
        &db,
        F32_BOUND,
    );
}

#[test]
fn rope_and_swiglu_match_the_cpu() {
    let Some(be) = gpu("rope/swiglu") else { return };
    let (n, nh, nkv, hs) = (21, 4, 2, 16);
    let inv: Vec<f64> = (0..hs / 2)
        .map(|i| 1.0 / 10000f64.powf(2.0 * i as f64 / hs as f64))
        .collect();
    let table = RopeTable::new(&inv, 64);
    let positions: Vec<u32> = (0..n as u32).map(|i| (i * 3) % 64).collect();
    let qkv = random(n * (nh + 2 * nkv) * hs, 15);
    let mut want = qkv.clone();
    cpu_ops::rope_forward(&mut want, &positions, &table, nh, nkv, hs);
    let g = be.upload(&qkv).unwrap();
    let (cos, sin) = (
        be.upload(&table.cos).unwrap(),
        be.upload(&table.sin).unwrap(),
    );
    let gp = be.upload(&positions).unwrap();
    gops::rope_forward(
        &be,
        g.ptr(),
        gp.ptr(),
        (cos.ptr(), sin.ptr()),
        n,
        (nh, nkv, hs),
    )
    .unwrap();
    check("rope forward", &be.download(&g).unwrap(), &want, F32_BOUND);
    cpu_ops::rope_backward(&mut want, &positions, &table, nh, nkv, hs);
    gops::rope_backward(
        &be,
        g.ptr(),
        gp.ptr(),
        (cos.ptr(), sin.ptr()),
        n,
        (nh, nkv, hs),
    )
    .unwrap();
    check("rope backward", &be.download(&g).unwrap(), &want, F32_BOUND);

    let i = 40;
    let gu = random(n * 2 * i, 16);
    let mut h = vec![0.0; n * i];
    cpu_ops::swiglu_forward(&mut h, &gu, i);
    let g_gu = be.upload(&gu).unwrap();
    let g_h = be.alloc::<bf16>(n * i).unwrap();
    gops::swiglu_forward(&be, g_h.ptr(), g_gu.ptr(), n, i).unwrap();
    check(
        "swiglu forward",
        &widen(&be.download(&g_h).unwrap()),
        &h,
        BF16_BOUND,
    );
    let dh = random(n * i, 17);
    let mut dgu = random(n * 2 * i, 18);
    let g_dgu = be.upload(&dgu).unwrap();
    let g_dh = be.upload(&dh).unwrap();
    cpu_ops::swiglu_backward(&mut dgu, &dh, &gu, i);
    gops::swiglu_backward(&be, g_dgu.ptr(), g_dh.ptr(), g_gu.ptr(), n, i).unwrap();
    check(
        "swiglu backward",
        &be.download(&g_dgu).unwrap(),
        &dgu,
        F32_BOUND,
    );
}

#[test]
fn flash_attention_matches_the_cpu_forward_and_backward() {
    let Some(be) = gpu("attention") else { return };
    // T spans several 32-key chunks; 6 query heads share 2 kv heads; the second row is packed
    // with two sequences.
    let s = AttnShape {
        b: 2,
        t: 77,
        nh: 6,
        nkv: 2,
        hs: 40,
    };
    let width = (s.nh + 2 * s.nkv) * s.hs;
    let (n, qd) = (s.b * s.t, s.nh * s.hs);
    let qkv = random(n * width, 19);
    let mut seg = vec![0u32; n];
    for (i, v) in seg[s.t..].iter_mut().enumerate() {
        *v = if i < 30 { 0 } else { 30 };
    }
    let mut out = vec![0.0; n * qd];
    let mut att = vec![0.0; s.b * s.nh * s.t * s.t];
    cpu_ops::attention_forward(&mut out, &mut att, &qkv, &seg, s);
    let g_qkv = be.upload(&qkv).unwrap();
    let g_seg = be.upload(&seg).unwrap();
    let g_out = be.alloc::<f32>(n * qd).unwrap();
    let g_lse = be.alloc::<f32>(s.b * s.nh * s.t).unwrap();
    gops::attention_forward(&be, g_out.ptr(), g_lse.ptr(), g_qkv.ptr(), g_seg.ptr(), s).unwrap();
    check(
        "attention forward",
        &be.download(&g_out).unwrap(),
        &out,
        F32_BOUND,
    );

    let dout = random(n * qd, 20);
    let mut dqkv = vec![0.0; n * width];
    let mut datt = vec![0.0; att.len()];
    cpu_ops::attention_backward(&mut dqkv, &mut datt, &dout, &qkv, &att, s);
    let g_dqkv = be.zeros::<f32>(n * width).unwrap();
    let g_delta = be.alloc::<f32>(s.b * s.nh * s.t).unwrap();
    let g_dout = be.upload(&dout).unwrap();
    gops::attention_backward(
        &be,
        g_dqkv.ptr(),
        g_delta.ptr(),
        g_dout.ptr(),
        g_out.ptr(),
        g_qkv.ptr(),
        g_lse.ptr(),
        g_seg.ptr(),
        s,
    )
    .unwrap();
    check(
        "attention backward",
        &be.download(&g_dqkv).unwrap(),
        &dqkv,
        F32_BOUND,
    );
}

#[test]
fn adamw_and_gradient_clipping_match_the_cpu() {
    let Some(be) = gpu("adamw") else { return };
    let config = tiny_config(Architecture::Qwen2);
    let model = Model::random(config, 3, 0.05);
    let mut dm = DeviceModel::upload(&be, &model, 16, true).unwrap();
    let total = model.layout.total;
    let mut grads = random(total, 21);
    let cfg = AdamWConfig::default();
    let mut cpu_params = model.params.clone();
    let mut opt = AdamW::new(cfg, total);
    for step in 0..3 {
        let g = dm.download_grads(&be).unwrap();
        assert!(
            step > 0 || g.iter().all(|&x| x == 0.0),
            "gradients start at zero"
        );
        // Upload the same gradients to both sides through a backward-free path: zero, then add.
        let mut scaled: Vec<f32> = grads.iter().map(|g| g * 3.0).collect();
        let want_norm = clip_grad_norm(&mut scaled, 1.0);
        dm.zero_grads(&be).unwrap();
        upload_grads(&be, &dm, &grads.iter().map(|g| g * 3.0).collect::<Vec<_>>());
        let norm = dm.clip_grad_norm(&be, 1.0).unwrap();
        assert!(
            (norm - want_norm).abs() <= 1e-9 * want_norm,
            "{norm} vs {want_norm}"
        );
        check(
            "clipped gradients",
            &dm.download_grads(&be).unwrap(),
            &scaled,
            F32_BOUND,
        );
        opt.update(&mut cpu_params, &scaled, &model.layout, 1e-3);
        dm.adamw_step(&be, cfg, 1e-3).unwrap();
        grads = random(total, 22 + step);
    }
    check(
        "AdamW master weights after 3 steps",
        &dm.download_params(&be).unwrap(),
        &cpu_params,
        F32_BOUND,
    );
}

/// Writes `grads` into the model's gradient buffer (a test-only path: zero grads, then a
/// parameter download/upload swap would be heavier).
fn upload_grads(be: &CudaBackend, dm: &DeviceModel, grads: &[f32]) {
    dm.load_grads(be, grads).unwrap();
}

fn tiny_config(arch: Architecture) -> ModelConfig {
    TinyModel::engine(arch)
        .hidden(64)
        .intermediate(96)
        .vocab(97)
        .special(1, None)
        .into_config()
}

/// CPU forward + masked CE head + backward on the bf16-rounded model; GPU the same.
fn cpu_and_gpu_training_pass(
    be: &CudaBackend,
    model: &Model,
    ids: &[u32],
    targets: &[u32],
    b: usize,
    t: usize,
    segments: &[Vec<usize>],
) {
    let mut rounded = model.clone();
    rounded.params = bf(&model.params);
    let mask: Vec<f32> = (0..b * t)
        .map(|i| if i % 5 == 0 { 0.0 } else { 1.0 })
        .collect();
    let weights = WeightedCrossEntropy::mean_weights(&mask);
    let objective = WeightedCrossEntropy { weights: &weights };

    let mut acts = Activations::new(&rounded, b, t);
    acts.set_segments(segments).unwrap();
    cpu::forward(&rounded, &mut acts, ids).unwrap();
    let want_logits = cpu::logits(&rounded, &acts);
    let mut grads = vec![0.0; rounded.layout.total];
    let want = cpu::head(
        &rounded,
        &mut acts,
        targets,
        Some(&objective),
        Some(&mut grads),
        true,
    )
    .unwrap();
    cpu::backward(&rounded, &mut acts, ids, &mut grads).unwrap();

    let dm = DeviceModel::upload(be, model, t, true).unwrap();
    let mut dacts = DeviceActivations::new(be, &dm, b, t).unwrap();
    dacts.set_segments(be, segments).unwrap();
    gpu::forward(be, &dm, &mut dacts, ids).unwrap();
    check(
        "model logits",
        &gpu::logits(be, &dm, &dacts).unwrap(),
        &want_logits,
        BF16_BOUND,
    );
    let got = gpu::head(be, &dm, &mut dacts, targets, Some(&objective), true, true).unwrap();
    check("head log-probs", &got.logp, &want.logp, BF16_BOUND);
    check("head entropies", &got.entropy, &want.entropy, BF16_BOUND);
    assert!(
        ((got.loss - want.loss) / want.loss).abs() <= BF16_BOUND,
        "loss {} vs {}",
        got.loss,
        want.loss
    );
    gpu::backward(be, &dm, &mut dacts).unwrap();
    let g = dm.download_grads(be).unwrap();
    for slot in &model.layout.slots {
        // bf16 operands through a whole backward pass: each tensor within 3× the op bound.
        check(
            &format!("gradient {}", slot.name),
            &g[slot.range()],
            &grads[slot.range()],
            3.0 * BF16_BOUND,
        );
    }
}

#[test]
fn the_device_model_matches_the_cpu_forward_head_and_backward() {
    let Some(be) = gpu("device model") else {
        return;
    };
    for arch in [Architecture::Qwen2, Architecture::Llama] {
        let model = Model::random(tiny_config(arch), 5, 0.08);
        let (b, t) = (2, 45);
        let ids: Vec<u32> = (0..b * t).map(|i| ((i * 31 + 7) % 97) as u32).collect();
        let targets: Vec<u32> = (0..b * t).map(|i| ((i * 13 + 2) % 97) as u32).collect();
        cpu_and_gpu_training_pass(&be, &model, &ids, &targets, b, t, &[]);
        cpu_and_gpu_training_pass(&be, &model, &ids, &targets, b, t, &[vec![20, 25], vec![45]]);
    }
}

fn fixtures() -> PathBuf {
    std::env::var_os("R1_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

/// Reads f32 or i64 tensors of a fixture's reference dump.
fn reference_tensor(bytes: &[u8], name: &str) -> (Vec<f32>, Vec<usize>) {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("reference has no {name}"));
    let values = match t.dtype() {
        safetensors::Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        safetensors::Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    (values, t.shape().to_vec())
}

/// The fixture's logits and every gradient (Hugging Face's f32 dump) through the device model.
fn fixture_training_pass(be: &CudaBackend, model: &Model, path: &Path, name: &str) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (ids, shape) = reference_tensor(&bytes, "input_ids");
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    let targets: Vec<u32> = reference_tensor(&bytes, "targets")
        .0
        .iter()
        .map(|&x| x as u32)
        .collect();
    let mask = reference_tensor(&bytes, "loss_mask").0;
    let (b, t) = (shape[0], shape[1]);
    let dm = DeviceModel::upload(be, model, t, true).unwrap();
    let mut acts = DeviceActivations::new(be, &dm, b, t).unwrap();
    gpu::forward(be, &dm, &mut acts, &ids).unwrap();
    let want_logits = reference_tensor(&bytes, "logits").0;
    check(
        &format!("{name}: fixture logits"),
        &gpu::logits(be, &dm, &acts).unwrap(),
        &want_logits,
        BF16_BOUND,
    );
    let weights = WeightedCrossEntropy::mean_weights(&mask);
    let objective = WeightedCrossEntropy { weights: &weights };
    gpu::head(be, &dm, &mut acts, &targets, Some(&objective), true, false).unwrap();
    gpu::backward(be, &dm, &mut acts).unwrap();
    let grads = dm.download_grads(be).unwrap();
    for slot in &model.layout.slots {
        let want = reference_tensor(&bytes, &format!("grad.{}", slot.name)).0;
        check(
            &format!("{name}: fixture gradient {}", slot.name),
            &grads[slot.range()],
            &want,
            3.0 * BF16_BOUND,
        );
    }
}

/// The fixture's greedy continuation, decoded with the device KV cache and device sampling.
#[test]
fn fixtures_logits_gradients_and_greedy_decode_match_on_the_gpu() {
    let Some(be) = gpu("fixtures") else { return };
    for name in ["tiny-qwen2", "tiny-llama"] {
        let dir = fixtures().join("models").join(name);
        let model = load_model_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let ids_of = |key: &str| -> Vec<u32> {
            json["greedy"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        fixture_training_pass(&be, &model, &dir.join("reference.safetensors"), name);
        let prompt = ids_of("prompt_ids");
        let want = ids_of("new_ids");
        let max_len = prompt.len() + want.len() + 1;
        let dm = DeviceModel::upload(&be, &model, max_len, false).unwrap();
        let mut dec = DeviceDecoder::new(&be, &dm, 2, max_len, max_len).unwrap();
        // Prefill the prompt into slot 1 in one step, logits of its last row only.
        let positions: Vec<u32> = (0..prompt.len() as u32).collect();
        dec.step(
            &be,
            &dm,
            &vec![1; prompt.len()],
            &prompt,
            &positions,
            Some(&[prompt.len() - 1]),
        )
        .unwrap();
        let mut got = Vec::new();
        let mut pos = prompt.len() as u32;
        for step in 0..want.len() {
            let pick = dec
                .sample(
                    &be,
                    model.config.vocab_size,
                    &[DeviceSampling::greedy()],
                    &[step as u64],
                )
                .unwrap()[0];
            got.push(pick.token);
            if step + 1 < want.len() {
                dec.step(&be, &dm, &[1], &[pick.token], &[pos], None)
                    .unwrap();
                pos += 1;
            }
        }
        assert_eq!(
            got, want,
            "{name}: greedy continuation on the GPU differs from transformers'"
        );

        // Logits of the fixture's batch through the training path, and the CPU decoder's logits
        // for the same prompt.
        let mut cache = KvCache::new(&model, 1, max_len).unwrap();
        let mut scratch = DecodeScratch::new(&model, max_len, max_len).unwrap();
        cpu::decode_step(
            &model,
            &mut cache,
            &mut scratch,
            &vec![0; prompt.len()],
            &prompt,
            &positions,
            None,
        )
        .unwrap();
        let v = model.config.vocab_size;
        dec.step(&be, &dm, &vec![0; prompt.len()], &prompt, &positions, None)
            .unwrap();
        check(
            &format!("{name}: decode logits"),
            &dec.logits(&be, v).unwrap(),
            &scratch.logits[..prompt.len() * v],
            BF16_BOUND,
        );
    }
}

#[test]
fn device_sampling_is_seeded_truncates_and_matches_greedy_at_the_limits() {
    let Some(be) = gpu("sampling") else { return };
    let model = Model::random(tiny_config(Architecture::Llama), 9, 0.5);
    let v = model.config.vocab_size;
    let dm = DeviceModel::upload(&be, &model, 8, false).unwrap();
    let rows = 8;
    let mut dec = DeviceDecoder::new(&be, &dm, rows, 8, rows).unwrap();
    let slots: Vec<usize> = (0..rows).collect();
    let tokens: Vec<u32> = (0..rows as u32).map(|i| i * 11 % v as u32).collect();
    dec.step(&be, &dm, &slots, &tokens, &vec![0; rows], None)
        .unwrap();
    let logits = dec.logits(&be, v).unwrap();
    let greedy = dec
        .sample(
            &be,
            v,
            &vec![DeviceSampling::greedy(); rows],
            &vec![0; rows],
        )
        .unwrap();
    let sampling = |top_k, top_p, seed| DeviceSampling {
        temperature: 0.8,
        top_k,
        top_p,
        min_p: 0.0,
        seed,
    };
    let k1 = dec
        .sample(&be, v, &vec![sampling(1, 1.0, 3); rows], &vec![0; rows])
        .unwrap();
    let p_tiny = dec
        .sample(&be, v, &vec![sampling(0, 1e-6, 3); rows], &vec![0; rows])
        .unwrap();
    for r in 0..rows {
        let row = &logits[r * v..(r + 1) * v];
        let argmax = (0..v)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
            .unwrap() as u32;
        assert_eq!(
            greedy[r].token, argmax,
            "row {r}: greedy is the first argmax"
        );
        assert_eq!(k1[r].token, argmax, "row {r}: top_k = 1 is greedy");
        assert_eq!(
            p_tiny[r].token, argmax,
            "row {r}: a tiny top_p keeps only the argmax"
        );
        assert!(
            k1[r].sampling_logprob.abs() < 1e-6,
            "one kept token has probability 1"
        );
        let lse = row.iter().map(|&z| (z as f64).exp()).sum::<f64>().ln();
        assert!((greedy[r].raw_logprob as f64 - (row[argmax as usize] as f64 - lse)).abs() < 1e-4);
    }
    // The same seeds and counters give the same draws; top-k = 5 draws stay in the top 5.
    let params: Vec<_> = (0..rows as u64).map(|s| sampling(5, 1.0, s)).collect();
    let a = dec.sample(&be, v, &params, &vec![7; rows]).unwrap();
    let b = dec.sample(&be, v, &params, &vec![7; rows]).unwrap();
    assert_eq!(a, b, "sampling is a function of seed and counter");
    let mut distinct = std::collections::HashSet::new();
    for counter in 0..64u64 {
        let picks = dec.sample(&be, v, &params, &vec![counter; rows]).unwrap();
        for (r, p) in picks.iter().enumerate() {
            let row = &logits[r * v..(r + 1) * v];
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|&x, &y| row[y].total_cmp(&row[x]));
            assert!(
                order[..5].contains(&(p.token as usize)),
                "row {r}: token {} outside the top 5",
                p.token
            );
            distinct.insert((r, p.token));
        }
    }
    assert!(
        distinct.len() > rows,
        "temperature 0.8 over 5 tokens draws more than one token per row"
    );
    let bad = DeviceSampling {
        temperature: -1.0,
        ..DeviceSampling::greedy()
    };
    assert!(matches!(
        dec.sample(&be, v, &vec![bad; rows], &vec![0; rows]),
        Err(CudaError::Input(_))
    ));
}

#[test]
fn the_fused_classifier_matches_the_cpu_head_on_random_hidden_states() {
    let Some(be) = gpu("classifier") else { return };
    // Through the device model's head on a 1-layer model: compare against `lm_head` directly.
    let mut config = tiny_config(Architecture::Llama);
    config.num_layers = 1;
    config.vocab_size = 1000;
    let model = Model::random(config, 11, 0.1);
    let (b, t) = (3, 20);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 37 % 1000) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|i| (i * 91 % 1000) as u32).collect();
    let dm = DeviceModel::upload(&be, &model, t, true).unwrap();
    let mut acts = DeviceActivations::new(&be, &dm, b, t).unwrap();
    gpu::forward(&be, &dm, &mut acts, &ids).unwrap();
    let xf = acts.hidden(&be).unwrap();
    let (c, v) = (model.config.hidden_size, model.config.vocab_size);
    let w = bf(&model.params[model.layout.lm_head..model.layout.lm_head + v * c]);
    let weights = WeightedCrossEntropy::mean_weights(&vec![1.0; b * t]);
    let objective = WeightedCrossEntropy { weights: &weights };
    let (mut dxf, mut dw) = (vec![0.0; b * t * c], vec![0.0; v * c]);
    let mut scratch = Vec::new();
    let want = lm_head(
        &xf,
        &w,
        &targets,
        c,
        v,
        Some(&objective),
        Some(HeadGrads {
            dxf: &mut dxf,
            dweight: &mut dw,
        }),
        true,
        &mut scratch,
    )
    .unwrap();
    dm.zero_grads(&be).unwrap();
    let got = gpu::head(&be, &dm, &mut acts, &targets, Some(&objective), true, true).unwrap();
    check(
        "classifier log-probs",
        &got.logp,
        &want.logp,
        F32_BOUND * 10.0,
    );
    check(
        "classifier entropies",
        &got.entropy,
        &want.entropy,
        F32_BOUND * 10.0,
    );
    let g = dm.download_grads(&be).unwrap();
    check(
        "classifier d weight",
        &g[model.layout.lm_head..model.layout.lm_head + v * c],
        &dw,
        BF16_BOUND,
    );
}
