#!/usr/bin/env bash
# One GRPO step on a real model, r1 beside TRL, on this machine, back to back:
#   1. `r1ctl bench grpo MODEL_DIR` (8 prompts x G=4 x 64 forced completion tokens, beta 0,
#      one minibatch, 2 threads, seeded random rewards so every group carries a signal),
#   2. TRL's GRPOTrainer on the same model directory, the same rendered prompts and the same shape
#      (min_new_tokens = max_completion_length, so EOS cannot end a completion early), in a virtual
#      environment this script creates under .cache/venv-trl (pip: torch, trl, transformers),
#   3. both side by side: s/step, completion tokens/s, the ratio, and the peak RSS of each
#      (/usr/bin/time -v), with the machine's load (`uptime`) before each run.
# The first step of each tool is a warm-up and not counted.
#
# Usage: scripts/bench-grpo-trl.sh [MODEL_DIR]   (default .cache/models/smollm2, made by
#   scripts/fetch-smollm2.sh && r1ctl model import .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf .cache/models/smollm2)
# Environment: THREADS (2), PROMPTS (8), G (4), TOKENS (64), STEPS (timed steps, 2), R1CTL (an
#   r1ctl binary to use instead of building target/release/r1ctl), TRL_GRADIENT_CHECKPOINTING (0 or 1;
#   unset: TRL's default, which is on in TRL 1.16 — slower, less memory; r1 does not checkpoint),
#   R1_SAMPLER_PRECISION (auto, f32 or bf16: r1's --sampler-precision; bf16 is a half-size copy with
#   bf16 products, the learner correcting for the mismatch — what TRL does with vLLM rollouts),
#   R1_SHARE_PROMPTS (true or false: r1's --share-prompts; true trains a group's completions over
#   one copy of their prompt, the default of `[learner] share_prompts`).
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-.cache/models/smollm2}"
threads="${THREADS:-2}"; prompts="${PROMPTS:-8}"; g="${G:-4}"; tokens="${TOKENS:-64}"; steps="${STEPS:-2}"
[ -f "$model/config.json" ] || { echo "bench-grpo-trl: $model/config.json not found (see the usage line)" >&2; exit 2; }

