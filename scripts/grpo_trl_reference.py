#!/usr/bin/env python3
"""Reference cases for r1's GRPO objective options, computed by TRL's own loss code.

Runs `trl.GRPOTrainer._compute_loss` — the installed TRL's, unmodified — on fixed tensors: the
per-token log-probs the model would give are a leaf tensor, so autograd yields d loss / d logprobs.
Covers `importance_sampling_level` token | sequence (GSPO), `use_bias_correction_kl`, β = 0 and
β > 0, and the loss types that match r1's `loss_agg` (grpo → seq-mean-token-mean, dapo →
token-mean, dr_grpo → seq-mean-token-sum-norm), with ratios inside and outside the clip range.
Then the correction for a sampler that is not the learner (`vllm_importance_sampling_correction`,
every `vllm_importance_sampling_mode`): TRL computes that weight in
`_generate_and_score_completions`, which needs a model and vLLM, so `sampler_weights` below
repeats its few lines (grpo_trainer.py, "Compute the importance sampling ratio when using vLLM")
and `_compute_loss` — TRL's own — applies it.
Writes kernels/tests/data/grpo_trl_options.json, read by kernels/tests/grpo.rs.

Usage: .cache/venv-trl/bin/python scripts/grpo_trl_reference.py   (the venv of
scripts/bench-grpo-trl.sh: pip install torch trl transformers)
"""
import json
import math
import os
import sys
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import torch
import trl
from trl import GRPOTrainer

OUT = os.path.join(os.path.dirname(__file__), "..", "kernels", "tests", "data", "grpo_trl_options.json")
LOSS_AGG = {"grpo": "seq-mean-token-mean", "dapo": "token-mean", "dr_grpo": "seq-mean-token-sum-norm"}


class Accelerator:
    """What `_compute_loss` asks of accelerate on one process."""
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x


def sampler_weights(old, sampling, mask, mode, clip_min, clip_max):
    """TRL 1.16's vLLM importance-sampling weight, line for line (see the module docstring)."""
    diff = (old - sampling) * mask
    diff = torch.nan_to_num(diff, nan=0.0)
    if mode in ["sequence_mask", "sequence_truncate"]:
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode in ["sequence_truncate", "token_truncate"]:
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    lo = clip_min if clip_min is not None else -math.inf
    hi = clip_max if clip_max is not None else math.inf
    return ratio.masked_fill((ratio < lo) | (ratio > hi), value=0.0)


def trainer_for(loss_type, level, bias_kl, beta, eps_low, eps_high, max_len, logp, entropies,
                sampler_mode=None):
    """An object carrying exactly the attributes `_compute_loss` reads, with the model's forward
    replaced by the fixed log-probs."""
    t = object.__new__(GRPOTrainer)
    fields = dict(
        beta=beta, epsilon_low=eps_low, epsilon_high=eps_high, loss_type=loss_type,
        importance_sampling_level=level, max_completion_length=max_len,
        top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        use_vllm=sampler_mode is not None,
        vllm_importance_sampling_correction=sampler_mode is not None,
        vllm_importance_sampling_mode=sampler_mode, aux_loss_enabled=False,
        _entropy_bonus_enabled=False, current_gradient_accumulation_steps=1,
        accelerator=Accelerator(), _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        model=SimpleNamespace(training=True),
        args=SimpleNamespace(use_bias_correction_kl=bias_kl, delta=None, steps_per_generation=1),
    )
    for k, v in fields.items():
        object.__setattr__(t, k, v)
    object.__setattr__(t, "_get_per_token_logps_and_entropies", lambda *a, **kw: (logp, entropies, None))
    return t


