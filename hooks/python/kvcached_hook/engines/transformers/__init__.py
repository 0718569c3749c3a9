"""Adapter for Hugging Face transformers' continuous batching (transformers.generation.continuous_batching).

What transformers 5.x does (read from its source, checked against 5.17):
- PagedAttentionCache.__init__ allocates 2 x (layers per group) tensors with torch.empty, each of
  shape ((num_blocks + 2) * block_size, kv_heads, head_dim): block b is rows [b*bs, (b+1)*bs) of
  every tensor. Blocks num_blocks and num_blocks+1 are padding (read trash, zero-filled; write
  trash), never handed out.
- BlockManager keeps free blocks in a deque `_uninit_block_ids` (popleft to allocate, append to
  free) and completed blocks of finished requests in `_init_block_ids` (a prefix cache, counted as
  free, evicted on demand by has_enough_free_blocks).
- Scheduler._allocate_blocks_if_needed -> PagedAttentionCache.allocate_blocks, which answers None
  ("no free blocks now"): the request waits, and starved active requests are offloaded (preempted)
  by the OffloadingManager.
- ContinuousBatchProcessor.prepare_next_batch schedules one step; the forward pass follows.

The package, one concern per module:
  names     the engine's name and module names
  patches   what is patched (a version-gated, all-or-nothing PatchSet) and when (armed at import,
            installed at the first PagedAttentionCache)
  wrappers  the wrappers themselves
  context   whether a cache is managed (the shared CacheContext, with this engine's test seam)
  startup   padding blocks backed the moment each tensor exists; the fully-backed fallback
  layout    the KV tensors as a pages.KVLayout
  adapter   one managed cache: tracker, engine callbacks, step hooks, snapshot
  demand    blocks the next step may allocate

The package exposes what kvcached_hook needs of every engine: arm (the import trigger), patch,
unpatch, adapters.
"""

from .adapter import CacheAdapter, adapters
from .names import ENGINE, MODULE
from .patches import activate, arm, is_armed, is_patched, patch, unpatch

__all__ = ["ENGINE", "MODULE", "CacheAdapter", "adapters", "arm", "activate", "patch", "unpatch", "is_armed", "is_patched"]
