#!/usr/bin/env bash
# The whole GPU check, run on the GPU machine from the repo root with device-check/ (built by
# scripts/build-device-check.sh) carried along. Builds nothing; under 10 minutes in all:
#   1. parity: every GPU op and the device model against the CPU twins, the fixtures (≤ 110 s),
#      then the model-level tests with the tiled/grouped attention and decode graphs on (≤ 70 s);
#   2. GRPO: the same short run of a tiny model on the CPU, with the learner on cuda:0 (sampler
#      on the CPU), and with learner and sampler on cuda:0, reward curves side by side
#      (≤ 3 × 20 s); a refused GPU run is reported as such, not as a failure of the rest; then
#      exact resume on cuda:0: 10 steps straight against 5 + 5 resumed, checkpoints compared
#      byte for byte (≤ 3 × 20 s);
#   3. throughput: r1 (train MFU on a Qwen2-0.5B shape 8×512, decode at batch 64 from position
#      512), once with the reviewed kernels and once with the tiled training attention, the
#      grouped decode attention and decode steps as CUDA graphs, beside PyTorch on the same
#      shapes and GPU (≤ 2 × 90 + 100 s), as
#      % of this GPU's spec peaks (named by the driver; an unknown GPU gets no percentages).
# Then one short table. The timeouts add up to under 10 minutes. Outputs go to $OUT when set (else device-check/out).
# Exit status: 0 when parity passed (none skipped), the GPU GRPO runs (if they ran) tracked the
# CPU's and the resumed GPU run ended on the uninterrupted one's bits; else 1;
# 2 when device-check/ is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
dir="$PWD/device-check"
out="${OUT:-$dir/out}"
mkdir -p "$out"
[[ -x "$dir/bin/cuda_parity" ]] || { echo "device-check: $dir/bin is missing; run scripts/build-device-check.sh first" >&2; exit 2; }

# cuBLAS, NCCL (and NVRTC, only needed if a kernel's PTX were missing) from the CUDA 13 wheels PyTorch
# brings, first; a system CUDA only after them, and only folders holding CUDA 13 (.so.13)
# libraries, so a CUDA 12 libcublas can never be loaded under the CUDA 13 bindings. libcuda
# comes with the driver.
libs="$(python3 - <<'PY'
import glob, os, site
roots = sorted(set(site.getsitepackages() + [site.getusersitepackages()]))
wheel, system = [], []
for r in roots:
    for pat in ("nvidia/*/lib/libcublas.so.13*", "nvidia/*/lib/libnvrtc.so.13*", "nvidia/*/lib/libcublasLt.so.13*",
                "nvidia/*/lib/libnccl.so.2*"):
        for f in sorted(glob.glob(os.path.join(r, pat))):
            d = os.path.dirname(f)
            if d not in wheel:
                wheel.append(d)
for d in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"):
    if glob.glob(os.path.join(d, "libcublas.so.13*")) and d not in wheel:
        system.append(d)
print(":".join(wheel + system))
PY
)"
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export R1_CUDA_PTX_CACHE="$dir/ptx"
export R1_FIXTURES="$dir/fixtures"
gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
echo "== machine: ${gpu_name:-no GPU found by nvidia-smi}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

echo "== 1. GPU parity tests"
start=$SECONDS
timeout 110 "$dir/bin/cuda_parity" --test-threads=1 --nocapture >"$out/parity.txt" 2>&1
parity=$?
grep -E "relative error|^test |test result|panicked|SKIP" "$out/parity.txt" | tail -n 120
echo "parity tests: exit $parity in $((SECONDS - start)) s"
# The model-level tests again with the new kernels switched on (tiled tensor-core training
# attention, grouped decode attention): whether they can become the defaults. `device_model`
# takes in the shared-prompt and activation-checkpointing tests (device_model_shares_prompts_*,
# device_model_checkpointing_*, device_model_engine_*), so both training attention kernels run
# them.
start=$SECONDS
R1_CUDA_TRAIN_ATTENTION=tiled R1_CUDA_DECODE_ATTENTION=grouped R1_CUDA_DECODE_GRAPHS=1 timeout 70 \
  "$dir/bin/cuda_parity" \
  --test-threads=1 --nocapture device_model fixtures entropy reward_model decode >"$out/parity-new-kernels.txt" 2>&1
