"""torch.cuda.MemPool on the shim's PyTorch pluggable-allocator entry points.

Tensors allocated inside `use_pool(...)` get their memory from kvcached_torch_malloc, which answers
requests of one page or more with a lazy region (reserved VA aliased to the zero page, backed only
where the hook acquires pages). Imports torch lazily: only called once an engine builds its cache.
"""

from __future__ import annotations

import contextlib
import threading

from . import capi as C
from ._log import logger

_lock = threading.Lock()
_allocator = None  # one CUDAPluggableAllocator per process (per library path)
_allocator_path: str | None = None


def available(api) -> str | None:
    """None when a pool can be built, else the reason it cannot."""
    if api is None:
        return "the kvcached shim is not loaded"
    if not getattr(api, "has_torch_allocator", False):
        return f"the shim does not export {C.TORCH_MALLOC}/{C.TORCH_FREE}"
    if not getattr(api, "path", None):
        return "the shim's file path is unknown (set KVCACHED_SHIM_PATH)"
    try:
        import torch
    except ImportError:
        return "torch is not importable"
    memory = getattr(torch.cuda, "memory", None)
    if memory is None or not hasattr(memory, "CUDAPluggableAllocator") or not hasattr(torch.cuda, "MemPool"):
        return f"torch {torch.__version__} has no CUDAPluggableAllocator/MemPool"
    if not hasattr(torch.cuda, "use_mem_pool"):
        return f"torch {torch.__version__} has no torch.cuda.use_mem_pool"
    return None


def _pluggable_allocator(api):
    global _allocator, _allocator_path
    import torch

    with _lock:
        if _allocator is None or _allocator_path != api.path:
            _allocator = torch.cuda.memory.CUDAPluggableAllocator(api.path, C.TORCH_MALLOC, C.TORCH_FREE)
            _allocator_path = api.path
            logger.debug("pluggable allocator on %s", api.path)
        return _allocator


def make_pool(api):
    """A new MemPool whose segments come from the shim (one lazy region per segment).

    no_split: every tensor gets its own segment, so no two tensors share a region page.
    """
    import torch

    allocator = _pluggable_allocator(api).allocator()
    try:
        return torch.cuda.MemPool(allocator, no_split=True)
    except TypeError:  # older torch: no no_split keyword
        return torch.cuda.MemPool(allocator)


@contextlib.contextmanager
def use_pool(pool, device):
    """Routes this thread's allocations on `device` to `pool`."""
    import torch

    with torch.cuda.use_mem_pool(pool, device=device):
        yield
