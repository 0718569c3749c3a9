"""The per-engine numbers of one run, from the client's request records and the sampled series.
Times are seconds from the trace start (t0). Pure functions: the summarizer and the tests use them.
"""

from __future__ import annotations

import bisect
import math


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def service(records: list[dict], duration_s: float) -> dict:
    """served/arrived, output tokens/s over the trace's duration (of the served requests, whenever
    they finished), tokens/s under load (every token streamed before the trace's end, over its
    duration: what a long drain cannot even out), TTFT p50/p99 of served requests."""
    served = [r for r in records if r["error"] is None and r["end"] is not None]
    ttfts = [r["ttft"] for r in served if r["ttft"] is not None]
    tokens = sum(r["tokens"] for r in served)
    errors: dict[str, int] = {}
    for r in records:
        if r["error"]:
            key = r["error"][:80]
            errors[key] = errors.get(key, 0) + 1
    return {"arrived": len(records), "served": len(served), "out_tokens": tokens,
            "tok_s": tokens / duration_s if duration_s else None,
            "window_tok_s": (sum(r.get("window_tokens", 0) for r in records) / duration_s
                             if duration_s and all("window_tokens" in r for r in records) else None),
            "ttft_p50": pct(ttfts, 50), "ttft_p99": pct(ttfts, 99), "errors": errors}


def handovers(ledger: list[dict], engine: str, page_bytes: int) -> list[dict]:
    """Starvation episodes of `engine` and how long each took to be handed memory.

    An episode starts at the first sample with the ledger's `starved` flag set (the engine was
    refused below its fair share; sampling error up to one period) - or, with no such field, with a
    rise of `budget_refusals` while below the fair share. It ends at the first sample where the
    engine's charged bytes reach its fair share less one page ("share"); or, when the flag clears
    first, at the first sample after the last one in which the engine was still refused (its
    `budget_refusals` rose): by then what it asked for was backed ("served": its demand was met
    below its share, or it stopped asking). The flag itself stays set for a while after the last
    refusal (the ledger's freshness window, 1 s), so its clearing is not when the engine was served.
    """
    out: list[dict] = []
    start = None
    served_at = None  # the first sample after the latest refusal of the episode
    prev_refusals = None
    for row in ledger:
        e = row.get(engine)
        if not e:
            continue
        charged, fair = e.get("charged_bytes", 0), e.get("fair_share_bytes", 0)
        refusals = e.get("budget_refusals", 0)
        rose = prev_refusals is not None and refusals > prev_refusals
        if "starved" in e:
            starved = e["starved"]
        else:
            starved = rose and charged + page_bytes < fair
        prev_refusals = refusals
        if start is None:
            if starved:
                start, served_at = row["t"], None
            continue
        if rose:
            served_at = None
        elif served_at is None:
            served_at = row["t"]
        if fair and charged + page_bytes >= fair:
            out.append({"start": start, "end": row["t"], "seconds": round(row["t"] - start, 3), "ended_by": "share"})
            start = None
        elif not starved and "starved" in e:
            end = served_at if served_at is not None else row["t"]
            out.append({"start": start, "end": end, "seconds": round(end - start, 3), "ended_by": "served"})
            start = None
    if start is not None:
        out.append({"start": start, "end": None, "seconds": None, "ended_by": "still_starved_at_end"})
    return out


def at_or_after(series: list[dict], t: float) -> dict | None:
    return next((row for row in series if row["t"] >= t), None)


def peer_held_bytes(row: dict) -> int:
    """What kvcached's accounting says one engine holds: its pages in use and reserved."""
    return row["used_bytes"] + row["prealloc_bytes"]


def memory(ledger: list[dict], metrics_rows: list[dict], smi: list[dict], engine: str, traffic_stop: float,
           idle_after_s: float, kv_capacity: int | None, static_kv: int | None, peer: list[dict] | None = None) -> dict:
    """Peak and idle KV memory of one engine, with the source of each number:
    ledger (backed pages, shim), kvcached's own accounting (its pages in use and reserved),
    nvidia-smi (all GPU memory of the engine's processes) or the static allocation; plus the
    engine's own view (kv_cache_usage_perc x its KV capacity)."""
    out: dict = {"idle_at_s": round(traffic_stop + idle_after_s, 3)}
    rows = [r[engine] for r in ledger if r.get(engine)]
    peer_rows = [r for r in peer or () if r.get(engine)]
    if peer_rows and not rows:
        out["source"] = "kvcached's accounting (pages in use + reserved)"
        held = [peer_held_bytes(r[engine]) for r in peer_rows]
        out["peak_kv_bytes"] = max(held)
        out["peak_in_use_bytes"] = max(r[engine]["used_bytes"] for r in peer_rows)
        idle = at_or_after(peer_rows, traffic_stop + idle_after_s)
        out["idle_kv_bytes"] = peer_held_bytes(idle[engine]) if idle else None
        out["idle_in_use_bytes"] = idle[engine]["used_bytes"] if idle else None
    elif rows:
        out["source"] = "ledger"
        out["peak_kv_bytes"] = max(r.get("charged_bytes", 0) for r in rows)
        idle = at_or_after([r for r in ledger if r.get(engine)], traffic_stop + idle_after_s)
        out["idle_kv_bytes"] = idle[engine].get("charged_bytes") if idle else None
        out["idle_in_use_bytes"] = idle[engine].get("in_use_bytes") if idle else None
    elif static_kv is not None:
        out["source"] = "static allocation"
        out["peak_kv_bytes"] = out["idle_kv_bytes"] = static_kv
    smi_rows = [r for r in smi if engine in r]
    if smi_rows:
        out["gpu_peak_bytes"] = max(r[engine] for r in smi_rows)
        idle = at_or_after(smi_rows, traffic_stop + idle_after_s)
        out["gpu_idle_bytes"] = idle[engine] if idle else None
        if "source" not in out:
            out["source"] = "nvidia-smi (whole process: weights, activations and KV)"
            out["peak_kv_bytes"], out["idle_kv_bytes"] = out["gpu_peak_bytes"], out["gpu_idle_bytes"]
    usage = [r[engine].get("kv_cache_usage_perc") for r in metrics_rows if r.get(engine)]
    usage = [u for u in usage if u is not None]
    if usage:
        out["engine_usage_peak"] = max(usage)
        if kv_capacity:
            out["engine_used_peak_bytes"] = int(max(usage) * kv_capacity)
    return out


