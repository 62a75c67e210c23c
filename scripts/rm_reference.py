#!/usr/bin/env python3
"""Scores of an r1-saved reward model computed by Hugging Face `transformers`.

kernels/tests/reward_model.rs builds a tiny reward model deterministically (Qwen2, hidden 64,
2 layers, the byte tokenizer's 264 ids), saves it with r1 and compares r1's scores with the ones
this script wrote to kernels/tests/data/rm_reference.json (and with a live run of this script when
`transformers` is importable). The JSON records the sha256 of each file read, so the test knows the
committed scores belong to the model it rebuilt.

    python3 scripts/rm_reference.py MODEL_DIR            # prints the JSON
    python3 scripts/rm_reference.py MODEL_DIR --out FILE # writes it

Every text is scored alone and again inside one right-padded batch with an attention mask
(transformers pools the last non-pad token either way).
"""
import argparse
import hashlib
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForSequenceClassification

# r1_kernels::tokenizer::ByteTokenizer: bytes are ids 0..255, these strings are ids 256.. in order.
SPECIAL = ["<|bos|>", "<|eos|>", "<think>", "</think>", "<answer>", "</answer>", "<|im_start|>",
           "<|im_end|>"]

# Prompt + response texts as the reward-model scorer lays them out (the prompt, then the response).
TEXTS = [
    "hello",
    "What is 2+3?<think>2+3=5</think><answer>5</answer>",
    "<|im_start|>user\nSay thanks.<|im_end|>\n<|im_start|>assistant\n<think>polite</think>Thank you!",
    "<|im_start|>user\nSay thanks.<|im_end|>\n<|im_start|>assistant\n<think>polite</think>No.",
    "A longer response crosses the attention kernel's 64-row block: " + "abcdefghij" * 8,
    "naïve café — 日本語",
]


def byte_encode(text):
    ids, i, data = [], 0, text.encode("utf-8")
    while i < len(data):
        for k, tok in enumerate(SPECIAL):
            t = tok.encode()
            if data.startswith(t, i):
                ids.append(256 + k)
                i += len(t)
                break
        else:
            ids.append(data[i])
            i += 1
    return ids


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_dir, dtype=torch.float32)
    model.eval()
    pad = model.config.pad_token_id
    ids = [byte_encode(t) for t in TEXTS]
    alone = [float(model(torch.tensor([x])).logits[0, 0]) for x in ids]
    longest = max(len(x) for x in ids)
    batch = torch.tensor([x + [pad] * (longest - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (longest - len(x)) for x in ids])
    batched = model(input_ids=batch, attention_mask=mask).logits[:, 0].tolist()
    out = {
        "generated_by": "scripts/rm_reference.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "architecture": model.config.architectures[0],
        "pad_token_id": pad,
        "files": {name: sha256(os.path.join(args.model_dir, name))
                  for name in ("config.json", "model.safetensors")},
        "items": [{"text": t, "ids": x, "score": s, "score_batched": b}
                  for t, x, s, b in zip(TEXTS, ids, alone, batched)],
    }
    text = json.dumps(out, indent=1, ensure_ascii=False) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
