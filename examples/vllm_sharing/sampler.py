"""Samples memory while a trace runs, in a thread of the driver:

- the shim's ledger (`kvctl list --json`, the benchmark's segment only) every period: per engine
  (by its KVCACHED_LABEL) charged/in-use/reserved bytes, refusals, the starvation flag, fair share,
  and the per-step counters when kvctl shows them (engine_steps, engine_hook_ns, engine_hook_c_calls);
- every `slow_every` periods, each engine's /metrics (vllm:kv_cache_usage_perc, requests running
  and waiting) and, where nvidia-smi answers, the GPU memory of each engine's processes.
"""

from __future__ import annotations

import json
import os
import struct
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from http.client import HTTPException

LEDGER_FIELDS = ("pid", "charged_bytes", "in_use_bytes", "reserved_bytes", "budget_refusals", "starved",
                 "fair_share_bytes", "deficit_bytes", "share_given_bytes", "share_preempted_requests",
                 "engine_steps", "engine_hook_ns", "engine_hook_c_calls")
METRIC_RE = re.compile(r"^(vllm:(?:kv_cache_usage_perc|gpu_cache_usage_perc|num_requests_running|num_requests_waiting))"
                       r"(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


def descendants(root: int) -> set[int]:
    """root and every process below it (vLLM's API server starts the EngineCore as a child)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return out


def ledger_once(kvctl: str, segment: str, labels: dict[str, str]) -> dict:
    """{engine: {field: value}} from one `kvctl list --json` (slots of one label summed)."""
    done = subprocess.run([kvctl, "list", "--json"], capture_output=True, text=True, timeout=5)
    data = json.loads(done.stdout)
    out: dict[str, dict] = {}
    for seg in data.get("segments", []):
        if seg.get("name") != segment:
            continue
        for proc in seg.get("processes") or []:
            engine = labels.get(proc.get("label") or "")
            if engine is None or proc.get("state") != "live":
                continue
            row = out.setdefault(engine, {})
            for key in LEDGER_FIELDS:
                if key not in proc or proc[key] is None:
                    continue
                value = proc[key]
                if key == "starved":
                    row[key] = bool(row.get(key)) or bool(value)
                elif key == "pid":
                    row.setdefault("pids", []).append(value)
                else:
                    row[key] = row.get(key, 0) + value
        out["_budget"] = seg.get("budget_bytes")
    return out


def metrics_once(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1.0) as f:
        text = f.read().decode("utf-8", "replace")
    out: dict[str, float] = {}
    for name, value in METRIC_RE.findall(text):
        key = name.split(":", 1)[1].replace("gpu_cache_usage_perc", "kv_cache_usage_perc")
        out[key] = out.get(key, 0.0) + float(value)
    return out


def smi_once(roots: dict[str, int]) -> dict[str, int]:
    """{engine: bytes} of GPU memory its processes hold, from nvidia-smi (empty when unavailable)."""
    done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, timeout=5)
    used = {}
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            used[int(parts[0])] = int(parts[1]) << 20
    out = {}
    for engine, root in roots.items():
        pids = descendants(root)
        out[engine] = sum(b for pid, b in used.items() if pid in pids)
    return out


def peer_once(segments: dict[str, str]) -> dict[str, dict]:
    """kvcached's own memory accounting per engine: its per-instance segment in /dev/shm holds three
    native int64s (its limit, the physical KV of the pages in use, and of its reserved pages:
    kvcached/cli/utils.py MemInfoStruct). Read without its lock: a sample may mix two updates."""
    out = {}
    for name, path in segments.items():
        with open(path, "rb") as f:
            total, used, prealloc = struct.unpack("=qqq", f.read(24))
        out[name] = {"total_bytes": total, "used_bytes": used, "prealloc_bytes": prealloc}
    return out


class Sampler(threading.Thread):
    def __init__(self, engines: dict, kvctl: str | None, segment: str | None, period_s: float = 0.1, slow_every: int = 5,
                 peer_segments: dict[str, str] | None = None):
        super().__init__(daemon=True)
        self.peer_segments = peer_segments or {}  # kvcached's per-engine segments (the peer setting)
        self.peer: list[dict] = []
        self.engines = engines  # {name: {"port", "pid", "label"}}
        self.kvctl, self.segment, self.period, self.slow_every = kvctl, segment, period_s, slow_every
        self.labels = {e["label"]: name for name, e in engines.items() if e.get("label")}
        self.ledger: list[dict] = []
        self.metrics: list[dict] = []
        self.smi: list[dict] = []
        self.errors: dict[str, str] = {}
        self._halt = threading.Event()
        self.use_smi = shutil.which("nvidia-smi") is not None

    def sample_ledger(self) -> dict | None:
        if not (self.kvctl and self.segment):
            return None
        try:
            return ledger_once(self.kvctl, self.segment, self.labels)
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            self.errors.setdefault("ledger", f"{type(error).__name__}: {error}"[:300])
            return None

    def run(self) -> None:
        k = 0
        while not self._halt.is_set():
            t = time.time()
            row = self.sample_ledger()
            if row is not None:
                self.ledger.append({"t": t, **row})
            if self.peer_segments:
                try:
                    self.peer.append({"t": t, **peer_once(self.peer_segments)})
                except (OSError, struct.error) as error:  # not created yet, or gone with its engine
                    self.errors.setdefault("peer", f"{type(error).__name__}: {error}"[:300])
            if k % self.slow_every == 0:
                m = {"t": t}
                for name, e in self.engines.items():
                    try:
                        m[name] = metrics_once(e["port"])
                    except (OSError, ValueError, HTTPException) as error:
                        self.errors.setdefault(f"metrics-{name}", f"{type(error).__name__}: {error}"[:300])
                self.metrics.append(m)
                if self.use_smi:
                    try:
                        self.smi.append({"t": t, **smi_once({n: e["pid"] for n, e in self.engines.items()})})
                    except (OSError, subprocess.SubprocessError) as error:
                        self.errors.setdefault("nvidia-smi", f"{type(error).__name__}: {error}"[:300])
                        self.use_smi = False
            k += 1
            self._halt.wait(max(0.0, self.period - (time.time() - t)))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
