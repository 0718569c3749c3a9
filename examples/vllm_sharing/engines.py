"""The two engines of a setting: their models, command lines and environments, start, readiness,
reuse across device calls, stop; and the kvcached (peer) setting's availability check and ballast.

Settings (docs/sharing-benchmark.md):
- static:   no shim; each engine's KV cache is a fixed half of the budget (--kv-cache-memory-bytes)
- shim:     LD_PRELOAD=libkvcached_shim.so, one KVCACHED_BUDGET for both; each engine's cache can
            grow to the whole budget, backed page by page
- kvcached: the peer project (ENABLE_KVCACHED=true, KVCACHED_AUTOPATCH=1, its own site folder made
            a site dir by a generated sitecustomize), no shim; each engine may grow to the budget,
            and a ballast allocation leaves only the budget free on the GPU (kvcached has no budget
            shared between engines)
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from http.client import HTTPException

from metrics import peer_held_bytes
from sampler import peer_once

# Two different random-weight Llamas (load_format dummy: nothing downloaded), the same KV geometry
# as examples/two_models: 8 layers x 8 KV heads x 64 dims x K+V x bf16 = 16 KiB per token.
MODELS = {
    "a": {"hidden_size": 1024, "intermediate_size": 2816},
    "b": {"hidden_size": 1024, "intermediate_size": 4096},
}
LAYERS, KV_HEADS, HEAD_DIM = 8, 8, 64
KV_BYTES_PER_TOKEN = LAYERS * 2 * KV_HEADS * HEAD_DIM * 2
PORTS = {"a": 0, "b": 1}
# steptimer/sitecustomize.py: the scheduler's time per step in every setting (steptimes.py reads it).
STEPTIMER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "steptimer")


def steptimer_dir(cfg) -> str:
    return os.path.join(cfg.work, "steptimer")


def write_models(folder: str) -> dict[str, str]:
    paths = {}
    for name, m in MODELS.items():
        path = os.path.join(folder, f"model-{name}")
        os.makedirs(path, exist_ok=True)
        cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": m["hidden_size"],
               "intermediate_size": m["intermediate_size"], "num_hidden_layers": LAYERS, "num_attention_heads": 16,
               "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "vocab_size": 32000,
               "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
               "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
               "attention_bias": False, "mlp_bias": False}
        with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=1)
        paths[name] = path
    return paths


# kvcached's knobs for sharing one budget (its defaults suit a GPU of its own): no pages kept mapped
# in reserve (its default keeps 5-10 pages of all layers mapped per engine, 160-320 MiB with this
# model, more than the budget), free memory all its own to map (its default leaves 5% of the GPU
# alone, which the ballast's few hundred MiB never exceed: it could never map a page), and freed
# blocks not held for prefix caching (its default holds up to 16000 tokens, the whole budget here,
# so one engine's finished requests would keep the other's memory). An operator may set others.
PEER_SHARING_ENV = {"KVCACHED_MIN_RESERVED_PAGES": "0", "KVCACHED_MAX_RESERVED_PAGES": "0",
                    "KVCACHED_GPU_UTILIZATION": "1.0", "KVCACHED_MAX_CACHED_TOKENS": "0"}  # not-a-variable


def peer_env(cfg) -> dict:
    """PEER_SHARING_ENV with BENCH_PEER_ENV's KEY=VALUE pairs (space-separated) over it."""
    env = dict(PEER_SHARING_ENV)
    for item in (getattr(cfg, "peer_env", "") or "").split():
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("KVCACHED_"):
            raise SystemExit(f"driver: bad --peer-env item {item!r} "
                             "(KVCACHED_NAME=VALUE, space-separated)")  # not-a-variable: kvcached's
        env[key] = value
    return env


def shim_env(setting: str) -> dict | None:
    """For the shim setting, the caller's KVCACHED_* variables, which its engines inherit (its
    knobs, e.g. KVCACHED_HOOK_SHARE_HOLD_MS=0 to run without the share hold): each run records
    them, and engines started with other knobs are not reused. None for the other settings."""
    if setting != "shim":
        return None
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("KVCACHED_")}


