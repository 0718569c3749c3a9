"""Steady-state decode throughput with the shim is at least 0.98 x without it (same model, same
batch), and the time the hook spends in acquire/release per step is reported (p50/p99).

Model: random Llama, 8 layers, hidden 1024, GQA 16/8, bf16. Batch: 64 requests x 128 prompt
tokens, 96 new tokens each, block size 64: every request takes a new block during the measured
decode window (at token 64), so acquisitions happen while decoding, not only at prefill.

How it is measured (the first H100 attempt, one process per run, varied +-15% between identical
runs and could not resolve 2%):
- One process under LD_PRELOAD alternates runs whose KV cache the hook manages (lazy regions,
  page-aware blocks, acquire/release every step) with runs where the hook is unpatched and the
  engine allocates its cache with torch as usual: same process, model, prompts and kernels. The
  order alternates (shim-base, base-shim, ...). Each run's decode rate is measured over the window
  in which every request decodes, and its median step time from the per-token timestamps.
- The verdict is the median over pairs of the per-pair decode-rate ratio shim / base. The rate
  still varies about +-10% between runs of one process (the engine's step loop is CPU-bound, ~85
  ms per step for this model on the H100), so the hook's own time on the engine thread, as a share
  of each managed run, is reported too: a bound on the shim's cost that has no such noise.
- For information, a second process without LD_PRELOAD runs the plain engine too; its rate
  against the preloaded process's plain runs shows what merely preloading the shim costs (the
  pass-through hooks; expected 0, within the between-process noise).

    python3 tests/gpu/python/test_throughput.py
"""

from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_common as G  # noqa: E402

THRESHOLD = float(os.environ.get("KVCACHED_TEST_TPUT_RATIO", "0.98"))
PAIRS = int(os.environ.get("KVCACHED_TEST_TPUT_PAIRS", "6"))
SPEC = {
    "dtype": "bfloat16",
    "model": {"layers": 8, "hidden": 1024, "heads": 16, "kv_heads": 8, "seed": 31},
    "prompts": {"n": 64, "min_len": 128, "max_len": 128, "seed": 3},
    "max_new_tokens": 96,
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

    spec = dict(SPEC, mode="throughput_ab", pairs=PAIRS)
    rc, result, tail = G.run_worker(spec, True, os.path.join(out, "ab-shim.log"), 120 + 60 * PAIRS)
    if rc != 0 or not result or not result.get("ok"):
        G.report("throughput", False, f"A/B run failed (rc {rc}): {result and result.get('errors')}\n{tail}")
        return 1
    pairs = result["pairs"]
    ratios = [p["ratio_tok_s"] for p in pairs]
    step_ratios = [p["ratio_step"] for p in pairs]
    ratio = statistics.median(ratios)
    shim_rate = statistics.median(p["shim"]["decode_tok_s"] for p in pairs)
    base_rate = statistics.median(p["base"]["decode_tok_s"] for p in pairs)
    adapters = [a for p in pairs for a in p["shim"]["adapters"]]

    # Information only: the plain engine without LD_PRELOAD, in its own process.
    rc2, plain, _ = G.run_worker(dict(SPEC, mode="throughput", runs=3), False, os.path.join(out, "no-preload.log"), 300)
    unloaded = statistics.median(r["decode_tok_s"] for r in plain["runs"]) if rc2 == 0 and plain and plain.get("ok") else 0.0

    # The hook's own time (bookkeeping + C calls) on the engine's thread, as a share of the run:
    # an upper bound on what the shim can cost a CPU-bound step loop, free of run-to-run noise.
    hook_share = statistics.median(p["shim"]["adapters"][0]["hook_time_s"] / p["shim"]["elapsed_s"] for p in pairs)
    c50 = statistics.median(a["c_us_per_step_p50"] for a in adapters)
    c99 = max(a["c_us_per_step_p99"] for a in adapters)
    h50 = statistics.median(a["hook_us_per_step_p50"] for a in adapters)
    h99 = max(a["hook_us_per_step_p99"] for a in adapters)
    a = adapters[-1]
    detail = (
        f"decode shim/base ratio {ratio:.3f} (median of {len(pairs)} in-process pairs, each "
        f"{', '.join(f'{r:.3f}' for r in ratios)}; need >= {THRESHOLD}); median step-time ratio "
        f"{statistics.median(step_ratios):.3f}; decode {shim_rate:.0f} vs {base_rate:.0f} tok/s; "
        f"hook time {100 * hook_share:.2f}% of each managed run; "
        f"without LD_PRELOAD (separate process, information) {unloaded:.0f} tok/s; "
        f"acquire/release per step with C calls p50 {c50:.1f} us p99 {c99:.1f} us "
        f"({a['steps_with_c_calls']} of {a['steps']} steps, max {a['c_calls_per_step_max']} calls/step); "
        f"hook total per step p50 {h50:.1f} us p99 {h99:.1f} us; {a['pages_acquired_total']} pages acquired"
    )
    G.write_json(
        os.path.join(out, "summary.json"),
        {"ratio": ratio, "pair_ratios": ratios, "step_ratios": step_ratios, "shim_tok_s": shim_rate,
         "base_tok_s": base_rate, "no_preload_tok_s": unloaded, "hook_share": hook_share, "pairs": pairs,
         "c_us_per_step_p50": c50, "c_us_per_step_p99": c99, "hook_us_per_step_p50": h50,
         "hook_us_per_step_p99": h99},
    )
    ok = ratio >= THRESHOLD
    G.report("throughput", ok, detail)
    return 0 if ok else 1


def test_throughput():  # pytest entry point (scripts/gpu/run-suite.sh)
    assert main() == 0


if __name__ == "__main__":
    sys.exit(main())
