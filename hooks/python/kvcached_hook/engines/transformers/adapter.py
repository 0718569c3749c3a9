"""One managed PagedAttentionCache: its layout, its KVPageTracker, the engine callbacks the tracker
uses (evict prefix-cache blocks), the per-step hooks, and its snapshot for kvcached_hook.stats().

The free deque of the engine's BlockManager becomes a PageAwareFreeList (lowest free block in
backed pages first). Each step: back the pages the step is predicted to need (one C call), give
back pages emptied a few steps ago (one C call), then the optional sanity check. Idle engines
drop their prefix cache after KVCACHED_HOOK_IDLE_TRIM_S, and any engine drops it when another
process on the GPU is refused memory, so those pages go back to the shared budget.
"""

from __future__ import annotations

import logging
import sys
import time
import weakref

from ..._log import important, logger
from ...freelist import PageAwareFreeList
from ...pressure_watch import PressureWatch
from ...sanity import SanityChecker
from ...stall_watch import StallWatch
from ...step_report import StepReporter
from ...step_timing import StepHookTiming
from ...tracker import KVPageTracker
from .demand import peek_queue, predict_demand
from .layout import build_layout
from .names import ENGINE, REQUESTS_MODULE
from .startup import kv_tensors, zero_read_trash

_adapters: "weakref.WeakSet[CacheAdapter]" = weakref.WeakSet()


def adapters() -> list["CacheAdapter"]:
    """Live adapters in this process (one per managed cache)."""
    return list(_adapters)


class CacheAdapter:
    """Ties one PagedAttentionCache to a KVPageTracker."""

    def __init__(self, cache, ctx, pins: list) -> None:
        self.cache = cache
        self.api = ctx.api
        self.settings = ctx.settings
        self.device_index = ctx.device_index
        self.budget_waits = 0
        self.idle_since: float | None = None
        self.idle_trims = 0
        self.pressure = PressureWatch(self.api, self.device_index)
        self.pressure_trims = 0
        self.steps = 0
        self.timing = StepHookTiming()
        self.reporter = StepReporter(self.api, self.device_index)  # per-step costs for kvctl
        self._requests_mod = sys.modules.get(REQUESTS_MODULE)

        tensors = kv_tensors(cache)
        num_blocks = cache.num_blocks
        self.layout = build_layout(cache, self.api)
        config = getattr(cache, "config", None)
        self.label = ctx.label(getattr(config, "name_or_path", "") or getattr(config, "model_type", ""))
        self.stall = StallWatch(self.label)
        self.tracker = KVPageTracker.from_settings(
            self.layout, self.api, num_blocks, self.settings, name=self.label, device=self.device_index
        )
        # Padding blocks: backed already (by the mark hook) or now.
        padding = [num_blocks, num_blocks + 1]
        padding_units = sorted({u for b in padding for u in self.layout.block_units(b)})
        if len(pins) == len(tensors) and set(pins) == {t.data_ptr() for t in tensors}:
            self.tracker.mark_units_acquired(padding_units)
        else:
            self.tracker.pin_blocks(padding)
            zero_read_trash(cache, tensors)
        self.padding = padding
        manager = cache._block_manager
        self.manager = manager
        self.sanity = None
        if self.settings.sanity_check:
            on_gpu = tensors[0].device.type == "cuda"  # the stray-write canary reads through torch on the GPU
            self.sanity = SanityChecker(
                self.tracker, self.api, self.label, self.device_index, self._page_view if on_gpu else None
            )
            self.sanity.arm()
        ctx.name_process(self.label)  # identity in kvctl
        # Its unit for the sharing policy (docs/sharing.md): when starved it counts as such only
        # while it lacks a whole unit. Absent from older shims and fakes: shares are then pages.
        publish = getattr(self.api, "share_set_unit", None)
        self.share_unit_published = publish is not None and publish(
            self.device_index, self.layout.smallest_unit_bytes()) == 0
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
            self.layout.page_size,
            self.layout.num_units,
            len(self.layout.phases),
        )

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
        if self.pressure.poll() and self.manager._init_block_ids:
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

        tensor = kv_tensors(self.cache)[span_index]
        if tensor.device.type != "cuda":
            return None
        offset = addr - tensor.data_ptr()
        return tensor.view(-1).view(torch.uint8)[offset : offset + length]

    # ---- steps ----
    def predict_demand(self, processor, arriving=()) -> int:
        return predict_demand(self.cache, processor, self.manager, self.tracker, self._requests_mod, arriving)

    def step_begin(self, processor) -> None:
        start = self.timing.now()
        tracker = self.tracker
        tracker.step_begin()
        self.steps += 1
        scheduler = processor.scheduler
        arriving = peek_queue(getattr(processor, "input_queue", None))
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
        self.timing.began(start)

    def step_end(self, processor, ready: bool) -> None:
        start = self.timing.now()
        try:
            self.tracker.step_end()
            if ready and self.sanity is not None:
                self.sanity.checks += 1
                self.sanity.check_held(self.held_blocks())
                self.sanity.check_pinned(self.padding)
                self.sanity.check_stray_writes()
        except Exception as error:  # noqa: BLE001 - never break the engine's loop from here
            important(f"{self.label}: end-of-step bookkeeping failed: {error}", logging.ERROR)
        self.stall.update(ready, self.tracker.refused_this_step)
        self.timing.finished(start, ready)
        self._report_steps(ready)

    def _report_steps(self, ready: bool) -> None:
        """Cumulative steps that ran, the hook's time in them and its C calls, to kvctl (rate-limited;
        an idle loop sends the last totals once)."""
        tracker, timing = self.tracker, self.timing
        totals = (timing.counted_steps, timing.counted_ns, tracker.acquire_calls + tracker.release_calls)
        if ready:
            self.reporter.step(*totals)
        else:
            self.reporter.flush(*totals)

    def snapshot(self) -> dict:
        data = self.tracker.snapshot()
        data.update(
            engine=ENGINE,
            label=self.label,
            steps=self.steps,
            budget_waits=self.budget_waits,
            idle_trims=self.idle_trims,
            pressure_trims=self.pressure_trims,
            block_bytes=self.layout.block_bytes,
            page_size=self.layout.page_size,
            tensors=len(self.layout.spans),
        )
        data.update(self.tracker.step_costs())
        data.update(self.timing.snapshot())
        data["step_reports"] = self.reporter.reports
        if self.sanity is not None:
            data.update(self.sanity.counts())
        return data


__all__ = ["CacheAdapter", "adapters"]
