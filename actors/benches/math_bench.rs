//! Math reward throughput: checks per second (extraction + equivalence) on one thread, over the
//! equivalence corpus wrapped in four completion styles, beside the 20,000/s target and, when
//! `math_verify_baseline.py` has been run, Hugging Face `math-verify` on the same checks.
//!
//! Run: `cargo bench -p r1-actors --bench math_bench`
//! Baseline: `pip install math-verify && python3 actors/benches/math_verify_baseline.py`
//! (writes `target/math_verify_baseline.json`, which this bench reads if present).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use r1_actors::judge::math::{equivalent, extract_answer, math_reward, ExtractMode};

/// The throughput target for one thread.
const TARGET_CHECKS_PER_SEC: f64 = 20_000.0;

/// How long each measurement runs; long enough to smooth out the 2-core machine's noise.
const MEASURE_FOR: Duration = Duration::from_secs(2);

/// One reward computation: a completion, its gold answer and the dataset's extraction mode.
struct Check {
    completion: String,
    gold: String,
    mode: ExtractMode,
}

/// The corpus pairs as (predicted, gold); must match `math_verify_baseline.py`.
fn corpus_pairs() -> Vec<(String, String)> {
    include_str!("../tests/data/math_equivalence.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4).then(|| (f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

/// Four completion styles per pair, the same strings `math_verify_baseline.py` builds.
fn checks() -> Vec<Check> {
    let think = "<think>Let me work through this carefully. First I set up the equation, then I \
                 simplify both sides, check the edge cases, and verify the result by substitution.</think>";
    let mut out = Vec::new();
    for (pred, gold) in corpus_pairs() {
        let styles = [
            (
                format!("{think} <answer>{pred}</answer>"),
                ExtractMode::AnswerTag,
            ),
            (
                format!("{think} So the result is $\\boxed{{{pred}}}$."),
                ExtractMode::Boxed,
            ),
            (
                format!("We compute step by step.\nThe answer is ${pred}$."),
                ExtractMode::FreeText,
            ),
            (
                format!("{think} Therefore the answer is $\\boxed{{{pred}}}$."),
                ExtractMode::Auto,
            ),
        ];
        for (completion, mode) in styles {
            out.push(Check {
                completion,
                gold: gold.clone(),
                mode,
            });
        }
    }
    out
}

/// Runs `f` over all checks repeatedly for [`MEASURE_FOR`]; returns checks per second.
fn measure(checks: &[Check], mut f: impl FnMut(&Check)) -> f64 {
    // Warm-up pass: caches and branch predictors, not timed.
    checks.iter().for_each(&mut f);
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < MEASURE_FOR {
        checks.iter().for_each(&mut f);
        done += checks.len();
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// The baseline figure written by `math_verify_baseline.py`, if it has been run.
fn math_verify_figure() -> Option<(f64, f64, String)> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/math_verify_baseline.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let rate = json.get("checks_per_sec")?.as_f64()?;
    let median = json
        .get("median_checks_per_sec")
        .and_then(|v| v.as_f64())
        .unwrap_or(rate);
    let note = json
        .get("version")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string();
    Some((rate, median, note))
}

fn row(name: &str, rate: f64, note: &str) {
    let line = format!("{name:<34} {rate:>12.0}  {note}");
    println!("{}", line.trim_end());
}

fn main() {
    let checks = checks();
    let answers: Vec<(Option<String>, &str)> = checks
        .iter()
        .map(|c| (extract_answer(&c.completion, c.mode), c.gold.as_str()))
        .collect();

    let full = measure(&checks, |c| {
        black_box(math_reward(
            black_box(&c.completion),
            black_box(&c.gold),
            c.mode,
        ));
    });
    let extraction = measure(&checks, |c| {
        black_box(extract_answer(black_box(&c.completion), c.mode));
    });
    let mut i = 0;
    let equivalence = measure(&checks, |_| {
        let (answer, gold) = &answers[i % answers.len()];
        i += 1;
        if let Some(a) = answer {
            black_box(equivalent(black_box(a), black_box(gold)));
        }
    });

    println!();
    println!(
        "math reward checks, single thread: {} corpus pairs x 4 completion styles = {} checks",
        checks.len() / 4,
        checks.len()
    );
    println!("{:<34} {:>12}", "", "checks/s");
    row(
        "r1 math_reward (extract + equal)",
        full,
        if full >= TARGET_CHECKS_PER_SEC {
            "meets target"
        } else {
            "BELOW target"
        },
    );
    row("  extraction only", extraction, "");
    row("  equivalence only", equivalence, "");
    row("target", TARGET_CHECKS_PER_SEC, "");
    match math_verify_figure() {
        Some((rate, median, version)) => {
            let note = format!("math-verify {version}; {:.0}x slower than r1", full / rate);
            row("HF math-verify (same checks)", rate, &note);
            row(
                "  at its median check",
                median,
                "(excludes its timeouts on hostile inputs)",
            );
        }
        None => println!(
            "{:<34} {:>12}  run python3 actors/benches/math_verify_baseline.py",
            "HF math-verify (same checks)", "n/a"
        ),
    }
}
