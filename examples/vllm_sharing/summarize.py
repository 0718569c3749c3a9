#!/usr/bin/env python3
"""Tables and plots of the sharing benchmark's run JSONs (driver.py), for docs/sharing-benchmark.md.

    summarize.py RESULTS_DIR [--out DIR]      writes DIR/summary.md (+ sharing-TRACE.png with matplotlib)

Every cell is the median over repeats with [min-max]; the targets of issue 11 get PASS/FAIL and
the value they were judged on. Runs that did not run (status not_available / engine_failed) show
their status, and their error is quoted below the tables.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import metrics  # noqa: E402
import traces as tr  # noqa: E402

SETTINGS = ("static", "shim", "kvcached")
MIB = 1 << 20


def load(folder: str) -> list[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
        if "setting" in rec and "trace" in rec:
            runs.append(rec)
    return runs


def med(values: list) -> tuple | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def cell(values: list, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    m = med([v / scale if v is not None else None for v in values])
    if m is None:
        return "n/a"
    if m[1] == m[2]:
        return fmt.format(m[0])
    return f"{fmt.format(m[0])} [{fmt.format(m[1])}-{fmt.format(m[2])}]"


def engine_values(runs: list[dict], engine: str, key) -> list:
    out = []
    for r in runs:
        e = r.get("engines", {}).get(engine)
        out.append(key(e) if e else None)
    return out


def field_of(e: dict, group: str, field: str):
    """An engine record's e[group][field]; None where the run has no such group (its settings
    record "n/a": static has no per-step hook counts, the stand-in no scheduler timings)."""
    values = e.get(group)
    return values.get(field) if isinstance(values, dict) else None


def sched_value(e: dict):
    return field_of(e, "scheduler", "sched_us_per_step")


def sched_ratio(e: dict):
    """schedule()'s time a step over update_from_output's, None without both: update_from_output is
    nearly all vLLM's own work in every setting (the shim's hook only counts the blocks finished
    requests free there, which makes its ratio lower, not higher), so the ratio divides out the
    machine's speed, which moved by 2x between runs minutes apart on one H100 (twelfth session)."""
    schedule = field_of(e, "scheduler", "schedule_us_per_step")
    update = field_of(e, "scheduler", "update_us_per_step")
    return schedule / update if schedule is not None and update else None


