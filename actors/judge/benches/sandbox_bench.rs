//! Sandboxed runs per second for a trivial program, with one worker and with several: the cost of
//! a code reward is mostly bubblewrap plus interpreter start-up, and this says how much.
//!
//! `cargo bench -p r1-judge --bench sandbox_bench [-- JOBS]` prints a table; JOBS defaults to 64.

use std::time::Instant;

use r1_judge::sandbox::{CodeJob, CodeJudge, CodeOutcome, SandboxConfig, TestCase};

fn main() {
    let jobs: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(64);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut worker_counts = vec![1, 2, cores, 2 * cores];
    worker_counts.sort_unstable();
    worker_counts.dedup();
    let trivial = CodeJob {
        source: "print(input())\n".into(),
        cases: vec![TestCase {
            input: "7\n".into(),
            expected_output: "7".into(),
        }],
        tests: String::new(),
    };
    println!("sandboxed runs of a trivial program ({jobs} jobs, {cores} cores)");
    println!(
        "{:>8} {:>10} {:>10} {:>12}",
        "workers", "seconds", "runs/s", "ms/run/worker"
    );
    for workers in worker_counts {
        let config = SandboxConfig {
            workers,
            ..SandboxConfig::default()
        };
        let judge = match CodeJudge::new(config) {
            Ok(judge) => judge,
            Err(error) => {
                eprintln!("cannot benchmark the sandbox: {error}");
                std::process::exit(2);
            }
        };
        let started = Instant::now();
        let verdicts = judge.run_many(vec![trivial.clone(); jobs]);
        let seconds = started.elapsed().as_secs_f64();
        let failed = verdicts
            .iter()
            .filter(|verdict| verdict.outcome != CodeOutcome::Passed)
            .count();
        if failed > 0 {
            eprintln!(
                "{failed} of {jobs} trivial runs did not pass: {:?}",
                judge.counts()
            );
            std::process::exit(1);
        }
        println!(
            "{workers:>8} {seconds:>10.3} {:>10.1} {:>12.1}",
            jobs as f64 / seconds,
            seconds * 1000.0 * workers as f64 / jobs as f64
        );
    }
}
