use r1_kernels::bench::builtin_config;
use r1_kernels::cpu::{self, Activations};
use r1_kernels::model::Model;
use std::time::Instant;
fn main() {
    let model = Model::random(builtin_config("qwen2-30m").unwrap(), 0, 0.02);
    let (b, t) = (4, 256);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % 4096) as u32).collect();
    let mut acts = Activations::new(&model, b, t);
    let reps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(10);
    cpu::forward(&model, &mut acts, &ids).unwrap();
    cpu::head(&model, &mut acts, &ids, None, None, false).unwrap();
    let s = Instant::now();
    for _ in 0..reps {
        cpu::forward(&model, &mut acts, &ids).unwrap();
        cpu::head(&model, &mut acts, &ids, None, None, false).unwrap();
    }
    println!(
        "prefill {:.1} tok/s",
        (reps * b * t) as f64 / s.elapsed().as_secs_f64()
    );
}
