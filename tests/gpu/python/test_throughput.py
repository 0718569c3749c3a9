"""Steady-state decode throughput with the shim is at least 0.98 x without it (same model, same
batch), and the time the hook spends in acquire/release per step is reported (p50/p99).

Model: random Llama, 8 layers, hidden 1024, GQA 16/8, bf16. Batch: 64 requests x 128 prompt
tokens, 256 new tokens each, block size 64 (a new block every 64 tokens: acquisitions happen during
decode, not only at prefill). Processes alternate base, shim, base, shim (3 measured runs each after
a warm-up); the medians are compared.

    python3 tests/gpu/python/test_throughput.py
"""

from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_common as G  # noqa: E402

THRESHOLD = float(os.environ.get("KVCACHED_TEST_TPUT_RATIO", "0.98"))
SPEC = {
    "mode": "throughput",
    "runs": 3,
    "dtype": "bfloat16",
    "model": {"layers": 8, "hidden": 1024, "heads": 16, "kv_heads": 8, "seed": 31},
    "prompts": {"n": 64, "min_len": 128, "max_len": 128, "seed": 3},
    "max_new_tokens": 256,
    "cb": {"block_size": 64, "num_blocks": 1024, "max_batch_tokens": 8192},
    "timeout_s": 240,
}


def main() -> int:
    usable, what = G.cuda_status()
    if not usable:
        print(f"SKIP throughput: {what}")
        return 0
    if not os.path.isfile(G.shim_path()):
        G.report("throughput", False, f"shim not built: {G.shim_path()}")
        return 1
    print(f"throughput: {what}; shim {G.shim_path()}", flush=True)
    out = G.out_dir("throughput")
    rates = {False: [], True: []}
    adapters = []
    for i, shim in enumerate((False, True, False, True)):
        label = "shim" if shim else "base"
        rc, result, tail = G.run_worker(SPEC, shim, os.path.join(out, f"{i}-{label}.log"), 280)
        if rc != 0 or not result or not result.get("ok"):
            G.report("throughput", False, f"{label} run {i} failed (rc {rc}): {result and result.get('errors')}\n{tail}")
            return 1
        for run in result["runs"]:
            rates[shim].append(run["decode_tok_s"])
            if shim:
                adapters.extend(run["adapters"])
        print(f"  {label}: {[round(r) for r in rates[shim][-len(result['runs']):]]} decode tok/s", flush=True)
    if not adapters:
        G.report("throughput", False, "the hook did not manage the KV cache under LD_PRELOAD: nothing was measured")
        return 1
    base, shim = statistics.median(rates[False]), statistics.median(rates[True])
    ratio = shim / base if base else 0.0
    c50 = statistics.median(a["c_us_per_step_p50"] for a in adapters)
    c99 = max(a["c_us_per_step_p99"] for a in adapters)
    h50 = statistics.median(a["hook_us_per_step_p50"] for a in adapters)
    h99 = max(a["hook_us_per_step_p99"] for a in adapters)
    a = adapters[-1]
    detail = (
        f"decode {shim:.0f} vs {base:.0f} tok/s (ratio {ratio:.3f}, need >= {THRESHOLD}); "
        f"acquire/release per step with C calls p50 {c50:.1f} us p99 {c99:.1f} us "
        f"({a['steps_with_c_calls']} of {a['steps']} steps, max {a['c_calls_per_step_max']} calls/step); "
        f"hook total per step p50 {h50:.1f} us p99 {h99:.1f} us; {a['pages_acquired_total']} pages acquired"
    )
    G.write_json(
        os.path.join(out, "summary.json"),
        {"base_tok_s": rates[False], "shim_tok_s": rates[True], "ratio": ratio, "adapters": adapters},
    )
    ok = ratio >= THRESHOLD
    G.report("throughput", ok, detail)
    return 0 if ok else 1


def test_throughput():  # pytest entry point (scripts/gpu/run-suite.sh)
    assert main() == 0


if __name__ == "__main__":
    sys.exit(main())
