#!/usr/bin/env bash
# Runs the engine benchmark beside the PyTorch CPU baseline on this machine:
#   1. installs torch + transformers from PyPI if they are missing (large: several GB),
#   2. runs ../shared/bench/torch_cpu_baseline.py (same shapes as r1ctl bench's default),
#   3. runs `r1ctl bench --baseline` and prints the table with both figures.
# Set SKIP_BASELINE=1 to reuse target/torch-baseline.json from an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=target/torch-baseline.json
mkdir -p target
if [ "${SKIP_BASELINE:-0}" != 1 ] || [ ! -s "$baseline" ]; then
  python3 -c "import torch, transformers" 2>/dev/null || python3 -m pip install --quiet torch transformers
  script=../shared/bench/torch_cpu_baseline.py
  [ -f "$script" ] || { echo "bench: $script not found (../shared must sit beside the checkout)" >&2; exit 2; }
  echo "bench: running the PyTorch baseline ($script)…" >&2
  THREADS="${THREADS:-$(nproc)}" python3 "$script" 2>/dev/null | tail -n 1 > "$baseline"
fi
cargo build --release -q -p r1-ctl
./target/release/r1ctl bench --baseline "$baseline" "$@"
