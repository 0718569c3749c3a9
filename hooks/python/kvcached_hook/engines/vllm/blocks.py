"""Scheduler side: vLLM's BlockPool drives a KVPageTracker.

Which pages must be backed: every page of a block that is *held* in the tracker's sense, meaning
in use by a request (ref_cnt > 0) or kept by the prefix cache (a hash, ref_cnt 0: an eviction
candidate whose KV a later request may hit). Free blocks without a hash need no page.
`sync(block)` compares a block with the tracker after every BlockPool call that can change that
(get_new_blocks, free_blocks, touch, evict_blocks, reset_prefix_cache), so the tracker follows
the pool whatever order vLLM calls it in.

Block choice (get_new_blocks): vLLM's FreeKVCacheBlockQueue stays the one free list. Before vLLM
pops n blocks from its head, the adapter moves n blocks of its choice there (queue.remove +
prepend_n, O(n)): free blocks in backed pages first; then, when those run short, cached blocks
in LRU order are evicted into free blocks (their pages are backed); then pages are acquired for the
lowest free blocks. vLLM's own code then hands them out (ref counts, eviction events, metrics).

Refusal: allocate_slots asks get_num_blocks_to_allocate, then get_num_free_blocks. The adapter
remembers the first answer (less the prefix-hit blocks, which need no page) and backs exactly that
many blocks when the second is asked; if the shim refuses, get_num_free_blocks answers only what
is backed, so allocate_slots returns None and the scheduler preempts or stops admitting.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque

from ..._env import HookSettings
from ..._log import important
from ...tracker import KVPageTracker
from . import registry

LIVE: "weakref.WeakSet[PoolAdapter]" = weakref.WeakSet()
_NO_BLOCKS: frozenset[int] = frozenset()


class PoolAdapter:
    """Ties one vLLM BlockPool to a KVPageTracker."""

    def __init__(self, pool, entry: registry.WorkerCache, settings: HookSettings | None = None) -> None:
        self.pool = pool
        self.entry = entry
        self.api = entry.api
        self.settings = settings or HookSettings()
        self.label = entry.label
        self.lock = threading.RLock()
        self.tracker = KVPageTracker(
            entry.layout,
            entry.api,
            pool.num_gpu_blocks,
            release_delay_steps=self.settings.release_delay_steps,
            prefer_cached=self.settings.prefix_cache == "elastic",
            name=entry.label,
        )
        self.tracker.fence = 0  # nothing in flight yet: steps are counted by the scheduler hooks
        self.tracker.mark_units_acquired(entry.pinned_units)
        self.cached: dict[int, object] = {}  # block id -> block: ref 0 with a hash, LRU first
        self.protected: frozenset[int] = _NO_BLOCKS  # prefix hits of the allocation in progress
        self.demand: int | None = None  # blocks the allocation in progress will take from the pool
        self.allocating = False  # inside KVCacheManager.allocate_slots
        self.in_flight: deque[int] = deque()  # steps scheduled with work, not yet processed
        self.sync_errors = 0
        free = [block.block_id for block in pool.blocks if block.ref_cnt == 0 and not block.is_null]
        self.tracker.adopt(free)  # the null block (and anything else held) is backed now
        for block in pool.blocks:
            if not block.is_null and block.ref_cnt == 0 and block.block_hash is not None:
                self.cached[block.block_id] = block
        self.tracker.evict_cached = self.evict_cached
        self.tracker.cached_count = lambda: len(self.cached)
        self.hooks = None  # steps.StepHooks, once the scheduler made its first step
        LIVE.add(self)

    # ------------------------------------------------------------------ tracker <-> pool
    def sync(self, block) -> None:
        if block.is_null:
            return
        bid = block.block_id
        hashed = block.block_hash is not None
        held = block.ref_cnt > 0 or hashed
        tracker = self.tracker
        free = tracker.is_free(bid)
        if held and free:
            tracker.take(bid)  # backed already (choose/ensure ran before); else backs it now
        elif not held and not free:
            tracker.give(bid)
        if block.ref_cnt == 0 and hashed:
            if bid not in self.cached:
                self.cached[bid] = block
        else:
            self.cached.pop(bid, None)

    def sync_all(self) -> None:
        for block in self.pool.blocks:
            self.sync(block)

    def evict_cached(self, k: int) -> int:
        """Drops up to k cached blocks (LRU first, never a prefix hit being allocated) from the
        prefix cache; their pages become free backed blocks."""
        if k <= 0:
            return 0
        # Only the first k candidates are read (the cache may hold ~100k blocks; this runs a few
        # times per step when pages run short): collect them, then evict (sync edits the dict).
        protected = self.protected
        victims = []
        for bid, block in self.cached.items():
            if bid not in protected:
                victims.append(block)
                if len(victims) >= k:
                    break
        evict = self.pool._maybe_evict_cached_block
        for block in victims:
            evict(block)
            self.sync(block)
        return len(victims)

    def drop_prefix_cache(self) -> int:
        return self.evict_cached(len(self.cached))

    # ------------------------------------------------------------------ allocation
    def free_count(self, engine_free: int) -> int:
        """get_num_free_blocks: back the pending allocation exactly, then clamp under pressure."""
        demand, self.demand = self.demand, None
        if demand:
            self.tracker.ensure(demand)
        return self.tracker.effective_free(engine_free)

    def note_demand(self, num_blocks: int, new_computed_blocks) -> None:
        hits = set()
        for group in new_computed_blocks or ():
            for block in group:
                if block.ref_cnt == 0 and not block.is_null:
                    hits.add(block.block_id)
        self.protected = frozenset(hits) if hits else _NO_BLOCKS
        self.demand = max(0, num_blocks - len(hits))

    def end_allocation(self) -> None:
        self.protected = _NO_BLOCKS  # runs for every request every step: no new frozenset each time
        self.demand = None

    def choose(self, n: int) -> None:
        """Moves the n blocks get_new_blocks should hand out to the head of vLLM's free queue."""
        tracker = self.tracker
        if n <= 0:
            return
        if tracker.nbfree < n:
            tracker.ensure(n)
        fb, fu = tracker.fb, tracker.fu
        chosen: list[int] = []
        for flags in (fb, fu):  # backed pages first; unbacked only if backing fell short
            block = flags.find(1)
            while block >= 0 and len(chosen) < n:
                chosen.append(block)
                block = flags.find(1, block + 1)
            if len(chosen) >= n:
                break
        if len(chosen) < n:
            return  # fewer free blocks than asked: vLLM raises its own error, as without the hook
        queue, blocks = self.pool.free_block_queue, self.pool.blocks
        picked = [blocks[b] for b in chosen]
        for block in picked:
            queue.remove(block)
        queue.prepend_n(picked)

    def snapshot(self) -> dict:
        data = self.tracker.snapshot()
        hooks = self.hooks
        data.update(
            engine="vllm",
            label=self.label,
            cached_blocks=len(self.cached),
            in_flight=len(self.in_flight),
            steps=hooks.steps if hooks else 0,
            idle_trims=hooks.idle_trims if hooks else 0,
            pressure_trims=hooks.pressure_trims if hooks else 0,
            hook_time_s=(hooks.hook_ns_total / 1e9) if hooks else 0.0,
            page_size=self.tracker.layout.page_size,
            tensors=len(self.tracker.layout.spans),
        )
        data.update(self.tracker.step_costs())
        observer = getattr(hooks, "observer", None)
        if observer is not None:  # observe.py: step reports, sanity counts
            data.update(observer.snapshot())
        if hooks is not None:
            data.update(hooks.share.snapshot())  # the sharing policy's counts (share_policy.py)
        return data

    # ------------------------------------------------------------------ checks (tests, sanity)
    def held_blocks(self) -> list[int]:
        return [b.block_id for b in self.pool.blocks if b.ref_cnt > 0 or b.block_hash is not None or b.is_null]

    def mismatches(self) -> list[str]:
        """Differences between the pool and the tracker (empty when they agree)."""
        out = []
        for block in self.pool.blocks:
            if block.is_null:
                continue
            held = block.ref_cnt > 0 or block.block_hash is not None
            if held == self.tracker.is_free(block.block_id):
                out.append(f"block {block.block_id}: pool {'held' if held else 'free'}, tracker the opposite")
        return out

    def report(self, text: str) -> None:
        important(f"{self.label}: {text}", logging.ERROR)