def peer_room(cfg, names: list[str]) -> tuple[int, int]:
    """(what the budget leaves beyond the KV the kvcached engines `names` have mapped, that mapped
    KV), from their accounting segments: the free memory the ballast leaves them (with its margin)."""
    mapped = sum(peer_held_bytes(v) for v in peer_once({n: peer_segment(cfg, n) for n in names}).values())
    return max(cfg.budget - mapped, 0), mapped


def peer_names(env: dict) -> list[str]:
    return [k for k in env if k.startswith("KVCACHED_") or k == "ENABLE_KVCACHED"]


def engine_env(setting: str, name: str, cfg) -> dict:
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env["PYTHONUNBUFFERED"] = "1"
    if setting == "static":
        for k in peer_names(env):
            del env[k]  # neither the shim's nor the peer's knobs
    elif setting == "shim":
        # The caller's KVCACHED_* (the shim's knobs, e.g. KVCACHED_LOG_LEVEL) pass through.
        env.update(LD_PRELOAD=cfg.shim, KVCACHED_BUDGET=str(cfg.budget), KVCACHED_IPC_NAME=cfg.ipc_name,
                   KVCACHED_LABEL=f"engine-{name}")
    elif setting == "kvcached":
        for k in peer_names(env):
            del env[k]  # our shim's knobs mean other things to the peer (docs/sharing-benchmark.md)
        env.update(peer_env(cfg))
        env.update(ENABLE_KVCACHED="true", KVCACHED_AUTOPATCH="1", KVCACHED_IPC_NAME=peer_ipc_name(cfg, name))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (kvcached_boot(cfg), cfg.kvcached_site, env.get("PYTHONPATH")) if p)
    else:
        raise SystemExit(f"unknown setting {setting!r} (static, shim, kvcached)")
    runner = cfg.model_runner
    if runner != "engine":  # the same model runner in every setting (driver.py --model-runner)
        env["VLLM_USE_V2_MODEL_RUNNER"] = "1" if runner == "v2" else "0"
    # First on the path in every setting; it runs the sitecustomize it shadows (the peer's above;
    # the shim's own boot folder comes before it and runs it in turn).
    env.update(SHARING_STEPTIMER_DIR=steptimer_dir(cfg), SHARING_STEPTIMER_LABEL=f"engine-{name}")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (STEPTIMER, env.get("PYTHONPATH")) if p)
    return env


def peer_ipc_name(cfg, name: str) -> str:
    return f"{cfg.ipc_name}_peer_{name}"


def peer_segment(cfg, name: str) -> str:
    """Where kvcached keeps an engine's memory accounting (limit, in use, reserved): its IPC name
    under /dev/shm (one KV cache group)."""
    return os.path.join("/dev/shm", peer_ipc_name(cfg, name))


def kvcached_boot(cfg) -> str:
    """A folder whose sitecustomize makes the peer's install folder a site dir, so that its .pth
    (the import hook that patches vLLM) runs in every Python process of the engine, spawned
    EngineCore included; a --target install is otherwise never processed as a site dir."""
    boot = os.path.join(cfg.work, "kvcached-boot")
    os.makedirs(boot, exist_ok=True)
    with open(os.path.join(boot, "sitecustomize.py"), "w", encoding="utf-8") as f:
        f.write(f"import site\nsite.addsitedir({cfg.kvcached_site!r})\n")
    return boot