if [ ! -x /usr/bin/time ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends time
fi

venv=.cache/venv-trl
if ! "$venv/bin/python" -c "import torch, trl, transformers" 2>/dev/null; then
  echo "bench-grpo-trl: creating $venv (torch from PyPI is large)…" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --no-cache-dir torch trl transformers accelerate datasets
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
r1ctl="${R1CTL:-}"
if [ -z "$r1ctl" ]; then
  cargo build --release -q -p r1-ctl
  r1ctl=./target/release/r1ctl
fi

peak_kb() { sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$1"; }

echo "load before r1:  $(uptime)" | tee "$out/load.txt"
/usr/bin/time -v -o "$out/r1.time" "$r1ctl" bench grpo "$model" \
  --prompts "$prompts" -g "$g" --completion-tokens "$tokens" --minibatches 1 --beta 0 \
  --steps "$steps" --warmup-steps 1 --rewards seeded-random --threads "$threads" \
  --sampler-precision "${R1_SAMPLER_PRECISION:-auto}" --share-prompts "${R1_SHARE_PROMPTS:-true}" \
  -o json > "$out/r1.json"

echo "load before TRL: $(uptime)" | tee -a "$out/load.txt"
OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" /usr/bin/time -v -o "$out/trl.time" \
  "$venv/bin/python" - "$model" "$out/r1.json" "$threads" "$prompts" "$g" "$tokens" "$steps" > "$out/trl.json" <<'PY'
# TRL's GRPOTrainer on the prompts r1 rendered, with the same shape; prints one JSON line.
import json, os, random, sys, tempfile, time
import torch
model_dir, r1_json, threads, prompts, g, tokens, steps = sys.argv[1:8]
threads, prompts, g, tokens, steps = int(threads), int(prompts), int(g), int(tokens), int(steps)
torch.set_num_threads(threads)
import transformers, trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

texts = json.load(open(r1_json))["r1"]["prompt_texts"]
total = steps + 1
texts = (texts * (1 + prompts * total // max(len(texts), 1)))[: prompts * total]
dataset = Dataset.from_dict({"prompt": texts})
rng = random.Random(0)

def seeded_random(completions, **kwargs):
    """Text-independent rewards: every group carries a signal, as r1's --rewards seeded-random."""
    return [rng.random() for _ in completions]

class StepClock(TrainerCallback):
    def __init__(self):
        self.marks = []
    def on_step_begin(self, args, state, control, **kw):
        self.marks.append(["begin", time.perf_counter()])
    def on_step_end(self, args, state, control, **kw):
        self.marks.append(["end", time.perf_counter()])

tokenizer = AutoTokenizer.from_pretrained(model_dir)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
config = GRPOConfig(
    output_dir=tempfile.mkdtemp(),
    per_device_train_batch_size=prompts * g,
    gradient_accumulation_steps=1,
    num_generations=g,
    max_completion_length=tokens,
    generation_kwargs={"min_new_tokens": tokens},
    temperature=1.0,
    beta=0.0,
    num_iterations=1,
    loss_type="grpo",
    learning_rate=1e-6,
    max_steps=total,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    bf16=False,
    seed=0,
    **({"gradient_checkpointing": os.environ["TRL_GRADIENT_CHECKPOINTING"] == "1"}
       if os.environ.get("TRL_GRADIENT_CHECKPOINTING") in ("0", "1") else {}),
)
clock = StepClock()
trainer = GRPOTrainer(model=model, reward_funcs=seeded_random, args=config,
                      train_dataset=dataset, processing_class=tokenizer, callbacks=[clock])
start = time.perf_counter()
trainer.train()
ends = [t for kind, t in clock.marks if kind == "end"]
# Step k's time: from the end of step k-1 to the end of step k (generation happens inside the step).
durations = [b - a for a, b in zip(ends, ends[1:])]
lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
mean_len = sum(lengths[1:]) / max(len(lengths) - 1, 1) if len(lengths) > 1 else float(tokens)
s_per_step = sum(durations) / max(len(durations), 1)
print(json.dumps({
    "trl": trl.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
    "seconds_per_step": s_per_step, "completion_len_mean": mean_len,
    "completion_tokens_per_s": prompts * g * mean_len / s_per_step, "steps_timed": len(durations),
    "gradient_checkpointing": bool(config.gradient_checkpointing),
}))
PY

python3 - "$out/r1.json" "$out/trl.json" "$(peak_kb "$out/r1.time")" "$(peak_kb "$out/trl.time")" <<'PY'
import json, sys
r1 = json.load(open(sys.argv[1]))["r1"]
trl_line = [l for l in open(sys.argv[2]).read().splitlines() if l.startswith("{")][-1]
trl = json.loads(trl_line)
r1_kb, trl_kb = float(sys.argv[3]), float(sys.argv[4])
o = r1["options"]
print(f"GRPO step: {o['prompts']} prompts x G={o['group_size']} x {o['completion_tokens']} forced tokens, "
      f"beta 0, 1 minibatch; TRL {trl['trl']} / torch {trl['torch']}, "
      f"gradient checkpointing {'on' if trl.get('gradient_checkpointing') else 'off'}")
print(f"{'':<24} {'r1':>10} {'TRL':>10} {'r1/TRL':>8}")
print(f"{'s/step':<24} {r1['seconds_per_step']:>10.2f} {trl['seconds_per_step']:>10.2f} "
      f"{trl['seconds_per_step'] / r1['seconds_per_step']:>7.2f}x")
print(f"{'completion tokens/s':<24} {r1['completion_tokens_per_s']:>10.1f} {trl['completion_tokens_per_s']:>10.1f} "
      f"{r1['completion_tokens_per_s'] / trl['completion_tokens_per_s']:>7.2f}x")
print(f"{'mean completion length':<24} {o['completion_tokens']:>10} {trl['completion_len_mean']:>10.1f}")
print(f"{'peak RSS (GiB)':<24} {r1_kb / 2**20:>10.2f} {trl_kb / 2**20:>10.2f} {r1_kb / trl_kb:>7.2f}x")
print(f"r1 learner positions per step: {r1['engine_tokens']:.0f} computed (rows of {r1['engine_row']}) "
      f"for {r1['batch_tokens']:.0f} padded" + (" (shared prompts)" if r1['engine_tokens'] < r1['batch_tokens'] else ""))
print("r1 phases:")
for p in r1["phases"]:
    print(f"  {p['phase']:<14} {p['seconds']:>8.3f} s {p['share_percent']:>5.1f}% "
          f"{p['gflops']:>8.1f} GFLOP/s {p['peak_percent']:>5.1f}% of peak")
m = r1.get("sampler_mismatch")
print(f"r1 sampler weights: {r1.get('sampler_precision', 'f32')}"
      + (f"; |logp diff| vs the learner mean {m['logp_diff_mean']:.2e} max {m['logp_diff_max']:.2e}, "
         f"weights {m['is_min']:.3f}..{m['is_max']:.3f}" if m else ""))
print("r1 memory by category:")
for m in r1["memory"]:
    print(f"  {m['category']:<26} {m['bytes'] / 2**20:>9.1f} MiB")
PY
cat "$out/load.txt"
echo "(a shared machine's load skews both tools; rerun on a quiet machine for figures to quote)"
