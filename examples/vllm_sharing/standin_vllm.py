"""The stand-in engine's second core (STANDIN_CORE=vllm): vLLM's own Scheduler, on the CPU.

standin_engine.py's default core is a scheduler written for the stand-in, with its own sharing
logic. This one runs vLLM's real Scheduler (AsyncScheduler with STANDIN_ASYNC=1, as `vllm serve`
runs by default) and, under the shim, the real engine hook: KV tensors made by vLLM's own
init_kv_cache as lazy shim regions (the fake CUDA driver: device memory is host memory), the
scheduler-side adapter, its sharing policy and its step reports, exactly as in a vLLM process. Only
the model is simulated: every step takes STANDIN_STEP_MS plus STANDIN_TOKEN_US per scheduled token
and samples one token per request whose prefill is complete. So the sharing benchmark's traces can
be replayed here against the policy that will run on the GPU, and its dynamics (who waits, who
preempts, how fast pages move) measured before any device time is spent.

Needs vLLM (0.24-0.26) with torch and transformers importable, and the repository's tests/python
helpers (vLLM's config and worker-cache plumbing on a CPU).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "python"))


class VllmCore:
    """What standin_engine's HTTP side needs of an engine (submit, abort, loop, report, gauges),
    over vLLM's real Scheduler."""

    def __init__(self, model_dir: str, kv_bytes: int, block_size: int, max_seqs: int, max_tokens_per_step: int,
                 api, geometry: tuple[int, int, int]):
        import torch
        import vllm_support as V
        from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
        from vllm.v1.core import kv_cache_utils
        from vllm.v1.kv_cache_interface import FullAttentionSpec

        self.V, self.api = V, api
        V.BLOCK = block_size  # vllm_support's helpers read it when called
        self.async_sched = os.environ.get("STANDIN_ASYNC", "0") not in ("", "0")
        self.step_s = float(os.environ.get("STANDIN_STEP_MS", "10")) / 1000
        self.token_s = float(os.environ.get("STANDIN_TOKEN_US", "0")) / 1e6
        layers, kv_heads, head_dim = geometry
        model = ModelConfig(model=model_dir, skip_tokenizer_init=True, dtype="float16", max_model_len=4096)
        extra = {"is_encoder_decoder": False} if "is_encoder_decoder" in getattr(SchedulerConfig, "__dataclass_fields__", {}) else {}
        sched = SchedulerConfig(max_num_seqs=max_seqs, max_num_batched_tokens=max_tokens_per_step, max_model_len=4096,
                                enable_chunked_prefill=True, async_scheduling=self.async_sched, **extra)
        cache = CacheConfig(block_size=block_size, enable_prefix_caching=True)
        specs = {f"model.layers.{i}.self_attn.attn": FullAttentionSpec(
            block_size=block_size, num_kv_heads=kv_heads, head_size=head_dim, dtype=torch.bfloat16) for i in range(layers)}
        per_block = sum(spec.page_size_bytes for spec in specs.values())
        num_blocks = max(2, kv_bytes // per_block)
        cache.num_gpu_blocks_override = num_blocks
        config = VllmConfig(model_config=model, scheduler_config=sched, cache_config=cache, device_config=DeviceConfig("cpu"))
        config.scheduler_config.disable_hybrid_kv_cache_manager = False  # what GPUs run
        # vLLM checks that one full-length request fits; the override then sets the block count.
        available = per_block * (max(num_blocks, 4096 // block_size) + 8)
        kv_config = kv_cache_utils.get_kv_cache_configs(config, [specs], [available])[0]
        if api is not None:
            self._patch_and_allocate(config, kv_config)
        self.scheduler = V.make_scheduler(config, kv_config)
        self.adapter = self.scheduler.kv_cache_manager.block_pool.__dict__.get("_kvcached")
        if api is not None and self.adapter is None:
            raise SystemExit("standin: the engine hook did not take vLLM's block pool (see the log above)")
        self.num_blocks = kv_config.num_blocks
        self.requests: dict[str, object] = {}  # request id -> the HTTP side's Request
        self.pending: list = []  # scheduled batches whose "model" has not finished (async: up to 2)
        self.steps = self.preemptions = 0
        self.next_id = 0
        print(f"standin: GPU KV cache size: {(self.num_blocks - 1) * block_size:,} tokens "
              f"({self.num_blocks} blocks, {layers} layers, vLLM {'AsyncScheduler' if self.async_sched else 'Scheduler'}, "
              f"{'shim regions and the engine hook' if api else 'static'})", flush=True)

    def _patch_and_allocate(self, config, kv_config) -> None:
        """The hook as in a vLLM process (vLLM patched, the cache's tensors lazy shim regions); on a
        CPU the allocation goes through the C API instead of the shim's CUDA memory pool."""
        import real_shim_support as R
        import torch
        from kvcached_hook.engines import vllm as A
        from kvcached_hook.engines.vllm import worker

        worker.overrides.update(api=self.api, require_cuda=False, use_pool=False)
        if not A.patch():
            raise SystemExit(f"standin: the vLLM hook patched nothing: {A.PATCHES.reason}")
        zeros = R.lazy_allocator(self.api, torch.zeros, [])
        with mock.patch.object(torch, "zeros", zeros):
            self.V.build_worker_cache(config, kv_config)

    # ---- the HTTP side's interface

    def submit(self, req) -> None:
        self.next_id += 1
        rid = f"r{self.next_id}"
        req.vllm_id = rid
        self.requests[rid] = req
        self.scheduler.add_request(self.V.make_request(rid, req.prompt_ids(), req.max_tokens))

    def abort(self, req) -> None:
        from vllm.v1.request import RequestStatus

        rid = getattr(req, "vllm_id", None)
        if rid in self.requests:
            del self.requests[rid]
            self.scheduler.finish_requests(rid, RequestStatus.FINISHED_ABORTED)

    def gauges(self) -> dict:
        manager = self.scheduler.kv_cache_manager
        return {"usage": manager.usage, "running": len(self.scheduler.running), "waiting": len(self.scheduler.waiting),
                "steps": self.steps, "c_calls": self.adapter.tracker.acquire_calls if self.adapter else 0,
                "preemptions": self.preemptions, "extra": self.adapter.snapshot() if self.adapter else {}}

    def report(self, final: bool = False) -> None:
        """The hook reports its own step totals (and flushes them when the scheduler shuts down)."""
        if final:
            self.scheduler.shutdown()

    # ---- the engine loop: schedule, "run the model", update_from_output

    def _deliver(self, outputs) -> None:
        for engine_outputs in outputs.values():
            for out in engine_outputs.outputs:
                req = self.requests.get(out.request_id)
                if req is None:
                    continue
                req.generated += len(out.new_token_ids)
                req.queue.put_nowait(("token", req.generated))
                if out.finish_reason is not None:
                    del self.requests[out.request_id]
                    req.queue.put_nowait(("done", None))

    def step(self) -> float:
        """One engine step; returns the simulated model time of the batch it launched."""
        self.steps += 1
        out, results = self.V.advance(self.scheduler, self.pending, 2 if self.async_sched else 1)
        for outputs in results:
            self._deliver(outputs)
        if out is None:
            return 0.0
        self.preemptions += len(out.preempted_req_ids or ())
        tokens = out.total_num_scheduled_tokens
        return self.step_s + self.token_s * tokens if tokens > 0 else 0.0

    async def loop(self) -> None:
        while True:
            t0 = time.monotonic()
            try:
                model_s = self.step()
            except Exception:  # noqa: BLE001 - a broken stand-in must fail loudly, not hang its clients
                import traceback

                traceback.print_exc()
                os._exit(70)
            # An idle engine polls like vLLM's busy loop does, without spinning a core.
            wait = model_s if model_s else self.step_s
            await asyncio.sleep(max(0.0, t0 + wait - time.monotonic()))
