"""Worker side: vLLM's KV tensors become lazy shim regions, and nothing else does.

vLLM allocates its KV cache with one torch.zeros(int8) per KVCacheTensor inside
`_allocate_kv_cache` (V2 model runner), `GPUModelRunner._allocate_kv_cache_tensors` (V1) or
`allocate_uniform_kv_caches` (V1 with a KV connector), called from `init_kv_cache` /
`initialize_kv_cache_tensors`, which also build block tables and workspaces. The adapter:

1. marks the outer call (it knows the VllmConfig: one GPU? sleep mode?), so that
2. only the inner allocation runs inside a torch.cuda.MemPool on the shim's pluggable allocator;
3. backs the null block (block 0, vLLM's padding, written by warm-up and graph capture) at once;
4. after the outer call made the attention views, checks that every view is blocks first
   (layout_check.py); if anything does not match, backs the whole cache and says so once;
5. publishes the cache (registry.py) for the scheduler's BlockPool in this process.
"""

from __future__ import annotations

import inspect
import logging
import threading

from ... import capi as C
from ..._env import HookSettings
from ..._log import important, logger
from ...cache_context import CacheContext, default_overrides
from ...pages import KVLayout, TensorSpan
from . import registry, tp
from .layout_check import iter_views, view_problem

ENGINE = "vllm"

# Test seams (tests/python): a fake C API, CPU tensors, no MemPool.
overrides = default_overrides()

_local = threading.local()  # .context: the outer call in progress on this thread
_said: set[str] = set()


def say_once(key: str, text: str, level: int = logging.WARNING) -> None:
    if key not in _said:
        _said.add(key)
        important(f"{ENGINE}: {text}", level)


class VllmContext(CacheContext):
    """One KV cache build: the shared checks (cache_context.py), and what the allocation wrapper
    needs and what it produced."""

    engine = ENGINE
    overrides = overrides

    def __init__(self, api, settings, device, device_index: int) -> None:
        super().__init__(api, settings, device, device_index)
        self.vllm_config = None
        self.pool = None
        self.entry: registry.WorkerCache | None = None

    @classmethod
    def pool_unavailable(cls, reason: str) -> None:
        say_once("pool", f"KV cache not elastic: {reason}")


def refusal_reason(vllm_config) -> str | None:
    """Why this worker's KV cache must stay vLLM's own (None: manage it)."""
    model_config = getattr(vllm_config, "model_config", None)
    if getattr(model_config, "enable_sleep_mode", False):
        return "vLLM's sleep mode (cumem allocator) manages the KV memory itself"
    parallel = getattr(vllm_config, "parallel_config", None)
    world = getattr(parallel, "world_size", 1)
    backend = getattr(parallel, "distributed_executor_backend", None)
    if world > 1 and tp.enabled() and backend == "mp" and getattr(parallel, "pipeline_parallel_size", 1) == 1:
        return None  # tensor parallel, experimental (tp.py)
    if world != 1 or backend not in (None, "uni"):
        # Workers in other processes than the scheduler: not elastic yet (see docs/vllm.md).
        return f"the workers run apart from the scheduler (world size {world}, executor {backend!r})"
    return None


def _open_context(vllm_config, device) -> VllmContext | None:
    if not HookSettings().enabled:
        return None
    # vLLM's own reasons come first: they are said even where the shim is not loaded.
    reason = refusal_reason(vllm_config)
    if reason is not None:
        say_once("refused:" + reason, f"KV cache not elastic: {reason}; vLLM runs unchanged")
        return None
    ctx = VllmContext.create(device)
    if ctx is not None:
        ctx.vllm_config = vllm_config
    return ctx


def _pool(ctx: VllmContext, device):
    """The KV allocation inside the shim's pool (made at the first allocation of this build)."""
    if ctx.pool is None:
        ctx.pool = ctx.make_pool()
    return ctx.use_pool(ctx.pool, device)


# ---------------------------------------------------------------------------------------------
# The outer calls: open a context, then check the views and publish


