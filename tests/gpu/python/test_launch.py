"""`kvctl launch examples/launch/two-transformers.yaml` with two real engines (transformers'
continuous batching, random Llamas, engine_worker.py's loop mode): both start, b only after a is
ready; on the GPU both show KV memory in one budget and b gets its 60% limit; a kill -9 of one is
restarted; SIGTERM to kvctl stops both cleanly (status 0, nothing left running).

    python3 tests/gpu/python/test_launch.py          # on the GPU machine (shim in build-gpu/)
    python3 tests/gpu/python/test_launch.py --cpu    # the same on a CPU (tiny models, no KV checks)

--cpu runs the engines on the CPU with the file's models shrunk, so the launcher, the readiness
line, the restart and the signal path are exercised where there is no GPU (ctest: launch.transformers_cpu).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_common as G  # noqa: E402

EXAMPLE = os.path.join(G.ROOT, "examples", "launch", "two-transformers.yaml")
LABELS = ("tf-a", "tf-b")
SPEC = re.compile(r"'(\{\"mode\": \"loop\".*?\})'", re.S)


def cpu_variant(text: str, python: str) -> str:
    """The example with each engine's spec shrunk to a CPU-sized model (same keys otherwise)."""

    def shrink(match: re.Match) -> str:
        spec = json.loads(" ".join(match.group(1).split()))
        spec.update(device="cpu", dtype="float32", max_new_tokens=8,
                    cb={"num_blocks": 64, "block_size": 16, "max_batch_tokens": 256})
        spec["model"].update(layers=2, hidden=128, heads=4, kv_heads=min(4, spec["model"]["kv_heads"] // 4))
        spec["prompts"].update(n=4, min_len=8, max_len=24)
        return "'" + json.dumps(spec) + "'"

    shrunk, count = SPEC.subn(shrink, text)
    if count != len(LABELS):
        raise RuntimeError(f"expected {len(LABELS)} engine specs in {EXAMPLE}, found {count}")
    return shrunk.replace("[python3, ", f"[{python}, ")


class Launch:
    def __init__(self, yaml_path: str, log_path: str, env: dict) -> None:
        self.log_path = log_path
        self.log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen([G.kvctl_path(), "launch", yaml_path], cwd=G.ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def ready_count(self, label: str) -> int:
        return len(re.findall(rf"^\[kvctl\] {re.escape(label)}: ready after", self.text(), re.M))

    def wait_for(self, what, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what():
                return True
            if self.proc.poll() is not None:
                return bool(what())
            time.sleep(0.5)
        return False

    def pid_of(self, label: str) -> int | None:
        found = re.findall(rf"^\[kvctl\] {re.escape(label)}: started, pid (\d+)", self.text(), re.M)
        return int(found[-1]) if found else None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def ledger_processes() -> list[dict]:
    done = subprocess.run([G.kvctl_path(), "list", "--json"], capture_output=True, text=True, timeout=30)
    try:
        segments = json.loads(done.stdout or "{}").get("segments") or []
    except ValueError:
        return []
    return [dict(proc, segment=seg.get("name"), budget=seg.get("budget_bytes"))
            for seg in segments for proc in (seg.get("processes") or []) if proc.get("state") == "live"]


def leftover_engines() -> list[str]:
    done = subprocess.run(["pgrep", "-af", "engine_worker.py"], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if "/tmp/kvlaunch-" in line]


def main() -> int:
    cpu = "--cpu" in sys.argv[1:]
    out = G.out_dir("launch")
    if not cpu:
        usable, what = G.cuda_status()
        if not usable:
            print(f"SKIP launch: {what}")
            return 0
    if not os.access(G.kvctl_path(), os.X_OK):
        print(f"FAIL launch: kvctl is not built at {G.kvctl_path()}")
        return 1
    with open(EXAMPLE, encoding="utf-8") as handle:
        text = handle.read()
    yaml_path = os.path.join(out, "launch.yaml")
    with open(yaml_path, "w", encoding="utf-8") as handle:
        handle.write(cpu_variant(text, sys.executable) if cpu else text)
    for label in LABELS:
        try:
            os.remove(f"/tmp/kvlaunch-{label}.json")
        except OSError:
            pass
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("KVCACHED_IPC_NAME", None)  # the file's GPU settings decide
    if cpu:
        env.pop("KVCACHED_CUDA_DRIVER", None)  # no driver: the shim stays inert, the engines run on the CPU
    rows: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        rows.append((name, ok, detail))
        G.report(f"launch-{name}", ok, detail)

    dry = subprocess.run([G.kvctl_path(), "launch", "--dry-run", yaml_path], cwd=G.ROOT, capture_output=True, text=True, timeout=30)
    check("dry-run", dry.returncode == 0 and all(f"[{l}]" in dry.stdout for l in LABELS), f"rc {dry.returncode}")

    launch = Launch(yaml_path, os.path.join(out, "kvctl-launch.log"), env)
    try:
        started = time.monotonic()
        both = launch.wait_for(lambda: all(launch.ready_count(l) >= 1 for l in LABELS), 400)
        order = [m.group(1) for m in re.finditer(r"^\[kvctl\] (tf-[ab]): started", launch.text(), re.M)]
        a_ready = launch.text().find("[kvctl] tf-a: ready after")
        b_start = launch.text().find("[kvctl] tf-b: started")
        check("start", both and order[:2] == list(LABELS) and 0 <= a_ready < b_start,
              f"both ready after {time.monotonic() - started:.0f}s; b started after a was ready: {0 <= a_ready < b_start}")

        if not cpu and both:
            procs = {p.get("label"): p for p in ledger_processes() if p.get("label") in LABELS}
            seen = sorted(procs)
            same = len({p["segment"] for p in procs.values()}) == 1
            in_use = {l: int(p.get("in_use_bytes") or 0) for l, p in procs.items()}
            budget = next((p["budget"] for p in procs.values()), 0) or 0
            b_limit = (procs.get("tf-b") or {}).get("limit_bytes")
            limit_ok = b_limit is not None and budget and abs(int(b_limit) - 0.6 * budget) <= 0.01 * budget
            check("ledger", seen == list(LABELS) and same and all(in_use.values()) and bool(limit_ok),
                  f"labels {seen}, one segment {same}, in use {in_use}, budget {budget}, tf-b limit {b_limit}")

        victim = launch.pid_of("tf-a")
        restarted = False
        if victim:
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            restarted = launch.wait_for(lambda: launch.ready_count("tf-a") >= 2, 300)
            check("restart", restarted and "tf-a: killed by signal 9" in launch.text(),
                  f"kill -9 of tf-a (pid {victim}): ready again after {time.monotonic() - killed_at:.0f}s")
        else:
            check("restart", False, "no pid for tf-a in kvctl's output")

        os.killpg(launch.proc.pid, signal.SIGTERM)
        try:
            rc = launch.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            rc = 124
        time.sleep(1.0)
        left = leftover_engines()
        results = {}
        for label in LABELS:
            try:
                with open(f"/tmp/kvlaunch-{label}.json", encoding="utf-8") as handle:
                    results[label] = json.load(handle)
            except (OSError, ValueError):
                results[label] = None
        engines_ok = all(r and r.get("ok") and r.get("stopped_by") == signal.SIGTERM for r in results.values())
        check("stop", rc == 0 and not left and engines_ok,
              f"kvctl exit {rc}; engines left {len(left)}; engines stopped by SIGTERM with ok results: {engines_ok} "
              f"(rounds {[(r or {}).get('rounds') for r in results.values()]})")
    finally:
        launch.kill()
        launch.log.close()
    G.write_json(os.path.join(out, "launch.json"), [{"check": n, "ok": ok, "detail": d} for n, ok, d in rows])
    if not all(ok for _, ok, _ in rows):
        print(launch.text()[-4000:])
    return 0 if all(ok for _, ok, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
