#!/usr/bin/env bash
# Builds here everything scripts/device-check.sh runs on the GPU machine, which has no Rust
# toolchain and reaches no registry: the GPU parity-test executable, the benchmark executable,
# the PTX of every kernel for compute_90 (compiled by NVRTC 13.0.88 here, so the GPU machine needs
# no NVRTC and no headers), and the two fixture models. Output: device-check/ (git-ignored,
# well under the 64 MiB a device run may carry). Usage: scripts/build-device-check.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/device-check"
fixtures="${R1_FIXTURES:-$root/../shared/fixtures}"

scripts/fetch-nvrtc.sh
rm -rf "$out"
mkdir -p "$out/bin" "$out/ptx" "$out/fixtures/models"

# The compile test writes each kernel's PTX under the name the backend's disk cache looks for.
R1_PTX_OUT="$out/ptx" cargo test --release -p r1-kernels --test cuda_compile

# Paths of the executables cargo builds for a target (from its JSON messages).
executable_of() {
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])
' "$1" | tail -n 1
}
parity="$(cargo test --release -p r1-kernels --test cuda_parity --no-run --message-format=json | executable_of cuda_parity)"
bench="$(cargo bench -p r1-kernels --bench cuda_bench --no-run --message-format=json | executable_of cuda_bench)"
[[ -x "$parity" && -x "$bench" ]] || { echo "build-device-check: executables not found" >&2; exit 2; }
# Line tables are not needed there; stripping keeps the carried folder small.
strip -o "$out/bin/cuda_parity" "$parity"
strip -o "$out/bin/cuda_bench" "$bench"

for m in tiny-qwen2 tiny-llama; do
  cp -r "$fixtures/models/$m" "$out/fixtures/models/"
done
du -sh "$out"
echo "build-device-check: ready; on the GPU machine run scripts/device-check.sh (carry device-check)" >&2
