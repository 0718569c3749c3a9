#!/usr/bin/env python3
"""What a C API call costs an engine hook through ctypes (a benchmark, not a test).

Loads the built shim (build/lib/libkvcached_shim.so, or --shim) on the fake CUDA driver
(build/fakecuda/libcuda.so.1, or --driver), as the real-shim tests do, in a child process with its
own ledger segment (removed at the end), makes one lazy region and fills a small budget
(KVCACHED_BUDGET, default 32M), then times each call `--calls` times (default 100000), one
perf_counter_ns pair around each call, and prints the median, p99 and mean in us:

  budget_headroom      CApi.budget_headroom(0): kvcached_budget_headroom_get, what a refused
                       engine asks in a step it would otherwise wait (tracker.py)
  budget_headroom raw  the bound function alone, on a reused output (the binding's own cost is
                       the difference)
  share_action         CApi.share_verdict_fast(0): the sharing poll every vLLM step, for scale
  refused acquire      CApi.acquire of one page on the full budget (KVCACHED_ERR_NO_MEMORY), what
                       the headroom query stands in for (fewer calls: --refused-calls, default 10000)
  timer                an empty perf_counter_ns pair (included in every line above)

  $(scripts/python-env.sh) bench/capi_call_cost.py [--calls N] [--shim PATH] [--driver PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import ctypes, json, statistics, sys, time
from kvcached_hook import capi as C

shim, calls, refused_calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
api = C.load(shim)
assert api is not None and api.enabled(), api.last_error() if api else "no shim"
assert api._budget_headroom is not None, "this shim lacks kvcached_budget_headroom_get"
page = api.stats(0)["page_size"]
base = api.region_create(0, 1024 * page, C.REGION_LAZY)
held = 0
while held < 1024 and api.acquire([(base + held * page, page)]) == C.OK:
    held += 1
assert 0 < held < 1024, f"the budget did not fill: {held} pages"
clock = time.perf_counter_ns


def timed(fn, n):
    out = [0] * n
    for i in range(n):
        start = clock()
        fn()
        out[i] = clock() - start
    return out


raw_fn, raw_out = api._budget_headroom, ctypes.c_uint64(0)
raw_ref = ctypes.byref(raw_out)
refused = [(base + held * page, page)]
rows = {
    "budget_headroom": timed(lambda: api.budget_headroom(0), calls),
    "budget_headroom raw": timed(lambda: raw_fn(0, raw_ref), calls),
    "share_action": timed(lambda: api.share_verdict_fast(0), calls),
    "refused acquire": timed(lambda: api.acquire(refused), refused_calls),
    "timer": timed(lambda: None, calls),
}
assert api.budget_headroom(0) == 0, api.budget_headroom(0)
assert api.acquire(refused) == C.ERR_NO_MEMORY
print(json.dumps({"held_pages": held, "page": page, "rows": {
    name: [statistics.median(v) / 1e3, sorted(v)[int(len(v) * 0.99)] / 1e3, sum(v) / len(v) / 1e3, len(v)]
    for name, v in rows.items()}}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--refused-calls", type=int, default=10_000)
    parser.add_argument("--shim", default=os.path.join(ROOT, "build", "lib", "libkvcached_shim.so"))
    parser.add_argument("--driver", default=os.path.join(ROOT, "build", "fakecuda", "libcuda.so.1"))
    args = parser.parse_args()
    for path in (args.shim, args.driver):
        if not os.path.isfile(path):
            sys.exit(f"capi_call_cost: {path} not found (build first: scripts/build.sh)")
    name = f"bench_capi_{os.getpid()}"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "hooks", "python"), KVCACHED_IPC_NAME=name,
               KVCACHED_CUDA_DRIVER=args.driver, KVCACHED_LOG_LEVEL="error")
    env.setdefault("KVCACHED_BUDGET", "32M")
    try:
        result = subprocess.run([sys.executable, "-c", CHILD, args.shim, str(args.calls), str(args.refused_calls)],
                                env=env, capture_output=True, text=True, timeout=600)
    finally:
        segment = f"/dev/shm/kvcached_{name}"
        if os.path.exists(segment):
            os.remove(segment)
    if result.returncode != 0:
        sys.exit(f"capi_call_cost: the child failed:\n{result.stdout}{result.stderr}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"KVCACHED_BUDGET={env['KVCACHED_BUDGET']} ({report['held_pages']} pages of {report['page']} bytes, full)")
    print(f"{'call':<22}{'median us':>10}{'p99 us':>10}{'mean us':>10}{'calls':>10}")
    for call, (median, p99, mean, n) in report["rows"].items():
        print(f"{call:<22}{median:>10.3f}{p99:>10.3f}{mean:>10.3f}{n:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
