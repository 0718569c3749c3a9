#!/usr/bin/env python3
"""Summary table of a GPU suite run (scripts/gpu/run-suite.sh): test counts per binary and each
benchmark's key numbers against their targets. Reads OUT/*.rc, *.gtest.json, *.bench.json.
Exits 1 if any test failed or any program ended with an error."""
import glob
import json
import os
import re
import sys


def gtest_counts(path):
    with open(path) as f:
        data = json.load(f)
    passed = failed = skipped = 0
    for suite in data.get("testsuites", []):
        for case in suite.get("testsuite", []):
            if case.get("failures"):
                failed += 1
            elif case.get("result") == "SKIPPED":
                skipped += 1
            else:
                passed += 1
    return passed, failed, skipped


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def pytest_counts(log):
    text = read(log)
    count = {k: 0 for k in ("passed", "failed", "error", "skipped")}
    for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped)", text[-2000:]):
        count["error" if kind.startswith("error") else kind] = int(n)
    return count["passed"], count["failed"] + count["error"], count["skipped"]


def main(out):
    bad = False
    rcs = {os.path.basename(p)[:-3]: open(p).read().strip() for p in sorted(glob.glob(f"{out}/*.rc"))}
    print("SUMMARY  " + " | ".join(read(f"{out}/device.txt").strip().splitlines()[:3]))
    print(f"  {'test program':36} {'pass':>5} {'fail':>5} {'skip':>5}  status")
    totals = [0, 0, 0]
    for name, rc in rcs.items():
        if name.startswith(("bench_", "interpose_", "preload_")):
            continue
        gj = f"{out}/{name}.gtest.json"
        if os.path.exists(gj):
            p, f_, s = gtest_counts(gj)
        else:  # python tests (pytest's "N passed, M skipped" line), or a crashed binary
            p, f_, s = pytest_counts(f"{out}/{name}.log")
            if (p, f_, s) == (0, 0, 0):  # a plain script: its exit status, "SKIP ..." lines
                skipped = rc == "0" and re.search(r"^SKIP", read(f"{out}/{name}.log"), re.M)
                p, f_, s = (0, 0, 1) if skipped else (1, 0, 0) if rc == "0" else (0, 1, 0)
        ok = rc == "0" and f_ == 0
        bad |= not ok
        totals = [totals[0] + p, totals[1] + f_, totals[2] + s]
        print(f"  {name:36} {p:5} {f_:5} {s:5}  {'ok' if ok else 'FAILED rc=' + rc}")
    print(f"  {'total':36} {totals[0]:5} {totals[1]:5} {totals[2]:5}")
    print()
    print(f"  {'benchmark check':36} {'value':>12} {'unit':6} {'target':>10}  verdict")
    for name, rc in rcs.items():
        if not name.startswith(("bench_", "interpose_", "preload_")):
            continue
        bj = f"{out}/{name}.bench.json"
        if rc != "0":
            bad = True
            print(f"  {name:36} {'':12} {'':6} {'':>10}  ERROR rc={rc} (see {name}.log)")
            continue
        if not os.path.exists(bj):  # a program without --json-out: show its last line
            lines = [ln.rstrip() for ln in read(f"{out}/{name}.log").splitlines() if ln.strip()]
            print(f"  {name:36} (no JSON) {lines[-1][:70] if lines else ''}")
            continue
        with open(bj) as f:
            data = json.load(f)
        if data.get("skipped"):
            print(f"  {name:36} {'':12} {'':6} {'':>10}  skipped: {data.get('reason', '')}")
            continue
        for c in data.get("checks", []):
            target = f"{c['op']} {c['target']:g}"
            verdict = "PASS" if c["pass"] else "MISS"
            print(f"  {c['name']:36} {c['value']:12.3f} {c['unit']:6} {target:>10}  {verdict}")
        for c in data.get("info", []):
            print(f"  {c['name']:36} {c['value']:12.3f} {c['unit']:6} {'-':>10}  info")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "build-gpu/suite-out")))