parity_new=$?
grep -E "^test |test result|panicked" "$out/parity-new-kernels.txt" | tail -n 20
echo "parity with tiled training attention, grouped decode attention, decode graphs: exit $parity_new in $((SECONDS - start)) s"

echo "== 2. GRPO, tiny model: on the CPU, the learner on cuda:0, then learner and sampler on cuda:0"
grpo_status="not run"
if [[ -x "$dir/bin/r1ctl" && -d "$dir/tiny-model" ]]; then
  # Every run names its devices: `auto` would put the "CPU" run on the GPU of this machine.
  # cpu: everything on the CPU. cuda0: the learner on the GPU (shared prompts, bf16 GEMMs), the
  # sampler on the CPU, so step 1 samples what the CPU run samples. cuda0-all: the sampler too
  # (bf16 decoding on the GPU, its mismatch corrected by the learner).
  for tag in cpu cuda0 cuda0-all; do
    case $tag in
      cpu) devices='sampler = "cpu"\nlearner = "cpu"\nreward_models = "cpu"' ;;
      cuda0) devices='sampler = "cpu"\nlearner = "cuda:0"\nreward_models = "cpu"' ;;
      cuda0-all) devices='sampler = "cuda:0"\nlearner = "cuda:0"\nreward_models = "cuda:0"' ;;
    esac
    cfg="$out/grpo-$tag.toml"
    sed -e "s#@MODEL@#$dir/tiny-model#" -e "s#@DATA@#$dir/addition.jsonl#" \
      -e "s#@OUTPUT@#$out/grpo-$tag-run#" "$dir/grpo-device.toml" >"$cfg"
    printf "\n[devices]\n$devices\n" >>"$cfg"
    rm -rf "$out/grpo-$tag-run"
    start=$SECONDS
    timeout 20 "$dir/bin/r1ctl" train "$cfg" >"$out/grpo-$tag.txt" 2>"$out/grpo-$tag.err"
    echo "grpo $tag: exit $? in $((SECONDS - start)) s"
    tail -n 3 "$out/grpo-$tag.err"
  done
  grpo_status="$(python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def curve(tag):
    try:
        text = open(f"{out}/grpo-{tag}.txt").read()
    except OSError:
        return []
    return [float(m.group(1)) for m in re.finditer(r"^step\s+\d+/\d+\s+reward\s+(-?[\d.]+)", text, re.M)]
def err(tag):
    try:
        return open(f"{out}/grpo-{tag}.err", errors="replace").read()
    except OSError:
        return ""
cpu = curve("cpu")
verdicts = []
with open(f"{out}/grpo-curves.txt", "w") as f:
    for tag in ("cpu", "cuda0", "cuda0-all"):
        print(f"{tag:>9} reward curve:", " ".join(f"{r:.3f}" for r in curve(tag)), file=f)
for tag, same_samples in (("cuda0", True), ("cuda0-all", False)):
    gpu = curve(tag)
    if not cpu:
        verdicts.append(f"FAIL: the CPU run gave no steps")
        break
    if not gpu:
        e = err(tag)
        refused = next((l for l in e.splitlines() if "device" in l.lower() or "cuda" in l.lower()), e.strip()[-200:])
        verdicts.append(f"REFUSED {tag}: no steps ({refused.strip()})")
        continue
    if len(gpu) != len(cpu):
        verdicts.append(f"FAIL {tag}: {len(gpu)} steps vs {len(cpu)} on the CPU")
        continue
    # With the sampler on the CPU, step 1 samples from the same initial weights with the same
    # seeds: equal rewards. Later steps learn in bf16 on the GPU and f32 on the CPU, so samples
    # diverge; a step's reward is a mean over 16 samples (noise ~0.12), so the runs' mean rewards
    # are compared, within 0.15 (about 2 sigma over 10 steps). A GPU sampler draws other tokens
    # from step 1 (counter-based draws, bf16 logits): the means only.
    gap = abs(sum(cpu) / len(cpu) - sum(gpu) / len(gpu))
    ok = gap <= 0.15 and (not same_samples or abs(cpu[0] - gpu[0]) < 1e-6)
    verdicts.append(f"{'PASS' if ok else 'FAIL'} {tag}: step-1 reward {gpu[0]:.3f} vs {cpu[0]:.3f}; "
                    f"mean reward {sum(gpu) / len(gpu):.3f} vs {sum(cpu) / len(cpu):.3f} (bound 0.15)")