def engine_argv(setting: str, name: str, model: str, port: int, cfg) -> list[str]:
    kv = cfg.budget // 2 if setting == "static" else cfg.budget
    return [*shlex.split(cfg.engine_cmd), "serve", model, "--port", str(port), "--served-model-name", f"engine-{name}",
            "--load-format", "dummy", "--skip-tokenizer-init", "--seed", "0", "--max-model-len", "4096",
            "--gpu-memory-utilization", str(cfg.gpu_util), "--kv-cache-memory-bytes", str(kv),
            "--max-num-seqs", str(cfg.max_num_seqs), *shlex.split(cfg.vllm_args)]


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return True
    # HTTPException: not an HTTP answer. Before the engine listens, a connection to a port in the
    # ephemeral range can be given that very port as its source and connect to itself, reading
    # back its own request ("BadStatusLine: GET /health HTTP/1.1"): not ready yet.
    except (OSError, HTTPException):
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def stop_group(pid: int) -> None:
    for sig, wait_s in ((signal.SIGINT, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except OSError:
            return
        end = time.time() + wait_s
        while time.time() < end and alive(pid):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.2)


def tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def engine_version(log_path: str) -> str | None:
    """The vLLM version the engine reports at start ('vLLM server version X, serving model M', or
    the logo's 'version X' line), so that runs made with different vLLM releases are never taken
    for one comparison."""
    import re

    found = re.findall(r"(?:vLLM (?:API )?server version|\u2588\s+version)\s+([0-9][^\s,]*)", tail(log_path, 100000))
    return found[-1] if found else None


def kv_capacity(log_path: str) -> int | None:
    """KV bytes the engine sized its cache to, from its 'GPU KV cache size: N tokens' line."""
    import re

    found = re.findall(r"GPU KV cache size: ([0-9,]+) tokens", tail(log_path, 100000))
    return int(found[-1].replace(",", "")) * KV_BYTES_PER_TOKEN if found else None


class EngineSet:
    """The two engines of one setting, recorded in WORK/engines.json so that a later device call
    on the same (still warm) machine finds and reuses them."""

    def __init__(self, setting: str, cfg, log):
        self.setting, self.cfg, self.log = setting, cfg, log
        self.state_path = os.path.join(cfg.work, "engines.json")
        self.engines: dict[str, dict] = {}
        self.ballast_pid: int | None = None

    def _key(self) -> dict:
        return {"setting": self.setting, "budget": self.cfg.budget, "engine_cmd": self.cfg.engine_cmd,
                "vllm_args": self.cfg.vllm_args, "pythonpath": os.environ.get("PYTHONPATH", ""),
                "model_runner": self.cfg.model_runner, "ballast_margin": self.cfg.ballast_margin,
                "peer_env": peer_env(self.cfg) if self.setting == "kvcached" else None,
                "shim_env": shim_env(self.setting)}

    def reuse(self) -> bool:
        try:
            with open(self.state_path, encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            return False
        if state.get("key") == self._key() and all(alive(e["pid"]) and healthy(e["port"]) for e in state["engines"].values()):
            self.engines, self.ballast_pid = state["engines"], state.get("ballast_pid")
            self.log(f"{self.setting}: reusing the running engines {[e['pid'] for e in self.engines.values()]}")
            return True
        self.log("stopping engines of an earlier call: " + json.dumps({k: v["pid"] for k, v in state.get("engines", {}).items()}))
        for e in state.get("engines", {}).values():
            stop_group(e["pid"])
        if state.get("ballast_pid"):
            stop_group(state["ballast_pid"])
        os.remove(self.state_path)
        return False

    def start(self, models: dict[str, str], bound_peer: bool = True) -> str | None:
        """Starts both engines (a first, then b once a is ready: their start-up profiling must not
        overlap); returns None, or the error that stopped them (log tails). kvcached's engines are
        then bounded by the ballast (bound_peer_now), unless `bound_peer` is False: the driver
        bounds them after its warm-up instead."""
        for name in ("a", "b"):
            port = self.cfg.base_port + PORTS[name]
            log_path = os.path.join(self.cfg.work, f"{self.setting}-engine-{name}.log")
            argv = engine_argv(self.setting, name, models[name], port, self.cfg)
            env = engine_env(self.setting, name, self.cfg)
            with open(log_path, "w", encoding="utf-8") as logf:
                logf.write("$ " + " ".join(shlex.quote(a) for a in argv) + "\n")
                logf.flush()
                proc = subprocess.Popen(argv, env=env, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            self.engines[name] = {"pid": proc.pid, "port": port, "log": log_path, "label": f"engine-{name}"}
            self.log(f"{self.setting}: engine {name} started (pid {proc.pid}, port {port})")
            t0 = time.time()
            while not healthy(port):
                if proc.poll() is not None or time.time() - t0 > self.cfg.ready_timeout_s:
                    why = f"exited with {proc.returncode}" if proc.poll() is not None else f"not ready in {self.cfg.ready_timeout_s} s"
                    err = f"engine {name} {why}; its log ends:\n{tail(log_path)}"
                    self.stop()
                    return err
                time.sleep(0.5)
            self.engines[name]["ready_s"] = round(time.time() - t0, 1)
            self.engines[name]["kv_capacity_bytes"] = kv_capacity(log_path)
            self.engines[name]["vllm_version"] = engine_version(log_path)
            self.log(f"{self.setting}: engine {name} ready after {self.engines[name]['ready_s']} s")
        self.save()
        return self.bound_peer_now() if bound_peer else None

    def bound_peer_now(self) -> str | None:
        """kvcached's engines (with the ballast budget, not yet bounded): the ballast now; None, or
        the error that stopped the engines. Nothing for the other settings."""
        if self.setting != "kvcached" or self.cfg.peer_budget != "ballast" or self.ballast_pid:
            return None
        err = self.start_ballast()
        if err:
            self.stop()
            return err
        self.save()
        return None

    def start_ballast(self) -> str | None:
        """Takes all free GPU memory but what the budget has left beyond the KV both kvcached engines
        mapped while starting (their accounting), plus a margin for the engines' own growth, so the
        two together can back at most about the budget (kvcached maps from free memory)."""
        try:
            room, mapped = peer_room(self.cfg, list(self.engines))
        except (OSError, struct.error) as error:
            return f"kvcached's accounting unreadable before the ballast: {error}"
        code = ("import sys,time,torch\nfree,total=torch.cuda.mem_get_info()\n"
                f"n=free-{room}-{self.cfg.ballast_margin}\n"
                "x=torch.empty(max(n,0),dtype=torch.uint8,device='cuda')\n"
                f"print('ballast',n,'bytes; free before',free,'; kvcached mapped {mapped} at start',flush=True)\n"
                "time.sleep(1e9)\n")
        log_path = os.path.join(self.cfg.work, "ballast.log")
        with open(log_path, "w", encoding="utf-8") as logf:
            proc = subprocess.Popen([self.cfg.python, "-c", code], stdout=logf, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.ballast_pid = proc.pid
        for _ in range(120):
            if "ballast" in tail(log_path):
                self.log(f"kvcached: {tail(log_path).strip()}")
                return None
            if proc.poll() is not None:
                return f"ballast failed: {tail(log_path)}"
            time.sleep(0.5)
        return "ballast did not report within 60 s"

    def save(self) -> None:
        with open(self.state_path, "w", encoding="utf-8") as f:
            json.dump({"key": self._key(), "engines": self.engines, "ballast_pid": self.ballast_pid}, f)

    def stop(self) -> None:
        for e in self.engines.values():
            stop_group(e["pid"])
        if self.ballast_pid:
            stop_group(self.ballast_pid)
        self.engines, self.ballast_pid = {}, None
        if os.path.exists(self.state_path):
            os.remove(self.state_path)
        if self.setting == "shim":  # a later run must not inherit this budget segment
            try:
                os.remove(f"/dev/shm/kvcached_{self.cfg.ipc_name}")
            except OSError:
                pass


def kvcached_check(cfg) -> str | None:
    """None when the peer imports with its compiled extension; else the error, verbatim, with the
    build log's tail when the device step left one."""
    env = engine_env("kvcached", "a", cfg)
    done = subprocess.run([cfg.python, "-c", "import kvcached, kvcached.vmm_ops; print(kvcached.__file__)"],
                          env=env, capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        return None
    build_log = os.path.join(cfg.work, "kvcached-build.log")
    msg = f"import kvcached failed (exit {done.returncode}) with site {cfg.kvcached_site}:\n{done.stderr.strip()[-3000:]}"
    if os.path.exists(build_log):
        msg += f"\n--- {build_log} (last lines):\n{tail(build_log, 40)}"
    else:
        msg += f"\n(no build log at {build_log}: scripts/gpu/sharing/device.sh kvcached was not run on this machine)"
    return msg
