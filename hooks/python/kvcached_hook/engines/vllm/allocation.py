"""KVCacheManager.allocate_slots under the hook: a bounded fast path, and the exact path.

allocate_slots runs once per scheduled request and step, so what the hook adds there is paid
~64 times a step. The exact path (below) learns the allocation's demand from vLLM's own
get_num_blocks_to_allocate, backs exactly that before vLLM compares it with get_num_free_blocks,
and clamps that count while the shim refuses; it needs two more hooked calls per request. Most
calls need none of it: when an upper bound of the blocks a call can take is free in backed pages
or in cached blocks (get_new_blocks reuses those first, blocks.py), nothing in it can need a page
or be refused, and vLLM's allocate_slots runs as it is, with no hook inside it.

Room: at the start of each schedule() the adapter notes how many blocks are free in backed pages
plus cached (`adapter.room`; -1 while the shim refuses or a sharing verdict holds: every call then
takes the exact path). Each fast call takes its bound off the room, so the room never exceeds
what is really there (a call takes at most its bound); an exact call reads the room again.

Bound, per KV cache group of block size B: cdiv(new + lookahead + external + encoder tokens, B)
+ 1. A group's blocks cover its computed tokens already and prefix hits bring their own blocks, so
a call takes at most cdiv(tokens it adds, B) new blocks; the + 1 covers vLLM's copy-on-write block
for a partial prefix hit. It holds for the managers named in _BOUNDED; a cache with any other
manager (Mamba, attention sinks) always takes the exact path. Calls with prefix hits (admissions)
take the exact path too: their hits are cached blocks that must not be reused for the call itself.

The exact path hooks the coordinator's and the pool's methods on the instances, for the duration
of one call (an instance attribute shadows the class's method), so vLLM's classes stay unpatched
for every other caller and the fast path costs nothing inside vLLM.
"""

from __future__ import annotations

from .blocks import _NO_BLOCKS, PoolAdapter
from .share_policy import BACKED_ONLY, OK, REFUSE, RUN

_BOUNDED = frozenset({
    "FullAttentionManager", "RSWAManager", "SlidingWindowManager", "ChunkedLocalAttentionManager", "CrossAttentionManager",
})
_COUNT, _FREE = "get_num_blocks_to_allocate", "get_num_free_blocks"
_MISSING = object()
NO_BOUND = 1 << 62


def group_block_sizes(manager) -> tuple[int, ...]:
    """Block sizes of the manager's KV cache groups when every group's manager is bounded (see
    the module's docstring); () when one is not: that cache takes the exact path every time."""
    try:
        managers = manager.coordinator.single_type_managers
        if all(type(m).__name__ in _BOUNDED for m in managers):
            return tuple(int(m.block_size) for m in managers)
    except (AttributeError, TypeError, ValueError):
        pass
    return ()


def bound(adapter: PoolAdapter, manager, num_new_tokens: int, kwargs: dict) -> int:
    """An upper bound of the blocks one allocate_slots call can take (the module's docstring);
    NO_BOUND when the cache has a manager without one."""
    sizes = adapter.group_sizes
    if sizes is None:
        sizes = adapter.group_sizes = group_block_sizes(manager)
        adapter.single_size = sizes[0] if len(sizes) == 1 else 0
    if not sizes:
        return NO_BOUND
    get = kwargs.get
    tokens = (num_new_tokens + get("num_lookahead_tokens", 0) + get("num_external_computed_tokens", 0)
              + get("num_encoder_tokens", 0))
    return sum(-(-tokens // size) + 1 for size in sizes)


def room(adapter: PoolAdapter) -> int:
    """Blocks the fast path may hand out from now on in this step (the module's docstring)."""
    tracker, hooks = adapter.tracker, adapter.hooks
    verdict = hooks.share.verdict if hooks is not None else None
    if tracker.pressure or (verdict is not None and verdict.action != OK):
        return -1
    return tracker.nbfree + adapter.reusable_cached()


def _shadow(owner, name: str, make):
    """Shadows owner.name on the instance with make(current); returns what to restore."""
    saved = vars(owner).get(name, _MISSING)
    setattr(owner, name, make(getattr(owner, name)))
    return saved


def _restore(owner, name: str, saved) -> None:
    if saved is _MISSING:
        vars(owner).pop(name, None)
    else:
        setattr(owner, name, saved)


def _counting(adapter: PoolAdapter):
    def make(original):
        def get_num_blocks_to_allocate(request_id, num_tokens, new_computed_blocks, *args, **kwargs):
            count = original(request_id, num_tokens, new_computed_blocks, *args, **kwargs)
            if kwargs.get("apply_admission_cap"):
                adapter.demand = None  # an admission estimate for the whole sequence: no backing
            elif count or any(new_computed_blocks or ()):
                adapter.note_demand(count, new_computed_blocks)
            else:  # nothing to back or protect
                adapter.demand = 0
                adapter.protected = _NO_BLOCKS
            return count

        return get_num_blocks_to_allocate

    return make


def _clamping(adapter: PoolAdapter):
    def make(original):
        def get_num_free_blocks():
            count = original()
            if not adapter.demand and not adapter.tracker.pressure:
                return count
            return adapter.free_count(count)

        return get_num_free_blocks

    return make


def allocate_exactly(orig, manager, adapter: PoolAdapter, request, num_new_tokens, args, kwargs):
    """The exact path: the sharing policy's admission decision, then vLLM's allocate_slots with
    the demand backed (or the free count clamped) in between its count and its check."""
    with adapter.lock:
        hooks, tracker = adapter.hooks, adapter.tracker
        # The sharing policy may hold admissions back (share_policy.py): None, as for a full
        # cache, before vLLM touches anything.
        verdict = hooks.share.verdict if hooks is not None else None
        stopping = verdict is not None and verdict.action != OK  # SharePolicy.stopping, inline
        decision = hooks.share.admission(request, hooks.scheduler()) if stopping else RUN
        if decision == REFUSE:
            return None
        backed_only = decision == BACKED_ONLY
        if backed_only:
            no_new_pages = tracker.no_new_pages
            tracker.no_new_pages = True
        coordinator, pool = manager.coordinator, manager.block_pool
        saved_count = _shadow(coordinator, _COUNT, _counting(adapter))
        saved_free = _shadow(pool, _FREE, _clamping(adapter))
        try:
            return orig(manager, request, num_new_tokens, *args, **kwargs)
        finally:
            _restore(pool, _FREE, saved_free)
            _restore(coordinator, _COUNT, saved_count)
            if backed_only:
                tracker.no_new_pages = no_new_pages
            adapter.end_allocation()
            if adapter.room >= 0:  # inside schedule(): what is there now
                adapter.room = room(adapter)

