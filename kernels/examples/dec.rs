use r1_kernels::bench::builtin_config;
use r1_kernels::model::Model;
use r1_kernels::sample::{GenerationRequest, Sampler, SamplingParams};
use std::time::Instant;
fn main() {
    let model = Model::random(builtin_config("qwen2-30m").unwrap(), 0, 0.02);
    let bs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(16);
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 128,
        ignore_eos: true,
        ..Default::default()
    };
    let reqs: Vec<_> = (0..bs)
        .map(|p| GenerationRequest {
            prompt_ids: (0..32).map(|i| ((i * 31 + p * 7) % 4096) as u32).collect(),
            samples: 1,
            seed: 0,
            params: params.clone(),
        })
        .collect();
    let mut s = Sampler::new(&model, bs);
    s.generate(&reqs, None).unwrap();
    let t = Instant::now();
    let out = s.generate(&reqs, None).unwrap();
    let n: usize = out.iter().map(|c| c.token_ids.len()).sum();
    println!("bs {bs}: {:.1} tok/s", n as f64 / t.elapsed().as_secs_f64());
}
