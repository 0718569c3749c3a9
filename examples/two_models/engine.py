"""One engine process of the two-models example: a random Llama served by transformers' continuous
batching, fed by its request trace, sampling its KV memory every 100 ms. Started by driver.py.

    engine.py --name a --mode shim|static --num-blocks N --trace trace.json --sync DIR --result out.json

Handshake with the driver: writes DIR/ready-NAME after warm-up, waits for DIR/go (holding the common
start time), replays the trace, drains until the deadline, writes the result JSON and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def log(name: str, message: str) -> None:
    print(f"[engine {name} {os.getpid()}] {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--mode", choices=("shim", "static"), required=True)
    parser.add_argument("--num-blocks", type=int, required=True)
    parser.add_argument("--trace", required=True)
    parser.add_argument("--sync", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--drain-s", type=float, default=20.0)
    parser.add_argument("--max-batch-tokens", type=int, default=2048)
    args = parser.parse_args()
    name = args.name
    if args.mode == "shim":
        import kvcached_hook

        kvcached_hook.enable()
    import torch
    import transformers
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    import common

    transformers.logging.set_verbosity_error()
    with open(args.trace, encoding="utf-8") as handle:
        trace = json.load(handle)
    model = common.build_model(name)
    gen = GenerationConfig(do_sample=False, max_new_tokens=256, eos_token_id=-1, pad_token_id=0)
    cb = ContinuousBatchingConfig(
        block_size=common.BLOCK_SIZE,
        num_blocks=args.num_blocks,
        max_batch_tokens=args.max_batch_tokens,
        use_cuda_graph=False,
        use_async_batching=False,
    )
    manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
    manager.start()
    # Warm-up: kernels, cuBLAS handles, and the cache itself (created by the manager's thread).
    for i in range(4):
        manager.add_request(list(range(1, 65)), request_id=f"warmup-{i}", max_new_tokens=8)
    warm = 0
    deadline = time.monotonic() + 120
    while warm < 4 and time.monotonic() < deadline:
        res = manager.get_result(timeout=1)
        if res is not None and res.is_finished():
            warm += 1
    if warm < 4:
        log(name, "warm-up did not finish in 120 s")
        manager.stop(block=True, timeout=10, hard_stop=True)
        return 1
    cache = manager.batch_processor.cache
    adapter = cache.__dict__.get("_kvcached")
    static_bytes = sum(t.numel() * t.element_size() for t in list(cache.key_cache) + list(cache.value_cache))
    api = None
    if args.mode == "shim":
        from kvcached_hook import capi

        api = capi.load()
        if adapter is None:
            log(name, "WARNING: running under the shim but the hook does not manage the KV cache")
    log(name, f"ready: {args.mode}, {args.num_blocks} blocks, KV tensors {static_bytes / 2**30:.2f} GiB, "
        f"managed={adapter is not None}")
    with open(os.path.join(args.sync, f"ready-{name}"), "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))

    go = os.path.join(args.sync, "go")
    deadline = time.monotonic() + 300
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            log(name, "no go signal within 300 s")
            manager.stop(block=True, timeout=10, hard_stop=True)
            return 1
        time.sleep(0.02)
    time.sleep(0.05)
    with open(go, encoding="utf-8") as handle:
        t0 = float(handle.read().strip())
    end = t0 + (max(r["t"] for r in trace) if trace else 0) + args.drain_s

    samples = []
    stop = threading.Event()
    scheduler_of = lambda: getattr(manager.batch_processor, "scheduler", None)  # noqa: E731

    def sample() -> None:
        while not stop.is_set():
            now = time.time() - t0
            row = {"t": round(now, 3)}
            if adapter is not None:
                row["kv_backed"] = adapter.tracker.backed_bytes()
                row["held_blocks"] = adapter.tracker.managed - adapter.tracker.nfree
            else:
                row["kv_backed"] = static_bytes
            if api is not None:
                try:
                    stats = api.stats(torch.cuda.current_device())
                    row["shim_in_use"] = stats["in_use_bytes"]
                    row["shim_reserved"] = stats["mapped_free_bytes"] + stats["pool_bytes"]
                except Exception:  # noqa: BLE001 - sampling is best effort
                    pass
            sched = scheduler_of()
            if sched is not None:
                row["active"] = len(sched.active_requests)
                row["waiting"] = len(sched.waiting_requests)
            samples.append(row)
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    submitted: dict[str, dict] = {}

    def submit() -> None:
        for i, item in enumerate(trace):
            delay = t0 + item["t"] - time.time()
            if delay > 0:
                time.sleep(delay)
            if time.time() > end:
                break
            rid = f"{name}-{i}"
            submitted[rid] = {"t": item["t"], "prompt": len(item["prompt"]), "max_new": item["max_new"]}
            manager.add_request(item["prompt"], request_id=rid, max_new_tokens=item["max_new"], record_timestamps=True)

    submitter = threading.Thread(target=submit, daemon=True)
    submitter.start()

    finished: dict[str, dict] = {}
    while time.time() < end:
        res = manager.get_result(timeout=0.2)
        if res is None or not res.is_finished() or res.request_id.startswith("warmup"):
            if not submitter.is_alive() and len(finished) == len(submitted) and len(submitted) == len(trace):
                break
            continue
        stamps = res.timestamps or []
        finished[res.request_id] = {
            "ttft": (stamps[0] - res.created_time) if stamps else None,
            "tokens": len(res.generated_tokens),
            "done": time.time() - t0,
            "error": res.error,
        }
    stop.set()
    sampler.join(timeout=2)
    snapshot = adapter.snapshot() if adapter is not None else None
    manager.stop(block=True, timeout=15, hard_stop=True)
    result = {
        "name": name,
        "mode": args.mode,
        "num_blocks": args.num_blocks,
        "static_kv_bytes": static_bytes,
        "trace_requests": len(trace),
        "submitted": submitted,
        "finished": finished,
        "samples": samples,
        "adapter": snapshot,
    }
    with open(args.result, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    errors = sum(1 for f in finished.values() if f["error"])
    log(name, f"served {len(finished)}/{len(submitted)} submitted ({len(trace)} in trace), {errors} errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
