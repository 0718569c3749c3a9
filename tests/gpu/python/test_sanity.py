"""KVCACHED_SANITY_CHECK=1 on the GPU.

two-models: two engine processes (different random Llamas) share one budget smaller than both
            working sets, under LD_PRELOAD with the sanity check on: both finish every request,
            the check ran before every step, and reported zero violations.
planted:    one engine; after a few steps the test writes 256 bytes into an unbacked page of a KV
            tensor (through its zero-page alias, as a kernel using a stale block would): the sanity
            check must report a stray write (and nothing else).

    python3 tests/gpu/python/test_sanity.py
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_common as G  # noqa: E402

BUDGET = os.environ.get("KVCACHED_TEST_SANITY_BUDGET", "384M")
MODEL_A = {"layers": 8, "hidden": 1024, "heads": 16, "kv_heads": 8, "seed": 21}
MODEL_B = {"layers": 8, "hidden": 1024, "heads": 16, "kv_heads": 16, "seed": 22}
COMMON = {
    "dtype": "bfloat16",
    "prompts": {"n": 64, "min_len": 32, "max_len": 256, "seed": 9},
    "max_new_tokens": 64,
    "timeout_s": 240,
}


def sanity_of(result: dict | None, key: str = "adapters") -> dict:
    adapters = (result or {}).get(key) or []
    return adapters[0] if adapters else {}


def two_models(out: str) -> tuple[bool, str]:
    ipc = f"kvsanity_{os.getpid()}_{int(time.time()) % 100000}"
    env = {"KVCACHED_SANITY_CHECK": "1", "KVCACHED_BUDGET": BUDGET}
    with cf.ThreadPoolExecutor(2) as pool:
        futures = {
            name: pool.submit(
                G.run_worker,
                dict(COMMON, model=model),
                True,
                os.path.join(out, f"two-models-{name}.log"),
                360,
                ipc_name=ipc,
                KVCACHED_LABEL=f"sanity-{name}",
                **env,
            )
            for name, model in (("a", MODEL_A), ("b", MODEL_B))
        }
        results = {name: f.result() for name, f in futures.items()}
    G.remove_segment(ipc)
    problems, parts = [], []
    for name, (rc, result, tail) in results.items():
        snap = sanity_of(result)
        if rc != 0 or not result or not result.get("ok"):
            problems.append(f"model {name} failed (rc {rc}): {result and result.get('errors')}\n{tail}")
            continue
        if not snap or "sanity_checks" not in snap:
            problems.append(f"model {name}: the hook did not run the sanity check (adapter {bool(snap)})")
            continue
        if snap["sanity_checks"] < 10:
            problems.append(f"model {name}: only {snap['sanity_checks']} sanity checks ran")
        if snap["sanity_violations"]:
            problems.append(f"model {name}: {snap['sanity_violations']} violations\n{tail}")
        parts.append(
            f"{name}: {len(result['outputs'])} requests, {snap['sanity_checks']} checks, "
            f"{snap['sanity_violations']} violations, {snap['refusals']} refusals"
        )
    if problems:
        return False, "; ".join(problems)
    return True, "; ".join(parts)


def planted(out: str) -> tuple[bool, str]:
    spec = dict(COMMON, model=MODEL_A, plant_stray_write=True)
    spec["prompts"] = dict(COMMON["prompts"], n=32)
    rc, result, tail = G.run_worker(
        spec, True, os.path.join(out, "planted.log"), 300, KVCACHED_SANITY_CHECK="1", KVCACHED_LABEL="sanity-planted"
    )
    if rc != 0 or not result or not result.get("ok"):
        return False, f"worker failed (rc {rc}): {result and result.get('errors')}\n{tail}"
    before = sanity_of(result)
    after = sanity_of(result, "adapters_after_plant")
    if result.get("planted") is None:
        return False, "could not find an unbacked page to plant the write in"
    if before.get("sanity_violations", -1) != 0:
        return False, f"violations before the planted write: {before.get('sanity_violations')}\n{tail}"
    stray = after.get("sanity_stray_writes", 0)
    others = after.get("sanity_violations", 0) - stray
    with open(os.path.join(out, "planted.log"), encoding="utf-8", errors="replace") as handle:
        logged = "stray write into unbacked KV memory" in handle.read()
    if stray < 1 or not logged:
        return False, f"planted write at {result['planted']} not reported (stray={stray}, logged={logged})\n{tail}"
    if others:
        return False, f"stray write reported, but also {others} other violations\n{tail}"
    return True, f"planted write at {result['planted']['addr']:#x} reported ({stray} stray-write report(s), no other violation)"


def main() -> int:
    usable, what = G.cuda_status()
    if not usable:
        print(f"SKIP sanity: {what}")
        return 0
    if not os.path.isfile(G.shim_path()):
        G.report("sanity", False, f"shim not built: {G.shim_path()}")
        return 1
    print(f"sanity: {what}; shim {G.shim_path()}; budget {BUDGET}", flush=True)
    out = G.out_dir("sanity")
    failed = 0
    for name, check in (("two-models", two_models), ("planted", planted)):
        ok, detail = check(out)
        G.report(f"sanity.{name}", ok, detail)
        failed += not ok
    return 1 if failed else 0


def test_sanity():  # pytest entry point (scripts/gpu/run-suite.sh)
    assert main() == 0


if __name__ == "__main__":
    sys.exit(main())
