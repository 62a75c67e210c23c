#!/usr/bin/env bash
# Runs the engine benchmark beside the PyTorch CPU baseline on this machine:
#   1. installs torch + transformers from PyPI into .cache/venv-torch if they are missing
#      (large: several GB; a python3 that already has both is used as it is),
#   2. runs scripts/torch_cpu_baseline.py (same shapes as r1ctl bench's default),
#   3. runs `r1ctl bench --baseline` and prints the table with both figures.
# Set SKIP_BASELINE=1 to reuse target/torch-baseline.json from an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=target/torch-baseline.json
mkdir -p target
if [ "${SKIP_BASELINE:-0}" != 1 ] || [ ! -s "$baseline" ]; then
  python=python3
  if ! python3 -c "import torch, transformers" 2>/dev/null; then
    venv=.cache/venv-torch
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    python="$venv/bin/python"
    "$python" -c "import torch, transformers" 2>/dev/null || "$python" -m pip install --quiet torch transformers
  fi
  script=scripts/torch_cpu_baseline.py
  echo "bench: running the PyTorch baseline ($script)…" >&2
  THREADS="${THREADS:-$(nproc)}" "$python" "$script" 2>/dev/null | tail -n 1 > "$baseline"
fi
cargo build --release -q -p r1-ctl
./target/release/r1ctl bench --baseline "$baseline" "$@"
