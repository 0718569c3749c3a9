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


def free_hits(new_computed_blocks) -> set[int]:
    """The prefix hits an allocation takes from the cached blocks (vLLM's count includes them:
    ref 0, not the null block)."""
    hits = set()
    for group in new_computed_blocks or ():
        for block in group:
            if block.ref_cnt == 0 and not block.is_null:
                hits.add(block.block_id)
    return hits


class PoolAdapter:
    """Ties one vLLM BlockPool to a KVPageTracker."""

    def __init__(self, pool, entry: registry.WorkerCache, settings: HookSettings | None = None) -> None:
        self.pool = pool
        self.entry = entry
        self.api = entry.api
        self.settings = settings or HookSettings()
        self.label = entry.label
        self.lock = threading.RLock()
        self.tracker = KVPageTracker.from_settings(
            entry.layout, entry.api, pool.num_gpu_blocks, self.settings, name=entry.label, device=entry.device_index
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
        # allocation.py's refused admissions: vLLM's counts in the exact call in progress, less
        # the prefix hits taken from the cached blocks (the admission cap's, the allocation's;
        # None: not counted), what the last refused admission's were, and how many later tries
        # were decided from them without vLLM's call.
        self.counted: list[int | None] = [None, None]
        self.full_attention: bool | None = None  # every KV cache group full attention (None: not read yet)
        self.refused_admission: tuple | None = None
        self.admissions_memo = 0
        self.inner_ns = 0  # the hook's time inside vLLM's call on the exact path (allocation.py)
        # allocation.py's fast path: blocks it may still hand out in this schedule() (-1: outside
        # schedule(), or every call exact), and the KV cache groups' block sizes (None: not read yet).
        self.room = -1
        self.group_sizes: tuple[int, ...] | None = None
        self.single_size = 0  # the block size when there is one group with a bound, else 0
        self.step_sizes: tuple[int, ...] | None = None  # allocation.whole_step's groups (None: not read yet)
        self.whole_steps = 0  # schedule() calls run with vLLM's own allocate_slots (allocation.py)
        self.running_steps = 0  # those run with it until the first admission (allocation.py)
        self.taken_total = 0  # blocks get_new_blocks handed out (steps.py: recent use)
        # The arranged head of vLLM's free queue (arrange_head): how many of its first blocks are
        # good, the ids arranged there (a superset: some handed out since), and the blocks handed
        # out from it that the tracker has not seen yet.
        self.head_ok = 0
        self.head_ids: set[int] = set()
        self.pending: list = []
        self.loose = 1  # > 0: free blocks in backed pages may lie outside the head (arrange_head)
        self.in_flight: deque[int] = deque()  # steps scheduled with work, not yet processed
        self.sync_errors = 0
        free = [block.block_id for block in pool.blocks if block.ref_cnt == 0 and not block.is_null]
        self.tracker.adopt(free)  # the null block (and anything else held) is backed now
        for block in pool.blocks:
            if not block.is_null and block.ref_cnt == 0 and block.block_hash is not None:
                self.cached[block.block_id] = block
                self.cached_at[block.block_id] = self.now
        self.tracker.evict_cached = self.evict_cached
        self.tracker.on_release = self.head_lost
        self.tracker.on_backed = self.backed
        self.tracker.cached_count = lambda: len(self.cached)
        self.hooks = None  # steps.StepHooks, once the scheduler made its first step
        LIVE.add(self)

    # ------------------------------------------------------------------ tracker <-> pool
    def sync(self, block) -> None:
        if self.pending:
            self.settle()
        if block.is_null:
            return
        bid = block.block_id
        hashed = block.block_hash is not None
        held = block.ref_cnt > 0 or hashed
        tracker = self.tracker
        free = tracker.is_free(bid)
        if held and free:
            tracker.take(bid)  # backed already (choose/ensure ran before); else backs it now
        elif not held and not free and block.prev_free_block is not None:
            # Only a block back in vLLM's free queue is free: one outside it with ref 0 and no hash
            # is held by a manager itself (a sink block: hold_outside_queue).
            tracker.give(bid)
            self.loose += 1  # free where it lies in vLLM's queue (evicted), not at its head
        if block.ref_cnt == 0 and hashed:
            if bid not in self.cached:
                self.cached[bid] = block
                self.cached_at[bid] = self.now
        else:
            self.cached.pop(bid, None)

    def sync_all(self) -> None:
        for block in self.pool.blocks:
            self.sync(block)

    def hold_outside_queue(self) -> list[int]:
        """Once, before the first step: blocks a KV cache manager took from vLLM's free queue
        when it was built, after BlockPool.__init__ made this adapter (vLLM 0.24-0.26's
        SinkFullAttentionManager pops its sink blocks, ref 0, no hash), are held, not free:
        backed, never released, never moved in the queue. Returns their ids."""
        self.settle()
        tracker = self.tracker
        # Outside the queue: no prev link (vLLM's queue links every member, fake head included).
        ids = [b.block_id for b in self.pool.blocks
               if not b.is_null and b.ref_cnt == 0 and b.block_hash is None and b.prev_free_block is None
               and tracker.is_free(b.block_id)]
        if not ids:
            return ids
        # take() backs a page now if needed; on_backed would move that page's free blocks to the
        # queue's head, other sink blocks among them: off here, and `loose` (head_lost) makes
        # arrange_head look for the blocks of those pages later.
        on_backed, tracker.on_backed = tracker.on_backed, None
        try:
            for bid in ids:
                tracker.take(bid)
        finally:
            tracker.on_backed = on_backed
            self.head_lost()
        return ids

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
        hits = free_hits(new_computed_blocks)
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
        when those fall short, pages are backed for the lowest free blocks. The slow path: most
        calls find their blocks in the arranged head (arrange_head)."""
        if n <= 0:
            return
        self.settle()
        tracker, blocks = self.tracker, self.pool.blocks
        nb = tracker.nbfree
        picked = []
        if nb:
            fb, want = tracker.fb, min(n, nb)
            block = fb.find(1)
            while block >= 0:
                picked.append(blocks[block])
                if len(picked) >= want:
                    break
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

    # ------------------------------------------------------------------ the arranged head
    # vLLM hands out blocks from the head of its free queue. The adapter keeps the first
    # `head_ok` blocks there known to be good (free in backed pages, or cached: backed too), so
    # that a get_new_blocks for at most that many needs no choice (scheduler_side.py: its fast
    # path, ~9 calls a step under load, each a few us of choose() and the tracker otherwise):
    # the blocks it hands out are noted in `pending` and reach the tracker in one batch
    # (settle()) before anything reads the tracker again.
    #
    # head_ok is a lower bound, kept by what vLLM does to its queue (BlockPool, 0.24-0.26):
    # get_new_blocks pops n from the head (-n); touch removes cached blocks from anywhere (-1
    # for each that may lie in the head: those in `head_ids`); free_blocks prepends the freed
    # blocks without a hash (in use until now, so backed: +their number) and appends the rest to
    # the tail (no change); choose() prepends what it picks and get_new_blocks pops those (-n).
    # A page released (tracker.flush) may hold blocks in the head: head_ok drops to 0. vLLM
    # touches a request's prefix hits before it takes new blocks for it, so a hit arranged in
    # the head is never handed out from under it.
    def settle(self) -> None:
        """Gives the tracker the blocks get_new_blocks handed out from the arranged head."""
        pending = self.pending
        if pending:
            self.pending = []
            self.taken(pending)

    def arrange_head(self, target: int) -> int:
        """Makes the first `target` blocks of vLLM's free queue good (see above), as far as good
        blocks exist, once less than half of it is left: free blocks in backed pages that are
        not at the head (lowest first), then cached blocks (LRU first). Free blocks of new pages
        go to the head when backed (backed()), freed ones vLLM puts there itself: only those
        freed in place (evictions) are looked for, and only when there may be some (`loose`: a
        scan of the free flags reads the whole cache's worth). Returns how many it moved."""
        head = self.head_ok
        if 2 * head >= target:
            return 0
        self.settle()
        ids = self.head_ids
        if not head or len(ids) > 4 * target + 256:  # stale ids (handed out since) pile up
            ids.clear()
            head = self.head_ok = 0
        k = target - head
        tracker = self.tracker
        picked = self._loose_free(k)
        if len(picked) < k and tracker.prefer_cached:  # "keep": cached blocks only when evicted
            # Arranged cached blocks lead `cached` (LRU) until vLLM hands them out: the walk past
            # them is at most what is left of the head (under half the target).
            protected = self.protected
            for bid, block in self.cached.items():
                if bid not in ids and bid not in protected:
                    picked.append(block)
                    if len(picked) >= k:
                        break
        self._to_head(picked)
        return len(picked)

    def _loose_free(self, k: int) -> list:
        """Up to k free blocks in backed pages that are not in the head (lowest first), when some
        may be (`loose`); `loose` is 0 again once every such block was seen."""
        tracker, ids, blocks = self.tracker, self.head_ids, self.pool.blocks
        picked = []
        left = tracker.nbfree if self.loose else 0
        if not left:
            return picked
        fb = tracker.fb
        block = fb.find(1)
        while block >= 0:
            if block not in ids:
                picked.append(blocks[block])
                if len(picked) >= k:
                    return picked
            left -= 1
            if not left:  # every one seen (a find past the last one reads to the end)
                break
            block = fb.find(1, block + 1)
        self.loose = 0
        return picked

    def backed(self, block_ids: list[int]) -> None:
        """tracker.on_backed: free blocks of pages just backed go to the head of vLLM's queue (in
        front of the arranged head, which they extend): handed out before cached blocks, and
        with the loose ones (lowest first: the backed part of the cache stays compact)."""
        blocks = self.pool.blocks
        picked = [blocks[b] for b in block_ids if blocks[b].ref_cnt == 0 and blocks[b].block_hash is None]
        if self.loose:
            new = {block.block_id for block in picked}
            picked += [block for block in self._loose_free(self.tracker.nbfree) if block.block_id not in new]
            picked.sort(key=lambda block: block.block_id)
        self._to_head(picked)

    def _to_head(self, picked: list) -> None:
        """Moves good blocks (not in the head yet) to the front of vLLM's free queue, in order;
        the head they extend counts them."""
        if not picked:
            return
        queue, ids = self.pool.free_block_queue, self.head_ids
        for block in picked:
            queue.remove(block)
            ids.add(block.block_id)
        queue.prepend_n(picked)
        self.head_ok += len(picked)

    def head_lost(self) -> None:
        """Nothing in vLLM's queue head is known good any more (a page was released)."""
        self.head_ok = 0
        self.head_ids.clear()
        self.loose = 1  # free blocks in backed pages may be anywhere: look for them once

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
        cached (a hash: kept by the prefix cache, its page stays backed), or free. vLLM put the
        free ones at the head of its queue: they extend the arranged head (backed: in use until
        now). The caller (scheduler_side.free_blocks) settled the head's blocks before vLLM freed."""
        tracker, cached = self.tracker, self.cached
        fb, ids = tracker.fb, self.head_ids
        head, bad = 0, False
        for block in blocks:
            if block.ref_cnt > 0 or block.is_null:
                continue
            bid = block.block_id
            if block.block_hash is not None:
                if bid not in cached:
                    cached[bid] = block
                    self.cached_at[bid] = self.now
            else:
                if not tracker.is_free(bid):
                    tracker.give(bid)
                if fb[bid]:
                    head += 1
                    ids.add(bid)  # in the head now: arrange_head must not count it twice
                else:
                    bad = True  # freed twice, and unbacked since: the head is not known good
        if bad:
            self.head_lost()
        else:
            self.head_ok += head

    def snapshot(self) -> dict:
        self.settle()
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
            running_steps=self.running_steps,
            admissions_memo=self.admissions_memo,
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
    @staticmethod
    def _held(block) -> bool:
        """vLLM's view: in use, cached, or outside its free queue (sink blocks)."""
        return block.ref_cnt > 0 or block.block_hash is not None or block.prev_free_block is None

    def held_blocks(self) -> list[int]:
        return [b.block_id for b in self.pool.blocks if b.is_null or self._held(b)]

    def mismatches(self) -> list[str]:
        """Differences between the pool and the tracker (empty when they agree)."""
        out = []
        for block in self.pool.blocks:
            if block.is_null:
                continue
            held = self._held(block)
            if held == self.tracker.is_free(block.block_id):
                out.append(f"block {block.block_id}: pool {'held' if held else 'free'}, tracker the opposite")
        return out

    def report(self, text: str) -> None:
        important(f"{self.label}: {text}", logging.ERROR)
