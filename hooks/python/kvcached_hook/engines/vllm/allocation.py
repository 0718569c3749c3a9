"""KVCacheManager.allocate_slots under the hook: a bounded fast path, and the exact path.

allocate_slots runs once per scheduled request and step, so what the hook adds there is paid
~64 times a step. The exact path (below) learns the allocation's demand from vLLM's own
get_num_blocks_to_allocate, backs exactly that before vLLM compares it with get_num_free_blocks,
and clamps that count while the shim refuses; it needs two more hooked calls per request. Most
calls need none of it: when an upper bound of the blocks a call can take is free in backed pages
or in cached blocks (get_new_blocks reuses those first, blocks.py), nothing in it can need a page
or be refused, and vLLM's allocate_slots runs as it is, with no hook inside it.

Room: at the start of each schedule() the adapter notes how many blocks are free in backed pages
plus cached (`adapter.room`; -1 while a sharing verdict holds: every call then takes the exact path,
where the policy decides admissions). Each fast call takes its bound off the room, so the room never
exceeds what is really there (a call takes at most its bound); an exact call reads the room again.
A refusal does not end the fast path: a call whose bound fits the room needs no page, and vLLM
decides it as the exact path would under the clamp (its count passes either way). Under a binding
budget the shim refuses in most steps; when every call after the refusal went the exact way, the
CPU bench under KVCACHED_BUDGET=512M made 3.1 exact calls a step, 1.4 now.

Bound, per KV cache group of block size B, for a call without prefix hits: cdiv(c + t, B) -
cdiv(c, B), c the request's computed tokens and t its new + lookahead + external + encoder tokens:
a group's blocks cover the computed tokens already (vLLM allocated them with the tokens, and keeps
a skipped block's place with its null block), so the call takes blocks only for the tokens beyond
(0 for most decoding steps, which then take the fast path even with no room). With prefix hits
(bound() only: those calls take the exact path), cdiv(t, B) + 1, the + 1 for vLLM's copy-on-write
block of a partial hit. It holds for the managers named in _BOUNDED; a cache with any other
manager (Mamba, attention sinks) always takes the exact path. Calls with prefix hits (admissions)
take the exact path too: their hits are cached blocks that must not be reused for the call itself.

The exact path hooks the coordinator's and the pool's methods on the instances, for the duration
of one call (an instance attribute shadows the class's method), so vLLM's classes stay unpatched
for every other caller and the fast path costs nothing inside vLLM.

Whole steps: even the fast path is a Python call per scheduled request (~1 us each, 100+ a step
under load). When a bound of the blocks the whole schedule() can take is free in backed (and,
with no admission, cached) blocks, schedule() runs with vLLM's own allocate_slots on the manager
instance: no hook at all per request. Per KV cache group of block size B, with R requests
scheduled (the running ones plus what may be admitted), each adding t_i = new_i + lookahead
tokens, sum(new_i) <= the step's token budget: the blocks taken are at most
sum(cdiv(t_i, B) + 1) <= (budget + R * (lookahead + B - 1)) // B + R. Admissions may hit the
prefix cache, and their hits come out of the cached blocks: with one possible, only free backed
blocks count. Not for caches whose managers take encoder or external (KV connector) tokens.

Running steps: under a binding budget the queue's possible admissions almost never fit the room
(each needs its whole prompt's blocks), so whole steps are rare there (CPU bench under
KVCACHED_BUDGET=512M: 0.1 a step), and every running request paid the per-call path (~50 calls a
step). vLLM schedules the running requests first, then admits from the queue in a loop whose every
turn starts with Scheduler._select_waiting_queue_for_scheduling (0.24-0.26). When the running
requests alone fit the room (whole_step's bound with no admission), schedule() starts with
vLLM's own allocate_slots, and the first such call puts the hook back, with the room read again,
for the admissions.

Refused admissions tried again: a queued request that the budget refused is decided, at its next
tries, from the counts of its last one when nothing they depend on changed (below, before
admission_key): no shadows and no call into vLLM for an answer that is None again.
"""

from __future__ import annotations

import types
from time import perf_counter_ns as perf

from .blocks import _NO_BLOCKS, PoolAdapter, free_hits
from .share_policy import BACKED_ONLY, OK, REFUSE, RUN

_BOUNDED = frozenset({
    "FullAttentionManager", "RSWAManager", "SlidingWindowManager", "ChunkedLocalAttentionManager", "CrossAttentionManager",
})
_COUNT, _FREE = "get_num_blocks_to_allocate", "get_num_free_blocks"
_MISSING = object()
NO_BOUND = 1 << 62


