"""Start-up of a managed cache: back the two padding blocks of every KV tensor the moment the
tensor exists, and the fallback that backs a cache fully when it cannot be managed.

PagedAttentionCache allocates each tensor with torch.empty and marks it with
torch._dynamo.mark_static_address right away, then zero-fills the padding block the engine reads
("read trash"). A short-lived wrapper of mark_static_address backs the padding pages before that
write, so the write lands in real memory.
"""

from __future__ import annotations

import contextlib

from ... import capi as C
from ...tracker import BackingRefused
from .names import ENGINE


def kv_tensors(cache) -> list:
    """Every KV tensor of the cache, keys first (the order the layout's spans follow)."""
    return list(cache.key_cache) + list(cache.value_cache)


def zero_read_trash(cache, tensors) -> None:
    """The first padding block is read by padded positions: it must read zeros."""
    num_blocks, block_size = cache.num_blocks, cache.block_size
    for tensor in tensors:
        tensor[num_blocks * block_size : (num_blocks + 1) * block_size].zero_()


@contextlib.contextmanager
def pin_padding_on_mark(cache, ctx, pins: list):
    """Backs the padding blocks of each KV tensor as soon as the cache marks it static; appends each
    pinned tensor's address to `pins`."""
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
            pins.append(pin_padding(cache, ctx, tensor))
        return result

    dynamo.mark_static_address = mark_static_address
    try:
        yield
    finally:
        dynamo.mark_static_address = real


def pin_padding(cache, ctx, tensor) -> int:
    """Backs the 2 padding blocks of one tensor (waiting for the budget); returns its address."""
    block_size, num_blocks = cache.block_size, cache.num_blocks
    row_bytes = tensor.stride(0) * tensor.element_size()
    start = tensor.data_ptr() + num_blocks * block_size * row_bytes
    length = 2 * block_size * row_bytes
    status = ctx.acquire_waiting([(start, length)], "the KV cache's padding blocks")
    if status != C.OK:
        raise BackingRefused(
            f"{ENGINE}: the KV cache's 2 padding blocks could not be backed ({C.STATUS_NAMES.get(status, status)}: "
            f"{ctx.api.last_error()}) within KVCACHED_HOOK_START_WAIT_S={ctx.settings.start_wait_s:g} s; other "
            "engines hold the budget, or the budget (KVCACHED_BUDGET / KVCACHED_GPU_UTILIZATION or the kvctl "
            "limit) is too small to start this engine"
        )
    return tensor.data_ptr()


def back_fully(cache, ctx) -> None:
    """Fallback when the cache cannot be managed: back every byte so the engine is correct."""
    tensors = kv_tensors(cache)
    # Tensors smaller than a page were passed to the real allocator: already real memory.
    ranges = [(t.data_ptr(), t.numel() * t.element_size()) for t in tensors if ctx.api.region_info(t.data_ptr())]
    status = ctx.api.acquire(ranges) if ranges else C.OK
    if status != C.OK:
        raise BackingRefused(
            f"{ENGINE}: could not back the KV cache ({C.STATUS_NAMES.get(status, status)}: {ctx.api.last_error()})"
        )
    zero_read_trash(cache, tensors)


__all__ = ["kv_tensors", "zero_read_trash", "pin_padding_on_mark", "pin_padding", "back_fully"]
