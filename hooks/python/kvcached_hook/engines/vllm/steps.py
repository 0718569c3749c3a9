"""Per-step work on the scheduler side: one batched acquire ahead of each schedule(), releases
behind a fence, giving the prefix cache back under pressure and when idle.

Fence (asynchronous scheduling keeps two batches in flight): every schedule() that hands work to
the GPU is a step number pushed on `in_flight`; every update_from_output() for such a step pops
it (vLLM processes them in order). A page that became empty at step s may still be written by any
step <= s that is in flight, so it is released only once all of those were processed:
tracker.fence = (oldest step in flight) - 1.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque

from ..._log import important, logger
from ...pressure_watch import PressureWatch
from .blocks import PoolAdapter
from .share_policy import SharePolicy


class StepHooks:
    """Attached to a PoolAdapter once its scheduler makes the first step."""

    def __init__(self, adapter: PoolAdapter, scheduler) -> None:
        self.adapter = adapter
        self.scheduler = weakref.ref(scheduler)
        self.steps = 0
        self.idle_since: float | None = None
        self.idle_trims = 0
        self.pressure = PressureWatch(adapter.api, adapter.entry.device_index)
        self.pressure_trims = 0
        self.stale_gives = 0  # steps that gave back stale cached blocks under pressure
        self.idle_trimmed = False  # kvcached_trim done in this idle spell
        # before_schedule + after_schedule + C calls made inside schedule() + the hook's own time in
        # vLLM's block calls (BlockPool and allocate_slots wrappers, their C calls not counted twice).
        self.hook_ns_total = 0
        # hook_ns_total by phase (flush, sharing policy, prediction and step bound, after, block
        # calls), and vLLM's own schedule() time without the hook: the shutdown line says where it
        # goes.
        self.phase_ns = [0, 0, 0, 0, 0]
        self.schedule_ns_total = 0
        self._c_ns_mark = 0
        self.on_step = []  # callables(adapter, scheduler_output) after each schedule() (tests, sanity)
        self.on_idle = []  # callables(adapter) at each idle tick (observe.py: reports, summaries)
        self.share = SharePolicy(adapter, self)  # the sharing policy's verdicts (share_policy.py)
        self.recent_taken: deque[int] = deque(maxlen=4)  # blocks handed out in each of the last steps
        self._taken_mark = 0

    # ---- fence ----
    def _update_fence(self) -> None:
        adapter = self.adapter
        tracker = adapter.tracker
        tracker.fence = adapter.in_flight[0] - 1 if adapter.in_flight else tracker.step

    # ---- schedule() ----
    def before_schedule(self, scheduler) -> None:
        start = time.perf_counter_ns()
        adapter, tracker = self.adapter, self.adapter.tracker
        adapter.settle()
        tracker.step_begin()
        self.steps += 1
        self.recent_taken.append(adapter.taken_total - self._taken_mark)
        self._taken_mark = adapter.taken_total
        self._update_fence()
        tracker.flush()
        adapter.now = time.monotonic()
        phase = self.phase_ns
        flushed = time.perf_counter_ns()
        phase[0] += flushed - start
        if not self.share.before_schedule(scheduler):
            self.yield_to_pressure()  # a shim without the sharing policy: the older signal
        elif not self.share.stopping:
            self.give_stale_cached()
        shared = time.perf_counter_ns()
        phase[1] += shared - flushed
        if scheduler.has_requests():
            self.idle_since = None
            # Under a verdict the step's pages come from what is held (no speculative backing).
            if adapter.settings.predict and not tracker.refused_last_step and not self.share.stopping:
                try:
                    demand = self.predict(scheduler)
                except Exception as error:  # noqa: BLE001 - prediction is an optimisation only
                    logger.debug("vllm: demand prediction failed: %s", error)
                    demand = 0
                if demand > tracker.nbfree:
                    tracker.ensure(demand, best_effort=True)
            # Good blocks at the head of vLLM's free queue for about two steps of decoding (the
            # least the recent steps took), so that get_new_blocks mostly takes its fast path
            # (blocks.py: the arranged head); a step that takes more (admissions: a prompt's
            # blocks in one call) chooses the rest itself. Not the bursts: each block arranged
            # costs a move, and with it every later arrange walks past it.
            adapter.arrange_head(2 * min(self.recent_taken, default=0) + 16)
        self._c_ns_mark = tracker.c_ns_total
        end = time.perf_counter_ns()
        phase[2] += end - shared
        self.hook_ns_total += end - start

    def after_schedule(self, scheduler, output) -> None:
        start = time.perf_counter_ns()
        adapter = self.adapter
        adapter.settle()
        adapter.end_allocation()
        tracker = adapter.tracker
        if getattr(output, "total_num_scheduled_tokens", 0) > 0:
            adapter.in_flight.append(tracker.step)
        self.share.after_schedule(output)
        tracker.record_step_costs()  # C time and calls of this step (docs/vllm.md: per-step costs)
        # Also the C calls the wrappers made inside vLLM's schedule() (an allocation the prediction
        # missed); the sanity check below is a diagnostic and not counted.
        spent = time.perf_counter_ns() - start + tracker.c_ns_total - self._c_ns_mark
        self.phase_ns[3] += spent
        self.hook_ns_total += spent
        for hook in list(self.on_step):
            hook(adapter, output)

    def after_update(self, scheduler_output) -> None:
        adapter = self.adapter
        if getattr(scheduler_output, "total_num_scheduled_tokens", 0) > 0 and adapter.in_flight:
            adapter.in_flight.popleft()
        self._update_fence()

    def count_step_bound(self, ns: int) -> None:
        """The time schedule()'s wrapper spent judging a whole step (allocation.whole_step)."""
        self.phase_ns[2] += ns
        self.hook_ns_total += ns

    def count_block_call(self, ns: int) -> None:
        """The hook's own time in one of vLLM's block calls (scheduler_side.py), C calls excluded
        (after_schedule counts those made inside schedule())."""
        self.phase_ns[4] += ns
        self.hook_ns_total += ns

    def cost_line(self) -> str:
        """Where the hook's time per step goes (logged at shutdown): its phases, and vLLM's own
        schedule() for scale."""
        n = max(self.steps, 1)
        flush, share, predict, after, blocks = (ns / n / 1000 for ns in self.phase_ns)
        return (f"hook {self.hook_ns_total / n / 1000:.1f} us/step over {self.steps} steps, "
                f"{self.adapter.whole_steps} of them with no hook per request, {self.adapter.running_steps} with "
                f"none per running request (release {flush:.1f}, "
                f"sharing policy {share:.1f}, prediction and step bound {predict:.1f}, after "
                f"schedule() {after:.1f}, in vLLM's block calls {blocks:.1f}); vLLM's schedule() itself "
                f"{self.schedule_ns_total / n / 1000:.1f} us/step")

    # ---- demand ----
    def predict(self, scheduler) -> int:
        """Blocks the coming schedule() may take from the pool beyond the cached blocks it reuses
        first (an estimate from above); 0 when what is backed certainly covers the step."""
        managers = scheduler.kv_cache_manager.coordinator.single_type_managers
        tracker = self.adapter.tracker
        running, waiting = scheduler.running, scheduler.waiting
        budget = int(getattr(scheduler, "max_num_scheduled_tokens", 0) or 0)
        slots = int(getattr(scheduler, "max_num_running_reqs", 0) or 0) - len(running)
        spare = tracker.nbfree + (len(self.adapter.cached) if tracker.prefer_cached else 0)
        if (slots <= 0 or not waiting) and spare >= 2 * max(self.recent_taken, default=0):
            # Nothing to admit, and what is free covers twice what the last steps took: the walk
            # would find nothing to back (decode steps). A step that takes more than this guess
            # is still backed exactly, by allocate_slots' exact path (allocation.py).
            return 0
        if budget > 0 and (slots <= 0 or not waiting):
            # O(1) bound first: a running request holds blocks for its computed tokens, so it needs
            # at most cdiv(new, block) more per manager, and a step's new tokens are within the
            # budget. When what is backed (and cached, reused first) covers that bound, the walk
            # cannot lead to an acquire: skip it.
            bound = sum(budget // m.block_size + len(running) for m in managers)
            if bound <= spare:
                return 0
        return max(0, min(self._demand(managers, running, waiting, budget, slots) - (spare - tracker.nbfree), tracker.nfree))

    @staticmethod
    def _demand(managers, running, waiting, budget: int, slots: int) -> int:
        """The walk over the requests vLLM will schedule: O(running + admitted). Each request's
        tokens are clamped to what is left of the step's token budget (when it is known)."""
        tables = [(manager.req_to_blocks, manager.block_size) for manager in managers]
        limited = budget > 0
        demand = 0
        for request in list(running):
            computed = request.num_computed_tokens
            new = request.num_tokens_with_spec + getattr(request, "num_output_placeholders", 0) - computed
            if new < 1:
                new = 1
            if limited:
                if new > budget:
                    new = budget
                budget -= new
            tokens = computed + new
            rid = request.request_id
            for table, size in tables:
                need = -(-tokens // size) - len(table.get(rid, ()))
                if need > 0:
                    demand += need
        for request in list(waiting):
            if budget <= 0 or slots <= 0:  # no known budget: admissions are not predicted
                break
            tokens = min(request.num_tokens - request.num_computed_tokens, budget)
            budget -= tokens
            slots -= 1
            total = request.num_computed_tokens + tokens
            for table, size in tables:
                demand += max(0, -(-total // size) - len(table.get(request.request_id, ())))
        return demand

    # ---- giving back ----
    def yield_to_pressure(self) -> None:
        """Another process on this GPU was refused memory: drop the prefix cache so its pages go
        back to the shared budget. Blocks of running requests stay. Only with a shim that gives no
        sharing verdict: the policy (share_policy.py) decides otherwise."""
        adapter = self.adapter
        if not self.pressure.poll():
            return
        if adapter.cached and adapter.drop_prefix_cache():
            self.pressure_trims += 1

    def give_stale_cached(self) -> None:
        """Another process was refused memory while this engine owes nothing (verdict ok): its
        cached blocks unused for KVCACHED_HOOK_IDLE_TRIM_S go back, oldest first. Cached blocks
        count toward an engine's share, so without this an engine whose requests are done keeps
        its old prefix cache, up to its share, while its neighbour queues at its own. Not the
        share hold's age: under it an engine whose burst had ended kept its half for seconds
        beside a queue (docs/sharing.md); the giver's hold (share_policy.py) is what keeps
        memory from moving straight back."""
        adapter = self.adapter
        trim_s = adapter.settings.idle_trim_s
        if trim_s < 0 or not adapter.cached:
            return
        cutoff = adapter.now - trim_s
        if adapter.cached_at.get(next(iter(adapter.cached)), 0.0) >= cutoff:
            return  # nothing stale (the oldest leads): no C call for the pressure signal
        if not self.pressure.poll():
            return
        stale = adapter.stale_cached(cutoff)
        if stale and adapter.evict_cached(stale):
            self.stale_gives += 1

    def idle_tick(self, now: float | None = None) -> None:
        """Called from the idle thread (and tests): nothing in flight and nothing to run: give back
        every empty page now, and after KVCACHED_HOOK_IDLE_TRIM_S the prefix cache and, once per
        idle spell, the shim's pages mapped ahead and its reserve (kvcached_trim: the KV regions
        map nothing ahead again until the next acquire), so an idle engine holds its pinned
        pages only."""
        adapter = self.adapter
        scheduler = self.scheduler()
        if scheduler is None:
            return
        with adapter.lock:
            adapter.settle()
            if adapter.in_flight or scheduler.has_requests():
                self.idle_since = None
                self.idle_trimmed = False
                return
            now = time.monotonic() if now is None else now
            if self.idle_since is None:
                self.idle_since = now
            if not self.share.idle():
                self.yield_to_pressure()
            trim_s = adapter.settings.idle_trim_s
            idle_long = trim_s >= 0 and now - self.idle_since >= trim_s
            if idle_long and adapter.cached:
                adapter.drop_prefix_cache()
                self.idle_trims += 1
            self._update_fence()
            adapter.tracker.flush(force=True)
            if idle_long and not self.idle_trimmed:
                self.idle_trimmed = True
                trim = getattr(adapter.api, "trim", None)  # absent from some test fakes
                if trim is not None:
                    trim(adapter.entry.device_index)
            for hook in list(self.on_idle):
                hook(adapter)


def start_idle_thread(hooks: StepHooks, period_s: float = 0.25) -> threading.Thread:
    ref = weakref.ref(hooks)

    def run() -> None:
        while True:
            time.sleep(period_s)
            target = ref()
            if target is None:
                return
            try:
                target.idle_tick()
            except Exception as error:  # noqa: BLE001 - never take the engine down from here
                important(f"vllm: idle bookkeeping failed: {error}", logging.ERROR)
                return
            del target

    thread = threading.Thread(target=run, name="kvcached-vllm-idle", daemon=True)
    thread.start()
    return thread
