"""The scheduler's time per engine step over a run, from the totals steptimer/sitecustomize.py
writes in each engine's EngineCore process (the same measure in every setting)."""

from __future__ import annotations

import glob
import json
import os


def read(folder: str, label: str) -> dict | None:
    """The newest totals of the engine labelled `label` (its latest EngineCore process)."""
    files = glob.glob(os.path.join(folder, f"{label}-*.json"))
    for path in sorted(files, key=lambda p: os.path.getmtime(p), reverse=True):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            continue
    return None


def per_step(before: dict | None, after: dict | None) -> dict | str:
    """Microseconds of schedule() + update_from_output() per schedule() call between two readings
    of one process; "n/a" when there are none (an engine without vLLM's EngineCore, a restart)."""
    if not after or not before or before.get("pid") != after.get("pid"):
        return "n/a"
    steps = after["steps"] - before["steps"]
    if steps <= 0:
        return "n/a"
    sched = after["schedule_ns"] - before["schedule_ns"]
    update = after["update_ns"] - before["update_ns"]
    return {"steps": steps, "steps_with_work": after["steps_with_work"] - before["steps_with_work"],
            "sched_us_per_step": (sched + update) / steps / 1000, "schedule_us_per_step": sched / steps / 1000,
            "update_us_per_step": update / steps / 1000}
