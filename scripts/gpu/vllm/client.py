#!/usr/bin/env python3
"""Drives vLLM for the device-side proofs (scripts/gpu/vllm/device.sh). Prompts are token-id lists
(the model has random weights and no tokenizer), the same on every run.

    client.py offline OUT.json [--fp8] [--eager] [--prompts N] [--max-tokens N] [--gpu-util F] [--kv-bytes N]
        greedy outputs of vllm.LLM in this process (LD_PRELOAD and VLLM_* come from the caller)
    client.py compare A.json B.json
        prints one JSON line: prompts, identical, first differing prompt and token
    client.py load PORT N CONCURRENCY PROMPT_LEN MAX_TOKENS [SET]
        a serving load on `vllm serve` at PORT: tokens/s, errors (one JSON line). SET (default 0)
        picks the prompts: loads of different sets share no prefix block (as a benchmark's random
        prompts), loads of the same set repeat every prompt (prefix-cache hits)
    client.py wait PORT TIMEOUT_S [PID]
        waits for /health, prints the seconds it took (exit 1 on timeout, or at once when the server
        PID has exited: a server that died is not waited for)
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import sys
import time
import urllib.request

MODEL = os.environ.get("VLLM_PROOF_MODEL", "/tmp/vllm-proof-model")
VOCAB = 32000


def prompt_tokens(n_prompts: int) -> list[list[int]]:
    """n prompts of 8 to 2000 tokens, spread evenly, deterministic."""
    out = []
    for k in range(n_prompts):
        length = 8 + (2000 - 8) * k // max(1, n_prompts - 1)
        out.append([1] + [(k * 7919 + j * 104729) % (VOCAB - 200) + 100 for j in range(length - 1)])
    return out


def offline(path: str, argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--fp8", action="store_true")
    ap.add_argument("--eager", action="store_true")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--gpu-util", type=float, default=0.2)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    # A fixed KV size (bytes) instead of one derived from free memory: runs side by side, and runs
    # under a budget far below the GPU, then get the same cache (and so the same schedule).
    ap.add_argument("--kv-bytes", type=int, default=0)
    args = ap.parse_args(argv)
    from vllm import LLM, SamplingParams

    try:
        from vllm.inputs import TokensPrompt
    except ImportError:  # moved between releases
        from vllm.inputs.data import TokensPrompt
    t0 = time.time()
    llm = LLM(
        model=MODEL,
        load_format="dummy",
        skip_tokenizer_init=True,
        seed=0,
        max_model_len=4096,
        max_num_seqs=args.max_num_seqs,
        gpu_memory_utilization=args.gpu_util,
        enforce_eager=args.eager,
        kv_cache_dtype="fp8" if args.fp8 else "auto",
        **({"kv_cache_memory_bytes": args.kv_bytes} if args.kv_bytes else {}),
    )
    ready_s = time.time() - t0
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True, detokenize=False)
    prompts = [TokensPrompt(prompt_token_ids=p) for p in prompt_tokens(args.prompts)]
    t1 = time.time()
    results = llm.generate(prompts, params, use_tqdm=False)
    gen_s = time.time() - t1
    tokens = [list(r.outputs[0].token_ids) for r in results]
    with open(path, "w") as f:
        json.dump({"tokens": tokens, "ready_s": ready_s, "generate_s": gen_s,
                   "out_tokens": sum(map(len, tokens)), "env": {k: v for k, v in os.environ.items()
                                                                if k.startswith(("VLLM_", "KVCACHED_", "LD_PRELOAD"))}}, f)
    print(json.dumps({"ready_s": round(ready_s, 1), "generate_s": round(gen_s, 2), "prompts": len(tokens)}))


def compare(a_path: str, b_path: str) -> None:
    with open(a_path) as f:
        a = json.load(f)["tokens"]
    with open(b_path) as f:
        b = json.load(f)["tokens"]
    first = None
    same = 0
    for i, (x, y) in enumerate(zip(a, b)):
        if x == y:
            same += 1
        elif first is None:
            first = {"prompt": i, "token": next((j for j, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))}
    print(json.dumps({"prompts": max(len(a), len(b)), "identical": same, "all_identical": same == len(a) == len(b),
                      "first_difference": first}))


def request(port: int, prompt: list[int], max_tokens: int) -> dict:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as f:
        return json.load(f)


def load(port: int, n: int, concurrency: int, prompt_len: int, max_tokens: int, prompt_set: int = 0) -> None:
    # Prompt k of set s starts with its own token (a block of 16 is never the same in two prompts
    # or two sets); the rest is a fixed walk through the vocabulary.
    first = lambda k: (prompt_set * 1_000_003 + k) % (VOCAB - 200) + 100  # noqa: E731
    prompts = [[1, first(k)] + [(k * 7919 + prompt_set * 104_729 + j * 31) % (VOCAB - 200) + 100
                                for j in range(prompt_len - 2)] for k in range(n)]
    t0 = time.time()
    errors, tokens = [], 0
    with cf.ThreadPoolExecutor(concurrency) as pool:
        for fut in [pool.submit(request, port, p, max_tokens) for p in prompts]:
            try:
                tokens += fut.result()["usage"]["completion_tokens"]
            except Exception as error:  # noqa: BLE001 - counted and shown, the load goes on
                errors.append(repr(error)[:300])
    wall = time.time() - t0
    print(json.dumps({"port": port, "n": n, "concurrency": concurrency, "wall_s": round(wall, 3), "out_tokens": tokens,
                      "tok_per_s": round(tokens / wall, 1), "errors": len(errors), "first_error": errors[:1]}))


def alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent shell) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait(port: int, timeout_s: float, pid: int | None = None) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout_s and alive(pid):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            print(f"{time.time() - t0:.1f}")
            return 0
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.5)
    return 1


def main() -> int:
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "offline":
        offline(rest[0], rest[1:])
    elif mode == "compare":
        compare(rest[0], rest[1])
    elif mode == "load":
        load(*map(int, rest[:6]))
    elif mode == "wait":
        return wait(int(rest[0]), float(rest[1]), int(rest[2]) if len(rest) > 2 else None)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
