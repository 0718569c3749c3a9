"""Two models, one GPU, one KV budget: runs the bursty trace with the shim (elastic KV) and without
it (each engine statically given half the budget), then writes a plot and a summary table.

Run through run.sh (from the repo root, on the GPU machine). Everything is bounded: engine start
240 s, trace + drain, then a hard kill; the whole example takes about 4-5 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import common  # noqa: E402

SMOKE = os.environ.get("TWO_MODELS_SMOKE") == "1"  # CPU plumbing check, see common.py
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*", text, re.I)
    if not match:
        raise SystemExit(f"two_models: bad size {text!r} (use e.g. 3G, 2560M)")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def log(message: str) -> None:
    print(f"[two_models] {message}", flush=True)


def start_engine(name, mode, num_blocks, trace_path, sync, result, env, log_path, drain_s):
    cmd = [
        sys.executable,
        os.path.join(HERE, "engine.py"),
        "--name", name,
        "--mode", mode,
        "--num-blocks", str(num_blocks),
        "--trace", trace_path,
        "--sync", sync,
        "--result", result,
        "--drain-s", str(drain_s),
    ]
    handle = open(log_path, "w", encoding="utf-8")
    proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    return proc, handle


def kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def run_mode(mode: str, args, out: str, traces: dict, budget: int) -> dict:
    """Runs both engines through the trace in `mode` ("shim" or "static"); returns their results."""
    sync = os.path.join(out, f"sync-{mode}")
    shutil.rmtree(sync, ignore_errors=True)
    os.makedirs(sync)
    ipc = f"two_models_{os.getpid()}"
    procs = {}
    for name in ("a", "b"):
        block = common.kv_bytes_per_block(common.MODELS[name])
        num_blocks = budget // block if mode == "shim" else (budget // 2) // block
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(ROOT, "hooks", "python"), HERE, env.get("PYTHONPATH")) if p)
        env.pop("LD_PRELOAD", None)
        env["PYTHONUNBUFFERED"] = "1"
        env["HF_HUB_OFFLINE"] = "1"
        if mode == "shim" and not SMOKE:
            env.update(
                LD_PRELOAD=args.shim,
                KVCACHED_SHIM_PATH=args.shim,
                KVCACHED_AUTOPATCH="1",
                KVCACHED_BUDGET=str(budget),
                KVCACHED_IPC_NAME=ipc,
                KVCACHED_LABEL=f"model-{name}",
                KVCACHED_SANITY_CHECK=os.environ.get("KVCACHED_SANITY_CHECK", "0"),
            )
        else:
            env.update(ENABLE_KVCACHED="false", KVCACHED_AUTOPATCH="0")
        result = os.path.join(out, f"{mode}-{name}.json")
        if os.path.exists(result):
            os.remove(result)
        log(f"{mode}: starting engine {name} ({num_blocks} blocks of {block >> 10} KiB)")
        procs[name] = (*start_engine(name, mode, num_blocks, traces[name], sync, result, env,
                                     os.path.join(out, f"{mode}-{name}.log"), args.drain_s), result)
    # Wait for both engines to be warm, then start the trace for both at once.
    deadline = time.monotonic() + 240
    while not all(os.path.exists(os.path.join(sync, f"ready-{n}")) for n in procs):
        dead = [n for n, (p, _, _) in procs.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            for p, _, _ in procs.values():
                kill(p)
            reason = f"engine {dead} exited" if dead else "engines not ready within 240 s"
            for n in procs:
                log(f"--- {mode}-{n}.log:\n{tail(os.path.join(out, f'{mode}-{n}.log'))}")
            raise SystemExit(f"two_models: {mode}: {reason}")
        time.sleep(0.2)
    t0 = time.time() + 1.0
    with open(os.path.join(sync, "go.tmp"), "w", encoding="utf-8") as handle:
        handle.write(f"{t0:.6f}")
    os.rename(os.path.join(sync, "go.tmp"), os.path.join(sync, "go"))
    log(f"{mode}: trace started ({args.phase_s:.0f} s per phase, drain {args.drain_s:.0f} s)")
    # Sample kvctl while the trace runs (shim mode).
    kvctl_rows = []
    limit = t0 + 2 * args.phase_s + args.drain_s + 60
    while any(p.poll() is None for p, _, _ in procs.values()):
        if time.time() > limit:
            log(f"{mode}: engines still running at the deadline; killing them")
            for p, _, _ in procs.values():
                kill(p)
            break
        if mode == "shim" and os.access(args.kvctl, os.X_OK):
            try:
                done = subprocess.run([args.kvctl, "list", "--json"], capture_output=True, text=True, timeout=5)
                kvctl_rows.append({"t": round(time.time() - t0, 3), "rc": done.returncode, "out": done.stdout[:20000]})
            except (subprocess.TimeoutExpired, OSError) as error:
                kvctl_rows.append({"t": round(time.time() - t0, 3), "error": str(error)})
        time.sleep(1.0)
    results = {}
    if mode == "shim":  # the budget segment of this run (a later run must not inherit its budget)
        try:
            os.remove(f"/dev/shm/kvcached_{ipc}")
        except OSError:
            pass
    for name, (proc, handle, result) in procs.items():
        proc.wait(timeout=30)
        handle.close()
        if proc.returncode != 0 or not os.path.exists(result):
            log(f"--- {mode}-{name}.log (exit {proc.returncode}):\n{tail(os.path.join(out, f'{mode}-{name}.log'))}")
            raise SystemExit(f"two_models: {mode}: engine {name} failed (exit {proc.returncode})")
        with open(result, encoding="utf-8") as fh:
            results[name] = json.load(fh)
    if kvctl_rows:
        with open(os.path.join(out, f"kvctl-{mode}.jsonl"), "w", encoding="utf-8") as handle:
            for row in kvctl_rows:
                handle.write(json.dumps(row) + "\n")
    return results


def pct(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 100)) - 1))]


def summarise(results: dict, duration: float) -> dict:
    rows = {}
    for name, r in results.items():
        done = [f for f in r["finished"].values() if not f["error"]]
        ttfts = [f["ttft"] for f in done if f["ttft"] is not None]
        tokens = sum(f["tokens"] for f in done)
        peak = max((s["kv_backed"] for s in r["samples"]), default=0)
        rows[name] = {
            "served": len(done),
            "submitted": len(r["submitted"]),
            "trace": r["trace_requests"],
            "tok_s": tokens / duration if duration else 0.0,
            "ttft_p50": pct(ttfts, 50),
            "ttft_p99": pct(ttfts, 99),
            "peak_kv_gib": peak / 2**30,
            "adapter": r.get("adapter"),
        }
    return rows


def plot(results_shim: dict, results_static: dict | None, budget: int, args, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not importable: no plot")
        return False
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    colors = {"a": "tab:blue", "b": "tab:orange"}
    series = {}
    for name, r in results_shim.items():
        t = [s["t"] for s in r["samples"]]
        y = [s["kv_backed"] / 2**30 for s in r["samples"]]
        series[name] = (t, y)
        top.plot(t, y, color=colors[name], label=f"model {name}: backed KV (shim)")
    if len(series) == 2 and series["a"][0] and series["b"][0]:
        import bisect

        (ta, ya), (tb, yb) = series["a"], series["b"]
        total = [y + yb[max(0, bisect.bisect_right(tb, t) - 1)] for t, y in zip(ta, ya)]  # b's latest sample
        top.plot(ta, total, color="gray", linestyle=":", label="a + b (shim)")
    top.axhline(budget / 2**30, color="red", linewidth=1, label=f"budget {budget / 2**30:.1f} GiB")
    if results_static:
        half = next(iter(results_static.values()))["static_kv_bytes"] / 2**30
        top.axhline(half, color="black", linestyle="--", linewidth=1, label=f"static KV per engine without shim ({half:.2f} GiB)")
    top.set_ylabel("KV memory (GiB)")
    top.set_title("Two models on one GPU: KV memory follows traffic (transformers continuous batching + kvcached)")
    top.legend(loc="upper right", fontsize=8)
    top.grid(alpha=0.3)
    for name, r in results_shim.items():
        arrivals = [v["t"] for v in r["submitted"].values()]
        if arrivals:
            bins = range(0, int(max(arrivals)) + 2)
            bottom.hist(arrivals, bins=bins, color=colors[name], alpha=0.5, label=f"model {name}")
    bottom.set_ylabel("requests / s")
    bottom.set_xlabel("time since trace start (s)")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def table(summary: dict) -> str:
    lines = [
        "| run | model | served / arrived | tokens/s | TTFT p50 (s) | TTFT p99 (s) | peak KV (GiB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, rows in summary.items():
        label = "kvcached shim (elastic)" if mode == "shim" else "no shim (static half each)"
        for name, row in sorted(rows.items()):
            lines.append(
                f"| {label} | {name} | {row['served']} / {row['trace']} | {row['tok_s']:.0f} | "
                f"{row['ttft_p50']:.2f} | {row['ttft_p99']:.2f} | {row['peak_kv_gib']:.2f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shim", default=os.environ.get("KVCACHED_SHIM_LIB") or os.path.join(ROOT, "build-gpu", "lib", "libkvcached_shim.so"))
    parser.add_argument("--kvctl", default=os.environ.get("KVCACHED_KVCTL") or os.path.join(ROOT, "build-gpu", "bin", "kvctl"))
    parser.add_argument("--budget", default=os.environ.get("TWO_MODELS_BUDGET", "1G"))
    parser.add_argument("--phase-s", type=float, default=float(os.environ.get("TWO_MODELS_PHASE_S", "25")))
    parser.add_argument("--rate-hi", type=float, default=float(os.environ.get("TWO_MODELS_RATE_HI", "30")))
    parser.add_argument("--rate-lo", type=float, default=float(os.environ.get("TWO_MODELS_RATE_LO", "1")))
    parser.add_argument("--drain-s", type=float, default=float(os.environ.get("TWO_MODELS_DRAIN_S", "20")))
    parser.add_argument("--out", default=os.path.join(os.environ["OUT"], "two_models") if os.environ.get("OUT") else os.path.join(HERE, "out"))
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    args.shim = os.path.abspath(args.shim)
    budget = parse_size(args.budget)
    os.makedirs(args.out, exist_ok=True)
    if SMOKE:
        log("TWO_MODELS_SMOKE=1: tiny models on the CPU, no shim (checks the plumbing only)")
    elif not os.path.isfile(args.shim):
        raise SystemExit(f"two_models: shim not found at {args.shim} (build it, or pass --shim / KVCACHED_SHIM_LIB)")
    else:
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                               capture_output=True, text=True, timeout=120)
        if probe.stdout.strip() != "True":
            raise SystemExit(f"two_models: torch.cuda is not available here ({probe.stderr.strip()[-200:]})")
    started = time.monotonic()
    traces = {}
    for name in ("a", "b"):
        trace = common.make_trace(name, args.phase_s, args.rate_hi, args.rate_lo)
        traces[name] = os.path.join(args.out, f"trace-{name}.json")
        with open(traces[name], "w", encoding="utf-8") as handle:
            json.dump(trace, handle)
        log(f"trace {name}: {len(trace)} requests")
    results = {"shim": run_mode("shim", args, args.out, traces, budget)}
    if not args.skip_baseline:
        results["static"] = run_mode("static", args, args.out, traces, budget)
    summary = {mode: summarise(r, 2 * args.phase_s) for mode, r in results.items()}
    png = os.path.join(args.out, "two_models.png")
    plotted = plot(results["shim"], results.get("static"), budget, args, png)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else "?"
    notes = []
    for name, row in summary["shim"].items():
        a = row["adapter"] or {}
        notes.append(
            f"- model {name} under the shim: {a.get('pages_acquired_total', 0)} pages acquired / "
            f"{a.get('pages_released_total', 0)} released in {a.get('acquire_calls', 0)} + {a.get('release_calls', 0)} "
            f"C calls, {a.get('refusals', 0)} budget refusals, {a.get('budget_waits', 0)} budget waits, "
            f"{a.get('idle_trims', 0)} idle trims; acquire/release per step p50 {a.get('c_us_per_step_p50', 0):.0f} us, "
            f"p99 {a.get('c_us_per_step_p99', 0):.0f} us"
            + (f"; sanity: {a.get('sanity_checks')} checks, {a.get('sanity_violations')} violations" if "sanity_checks" in a else "")
        )
    md = "\n".join(
        [
            "## Two models on one GPU (examples/two_models)",
            "",
            f"Command: `examples/two_models/run.sh` ({date}, {gpu}). Budget {budget / 2**30:.2f} GiB of KV for both "
            f"models; trace: {args.phase_s:.0f} s with model a at {args.rate_hi:g} req/s and b at {args.rate_lo:g} req/s, "
            f"then {args.phase_s:.0f} s the reverse, {args.drain_s:.0f} s drain; tokens/s over the {2 * args.phase_s:.0f} s "
            "of the trace. Without the shim each engine has half the budget as a static cache.",
            "",
            table(summary),
            "",
            *notes,
            "",
            "![KV memory of each model over time](two_models.png)" if plotted else "(no plot: matplotlib missing)",
            "",
        ]
    )
    with open(os.path.join(args.out, "two_models.md"), "w", encoding="utf-8") as handle:
        handle.write(md)
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump({m: {n: {k: v for k, v in row.items()} for n, row in rows.items()} for m, rows in summary.items()},
                  handle, indent=2, default=str)
    print()
    print(md)
    log(f"done in {time.monotonic() - started:.0f} s; outputs in {args.out}")
    served_all = all(row["served"] > 0 for row in summary["shim"].values())
    return 0 if served_all else 1


if __name__ == "__main__":
    sys.exit(main())
