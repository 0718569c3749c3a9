"""PageAwareFreeList: a drop-in for the deque of free block ids that engines keep.

transformers' BlockManager keeps its free ("uninitialized") blocks in a collections.deque and only
uses len(), popleft(), append() and extend() on it. Replacing that deque with this object lets the
hook (1) know exactly which blocks are held, and (2) choose which free block is handed out next:
the lowest-addressed free block whose pages are already backed, else the lowest free block, so the
backed part of the cache stays compact and freed pages empty out.

Every other deque method an engine might call is provided with deque semantics where they make
sense for a set of free blocks (order is by address, not by insertion).
"""

from __future__ import annotations

from .tracker import KVPageTracker


class PageAwareFreeList:
    __slots__ = ("_tracker",)

    def __init__(self, tracker: KVPageTracker) -> None:
        self._tracker = tracker

    @property
    def tracker(self) -> KVPageTracker:
        return self._tracker

    # ---- size and membership ----
    def __len__(self) -> int:
        return self._tracker.nfree

    def __bool__(self) -> bool:
        return self._tracker.nfree > 0

    def __contains__(self, block: object) -> bool:
        return isinstance(block, int) and self._tracker.is_free(block)

    def __iter__(self):
        return self._tracker.iter_free()

    def count(self, block: int) -> int:
        return 1 if block in self else 0

    def __repr__(self) -> str:
        return f"PageAwareFreeList(free={self._tracker.nfree}, backed={self._tracker.nbfree})"

    # ---- taking blocks ----
    def popleft(self) -> int:
        tracker = self._tracker
        with tracker.lock:
            block = tracker.pick()
            if block < 0:
                raise IndexError("pop from an empty deque")
            tracker.take(block)
            return block

    # The engine does not care which end a free block comes from; both give the best one.
    pop = popleft

    def remove(self, block: int) -> None:
        tracker = self._tracker
        with tracker.lock:
            if not tracker.is_free(block):
                raise ValueError(f"{block} is not in the free list")
            tracker.take(block)

    # ---- returning blocks ----
    def append(self, block: int) -> None:
        self._tracker.give(block)

    appendleft = append

    def extend(self, blocks) -> None:
        tracker = self._tracker
        with tracker.lock:
            for block in blocks:
                tracker.give(block)

    extendleft = extend
