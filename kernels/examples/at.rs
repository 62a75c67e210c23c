use r1_kernels::cpu::ops::{
    attention_backward, attention_forward, rmsnorm_forward, swiglu_forward, AttnShape,
};
use std::time::Instant;
fn main() {
    let s = AttnShape {
        b: 4,
        t: 256,
        nh: 8,
        nkv: 2,
        hs: 64,
    };
    let qkv: Vec<f32> = (0..4 * 256 * 768)
        .map(|i| ((i % 113) as f32 - 56.0) * 0.01)
        .collect();
    let mut out = vec![0f32; 4 * 256 * 512];
    let mut att = vec![0f32; 4 * 8 * 256 * 256];
    attention_forward(&mut out, &mut att, &qkv, s);
    let st = Instant::now();
    for _ in 0..8 {
        attention_forward(&mut out, &mut att, &qkv, s);
    }
    println!(
        "attention fwd per layer: {:.2} ms",
        st.elapsed().as_secs_f64() * 1e3 / 8.0
    );
    let mut dqkv = vec![0f32; qkv.len()];
    let mut datt = vec![0f32; att.len()];
    let st = Instant::now();
    for _ in 0..8 {
        attention_backward(&mut dqkv, &mut datt, &out, &qkv, &att, s);
    }
    println!(
        "attention bwd per layer: {:.2} ms",
        st.elapsed().as_secs_f64() * 1e3 / 8.0
    );
    let gu: Vec<f32> = (0..1024 * 2816)
        .map(|i| ((i % 113) as f32 - 56.0) * 0.01)
        .collect();
    let mut h = vec![0f32; 1024 * 1408];
    let st = Instant::now();
    for _ in 0..8 {
        swiglu_forward(&mut h, &gu, 1408);
    }
    println!(
        "swiglu per layer: {:.2} ms",
        st.elapsed().as_secs_f64() * 1e3 / 8.0
    );
    let x: Vec<f32> = (0..1024 * 512)
        .map(|i| ((i % 113) as f32 - 56.0) * 0.01)
        .collect();
    let w = vec![1f32; 512];
    let mut o = vec![0f32; 1024 * 512];
    let mut r = vec![0f32; 1024];
    let st = Instant::now();
    for _ in 0..8 {
        rmsnorm_forward(&mut o, &mut r, &x, &w, 512, 1e-6);
    }
    println!(
        "rmsnorm per call: {:.2} ms",
        st.elapsed().as_secs_f64() * 1e3 / 8.0
    );
}
