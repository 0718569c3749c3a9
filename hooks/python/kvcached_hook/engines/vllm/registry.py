"""In-process meeting point of vLLM's GPU worker (which allocates the KV tensors) and its scheduler
(which decides which blocks are in use).

With one GPU, vLLM runs the worker inside the EngineCore process (UniProcExecutor), and builds the
KV tensors before the scheduler exists. The worker side publishes a `WorkerCache` here; the
scheduler's BlockPool, when it is created with the same number of blocks, claims it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ...pages import KVLayout


@dataclass
class WorkerCache:
    """The KV tensors of one worker, as lazy shim regions."""

    api: object
    layout: KVLayout  # every raw KV tensor, block b = bytes [b*P, (b+1)*P) of each
    num_blocks: int
    device_index: int
    label: str
    pinned_units: list[int] = field(default_factory=list)  # the null block's pages
    pinned: bool = False  # the null block backed (worker.pin_null_block, when a scheduler takes it)
    managed: bool = True  # False: backed fully (layout not understood); the scheduler leaves it alone
    claimed: bool = False
    tensors: list = field(default_factory=list)  # keeps the raw tensors alive as long as the entry
    pool: object = None  # the MemPool the tensors came from (lives as long as they do)
    remote: bool = False  # driven by a scheduler in another process (tensor parallel, tp.py)


_lock = threading.Lock()
_caches: list[WorkerCache] = []
_executor = None  # weakref to this process's vLLM executor (the scheduler's way to its workers)


def set_executor(executor) -> None:
    import weakref

    global _executor
    _executor = weakref.ref(executor)


def executor():
    return _executor() if _executor is not None else None


def publish(cache: WorkerCache) -> None:
    with _lock:
        _caches.append(cache)


def claim(num_blocks: int) -> WorkerCache | None:
    """The unclaimed, managed worker cache with `num_blocks` blocks, if one was published."""
    with _lock:
        for cache in _caches:
            if cache.managed and not cache.claimed and cache.num_blocks == num_blocks:
                cache.claimed = True
                return cache
        return None


def unclaimed_others(claimed: WorkerCache) -> list[WorkerCache]:
    """Managed caches no scheduler will drive (a second KV build in this process): they must be
    backed fully by the caller."""
    with _lock:
        return [c for c in _caches if c is not claimed and c.managed and not c.claimed and not c.remote]


def caches() -> list[WorkerCache]:
    with _lock:
        return list(_caches)


def clear() -> None:
    """Forgets every published cache (tests)."""
    global _executor
    with _lock:
        _caches.clear()
        _executor = None
