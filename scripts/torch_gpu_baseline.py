"""PyTorch on the shapes of r1's GPU benchmark (kernels/benches/cuda_bench.rs): a random-weight
Qwen2-0.5B-shaped model, a training step (f32 master weights, bf16 autocast, SDPA attention,
fused AdamW, clipping) and batched decoding with a KV cache and multinomial sampling. Prints the
same table rows as cuda_bench, including `JSON {...}` lines. Run by scripts/device-check.sh."""
import argparse, json, time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

BF16_PEAK = 989e12
HBM = 4.8e12


DEVICE = "cuda"


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def config(tiny=False):
    """Qwen2-0.5B's shape; `tiny` is a smoke-test shape for checking this script without a GPU."""
    if tiny:
        return Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                           tie_word_embeddings=True, attn_implementation="sdpa")
    return Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                       rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True,
                       max_position_embeddings=32768, attn_implementation="sdpa")


def matmul_params(c):
    qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * (c.hidden_size // c.num_attention_heads)
    per_layer = qkv * c.hidden_size + c.hidden_size * c.hidden_size + 3 * c.intermediate_size * c.hidden_size
    return per_layer * c.num_hidden_layers + c.vocab_size * c.hidden_size


def row(test, shape, tokens_per_s, achieved, peak_percent, step_s):
    unit = "TFLOP/s" if test == "train" else "TB/s"
    print(f"{test:<8} {shape:<14} {tokens_per_s:>12.0f} {achieved:>7.1f} {unit:<4} {peak_percent:>8.1f} {step_s * 1e3:>10.2f}")
    print("JSON " + json.dumps(dict(test=test, shape=shape, tokens_per_s=tokens_per_s, achieved=achieved,
                                    peak_percent=peak_percent, step_s=step_s)))


def train(c, b, t, steps):
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(c).to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1, fused=DEVICE == "cuda")
    ids = torch.randint(0, c.vocab_size, (b, t), device=DEVICE)
    times = []
    for step in range(steps + 1):
        sync()
        start = time.perf_counter()
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if step > 0:
            times.append(time.perf_counter() - start)
    step_s = sorted(times)[len(times) // 2]
    n = b * t
    flops = 6.0 * matmul_params(c) * n + 3 * 2 * 2 * c.num_hidden_layers * c.hidden_size * (t / 2) * n
    row("train", f"{b}x{t}", n / step_s, flops / step_s / 1e12, 100 * flops / step_s / BF16_PEAK, step_s)
    del model, opt
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


@torch.no_grad()
def decode(c, batch, context, steps):
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(c).to(DEVICE).to(torch.bfloat16).eval()
    ids = torch.randint(0, c.vocab_size, (batch, context), device=DEVICE)
    try:  # only the last position's logits: a [64, 512, V] tensor is not needed
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    except TypeError:
        out = model(input_ids=ids, use_cache=True)
    cache = out.past_key_values
    nxt = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1)
    times = []
    for step in range(steps + 1):
        sync()
        start = time.perf_counter()
        out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        nxt = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1)
        sync()
        if step > 0:
            times.append(time.perf_counter() - start)
    total = sum(times)
    kvd = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    positions = sum(batch * (context + s + 1) for s in range(1, steps + 1))
    bytes_read = 2.0 * matmul_params(c) * steps + 2 * 2 * c.num_hidden_layers * kvd * positions
    row("decode", f"{batch}x{steps}@{context}", batch * steps / total, bytes_read / total / 1e12,
        100 * bytes_read / total / HBM, sorted(times)[len(times) // 2])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-len", type=int, default=512)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--decode-batch", type=int, default=64)
    p.add_argument("--decode-context", type=int, default=512)
    p.add_argument("--decode-steps", type=int, default=64)
    p.add_argument("--device", default="cuda", help="cpu only to smoke-test this script")
    p.add_argument("--tiny", action="store_true", help="a tiny shape, to smoke-test this script")
    a = p.parse_args()
    global DEVICE
    DEVICE = a.device
    c = config(a.tiny)
    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}")
    print(f"{'test':<8} {'shape':<14} {'tokens/s':>12} {'achieved':>12} {'% peak':>8} {'step ms':>10}")
    train(c, a.train_batch, a.train_len, a.train_steps)
    decode(c, a.decode_batch, a.decode_context, a.decode_steps)


if __name__ == "__main__":
    main()
