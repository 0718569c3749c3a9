"""A fake vLLM (see README.md next to this package): LLM and SamplingParams for offline runs."""

from __future__ import annotations

import os
import sys
import time

from . import _standin

__version__ = "0.0.0+fake"
VOCAB = 32000


class SamplingParams:
    def __init__(self, temperature: float = 1.0, max_tokens: int = 16, ignore_eos: bool = False,
                 detokenize: bool = True, **_ignored) -> None:
        self.temperature, self.max_tokens, self.ignore_eos, self.detokenize = temperature, max_tokens, ignore_eos, detokenize


class _Completion:
    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids = token_ids


class RequestOutput:
    def __init__(self, prompt_token_ids: list[int], token_ids: list[int]) -> None:
        self.prompt_token_ids = prompt_token_ids
        self.outputs = [_Completion(token_ids)]


def _tokens(prompt: list[int], n: int) -> list[int]:
    """What a greedy run would answer, made from the prompt alone: equal for equal prompts."""
    seed = len(prompt)
    for t in prompt:
        seed = (seed * 1000003 + t) % (1 << 61)
    return [(seed + j * 104729) % (VOCAB - 200) + 100 for j in range(n)]


class LLM:
    def __init__(self, model: str, gpu_memory_utilization: float = 0.9, max_num_seqs: int = 256,
                 max_model_len: int = 4096, **_ignored) -> None:
        self.engine = _standin.standin_engine.make_engine(
            model, _standin.kv_bytes(gpu_memory_utilization), 16, max_num_seqs, os.path.basename(model))
        self.max_model_len = max_model_len

    def generate(self, prompts, params: SamplingParams, use_tqdm: bool = False) -> list[RequestOutput]:
        """Runs the stand-in engine over all prompts at once (steps back to back), then answers
        each prompt with ids derived from it."""
        engine = self.engine
        ids = [list(p["prompt_token_ids"]) for p in prompts]
        reqs = [_standin.standin_engine.Request(i + 1, len(p), params.max_tokens, p) for i, p in enumerate(ids)]
        for req in reqs:
            engine.submit(req)
        t0, steps0, pre0 = time.time(), engine.steps, engine.preemptions
        while engine.running or engine.waiting:
            engine.step()
            if engine.steps - steps0 > 100 * (params.max_tokens + len(reqs)):
                raise RuntimeError(f"fake vllm: {len(engine.waiting)} requests never admitted (KV cache too small?)")
        engine.report(final=True)
        print(f"fake vllm: {len(reqs)} prompts in {engine.steps - steps0} steps, "
              f"{engine.preemptions - pre0} preemptions, {time.time() - t0:.1f}s", file=sys.stderr, flush=True)
        return [RequestOutput(p, _tokens(p, params.max_tokens)) for p in ids]