def wrap_outer(config_of, device_of, views_of):
    """Wrapper factory for init_kv_cache (V2) / initialize_kv_cache_tensors (V1).

    config_of(bound arguments) -> VllmConfig; device_of(bound arguments) -> device;
    views_of(result, bound arguments) -> the kv_caches dict (layer name -> views)."""

    def factory(orig):
        signature = inspect.signature(orig)

        def outer(*args, **kwargs):
            if getattr(_local, "context", None) is not None:
                return orig(*args, **kwargs)  # nested: the outer one decides
            try:
                bound = signature.bind(*args, **kwargs)
                ctx = _open_context(config_of(bound.arguments), device_of(bound.arguments))
            except Exception as error:  # noqa: BLE001 - the engine must start, elastic or not
                say_once("ctx", f"KV cache not elastic: reading the configuration failed ({error})")
                ctx = None
            if ctx is None:
                return orig(*args, **kwargs)
            _local.context = ctx
            try:
                result = orig(*args, **kwargs)
            finally:
                _local.context = None
            if ctx.entry is not None:
                _check_views(ctx, views_of(result, bound.arguments))
                registry.publish(ctx.entry)
            return result

        return outer

    return factory


def _check_views(ctx: VllmContext, kv_caches) -> None:
    entry = ctx.entry
    spans = entry.layout.spans
    problems = []
    for name, value in (kv_caches or {}).items():
        for view in iter_views(value):
            addr = view.data_ptr()
            span = next((s for s in spans if s.addr <= addr < s.addr + s.nbytes), None)
            if span is None:
                continue  # not KV memory of ours (for example a mamba state outside the pool)
            problem = view_problem(view, span.addr, span.nbytes, entry.num_blocks)
            if problem is not None:
                problems.append(f"{name}: {problem}")
    if problems:
        _back_fully(entry, f"an attention view is not blocks first ({problems[0]})")


def _acquire_for_good(api, ranges, why: str) -> None:
    """Backs `ranges` for good; a refusal stops the engine with the fix (it cannot run correctly)."""
    status = api.acquire(ranges)
    if status != C.OK:
        raise RuntimeError(
            f"kvcached: the vLLM KV cache must be backed fully ({why}) and the shim refused "
            f"({C.STATUS_NAMES.get(status, status)}: {api.last_error()}); raise the GPU's budget (kvctl) "
            "or unset LD_PRELOAD for this engine"
        )


def _back_fully(entry: registry.WorkerCache, why: str) -> None:
    """Correct, not elastic: every page of every KV tensor backed for good."""
    _acquire_for_good(entry.api, [(s.addr, s.nbytes) for s in entry.layout.spans], why)
    entry.managed = False
    say_once("full", f"KV cache backed fully, not elastic: {why}")


# ---------------------------------------------------------------------------------------------
# The inner allocation: inside the pool, then the null block


