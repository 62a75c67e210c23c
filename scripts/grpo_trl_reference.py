#!/usr/bin/env python3
"""Reference cases for r1's GRPO objective options, computed by TRL's own loss code.

Runs `trl.GRPOTrainer._compute_loss` — the installed TRL's, unmodified — on fixed tensors: the
per-token log-probs the model would give are a leaf tensor, so autograd yields d loss / d logprobs.
Covers `importance_sampling_level` token | sequence (GSPO), `use_bias_correction_kl`, β = 0 and
β > 0, and the loss types that match r1's `loss_agg` (grpo → seq-mean-token-mean, dapo →
token-mean, dr_grpo → seq-mean-token-sum-norm), with ratios inside and outside the clip range.
Writes kernels/tests/data/grpo_trl_options.json, read by kernels/tests/grpo.rs.

Usage: .cache/venv-trl/bin/python scripts/grpo_trl_reference.py   (the venv of
scripts/bench-grpo-trl.sh: pip install torch trl transformers)
"""
import json
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


def trainer_for(loss_type, level, bias_kl, beta, eps_low, eps_high, max_len, logp, entropies):
    """An object carrying exactly the attributes `_compute_loss` reads, with the model's forward
    replaced by the fixed log-probs."""
    t = object.__new__(GRPOTrainer)
    fields = dict(
        beta=beta, epsilon_low=eps_low, epsilon_high=eps_high, loss_type=loss_type,
        importance_sampling_level=level, max_completion_length=max_len,
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, use_vllm=False,
        vllm_importance_sampling_correction=False, aux_loss_enabled=False,
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
    data = {
        "generator": "scripts/grpo_trl_reference.py",
        "trl": trl.__version__,
        "torch": torch.__version__,
        "inputs": {
            "t": t, "group_size": group, "mask": mask.tolist(), "logprobs": logp.tolist(),
            "old_logprobs": old.tolist(), "ref_logprobs": ref.tolist(), "advantages": adv.tolist(),
        },
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(data, f, indent=1)
    print(f"{len(cases)} cases from TRL {trl.__version__} → {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
