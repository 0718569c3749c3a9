"""Helpers for the vLLM adapter tests: vLLM's real Scheduler, KV cache configs from vLLM's own
functions, the worker's real allocation function on CPU tensors, and a fake model runner.

Everything runs on the CPU with the fake C API (fake_capi.py); no GPU, no model weights (a tiny
model config written to a temporary folder is all vLLM's config classes need).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from unittest import mock

from fake_capi import FakeCApi, SharedBudget  # noqa: F401 - re-exported for the tests

try:
    import torch
    import vllm
    from transformers import LlamaConfig
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import sha256
    from vllm.v1.core import kv_cache_utils
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, MLAAttentionSpec, SlidingWindowSpec
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request
    from vllm.v1.structured_output import StructuredOutputManager
    from vllm.v1.worker.gpu import attn_utils

    HAVE_VLLM = True
    SKIP_REASON = ""
except Exception as _error:  # noqa: BLE001
    HAVE_VLLM = False
    SKIP_REASON = f"vLLM (with torch and transformers) not importable: {_error}"

BLOCK = 16
EXPECTED_VERSION = os.environ.get("KVCACHED_TEST_VLLM_VERSION", "")
_model_dir = None


def model_dir() -> str:
    global _model_dir
    if _model_dir is None:
        _model_dir = tempfile.mkdtemp(prefix="kvcached-vllm-model-")
        LlamaConfig(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        ).save_pretrained(_model_dir)
    return _model_dir


def make_vllm_config(num_blocks: int, *, prefix_caching: bool = True, async_scheduling: bool = False,
                     max_num_seqs: int = 8, max_tokens_per_step: int = 256) -> "VllmConfig":
    model = ModelConfig(model=model_dir(), skip_tokenizer_init=True, dtype="float16", max_model_len=512)
    extra = {"is_encoder_decoder": False} if "is_encoder_decoder" in getattr(SchedulerConfig, "__dataclass_fields__", {}) else {}
    sched = SchedulerConfig(
        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_tokens_per_step, max_model_len=512,
        enable_chunked_prefill=True, async_scheduling=async_scheduling, **extra,
    )
    cache = CacheConfig(block_size=BLOCK, enable_prefix_caching=prefix_caching)
    cache.num_gpu_blocks_override = num_blocks
    config = VllmConfig(model_config=model, scheduler_config=sched, cache_config=cache, device_config=DeviceConfig("cpu"))
    # The hybrid manager (one block pool for full and sliding-window groups) is what GPUs run;
    # vLLM's CPU platform switches it off.
    config.scheduler_config.disable_hybrid_kv_cache_manager = False
    return config


def kv_specs(kind: str) -> dict:
    """Per-layer KV specs of three model shapes."""
    half = torch.float16
    if kind == "uniform":
        return {f"layers.{i}.attn": FullAttentionSpec(block_size=BLOCK, num_kv_heads=2, head_size=16, dtype=half)
                for i in range(2)}
    if kind == "hybrid":  # sliding-window and full attention layers: two KV cache groups
        specs = {f"layers.{i}.attn": FullAttentionSpec(block_size=BLOCK, num_kv_heads=2, head_size=16, dtype=half)
                 for i in (0, 2)}
        specs.update({f"layers.{i}.attn": SlidingWindowSpec(block_size=BLOCK, num_kv_heads=2, head_size=16,
                                                             dtype=half, sliding_window=48) for i in (1, 3)})
        return specs
    if kind == "big":  # 64 KiB blocks: 32 per 2 MiB shim page
        return {f"layers.{i}.attn": FullAttentionSpec(block_size=BLOCK, num_kv_heads=8, head_size=128, dtype=half)
                for i in range(2)}
    if kind == "mla":
        return {f"layers.{i}.attn": MLAAttentionSpec(block_size=BLOCK, num_kv_heads=1, head_size=24, dtype=half)
                for i in range(2)}
    raise ValueError(kind)


def kv_cache_config(vllm_config, kind: str):
    """vLLM's own sizing: get_kv_cache_configs over the specs (num_gpu_blocks_override sets the size)."""
    specs = kv_specs(kind)
    per_block = sum(spec.page_size_bytes for spec in specs.values())
    blocks = vllm_config.cache_config.num_gpu_blocks_override
    # Memory for a full-length request (vLLM checks it); the override then sets the block count.
    available = per_block * (max(blocks, vllm_config.model_config.max_model_len // BLOCK) + 8)
    configs = kv_cache_utils.get_kv_cache_configs(vllm_config, [specs], [available])
    return configs[0]


def blocks_first_views(raw: dict, config) -> dict:
    """What a CUDA attention backend's reshape gives: block dimension outermost."""
    return {name: tensor.view(config.num_blocks, -1) for name, tensor in raw.items()}


def kv_first_views(raw: dict, config) -> dict:
    """A K/V-first layout (as on ROCm): block b is not one byte range."""
    return {name: tensor.view(2, config.num_blocks, -1) for name, tensor in raw.items()}


def build_worker_cache(vllm_config, config, reshape=blocks_first_views):
    """Runs vLLM's real V2 init_kv_cache (and so its real _allocate_kv_cache) on CPU, with the
    attention-specific reshape and binding replaced (they need GPU attention backends)."""
    made = {}

    def fake_reshape(*, kv_cache_raw_tensors, kv_cache_config, **_):
        made.update(reshape(kv_cache_raw_tensors, kv_cache_config))
        return dict(made)

    with mock.patch.object(attn_utils, "_reshape_kv_cache", fake_reshape), \
            mock.patch.object(attn_utils, "bind_kv_cache", lambda *a, **k: None):
        runner_kv_caches = []
        attn_utils.init_kv_cache(runner_kv_caches, {}, config, [], torch.device("cpu"), "auto", [BLOCK], vllm_config)
    return made


def build_v1_worker_cache(vllm_config, config, reshape=blocks_first_views):
    """The V1 model runner's real initialize_kv_cache_tensors (and so its real
    _allocate_kv_cache_tensors) on a runner object holding only what those two read; the backend
    reshape and the binding are replaced as above."""
    from types import SimpleNamespace

    from vllm.v1.worker import gpu_model_runner as gmr

    runner = object.__new__(gmr.GPUModelRunner)
    runner.__dict__.update(
        vllm_config=vllm_config, device=torch.device("cpu"), cache_config=vllm_config.cache_config,
        model_config=vllm_config.model_config, attn_groups=[], runner_only_attn_layers=set(),
        shared_kv_cache_layers={}, kv_caches=[], compilation_config=SimpleNamespace(static_forward_context={}),
        use_uniform_kv_cache=lambda *a, **k: False,
        _reshape_kv_cache_tensors=lambda raw, *_a, **_k: reshape(raw, config),
    )
    with mock.patch.object(gmr, "bind_kv_cache", lambda *a, **k: None):
        return gmr.GPUModelRunner.initialize_kv_cache_tensors(runner, config, [BLOCK])


class _CrossLayerBackend:
    """What vLLM's KV-connector allocation (allocate_uniform_kv_caches) asks of an attention
    backend: its per-layer KV shape, and the order of the cross-layer buffer's dimensions."""

    blocks_first = True

    @staticmethod
    def get_kv_cache_shape(num_blocks, block_size, num_kv_heads, head_size, cache_dtype_str="auto"):
        return (num_blocks, 2, block_size, num_kv_heads, head_size)

    @classmethod
    def get_kv_cache_stride_order(cls, include_num_layers_dimension=False):
        if not cls.blocks_first:
            raise NotImplementedError  # vLLM then keeps the layers dimension outermost
        return (1, 0, 2, 3, 4, 5)  # the blocks dimension outermost: a block is one byte range


def build_v1_connector_cache(vllm_config, config, blocks_first=True):
    """The V1 model runner's real initialize_kv_cache_tensors taking its KV-connector branch: vLLM's
    real allocate_uniform_kv_caches makes one buffer for all layers (blocks outermost, or layers
    outermost when the backend gives no order) and per-layer views of it."""
    from types import SimpleNamespace

    from vllm.v1.worker import gpu_model_runner as gmr

    backend = type("Backend", (_CrossLayerBackend,), {"blocks_first": blocks_first})
    group = SimpleNamespace(kv_cache_spec=config.kv_cache_groups[0].kv_cache_spec, backend=backend)
    runner = object.__new__(gmr.GPUModelRunner)
    runner.__dict__.update(
        vllm_config=vllm_config, device=torch.device("cpu"), cache_config=vllm_config.cache_config,
        model_config=vllm_config.model_config, attn_groups=[[group]], runner_only_attn_layers=set(),
        shared_kv_cache_layers={}, kv_caches=[], compilation_config=SimpleNamespace(static_forward_context={}),
        use_uniform_kv_cache=lambda *a, **k: True,
    )
    with mock.patch.object(gmr, "bind_kv_cache", lambda *a, **k: None):
        return gmr.GPUModelRunner.initialize_kv_cache_tensors(runner, config, [BLOCK])


def make_scheduler(vllm_config, config):
    cls = AsyncScheduler if vllm_config.scheduler_config.async_scheduling else Scheduler
    vllm_config.cache_config.num_gpu_blocks = config.num_blocks  # as EngineCore sets it
    return cls(vllm_config=vllm_config, kv_cache_config=config,
               structured_output_manager=StructuredOutputManager(vllm_config), block_size=BLOCK, log_stats=False)


_hash_ready = False


def make_request(request_id: str, prompt: list[int], max_tokens: int, stop=None) -> "Request":
    global _hash_ready
    if not _hash_ready:
        kv_cache_utils.init_none_hash(sha256)
        _hash_ready = True
    hasher = kv_cache_utils.get_request_block_hasher(BLOCK, sha256)
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, stop_token_ids=stop or [])
    return Request(request_id=request_id, prompt_token_ids=prompt, sampling_params=params,
                   pooling_params=None, block_hasher=hasher)


def fake_output(scheduler, scheduler_output, token_of=lambda request: 7) -> "ModelRunnerOutput":
    """What a model runner answers: one sampled token per request whose prefill is complete."""
    req_ids = list(scheduler_output.num_scheduled_tokens)
    sampled = []
    for rid in req_ids:
        request = scheduler.requests.get(rid)
        chunk = request is not None and getattr(request, "is_prefill_chunk", request.num_computed_tokens < request.num_tokens)
        sampled.append([] if chunk else [token_of(request)])
    return ModelRunnerOutput(req_ids=req_ids, req_id_to_index={r: i for i, r in enumerate(req_ids)},
                             sampled_token_ids=sampled)


def advance(scheduler, pending: list, in_flight: int = 1, check=None, token_of=lambda request: 7):
    """One turn of vLLM's EngineCore loop: schedule (when fewer than `in_flight` batches are
    outstanding in `pending`; 2 = asynchronous scheduling), then update_from_output for the oldest
    outstanding batch, answered by the fake model runner. check(stage, output) after each call.
    Returns (what schedule() returned, or None when it was not called; the values
    update_from_output returned)."""
    out = None
    results = []
    scheduled = False
    if len(pending) < in_flight and scheduler.has_requests():
        out = scheduler.schedule()
        if check:
            check("scheduled", out)
        if out.total_num_scheduled_tokens > 0:
            pending.append((out, fake_output(scheduler, out, token_of)))
            scheduled = True
        elif not pending:
            results.append(scheduler.update_from_output(out, ModelRunnerOutput(req_ids=[], req_id_to_index={})))
    if pending and (len(pending) >= in_flight or not scheduled):
        done, result = pending.pop(0)
        if check:
            check("processing", done)
        results.append(scheduler.update_from_output(done, result))
        if check:
            check("processed", done)
    return out, results


def run_loop(scheduler, *, max_steps: int = 2000, in_flight: int = 1, check=None, token_of=lambda request: 7):
    """Drives the scheduler like vLLM's EngineCore (advance) until every request is done. Returns
    the number of turns."""
    pending = []
    steps = 0
    while (scheduler.has_requests() or pending) and steps < max_steps:
        steps += 1
        advance(scheduler, pending, in_flight, check, token_of)
    return steps


@contextlib.contextmanager
def env(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
