#!/usr/bin/env bash
# The whole GPU check, run on the GPU machine from the repo root with device-check/ (built by
# scripts/build-device-check.sh) carried along: the GPU parity tests, then the throughput table
# (train tokens/s + MFU on a Qwen2-0.5B shape, decode tokens/s at batch 64 against the HBM
# roofline) beside PyTorch on the same shapes. Builds nothing. Each part has a timeout (120 + 170 + 150 s): under 8 minutes in all.
# Copies of the outputs go to $OUT when set. Exit status: that of the parity tests.
set -uo pipefail
cd "$(dirname "$0")/.."
dir="$PWD/device-check"
out="${OUT:-$dir/out}"
mkdir -p "$out"
[[ -x "$dir/bin/cuda_parity" ]] || { echo "device-check: $dir/bin is missing; run scripts/build-device-check.sh first" >&2; exit 2; }

# cuBLAS (and NVRTC, only needed if a kernel's PTX were missing) from the CUDA 13 wheels PyTorch
# brings, plus a system CUDA if there is one. libcuda comes with the driver.
libs="$(python3 - <<'PY'
import glob, os, site
roots = set(site.getsitepackages() + [site.getusersitepackages()])
dirs = set()
for r in roots:
    for pat in ("nvidia/*/lib/libcublas.so.13*", "nvidia/*/lib/libnvrtc.so.13*", "nvidia/*/lib/libcublasLt.so.13*"):
        dirs.update(os.path.dirname(f) for f in glob.glob(os.path.join(r, pat)))
for d in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"):
    if os.path.isdir(d):
        dirs.add(d)
print(":".join(sorted(dirs)))
PY
)"
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export R1_CUDA_PTX_CACHE="$dir/ptx"
export R1_FIXTURES="$dir/fixtures"
echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

echo "== GPU parity tests"
start=$SECONDS
timeout 120 "$dir/bin/cuda_parity" --test-threads=1 --nocapture >"$out/parity.txt" 2>&1
parity=$?
grep -E "relative error|^test |test result|panicked|SKIP" "$out/parity.txt" | tail -n 90
echo "parity tests: exit $parity in $((SECONDS - start)) s"

echo "== r1 CUDA benchmark"
start=$SECONDS
timeout 170 "$dir/bin/cuda_bench" --train-batch 8 --train-len 512 --train-steps 5 \
  --decode-batch 64 --decode-context 512 --decode-steps 64 >"$out/bench.txt" 2>&1
echo "bench: exit $? in $((SECONDS - start)) s"
cat "$out/bench.txt"

echo "== PyTorch on the same shapes"
start=$SECONDS
timeout 150 python3 scripts/torch_gpu_baseline.py --train-batch 8 --train-len 512 --train-steps 5 \
  --decode-batch 64 --decode-context 512 --decode-steps 64 >"$out/torch.txt" 2>&1
echo "torch: exit $? in $((SECONDS - start)) s"
cat "$out/torch.txt"

echo "== summary (peaks: bf16 989 TFLOP/s spec, HBM 4.8 TB/s spec)"
python3 - "$out/bench.txt" "$out/torch.txt" <<'PY'
import json, sys
def rows(path):
    got = {}
    for line in open(path, errors="replace"):
        if line.startswith("JSON "):
            r = json.loads(line[5:])
            got[r["test"]] = r
    return got
r1, torch = rows(sys.argv[1]), rows(sys.argv[2])
print(f"{'test':<8} {'r1 tokens/s':>12} {'r1 % peak':>10} {'torch tokens/s':>15} {'torch % peak':>13}")
for t in ("train", "decode"):
    a, b = r1.get(t, {}), torch.get(t, {})
    f = lambda r, k: f"{r[k]:.0f}" if k in r else "n/a"
    p = lambda r: f"{r['peak_percent']:.1f}" if "peak_percent" in r else "n/a"
    print(f"{t:<8} {f(a, 'tokens_per_s'):>12} {p(a):>10} {f(b, 'tokens_per_s'):>15} {p(b):>13}")
PY
exit $parity
