"""Adapter for Hugging Face transformers' continuous batching (transformers.generation.continuous_batching).

What transformers 5.x does (read from its source, checked against 5.17):
- PagedAttentionCache.__init__ allocates 2 x (layers per group) tensors with torch.empty, each of
  shape ((num_blocks + 2) * block_size, kv_heads, head_dim): block b is rows [b*bs, (b+1)*bs) of
  every tensor. Blocks num_blocks and num_blocks+1 are padding (read trash, zero-filled; write
  trash), never handed out.
- BlockManager keeps free blocks in a deque `_uninit_block_ids` (popleft to allocate, append to
  free) and completed blocks of finished requests in `_init_block_ids` (a prefix cache, counted as
  free, evicted on demand by has_enough_free_blocks).
- Scheduler._allocate_blocks_if_needed -> PagedAttentionCache.allocate_blocks, which answers None
  ("no free blocks now"): the request waits, and starved active requests are offloaded (preempted)
  by the OffloadingManager.
- ContinuousBatchProcessor.prepare_next_batch schedules one step; the forward pass follows.

What the adapter changes:
1. __init__ runs inside a torch.cuda.MemPool on the shim's pluggable allocator: every KV tensor is a
   lazy region. The padding blocks are backed the moment each tensor exists (before the engine
   zero-fills the read trash), through a short-lived wrapper of torch._dynamo.mark_static_address,
   which the cache calls on each new tensor.
2. The free deque becomes a PageAwareFreeList: lowest free block in backed pages first.
3. allocate_blocks / get_free_blocks back the pages the allocation needs first (KVPageTracker.ensure);
   a refusal returns None (the engine's own "no free blocks"), and get_num_free_blocks is clamped
   for the rest of the step so scheduling and offloading see a full cache.
4. prepare_next_batch: before scheduling, back the pages the step is predicted to need (one call);
   after it, give back pages emptied a few steps ago (one call); then the sanity check. The engine's
   "nothing can be scheduled and nothing can be offloaded" RuntimeError, when caused by a budget
   refusal, becomes "no batch this step" (the loop waits 0.1 s and tries again).
5. Idle engines drop their prefix cache after KVCACHED_HOOK_IDLE_TRIM_S so the pages go back.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
import threading
import time
import weakref

from .. import capi as C
from .._env import HookSettings
from .._log import important, logger
from ..freelist import PageAwareFreeList
from ..pages import KVLayout, TensorSpan
from ..sanity import SanityChecker
from ..tracker import BackingRefused, KVPageTracker, percentile

MODULE = "transformers.generation.continuous_batching"
ENGINE = "transformers-cb"
_STALL_WARN_S = 30.0

# Test seams: tests/python replaces these to run the real engine on CPU with a fake C API.
_overrides = {"api": None, "require_cuda": True, "use_pool": True}
_patched = False
_patch_lock = threading.Lock()
_adapters: "weakref.WeakSet[CacheAdapter]" = weakref.WeakSet()

# Methods we wrap, with the parameter names we rely on (a mismatch means an unknown version).
_EXPECTED = {
    ("cache", "PagedAttentionCache", "__init__"): (
        "self",
        "config",
        "continuous_batching_config",
        "device",
    ),
    ("cache", "PagedAttentionCache", "allocate_blocks"): ("self", "n_blocks", "request_id", "allocated_blocks"),
    ("cache", "PagedAttentionCache", "get_num_free_blocks"): ("self",),
    ("cache", "PagedAttentionCache", "blocks_needed"): ("self", "num_requested_blocks", "allocated_blocks"),
    ("cache", "PagedAttentionCache", "will_allocation_be_successful"): ("self",),
    ("cache", "PagedAttentionCache", "compute_max_num_forks"): ("self", "source_request_id"),
    ("cache_manager", "BlockManager", "get_free_blocks"): ("self", "n_blocks", "last_block_id", "shareable", "group_id"),
    ("cache_manager", "BlockManager", "has_enough_free_blocks"): ("self", "n_blocks"),
    ("continuous_api", "ContinuousBatchProcessor", "prepare_next_batch"): ("self",),
}


# ---------------------------------------------------------------------------------------------
# Patching


def _submodule(name: str):
    full = f"{MODULE}.{name}"
    module = sys.modules.get(full)
    if module is None:
        import importlib

        module = importlib.import_module(full)
    return module


def patch(_package=None) -> bool:
    """Wraps the engine's classes (idempotent). False when this transformers is not recognised."""
    global _patched
    with _patch_lock:
        if _patched:
            return True
        try:
            modules = {name: _submodule(name) for name in ("cache", "cache_manager", "continuous_api", "requests")}
        except Exception as error:  # noqa: BLE001
            important(f"{ENGINE}: cannot import its modules ({error}); elastic KV cache disabled")
            return False
        originals = {}
        problems = []
        for (mod, cls_name, method), params in _EXPECTED.items():
            cls = getattr(modules[mod], cls_name, None)
            fn = getattr(cls, method, None) if cls is not None else None
            if fn is None:
                problems.append(f"{cls_name}.{method} missing")
                continue
            try:
                names = tuple(inspect.signature(fn).parameters)[: len(params)]
            except (TypeError, ValueError):
                names = ()
            if names != params:
                problems.append(f"{cls_name}.{method}{names} (expected {params})")
            originals[(cls_name, method)] = (cls, fn)
        if problems:
            important(
                f"{ENGINE}: transformers {_transformers_version()} continuous batching is not the layout this "
                f"hook knows ({'; '.join(problems)}); elastic KV cache disabled"
            )
            return False
        for (cls_name, method), (cls, fn) in originals.items():
            wrapper = _WRAPPERS.get((cls_name, method))
            if wrapper is not None and not getattr(fn, "_kvcached_wrapped", False):
                wrapped = wrapper(fn)
                wrapped._kvcached_wrapped = True
                wrapped.__wrapped__ = fn
                wrapped.__name__ = fn.__name__
                wrapped.__qualname__ = fn.__qualname__
                wrapped.__doc__ = fn.__doc__
                setattr(cls, method, wrapped)
        _patched = True
        logger.debug("%s: patched transformers %s continuous batching", ENGINE, _transformers_version())
        return True