def table(runs: list[dict]) -> list[str]:
    lines = ["| trace | setting | engine | runs | served / arrived | tokens/s | tokens/s under load | TTFT p50 (s) | TTFT p99 (s) | "
             "hand-over p50 (s) | peak KV (MiB) | idle KV in use / charged (MiB) | scheduler us/step | hook us/step | "
             "C calls/step | preempted / given (MiB) for the policy |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for trace in tr.TRACES:
        for setting in SETTINGS:
            group = [r for r in runs if r["trace"] == trace and r["setting"] == setting]
            if not group:
                continue
            ok = [r for r in group if r.get("status") == "ok"]
            if not ok:
                lines.append(f"| {trace} | {setting} | - | 0 of {len(group)} | {group[0].get('status')} (below) |"
                             + " |" * 11)
                continue
            for engine in tr.ENGINES:
                served = engine_values(ok, engine, lambda e: e["served"])
                arrived = engine_values(ok, engine, lambda e: e["arrived"])
                idle_use = cell(engine_values(ok, engine, lambda e: e["memory"].get("idle_in_use_bytes")), "{:.0f}", MIB)
                idle_ch = cell(engine_values(ok, engine, lambda e: e["memory"].get("idle_kv_bytes")), "{:.0f}", MIB)
                lines.append(" | ".join([
                    f"| {trace}", setting, engine, str(len(ok)),
                    f"{cell(served, '{:.0f}')} / {cell(arrived, '{:.0f}')}",
                    cell(engine_values(ok, engine, lambda e: e["tok_s"]), "{:.0f}"),
                    cell(engine_values(ok, engine, lambda e: e.get("window_tok_s")), "{:.0f}"),
                    cell(engine_values(ok, engine, lambda e: e["ttft_p50"]), "{:.3f}"),
                    cell(engine_values(ok, engine, lambda e: e["ttft_p99"]), "{:.3f}"),
                    cell(engine_values(ok, engine, lambda e: e.get("handover_p50_s")), "{:.3f}"),
                    cell(engine_values(ok, engine, lambda e: e["memory"].get("peak_kv_bytes")), "{:.0f}", MIB),
                    f"{idle_use} / {idle_ch}",
                    cell(engine_values(ok, engine, sched_value), "{:.0f}"),
                    cell(engine_values(ok, engine, lambda e: field_of(e, "per_step", "hook_us_per_step")), "{:.1f}"),
                    cell(engine_values(ok, engine, lambda e: field_of(e, "per_step", "c_calls_per_step")), "{:.2f}"),
                    f"{cell(engine_values(ok, engine, lambda e: field_of(e, 'policy', 'preempted')), '{:.0f}')} / "
                    f"{cell(engine_values(ok, engine, lambda e: field_of(e, 'policy', 'given_bytes')), '{:.0f}', MIB)}",
                ]) + " |")
    return lines


def beside_idle(runs: list[dict]) -> list[str]:
    """metrics.queued_beside_idle per trace and setting: how long one engine queued while the other
    held memory its requests did not use (an eighth of the budget or more)."""
    lines = ["| trace | setting | runs | seconds one engine queued beside the other's idle KV | that idle KV, mean (MiB) |",
             "| --- | --- | ---: | ---: | ---: |"]
    for trace in tr.TRACES:
        for setting in SETTINGS:
            ok = ok_runs(runs, setting, trace)
            if not ok:
                continue
            found = [metrics.queued_beside_idle(r, r["config"]["budget_bytes"] // 8) for r in ok]
            lines.append(f"| {trace} | {setting} | {len(ok)} | {cell([f['seconds'] for f in found], '{:.1f}')} | "
                         f"{cell([f['idle_mib_mean'] for f in found], '{:.0f}')} |")
    return lines


def versions(runs: list[dict]) -> list[str]:
    """One line naming the vLLM release(s) each setting's engines reported: settings compared on
    different releases are then visible as such."""
    seen: dict[str, set] = {}
    for r in runs:
        for e in (r.get("engines") or {}).values():
            seen.setdefault(r["setting"], set()).add(e.get("vllm_version") or "not reported")
    if not seen:
        return []
    runners: dict[str, set] = {}
    for r in runs:
        if r.get("engines"):
            runners.setdefault(r["setting"], set()).add((r.get("config") or {}).get("model_runner") or "not recorded")
    parts = [f"{s}: {', '.join(sorted(seen[s]))} (model runner {', '.join(sorted(runners.get(s, {'not recorded'})))})"
             for s in SETTINGS if s in seen]
    return ["vLLM versions: " + "; ".join(parts) + ".", ""]


def machines(runs: list[dict]) -> list[str]:
    """One line naming the machine(s) each setting ran on (driver.machine(), with the host's CPU
    when recorded: driver.host_cpu())."""
    seen: dict[str, set] = {}
    for r in runs:
        name = r.get("machine") or "not recorded"
        if r.get("host_cpu"):
            name += f" ({r['host_cpu']})"
        seen.setdefault(r["setting"], set()).add(name)
    parts = [f"{s}: {', '.join(sorted(seen[s]))}" for s in SETTINGS if s in seen]
    return ["Machines: " + "; ".join(parts) + ".", ""] if parts else []


def apart(runs: list[dict], setting: str) -> str | None:
    """Why `setting`'s runs are no comparison with static's: they ran on other machines (each
    side's recorded machines, when both are known and differ), else None."""
    def where(s):
        return {r.get("machine") for r in runs if r["setting"] == s and r.get("status") == "ok"} - {None}

    mine, base = where(setting), where("static")
    if mine and base and mine != base:
        return f"n/a: not the same machine as static ({', '.join(sorted(mine))} vs {', '.join(sorted(base))})"
    return None


def ok_runs(runs, setting, trace):
    return [r for r in runs if r["setting"] == setting and r["trace"] == trace and r.get("status") == "ok"]


def median_of(runs, engine, key):
    m = med(engine_values(runs, engine, key))
    return m[0] if m else None


def peer_held(runs: list[dict], trace: str | None = None) -> tuple[str, bool | None] | None:
    """Whether kvcached's engines were held to the budget: the most both held together (its own
    accounting: pages in use + reserved) at any sample of its runs (of `trace`, or all), against
    the budget itself, the KV that static's halves and the shim's ledger get. (The ballast leaves
    it the budget plus a margin for the engines' activations, which its KV may take instead: then
    it ran on more KV than the others.) (text, True/False; None: a run without that series); None
    without a kvcached run. Its rows compare nothing when it was not held."""
    peer = [r for r in runs if r["setting"] == "kvcached" and r.get("status") == "ok"
            and (trace is None or r["trace"] == trace)]
    if not peer:
        return None
    worst, bound = 0, 0
    for r in peer:
        samples = r.get("series", {}).get("peer") or []
        if not samples:
            return f"{r['trace']} r{r['repeat']} has no sample of kvcached's accounting", None
        bound = max(bound, r["config"]["budget_bytes"])
        for row in samples:
            held = sum(metrics.peer_held_bytes(v) for k, v in row.items() if k != "t" and isinstance(v, dict))
            worst = max(worst, held)
    return f"{worst / MIB:.0f} MiB at most, bound {bound / MIB:.0f} MiB ({len(peer)} runs)", worst <= bound


def targets(runs: list[dict]) -> list[str]:
    rows = ["| target | judged on | value | verdict |", "| --- | --- | --- | --- |"]
    def judged(setting: str, verdict: str, trace: str | None = None) -> str:
        """A trace's kvcached rows compare nothing when its runs of that trace were not held to
        the budget; a target over every trace (trace None) when one of them was not."""
        if setting == "kvcached" and (peer_held(runs, trace) or ("", None))[1] is False:
            return "n/a: kvcached was not held to the budget (check below)"
        return apart(runs, setting) or verdict

    def add(target, on, value, verdict):
        rows.append(f"| {target} | {on} | {value} | {verdict} |")

    # 1. hand-over p50 < 1 s (shim): each run's p50 over both engines' starvation episodes
    for trace in tr.TRACES:
        per_run = []
        for r in ok_runs(runs, "shim", trace):
            secs = [h["seconds"] for e in r["engines"].values() if isinstance(e.get("handover"), list)
                    for h in e["handover"] if h["seconds"] is not None]
            if secs:
                per_run.append(metrics.pct(secs, 50))
        m = med(per_run)
        if m is None:
            add("hand-over p50 < 1 s", f"shim, {trace}", "no run or no starvation episode", "n/a")
        else:
            add("hand-over p50 < 1 s", f"shim, {trace} ({len(per_run)} runs)", f"{m[0]:.3f} s [{m[1]:.3f}-{m[2]:.3f}]",
                "PASS" if m[0] < 1.0 else f"FAIL ({m[0]:.2f}x the bound)")
    # 2. symmetric overload vs static halves, per engine and together: tokens/s under load (what
    # was streamed while the trace lasted; served requests' tokens/s for runs recorded without it)
    static = ok_runs(runs, "static", "symmetric")

    def service(e):
        return e["window_tok_s"] if e.get("window_tok_s") is not None else e["tok_s"]

    for setting in ("shim", "kvcached"):
        other = ok_runs(runs, setting, "symmetric")
        if not static or not other:
            add("symmetric: each >= 0.9x static, sum >= 1.0x", f"{setting} vs static", "missing runs", "n/a")
            continue
        total_s = total_o = 0.0
        for engine in tr.ENGINES:
            s, o = median_of(static, engine, service), median_of(other, engine, service)
            total_s, total_o = total_s + (s or 0), total_o + (o or 0)
            ratio = o / s if s else None
            add("symmetric: engine >= 0.9x its static half", f"{setting} vs static, engine {engine}",
                f"{ratio:.3f}" if ratio is not None else "n/a",
                judged(setting, "n/a" if ratio is None else ("PASS" if ratio >= 0.9 else f"FAIL (-{0.9 - ratio:.3f})"),
                       "symmetric"))
        ratio = total_o / total_s if total_s else None
        add("symmetric: together >= 1.0x static total", f"{setting} vs static",
            f"{ratio:.3f}" if ratio is not None else "n/a",
            judged(setting, "n/a" if ratio is None else ("PASS" if ratio >= 1.0 else f"FAIL (-{1.0 - ratio:.3f})"),
                   "symmetric"))
    # 3. A-then-B: B's TTFT p50 <= 1.5x static's
    static = ok_runs(runs, "static", "a_then_b")
    for setting in ("shim", "kvcached"):
        other = ok_runs(runs, setting, "a_then_b")
        s = median_of(static, "b", lambda e: e["ttft_p50"]) if static else None
        o = median_of(other, "b", lambda e: e["ttft_p50"]) if other else None
        ratio = o / s if s and o is not None else None
        add("A-then-B: B's TTFT p50 <= 1.5x static's", f"{setting} vs static",
            f"{ratio:.3f} ({o:.3f} s vs {s:.3f} s)" if ratio is not None else "missing runs",
            judged(setting, "n/a" if ratio is None else ("PASS" if ratio <= 1.5 else f"FAIL ({ratio / 1.5:.2f}x the bound)"),
                   "a_then_b"))
    # 4. idle footprint within 5 s <= pinned pages (one per layer) + one page per layer (shim)
    shim_runs = [r for r in runs if r["setting"] == "shim" and r.get("status") == "ok"]
    if shim_runs:
        cfg = shim_runs[0]["config"]
        bound = 2 * cfg["layers"] * cfg["page_bytes"]
        worst = max((e["memory"].get("idle_in_use_bytes") or 0 for r in shim_runs for e in r["engines"].values()), default=0)
        worst_ch = max((e["memory"].get("idle_kv_bytes") or 0 for r in shim_runs for e in r["engines"].values()), default=0)
        # Judged on what the engine holds of the budget (in use, its reserve, pages mapped ahead):
        # physical memory, as nvidia-smi would count it for kvcached.
        add(f"idle {cfg['idle_after_s']:g} s after traffic <= pinned + 1 page/layer ({bound // MIB} MiB)",
            f"shim, worst engine of {len(shim_runs)} runs (charged: in use, reserve, mapped ahead; in use alone "
            f"{worst / MIB:.0f} MiB)",
            f"{worst_ch / MIB:.0f} MiB", "PASS" if worst_ch <= bound else f"FAIL ({worst_ch / bound:.2f}x the bound)")
    # 5. per-step bookkeeping below kvcached's: what each adds to the scheduler's time per step over
    # static's (steptimer: the same measure in every setting), medians over every run and engine.
    # Judged on schedule() / update_from_output (sched_ratio: the machine's speed divided out) when
    # every setting has it; the raw us/step are shown beside it, and judge when the ratio is missing.
    def over(setting, value):
        return med([value(e) for r in runs if r["setting"] == setting and r.get("status") == "ok"
                    for e in r["engines"].values()])

    base, shim_s, peer_s = (over(s, sched_value) for s in ("static", "shim", "kvcached"))
    r_base, r_shim, r_peer = (over(s, sched_ratio) for s in ("static", "shim", "kvcached"))
    ours = med([field_of(e, "per_step", "hook_us_per_step") for r in shim_runs for e in r["engines"].values()])
    hook = f"; the shim's own count {ours[0]:.1f} us/step" if ours else ""
    raw = (f"shim +{shim_s[0] - base[0]:.0f}, kvcached +{peer_s[0] - base[0]:.0f} us/step (static {base[0]:.0f})"
           if base and shim_s and peer_s else "")
    title = "per-step bookkeeping below kvcached's"
    if r_base and r_shim and r_peer:
        extra_shim, extra_peer = r_shim[0] - r_base[0], r_peer[0] - r_base[0]
        add(title, "schedule() / update_from_output per step (steptimer) over static's, medians; raw us/step beside",
            f"shim {extra_shim:+.2f}, kvcached {extra_peer:+.2f} (static {r_base[0]:.2f}); raw: {raw or 'n/a'}{hook}",
            judged("kvcached", apart(runs, "shim") or ("PASS" if extra_shim < extra_peer else "FAIL")))
    elif raw:
        add(title, "scheduler us/step over static's (steptimer), medians", raw + hook,
            judged("kvcached", apart(runs, "shim") or ("PASS" if shim_s[0] - base[0] < peer_s[0] - base[0] else "FAIL")))
    else:
        add(title, "scheduler us/step over static's (steptimer), medians",
            "n/a (a setting without scheduler timings)" + hook, "n/a")
    for trace in tr.TRACES:
        text, verdict = peer_held(runs, trace) or ("", None)
        if text:
            add(f"check: kvcached held to the budget, {trace} (both engines together, every sample)",
                "its accounting (pages in use + reserved), against the budget", text,
                {True: "yes", False: "NO: its rows of this trace compare nothing (docs/sharing-benchmark.md, "
                                     "kvcached's sharing knobs)", None: "unknown"}[verdict])
    # Does the budget bind? Static engines must fill their halves in the symmetric trace.
    static = ok_runs(runs, "static", "symmetric")
    peaks = [e["memory"].get("engine_usage_peak") for r in static for e in r["engines"].values()]
    m = med(peaks)
    if m is not None:
        add("check: the budget binds (static, symmetric: KV usage peak >= 95%)", "engine's kv_cache_usage_perc",
            f"{m[0] * 100:.0f}% [{m[1] * 100:.0f}-{m[2] * 100:.0f}%]",
            "yes" if m[0] >= 0.95 else "NO: lower BENCH_BUDGET or raise the load, else the comparison says little")
    return rows


def errors(runs: list[dict]) -> list[str]:
    out, seen = [], set()
    for r in runs:
        if r.get("status") != "ok" and r.get("error") and (r["setting"], r["error"]) not in seen:
            seen.add((r["setting"], r["error"]))
            out += [f"**{r['setting']}: {r['status']}** ({r['date']}), verbatim:", "", "```", r["error"].strip(), "```", ""]
    return out


def plot(runs: list[dict], out: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    colors = {"a": "tab:blue", "b": "tab:orange"}
    for trace in tr.TRACES:
        firsts = [min(ok_runs(runs, s, trace), key=lambda r: r["repeat"]) for s in SETTINGS if ok_runs(runs, s, trace)]
        if not firsts:
            continue
        fig, axes = plt.subplots(len(firsts), 1, figsize=(10, 2.8 * len(firsts)), sharex=True, squeeze=False)
        for ax, r in zip(axes[:, 0], firsts):
            budget = r["config"]["budget_bytes"] / MIB
            for engine in tr.ENGINES:
                led = [(row["t"], row[engine]["charged_bytes"] / MIB) for row in r["series"]["ledger"] if row.get(engine)]
                if led:
                    ax.plot(*zip(*led), color=colors[engine], label=f"{engine}: backed KV (ledger)")
                held = [(row["t"], metrics.peer_held_bytes(row[engine]) / MIB)
                        for row in r["series"].get("peer", ()) if row.get(engine)]
                if held:
                    ax.plot(*zip(*held), color=colors[engine], label=f"{engine}: KV held (kvcached's accounting)")
                cap = r["engines"][engine].get("kv_capacity_bytes")
                use = [(row["t"], row[engine].get("kv_cache_usage_perc", 0) * cap / MIB)
                       for row in r["series"]["metrics"] if row.get(engine)] if cap else []
                if use:
                    ax.plot(*zip(*use), color=colors[engine], linestyle=":", label=f"{engine}: KV in use (engine)")
                arrivals = [q["t"] for q in r["requests"][engine]]
                ax.plot(arrivals, [-budget * 0.04 * (1 + (engine == "b"))] * len(arrivals), "|", color=colors[engine], ms=4)
            ax.axhline(budget, color="red", lw=1, label=f"budget {budget:.0f} MiB")
            if r["setting"] == "static":
                ax.axhline(budget / 2, color="black", ls="--", lw=1, label="static half")
            ax.set_title(f"{trace}: {r['setting']} (repeat {r['repeat']})", fontsize=9)
            ax.set_ylabel("MiB")
            ax.legend(fontsize=7, loc="upper right")
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("seconds since the trace started (ticks below 0: arrivals)")
        fig.tight_layout()
        path = os.path.join(out, f"sharing-{trace}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(os.path.basename(path))
    return made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    out = args.out or args.results
    os.makedirs(out, exist_ok=True)
    runs = load(args.results)
    if not runs:
        print(f"summarize: no run JSON in {args.results}", file=sys.stderr)
        return 1
    pngs = plot(runs, out)
    dates = sorted(r["date"] for r in runs)
    cfg = runs[0]["config"]
    md = ["## Sharing benchmark results", "",
          f"{len(runs)} runs, {dates[0]} to {dates[-1]}; budget {cfg['budget_bytes'] / MIB:.0f} MiB of KV for both "
          f"engines (static: {cfg['static_kv_bytes'] / MIB:.0f} MiB each); engine `{cfg['engine_cmd']}`; "
          f"trace shape {json.dumps(cfg['trace_shape'])}. Cells: median [min-max] over repeats.", "",
          *versions(runs), *machines(runs), *table(runs), "", "### Memory beside a queue", "",
          "Did memory follow the load: while one engine had requests waiting, how long the other held KV "
          "memory (an eighth of the budget or more) that its requests did not use (cached blocks count as "
          "unused, as vLLM counts them); medians [min-max] over repeats.", "", *beside_idle(runs),
          "", "### Targets", "", *targets(runs), "", *errors(runs)]
    md += [f"![{p}]({p})" for p in pngs] or ["(no plots: matplotlib is not importable here)"]
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
