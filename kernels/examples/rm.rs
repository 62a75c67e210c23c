use r1_kernels::cpu::rowmat::matmul_rows;
use std::time::Instant;
fn main() {
    for &(s, c, oc) in &[
        (16usize, 512usize, 2816usize),
        (64, 512, 2816),
        (16, 1408, 512),
        (16, 512, 4096),
        (512, 512, 2816),
    ] {
        let x: Vec<f32> = (0..s * c).map(|i| ((i % 97) as f32) * 0.01).collect();
        let w: Vec<f32> = (0..oc * c).map(|i| ((i % 89) as f32) * 0.01).collect();
        let mut o = vec![0f32; s * oc];
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            matmul_rows(&mut o, &x, &w, None, s, c, oc);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "S={s} C={c} OC={oc}: {:.1} GFLOP/s ({:.3} ms)",
            2.0 * (s * c * oc) as f64 / best / 1e9,
            best * 1e3
        );
    }
}
