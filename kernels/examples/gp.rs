use r1_kernels::cpu::gemm::{gemm, Mat, MatMut, Threads};
use std::time::Instant;
fn main() {
    for &(m, n, k) in &[
        (1024, 1024, 1024),
        (1024, 768, 512),
        (1024, 2816, 512),
        (1024, 512, 1408),
        (1024, 4096, 512),
        (1024, 512, 512),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32) * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i % 89) as f32) * 0.01).collect();
        let mut c = vec![0f32; m * n];
        let mut best = f64::MAX;
        for _ in 0..20 {
            let s = Instant::now();
            gemm(
                MatMut::rows(&mut c, m, n, n),
                Mat::rows(&a, m, k, k),
                Mat::transposed(&b, k, n, k),
                1.0,
                false,
                Threads::All,
            );
            best = best.min(s.elapsed().as_secs_f64());
        }
        println!(
            "{m}x{n}x{k}: {:.1} GFLOP/s",
            2.0 * (m * n * k) as f64 / best / 1e9
        );
    }
}
