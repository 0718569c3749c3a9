"""Wrappers of vLLM's scheduler-side classes (BlockPool, KVCacheCoordinator, KVCacheManager,
Scheduler). Every wrapper does nothing for a pool without an adapter (a cache the worker side did
not make lazy), so vLLM runs as it would without the hook.

The hook's attributes on vLLM's objects are read with getattr, never through `__dict__`: reading
an object's `__dict__` makes CPython (3.12) keep its attributes in a dict from then on, and every
attribute and method lookup vLLM makes on that object slower (about 130 us a step at 128 running
requests, mostly the KVCacheManager's and the coordinator's: docs/performance.md, fifth cut)."""

from __future__ import annotations

import logging
from time import perf_counter_ns as perf

from ..._env import HookSettings
from ..._log import important
from ... import capi as C
from . import observe, registry, tp
from . import allocation as A
from .blocks import PoolAdapter
from .steps import StepHooks, start_idle_thread

overrides = {"idle_thread": True}


def _local_api():
    from .worker import overrides as worker_overrides

    return worker_overrides["api"] if worker_overrides["api"] is not None else C.load()


def _adapter(pool) -> PoolAdapter | None:
    return getattr(pool, "_kvcached", None)


def _count(adapter: PoolAdapter, ns: int, c_mark: int) -> None:
    """The hook's own time in a block call: `ns` less the C time spent since `c_mark` (counted
    by after_schedule). Nothing before the scheduler's first step (no StepHooks yet)."""
    hooks = adapter.hooks
    if hooks is not None:
        hooks.count_block_call(ns - (adapter.tracker.c_ns_total - c_mark))


def _scheduler_hooks(scheduler) -> StepHooks | None:
    hooks = getattr(scheduler, "_kvcached_steps", None)
    if hooks is not None:
        return hooks
    manager = getattr(scheduler, "kv_cache_manager", None)
    adapter = _adapter(getattr(manager, "block_pool", None))
    if adapter is None:
        return None
    # The KV cache managers are built after BlockPool.__init__ made the adapter, and one may have
    # taken blocks from vLLM's free queue (sink blocks): a one-time walk, before any block moves.
    with adapter.lock:
        outside = adapter.hold_outside_queue()
    if outside:
        important(f"vllm: {len(outside)} KV block(s) held by vLLM outside its free queue from the start "
                  f"(blocks {outside[0]}..{outside[-1]}): kept backed", logging.INFO)
    hooks = StepHooks(adapter, scheduler)
    adapter.hooks = hooks
    scheduler._kvcached_steps = hooks
    observe.attach(hooks, scheduler)  # per-step reports to kvctl, KVCACHED_SANITY_CHECK
    if overrides["idle_thread"]:
        start_idle_thread(hooks)
    return hooks