fails = [v for v in verdicts if v.startswith("FAIL")]
print(("FAIL: " if fails else "") + "; ".join(verdicts))
PY
)"
  cat "$out/grpo-curves.txt"
  echo "grpo: $grpo_status"
else
  grpo_status="not run: device-check/bin/r1ctl or device-check/tiny-model missing"
  echo "grpo: $grpo_status"
fi

echo "== 2b. exact resume on ${R1_RESUME_DEVICE:-cuda:0}: a run stopped after step 5 and run again ends on the uninterrupted run's bits"
# The weights and AdamW moments stay on the device between reads: this is the check that a
# checkpoint reads them (optimizer.safetensors) and a resumed run continues from them. Both runs
# are on the same device, so they must agree bit for bit (no atomics in r1's kernels; cuBLAS
# picks one algorithm per shape on one GPU).
resume_status="not run"
if [[ -x "$dir/bin/r1ctl" && -d "$dir/tiny-model" ]]; then
  dev="${R1_RESUME_DEVICE:-cuda:0}"
  for tag in whole split; do
    cfg="$out/resume-$tag.toml"
    sed -e "s#@MODEL@#$dir/tiny-model#" -e "s#@DATA@#$dir/addition.jsonl#" \
      -e "s#@OUTPUT@#$out/resume-$tag-run#" -e "s#^every_steps = 100#every_steps = 5#" \
      "$dir/grpo-device.toml" >"$cfg"
    printf '\n[devices]\nsampler = "%s"\nlearner = "%s"\nreward_models = "cpu"\n' "$dev" "$dev" >>"$cfg"
    rm -rf "$out/resume-$tag-run"
  done
  start=$SECONDS
  timeout 20 "$dir/bin/r1ctl" train "$out/resume-whole.toml" >"$out/resume-whole.txt" 2>&1
  whole=$?
  timeout 20 "$dir/bin/r1ctl" train --steps 5 "$out/resume-split.toml" >"$out/resume-split-1.txt" 2>&1
  first=$?
  timeout 20 "$dir/bin/r1ctl" train "$out/resume-split.toml" >"$out/resume-split-2.txt" 2>&1
  second=$?
  echo "resume runs: exit $whole (uninterrupted), $first (--steps 5), $second (resumed) in $((SECONDS - start)) s"
  a="$out/resume-whole-run/checkpoints/step-00000010"
  b="$out/resume-split-run/checkpoints/step-00000010"
  if [[ $whole -ne 0 || $second -ne 0 || ! -d $a || ! -d $b ]]; then
    resume_status="FAIL: a run did not finish (see $out/resume-*.txt)"
    tail -n 3 "$out"/resume-*.txt
  elif ! grep -q "resuming at step 5" "$out/resume-split-2.txt"; then
    resume_status="FAIL: the second run did not resume at step 5"
  else
    differ=""
    for f in model.safetensors optimizer.safetensors; do
      cmp -s "$a/$f" "$b/$f" || differ="$differ $f"
    done
    if [[ -z $differ ]]; then
      resume_status="PASS: weights and AdamW moments after 10 steps equal bit for bit"
    else
      resume_status="FAIL: the resumed run's${differ} differ from the uninterrupted run's"
    fi
  fi
else
  resume_status="not run: device-check/bin/r1ctl or device-check/tiny-model missing"
fi
echo "resume: $resume_status"

echo "== 3. r1 CUDA benchmark: the reviewed kernels, then the tiled training / grouped decode attention"
start=$SECONDS
R1_CUDA_TRAIN_ATTENTION=rows R1_CUDA_DECODE_ATTENTION=per-head timeout 90 "$dir/bin/cuda_bench" \
  --train-batch 8 --train-len 512 --train-steps 5 --decode-batch 64 --decode-context 512 \
  --decode-steps 64 >"$out/bench.txt" 2>&1
