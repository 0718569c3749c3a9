"""The three request traces of the sharing benchmark, the same on every run (fixed seeds).

Each trace is, per engine ("a", "b"), a list of requests {t, prompt_len, max_tokens} with Poisson
arrivals: `hi` requests/s while an engine is busy, `lo` while it is quiet.

- a_then_b:    a busy for the first half, b quiet; then the reverse (b arrives while a holds memory)
- symmetric:   both busy the whole time (symmetric overload)
- alternating: bursts of `burst_s` seconds, a first, then b, then a, ... (the other quiet)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TRACES = ("a_then_b", "symmetric", "alternating")
ENGINES = ("a", "b")


@dataclass(frozen=True)
class TraceShape:
    duration_s: float = 40.0  # arrivals happen in [0, duration_s)
    hi: float = 24.0  # requests/s of a busy engine
    lo: float = 1.0  # requests/s of a quiet engine
    prompt: tuple[int, int] = (256, 1024)  # prompt tokens, uniform
    output: tuple[int, int] = (128, 384)  # tokens to generate, uniform
    burst_s: float = 5.0  # alternating: length of one burst


def busy(trace: str, engine: str, t: float, shape: TraceShape) -> bool:
    """Whether `engine` is in a busy phase at time t of `trace`."""
    if trace == "symmetric":
        return True
    if trace == "a_then_b":
        return (t < shape.duration_s / 2) == (engine == "a")
    if trace == "alternating":
        return (int(t // shape.burst_s) % 2 == 0) == (engine == "a")
    raise ValueError(f"unknown trace {trace!r}; known: {', '.join(TRACES)}")


def make(trace: str, shape: TraceShape, seed: int = 11) -> dict[str, list[dict]]:
    """Requests per engine; thinning of a Poisson process at rate `hi` gives the piecewise rates."""
    out: dict[str, list[dict]] = {}
    for engine in ENGINES:
        rng = random.Random(f"{seed}-{trace}-{engine}")
        t, reqs = 0.0, []
        while True:
            t += rng.expovariate(shape.hi)
            if t >= shape.duration_s:
                break
            keep = busy(trace, engine, t, shape) or rng.random() < shape.lo / shape.hi
            prompt_len = rng.randint(*shape.prompt)
            max_tokens = rng.randint(*shape.output)
            if keep:
                reqs.append({"t": round(t, 4), "prompt_len": prompt_len, "max_tokens": max_tokens, "seed": rng.randrange(1 << 30)})
        out[engine] = reqs
    return out


def prompt_ids(request: dict, vocab: int = 32000) -> list[int]:
    """Token ids of a request's prompt (the models have no tokenizer); distinct per request so
    that prefix caching finds nothing to share."""
    rng = random.Random(request["seed"])
    return [1] + [rng.randrange(100, vocab - 100) for _ in range(request["prompt_len"] - 1)]
