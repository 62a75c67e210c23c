#!/usr/bin/env python3
"""Reference numbers for r1's GGUF import, from Hugging Face `transformers` reading the same GGUF.

Writes kernels/tests/data/smollm2_gguf_reference.safetensors (logits of a fixed ChatML prompt at every
position, for a fixed set of vocabulary ids) and kernels/tests/data/smollm2_gguf_reference.json (the
prompt, its ids, tokenizer ids for a few strings, the greedy answer). kernels/tests/gguf.rs compares
r1's import against them without needing Python.

    pip install gguf   # transformers' GGUF loader needs it; torch + transformers as usual
    scripts/fetch-smollm2.sh
    python3 scripts/gguf_reference.py                # writes the reference files
    python3 scripts/gguf_reference.py --check DIR    # compares an `r1ctl model import` directory,
                                                     # records smollm2_gguf_export_check.json

The subset of vocabulary ids (the first 256, every 97th, and each position's top 16) keeps the file
small while covering the ids that matter for greedy decoding.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("R1_MODEL_CACHE", os.path.join(ROOT, ".cache", "models"))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = os.path.join(ROOT, "kernels", "tests", "data")
# "What is 7 times 8?" worded this way: the Q4_1 135M model answers the literal "7 times 8" with
# "7 * 8 = 54" (greedy, in transformers and r1 alike) but "7 multiplied by 8" with 56.
# ChatML exactly as r1_kernels::template renders it with an explicit system message.
PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 7 multiplied by 8?<|im_end|>\n<|im_start|>assistant\n"
)
TOKENIZER_STRINGS = [
    "Hello, world!",
    "What is 7 times 8?",
    "  two spaces, tabs\tand\nnewlines",
    "naïve café — 日本語 🙂",
    "<|im_start|>user\nhi<|im_end|>",
    "def f(x):\n    return x ** 2  # 12345",
]


def load_gguf():
    tok = AutoTokenizer.from_pretrained(CACHE, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(CACHE, gguf_file=GGUF, dtype=torch.float32)
    return tok, model.eval()


@torch.no_grad()
def logits_of(model, ids):
    return model(torch.tensor([ids])).logits[0].float().numpy()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", help="an imported HF directory to compare against the GGUF")
    args = parser.parse_args()
    torch.manual_seed(0)
    tok, model = load_gguf()
    ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    logits = logits_of(model, ids)

    if args.check:
        other = AutoModelForCausalLM.from_pretrained(args.check, dtype=torch.float32).eval()
        other_tok = AutoTokenizer.from_pretrained(args.check)
        other_ids = other_tok(PROMPT, add_special_tokens=False)["input_ids"]
        err = float(np.abs(logits_of(other, ids) - logits).max())
        differing = [
            s for s in TOKENIZER_STRINGS
            if tok(s, add_special_tokens=False)["input_ids"] != other_tok(s, add_special_tokens=False)["input_ids"]
        ]
        chat = other_tok.apply_chat_template(
            [{"role": "user", "content": "What is 7 multiplied by 8?"}], tokenize=False, add_generation_prompt=True
        )
        record = {
            "checked": "r1ctl model import output reloaded by transformers vs transformers reading the GGUF",
            "prompt_ids_equal": other_ids == ids,
            "logits_max_abs_err": err,
            "tokenizer_strings_differing": differing,
            "chat_template_renders_reference_prompt": chat == PROMPT,
            "transformers": __import__("transformers").__version__,
        }
        with open(os.path.join(DATA, "smollm2_gguf_export_check.json"), "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        print(json.dumps(record))
        return

    top = np.argsort(-logits, axis=1)[:, :16].reshape(-1)
    subset = np.unique(np.concatenate([np.arange(256), np.arange(0, logits.shape[1], 97), top]))
    save_file(
        {"prompt_ids": np.array(ids, dtype=np.int64), "vocab_ids": subset.astype(np.int64),
         "logits": np.ascontiguousarray(logits[:, subset]).astype(np.float32)},
        os.path.join(DATA, "smollm2_gguf_reference.safetensors"),
    )
    out = model.generate(torch.tensor([ids]), max_new_tokens=96, do_sample=False)[0][len(ids):].tolist()
    record = {
        "gguf": GGUF,
        "prompt": PROMPT,
        "prompt_ids": ids,
        "greedy_new_ids": out,
        "greedy_text": tok.decode(out),
        "tokenizer": [{"text": s, "ids": tok(s, add_special_tokens=False)["input_ids"]} for s in TOKENIZER_STRINGS],
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
    }
    with open(os.path.join(DATA, "smollm2_gguf_reference.json"), "w") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps({k: record[k] for k in ("prompt_ids", "greedy_text")}, ensure_ascii=False))


if __name__ == "__main__":
    sys.exit(main())
