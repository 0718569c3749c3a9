#!/usr/bin/env python3
"""Sharing benchmark driver (issue 11): two `vllm serve` engines on one GPU with one KV budget,
under one setting (static | shim | kvcached), each trace repeated; one JSON per (setting, trace,
repeat) in --results. Resumable: a run whose JSON exists is skipped, engines of the same setting
left running by an earlier call (--keep-engines) are reused, and --deadline-s stops before a run
that would not fit (exit 3: call again to go on). docs/sharing-benchmark.md says what is measured.

    driver.py --setting shim --traces a_then_b,symmetric,alternating --repeats 3 --results DIR

--engine-cmd replaces `python3 -m vllm.entrypoints.cli.main` (the CPU test puts standin_engine.py
there); everything after it is vLLM's `serve` command line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from http.client import HTTPException

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import client  # noqa: E402
import engines  # noqa: E402
import metrics  # noqa: E402
import steptimes  # noqa: E402
import traces  # noqa: E402
from sampler import Sampler, metrics_once  # noqa: E402

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMG]?)(?:i?B)?\s*", text, re.I)
    if not m:
        raise SystemExit(f"driver: bad size {text!r} (e.g. 512M, 2G)")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def pair(text: str) -> tuple[int, int]:
    lo, hi = (int(x) for x in text.split(":"))
    return lo, hi


def log(msg: str) -> None:
    print(f"[vllm_sharing {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def args_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", required=True, choices=["static", "shim", "kvcached"])
    ap.add_argument("--traces", default=",".join(traces.TRACES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", required=True, help="folder for the run JSONs (kept across calls)")
    ap.add_argument("--work", default="", help="engine logs, state, models (default: RESULTS/../work)")
    ap.add_argument("--engine-cmd", default=env("BENCH_ENGINE_CMD", "python3 -m vllm.entrypoints.cli.main"))
    ap.add_argument("--vllm-args", default=env("BENCH_VLLM_ARGS", "--enforce-eager"), help="more `serve` flags")
    ap.add_argument("--python", default=env("BENCH_PYTHON", "python3"), help="python for the kvcached check and ballast")
    ap.add_argument("--shim", default=env("KVCACHED_SHIM_LIB", "/tmp/kv/lib/libkvcached_shim.so"))
    ap.add_argument("--kvctl", default=env("KVCACHED_KVCTL", "/tmp/kv/bin/kvctl"))
    ap.add_argument("--kvcached-site", default=env("BENCH_KVCACHED_SITE", "/tmp/kvcached-site"))
    ap.add_argument("--peer-budget", choices=["ballast", "none"], default=env("BENCH_PEER_BUDGET", "ballast"))
    ap.add_argument("--peer-env", default=env("BENCH_PEER_ENV", ""),
                    help="kvcached's knobs over the sharing defaults (engines.PEER_SHARING_ENV), KEY=VALUE space-separated")
    ap.add_argument("--ballast-margin", default=env("BENCH_BALLAST_MARGIN", "32M"),
                    help="GPU memory the ballast leaves free beyond the budget (the engines' own growth)")
    ap.add_argument("--model-runner", choices=["v1", "v2", "engine"], default=env("BENCH_MODEL_RUNNER", "v1"),
                    help="vLLM's model runner in every setting (VLLM_USE_V2_MODEL_RUNNER); v1: the peer refuses "
                         "vLLM 0.24's V2 runner, and the settings must run the same engine; engine: vLLM's default")
    ap.add_argument("--budget", default=env("BENCH_BUDGET", "512M"), help="KV budget of both engines together")
    ap.add_argument("--page-mb", type=int, default=int(env("KVCACHED_PAGE_SIZE_MB", "2")))
    ap.add_argument("--gpu-util", type=float, default=float(env("BENCH_GPU_UTIL", "0.45")))
    ap.add_argument("--max-num-seqs", type=int, default=int(env("BENCH_MAX_NUM_SEQS", "128")))
    ap.add_argument("--duration-s", type=float, default=float(env("BENCH_DURATION_S", "40")))
    ap.add_argument("--hi", type=float, default=float(env("BENCH_RATE_HI", "16")))
    ap.add_argument("--lo", type=float, default=float(env("BENCH_RATE_LO", "1")))
    ap.add_argument("--prompt", type=pair, default=pair(env("BENCH_PROMPT", "256:1024")))
    ap.add_argument("--output", type=pair, default=pair(env("BENCH_OUTPUT", "64:256")))
    ap.add_argument("--burst-s", type=float, default=float(env("BENCH_BURST_S", "5")))
    ap.add_argument("--drain-s", type=float, default=float(env("BENCH_DRAIN_S", "20")))
    ap.add_argument("--warmup-s", type=float, default=float(env("BENCH_WARMUP_S", "10")),
                    help="after the engines start, a load of this many seconds on both (symmetric, not recorded): "
                         "kernels compiled on first use are then compiled before any measured run (0: none)")
    ap.add_argument("--idle-after-s", type=float, default=5.0, help="idle footprint read this long after traffic stops")
    ap.add_argument("--idle-wait-s", type=float, default=30.0, help="at most this long for idle before a run")
    ap.add_argument("--sample-ms", type=float, default=100.0)
    ap.add_argument("--base-port", type=int, default=int(env("BENCH_BASE_PORT", "8400")))
    ap.add_argument("--ready-timeout-s", type=float, default=600.0)
    ap.add_argument("--deadline-s", type=float, default=0.0, help="stop before a run that would end after this (0: none)")
    ap.add_argument("--keep-engines", action="store_true", help="leave the engines up for the next call")
    ap.add_argument("--ipc-name", default="vllm_sharing")
    return ap


def machine() -> str:
    """The machine a run ran on: its first GPU's UUID (nvidia-smi), else the host's name. Runs of
    different machines are never one comparison (summarize.py says so): the tenth GPU session's two
    H100 starts ran the same engines at 1450 and 2000-2500 tokens/s."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30)
        uuid = done.stdout.split()[0] if done.returncode == 0 and done.stdout.split() else ""
    except (OSError, subprocess.SubprocessError):
        uuid = ""
    return uuid or f"host {socket.gethostname()}"


