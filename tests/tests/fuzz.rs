//! The fuzzing harness in CI: every target (job config, datasets, model directories, GGUF,
//! tokenizers, the math judge, r1d's HTTP API) gets its committed seeds replayed and a fixed,
//! seeded number of mutated inputs, each in a worker process under a 2 GiB address-space limit.
//! Each test prints what it tried (inputs, accepted, refused, panics, aborts, hangs) and fails on
//! any panic, abort or hang, naming the saved reproducer. Longer runs: `scripts/fuzz.sh SECONDS`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use r1_tests::fuzz::{fuzz_target, Budget, Options, Target};

/// The seed every CI run uses: the same inputs each time.
const SEED: u64 = 20_261_206;

fn options(inputs: u64) -> Options {
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_r1-fuzz"));
    // r1d is built into the same folder by `cargo test --workspace` / `cargo build --bins`.
    let r1d = worker.with_file_name("r1d");
    Options {
        corpus: Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"),
        budget: Budget::Inputs(inputs),
        seed: SEED,
        memory_limit: 2 << 30,
        timeout: Duration::from_secs(20),
        worker_exe: worker,
        r1d_exe: r1d,
    }
}

/// Fuzzes `target` for `inputs` mutated inputs after its seeds; fails on any finding.
fn fuzz(target: Target, inputs: u64) {
    let report = fuzz_target(&options(inputs), target).unwrap_or_else(|e| panic!("{target}: {e}"));
    println!("{report}");
    assert!(
        report.seeds > 0 && report.inputs == report.seeds + inputs,
        "{report}"
    );
    assert!(
        report.clean(),
        "{target}: {} panics, {} aborts, {} hangs in {} inputs:\n{report}",
        report.panics,
        report.aborts,
        report.hangs,
        report.inputs
    );
}

#[test]
fn fuzz_job_config() {
    fuzz(Target::Config, 6000);
}

#[test]
fn fuzz_dataset_readers() {
    fuzz(Target::Data, 3000);
}

#[test]
fn fuzz_model_dir_loader() {
    fuzz(Target::ModelDir, 3000);
}

#[test]
fn fuzz_gguf_import() {
    fuzz(Target::Gguf, 2000);
}

#[test]
fn fuzz_tokenizer_loader() {
    fuzz(Target::Tokenizer, 2000);
}

#[test]
fn fuzz_math_judge() {
    fuzz(Target::Math, 8000);
}

#[test]
fn fuzz_http_api() {
    let options = options(5000);
    assert!(
        options.r1d_exe.is_file(),
        "{} is missing: build the binaries first (cargo build --bins, or run scripts/test.sh)",
        options.r1d_exe.display()
    );
    fuzz(Target::Http, 5000);
}
