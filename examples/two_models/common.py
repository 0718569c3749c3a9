"""What the two engines serve: the two random-init models and the bursty request trace.

Both models are Llama-style, built from a config with a fixed seed (nothing is downloaded), and
keep the same KV bytes per token (8 layers x 8 KV heads x 64 dims x K+V x bf16 = 16 KiB), so
their memory curves are directly comparable; they differ in MLP width and weights.
"""

from __future__ import annotations

import os
import random

MODELS = {
    "a": {"layers": 8, "hidden": 1024, "heads": 16, "kv_heads": 8, "intermediate": 2816, "vocab": 32000, "seed": 101},
    "b": {"layers": 8, "hidden": 1024, "heads": 16, "kv_heads": 8, "intermediate": 4096, "vocab": 32000, "seed": 202},
}
BLOCK_SIZE = 64  # tokens per KV block


def kv_bytes_per_block(model: dict, dtype_bytes: int = 2) -> int:
    head_dim = model["hidden"] // model["heads"]
    return BLOCK_SIZE * model["layers"] * 2 * model["kv_heads"] * head_dim * dtype_bytes


def random_llama(m: dict, device: str, dtype, name_or_path: str | None = None):
    """A Llama of shape m (vocab, hidden, intermediate, layers, heads, kv_heads) with weights drawn
    from m["seed"]: the same model on every run, nothing downloaded. (Also used by the GPU tests'
    engine worker, tests/gpu/python/engine_worker.py.)"""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    extra = {"name_or_path": name_or_path} if name_or_path else {}
    config = LlamaConfig(
        vocab_size=m["vocab"],
        hidden_size=m["hidden"],
        intermediate_size=m["intermediate"],
        num_hidden_layers=m["layers"],
        num_attention_heads=m["heads"],
        num_key_value_heads=m["kv_heads"],
        max_position_embeddings=4096,
        attn_implementation="sdpa",
        **extra,
    )
    torch.manual_seed(m["seed"])
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


def build_model(name: str):
    import torch

    m = dict(MODELS[name])
    device = "cuda"
    if os.environ.get("TWO_MODELS_SMOKE") == "1":  # plumbing check without a GPU: tiny, on the CPU
        m.update(layers=2, hidden=128, heads=4, kv_heads=2, intermediate=256, vocab=1000)
        device = "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return random_llama(m, device, dtype, name_or_path=f"random-llama-{name}")


def make_trace(name: str, phase_s: float, rate_hi: float, rate_lo: float, seed: int = 7) -> list[dict]:
    """Poisson arrivals: model a is busy in the first phase and nearly idle in the second, model b
    the reverse. Each request: arrival time (s from the start), prompt tokens, tokens to generate."""
    rng = random.Random(f"{seed}-{name}")
    busy_first = name == "a"
    trace = []
    for phase in (0, 1):
        rate = rate_hi if (phase == 0) == busy_first else rate_lo
        t = phase * phase_s
        end = (phase + 1) * phase_s
        while True:
            t += rng.expovariate(rate)
            if t >= end:
                break
            prompt = [rng.randrange(1, 1000) for _ in range(rng.randint(64, 256))]
            trace.append({"t": round(t, 4), "prompt": prompt, "max_new": rng.randint(64, 256)})
    return trace