echo "bench: exit $? in $((SECONDS - start)) s"
grep -v "^JSON" "$out/bench.txt"
start=$SECONDS
R1_CUDA_TRAIN_ATTENTION=tiled R1_CUDA_DECODE_ATTENTION=grouped R1_CUDA_DECODE_GRAPHS=1 timeout 90 \
  "$dir/bin/cuda_bench" \
  --train-batch 8 --train-len 512 --train-steps 5 --decode-batch 64 --decode-context 512 \
  --decode-steps 64 >"$out/bench-new-kernels.txt" 2>&1
echo "bench (tiled training attention, grouped decode attention, decode graphs): exit $? in $((SECONDS - start)) s"
grep -v "^JSON" "$out/bench-new-kernels.txt"

echo "== PyTorch on the same shapes"
start=$SECONDS
timeout 100 python3 scripts/torch_gpu_baseline.py --train-batch 8 --train-len 512 --train-steps 5 \
  --decode-batch 64 --decode-context 512 --decode-steps 64 >"$out/torch.txt" 2>&1
echo "torch: exit $? in $((SECONDS - start)) s"
grep -v "^JSON" "$out/torch.txt"

echo "== summary"
python3 - "$out/bench.txt" "$out/bench-new-kernels.txt" "$out/torch.txt" "$out/parity.txt" "$parity" "$grpo_status" "$gpu_name" "$parity_new" "$resume_status" <<'PY' | tee "$out/summary.txt"
import json, re, sys
def rows(path):
    got = {}
    try:
        for line in open(path, errors="replace"):
            if line.startswith("JSON "):
                r = json.loads(line[5:])
                got[r["test"]] = r
    except OSError:
        pass
    return got
r1, new, torch = rows(sys.argv[1]), rows(sys.argv[2]), rows(sys.argv[3])
parity_text = open(sys.argv[4], errors="replace").read()
m = re.search(r"test result: \w+\. (\d+) passed; (\d+) failed", parity_text)
peaks = r1.get("peaks") or new.get("peaks") or {}
gpu = peaks.get("device") or sys.argv[7] or "unknown GPU"
print(f"GPU: {gpu}; peaks: " + (f"{peaks['peaks_of']} spec, {peaks['bf16_tflops']:.0f} TFLOP/s bf16 dense, "
      f"{peaks['hbm_tb_per_s']:.2f} TB/s HBM" if peaks.get("peaks_of") else "not in the table, no % shown"))
skipped = parity_text.count("SKIP ")
print(f"parity: exit {sys.argv[5]}" + (f", {m.group(1)} passed, {m.group(2)} failed" if m else "")
      + (f", {skipped} SKIPPED (no usable GPU: these passed without running)" if skipped else ""))
print(f"model-level parity with the tiled training attention, grouped decode attention and decode graphs: exit {sys.argv[8]}")
print(f"grpo cpu vs cuda:0: {sys.argv[6]}")
print(f"exact resume on the GPU: {sys.argv[9]}")
def pct(r):
    if not r or not peaks.get("peaks_of"):
        return "n/a"
    peak = peaks["bf16_tflops"] if r["test"] == "train" else peaks["hbm_tb_per_s"]
    return f"{100 * r['achieved'] / peak:.1f}"
f = lambda r: f"{r['tokens_per_s']:.0f}" if r else "n/a"
print(f"{'test':<22} {'r1 tokens/s':>12} {'r1 % peak':>10} {'torch tokens/s':>15} {'torch % peak':>13}")
for name, a, b in (("train, row attention", r1.get("train"), torch.get("train")),
                   ("train, tiled attention", new.get("train"), torch.get("train")),
                   ("decode, per-head attn", r1.get("decode"), torch.get("decode")),
                   ("decode, grouped+graphs", new.get("decode"), torch.get("decode"))):
    print(f"{name:<22} {f(a):>12} {pct(a):>10} {f(b):>15} {pct(b):>13}")
PY
status=0
[[ $parity -eq 0 ]] || status=1
# A parity test that skipped found no usable GPU: not a pass.
grep -q "^SKIP \|\.\.\. SKIP " "$out/parity.txt" && status=1
[[ "$grpo_status" == FAIL* ]] && status=1
[[ "$resume_status" == FAIL* ]] && status=1
exit $status