def latest_of(series, engine: str):
    """A function t -> the engine's row in the last sample at or before t (None before the first),
    indexed once (samples are in time order): a bisect a lookup, not a pass over the series."""
    rows = [(row["t"], row[engine]) for row in series if row.get(engine)]
    times = [t for t, _ in rows]

    def at(t: float) -> dict | None:
        i = bisect.bisect_right(times, t)
        return rows[i - 1][1] if i else None
    return at


def held_series(run: dict, engine: str):
    """A function t -> the KV bytes `engine` held at t, by the setting's own account: the ledger's
    charge (shim), kvcached's pages in use + reserved, the static half; None when unknown."""
    series = run.get("series", {})
    if run.get("setting") == "static":
        half = run.get("config", {}).get("static_kv_bytes")
        return lambda t: half
    if series.get("peer"):
        peer_row = latest_of(series["peer"], engine)

        def peer(t):
            row = peer_row(t)
            return peer_held_bytes(row) if row else None
        return peer

    ledger_row = latest_of(series.get("ledger", ()), engine)

    def ledger(t):
        row = ledger_row(t)
        return row.get("charged_bytes") if row else None
    return ledger


def queued_beside_idle(run: dict, idle_bytes: int) -> dict:
    """Whether memory followed the load: over the trace (0 to the last request's end), the seconds
    in which one engine had requests waiting (vLLM's num_requests_waiting) while the other held at
    least `idle_bytes` more KV than its requests used (held: held_series; used: its
    kv_cache_usage_perc x its KV capacity, cached blocks counting as free, as vLLM counts them), and
    the mean of that idle memory over those seconds. Static halves score the idle half whenever
    one engine queues; an elastic setting scores the time its memory stayed where the load was not.
    Sampled at vLLM's metrics (every few hundred ms): each sample stands for the time to the next."""
    engines = list(run.get("engines", {}))
    caps = {e: run["engines"][e].get("kv_capacity_bytes") for e in engines}
    if len(engines) != 2 or not all(caps.values()):
        return {"seconds": None, "idle_mib_mean": None}
    held = {e: held_series(run, e) for e in engines}
    stop = run.get("traffic_stop_s") or 0.0
    rows = [r for r in run.get("series", {}).get("metrics", ()) if 0.0 <= r["t"] <= stop]
    seconds = idle_sum = 0.0
    for row, nxt in zip(rows, rows[1:]):
        dt = nxt["t"] - row["t"]
        for x, y in (engines, engines[::-1]):
            if not row.get(x) or not row.get(y) or not row[x].get("num_requests_waiting"):
                continue
            have = held[y](row["t"])
            if have is None:
                continue
            idle = have - row[y].get("kv_cache_usage_perc", 0.0) * caps[y]
            if idle >= idle_bytes:
                seconds += dt
                idle_sum += idle * dt
                break
    return {"seconds": round(seconds, 2), "idle_mib_mean": round(idle_sum / seconds / (1 << 20), 1) if seconds else None}


def policy(ledger: list[dict], engine: str) -> dict | str:
    """What the sharing policy made `engine` give over the run, from the ledger's share counters:
    requests it preempted and bytes of pages it emptied for a starved engine; "n/a" when kvctl does
    not show them."""
    key = "share_preempted_requests"
    rows = [r[engine] for r in ledger if r.get(engine) and key in r[engine] and "share_given_bytes" in r[engine]]
    if len(rows) < 2:
        return "n/a"
    return {"preempted": rows[-1][key] - rows[0][key],
            "given_bytes": rows[-1]["share_given_bytes"] - rows[0]["share_given_bytes"]}


def per_step(ledger: list[dict], engine: str) -> dict | str:
    """Hook time and C calls per engine step over the run, from the ledger's per-step counters;
    "n/a" when kvctl does not show them."""
    rows = [r[engine] for r in ledger if r.get(engine) and "engine_steps" in r[engine]]
    if len(rows) < 2:
        return "n/a"
    steps = rows[-1]["engine_steps"] - rows[0]["engine_steps"]
    if steps <= 0:
        return "n/a"
    out = {"steps": steps}
    if "engine_hook_ns" in rows[-1] and "engine_hook_ns" in rows[0]:
        out["hook_us_per_step"] = (rows[-1]["engine_hook_ns"] - rows[0]["engine_hook_ns"]) / steps / 1000
    if "engine_hook_c_calls" in rows[-1] and "engine_hook_c_calls" in rows[0]:
        out["c_calls_per_step"] = (rows[-1]["engine_hook_c_calls"] - rows[0]["engine_hook_c_calls"]) / steps
    return out
