"""Runs every Python GPU check of the engine hook, each in its own process with a time limit, and
prints a summary table last. Skips cleanly (exit 0) where torch.cuda is unavailable.

    python3 tests/gpu/python/run_all.py              # from the repo root, shim in build-gpu/lib
    KVCACHED_SHIM_LIB=/path/libkvcached_shim.so OUT=/tmp/out python3 tests/gpu/python/run_all.py
    python3 tests/gpu/python/run_all.py identity sanity   # a subset

Expected time on one H100: about 7 minutes (torch_interpose ~0.5, identity ~1.5, sanity ~1.5,
throughput ~3.5); everything is bounded by KVCACHED_GPU_PY_BUDGET_S (default 570 s). Logs and JSON
under $OUT (or build-gpu/gpu-python-out).
"""

from __future__ import annotations

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_common as G  # noqa: E402

CHECKS = [  # (name, script, time limit in seconds)
    ("torch_interpose", "test_torch_interpose.py", 600),
    ("identity", "test_identity.py", 900),
    ("sanity", "test_sanity.py", 800),
    ("throughput", "test_throughput.py", 1200),
    ("hostile", "test_hostile.py", 600),  # trust model and fail-safe budget with a real engine (root)
    ("launch", "test_launch.py", 500),  # kvctl launch of two engines from examples/launch/
]
LINE = re.compile(r"^(PASS|FAIL|SKIP) (\S+?):? (.*)$")


def main() -> int:
    wanted = set(sys.argv[1:])
    usable, what = G.cuda_status()
    print(f"engine-hook GPU checks: {what}; shim {G.shim_path()}", flush=True)
    if not usable:
        print(f"SKIP all: {what}")
        return 0
    if not os.path.isfile(G.shim_path()):
        print(f"FAIL: the shim is not built at {G.shim_path()} (build it, or set KVCACHED_SHIM_LIB)")
        return 1
    out = G.out_dir("run_all")
    rows = []
    # The whole run must fit one 10-minute device command: one deadline for all checks.
    deadline = time.monotonic() + float(os.environ.get("KVCACHED_GPU_PY_BUDGET_S", "570"))
    for name, script, limit in CHECKS:
        if wanted and name not in wanted:
            continue
        limit = min(limit, deadline - time.monotonic())
        if limit < 45:
            rows.append(("FAIL", name, 0.0, "not run: the time budget (KVCACHED_GPU_PY_BUDGET_S) is spent; run it alone"))
            continue
        print(f"\n=== {name} (limit {limit:.0f}s)", flush=True)
        started = time.monotonic()
        child = G.Child([sys.executable, os.path.join(G.HERE, script)], dict(os.environ), os.path.join(out, f"{name}.log"), name)
        rc = child.wait(limit)
        seconds = time.monotonic() - started
        with open(child.log_path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        print(text, end="" if text.endswith("\n") else "\n", flush=True)
        lines = [m.groups() for m in (LINE.match(l) for l in text.splitlines()) if m]
        if rc == 124:
            lines.append(("FAIL", name, f"timed out after {limit:.0f}s (killed)"))
        elif rc != 0 and not any(kind == "FAIL" for kind, _, _ in lines):
            lines.append(("FAIL", name, f"exited {rc} without a FAIL line (see {child.log_path})"))
        if not lines:
            lines.append(("FAIL" if rc else "PASS", name, f"exit {rc}"))
        for kind, check, detail in lines:
            rows.append((kind, check, seconds, detail))
    print("\n" + "=" * 100)
    print(f"{'result':6}  {'check':28}  {'secs':>5}  detail")
    for kind, check, seconds, detail in rows:
        short = detail if len(detail) <= 160 else detail[:157] + "..."
        print(f"{kind:6}  {check:28}  {seconds:5.0f}  {short}")
    failed = sum(kind == "FAIL" for kind, _, _, _ in rows)
    passed = sum(kind == "PASS" for kind, _, _, _ in rows)
    skipped = sum(kind == "SKIP" for kind, _, _, _ in rows)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as handle:
        handle.write("| result | check | seconds | detail |\n| --- | --- | ---: | --- |\n")
        for kind, check, seconds, detail in rows:
            handle.write(f"| {kind} | {check} | {seconds:.0f} | {detail.splitlines()[0] if detail else ''} |\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