def unpatch() -> None:
    """Restores the original methods (tests)."""
    global _patched
    with _patch_lock:
        if not _patched:
            return
        for (mod, cls_name, method) in _EXPECTED:
            module = sys.modules.get(f"{MODULE}.{mod}")
            cls = getattr(module, cls_name, None)
            fn = getattr(cls, method, None)
            if fn is not None and getattr(fn, "_kvcached_wrapped", False):
                setattr(cls, method, fn.__wrapped__)
        _patched = False


def _transformers_version() -> str:
    module = sys.modules.get("transformers")
    return getattr(module, "__version__", "?")


# ---------------------------------------------------------------------------------------------
# Wrappers


def _wrap_cache_init(orig):
    signature = inspect.signature(orig)

    def __init__(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
            device = bound.arguments.get("device")
        except TypeError:
            device = None
        try:
            ctx = _Context.create(device)
            pool = ctx.make_pool() if ctx is not None else None
        except Exception as error:  # noqa: BLE001 - the engine must start, elastic or not
            important(f"{ENGINE}: KV cache stays static: setting up the shim's pool failed: {error}")
            ctx = None
        if ctx is None:
            return orig(self, *args, **kwargs)
        pins: list = []
        with ctx.use_pool(pool), _pin_padding_on_mark(self, ctx, pins):
            orig(self, *args, **kwargs)
        self._kvcached_pool = pool  # the pool lives as long as the cache
        try:
            adapter = CacheAdapter(self, ctx, pins)
        except BackingRefused:
            raise
        except Exception as error:  # noqa: BLE001 - fall back to a fully backed, correct cache
            important(f"{ENGINE}: could not manage the KV cache ({error}); backing it fully instead")
            _back_fully(self, ctx)
            return
        self._kvcached = adapter

    return __init__


def _wrap_allocate_blocks(orig):
    def allocate_blocks(self, n_blocks, request_id, allocated_blocks):
        adapter = self.__dict__.get("_kvcached")
        if adapter is None:
            return orig(self, n_blocks, request_id, allocated_blocks)
        if not self.will_allocation_be_successful(n_blocks, allocated_blocks):
            return None
        needed = self.blocks_needed(n_blocks, allocated_blocks)
        if needed > 0 and not adapter.tracker.ensure(needed):
            return None
        return orig(self, n_blocks, request_id, allocated_blocks)

    return allocate_blocks


def _wrap_get_num_free_blocks(orig):
    def get_num_free_blocks(self):
        count = orig(self)
        adapter = self.__dict__.get("_kvcached")
        return count if adapter is None else adapter.tracker.effective_free(count)

    return get_num_free_blocks


def _wrap_compute_max_num_forks(orig):
    def compute_max_num_forks(self, source_request_id):
        adapter = self.__dict__.get("_kvcached")
        if adapter is None:
            return orig(self, source_request_id)
        # Forks must find their blocks without a refusal (a failed fork raises in the engine):
        # count only blocks that are backed or cached, after trying to back one fork's worth.
        tracker = adapter.tracker
        with tracker.lock:
            tracker.ensure(self.blocks_in_use(source_request_id), best_effort=True)
            saved = tracker.pressure
            tracker.pressure = True
            try:
                return orig(self, source_request_id)
            finally:
                tracker.pressure = saved

    return compute_max_num_forks


def _wrap_get_free_blocks(orig):
    def get_free_blocks(self, n_blocks, last_block_id, shareable, group_id):
        adapter = self.__dict__.get("_kvcached")
        if adapter is not None:
            # Blocks beyond the free deque come from the prefix cache (already backed).
            target = min(n_blocks, len(self._uninit_block_ids))
            if target > 0 and not adapter.tracker.ensure(target):
                return None
        return orig(self, n_blocks, last_block_id, shareable, group_id)

    return get_free_blocks


def _wrap_prepare_next_batch(orig):
    def prepare_next_batch(self):
        cache = getattr(self, "cache", None)
        adapter = cache.__dict__.get("_kvcached") if cache is not None else None
        if adapter is None:
            return orig(self)
        adapter.step_begin(self)
        ready = False
        try:
            ready = orig(self)
        except RuntimeError as error:
            # Without the shim this only happens when one request cannot fit an empty cache. With it,
            # it also happens when the budget is momentarily held by other engines: wait instead.
            if not (adapter.tracker.refused_this_step and "no requests can be" in str(error).lower()):
                raise
            adapter.budget_waits += 1
        finally:
            adapter.step_end(self, ready)
        return ready

    return prepare_next_batch


_WRAPPERS = {
    ("PagedAttentionCache", "__init__"): _wrap_cache_init,
    ("PagedAttentionCache", "allocate_blocks"): _wrap_allocate_blocks,
    ("PagedAttentionCache", "get_num_free_blocks"): _wrap_get_num_free_blocks,
    ("PagedAttentionCache", "compute_max_num_forks"): _wrap_compute_max_num_forks,
    ("BlockManager", "get_free_blocks"): _wrap_get_free_blocks,
    ("ContinuousBatchProcessor", "prepare_next_batch"): _wrap_prepare_next_batch,
}


# ---------------------------------------------------------------------------------------------
# Context: is this cache to be managed, and with what


class _Context:
    def __init__(self, api, settings: HookSettings, device, device_index: int) -> None:
        self.api = api
        self.settings = settings
        self.device = device
        self.device_index = device_index

    @classmethod
    def create(cls, device) -> "_Context | None":
        settings = HookSettings()
        if not settings.enabled:
            logger.debug("%s: ENABLE_KVCACHED=false: cache not managed", ENGINE)
            return None
        api = _overrides["api"] if _overrides["api"] is not None else C.load()
        if api is None:
            logger.debug("%s: no kvcached shim in this process: cache not managed", ENGINE)
            return None
        import torch

        torch_device = torch.device(device) if device is not None else torch.device("cpu")
        if _overrides["require_cuda"]:
            if torch_device.type != "cuda":
                logger.debug("%s: cache on %s, not CUDA: not managed", ENGINE, torch_device)
                return None
            if not api.enabled():
                logger.debug("%s: shim disabled or not started: cache not managed", ENGINE)
                return None
        if _overrides["use_pool"]:
            from .. import torch_pool

            reason = torch_pool.available(api)
            if reason is not None:
                important(f"{ENGINE}: KV cache stays static: {reason}")
                return None
        index = torch_device.index
        if index is None and torch_device.type == "cuda":
            index = torch.cuda.current_device()
        return cls(api, settings, torch_device, index or 0)

    def make_pool(self):
        if not _overrides["use_pool"]:
            return None
        from .. import torch_pool

        return torch_pool.make_pool(self.api)

    def use_pool(self, pool):
        if pool is None:
            return contextlib.nullcontext()
        from .. import torch_pool

        return torch_pool.use_pool(pool, self.device)


@contextlib.contextmanager
def _pin_padding_on_mark(cache, ctx: _Context, pins: list):
    """Backs the padding blocks of each KV tensor as soon as the cache marks it static (right after
    torch.empty, before the engine zero-fills the read trash)."""
    import torch

    dynamo = getattr(torch, "_dynamo", None)
    real = getattr(dynamo, "mark_static_address", None) if dynamo is not None else None
    if real is None:
        yield
        return

    def mark_static_address(tensor, *args, **kwargs):
        result = real(tensor, *args, **kwargs)
        shape = getattr(cache, "cache_shape", None)
        if shape is not None and tuple(tensor.shape) == tuple(shape):
            pins.append(_pin_padding(cache, ctx, tensor))
        return result

    dynamo.mark_static_address = mark_static_address
    try:
        yield
    finally:
        dynamo.mark_static_address = real


def _pin_padding(cache, ctx: _Context, tensor) -> int:
    block_size, num_blocks = cache.block_size, cache.num_blocks
    row_bytes = tensor.stride(0) * tensor.element_size()
    start = tensor.data_ptr() + num_blocks * block_size * row_bytes
    length = 2 * block_size * row_bytes
    status = _acquire_waiting(ctx, [(start, length)], "the KV cache's padding blocks")
    if status != C.OK:
        raise BackingRefused(
            f"{ENGINE}: the KV cache's 2 padding blocks could not be backed ({C.STATUS_NAMES.get(status, status)}: "
            f"{ctx.api.last_error()}) within KVCACHED_HOOK_START_WAIT_S={ctx.settings.start_wait_s:g} s; other "
            "engines hold the budget, or the budget (KVCACHED_BUDGET / KVCACHED_GPU_UTILIZATION or the kvctl "
            "limit) is too small to start this engine"
        )
    return tensor.data_ptr()


def _acquire_waiting(ctx: _Context, ranges, what: str) -> int:
    """Acquires `ranges`, waiting while the budget refuses (another engine holds it: each refusal
    asks it to give back its reserve) for up to KVCACHED_HOOK_START_WAIT_S. For start-up only:
    the engine cannot run before these pages are backed."""
    deadline = time.monotonic() + ctx.settings.start_wait_s
    next_note = time.monotonic()
    while True:
        status = ctx.api.acquire(ranges)
        if status != C.ERR_NO_MEMORY or time.monotonic() >= deadline:
            return status
        if time.monotonic() >= next_note:
            left = deadline - time.monotonic()
            important(f"{ENGINE}: waiting for KV memory for {what} (the budget is full: {ctx.api.last_error()}); "
                      f"giving up in {left:.0f} s")
            next_note = time.monotonic() + 10.0
        time.sleep(0.05)


def _back_fully(cache, ctx: _Context) -> None:
    """Fallback when the cache cannot be managed: back every byte so the engine is correct."""
    tensors = list(cache.key_cache) + list(cache.value_cache)
    # Tensors smaller than a page were passed to the real allocator: already real memory.
    ranges = [(t.data_ptr(), t.numel() * t.element_size()) for t in tensors if ctx.api.region_info(t.data_ptr())]
    status = ctx.api.acquire(ranges) if ranges else C.OK
    if status != C.OK:
        raise BackingRefused(
            f"{ENGINE}: could not back the KV cache ({C.STATUS_NAMES.get(status, status)}: {ctx.api.last_error()})"
        )
    num_blocks, block_size = cache.num_blocks, cache.block_size
    for tensor in tensors:  # the read trash must read zeros
        tensor[num_blocks * block_size : (num_blocks + 1) * block_size].zero_()


# ---------------------------------------------------------------------------------------------
# One managed cache


class CacheAdapter:
    """Ties one PagedAttentionCache to a KVPageTracker."""

    def __init__(self, cache, ctx: _Context, pins: list) -> None:
        self.cache = cache
        self.api = ctx.api
        self.settings = ctx.settings
        self.device_index = ctx.device_index
        self.budget_waits = 0
        self.idle_since: float | None = None
        self.idle_trims = 0
        self.pressure_seen: tuple[int, int] | None = None
        self.pressure_trims = 0
        self.steps = 0
        self.hook_ns_total = 0
        self.step_hook_us: list[float] = []
        self._requests_mod = sys.modules.get(f"{MODULE}.requests")

        keys, values = list(cache.key_cache), list(cache.value_cache)
        tensors = keys + values
        block_size, num_blocks = cache.block_size, cache.num_blocks
        first = tensors[0]
        row_bytes = first.stride(0) * first.element_size()
        total_rows = first.shape[0]
        for tensor in tensors:
            if not tensor.is_contiguous() or tensor.shape != first.shape or tensor.dtype != first.dtype:
                raise ValueError("KV tensors are not contiguous tensors of one shape and dtype")
        if total_rows % block_size or total_rows // block_size != num_blocks + 2:
            raise ValueError(f"KV tensor rows {total_rows} != (num_blocks + 2) x block_size")
        layer_names = self._layer_names(len(keys))
        spans, page_size = [], None
        for index, tensor in enumerate(tensors):
            addr, nbytes = tensor.data_ptr(), tensor.numel() * tensor.element_size()
            info = self.api.region_info(addr)
            if info is None or info.kind != C.REGION_LAZY:
                raise ValueError(f"KV tensor {index} at {addr:#x} is not in a lazy shim region")
            if not (info.base <= addr and addr + nbytes <= info.base + info.size):
                raise ValueError(f"KV tensor {index} does not fit its shim region")
            if page_size is None:
                page_size = info.page_size
            elif page_size != info.page_size:
                raise ValueError("KV tensors live in regions of different page sizes")
            j = index % len(keys)
            spans.append(
                TensorSpan(addr, nbytes, info.base, name=f"{'KV'[index // len(keys)]}[{j}]", layers=layer_names[j])
            )
        self.layout = KVLayout(spans, block_size * row_bytes, num_blocks + 2, page_size)
        self.label = self._label(cache)
        self.tracker = KVPageTracker(
            self.layout,
            self.api,
            num_blocks,
            release_delay_steps=self.settings.release_delay_steps,
            prefer_cached=self.settings.prefix_cache == "elastic",
            name=self.label,
        )
        # Padding blocks: backed already (by the mark hook) or now.
        padding = [num_blocks, num_blocks + 1]
        padding_units = sorted({u for b in padding for u in self.layout.block_units(b)})
        if len(pins) == len(tensors) and set(pins) == {t.data_ptr() for t in tensors}:
            self.tracker.mark_units_acquired(padding_units)
        else:
            self.tracker.pin_blocks(padding)
            for tensor in tensors:
                tensor[num_blocks * block_size : (num_blocks + 1) * block_size].zero_()
        self.padding = padding
        manager = cache._block_manager
        self.manager = manager
        self.sanity = None
        if self.settings.sanity_check:
            on_gpu = first.device.type == "cuda"  # the stray-write canary reads through torch on the GPU
            self.sanity = SanityChecker(
                self.tracker, self.api, self.label, self.device_index, self._page_view if on_gpu else None
            )
            self.sanity.arm()
        # Identity in kvctl (KVCACHED_LABEL, when set, was applied by the shim itself).
        if self.label and not self.settings.label:
            status = self.api.set_label(self.label)
            if status != C.OK:
                logger.debug("kvcached_set_label(%s) -> %s", self.label, C.STATUS_NAMES.get(status, status))
        # Take over the free deque last: nothing below can fail.
        self.tracker.adopt(list(manager._uninit_block_ids))
        self.tracker.evict_cached = self._evict_cached
        self.tracker.cached_count = lambda: len(manager._init_block_ids)
        manager._uninit_block_ids = PageAwareFreeList(self.tracker)
        manager._kvcached = self
        _adapters.add(self)
        logger.debug(
            "%s: managing KV cache %s: %d tensors x %d blocks of %d bytes, page %d bytes, %d units, %d class(es)",
            ENGINE,
            self.label,
            len(tensors),
            num_blocks,
            self.layout.block_bytes,
            page_size,
            self.layout.num_units,
            len(self.layout.phases),
        )

    # ---- names ----
    def _layer_names(self, per_group: int) -> list[tuple[int, ...]]:
        mapping = getattr(self.cache, "layer_index_to_group_indices", {}) or {}
        layers: list[list[int]] = [[] for _ in range(per_group)]
        for layer, (_, j) in sorted(mapping.items()):
            if 0 <= j < per_group:
                layers[j].append(layer)
        return [tuple(x) for x in layers]

    def _label(self, cache) -> str:
        if self.settings.label:
            return self.settings.label
        config = getattr(cache, "config", None)
        name = getattr(config, "name_or_path", "") or getattr(config, "model_type", "") or "model"
        return f"{ENGINE}:{os.path.basename(str(name).rstrip('/')) or name}"

    # ---- engine callbacks ----
    def _evict_cached(self, k: int) -> int:
        """Drops up to k of the engine's cached (prefix) blocks into the free list, through the
        engine's own eviction code."""
        manager = self.manager
        k = min(k, len(manager._init_block_ids))
        if k > 0:
            manager.has_enough_free_blocks(len(manager._uninit_block_ids) + k)
        return k

    def _yield_to_pressure(self) -> None:
        """Another process on this GPU was refused memory: drop the prefix cache, whose blocks
        pin pages that only this engine can free, so those pages go back to the shared budget.
        Blocks of running requests stay: IN_USE memory is only ever given up by the engine's
        own scheduling."""
        query = getattr(self.api, "pressure", None)  # absent from older shims and test fakes
        pressure = query(self.device_index) if query is not None else None
        if pressure is None:
            return
        first = self.pressure_seen is None
        changed = pressure[0] != (self.pressure_seen or (None,))[0]
        self.pressure_seen = pressure
        if first or not changed or pressure[1] in (0, os.getpid()):
            return
        if self.manager._init_block_ids:
            self._evict_cached(len(self.manager._init_block_ids))
            self.pressure_trims += 1

    def held_blocks(self) -> dict[int, str]:
        held: dict[int, str] = {}
        for group, allocator in enumerate(getattr(self.cache, "group_cache_managers", ())):
            for request_id, blocks in list(allocator.block_table.items()):
                for block in blocks:
                    held.setdefault(block, f"request {request_id}, group {group}")
        for block in list(self.manager._init_block_ids):
            held.setdefault(block, "prefix cache")
        return held

    def _page_view(self, span_index: int, addr: int, length: int):
        import torch

        tensors = list(self.cache.key_cache) + list(self.cache.value_cache)
        tensor = tensors[span_index]
        if tensor.device.type != "cuda":
            return None
        offset = addr - tensor.data_ptr()
        return tensor.view(-1).view(torch.uint8)[offset : offset + length]

    # ---- steps ----
    def predict_demand(self, processor, arriving=()) -> int:
        """Blocks the next schedule_batch may allocate (an upper estimate). `arriving`: requests
        still in the input queue (prepare_next_batch drains it before scheduling)."""
        cache, scheduler = self.cache, processor.scheduler
        block_size = cache.block_size
        decoding = self._requests_mod.RequestStatus.DECODING

        def need(state, tokens: int) -> int:
            occupancy = state.allocated_blocks * block_size - state.current_len()
            if occupancy < tokens or state.allocated_blocks == 0:
                blocks = (tokens - occupancy + 1) // block_size + 1
                return cache.blocks_needed(blocks, state.allocated_blocks)
            return 0

        demand = 0
        for state in list(scheduler.active_requests.values()):
            tokens = 1 if state.status == decoding else len(state.remaining_prefill_tokens)
            demand += need(state, tokens)
        if not scheduler.block_new_requests:
            budget = getattr(processor, "max_batch_tokens", cache.max_batch_tokens)
            waiting = [scheduler.waiting_requests.get(r) for r in list(scheduler.waiting_requests_order)]
            for state in waiting + list(arriving):
                if budget <= 0:
                    break
                if state is None or not hasattr(state, "remaining_prefill_tokens"):
                    continue
                tokens = min(len(state.remaining_prefill_tokens) or len(state.initial_tokens), budget)
                budget -= tokens
                demand += need(state, tokens)
        if self.tracker.prefer_cached:
            demand -= len(self.manager._init_block_ids)  # those get reused before new pages
        return max(0, min(demand, self.tracker.nfree))

    def step_begin(self, processor) -> None:
        start = time.perf_counter_ns()
        tracker = self.tracker
        tracker.step_begin()
        self.steps += 1
        scheduler = processor.scheduler
        arriving = _peek_queue(getattr(processor, "input_queue", None))
        self._yield_to_pressure()
        if arriving or scheduler.has_pending_requests():
            self.idle_since = None
            if self.settings.predict and not tracker.refused_last_step:
                try:
                    demand = self.predict_demand(processor, arriving)
                except Exception as error:  # noqa: BLE001 - prediction is an optimisation only
                    logger.debug("demand prediction failed: %s", error)
                    demand = 0
                if demand > tracker.nbfree:
                    tracker.ensure(demand, best_effort=True)
        else:
            now = time.monotonic()
            if self.idle_since is None:
                self.idle_since = now
            elif self.settings.idle_trim_s >= 0 and now - self.idle_since >= self.settings.idle_trim_s:
                if self.manager._init_block_ids:
                    self._evict_cached(len(self.manager._init_block_ids))
                    self.idle_trims += 1
        self._hook_ns = time.perf_counter_ns() - start

    def step_end(self, processor, ready: bool) -> None:
        start = time.perf_counter_ns()
        try:
            self.tracker.step_end()
            if ready and self.sanity is not None:
                self.sanity.checks += 1
                self.sanity.check_held(self.held_blocks())
                self.sanity.check_pinned(self.padding)
                self.sanity.check_stray_writes()
        except Exception as error:  # noqa: BLE001 - never break the engine's loop from here
            important(f"{self.label}: end-of-step bookkeeping failed: {error}", logging.ERROR)
        self._watch_stall(ready)
        spent = getattr(self, "_hook_ns", 0) + time.perf_counter_ns() - start
        self.hook_ns_total += spent
        if ready:
            if len(self.step_hook_us) >= 200_000:
                del self.step_hook_us[:100_000]
            self.step_hook_us.append(spent / 1000.0)

    def _watch_stall(self, ready: bool) -> None:
        """Says so when requests have waited a long time for KV memory that the budget refuses
        (held by other engines, or a request larger than this engine's whole budget)."""
        now = time.monotonic()
        if ready or not self.tracker.refused_this_step:
            self._stall_since = None
            return
        if getattr(self, "_stall_since", None) is None:
            self._stall_since, self._stall_warned = now, now
        elif now - self._stall_warned >= _STALL_WARN_S:
            self._stall_warned = now
            important(
                f"{self.label}: no step for {now - self._stall_since:.0f} s: waiting requests need KV pages the "
                "budget refuses (held by other engines, or more than this engine may hold); see `kvctl list`"
            )

    def snapshot(self) -> dict:
        data = self.tracker.snapshot()
        data.update(
            engine=ENGINE,
            label=self.label,
            steps=self.steps,
            budget_waits=self.budget_waits,
            idle_trims=self.idle_trims,
            pressure_trims=self.pressure_trims,
            hook_time_s=self.hook_ns_total / 1e9,
            block_bytes=self.layout.block_bytes,
            page_size=self.layout.page_size,
            tensors=len(self.layout.spans),
            steps_with_c_calls=len(self.tracker.step_c_us),
            c_us_per_step_p50=percentile(self.tracker.step_c_us, 50),
            c_us_per_step_p99=percentile(self.tracker.step_c_us, 99),
            c_calls_per_step_max=max(self.tracker.step_calls, default=0),
            hook_us_per_step_p50=percentile(self.step_hook_us, 50),
            hook_us_per_step_p99=percentile(self.step_hook_us, 99),
        )
        if self.sanity is not None:
            data.update(
                sanity_checks=self.sanity.checks,
                sanity_violations=self.sanity.violation_count,
                sanity_stray_writes=self.sanity.stray_writes,
            )
        return data


def _peek_queue(q) -> list:
    """Items waiting in a queue.Queue, without taking them."""
    if q is None:
        return []
    try:
        with q.mutex:
            return list(q.queue)
    except AttributeError:
        return []


def adapters() -> list[CacheAdapter]:
    return list(_adapters)
