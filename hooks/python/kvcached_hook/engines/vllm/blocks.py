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
in LRU order (their pages are backed; vLLM evicts them from the prefix cache as it pops them); then
pages are acquired for the lowest free blocks. vLLM's own code then hands them out (ref counts,
eviction events, metrics).

Refusal: allocate_slots asks get_num_blocks_to_allocate, then get_num_free_blocks. On its exact
path (allocation.py; most calls take a fast path that needs neither) the adapter remembers the
first answer (less the prefix-hit blocks, which need no page) and backs exactly that many blocks
when the second is asked; if the shim refuses, get_num_free_blocks answers only what is backed, so
allocate_slots returns None and the scheduler preempts or stops admitting.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict, deque

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
        # block id -> block: ref 0 with a hash, LRU first. An OrderedDict: blocks leave from the
        # front, and a plain dict keeps a deleted entry's slot until it resizes, so iterating it
        # from the front would walk the slots of every block that left since.
        self.cached: OrderedDict[int, object] = OrderedDict()
        # block id -> when it became cached (the step's clock, `now`): the same order as `cached`.
        self.cached_at: dict[int, float] = {}
        self.now = time.monotonic()  # set once per step (steps.py)
        self.protected: frozenset[int] = _NO_BLOCKS  # prefix hits of the allocation in progress
        self.demand: int | None = None  # blocks the allocation in progress will take from the pool
        # allocation.py's fast path: blocks it may still hand out in this schedule() (-1: outside
        # schedule(), or every call exact), and the KV cache groups' block sizes (None: not read yet).
        self.room = -1
        self.group_sizes: tuple[int, ...] | None = None
        self.single_size = 0  # the block size when there is one group with a bound, else 0
        self.step_sizes: tuple[int, ...] | None = None  # allocation.whole_step's groups (None: not read yet)
        self.whole_steps = 0  # schedule() calls run with vLLM's own allocate_slots (allocation.py)
        self.taken_total = 0  # blocks get_new_blocks handed out (steps.py: recent use)
        self.in_flight: deque[int] = deque()  # steps scheduled with work, not yet processed
        self.sync_errors = 0
        free = [block.block_id for block in pool.blocks if block.ref_cnt == 0 and not block.is_null]
        self.tracker.adopt(free)  # the null block (and anything else held) is backed now
        for block in pool.blocks:
            if not block.is_null and block.ref_cnt == 0 and block.block_hash is not None:
                self.cached[block.block_id] = block
                self.cached_at[block.block_id] = self.now
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
                self.cached_at[bid] = self.now
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

    def stale_cached(self, before: float) -> int:
        """How many cached blocks have been unused since before `before` (the oldest first: they
        lead `cached`)."""
        at = self.cached_at
        n = 0
        for bid in self.cached:
            if at.get(bid, 0.0) >= before:
                break
            n += 1
        return n

    # ------------------------------------------------------------------ allocation
    def free_count(self, engine_free: int) -> int:
        """get_num_free_blocks: back the pending allocation exactly, then clamp under pressure."""
        demand, self.demand = self.demand, None
        tracker = self.tracker
        if demand and demand > tracker.nbfree + self.reusable_cached():
            tracker.ensure(demand)
        return tracker.effective_free(engine_free)

    def reusable_cached(self) -> int:
        """Cached blocks that choose() may hand out now (elastic prefix cache): all but the prefix
        hits of the allocation in progress."""
        if not self.tracker.prefer_cached:
            return 0
        cached, protected = self.cached, self.protected
        if not protected:
            return len(cached)
        return len(cached) - sum(1 for bid in protected if bid in cached)

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
        """Moves the n blocks get_new_blocks should hand out to the head of vLLM's free queue:
        free blocks in backed pages (lowest first), then cached blocks (LRU first, never a prefix
        hit of the allocation in progress; vLLM's get_new_blocks evicts them from the prefix cache
        as it hands them out, as it does with any cached block at the head of its queue), and only
        when those fall short, pages are backed for the lowest free blocks."""
        if n <= 0:
            return
        tracker, blocks = self.tracker, self.pool.blocks
        fb = tracker.fb
        picked = []
        if tracker.nbfree:
            block = fb.find(1)
            while block >= 0 and len(picked) < n:
                picked.append(blocks[block])
                block = fb.find(1, block + 1)
        short = n - len(picked)
        if short > 0 and self.reusable_cached() >= short:
            protected = self.protected
            for bid, block in self.cached.items():
                if bid not in protected:
                    picked.append(block)
                    short -= 1
                    if not short:
                        break
        if short > 0:
            picked = self._choose_backing(n)
            if picked is None:
                return  # fewer free blocks than asked: vLLM raises its own error, as without the hook
        queue = self.pool.free_block_queue
        for block in picked:
            queue.remove(block)
        queue.prepend_n(picked)

    def _choose_backing(self, n: int):
        """choose() when backed and cached blocks fall short: back pages (tracker.ensure evicts
        cached blocks first when the prefix cache is elastic), then the lowest free blocks, those
        in backed pages first. None when fewer than n blocks are free."""
        tracker = self.tracker
        tracker.ensure(n)
        chosen: list[int] = []
        for flags in (tracker.fb, tracker.fu):  # unbacked only if backing fell short
            block = flags.find(1)
            while block >= 0 and len(chosen) < n:
                chosen.append(block)
                block = flags.find(1, block + 1)
            if len(chosen) >= n:
                break
        if len(chosen) < n:
            return None
        blocks = self.pool.blocks
        return [blocks[b] for b in chosen]

    def taken(self, blocks) -> None:
        """sync() for the blocks get_new_blocks handed out (each in use now, without a hash)."""
        cached = self.cached
        ids = [block.block_id for block in blocks]
        self.taken_total += len(ids)
        if cached:
            # A cached block is held in the tracker already (sync, freed): take_free would leave
            # it as it is. Most blocks handed out under load are cached ones: no tracker call then.
            ids = [bid for bid in ids if cached.pop(bid, None) is None]
            if not ids:
                return
        self.tracker.take_free(ids)

    def freed(self, blocks) -> None:
        """sync() for the blocks free_blocks gave back: still in use (another request shares it),
        cached (a hash: kept by the prefix cache, its page stays backed), or free."""
        tracker, cached = self.tracker, self.cached
        for block in blocks:
            if block.ref_cnt > 0 or block.is_null:
                continue
            bid = block.block_id
            if block.block_hash is not None:
                if bid not in cached:
                    cached[bid] = block
                    self.cached_at[bid] = self.now
            elif not tracker.is_free(bid):
                tracker.give(bid)

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
            stale_gives=hooks.stale_gives if hooks else 0,
            whole_steps=self.whole_steps,
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
