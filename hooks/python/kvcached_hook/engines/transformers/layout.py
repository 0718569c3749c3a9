"""The byte layout of a PagedAttentionCache's KV tensors, as pages.KVLayout.

Each tensor has shape ((num_blocks + 2) * block_size, kv_heads, head_dim): block b is rows
[b*bs, (b+1)*bs) of every tensor, blocks num_blocks and num_blocks+1 are padding. Anything else
(non-contiguous tensors, mixed shapes, tensors outside lazy shim regions) raises ValueError: the
caller then backs the cache fully instead of managing it.
"""

from __future__ import annotations

from ... import capi as C
from ...pages import KVLayout, TensorSpan
from .startup import kv_tensors


def layer_names(cache, per_group: int) -> list[tuple[int, ...]]:
    """For each tensor index j within a group: the model layers whose KV it holds."""
    mapping = getattr(cache, "layer_index_to_group_indices", {}) or {}
    layers: list[list[int]] = [[] for _ in range(per_group)]
    for layer, (_, j) in sorted(mapping.items()):
        if 0 <= j < per_group:
            layers[j].append(layer)
    return [tuple(x) for x in layers]


def build_layout(cache, api) -> KVLayout:
    keys = list(cache.key_cache)
    tensors = kv_tensors(cache)
    block_size, num_blocks = cache.block_size, cache.num_blocks
    first = tensors[0]
    row_bytes = first.stride(0) * first.element_size()
    total_rows = first.shape[0]
    for tensor in tensors:
        if not tensor.is_contiguous() or tensor.shape != first.shape or tensor.dtype != first.dtype:
            raise ValueError("KV tensors are not contiguous tensors of one shape and dtype")
    if total_rows % block_size or total_rows // block_size != num_blocks + 2:
        raise ValueError(f"KV tensor rows {total_rows} != (num_blocks + 2) x block_size")
    names = layer_names(cache, len(keys))
    spans, page_size = [], None
    for index, tensor in enumerate(tensors):
        addr, nbytes = tensor.data_ptr(), tensor.numel() * tensor.element_size()
        info = api.region_info(addr)
        if info is None or info.kind != C.REGION_LAZY:
            raise ValueError(f"KV tensor {index} at {addr:#x} is not in a lazy shim region")
        if not (info.base <= addr and addr + nbytes <= info.base + info.size):
            raise ValueError(f"KV tensor {index} does not fit its shim region")
        if page_size is None:
            page_size = info.page_size
        elif page_size != info.page_size:
            raise ValueError("KV tensors live in regions of different page sizes")
        j = index % len(keys)
        spans.append(TensorSpan(addr, nbytes, info.base, name=f"{'KV'[index // len(keys)]}[{j}]", layers=names[j]))
    return KVLayout(spans, block_size * row_bytes, num_blocks + 2, page_size)


__all__ = ["build_layout", "layer_names"]
