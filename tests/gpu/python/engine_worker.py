"""One engine process for the GPU checks: builds a random-init Llama from a config (no downloads),
runs transformers' continuous batching on a fixed prompt set, and writes a JSON result.

    python3 engine_worker.py '<json spec>'

Spec keys (all optional except result_path):
  model:  {layers, hidden, heads, kv_heads, intermediate, vocab, seed}
  dtype:  bfloat16 | float16 | float32
  prompts: {n, min_len, max_len, seed};  max_new_tokens
  cb:     ContinuousBatchingConfig keyword arguments (block_size, num_blocks, max_batch_tokens, ...)
  mode:   generate | throughput | throughput_ab | loop
          loop: generate the prompt set again and again until SIGTERM/SIGINT (a long-running
          engine for kvctl launch and the hostile-segment checks); prints "ready" after the first
          round, "round N" after each, and exits 0 when stopped between or during rounds
  runs:   number of measured runs (throughput)
  pairs:  number of managed/plain run pairs in one process (throughput_ab, needs LD_PRELOAD)
  plant_stray_write: true -> after the first generation, write into an unbacked KV page and run
          a second generation; the sanity check must report it
  timeout_s: bound on each generation (the parent also kills the process group)

Under LD_PRELOAD the kvcached hook is enabled before transformers is imported. Every failure is
printed and recorded; the exit status is 0 only when every request finished without error.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

# The random-init Llama is built as in the two-models example (one definition of the model).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "examples", "two_models"))
from common import random_llama  # noqa: E402


def log(message: str) -> None:
    print(f"[worker {os.getpid()}] {message}", flush=True)


def main() -> int:
    spec = json.loads(sys.argv[1])
    result: dict = {"spec": spec, "ok": False, "errors": []}
    try:
        run(spec, result)
    except Exception as error:  # noqa: BLE001 - record, print, and fail
        result["errors"].append(f"{type(error).__name__}: {error}")
        traceback.print_exc()
    with open(spec["result_path"], "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    log(f"done ok={result['ok']} errors={result['errors'][:3]}")
    return 0 if result["ok"] else 1


def run(spec: dict, result: dict) -> None:
    shim = bool(os.environ.get("LD_PRELOAD"))
    if shim:
        import kvcached_hook

        kvcached_hook.enable()
    import torch
    import transformers
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    transformers.logging.set_verbosity_error()
    result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda}
    device = spec.get("device", "cuda")  # "cpu": smoke test of this script on a machine without a GPU
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("torch.cuda is not available")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtype = getattr(torch, spec.get("dtype", "bfloat16"))
    m = {"layers": 8, "hidden": 1024, "heads": 16, "kv_heads": 8, "intermediate": 2816, "vocab": 32000, "seed": 1}
    m.update(spec.get("model", {}))
    start = time.monotonic()
    model = random_llama(m, device, dtype)
    log(f"model {m} {dtype} built in {time.monotonic() - start:.1f}s")

    p = {"n": 64, "min_len": 16, "max_len": 128, "seed": 7}
    p.update(spec.get("prompts", {}))
    gen = torch.Generator().manual_seed(p["seed"])
    lengths = torch.randint(p["min_len"], p["max_len"] + 1, (p["n"],), generator=gen).tolist()
    prompts = [torch.randint(1, m["vocab"], (n,), generator=gen).tolist() for n in lengths]
    max_new = int(spec.get("max_new_tokens", 32))
    cb_kwargs = {"block_size": 64, "num_blocks": 1024, "max_batch_tokens": 4096, "use_cuda_graph": False,
                 "use_async_batching": False}
    cb_kwargs.update(spec.get("cb", {}))
    gen_config = GenerationConfig(do_sample=False, max_new_tokens=max_new, eos_token_id=-1, pad_token_id=0)
    timeout = float(spec.get("timeout_s", 240))

    def generate(inputs, record=False, plant=False):
        cb = ContinuousBatchingConfig(**cb_kwargs)
        manager = model.init_continuous_batching(generation_config=gen_config, continuous_batching_config=cb)
        ids = manager.add_requests(inputs, max_new_tokens=max_new, record_timestamps=record)
        t0 = time.perf_counter()
        manager.start()
        planted = None
        done = {}
        deadline = time.monotonic() + timeout
        while len(done) < len(ids) and time.monotonic() < deadline:
            adapter = current_adapter(manager)
            if plant and planted is None and adapter is not None and adapter.steps >= 2:
                planted = plant_stray_write(adapter)
            res = manager.get_result(timeout=0.2 if plant and planted is None else 1)
            if res is not None and res.is_finished():
                done[res.request_id] = res
            elif res is None and not manager.is_running():
                break
        elapsed = time.perf_counter() - t0
        adapter = current_adapter(manager)
        snaps = [adapter.snapshot()] if adapter is not None else []
        manager.stop(block=True, timeout=30)
        if len(done) < len(ids):
            raise RuntimeError(f"only {len(done)}/{len(ids)} requests finished within {timeout:.0f}s")
        errors = {r: d.error for r, d in done.items() if d.error}
        if errors:
            raise RuntimeError(f"{len(errors)} requests failed, e.g. {next(iter(errors.items()))}")
        return {r: done[r] for r in ids}, elapsed, snaps, planted

    mode = spec.get("mode", "generate")
    if mode == "loop":
        import signal

        stop = {"signal": None}

        def on_signal(signum, _frame):
            stop["signal"] = signum

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        first = None
        rounds = 0
        while stop["signal"] is None:
            outputs, elapsed, snaps, _ = generate(prompts)
            tokens = {r: o.generated_tokens for r, o in outputs.items()}
            if first is None:
                first = tokens
                result["outputs"] = tokens
                log("ready")
            elif tokens != first:  # greedy on the same prompts: every round must repeat the first
                raise RuntimeError(f"round {rounds + 1} differs from the first round")
            rounds += 1
            result["rounds"] = rounds
            result["adapters"] = snaps
            log(f"round {rounds} {elapsed:.2f}s")
        result["stopped_by"] = stop["signal"]
    elif mode == "generate":
        outputs, elapsed, snaps, _ = generate(prompts)
        result["outputs"] = {r: o.generated_tokens for r, o in outputs.items()}
        result["elapsed_s"] = elapsed
        result["adapters"] = snaps
        if spec.get("plant_stray_write"):
            _, _, snaps2, planted = generate(prompts[: max(8, len(prompts) // 4)], plant=True)
            result["planted"] = planted
            result["adapters_after_plant"] = snaps2
    elif mode == "throughput":
        generate(prompts[:8])  # warm up kernels and allocator
        runs = []
        for _ in range(int(spec.get("runs", 1))):
            outputs, elapsed, snaps, _ = generate(prompts, record=True)
            runs.append({"decode_tok_s": decode_rate(outputs.values()), "elapsed_s": elapsed, "adapters": snaps})
            log(f"run: {runs[-1]['decode_tok_s']:.0f} decode tok/s, {elapsed:.2f}s")
        result["runs"] = runs
    elif mode == "throughput_ab":
        # Same process, same model, same prompts: runs alternate between a cache the hook manages
        # (lazy regions, page-aware blocks, acquire/release per step) and a plain one (the hook
        # unpatched, so the engine allocates its cache with torch as usual). Alternating within
        # one process removes the run-to-run noise between processes (+-15% measured).
        if not shim:
            raise RuntimeError("throughput_ab needs LD_PRELOAD (the shim)")
        from kvcached_hook.engines import transformers_cb as hook_cb

        def run_once(managed: bool, inputs, record=True):
            (hook_cb.patch if managed else hook_cb.unpatch)()
            outputs, elapsed, snaps, _ = generate(inputs, record=record)
            if managed != bool(snaps):
                raise RuntimeError(f"managed={managed} but the hook {'did not manage' if managed else 'managed'} the cache")
            return outputs, elapsed, snaps

        for managed in (True, False):  # warm up kernels and allocator on both paths
            run_once(managed, prompts[:8], record=False)
        pairs = []
        for k in range(int(spec.get("pairs", 6))):
            pair = {}
            for managed in ((True, False) if k % 2 == 0 else (False, True)):
                outputs, elapsed, snaps = run_once(managed, prompts)
                key = "shim" if managed else "base"
                pair[key] = {"decode_tok_s": decode_rate(outputs.values()),
                             "step_ms_p50": decode_step_ms(outputs.values()),
                             "elapsed_s": elapsed, "adapters": snaps}
            pair["ratio_tok_s"] = pair["shim"]["decode_tok_s"] / pair["base"]["decode_tok_s"]
            pair["ratio_step"] = pair["base"]["step_ms_p50"] / pair["shim"]["step_ms_p50"]
            log(f"pair {k}: shim {pair['shim']['decode_tok_s']:.0f} base {pair['base']['decode_tok_s']:.0f} tok/s, "
                f"step p50 {pair['shim']['step_ms_p50']:.2f} vs {pair['base']['step_ms_p50']:.2f} ms")
            pairs.append(pair)
        hook_cb.patch()
        result["pairs"] = pairs
    else:
        raise ValueError(f"unknown mode {mode}")
    result["shim_stats"] = shim_stats() if shim else None
    result["ok"] = True


def decode_rate(outputs) -> float:
    """Tokens per second over the window in which every request was decoding."""
    stamps = [o.timestamps for o in outputs if o.timestamps]
    if not stamps:
        return 0.0
    lo = max(s[1] for s in stamps if len(s) > 1)  # after every request's first decode step
    hi = min(s[-1] for s in stamps)
    if hi <= lo:
        return 0.0
    tokens = sum(sum(1 for t in s if lo < t <= hi) for s in stamps)
    return tokens / (hi - lo)


def decode_step_ms(outputs) -> float:
    """Median time between consecutive tokens of a request, over the window in which every
    request was decoding (robust to the odd slow step: a GC pause, a block allocation)."""
    import statistics

    stamps = [o.timestamps for o in outputs if o.timestamps]
    if not stamps:
        return 0.0
    lo = max(s[1] for s in stamps if len(s) > 1)
    hi = min(s[-1] for s in stamps)
    gaps = [b - a for s in stamps for a, b in zip(s, s[1:]) if lo <= a and b <= hi]
    return statistics.median(gaps) * 1000.0 if gaps else 0.0


def current_adapter(manager):
    """The hook's adapter of this manager's cache (None without the shim, or before the cache exists)."""
    processor = getattr(manager, "batch_processor", None)
    cache = getattr(processor, "cache", None)
    return cache.__dict__.get("_kvcached") if cache is not None else None


def shim_stats():
    try:
        from kvcached_hook import capi

        api = capi.load()
        return api.stats(0) if api is not None else None
    except Exception as error:  # noqa: BLE001
        return {"error": str(error)}


def plant_stray_write(adapter):
    """Test only: writes 1s into an unbacked page of the first K tensor, through its zero-page
    alias, as a buggy kernel using a stale block would. Returns what was written, or None."""
    import torch
    from kvcached_hook import capi

    api, tracker, layout = adapter.api, adapter.tracker, adapter.layout
    keys = list(adapter.cache.key_cache)
    for unit in range(layout.num_units - 1, -1, -1):  # high pages: far from the engine's low blocks
        if tracker.acq[unit] or tracker.count[unit]:
            continue
        for span_index, addr, length in layout.unit_span_ranges(unit):
            if span_index != 0 or length < 4096:
                continue
            if api.page_state(addr) != capi.PAGE_ZERO:
                continue
            offset = addr - keys[0].data_ptr() + 1024  # 1 KiB into the page
            keys[0].view(-1).view(torch.uint8)[offset : offset + 256].fill_(1)
            torch.cuda.synchronize()
            log(f"planted a 256-byte stray write at {addr + 1024:#x} (unit {unit})")
            return {"addr": addr + 1024, "bytes": 256, "page_offset": 1024}
    return None


if __name__ == "__main__":
    sys.exit(main())