def wrap_allocate(config_arg: str, device_of, raw_of):
    """Wrapper factory for the three allocation functions.

    config_arg: name of the KVCacheConfig parameter; device_of(bound) -> device;
    raw_of(result) -> the raw tensors (duplicates allowed)."""

    def factory(orig):
        signature = inspect.signature(orig)

        def allocate(*args, **kwargs):
            ctx = getattr(_local, "context", None)
            if ctx is None or ctx.entry is not None:
                return orig(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            kv_cache_config = bound.arguments[config_arg]
            device = device_of(bound.arguments)
            with _pool(ctx, device):
                result = orig(*args, **kwargs)
            tensors = list(raw_of(result))
            try:
                ctx.entry = _adopt(ctx, kv_cache_config, tensors)
            except Exception as error:  # noqa: BLE001 - whatever went wrong, the cache must work
                _back_raw_fully(ctx.api, tensors, str(error))
            else:
                reason = written_before_scheduler(kv_cache_config)
                if reason is not None:  # now, before warm-up writes it (the scheduler comes too late)
                    _back_fully(ctx.entry, reason)
            return result

        return allocate

    return factory


def written_before_scheduler(kv_cache_config) -> str | None:
    """Why the cache holds data from start-up that must stay (None: it holds none). vLLM's
    attention sinks (SinkFullAttentionSpec, StaticSinkAttention; 0.24-0.26) write their KV into
    blocks 1..n once, at the first forward with a KV cache: a warm-up run before any scheduler
    exists, while no page is backed (the writes land in the shim's scratch aliases and are lost),
    and backing those pages alone during start-up is unsafe (pin_null_block). Their
    SinkFullAttentionManager then holds the blocks outside vLLM's free queue."""
    for group in getattr(kv_cache_config, "kv_cache_groups", None) or ():
        spec = getattr(group, "kv_cache_spec", None)
        specs = getattr(spec, "kv_cache_specs", None)  # UniformTypeKVCacheSpecs: per layer
        for one in specs.values() if isinstance(specs, dict) else (spec,):
            if getattr(one, "sink_len", None):
                return f"attention sinks ({one.sink_len} tokens) are written once, in warm-up, before the scheduler exists"
    return None


class _NotLazy(Exception):
    pass


def _back_raw_fully(api, tensors, why: str) -> None:
    """The tensors came from the pool but cannot be managed: back every lazy one for good."""
    ranges = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        addr, nbytes = storage.data_ptr(), storage.nbytes()
        info = api.region_info(addr) if nbytes else None
        if info is not None and info.kind == C.REGION_LAZY:
            ranges[addr] = nbytes
    if ranges:
        _acquire_for_good(api, sorted(ranges.items()), why)
    say_once("notlazy", f"KV cache backed fully, not elastic: {why}")


def _adopt(ctx: VllmContext, kv_cache_config, tensors) -> registry.WorkerCache:
    num_blocks = int(kv_cache_config.num_blocks)
    seen: dict[int, object] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen.setdefault(storage.data_ptr(), (tensor, storage.nbytes()))
    spans, page_size = [], None
    for index, (addr, (tensor, nbytes)) in enumerate(sorted(seen.items())):
        info = ctx.api.region_info(addr)
        if info is None or info.kind != C.REGION_LAZY or not (info.base <= addr and addr + nbytes <= info.base + info.size):
            raise _NotLazy(f"KV tensor {index} at {addr:#x} is not inside one lazy shim region")
        if page_size not in (None, info.page_size):
            raise _NotLazy("KV tensors live in regions of different page sizes")
        page_size = info.page_size
        if nbytes % num_blocks:
            raise _NotLazy(f"KV tensor {index} ({nbytes} bytes) is not {num_blocks} equal blocks")
        spans.append(TensorSpan(addr, nbytes, info.base, name=f"kv[{index}]", block_bytes=nbytes // num_blocks))
    layout = KVLayout(spans, spans[0].block_bytes, num_blocks, page_size)
    entry = registry.WorkerCache(
        api=ctx.api,
        layout=layout,
        num_blocks=num_blocks,
        device_index=ctx.device_index,
        label=ctx.label(getattr(getattr(ctx.vllm_config, "model_config", None), "model", "")),
        tensors=[t for t, _ in seen.values()],
        pool=ctx.pool,
        remote=getattr(getattr(ctx.vllm_config, "parallel_config", None), "world_size", 1) > 1,
    )
    # The null block (vLLM pads every step with it) is backed when a scheduler takes the cache
    # (pin_null_block), not now: see there.
    entry.pinned_units = layout.block_units(0)
    ctx.name_process(entry.label)
    logger.debug(
        "%s: KV cache %s: %d tensors x %d blocks, page %d bytes, %d units",
        ENGINE, entry.label, len(spans), num_blocks, page_size, layout.num_units,
    )
    return entry


def pin_null_block(entry: registry.WorkerCache) -> None:
    """Backs the null block for good and makes it read zeros; once, when a scheduler takes the
    cache (registry.claim; tp.describe for tensor-parallel workers).

    Not at allocation: vLLM's zero fill, warm-up and graph capture then still write all over the
    cache (block 0 and real block ids alike) through the shim's zero aliases, and the first page
    backed in a region lets the shim map pages ahead there, replacing aliases under those writes
    (a fault that kills the CUDA context; seen on an H200). By the time a scheduler exists, start-up
    is over; what it wrote into aliases was scratch."""
    import torch

    if entry.pinned or not entry.managed:
        return
    ranges = [r for unit in entry.pinned_units for r in entry.layout.unit_ranges(unit)]
    status = entry.api.acquire(ranges)
    if status != C.OK:
        raise RuntimeError(
            f"kvcached: could not back vLLM's null KV block ({C.STATUS_NAMES.get(status, status)}: "
            f"{entry.api.last_error()}); the GPU's budget is exhausted (see kvctl list)"
        )
    entry.pinned = True
    # The block read zeros at allocation and scratch since: padded slots read it (garbage could
    # turn into NaN through a masked product), so zeros again.
    by_addr = {t.untyped_storage().data_ptr(): t for t in entry.tensors}
    for span in entry.layout.spans:
        tensor = by_addr.get(span.addr)
        if tensor is not None and tensor.is_contiguous() and tensor.data_ptr() == span.addr:
            tensor.view(-1).view(torch.uint8)[: span.block_bytes].zero_()
