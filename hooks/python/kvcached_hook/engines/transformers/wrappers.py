"""The wrappers installed on transformers' continuous-batching classes.

- PagedAttentionCache.__init__ runs inside a MemPool on the shim (every KV tensor a lazy region),
  pins the padding blocks, then hands the cache to a CacheAdapter (or backs it fully when it cannot
  be managed, so the engine stays correct).
- allocate_blocks / BlockManager.get_free_blocks back the pages an allocation needs first; a
  refusal answers None, the engine's own "no free blocks now" (the request waits, starved requests
  are offloaded). get_num_free_blocks is clamped for the rest of a refused step.
- compute_max_num_forks counts only blocks that are backed or cached (a failed fork raises).
- prepare_next_batch runs the adapter's step hooks around the engine's scheduling; the engine's
  "no requests can be scheduled" RuntimeError, when a budget refusal caused it, becomes "no batch
  this step" (the loop waits 0.1 s and tries again).
Every wrapper leaves caches the hook does not manage to the original code.
"""

from __future__ import annotations

import inspect

from ..._log import important
from ...tracker import BackingRefused
from .adapter import CacheAdapter
from .context import TransformersContext
from .names import ENGINE
from .startup import back_fully, pin_padding_on_mark


def wrap_cache_init(orig):
    signature = inspect.signature(orig)

    def __init__(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
            device = bound.arguments.get("device")
        except TypeError:
            device = None
        try:
            ctx = TransformersContext.create(device)
            pool = ctx.make_pool() if ctx is not None else None
        except Exception as error:  # noqa: BLE001 - the engine must start, elastic or not
            important(f"{ENGINE}: KV cache stays static: setting up the shim's pool failed: {error}")
            ctx = None
        if ctx is None:
            return orig(self, *args, **kwargs)
        pins: list = []
        with ctx.use_pool(pool), pin_padding_on_mark(self, ctx, pins):
            orig(self, *args, **kwargs)
        self._kvcached_pool = pool  # the pool lives as long as the cache
        try:
            adapter = CacheAdapter(self, ctx, pins)
        except BackingRefused:
            raise
        except Exception as error:  # noqa: BLE001 - fall back to a fully backed, correct cache
            important(f"{ENGINE}: could not manage the KV cache ({error}); backing it fully instead")
            back_fully(self, ctx)
            return
        self._kvcached = adapter

    return __init__


def wrap_allocate_blocks(orig):
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


def wrap_get_num_free_blocks(orig):
    def get_num_free_blocks(self):
        count = orig(self)
        adapter = self.__dict__.get("_kvcached")
        return count if adapter is None else adapter.tracker.effective_free(count)

    return get_num_free_blocks


def wrap_compute_max_num_forks(orig):
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


def wrap_get_free_blocks(orig):
    def get_free_blocks(self, n_blocks, last_block_id, shareable, group_id):
        adapter = self.__dict__.get("_kvcached")
        if adapter is not None:
            # Blocks beyond the free deque come from the prefix cache (already backed).
            target = min(n_blocks, len(self._uninit_block_ids))
            if target > 0 and not adapter.tracker.ensure(target):
                return None
        return orig(self, n_blocks, last_block_id, shareable, group_id)

    return get_free_blocks


def wrap_prepare_next_batch(orig):
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