def group_block_sizes(manager, bounded: frozenset[str] = _BOUNDED) -> tuple[int, ...]:
    """Block sizes of the manager's KV cache groups when every group's manager is in `bounded`
    (see the module's docstring); () when one is not: that cache takes the exact path every time."""
    try:
        managers = manager.coordinator.single_type_managers
        if all(type(m).__name__ in bounded for m in managers):
            return tuple(int(m.block_size) for m in managers)
    except (AttributeError, TypeError, ValueError):
        pass
    return ()


def bound(adapter: PoolAdapter, manager, request, num_new_tokens: int, kwargs: dict) -> int:
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
    if get("new_computed_blocks") is None:
        # No prefix hit: the request's blocks cover its computed tokens (in every group), so the
        # call takes blocks for the tokens beyond them only, and no copy-on-write block.
        computed = request.num_computed_tokens
        return sum(-(-(computed + tokens) // size) + (-computed // size) for size in sizes)
    return sum(-(-tokens // size) + 1 for size in sizes)


_STEP_BOUNDED = _BOUNDED - {"CrossAttentionManager"}  # encoder tokens are outside the budget


def step_block_sizes(scheduler) -> tuple[int, ...]:
    """Block sizes of the KV cache groups when a whole step has a bound (module docstring); ()
    when it has none (a manager outside _STEP_BOUNDED, a KV connector)."""
    if getattr(scheduler, "connector", None) is not None:
        return ()
    return group_block_sizes(getattr(scheduler, "kv_cache_manager", None), _STEP_BOUNDED)


_WALK_MIN = 16  # running requests from which walking them costs less than the per-call path


def whole_step(adapter: PoolAdapter, scheduler) -> bool:
    """True when no allocate_slots call of this step can need a page or a refusal (the module
    docstring): the blocks the step can take are within the room (adapter.room, set just
    before). First the O(1) bound; when it is too coarse and enough requests run, a walk over
    them that bounds each decoding request's new blocks by its computed tokens (below)."""
    room_now = adapter.room
    if room_now <= 0:
        return False
    sizes = adapter.step_sizes
    if sizes is None:
        sizes = adapter.step_sizes = step_block_sizes(scheduler)
    budget = int(getattr(scheduler, "max_num_scheduled_tokens", 0) or 0)
    if not sizes or budget <= 0:
        return False
    running = scheduler.running
    n_running = len(running)
    queued = len(scheduler.waiting) + len(getattr(scheduler, "skipped_waiting", None) or ())
    slots = int(scheduler.max_num_running_reqs) - n_running
    if queued > max(slots, 0) and slots > 0:
        return False  # a queue longer than the free slots: which ones are admitted is vLLM's choice
    lookahead = int(getattr(scheduler, "num_lookahead_tokens", 0) or 0)
    admit_need = 0
    admitted = min(queued, max(slots, 0))
    r = n_running + admitted
    if r == 0:
        return False
    need = 0
    for size in sizes:
        need += (budget + r * (lookahead + size - 1)) // size + r
    # The admissions' hits below only lower the room (it is free blocks + cached ones, and hits
    # come out of the cached): once the O(1) bound is over the room now, no count can fit and the
    # walk is all that is left. Under a binding budget (little room) this ends the step's judgement
    # at its first queued or running requests instead of after all of them, with the same answer.
    hopeless = need > room_now
    if hopeless and n_running < _WALK_MIN:
        return False
    if admitted:
        # Every queued request may be admitted; its prefix hits come out of the cached blocks.
        hits = 0
        for queue in (getattr(scheduler, "skipped_waiting", None) or (), scheduler.waiting):
            for request in queue:
                tokens = min(request.num_tokens, request.num_computed_tokens + budget) + lookahead
                for size in sizes:
                    admit_need += -(-tokens // size) + 1
                    hits += request.num_tokens // size
                if hopeless and admit_need > room_now:
                    return False
        nbfree = adapter.tracker.nbfree
        room_now = nbfree + max(0, room_now - nbfree - hits)
    if need <= room_now:
        return True
    if n_running < _WALK_MIN or admit_need > room_now:
        return False
    # Cheaper than vLLM's count, and still from above: a request with at most one token to go
    # (decoding; with asynchronous scheduling its computed tokens may run ahead) adds at most
    # 1 + 2 * lookahead tokens (its new and speculative tokens, and the lookahead slots) to the
    # computed ones its blocks already cover; every other one (a prefill, a resumed request) is
    # within the step's token budget, counted above. Only integers and two attributes a request.
    return running_fit(running, sizes, budget, lookahead, room_now, admit_need)


def running_fit(running, sizes, budget: int, lookahead: int, room_now: int, need: int = 0) -> bool:
    """Whether the running requests' blocks (walk_running's bound per group, on top of `need`
    already counted) fit `room_now`."""
    for size in sizes:  # one group, mostly: the loop over the requests is the cost
        # Each request walked adds at least one block to the need (below): past the room, stop.
        long, edge = walk_running(running, size, 1 + 2 * lookahead, room_now - need)
        need += edge
        if long:
            need += (budget + long * (lookahead + size - 1)) // size + long
        if need > room_now:
            return False
    return True


def walk_running(running, size: int, decode_tokens: int, limit: int = NO_BOUND) -> tuple[int, int]:
    """whole_step's walk for one group of block size `size`: (requests with more than one token
    to go, blocks the others can take adding up to decode_tokens each to their computed ones).
    whole_step's need grows by at least one block per long request and by each edge block, so
    once long + edge exceeds `limit` (the room left) the step cannot fit: the walk stops there,
    its counts then only known to exceed it."""
    long = edge = 0
    if decode_tokens <= size:
        # Then a decoding request takes at most one block: when its computed tokens fill their
        # last block (remainder 0) or leave fewer than decode_tokens free in it. The count of the
        # general formula below without its two divisions (half the walk's time, 128 requests).
        last = size - decode_tokens
        for request in running:
            computed = request.num_computed_tokens
            if request.num_tokens - computed > 1:
                long += 1
            else:
                rest = computed % size
                if not rest or rest > last:
                    edge += 1
                    if long + edge > limit:
                        break
        return long, edge
    for request in running:
        computed = request.num_computed_tokens
        if request.num_tokens - computed > 1:
            long += 1
        else:
            edge += (computed + decode_tokens + size - 1) // size - (computed + size - 1) // size
    return long, edge


_SELECT = "_select_waiting_queue_for_scheduling"  # Scheduler, 0.24-0.26: first in each admission


def running_step(adapter: PoolAdapter, scheduler) -> bool:
    """True when the step's running requests alone cannot need a page or a refusal (the module
    docstring: running steps): whole_step's bound with no admission, over the room now. For a
    step whole_step declined because of its queue (under a binding budget, nearly every one:
    the queue's admissions need pages the room does not hold). Only with a scheduler whose
    admission loop starts each turn with _SELECT, which puts the hook back
    (unhook_until_admission) before any queued request can reach allocate_slots."""
    room_now = adapter.room
    if room_now < 0:
        return False
    sizes = adapter.step_sizes
    if sizes is None:
        sizes = adapter.step_sizes = step_block_sizes(scheduler)
    budget = int(getattr(scheduler, "max_num_scheduled_tokens", 0) or 0)
    running = scheduler.running
    if not sizes or budget <= 0 or not running or getattr(type(scheduler), _SELECT, None) is None:
        return False
    lookahead = int(getattr(scheduler, "num_lookahead_tokens", 0) or 0)
    return running_fit(running, sizes, budget, lookahead, room_now)


def unhook_for_step(manager) -> list | None:
    """Puts vLLM's own allocate_slots on the manager instance for one schedule(); returns what
    restore_after_step needs (None: the class's method is not the hook's, nothing done)."""
    original = getattr(getattr(type(manager), "allocate_slots", None), "__wrapped__", None)
    if original is None:
        return None
    saved = _shadow(manager, "allocate_slots", lambda _hooked: types.MethodType(original, manager))
    return [(manager, "allocate_slots", saved)]


def unhook_until_admission(manager, adapter: PoolAdapter, scheduler) -> list | None:
    """unhook_for_step for a running step (running_step): vLLM's own allocate_slots for the
    running requests, and the hook's back from the first turn of vLLM's admission loop on (its
    _SELECT call, before it looks at a queued request), with the room the running requests left."""
    saved = unhook_for_step(manager)
    if saved is None:
        return None

    def rehook(current):
        def select(*args, **kwargs):
            restore_after_step(saved)
            # What the running requests left. vLLM passes admissions their prefix hits
            # (new_computed_blocks), which take the exact path and read the room themselves:
            # this keeps any other call's fast path right.
            adapter.room = room(adapter)
            return current(*args, **kwargs)

        return select

    saved.append((scheduler, _SELECT, _shadow(scheduler, _SELECT, rehook)))
    return saved


def restore_after_step(saved: list) -> None:
    """Undoes unhook_for_step or unhook_until_admission (once: a second call does nothing)."""
    for owner, name, value in saved:
        _restore(owner, name, value)
    saved.clear()


def room(adapter: PoolAdapter) -> int:
    """Blocks the fast path may hand out from now on in this step (the module's docstring)."""
    adapter.settle()
    tracker, hooks = adapter.tracker, adapter.hooks
    verdict = hooks.share.verdict if hooks is not None else None
    if verdict is not None and verdict.action != OK:
        return -1
    return tracker.nbfree + adapter.reusable_cached()


def _shadow(owner, name: str, make):
    """Shadows owner.name on the instance with make(current); returns what to restore. Never reads
    the instance's __dict__ (scheduler_side.py says why): a bound method of the class's own
    function means nothing shadows it now (_MISSING)."""
    current = getattr(owner, name)
    own = getattr(current, "__func__", None) is getattr(type(owner), name, None)
    saved = _MISSING if own and getattr(current, "__self__", None) is owner else current
    setattr(owner, name, make(current))
    return saved


def _restore(owner, name: str, saved) -> None:
    if saved is not _MISSING:
        setattr(owner, name, saved)
        return
    try:
        delattr(owner, name)
    except AttributeError:
        pass


def _counting(adapter: PoolAdapter):
    def make(original):
        def get_num_blocks_to_allocate(request_id, num_tokens, new_computed_blocks, *args, **kwargs):
            count = original(request_id, num_tokens, new_computed_blocks, *args, **kwargs)
            if kwargs.get("apply_admission_cap"):
                adapter.demand = None  # an admission estimate for the whole sequence: no backing
                adapter.counted[0] = count - len(free_hits(new_computed_blocks))
            elif count or any(new_computed_blocks or ()):
                adapter.note_demand(count, new_computed_blocks)
                adapter.counted[1] = adapter.demand
            else:  # nothing to back or protect
                adapter.demand = adapter.counted[1] = 0
                adapter.protected = _NO_BLOCKS
            return count

        return get_num_blocks_to_allocate

    return make


def _clamping(adapter: PoolAdapter):
    def make(original):
        def get_num_free_blocks():
            count = original()
            tracker = adapter.tracker
            if not adapter.demand and not tracker.pressure:
                return count
            # Backing the demand (tracker.ensure: evicting cached blocks, the headroom read, the
            # acquire) runs inside vLLM's call, which allocate_exactly leaves out of the own count:
            # noted here, C time excepted (after_schedule counts that), for it to add.
            c_mark, start = tracker.c_ns_total, perf()
            try:
                return adapter.free_count(count)
            finally:
                adapter.inner_ns += perf() - start - (tracker.c_ns_total - c_mark)

        return get_num_free_blocks

    return make


def allocate_exactly(orig, manager, adapter: PoolAdapter, request, num_new_tokens, args, kwargs):
    """The exact path: the sharing policy's admission decision, then vLLM's allocate_slots with
    the demand backed (or the free count clamped) in between its count and its check."""
    with adapter.lock:
        adapter.settle()
        hooks, tracker = adapter.hooks, adapter.tracker
        c_mark, start = tracker.c_ns_total, perf()
        # The sharing policy may hold admissions back (share_policy.py): None, as for a full
        # cache, before vLLM touches anything.
        verdict = hooks.share.verdict if hooks is not None else None
        stopping = verdict is not None and verdict.action != OK  # SharePolicy.stopping, inline
        decision = hooks.share.admission(request, hooks.scheduler()) if stopping else RUN
        if decision == REFUSE:
            if hooks is not None:
                hooks.count_block_call(perf() - start - (tracker.c_ns_total - c_mark))
            return None
        backed_only = decision == BACKED_ONLY
        if backed_only:
            no_new_pages = tracker.no_new_pages
            tracker.no_new_pages = True
        # The key only for the request whose refusal is remembered (the queue's head): most exact
        # calls are not tried again.
        refused = adapter.refused_admission
        again = refused is not None and refused[0][0] == request.request_id
        key = admission_key(adapter, manager, request, num_new_tokens, args, kwargs) if again else None
        if key is not None and _refused_again(adapter, manager, request, key, kwargs):
            if backed_only:
                tracker.no_new_pages = no_new_pages
            if adapter.room >= 0:  # ensure may have evicted cached blocks (the sum is the same)
                adapter.room = room(adapter)
            if hooks is not None:
                hooks.count_block_call(perf() - start - (tracker.c_ns_total - c_mark))
            return None
        coordinator, pool = manager.coordinator, manager.block_pool
        saved_count = _shadow(coordinator, _COUNT, _counting(adapter))
        saved_free = _shadow(pool, _FREE, _clamping(adapter))
        before, c_before = perf(), tracker.c_ns_total
        adapter.inner_ns = 0
        adapter.counted[0] = adapter.counted[1] = None
        try:
            result = orig(manager, request, num_new_tokens, *args, **kwargs)
        finally:
            after = perf()
            _restore(pool, _FREE, saved_free)
            _restore(coordinator, _COUNT, saved_count)
            if backed_only:
                tracker.no_new_pages = no_new_pages
            adapter.end_allocation()
            if adapter.room >= 0:  # inside schedule(): what is there now
                adapter.room = room(adapter)
            if hooks is not None:  # vLLM's own call (and the block calls it made, counted there) left out
                hooks.count_block_call(before - start - (c_before - c_mark) + perf() - after + adapter.inner_ns)
        if result is None:
            if key is None:
                key = admission_key(adapter, manager, request, num_new_tokens, args, kwargs)
            if key is not None:  # what _refused_again decides from at the next try
                adapter.refused_admission = (key, tuple(adapter.counted))
        elif again:
            adapter.refused_admission = None  # admitted
        return result


# Refused admissions. Under a binding budget a queued request's admission is refused step after
# step (its prompt needs pages the budget does not have), and each try through the exact path
# costs the hook's shadows and vLLM's own counts (75-100 us a try on the CPU bench). For a request
# that holds no blocks (no computed tokens: waiting, or preempted and back in the queue) in a cache
# of full attention only, vLLM's counts less the prefix hits it takes from the cached blocks are a
# function of the call's arguments and the number of hits in each group: cdiv(tokens, block) less
# the hits. So a refused try's counts are remembered with them, and the same call again is decided
# from them as vLLM's allocate_slots (0.24-0.26) decides under the hook: the admission cap's count
# against the free count, the demand backed as free_count backs it (tracker.ensure: cached blocks
# evicted, the budget asked or its refusal assumed within the retry time), then the count against
# the free count less the blocks kept for others; None without calling vLLM when either is short.
# A try that would pass goes the exact path. The test of this compares every step with the exact
# path's (test_vllm_adapter: a refused admission tried again).
_FULL = frozenset({"FullAttentionManager"})


def admission_key(adapter: PoolAdapter, manager, request, num_new_tokens, args, kwargs) -> tuple | None:
    """What vLLM's counts of an admission depend on, when that is all (above); None otherwise."""
    if args or request.num_computed_tokens:
        return None
    full = adapter.full_attention
    if full is None:
        full = adapter.full_attention = bool(group_block_sizes(manager, _FULL))
    get = kwargs.get
    if not full or get("num_external_computed_tokens") or get("delay_cache_blocks"):
        return None
    hits = ()
    if get("num_new_computed_tokens"):
        groups = getattr(get("new_computed_blocks"), "blocks", None)
        if groups is None:
            return None
        hits = tuple(len(group) for group in groups)
    # new_computed_blocks is a new object each call: the numbers of its hits stand for it.
    return (request.request_id, num_new_tokens, tuple(item for item in kwargs.items() if item[0] != "new_computed_blocks"),
            hits)


def _refused_again(adapter: PoolAdapter, manager, request, key: tuple, kwargs: dict) -> bool:
    """True when the admission `key` was refused before and vLLM would refuse it now: answered
    None without calling vLLM (above). Backs its demand on the way, as free_count would."""
    refused = adapter.refused_admission
    if refused is None or refused[0] != key:
        return False
    cap, demand = refused[1]
    tracker, free = adapter.tracker, manager.block_pool.get_num_free_blocks
    if key[3]:  # the hits stay out of eviction, as in the exact path (note_demand)
        adapter.note_demand(0, kwargs["new_computed_blocks"].blocks)
    try:
        hits = len(adapter.protected)
        kept = 0
        if kwargs.get("has_scheduled_reqs", True) and request.status.name in ("WAITING", "PREEMPTED"):
            kept = getattr(manager, "watermark_blocks", 0)
        if kwargs.get("full_sequence_must_fit"):
            if cap is None:
                return False
            if cap + hits + kept > tracker.effective_free(free()):
                adapter.admissions_memo += 1
                return True
        if demand is None:
            return False
        if demand and demand > tracker.nbfree + adapter.reusable_cached():
            tracker.ensure(demand)
        if demand + hits + kept > tracker.effective_free(free()) - kwargs.get("reserved_blocks", 0):
            adapter.admissions_memo += 1
            return True
        return False
    finally:
        adapter.end_allocation()
