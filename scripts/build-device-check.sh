#!/usr/bin/env bash
# Builds here everything scripts/device-check.sh runs on the GPU machine, which has no Rust
# toolchain and reaches no registry: the GPU parity-test executable, the benchmark executable,
# r1ctl with a tiny trained model and a GRPO config (the CPU-vs-GPU GRPO run), the PTX of every
# kernel for compute_90 (compiled by NVRTC 13.0.88 here, so the GPU machine needs no NVRTC and no
# headers), and the two fixture models. Output: device-check/ (git-ignored, well under the 64 MiB
# a device run may carry). Usage: scripts/build-device-check.sh
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
r1ctl="$(cargo build --release -p r1-ctl --bin r1ctl --message-format=json | executable_of r1ctl)"
[[ -x "$parity" && -x "$bench" && -x "$r1ctl" ]] || { echo "build-device-check: executables not found" >&2; exit 2; }
# Line tables are not needed there; stripping keeps the carried folder small.
strip -o "$out/bin/cuda_parity" "$parity"
strip -o "$out/bin/cuda_bench" "$bench"
strip -o "$out/bin/r1ctl" "$r1ctl"

for m in tiny-qwen2 tiny-llama; do
  cp -r "$fixtures/models/$m" "$out/fixtures/models/"
done

# The GRPO comparison's model: the tiny built-in run's byte model after 300 SFT steps (about a
# second here; it then writes the answer format most of the time, so GRPO groups have reward
# variance and the learner really updates), its data and a config template device-check.sh
# fills in (@MODEL@, @DATA@, @OUTPUT@; it appends the `[devices]` section for the GPU run).
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cat >"$scratch/run.toml" <<'TOML'
seed = 0
time_budget_secs = 0

[model]
hidden_size = 32
intermediate_size = 64
num_layers = 1
num_heads = 2
num_kv_heads = 1

[sft]
examples = 32
steps = 300
batch_size = 4
warmup_steps = 1

[grpo]
steps = 3
prompts_per_step = 2
group_size = 4
max_new_tokens = 24

[eval]
problems = 8
samples = 2
TOML
(cd "$scratch" && "$out/bin/r1ctl" run --config "$scratch/run.toml" >/dev/null)
cp -r "$scratch/runs/default/final" "$out/tiny-model"
cp config/examples/data/addition.jsonl "$out/addition.jsonl"
cat >"$out/grpo-device.toml" <<'TOML'
# GRPO on the tiny byte model: written by scripts/build-device-check.sh, filled in and run by
# scripts/device-check.sh once on the CPU and once with `[devices] learner = "cuda:0"`.
[run]
name = "device-check-grpo"
stage = "grpo"
seed = 0
output_dir = "@OUTPUT@"

[model]
path = "@MODEL@"
template = "chatml"
tokenizer = "byte"

[data]
kind = "jsonl"
path = "@DATA@"

[sampling]
temperature = 1.0
max_new_tokens = 24

[rewards.weights]
accuracy = 1.0
format = 1.0
language = 0.0

[learner]
group_size = 4
minibatches = 1
ref_refresh_steps = 0

[learner.grpo]
beta = 0.0
max_completion_length = 24

[learner.schedule]
peak_lr = 5e-5
warmup_steps = 0
total_steps = 0
min_lr_ratio = 1.0

[grpo]
steps = 10
prompts_per_step = 4
max_batch = 16

[checkpoint]
every_steps = 100
keep_last = 1
TOML
du -sh "$out"
echo "build-device-check: ready; on the GPU machine run scripts/device-check.sh (carry device-check)" >&2
