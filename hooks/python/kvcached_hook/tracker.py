"""KVPageTracker: which pages of an engine's KV cache must be backed, and the C calls that do it.

Engine-agnostic. The engine's free-block structure is replaced by a PageAwareFreeList (freelist.py)
that reports every block leaving or entering it here; a block outside the free list is *held*
(in use by a request, or kept by the engine's prefix cache) and every page it touches must be
backed. The tracker keeps, per unit (pages.py), the number of held blocks, and whether the unit is
acquired from the shim.

Batching: pages are acquired ahead of allocation by `ensure(n)` (one C call for everything the
step needs) and given back by `flush()` once per step, after a delay of a few steps, in one C
call. A page that empties and is reused before the flush costs no call at all.

Refusal: when the shim answers KVCACHED_ERR_NO_MEMORY, `ensure` returns False and the tracker
enters *pressure* for the rest of the step: the engine's free-block count is clamped to what is
already backed (`effective_free`), so the engine takes its own "cache full" path (requests wait,
or are preempted) instead of seeing an error.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from . import capi as C
from ._log import important, logger
from .pages import KVLayout


class BackingRefused(RuntimeError):
    """A block had to be backed synchronously and the shim refused (should not happen: callers
    run `ensure` first)."""


class KVPageTracker:
    def __init__(
        self,
        layout: KVLayout,
        api,
        managed_blocks: int,
        *,
        release_delay_steps: int = 2,
        prefer_cached: bool = True,
        name: str = "",
        refused_retry_ms: float = 0.0,
        device: int = 0,
    ) -> None:
        if not (0 < managed_blocks <= layout.num_blocks):
            raise ValueError(f"managed_blocks={managed_blocks} outside 1..{layout.num_blocks}")
        self.layout = layout
        self.api = api
        self.managed = managed_blocks
        self.name = name
        self.device = device  # the GPU of the KV cache (the budget headroom query)
        self.release_delay_steps = release_delay_steps
        self.prefer_cached = prefer_cached
        self.lock = threading.RLock()
        # Per block (managed ones only): free and fully backed / free and not fully backed.
        self.fb = bytearray(managed_blocks)
        self.fu = bytearray(managed_blocks)
        self.nfree = 0
        self.nbfree = 0
        # Per unit: held blocks + pins, acquired flag, step at which it became acquired-but-empty.
        self.count = [0] * layout.num_units
        self.acq = bytearray(layout.num_units)
        self.empty_since: dict[int, int] = {}
        # Units emptied for another engine (the sharing policy's give) that in-flight work keeps
        # backed until the fence passes: their free blocks count as unbacked (fu), so that nothing
        # is handed out there meanwhile, and flush() releases them as soon as the fence allows
        # (no release delay). Handed out all the same (a block taken by vLLM without a choice),
        # the unit is kept (_keep). Without this the running requests' next blocks, lowest first,
        # refilled a unit emptied under the fence, and it was counted as given but never went.
        self.retiring = bytearray(layout.num_units)
        self.nretiring = 0
        # Engine hooks (set by the adapter): drop up to k cached blocks into the free list.
        self.evict_cached = None  # callable(k) -> int
        # Called (no arguments) when flush() takes the backing of units away: an engine adapter that
        # assumed blocks backed without asking (vLLM: its arranged queue head) forgets that.
        self.on_release = None
        # Called with the free blocks that an acquire has just backed (block ids, lowest first):
        # an engine adapter may hand those out first (vLLM: it puts them at its queue's head).
        self.on_backed = None
        self.cached_count = lambda: 0
        # Step state.
        self.step = 0
        # Engines with work in flight (vLLM's asynchronous scheduling) set this to the last step
        # whose GPU work has finished: a page emptied at a later step is never released (the
        # in-flight work may still write it). None: steps finish before the next one begins.
        self.fence: int | None = None
        self.pressure = False
        self.refused_this_step = False
        self.refused_last_step = False
        # Set by the engine adapter while the sharing policy (docs/sharing.md) asks this engine to
        # give memory back: no new page is acquired (ensure behaves as refused, without a C call),
        # so pages it frees go to the starved engine instead of back to itself.
        self.no_new_pages = False
        # Units (pages in every KV tensor) backed now, and at most how many may be (None: no cap).
        # The vLLM sharing policy caps an engine that just gave memory away at what it kept, for a
        # while (KVCACHED_HOOK_SHARE_HOLD_MS): an acquire past the cap is held back like a refusal,
        # without a C call, so the memory it gave stays free for the engine it gave it to.
        self.held_units = 0
        self.max_units: int | None = None
        # Set with that cap: units a give emptied beyond what it gave, kept backed (flush() skips
        # them unless forced) until the cap is lifted. Released after the release delay, they
        # would take the giver below its share (it gives down to its share, no further) and make
        # it the next engine to starve.
        self.keep: set[int] = set()
        # After a refusal the budget is asked again only once this long has passed (ns; 0: every
        # step), this tracker has released pages since (its own headroom grew), or the shim reports
        # room for the pages now (api.budget_headroom, one cheap call: memory another engine gave
        # back is used at once): under a binding budget a refusal costs tens of microseconds of the
        # scheduler's time every step, and the answer seldom changes from one step to the next
        # (KVCACHED_HOOK_REFUSED_RETRY_MS).
        self.retry_ns = int(refused_retry_ms * 1e6)
        self._refused_ns = 0
        self._released_at_refusal = 0
        # An ask made on the headroom's word was refused all the same (another engine took the room
        # first, or the GPU itself is full): the headroom is not trusted again until the retry time
        # ends, so that a wrong answer costs one refused call per retry time, not one per step.
        self._room_refused = False
        self._step_c_ns = 0
        self._step_calls = 0
        # Statistics.
        self.acquire_calls = 0
        self.release_calls = 0
        self.refusals = 0
        self.refusals_assumed = 0  # asks not made: the budget refused within retry_ns
        self.errors = 0
        self.units_acquired = 0
        self.units_released = 0
        self.sync_backings = 0
        self.double_frees = 0
        self.c_ns_total = 0
        self.step_c_us: list[float] = []  # C time per step that made at least one call
        self.step_calls: list[int] = []
        self._reported: set[int] = set()

    @classmethod
    def from_settings(cls, layout: KVLayout, api, managed_blocks: int, settings, *, name: str, device: int):
        """A tracker configured by the engine hook's settings (_env.HookSettings), the one place
        that maps them for every engine adapter."""
        return cls(
            layout,
            api,
            managed_blocks,
            release_delay_steps=settings.release_delay_steps,
            prefer_cached=settings.prefix_cache == "elastic",
            refused_retry_ms=settings.refused_retry_ms,
            name=name,
            device=device,
        )

    # ------------------------------------------------------------------ block state
    def _fully_backed(self, block: int) -> bool:
        acq = self.acq
        retiring = self.retiring if self.nretiring else None
        for unit in self.layout.block_units(block):
            if not acq[unit] or (retiring is not None and retiring[unit]):
                return False
        return True

    def is_free(self, block: int) -> bool:
        return 0 <= block < self.managed and bool(self.fb[block] or self.fu[block])

    def iter_free(self):
        for block in range(self.managed):
            if self.fb[block] or self.fu[block]:
                yield block

    def adopt(self, free_blocks) -> None:
        """Initial state: `free_blocks` are free, every other managed block is held (and is backed
        now, synchronously: raises BackingRefused if the shim refuses)."""
        with self.lock:
            free = bytearray(self.managed)
            for block in free_blocks:
                if not 0 <= block < self.managed:
                    raise ValueError(f"free block {block} outside 0..{self.managed - 1}")
                free[block] = 1
            held = [b for b in range(self.managed) if not free[b]]
            if held:
                self.pin_blocks(held, pin=False)
            for block in range(self.managed):
                if free[block]:
                    if self._fully_backed(block):
                        self.fb[block] = 1
                        self.nbfree += 1
                    else:
                        self.fu[block] = 1
                    self.nfree += 1

    def pin_blocks(self, blocks, pin: bool = True) -> None:
        """Backs every page of `blocks` now and counts them as held (pin=True: forever, e.g. the
        engine's padding blocks). Raises BackingRefused when the shim refuses."""
        with self.lock:
            units = sorted({u for b in blocks for u in self.layout.block_units(b)})
            missing = [u for u in units if not self.acq[u]]
            if missing:
                status = self._acquire_units(missing)
                if status != C.OK:
                    raise BackingRefused(
                        f"could not back {len(missing)} page(s) of {self.name or 'the KV cache'} "
                        f"({C.STATUS_NAMES.get(status, status)}: {self._last_error()})"
                    )
            for block in blocks:
                for unit in self.layout.block_units(block):
                    self.count[unit] += 1
                    self.empty_since.pop(unit, None)
                    if self.nretiring and self.retiring[unit]:
                        self._keep(unit)

    def mark_units_acquired(self, units) -> None:
        """Units the caller acquired itself (for example the engine's padding blocks, backed while
        the cache was being built) and that stay backed forever: counted as one pin each."""
        with self.lock:
            for unit in units:
                if not self.acq[unit]:
                    self.acq[unit] = 1
                    self.held_units += 1
                    self._on_unit_backed(unit)
                self.count[unit] += 1
                self.empty_since.pop(unit, None)

    def give(self, block: int) -> bool:
        """Block enters the free list (the engine freed it). False for a double free."""
        with self.lock:
            if not 0 <= block < self.managed:
                raise ValueError(f"block {block} outside 0..{self.managed - 1}")
            if self.fb[block] or self.fu[block]:
                self.double_frees += 1
                important(f"{self.name}: block {block} freed twice (ignored)", logging.ERROR)
                return False
            for unit in self.layout.block_units(block):
                self.count[unit] -= 1
                if self.count[unit] <= 0:
                    self.count[unit] = 0
                    if self.acq[unit]:
                        self.empty_since.setdefault(unit, self.step)
            if self._fully_backed(block):
                self.fb[block] = 1
                self.nbfree += 1
            else:
                self.fu[block] = 1
            self.nfree += 1
            return True

    def take(self, block: int) -> None:
        """Block leaves the free list (handed to a request). Backs it synchronously if needed."""
        with self.lock:
            if not 0 <= block < self.managed:
                raise ValueError(f"block {block} outside 0..{self.managed - 1}")
            if self.nretiring and self.fu[block]:
                for unit in self.layout.block_units(block):
                    if self.retiring[unit]:
                        self._keep(unit)  # its blocks are backed again: the fb branch takes it
            if self.fb[block]:
                self.fb[block] = 0
                self.nbfree -= 1
            elif self.fu[block]:
                missing = [u for u in self.layout.block_units(block) if not self.acq[u]]
                status = self._acquire_units(missing)
                if status != C.OK:
                    if status == C.ERR_NO_MEMORY:
                        self._enter_pressure()
                    raise BackingRefused(
                        f"{self.name}: block {block} handed out without backing and the shim refused "
                        f"({C.STATUS_NAMES.get(status, status)}: {self._last_error()})"
                    )
                self.sync_backings += 1
                # _acquire_units moved it to fb (fully backed now); take it from wherever it is.
                if self.fb[block]:
                    self.fb[block] = 0
                    self.nbfree -= 1
                else:
                    self.fu[block] = 0
            else:
                raise ValueError(f"block {block} is not free")
            self.nfree -= 1
            for unit in self.layout.block_units(block):
                self.count[unit] += 1
                self.empty_since.pop(unit, None)

    def take_free(self, blocks) -> None:
        """take() for those of `blocks` that are free (the engine handed them out); a block held
        already is left as it is. One lock for all."""
        with self.lock:
            fb, fu, managed = self.fb, self.fu, self.managed
            # take() of a backed block inline when each block is one unit (nearly always): this
            # runs for every block vLLM hands out.
            per_unit, count, empty_since = self.layout.blocks_per_page, self.count, self.empty_since
            for block in blocks:
                if not 0 <= block < managed:
                    raise ValueError(f"block {block} outside 0..{managed - 1}")
                if fb[block] and per_unit:
                    fb[block] = 0
                    self.nbfree -= 1
                    self.nfree -= 1
                    unit = block // per_unit
                    count[unit] += 1
                    if empty_since:
                        empty_since.pop(unit, None)
                elif fb[block] or fu[block]:
                    self.take(block)

    def retire(self, units) -> int:
        """Units emptied for another engine that the fence keeps backed for now (see `retiring`):
        nothing is handed out there until flush() releases them. Units held or not acquired are
        left as they are. Returns how many were retired."""
        with self.lock:
            fb, fu, managed, n = self.fb, self.fu, self.managed, 0
            for unit in units:
                if not self.acq[unit] or self.count[unit] or self.retiring[unit]:
                    continue
                self.retiring[unit] = 1
                n += 1
                for block in self.layout.unit_blocks(unit):
                    if block < managed and fb[block]:
                        fb[block] = 0
                        fu[block] = 1
                        self.nbfree -= 1
            self.nretiring += n
            if n and self.on_release is not None:
                self.on_release()  # an arranged queue head may hold their blocks
            return n

    def _keep(self, unit: int) -> None:
        """A retiring unit is in use again: backed for hand-outs as before."""
        self.retiring[unit] = 0
        self.nretiring -= 1
        self._on_unit_backed(unit)
        if self.on_release is not None:
            self.on_release()  # its free blocks may lie anywhere in an engine's queue

    def pick(self) -> int:
        """The block to hand out next: lowest address among free blocks in backed pages, else the
        lowest free block. -1 when none is free."""
        block = self.fb.find(1)
        if block < 0:
            block = self.fu.find(1)
        return block

    # ------------------------------------------------------------------ backing ahead of use
    def ensure(self, n: int, best_effort: bool = False) -> bool:
        """Makes at least `n` free blocks backed. False when that is not possible now.

        best_effort: a speculative request (prediction of the step's demand): a refusal neither
        enters pressure nor drops cached blocks.
        """
        with self.lock:
            if n <= self.nbfree:
                return True
            if not best_effort and self.prefer_cached:
                self._evict(n - self.nbfree)
                if n <= self.nbfree:
                    return True
            if self.no_new_pages and best_effort:
                return False
            # One refused call per step is enough: the budget will not change within the step.
            held_back = (self.refused_this_step or self.no_new_pages) and not best_effort
            units = None
            on_room = False  # asked within the retry time because the budget has room
            if not held_back and self._refused_recently():
                units = self._units_with_room(n)
                if units is None:
                    if best_effort:
                        return False
                    held_back = True
                    self.refusals_assumed += 1
                else:
                    on_room = True
            if units is None:
                units = [] if held_back else self._plan(n - self.nbfree)
            if units and self.max_units is not None and self.held_units + len(units) > self.max_units:
                units = []  # past the hold's cap: as refused (below), no C call
            if units:
                status = self._acquire_units(units)
                if on_room and status == C.ERR_NO_MEMORY:
                    self._room_refused = True
                if status == C.OK:
                    return n <= self.nbfree
                if best_effort:
                    return False
                if status != C.ERR_NO_MEMORY:
                    self._report_error("kvcached_acquire_ranges", status)
                self._enter_pressure()
            elif best_effort:
                return False
            else:
                self._enter_pressure()
            if not self.prefer_cached:
                self._evict(n - self.nbfree)
            return n <= self.nbfree

    def _evict(self, k: int) -> None:
        if k > 0 and self.evict_cached is not None:
            self.evict_cached(k)

    def _plan(self, deficit: int) -> list[int]:
        """Units to acquire so that `deficit` more free blocks become backed: the pages of the
        lowest-addressed free unbacked blocks (keeps the backed part of the cache compact)."""
        if self.layout.blocks_per_page:
            return self._plan_one_unit_blocks(deficit)
        return self._plan_any(deficit)

    def _plan_one_unit_blocks(self, deficit: int) -> list[int]:
        """_plan when each block lies in one unit (block // blocks_per_page, nearly always): a
        unit's free unbacked blocks counted at once, without the sets and per-block unit lists of
        _plan_any (a few hundred us a call with 128 blocks a page)."""
        per, acq, fu, managed = self.layout.blocks_per_page, self.acq, self.fu, self.managed
        chosen: list[int] = []
        counted = 0
        block = fu.find(1)
        while block >= 0 and counted < deficit:
            unit = block // per
            end = min((unit + 1) * per, managed)
            if not acq[unit]:
                chosen.append(unit)
                counted += fu.count(1, block, end)  # none of the unit's before `block` is free unbacked
            block = fu.find(1, end)
        return chosen

    def _plan_any(self, deficit: int) -> list[int]:
        """_plan for any layout (a block may touch several units)."""
        layout, acq, fu = self.layout, self.acq, self.fu
        chosen: set[int] = set()
        counted: set[int] = set()
        block = fu.find(1)
        while block >= 0 and len(counted) < deficit:
            if block not in counted:
                new_units = [u for u in layout.block_units(block) if not acq[u] and u not in chosen]
                chosen.update(new_units)
                for unit in new_units:
                    for other in layout.unit_blocks(unit):
                        if other < self.managed and fu[other] and other not in counted:
                            if all((acq[u] and not self.retiring[u]) or u in chosen
                                   for u in layout.block_units(other)):
                                counted.add(other)
            block = fu.find(1, block + 1)
        return sorted(chosen)

    def _acquire_units(self, units: list[int]) -> int:
        if not units:
            return C.OK
        ranges = [r for unit in units for r in self.layout.unit_ranges(unit)]
        start = time.perf_counter_ns()
        status = self.api.acquire(ranges)
        self._account(time.perf_counter_ns() - start)
        self.acquire_calls += 1
        if status == C.OK:
            self.units_acquired += len(units)
            self.held_units += len(units)
            moved: list[int] | None = [] if self.on_backed is not None else None
            for unit in units:
                self.acq[unit] = 1
                if self.count[unit] == 0:
                    self.empty_since.setdefault(unit, self.step)
                self._on_unit_backed(unit, moved)
            if moved:
                self.on_backed(moved)
        elif status == C.ERR_NO_MEMORY:
            self.refusals += 1
            self._refused_ns = time.monotonic_ns()
            self._released_at_refusal = self.units_released
            self._room_refused = False  # a new retry time: ensure() says whether room was wrong
        return status

    def _units_with_room(self, n: int) -> list[int] | None:
        """Within the retry time after a refusal: the units that back `n` free blocks when the
        budget has room for all of them now (one C call), else None (the ask is held back). None
        too with a shim or fake without the headroom query."""
        query = getattr(self.api, "budget_headroom", None)
        if query is None or self._room_refused:
            return None
        headroom = query(self.device)  # a cheap read, like the pressure poll: not in the C counts
        page = self.layout.page_size
        if headroom is None or headroom < page:  # a starved engine's usual answer: no planning
            return None
        units = self._plan(n - self.nbfree)
        # A page shared with a neighbour tensor counts twice: the estimate errs towards waiting.
        unit_bytes = self.layout.unit_bytes
        if sum(unit_bytes(unit) for unit in units) > headroom:
            return None
        return units

    def _refused_recently(self) -> bool:
        """The budget refused within retry_ns and this tracker has released nothing since."""
        return (
            self.retry_ns != 0
            and self._refused_ns != 0
            and self.units_released == self._released_at_refusal
            and time.monotonic_ns() - self._refused_ns < self.retry_ns
        )

    def _on_unit_backed(self, unit: int, moved: list[int] | None = None) -> None:
        """The unit's free blocks that are fully backed now move to fb (and to `moved`)."""
        fu, fb = self.fu, self.fb
        for block in self.layout.unit_blocks(unit):
            if block < self.managed and fu[block] and self._fully_backed(block):
                fu[block] = 0
                fb[block] = 1
                self.nbfree += 1
                if moved is not None:
                    moved.append(block)

    def _enter_pressure(self) -> None:
        self.pressure = True
        self.refused_this_step = True

    # ------------------------------------------------------------------ giving pages back
    def flush(self, force: bool = False) -> int:
        """Releases (one C call) units that have been acquired and empty for at least
        release_delay_steps steps (all empty ones with force), never one emptied after `fence`.
        Returns the number released."""
        with self.lock:
            if not self.empty_since:
                return 0
            limit = self.step if force else self.step - self.release_delay_steps
            fenced = self.step if self.fence is None else self.fence
            if self.fence is not None:  # even forced: in-flight work may still write the page
                limit = min(limit, self.fence)
            retiring = self.retiring
            keep = self.keep if not force else ()
            units = sorted(u for u, since in self.empty_since.items()
                           if (since <= limit and u not in keep) or (retiring[u] and since <= fenced))
            units = [u for u in units if self.count[u] == 0 and self.acq[u]]
            for unit in list(self.empty_since):
                if self.count[unit] != 0 or not self.acq[unit]:
                    del self.empty_since[unit]
            if not units:
                return 0
            if self.on_release is not None:
                self.on_release()
            fu, fb = self.fu, self.fb
            for unit in units:
                del self.empty_since[unit]
                self.acq[unit] = 0
                if retiring[unit]:
                    retiring[unit] = 0
                    self.nretiring -= 1
                for block in self.layout.unit_blocks(unit):
                    if block < self.managed and fb[block]:
                        fb[block] = 0
                        fu[block] = 1
                        self.nbfree -= 1
            ranges = [r for unit in units for r in self.layout.unit_ranges(unit)]
            start = time.perf_counter_ns()
            status = self.api.release(ranges)
            self._account(time.perf_counter_ns() - start)
            self.release_calls += 1
            if status != C.OK:
                self._report_error("kvcached_release_ranges", status)
            else:
                self.units_released += len(units)
            self.held_units -= len(units)
            return len(units)

    # ------------------------------------------------------------------ steps
    def step_begin(self) -> None:
        with self.lock:
            self.step += 1
            self.refused_last_step = self.refused_this_step
            self.pressure = False
            self.refused_this_step = False
            self._step_c_ns = 0
            self._step_calls = 0

    def step_end(self) -> None:
        with self.lock:
            self.flush()
            self.record_step_costs()

    def record_step_costs(self) -> None:
        """Keeps the C time and call count of the step since step_begin(), when it made a call
        (engines whose step ends elsewhere than step_end() call this themselves)."""
        with self.lock:
            if self._step_calls:
                if len(self.step_c_us) >= 200_000:  # bound memory on very long runs
                    del self.step_c_us[:100_000]
                    del self.step_calls[:100_000]
                self.step_c_us.append(self._step_c_ns / 1000.0)
                self.step_calls.append(self._step_calls)

    def step_costs(self) -> dict:
        """The per-step C costs for an adapter's snapshot (docs: per-step costs)."""
        with self.lock:
            return {
                "steps_with_c_calls": len(self.step_c_us),
                "c_us_per_step_p50": percentile(self.step_c_us, 50),
                "c_us_per_step_p99": percentile(self.step_c_us, 99),
                "c_calls_per_step_max": max(self.step_calls, default=0),
            }

    def effective_free(self, engine_free: int) -> int:
        """The engine's free-block count, clamped under pressure to blocks that need no new page."""
        if not self.pressure:
            return engine_free
        return min(engine_free, self.nbfree + self.cached_count())

    # ------------------------------------------------------------------ misc
    def _account(self, ns: int) -> None:
        self.c_ns_total += ns
        self._step_c_ns += ns
        self._step_calls += 1

    def _last_error(self) -> str:
        try:
            return self.api.last_error()
        except Exception:  # noqa: BLE001 - diagnostics only
            return ""

    def _report_error(self, call: str, status: int) -> None:
        self.errors += 1
        if status not in self._reported:
            self._reported.add(status)
            important(
                f"{self.name}: {call} failed with {C.STATUS_NAMES.get(status, status)}: {self._last_error()} "
                "(treated as 'no memory now'; reported once)",
                logging.ERROR,
            )

    def acquired_units(self) -> list[int]:
        return [u for u in range(self.layout.num_units) if self.acq[u]]

    def backed_bytes(self) -> int:
        """Bytes of shim pages this tracker holds (approximate at tensor edges)."""
        return sum(len(self.layout.class_spans[u // self.layout.pages_per_class]) for u in self.acquired_units()) * self.layout.page_size

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "name": self.name,
                "step": self.step,
                "blocks": self.managed,
                "free_blocks": self.nfree,
                "free_backed_blocks": self.nbfree,
                "held_blocks": self.managed - self.nfree,
                "units": self.layout.num_units,
                "units_acquired": sum(self.acq),
                "units_retiring": self.nretiring,
                "units_kept": len(self.keep),
                "backed_bytes": self.backed_bytes(),
                "acquire_calls": self.acquire_calls,
                "release_calls": self.release_calls,
                "refusals": self.refusals,
                "refusals_assumed": self.refusals_assumed,
                "errors": self.errors,
                "pages_acquired_total": self.units_acquired,
                "pages_released_total": self.units_released,
                "sync_backings": self.sync_backings,
                "double_frees": self.double_frees,
                "c_time_s": self.c_ns_total / 1e9,
                "pressure": self.pressure,
            }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for an empty list."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
    return ordered[rank]


__all__ = ["KVPageTracker", "BackingRefused", "percentile", "logger"]
