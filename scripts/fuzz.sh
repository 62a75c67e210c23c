#!/usr/bin/env bash
# Long fuzzing runs: every target (or those named after the seconds) for SECONDS each, in release
# builds, seeded by the date unless FUZZ_SEED is set. Findings are saved under
# tests/fuzz/corpus/crashes/<target>/ and make the exit code 1. See docs/fuzzing.md.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET,...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
targets="${2:-config,data,model_dir,gguf,tokenizer,math,http}"
seed="${FUZZ_SEED:-$(date +%s)}"
cargo build --release -p r1-tests --bin r1-fuzz -p r1-daemon --bin r1d
echo "fuzz.sh: ${seconds}s per target, seed ${seed}" >&2
exec target/release/r1-fuzz run --seconds "$seconds" --seed "$seed" --targets "$targets" \
    --corpus tests/fuzz/corpus --r1d target/release/r1d
