"""One run of the sharing benchmark second by second: what each engine held and used, and why.

    python3 timeline.py RESULTS/shim-a_then_b-r1.json [--step 1.0] [--from 0] [--to 60]

One row per step of the trace's clock (seconds from its start): per engine the KV memory it held
(MiB: the ledger's charge with the shim, kvcached's own count, static's fixed half), vLLM's own
KV usage (% of the blocks of its own pool: static's half, the whole budget for the shim and
kvcached, so 50% there is half the budget, not half of what it held; kvcached's counts the
other engine's pages as used too, docs/sharing-benchmark.md), requests running /
waiting, and what changed since the row before: budget refusals, requests the policy preempted,
bytes it gave; a `*` marks an engine the ledger calls starved. This is the sequence docs/results
describe in words (who held memory beside whose queue); the summary's tables give the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import metrics  # noqa: E402

MIB = 1 << 20
COUNTERS = ("budget_refusals", "share_preempted_requests", "share_given_bytes")


def rows(run: dict, step: float = 1.0, start: float = 0.0, stop: float | None = None) -> list[dict]:
    """The run's held KV memory (metrics.held_series: the setting's own account), ledger and
    metrics at every `step` seconds from `start` (the latest sample at or before each time;
    counters as the rise since the previous row). Engines in the run's order."""
    series = run.get("series", {})
    ledger = [r for r in series.get("ledger", []) if r.get("t") is not None]
    samples = [r for r in series.get("metrics", []) if r.get("t") is not None]
    engines = list(run.get("engines", {}) or {})
    if stop is None:
        ends = [r["t"] for r in ledger + samples]
        stop = max(ends) if ends else start
    ledger_at = {n: metrics.latest_of(ledger, n) for n in engines}
    metrics_at = {n: metrics.latest_of(samples, n) for n in engines}
    held_at = {n: metrics.held_series(run, n) for n in engines}
    out: list[dict] = []
    before: dict[str, dict] = {}
    t = start
    while t <= stop + 1e-9:
        row = {"t": t, "engines": {}}
        for name in engines:
            e, m = ledger_at[name](t) or {}, metrics_at[name](t) or {}
            held = held_at[name](t)
            prev = before.get(name, {})
            cell = {
                "held_mib": held / MIB if held is not None else None,
                "starved": bool(e.get("starved")),
                "usage_pct": 100 * m["kv_cache_usage_perc"] if "kv_cache_usage_perc" in m else None,
                "running": m.get("num_requests_running"),
                "waiting": m.get("num_requests_waiting"),
            }
            for key in COUNTERS:
                now = e.get(key)
                cell[key] = (now - prev[key]) if now is not None and prev.get(key) is not None else 0
            before[name] = {key: e.get(key) for key in COUNTERS}
            row["engines"][name] = cell
        out.append(row)
        t = round(t + step, 6)
    return out


def _num(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def render(run: dict, table: list[dict]) -> list[str]:
    engines = list(run.get("engines", {}) or {})
    head = f"{run.get('setting', '?')} {run.get('trace', '?')} r{run.get('repeat', '?')}"
    budget = (run.get("config") or {}).get("budget_bytes")
    if budget:
        head += f", budget {budget / MIB:.0f} MiB"
    lines = [head, ""]
    cols = "".join(f" | {n}: MiB  use%  run wait  refused preempted given" for n in engines)
    lines.append(f"{'t':>5}{cols}")
    for row in table:
        text = f"{row['t']:5.1f}"
        for name in engines:
            c = row["engines"][name]
            mark = "*" if c["starved"] else " "
            text += (f" | {_num(c['held_mib'], '{:4.0f}')}{mark} {_num(c['usage_pct'], '{:4.0f}')}"
                     f"  {_num(c['running'], '{:3.0f}')} {_num(c['waiting'], '{:4.0f}')}"
                     f"  {c['budget_refusals']:7d} {c['share_preempted_requests']:9d}"
                     f" {c['share_given_bytes'] / MIB:5.0f}")
        lines.append(text)
    lines.append("")
    lines.append("MiB: KV held (* starved, in the shim's ledger); use%: vLLM's KV usage, of its own"
                 " pool (the shim's and kvcached's: the whole budget; kvcached's counts the other"
                 " engine's pages as used); refused, preempted, given (MiB): since the row before.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="one run record (RESULTS/SETTING-TRACE-rN.json)")
    parser.add_argument("--step", type=float, default=1.0, help="seconds between rows (default 1)")
    parser.add_argument("--from", dest="start", type=float, default=0.0, help="first row's time (s)")
    parser.add_argument("--to", dest="stop", type=float, default=None, help="last row's time (s)")
    args = parser.parse_args(argv)
    if args.step <= 0:
        parser.error(f"--step {args.step}: give a positive number of seconds, e.g. --step 0.5")
    try:
        with open(args.run, encoding="utf-8") as f:
            run = json.load(f)
    except (OSError, ValueError) as err:
        print(f"timeline: cannot read {args.run}: {err}; give a run record from the driver's --results "
              "folder", file=sys.stderr)
        return 2
    print("\n".join(render(run, rows(run, args.step, args.start, args.stop))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