def f32(x):
    """Values r1 stores as f32, kept exactly in float64."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def main():
    rng = np.random.default_rng(19)
    b, t, group = 6, 7, 3
    lengths = [7, 5, 3, 6, 1, 4]
    mask = np.zeros((b, t))
    for i, n in enumerate(lengths):
        mask[i, :n] = 1.0
    logp = f32(-rng.uniform(0.05, 3.0, (b, t)))
    # Ratios spread across and beyond [1 - ε, 1 + ε], so both clip branches are taken.
    old = f32(logp + rng.normal(0.0, 0.35, (b, t)))
    ref = f32(logp + rng.normal(0.0, 0.5, (b, t)))
    rewards = np.array([1.0, 0.0, 0.5, 0.2, 0.9, 0.9])
    adv = []
    for g in range(b // group):
        r = rewards[g * group:(g + 1) * group]
        adv.extend((r - r.mean()) / (r.std(ddof=1) + 1e-4))
    adv = f32(adv)
    cases = []
    for loss_type in ["grpo", "dapo", "dr_grpo"]:
        for level in ["token", "sequence"]:
            for bias_kl in [False, True]:
                for beta in [0.0, 0.04]:
                    if bias_kl and beta == 0.0:
                        continue
                    lp = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
                    inputs = {
                        "prompt_ids": torch.zeros((b, 1), dtype=torch.long),
                        "prompt_mask": torch.ones((b, 1), dtype=torch.long),
                        "completion_ids": torch.zeros((b, t), dtype=torch.long),
                        "completion_mask": torch.tensor(mask, dtype=torch.float64),
                        "advantages": torch.tensor(adv, dtype=torch.float64),
                        "old_per_token_logps": torch.tensor(old, dtype=torch.float64),
                        "ref_per_token_logps": torch.tensor(ref, dtype=torch.float64),
                        "num_items_in_batch": torch.tensor(mask.sum(), dtype=torch.float64),
                    }
                    trainer = trainer_for(loss_type, level, bias_kl, beta, 0.2, 0.28, t, lp,
                                          torch.zeros((b, t), dtype=torch.float64))
                    loss = GRPOTrainer._compute_loss(trainer, None, inputs)
                    loss.backward()
                    cases.append({
                        "loss_type": loss_type,
                        "loss_agg": LOSS_AGG[loss_type],
                        "importance_sampling_level": level,
                        "use_bias_correction_kl": bias_kl,
                        "beta": beta,
                        "epsilon_low": 0.2,
                        "epsilon_high": 0.28,
                        "max_completion_length": t,
                        "loss": loss.item(),
                        "grad_logprobs": lp.grad.tolist(),
                    })
    # The sampler's log-probs: π_old's plus noise wide enough that token ratios cross both bounds
    # and whole completions cross them too.
    sampling = f32(old + rng.normal(0.0, 0.4, (b, t)))
    sampler_cases = []
    for mode, clip_min, clip_max in [
        ("token_truncate", None, 2.0), ("token_truncate", 0.7, 1.5), ("token_mask", 0.7, 1.5),
        ("sequence_truncate", None, 3.0), ("sequence_truncate", 0.6, 1.5),
        ("sequence_mask", None, 2.0), ("sequence_mask", 0.6, 3.0),
    ]:
        for loss_type in ["grpo", "dapo"]:
            for level in ["token", "sequence"]:
                for beta in [0.0, 0.04]:
                    lp = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
                    m = torch.tensor(mask, dtype=torch.float64)
                    weights = sampler_weights(torch.tensor(old, dtype=torch.float64),
                                              torch.tensor(sampling, dtype=torch.float64), m,
                                              mode, clip_min, clip_max)
                    inputs = {
                        "prompt_ids": torch.zeros((b, 1), dtype=torch.long),
                        "prompt_mask": torch.ones((b, 1), dtype=torch.long),
                        "completion_ids": torch.zeros((b, t), dtype=torch.long),
                        "completion_mask": m,
                        "advantages": torch.tensor(adv, dtype=torch.float64),
                        "old_per_token_logps": torch.tensor(old, dtype=torch.float64),
                        "ref_per_token_logps": torch.tensor(ref, dtype=torch.float64),
                        "importance_sampling_ratio": weights,
                        "sampling_per_token_logps": torch.tensor(sampling, dtype=torch.float64),
                        "num_items_in_batch": torch.tensor(mask.sum(), dtype=torch.float64),
                    }
                    trainer = trainer_for(loss_type, level, False, beta, 0.2, 0.28, t, lp,
                                          torch.zeros((b, t), dtype=torch.float64), mode)
                    loss = GRPOTrainer._compute_loss(trainer, None, inputs)
                    loss.backward()
                    sampler_cases.append({
                        "loss_type": loss_type,
                        "loss_agg": LOSS_AGG[loss_type],
                        "importance_sampling_level": level,
                        "beta": beta,
                        "epsilon_low": 0.2,
                        "epsilon_high": 0.28,
                        "max_completion_length": t,
                        "sampler_is_mode": mode.replace("_", "-"),
                        "sampler_is_min": 0.0 if clip_min is None else clip_min,
                        "sampler_is_max": clip_max,
                        "weights": weights.tolist(),
                        "loss": loss.item(),
                        "grad_logprobs": lp.grad.tolist(),
                    })
    data = {
        "generator": "scripts/grpo_trl_reference.py",
        "trl": trl.__version__,
        "torch": torch.__version__,
        "inputs": {
            "t": t, "group_size": group, "mask": mask.tolist(), "logprobs": logp.tolist(),
            "old_logprobs": old.tolist(), "ref_logprobs": ref.tolist(), "advantages": adv.tolist(),
            "sampler_logprobs": sampling.tolist(),
        },
        "cases": cases,
        "sampler_cases": sampler_cases,
    }
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1)
    print(f"{len(cases)} + {len(sampler_cases)} cases from TRL {trl.__version__} → {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
