#!/usr/bin/env python3
"""A Hugging Face model directory of `r1ctl bench`'s built-in `qwen2-30m` shape (24.7M parameters:
hidden 512, MLP 1408, 8 layers, 8 query / 2 KV heads, vocabulary 4096, tied embeddings), randomly
initialised (seed 0, std 0.02), with a byte-level BPE tokenizer of 4,096 tokens trained here on the
prompts `r1ctl bench grpo` renders (ChatML, arithmetic), so both r1 and TRL can run a GRPO step of
the micro-benchmark's shape (scripts/bench-grpo-trl.sh DIR).

Usage: .cache/venv-trl/bin/python scripts/make-qwen2-30m.py [DIR]   (default .cache/models/qwen2-30m;
the venv of scripts/bench-grpo-trl.sh)
"""
import json
import os
import random
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

out = sys.argv[1] if len(sys.argv) > 1 else ".cache/models/qwen2-30m"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
rng = random.Random(0)

# Text like the prompts r1's arithmetic task renders (ChatML, its instruction, a short answer).
texts = []
for _ in range(20000):
    a, b = rng.randint(0, 9999), rng.randint(0, 9999)
    op = rng.choice("+-*")
    word = {"+": "+", "-": "-", "*": "*"}[op]
    texts.append(f"<|im_start|>user\nWhat is {a} {word} {b}? Show your work in <think> </think> tags "
                 f"and return only the exact integer result in <answer> </answer> tags, for example "
                 f"<answer>1234</answer>.<|im_end|>\n<|im_start|>assistant\n"
                 f"<think>{a}{op}{b} is computed digit by digit.</think> <answer>{a + b}</answer><|im_end|>")
tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tokenizer.decoder = decoders.ByteLevel()
special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
    vocab_size=4096, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>",
                               eos_token="<|im_end|>", pad_token="<|endoftext|>")
fast.save_pretrained(out)

config = Qwen2Config(
    vocab_size=4096, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
    num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
    rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True, initializer_range=0.02,
    bos_token_id=fast.convert_tokens_to_ids("<|im_start|>"),
    eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
    pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
)
model = Qwen2ForCausalLM(config)
model.save_pretrained(out, safe_serialization=True)
params = sum(p.numel() for p in model.parameters())
print(json.dumps({"dir": out, "parameters": params, "vocab": len(fast)}))
