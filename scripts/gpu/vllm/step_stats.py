#!/usr/bin/env python3
"""Hook time and C calls per engine step, from `kvctl list --json` samples taken during a load run.

    step_stats.py SAMPLES.jsonl [--label PREFIX] [--from T] [--to T] [--min-steps N] [--json]

SAMPLES.jsonl: one sample a line, either what `ledger_samples.py record` writes ({"t", "procs":
[...]}, with engine_steps, engine_hook_ns, engine_hook_c_calls per process) or raw `kvctl list
--json` output with a "t" added ({"t", "segments": [{"processes": [...]}]}).

The engine hook reports cumulative totals (kvcached_report_engine_steps, at most every 0.5 s). For
each engine (pid and label) and each pair of consecutive samples in which its step count grew by at
least --min-steps (default 10), a window gives hook microseconds per step and C calls per step; the
medians over the windows are printed (with the whole run's ratio and the window count), one line
an engine, or one JSON object with --json. Only windows inside [--from, --to] count (unix seconds:
the load's start and end). Also the hook's time in the windows where the engine's charge grew
through C calls (pages backed on the scheduler's thread), against the whole run's, and (when the
samples hold them) the pages the process mapped and how many of those on the caller's thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ledger_samples  # noqa: E402

FIELDS = ("engine_steps", "engine_hook_ns", "engine_hook_c_calls")


def processes(sample: dict) -> list[dict]:
    if "procs" in sample:
        return sample["procs"]
    return [p for s in sample.get("segments", []) for p in s.get("processes", [])]


def charged(p: dict) -> int:
    """Bytes charged to the process: `record`'s "charged", raw kvctl's "charged_bytes"."""
    return int(p.get("charged", p.get("charged_bytes", 0)) or 0)


def series(rows: list[dict], prefix: str = "") -> dict[tuple[int, str], list[tuple]]:
    """(pid, label) -> [(t, steps, hook_ns, c_calls, charged, pages_mapped, sync_maps)] in time
    order, engines that reported only; the last two are None in an older recorder's samples."""
    out: dict[tuple[int, str], list[tuple]] = {}
    for row in sorted(rows, key=lambda r: r.get("t", 0.0)):
        for p in processes(row):
            label = p.get("label") or ""
            if not label.startswith(prefix) or any(p.get(f) is None for f in FIELDS):
                continue
            if not p.get("engine_steps"):
                continue  # an engine that has not reported (or an older shim)
            out.setdefault((p.get("pid"), label), []).append(
                (float(row.get("t", 0.0)), int(p["engine_steps"]), int(p["engine_hook_ns"]), int(p["engine_hook_c_calls"]),
                 charged(p), p.get("pages_mapped"), p.get("sync_maps"))
            )
    return out


def windows(points, t_from: float, t_to: float, min_steps: int):
    """(steps, us per step, calls per step) of each window of consecutive samples."""
    inside = [p for p in points if t_from <= p[0] <= t_to]
    out = []
    for (_, s0, ns0, c0, *_), (_, s1, ns1, c1, *_) in zip(inside, inside[1:]):
        steps = s1 - s0
        if steps < max(1, min_steps) or ns1 < ns0 or c1 < c0:
            continue  # too few steps to say anything, or a restarted engine under the same pid
        out.append((steps, (ns1 - ns0) / steps / 1000.0, (c1 - c0) / steps))
    return out


def growth(inside) -> tuple[float, int, int]:
    """(hook ms, steps, bytes) over the sample pairs in which the engine's charge grew through C
    calls: the steps that backed new pages. Such windows are few and short (the median leaves them
    out), but at a load's start they can hold most of the hook's time."""
    ms, steps, grown = 0.0, 0, 0
    for (_, s0, ns0, c0, q0, *_), (_, s1, ns1, c1, q1, *_) in zip(inside, inside[1:]):
        if c1 > c0 and q1 > q0 and ns1 >= ns0 and s1 >= s0:
            ms += (ns1 - ns0) / 1e6
            steps += s1 - s0
            grown += q1 - q0
    return ms, steps, grown


