#!/usr/bin/env python3
"""Samples the shim's ledger (`kvctl list --json`) over time, and reads the samples back.

    ledger_samples.py record KVCTL OUT.jsonl PERIOD_S      until killed: {"t", "procs": [{pid,label,charged,in_use,state,engine_*,pages_mapped,sync_maps}]}
    ledger_samples.py plot SAMPLES.jsonl EVENTS.tsv OUT.png  charged bytes per engine over time (matplotlib)
    ledger_samples.py freed SAMPLES.jsonl PID KILL_T       seconds from KILL_T until PID's charge left the ledger
    ledger_samples.py peak SAMPLES.jsonl LABEL_PREFIX      the largest charge and in-use bytes seen for an engine
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


STEP_FIELDS = ("engine_steps", "engine_hook_ns", "engine_hook_c_calls")
# The process's page swaps since it started, all and those on the caller's thread (map-ahead misses).
MAP_FIELDS = ("pages_mapped", "sync_maps")


def record(kvctl: str, path: str, period: float) -> None:
    with open(path, "a", buffering=1) as f:
        while True:
            t = time.time()
            try:
                data = json.loads(subprocess.run([kvctl, "list", "--json"], capture_output=True, text=True, timeout=5).stdout)
            except Exception:  # noqa: BLE001 - no segment yet, or kvctl busy: skip the sample
                data = {"segments": []}
            procs = [
                {"pid": p.get("pid"), "label": p.get("label") or "", "charged": p.get("charged_bytes", 0),
                 "in_use": p.get("in_use_bytes", 0), "segment": s.get("name"),
                 # live, dead (not yet reclaimed: its charge stays until a process of its segment
                 # reclaims it) or reclaiming
                 "state": p.get("state"),
                 # the engine hook's cumulative step costs (step_stats.py reads them)
                 **{k: p[k] for k in STEP_FIELDS + MAP_FIELDS if k in p}}
                for s in data.get("segments", []) for p in s.get("processes", [])
            ]
            budgets = {s.get("name"): s.get("budget_bytes") for s in data.get("segments", [])}
            f.write(json.dumps({"t": t, "procs": procs, "budgets": budgets}) + "\n")
            time.sleep(max(0.0, period - (time.time() - t)))


def samples(path: str) -> list[dict]:
    """The samples `record` wrote; a line cut short (the recorder was stopped while writing it,
    which is how device.sh stops it) is left out."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # blank, or cut short
    return rows


def plot(path: str, events: str, png: str, segment: str | None = None) -> int:
    """Each engine's charge over time; with `segment`, only the engines of that segment and its
    budget (the samples hold every segment on the machine, earlier steps' dead engines too)."""
    try:
        import matplotlib
    except ImportError:  # not in every image: the samples travel back, plot them on another machine
        print(f"no matplotlib here: plot {path} elsewhere with `ledger_samples.py plot`", file=sys.stderr)
        return 3

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = samples(path)
    t0 = rows[0]["t"] if rows else 0.0
    series: dict[str, tuple[list, list]] = {}
    for row in rows:
        seen = set()
        for p in row["procs"]:
            if segment and p.get("segment") != segment:
                continue
            key = f"{p['label']} ({p['pid']})"
            seen.add(key)
            xs, ys = series.setdefault(key, ([], []))
            xs.append(row["t"] - t0)
            ys.append(p["charged"] / 2**30)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for key, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, label=key)
    budget = max((b or 0 for row in rows for name, b in row.get("budgets", {}).items()
                  if not segment or name == segment), default=0)
    if budget:
        ax.axhline(budget / 2**30, color="grey", linestyle="--", label="budget")
    try:
        with open(events) as f:
            for line in f:
                t, text = line.rstrip("\n").split("\t", 1)
                ax.axvline(float(t) - t0, color="black", alpha=0.2)
                ax.text(float(t) - t0, ax.get_ylim()[1] * 0.95, text, rotation=90, fontsize=7, va="top")
    except OSError:
        pass
    ax.set_xlabel("seconds")
    ax.set_ylabel("GiB charged to the engine (kvctl)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    return 0


def freed(path: str, pid: int, kill_t: float) -> None:
    """First sample after kill_t in which pid holds nothing, and when the other engines of its
    segment first held more than they did at any sample in the second before the kill (they got
    its memory: null when they never did, e.g. none of them was asking)."""
    every = samples(path)
    victim_segment = next((p.get("segment") for r in every for p in r["procs"] if p["pid"] == pid), None)

    def others(row) -> int:
        return sum(p["charged"] for p in row["procs"] if p["pid"] != pid and p.get("segment") == victim_segment)

    before = max((others(r) for r in every if kill_t - 1.0 <= r["t"] < kill_t), default=0)
    rows = [r for r in every if r["t"] >= kill_t]
    out = {"pid": pid, "freed_after_s": None, "others_gained_after_s": None, "others_before": before,
           "samples_after_kill": len(rows)}
    for row in rows:
        if out["freed_after_s"] is None and not any(p["pid"] == pid and p["charged"] > 0 for p in row["procs"]):
            out["freed_after_s"] = round(row["t"] - kill_t, 3)
        if out["others_gained_after_s"] is None and (held := others(row)) > before:
            out["others_gained_after_s"] = round(row["t"] - kill_t, 3)
            out["others_then"] = held
    print(json.dumps(out))


def peak(path: str, prefix: str) -> None:
    charged = in_use = 0
    for row in samples(path):
        for p in row["procs"]:
            if p["label"].startswith(prefix):
                charged, in_use = max(charged, p["charged"]), max(in_use, p["in_use"])
    print(json.dumps({"label": prefix, "peak_charged": charged, "peak_in_use": in_use}))


def main() -> int:
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "record":
        record(rest[0], rest[1], float(rest[2]))
    elif mode == "plot":
        return plot(rest[0], rest[1], rest[2], rest[3] if len(rest) > 3 else None)
    elif mode == "freed":
        freed(rest[0], int(rest[1]), float(rest[2]))
    elif mode == "peak":
        peak(rest[0], rest[1])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