def host_cpu() -> str:
    """The host's CPU model and core count: a small model's steps are bound by vLLM's CPU work, so
    two hosts with the same GPU serve it at different speeds (the sixteenth GPU session's host ran
    vLLM's steps 1.5-2x slower than the fourteenth's)."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model or platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores"


def run_path(results: str, setting: str, trace: str, repeat: int) -> str:
    return os.path.join(results, f"{setting}-{trace}-r{repeat}.json")


def base_record(cfg, setting: str, trace: str, repeat: int, shape: traces.TraceShape) -> dict:
    return {"setting": setting, "trace": trace, "repeat": repeat, "machine": getattr(cfg, "machine", None),
            "host_cpu": getattr(cfg, "host_cpu", None),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "config": {"budget_bytes": cfg.budget, "page_bytes": cfg.page_mb << 20, "layers": engines.LAYERS,
                       "kv_bytes_per_token": engines.KV_BYTES_PER_TOKEN, "engine_cmd": cfg.engine_cmd,
                       "vllm_args": cfg.vllm_args, "gpu_util": cfg.gpu_util, "max_num_seqs": cfg.max_num_seqs,
                       "static_kv_bytes": cfg.budget // 2, "peer_budget": cfg.peer_budget,
                       "ballast_margin_bytes": cfg.ballast_margin, "model_runner": cfg.model_runner,
                       "trace_shape": shape.__dict__, "drain_s": cfg.drain_s, "idle_after_s": cfg.idle_after_s,
                       "warmup_s": cfg.warmup_s, "ballast_after_warmup": cfg.warmup_s > 0,
                       "peer_env": engines.peer_env(cfg) if setting == "kvcached" else None,
                       "shim_env": engines.shim_env(setting)}}


def wait_idle(es: engines.EngineSet, cfg, sampler_cls) -> float:
    """Waits until nothing runs or waits in either engine and, under the shim, each engine's backed
    KV is down to its idle bound (pinned pages + one page per layer); returns the seconds waited."""
    bound = 2 * engines.LAYERS * (cfg.page_mb << 20)
    t0 = time.time()
    probe = sampler_cls(es.engines, cfg.kvctl if es.setting == "shim" else None, f"kvcached_{cfg.ipc_name}")
    while time.time() - t0 < cfg.idle_wait_s:
        quiet = True
        for e in es.engines.values():
            try:
                m = metrics_once(e["port"])
            except (OSError, HTTPException):  # an engine gone: its port may answer itself
                m = {}
            if m.get("num_requests_running", 0) or m.get("num_requests_waiting", 0):
                quiet = False
        row = probe.sample_ledger()
        if row is not None and any(row.get(n, {}).get("in_use_bytes", 0) > bound for n in es.engines):
            quiet = False
        if quiet:
            break
        time.sleep(0.5)
    return round(time.time() - t0, 2)


def start_and_warm(es: engines.EngineSet, cfg, shape: traces.TraceShape, models: dict[str, str]) -> str | None:
    """Starts the engines, warms them up, and only then bounds kvcached's with the ballast: its KV
    and the engines' activations share one pool, free GPU memory, so the ballast must leave the
    activations their room. After the warm-up PyTorch's caching allocator holds the activations
    the load's batch shapes need, outside what the ballast counts as free; bounded before it, the
    ballast's margin had to cover them, and kvcached's KV took the margin (thirteenth session:
    352 MiB of a 256 MiB budget with a 128 MiB margin) or an engine died for its activations
    (twelfth: a 32 MiB margin). None, or the error that stopped the engines."""
    err = es.start(models, bound_peer=cfg.warmup_s <= 0)
    if err:
        return err
    if cfg.warmup_s > 0:
        warm_up(es, cfg, shape)
        return es.bound_peer_now()
    return None


def warm_up(es: engines.EngineSet, cfg, shape: traces.TraceShape) -> None:
    """A short symmetric load on both engines just started, its results not recorded (other seeds
    than any run's). Kernels that compile on first use (Triton's, for each new batch shape) and
    the engines' caches are then warm before the first measured run: otherwise whichever setting
    runs first on a fresh machine pays the compilation in its first runs. The counts are kept
    with the engines (engines.json), so every run of these engines records them."""
    warm = dataclasses.replace(shape, duration_s=cfg.warmup_s)
    reqs = traces.make("symmetric", warm, seed=97)
    targets = {name: (e["port"], f"engine-{name}") for name, e in es.engines.items()}
    t0 = time.time() + 0.5
    # Requests still running after a short drain are cancelled; the first run waits for idle.
    results = asyncio.run(client.replay(targets, reqs, t0, warm.duration_s, min(cfg.drain_s, 10.0)))
    for name, recs in results.items():
        done = metrics.service(recs, warm.duration_s)  # served as every run counts it
        es.engines[name]["warmup"] = {"seconds": cfg.warmup_s, "requests": done["arrived"], "served": done["served"]}
    es.save()
    log(f"{es.setting}: warm-up ({cfg.warmup_s:.0f} s, not recorded): " + "; ".join(
        f"{n}: {e['warmup']['served']}/{e['warmup']['requests']} served" for n, e in es.engines.items()))


def one_run(es: engines.EngineSet, cfg, trace: str, repeat: int, shape: traces.TraceShape) -> dict:
    rec = base_record(cfg, es.setting, trace, repeat, shape)
    rec["idle_wait_s"] = wait_idle(es, cfg, Sampler)
    reqs = traces.make(trace, shape)
    timer_dir = engines.steptimer_dir(cfg)
    times_before = {name: steptimes.read(timer_dir, f"engine-{name}") for name in es.engines}
    peer = {name: engines.peer_segment(cfg, name) for name in es.engines} if es.setting == "kvcached" else None
    sampler = Sampler(es.engines, cfg.kvctl if es.setting == "shim" else None, f"kvcached_{cfg.ipc_name}",
                      period_s=cfg.sample_ms / 1000, peer_segments=peer)
    sampler.start()
    t0 = time.time() + 1.0
    targets = {name: (e["port"], f"engine-{name}") for name, e in es.engines.items()}
    results = asyncio.run(client.replay(targets, reqs, t0, shape.duration_s, cfg.drain_s))
    ends = [r["end"] for recs in results.values() for r in recs if r["end"] is not None]
    traffic_stop = max(ends) if ends else shape.duration_s
    time.sleep(max(0.0, t0 + traffic_stop + cfg.idle_after_s + 0.5 - time.time()))
    sampler.stop()

    def rel(rows):
        return [{**r, "t": round(r["t"] - t0, 3)} for r in rows]

    ledger, mrows, smi, peer_rows = rel(sampler.ledger), rel(sampler.metrics), rel(sampler.smi), rel(sampler.peer)
    rec["status"] = "ok"
    rec["traffic_stop_s"] = round(traffic_stop, 3)
    rec["sampler_errors"] = sampler.errors
    rec["engines"] = {}
    for name, e in es.engines.items():
        row = {"pid": e["pid"], "ready_s": e.get("ready_s"), "kv_capacity_bytes": e.get("kv_capacity_bytes"),
               "vllm_version": e.get("vllm_version"), "warmup": e.get("warmup")}
        row.update(metrics.service(results[name], shape.duration_s))
        row["memory"] = metrics.memory(ledger, mrows, smi, name, traffic_stop, cfg.idle_after_s,
                                       e.get("kv_capacity_bytes"), cfg.budget // 2 if es.setting == "static" else None,
                                       peer=peer_rows)
        if es.setting == "shim":
            row["handover"] = metrics.handovers(ledger, name, cfg.page_mb << 20)
            secs = [h["seconds"] for h in row["handover"] if h["seconds"] is not None]
            row["handover_p50_s"] = metrics.pct(secs, 50)
            row["per_step"] = metrics.per_step(ledger, name)
            row["policy"] = metrics.policy(ledger, name)
        else:
            row["handover"], row["handover_p50_s"], row["per_step"], row["policy"] = "n/a", None, "n/a", "n/a"
        row["scheduler"] = steptimes.per_step(times_before[name], steptimes.read(timer_dir, f"engine-{name}"))
        rec["engines"][name] = row
    rec["series"] = {"ledger": ledger, "metrics": mrows, "smi": smi, "peer": peer_rows}
    rec["requests"] = results
    return rec


def write(path: str, rec: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(rec, f)
    os.replace(tmp, path)


# Runs recorded with these (or whose record cannot be read) are tried again by the next call (a start
# that failed may pass after a fix or another knob); the old record is kept beside as <run>.json.failed-N, which no summary reads.
RETRIED = ("engine_failed", "not_available", "unreadable")


def not_done(path: str) -> bool:
    """True when the run at `path` is still to do: no record, or a record of a failed start (moved
    aside here, so that the failure stays in the results)."""
    try:
        with open(path, encoding="utf-8") as f:
            status = json.load(f).get("status")
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        status = "unreadable"
    if status not in RETRIED:
        return False
    n = 1
    while os.path.exists(f"{path}.failed-{n}"):
        n += 1
    os.replace(path, f"{path}.failed-{n}")
    log(f"{os.path.basename(path)}: recorded as {status}; kept as {os.path.basename(path)}.failed-{n}, run again")
    return True


def main() -> int:
    cfg = args_parser().parse_args()
    cfg.budget = parse_size(cfg.budget)
    cfg.ballast_margin = parse_size(cfg.ballast_margin)
    cfg.machine = machine()
    cfg.host_cpu = host_cpu()
    cfg.results = os.path.abspath(cfg.results)
    cfg.work = os.path.abspath(cfg.work or os.path.join(cfg.results, "..", "work"))
    os.makedirs(cfg.results, exist_ok=True)
    os.makedirs(cfg.work, exist_ok=True)
    shape = traces.TraceShape(duration_s=cfg.duration_s, hi=cfg.hi, lo=cfg.lo, prompt=cfg.prompt, output=cfg.output,
                              burst_s=cfg.burst_s)
    todo = [(t, k) for t in cfg.traces.split(",") if t for k in range(1, cfg.repeats + 1)
            if not_done(run_path(cfg.results, cfg.setting, t, k))]
    for t, _ in todo:
        traces.busy(t, "a", 0.0, shape)  # unknown trace names fail here, before any engine starts
    if not todo:
        log(f"{cfg.setting}: every run is done already ({cfg.results})")
        return 0
    started = time.time()
    # A run: lead, arrivals, drain (all of it under overload), idle reading, a short wait for idle.
    est_run_s = 1.5 + shape.duration_s + cfg.drain_s + cfg.idle_after_s + 5
    if cfg.setting == "kvcached":
        err = engines.kvcached_check(cfg)
        if err:
            log("kvcached is not available here:\n" + err)
            for t, k in todo:
                rec = base_record(cfg, cfg.setting, t, k, shape)
                rec.update(status="not_available", error=err)
                write(run_path(cfg.results, cfg.setting, t, k), rec)
            return 0
    models = engines.write_models(os.path.join(cfg.work, "models"))
    es = engines.EngineSet(cfg.setting, cfg, log)
    if not es.reuse():
        err = start_and_warm(es, cfg, shape, models)
        if err:
            log(f"{cfg.setting}: engines failed:\n{err}")
            for t, k in todo:
                rec = base_record(cfg, cfg.setting, t, k, shape)
                rec.update(status="engine_failed", error=err)
                write(run_path(cfg.results, cfg.setting, t, k), rec)
            return 1
    rc = 0
    try:
        for t, k in todo:
            if cfg.deadline_s and time.time() - started + est_run_s > cfg.deadline_s:
                log(f"deadline: {len(todo)} run(s) left for the next call; engines " +
                    ("kept" if cfg.keep_engines else "stopped"))
                rc = 3
                break
            log(f"{cfg.setting} {t} repeat {k}: running ({shape.duration_s:.0f} s + drain)")
            rec = one_run(es, cfg, t, k, shape)
            write(run_path(cfg.results, cfg.setting, t, k), rec)
            todo = todo[1:]
            log(f"{cfg.setting} {t} repeat {k}: " + "; ".join(
                f"{n}: {e['served']}/{e['arrived']} served, {e['tok_s']:.0f} tok/s, TTFT p50 {e['ttft_p50']}"
                for n, e in rec["engines"].items()))
    finally:
        if not (cfg.keep_engines and todo):
            es.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