# ---- BlockPool ----
def wrap_pool_init(orig):
    def __init__(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        entry = registry.claim(self.num_gpu_blocks)
        if entry is None and tp.enabled() and registry.executor() is not None:
            try:
                entry = tp.remote_cache(registry.executor(), self.num_gpu_blocks, _local_api())
            except Exception as error:  # noqa: BLE001 - the workers then back fully on their own
                important(f"vllm: tensor-parallel KV cache not managed ({error})", logging.ERROR)
                entry = None
        if entry is None:
            return
        from .worker import _back_fully, pin_null_block

        pin_null_block(entry)  # start-up is over: the null block backed for good (tp: describe did)

        for other in registry.unclaimed_others(entry):
            _back_fully(other, "a second KV cache in this process that no scheduler drives")
        try:
            self._kvcached = PoolAdapter(self, entry, HookSettings())
        except Exception as error:  # noqa: BLE001 - fall back to a fully backed, correct cache
            from .worker import _back_fully

            important(f"vllm: could not manage the KV cache ({error})", logging.ERROR)
            _back_fully(entry, "the scheduler side could not be set up")

    return __init__


def wrap_get_new_blocks(orig):
    def get_new_blocks(self, num_blocks, *args, **kwargs):
        adapter = _adapter(self)
        if adapter is None:
            return orig(self, num_blocks, *args, **kwargs)
        with adapter.lock:
            head = adapter.head_ok
            if num_blocks <= head:
                # Fast path (blocks.py: the arranged head): vLLM's next blocks are backed; the
                # tracker learns of them in one batch (settle). No clock reads: cheaper than them.
                adapter.head_ok = head - num_blocks
                blocks = orig(self, num_blocks, *args, **kwargs)
                adapter.pending += blocks
                return blocks
            c_mark, t0 = adapter.tracker.c_ns_total, perf()
            adapter.choose(num_blocks)
            t1 = perf()
            blocks = orig(self, num_blocks, *args, **kwargs)
            t2 = perf()
            adapter.taken(blocks)
            # choose() may have taken blocks from the arranged head; what is left of it after them:
            adapter.head_ok = max(0, adapter.head_ok - num_blocks)
            _count(adapter, t1 - t0 + perf() - t2, c_mark)
            return blocks

    return get_new_blocks


def wrap_free_blocks(orig):
    def free_blocks(self, ordered_blocks, *args, **kwargs):
        adapter = _adapter(self)
        if adapter is None:
            return orig(self, ordered_blocks, *args, **kwargs)
        blocks = list(ordered_blocks)  # vLLM may pass a one-shot iterator (reversed(...))
        with adapter.lock:
            adapter.settle()  # blocks handed out from the arranged head first, then their return
            result = orig(self, blocks, *args, **kwargs)
            c_mark, t0 = adapter.tracker.c_ns_total, perf()
            adapter.freed(blocks)
            _count(adapter, perf() - t0, c_mark)
            return result

    return free_blocks


def wrap_touch(orig):
    def touch(self, blocks, *args, **kwargs):
        adapter = _adapter(self)
        if adapter is None:
            return orig(self, blocks, *args, **kwargs)
        blocks = list(blocks)
        with adapter.lock:
            result = orig(self, blocks, *args, **kwargs)
            c_mark, t0 = adapter.tracker.c_ns_total, perf()
            ids, removed = adapter.head_ids, 0
            for block in blocks:
                if isinstance(block, (list, tuple)):  # a group list (older call shapes)
                    for inner in block:
                        removed += inner.block_id in ids
                        adapter.sync(inner)
                else:
                    removed += block.block_id in ids
                    adapter.sync(block)
            if removed:  # vLLM took them out of its queue, maybe out of the arranged head
                adapter.head_ok = max(0, adapter.head_ok - removed)
            _count(adapter, perf() - t0, c_mark)
            return result

    return touch


def wrap_evict_blocks(orig):
    def evict_blocks(self, block_ids, *args, **kwargs):
        adapter = _adapter(self)
        if adapter is None:
            return orig(self, block_ids, *args, **kwargs)
        ids = list(block_ids)
        with adapter.lock:
            result = orig(self, set(ids), *args, **kwargs)
            for bid in ids:
                if 0 <= bid < len(self.blocks):
                    adapter.sync(self.blocks[bid])
            return result

    return evict_blocks


def wrap_reset_prefix_cache(orig):
    def reset_prefix_cache(self, *args, **kwargs):
        adapter = _adapter(self)
        if adapter is None:
            return orig(self, *args, **kwargs)
        with adapter.lock:
            result = orig(self, *args, **kwargs)
            adapter.sync_all()
            adapter.head_lost()  # hashes gone: not known how vLLM's queue looks now
            return result

    return reset_prefix_cache


# ---- KVCacheManager (allocation.py: the fast path and the exact path) ----
def wrap_allocate_slots(orig):
    def allocate_slots(self, request, num_new_tokens, *args, **kwargs):
        adapter = getattr(getattr(self, "block_pool", None), "_kvcached", None)
        if adapter is None:
            return orig(self, request, num_new_tokens, *args, **kwargs)
        # Fast path (allocation.py): inside schedule(), whose wrapper holds the adapter's lock; no
        # prefix hits; the call's bound within the room (0 too: a call that takes no block, as
        # most decoding steps, needs no room). Inline for one KV cache group.
        room = adapter.room
        if room >= 0 and not args and kwargs.get("new_computed_blocks") is None:
            size = adapter.single_size
            if size:
                get = kwargs.get
                computed = request.num_computed_tokens
                end = (computed + num_new_tokens + get("num_lookahead_tokens", 0)
                       + get("num_external_computed_tokens", 0) + get("num_encoder_tokens", 0))
                need = -(-end // size) + (-computed // size)  # cdiv(end) - cdiv(computed)
            else:
                need = A.bound(adapter, self, request, num_new_tokens, kwargs)
            if need <= room:
                adapter.room = room - need
                return orig(self, request, num_new_tokens, **kwargs)
        # The exact path counts its own time (allocation.py); the fast path is a few integer
        # operations, cheaper than the clock reads that would count it.
        return A.allocate_exactly(orig, self, adapter, request, num_new_tokens, args, kwargs)

    allocate_slots.__wrapped__ = orig  # whole steps put it back on the instance (allocation.py)
    return allocate_slots


# ---- Scheduler ----
def wrap_schedule(orig):
    def schedule(self, *args, **kwargs):
        hooks = _scheduler_hooks(self)
        if hooks is None:
            return orig(self, *args, **kwargs)
        api = hooks.adapter.api
        remote = isinstance(api, tp.RemoteApi)
        adapter = hooks.adapter
        with adapter.lock:
            if remote:
                api.pending = []  # releases of this step ride on its SchedulerOutput
            manager, saved = self.kv_cache_manager, None
            try:
                hooks.before_schedule(self)
                judged = perf()
                adapter.room = A.room(adapter)
                if A.whole_step(adapter, self):
                    saved = A.unhook_for_step(manager)
                    if saved is not None:
                        adapter.whole_steps += 1
                elif A.running_step(adapter, self):
                    saved = A.unhook_until_admission(manager, adapter, self)
                    if saved is not None:
                        adapter.running_steps += 1
                started = perf()
                hooks.count_step_bound(started - judged)  # the hook's time too
                output = orig(self, *args, **kwargs)
                hooks.schedule_ns_total += perf() - started
            finally:
                if saved is not None:
                    A.restore_after_step(saved)
                adapter.room = -1
                if remote:
                    pending, api.pending = api.pending, None
            if remote and pending:
                if getattr(output, "total_num_scheduled_tokens", 0) > 0:
                    output.kvcached_release = pending
                else:
                    api.release(pending)  # no step goes to the workers: send them now
            hooks.after_schedule(self, output)
            return output

    return schedule


def wrap_update_from_output(orig):
    def update_from_output(self, scheduler_output, model_runner_output, *args, **kwargs):
        hooks = _scheduler_hooks(self)
        if hooks is None:
            return orig(self, scheduler_output, model_runner_output, *args, **kwargs)
        with hooks.adapter.lock:
            try:
                return orig(self, scheduler_output, model_runner_output, *args, **kwargs)
            finally:
                hooks.after_update(scheduler_output)

    return update_from_output


# ---- Executor / Worker (tensor parallel, tp.py) ----
def wrap_executor_init(orig):
    def __init__(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        registry.set_executor(self)

    return __init__


def wrap_execute_model(orig):
    def execute_model(self, scheduler_output, *args, **kwargs):
        tp.before_execute(self, scheduler_output)
        return orig(self, scheduler_output, *args, **kwargs)

    return execute_model
