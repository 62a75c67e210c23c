#!/usr/bin/env bash
# Fetches NVRTC and the CUDA headers it needs from PyPI (no GPU, nothing installed), so the CUDA
# kernel sources can be compiled to PTX on any machine: kernels/tests/cuda_compile.rs uses them.
#
# Pinned to 13.0.88: PTX from an NVRTC newer than the GPU machine's driver (580, CUDA 13.0) is
# refused there. Wheels land in .cache/nvrtc/ (git-ignored) and are unzipped beside themselves:
#   .cache/nvrtc/nvidia/cu13/lib/libnvrtc.so.13      (plus libnvrtc-builtins)
#   .cache/nvrtc/nvidia/cu13/include/cuda_bf16.h     (and the headers it includes)
# Override the folder with R1_NVRTC_DIR. Usage: scripts/fetch-nvrtc.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${R1_NVRTC_DIR:-$root/.cache/nvrtc}"
version="13.0.88"
mkdir -p "$dir"

if compgen -G "$dir/nvidia/cu13/lib/libnvrtc.so.13*" >/dev/null && [[ -f "$dir/nvidia/cu13/include/cuda_bf16.h" ]]; then
  echo "already fetched: $dir" >&2
  exit 0
fi

python3 -m pip download --no-deps --only-binary=:all: --dest "$dir" \
  "nvidia-cuda-nvrtc==$version" "nvidia-cuda-runtime==$version" >&2
for wheel in "$dir"/nvidia_cuda_nvrtc-"$version"-*.whl "$dir"/nvidia_cuda_runtime-"$version"-*.whl; do
  # A wheel is a zip file; Python's zipfile avoids depending on `unzip` being installed.
  python3 - "$wheel" "$dir" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    z.extractall(out, [n for n in z.namelist() if n.startswith("nvidia/")])
PY
done
ls "$dir"/nvidia/cu13/lib/libnvrtc.so.13* >/dev/null
echo "fetched NVRTC $version into $dir" >&2
