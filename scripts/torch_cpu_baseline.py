#!/usr/bin/env python3
"""PyTorch CPU baseline for `r1ctl bench` (scripts/bench.sh runs it): the same shapes as the engine's bench.
Model: Qwen2 architecture, hidden 512, 8 layers, 8 heads, 2 kv heads, intermediate 1408, vocab 4096 (~30M params).
Prints JSON: train tokens/s (fwd+bwd+AdamW, batch 4 x seq 256), prefill tokens/s, and decode tokens/s
(batch 16, 128 new tokens, KV cache, greedy)."""
import json, time, sys, os
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
torch.manual_seed(0)
threads = int(os.environ.get("THREADS", "2")); torch.set_num_threads(threads)
cfg = Qwen2Config(vocab_size=4096, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
                  tie_word_embeddings=True, rope_theta=1e6)
cfg._attn_implementation = os.environ.get("ATTN", "sdpa")
m = Qwen2ForCausalLM(cfg)
nparams = sum(p.numel() for p in m.parameters())
opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
B, T = 4, 256
ids = torch.randint(0, cfg.vocab_size, (B, T))
def step():
    out = m(ids, labels=ids); out.loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
step()
n = 5; t0 = time.perf_counter()
for _ in range(n): step()
train_tps = n * B * T / (time.perf_counter() - t0)
m.eval()
with torch.no_grad():
    m(ids); t0 = time.perf_counter()
    for _ in range(3): m(ids)
    prefill_tps = 3 * B * T / (time.perf_counter() - t0)
    pb = torch.randint(0, cfg.vocab_size, (16, 32))
    m.generate(pb, max_new_tokens=8, do_sample=False, min_new_tokens=8, pad_token_id=0)
    t0 = time.perf_counter()
    m.generate(pb, max_new_tokens=128, do_sample=False, min_new_tokens=128, pad_token_id=0)
    decode_tps = 16 * 128 / (time.perf_counter() - t0)
print(json.dumps({"torch": torch.__version__, "threads": threads, "params": nparams,
                  "train_tokens_per_s": round(train_tps, 1), "prefill_tokens_per_s": round(prefill_tps, 1),
                  "decode_tokens_per_s": round(decode_tps, 1)}))
