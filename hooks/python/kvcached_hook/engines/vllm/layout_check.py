"""Is a vLLM KV view "blocks first"? Manager block b must be bytes [b*P, (b+1)*P) of its raw tensor.

vLLM reshapes each raw int8 KV tensor into the attention backend's layout. The adapter backs pages
per manager block, so it must know that everything a block's KV occupies lies inside that block's
P bytes. True for vLLM's CUDA attention layouts (FlashAttention, FlashInfer, Triton, MLA), where the
block dimension is outermost in every stride order, also when a kernel block is a fraction of a
manager block. Checked on the actual views after vLLM made them, so an unknown layout is noticed.
"""

from __future__ import annotations


def view_problem(view, raw_addr: int, raw_nbytes: int, num_blocks: int) -> str | None:
    """None when `view` (a tensor living in the raw tensor [raw_addr, raw_addr + raw_nbytes)) keeps
    block b inside bytes [b*P, (b+1)*P) with P = raw_nbytes // num_blocks; else what is wrong."""
    if raw_nbytes % num_blocks:
        return f"raw tensor of {raw_nbytes} bytes is not a whole number of {num_blocks} blocks"
    block = raw_nbytes // num_blocks
    item = view.element_size()
    offset = view.data_ptr() - raw_addr
    shape, strides = tuple(view.shape), tuple(view.stride())
    if any(s < 0 for s in strides):
        return "negative stride"
    for dim, (size, stride) in enumerate(zip(shape, strides)):
        # The block dimension: a multiple of num_blocks long (kernel blocks may split a manager
        # block into k pieces), k pieces spanning exactly P bytes.
        if size == 0 or size % num_blocks:
            continue
        per_block = size // num_blocks
        if stride * item * per_block != block:
            continue
        inner = sum((n - 1) * st for d, (n, st) in enumerate(zip(shape, strides)) if d != dim) * item + item
        if inner > stride * item:
            continue
        if not (0 <= offset and offset + inner <= stride * item):
            return f"view starts {offset} bytes into its raw tensor, outside the first kernel block"
        return None
    return f"no blocks-first dimension in shape {shape} strides {strides} (block of {block} bytes)"


def iter_views(value):
    """Tensors inside a kv_caches value (a tensor, or nested lists/tuples of tensors)."""
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from iter_views(item)
    elif hasattr(value, "data_ptr") and hasattr(value, "stride"):
        yield value