def map_counts(inside) -> tuple[int, int] | None:
    """(pages mapped, of them on the caller's thread) by the process from its first to its last
    point; None when the samples lack the counts (an older recorder)."""
    if len(inside) < 2 or any(p[5] is None or p[6] is None for p in (inside[0], inside[-1])):
        return None
    return int(inside[-1][5]) - int(inside[0][5]), int(inside[-1][6]) - int(inside[0][6])


def summarize(rows: list[dict], prefix: str = "", t_from: float = float("-inf"), t_to: float = float("inf"),
              min_steps: int = 10) -> list[dict]:
    result = []
    for (pid, label), points in sorted(series(rows, prefix).items(), key=lambda kv: (kv[0][1], kv[0][0] or 0)):
        wins = windows(points, t_from, t_to, min_steps)
        inside = [p for p in points if t_from <= p[0] <= t_to]
        entry = {"pid": pid, "label": label, "windows": len(wins)}
        if wins:
            steps = inside[-1][1] - inside[0][1]
            entry.update(
                steps=steps,
                hook_us_per_step_median=round(statistics.median(w[1] for w in wins), 3),
                c_calls_per_step_median=round(statistics.median(w[2] for w in wins), 4),
                hook_us_per_step_run=round((inside[-1][2] - inside[0][2]) / steps / 1000.0, 3),
                c_calls_per_step_run=round((inside[-1][3] - inside[0][3]) / steps, 4),
            )
            ms, gsteps, grown = growth(inside)
            entry.update(
                growth_hook_ms=round(ms, 1),
                growth_steps=gsteps,
                growth_mib=round(grown / 2**20, 1),
                hook_ms_run=round((inside[-1][2] - inside[0][2]) / 1e6, 1),
            )
            maps = map_counts(inside)
            if maps is not None:  # did map-ahead keep up: swaps on the scheduler's thread, of all
                entry.update(pages_mapped=maps[0], sync_maps=maps[1])
        result.append(entry)
    return result


def load(path: str) -> list[dict]:
    """The samples of `ledger_samples.py record` (one reader for both scripts)."""
    return ledger_samples.samples(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("samples")
    parser.add_argument("--label", default="", help="only engines whose kvctl label starts with this")
    parser.add_argument("--from", dest="t_from", type=float, default=float("-inf"))
    parser.add_argument("--to", dest="t_to", type=float, default=float("inf"))
    parser.add_argument("--min-steps", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = summarize(load(args.samples), args.label, args.t_from, args.t_to, args.min_steps)
    if args.json:
        print(json.dumps({"engines": result}))
        return 0 if any(e["windows"] for e in result) else 1
    if not result:
        print("no engine reported step costs (an older shim, or no kvctl sample during the load)")
        return 1
    for e in result:
        if not e["windows"]:
            print(f"{e['label']} (pid {e['pid']}): no window of {args.min_steps}+ steps")
            continue
        print(
            f"{e['label']} (pid {e['pid']}): hook {e['hook_us_per_step_median']} us/step, "
            f"{e['c_calls_per_step_median']} C calls/step (medians of {e['windows']} windows; whole run "
            f"{e['hook_us_per_step_run']} us, {e['c_calls_per_step_run']} calls over {e['steps']} steps); "
            f"while its charge grew: {e['growth_hook_ms']} of {e['hook_ms_run']} ms in {e['growth_steps']} steps "
            f"backing {e['growth_mib']} MiB"
            + (f"; pages mapped {e['pages_mapped']}, {e['sync_maps']} on the caller's thread" if "pages_mapped" in e else "")
        )
    return 0 if any(e["windows"] for e in result) else 1


if __name__ == "__main__":
    sys.exit(main())
