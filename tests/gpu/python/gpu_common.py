"""Shared helpers of the Python GPU checks: paths, child environments, bounded subprocesses, result
files. Standard library only (the checks import torch in their children)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
HOOKS = os.path.join(ROOT, "hooks", "python")
BUILD = os.environ.get("KVCACHED_BUILD_DIR") or os.path.join(ROOT, "build-gpu")


def shim_path() -> str:
    for name in ("KVCACHED_SHIM_LIB", "KVCACHED_SHIM_PATH"):
        value = os.environ.get(name, "").strip()
        if value:
            return os.path.abspath(value)
    return os.path.join(BUILD, "lib", "libkvcached_shim.so")


def kvctl_path() -> str:
    return os.environ.get("KVCACHED_KVCTL") or os.path.join(BUILD, "bin", "kvctl")


def out_dir(name: str) -> str:
    base = os.environ.get("OUT") or os.path.join(BUILD, "gpu-python-out")
    path = os.path.join(base, name)
    os.makedirs(path, exist_ok=True)
    return path


def cuda_status() -> tuple[bool, str]:
    """(usable, description) from a child process, so the caller never initialises CUDA."""
    code = (
        "import torch, sys\n"
        "ok = torch.cuda.is_available()\n"
        "print(ok, torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0) if ok else '-')\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return False, "probing torch.cuda timed out"
    if done.returncode != 0:
        return False, f"torch not importable: {done.stderr.strip().splitlines()[-1:]}"
    parts = done.stdout.split(maxsplit=3)
    if not parts or parts[0] != "True":
        return False, f"torch.cuda is not available (torch {parts[1] if len(parts) > 1 else '?'})"
    return True, f"torch {parts[1]} CUDA {parts[2]} on {parts[3].strip()}"


def child_env(shim: bool, ipc_name: str | None = None, **extra: str) -> dict:
    """Environment for a child: with shim=True the shim is preloaded and the hook importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HOOKS, HERE, env.get("PYTHONPATH", "")) if p)
    env.pop("LD_PRELOAD", None)
    env.setdefault("KVCACHED_LOG_LEVEL", "warn")
    env["PYTHONUNBUFFERED"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    if shim:
        env["LD_PRELOAD"] = shim_path()
        env["KVCACHED_AUTOPATCH"] = "1"
        env["KVCACHED_SHIM_PATH"] = shim_path()
        env.setdefault("KVCACHED_VIRTUAL_MEMINFO", "0")
        env["KVCACHED_IPC_NAME"] = ipc_name or f"kvtest_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    else:
        env["KVCACHED_AUTOPATCH"] = "0"
        env["ENABLE_KVCACHED"] = "false"
        env.pop("KVCACHED_SHIM_PATH", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Child:
    """A subprocess in its own process group, killed (group and all) on timeout."""

    def __init__(self, args: list[str], env: dict, log_path: str, name: str) -> None:
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "w", encoding="utf-8")
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            args, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.start)))
        except subprocess.TimeoutExpired:
            self.kill()
            rc = 124
        self.log.close()
        return rc

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""


def run_worker(spec: dict, shim: bool, log_path: str, timeout: float, **env_extra) -> tuple[int, dict | None, str]:
    """Runs engine_worker.py with `spec`; returns (rc, result JSON or None, log tail)."""
    result_path = log_path[: -len(".log")] + ".json" if log_path.endswith(".log") else log_path + ".json"
    if os.path.exists(result_path):
        os.remove(result_path)
    spec = dict(spec, result_path=result_path)
    env = child_env(shim, **env_extra)
    child = Child([sys.executable, os.path.join(HERE, "engine_worker.py"), json.dumps(spec)], env, log_path, "worker")
    rc = child.wait(timeout)
    if shim and "ipc_name" not in env_extra:
        remove_segment(env["KVCACHED_IPC_NAME"])  # ours alone: the next run must not inherit its budget
    result = None
    if os.path.exists(result_path):
        with open(result_path, encoding="utf-8") as handle:
            result = json.load(handle)
    return rc, result, child.tail()


def remove_segment(ipc_name: str) -> None:
    """Deletes the ledger segment a test created (a segment that exists keeps its first budget)."""
    try:
        os.remove(f"/dev/shm/kvcached_{ipc_name}")
    except OSError:
        pass


def report(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
