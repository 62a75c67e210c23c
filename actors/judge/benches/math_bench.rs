//! Math reward throughput: checks per second (extraction + equivalence, `"extract": "auto"`) on
//! one thread over the mixed generated corpus (`tests/data/math_corpus.jsonl`: chains of thought
//! ending in boxed, tagged and plain-text answers of every category), beside the 100,000/s target
//! and Hugging Face `math-verify` on the same pairs when `scripts/math-verify-diff.sh` has measured
//! it (`.cache/math_verify_baseline.json`).
//!
//! Run: `cargo bench -p r1-judge --bench math_bench`

#[path = "../tests/math_cases/mod.rs"]
mod math_cases;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use r1_judge::math::{equivalent, extract_answer, math_reward, ExtractMode};

/// The throughput target for one thread.
const TARGET_CHECKS_PER_SEC: f64 = 100_000.0;

/// How long each measurement runs; long enough to smooth out a shared machine's noise.
const MEASURE_FOR: Duration = Duration::from_secs(3);

/// CPU time this thread has used, in seconds: on a shared machine the wall clock also counts the
/// time other processes held the core, so "checks per second on one core" is checks per second
/// of this thread's CPU time.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Items per second over one thread's CPU time and over the wall clock.
#[derive(Clone, Copy)]
struct Rate {
    cpu: f64,
    wall: f64,
}

/// Runs `f` over all items repeatedly for [`MEASURE_FOR`] of wall time.
fn measure<T>(items: &[T], mut f: impl FnMut(&T)) -> Rate {
    // Warm-up pass: caches and branch predictors, not timed.
    items.iter().for_each(&mut f);
    let start = Instant::now();
    let cpu_start = thread_cpu_seconds();
    let mut done = 0usize;
    while start.elapsed() < MEASURE_FOR {
        items.iter().for_each(&mut f);
        done += items.len();
    }
    Rate {
        cpu: done as f64 / (thread_cpu_seconds() - cpu_start),
        wall: done as f64 / start.elapsed().as_secs_f64(),
    }
}

/// math-verify's rate on the same corpus, written by `scripts/math_verify_diff.py`, if it ran.
fn math_verify_figure() -> Option<(f64, Option<f64>, String)> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/math_verify_baseline.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let rate = json.get("checks_per_sec")?.as_f64()?;
    let cpu_rate = json.get("checks_per_cpu_sec").and_then(|v| v.as_f64());
    let version = json.get("version")?.as_str()?.to_string();
    Some((rate, cpu_rate, version))
}

fn row(name: &str, cpu: f64, wall: f64, note: &str) {
    let line = format!("{name:<34} {cpu:>12.0} {wall:>12.0}  {note}");
    println!("{}", line.trim_end());
}

fn main() {
    let cases = math_cases::corpus();
    let answers: Vec<(Option<String>, &str)> = cases
        .iter()
        .map(|c| {
            (
                extract_answer(&c.completion, ExtractMode::Auto),
                c.gold.as_str(),
            )
        })
        .collect();

    let full = measure(&cases, |c| {
        black_box(math_reward(
            black_box(&c.completion),
            black_box(&c.gold),
            ExtractMode::Auto,
        ));
    });
    let extraction = measure(&cases, |c| {
        black_box(extract_answer(black_box(&c.completion), ExtractMode::Auto));
    });
    let equivalence = measure(&answers, |(answer, gold)| {
        if let Some(a) = answer {
            black_box(equivalent(black_box(a), black_box(gold)));
        }
    });

    println!();
    println!(
        "math reward checks, single thread, extract = auto: {} corpus cases (mixed categories)",
        cases.len()
    );
    println!("{:<34} {:>12} {:>12}", "", "checks/cpu-s", "checks/wall-s");
    row(
        "r1 math_reward (extract + equal)",
        full.cpu,
        full.wall,
        if full.cpu >= TARGET_CHECKS_PER_SEC {
            "meets target (one core)"
        } else {
            "BELOW target"
        },
    );
    row("  extraction only", extraction.cpu, extraction.wall, "");
    row("  equivalence only", equivalence.cpu, equivalence.wall, "");
    row("target", TARGET_CHECKS_PER_SEC, TARGET_CHECKS_PER_SEC, "");
    match math_verify_figure() {
        Some((wall, cpu, version)) => {
            let cpu = cpu.unwrap_or(wall);
            let note = format!("math-verify {version}; r1 is {:.0}x faster", full.cpu / cpu);
            row("HF math-verify (same pairs)", cpu, wall, &note);
        }
        None => println!(
            "{:<34} {:>12}  run scripts/math-verify-diff.sh to measure it",
            "HF math-verify (same pairs)", "n/a"
        ),
    }
}
