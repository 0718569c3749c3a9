"""The sharing policy's verdicts (docs/sharing.md), acted on by vLLM's scheduler.

Before each schedule() the engine has the verdict for its GPU (kvcached_share_action_get, then
kvcached_share_verdict when not ok: asked every step while not ok, while ok again only after
KVCACHED_HOOK_SHARE_ASK_MS) and acts on it for that step:

  ok              nothing: an engine below its share (or with nobody starved) is never touched.
  stop_admitting  requests that wait (new ones, and preempted ones to be resumed) get None from
                  allocate_slots without vLLM's allocate_slots being called, so vLLM admits
                  nothing this step; running requests continue as usual.
  give_cached     admissions stopped, no new page for this step, and cached (prefix) blocks are
                  evicted until pages worth give_bytes are empty: pages whose held blocks are all
                  cached, least recently used first (a page that stays partly used frees nothing).
  preempt         as give_cached, then, while that is not enough, the running requests holding
                  the page unit the fewest requests share are preempted with vLLM's own
                  Scheduler._preempt_request (vLLM recomputes them later) and the pages they leave
                  cached are evicted too (_victims says why not simply the newest).

The pages made empty are released at once, behind the fence (steps.py): a batch in flight keeps
its pages until it was processed, and until then nothing is handed out in them (tracker.retire):
the running requests' next blocks had refilled them, so that they were counted as given but
never went, and the starved engine's next ask cost more preemptions. Only what was asked goes
(whole units, never below the share): preempted requests may empty more pages than that, and
those stay the engine's for the hold (tracker.keep; given too, they would take it below its
share and make it the next engine to starve). An engine that gave (pages or preempted requests)
then holds: for KVCACHED_HOOK_SHARE_HOLD_MS it backs no page beyond the units it kept
(tracker.max_units), each give starting the hold again; a step with nothing of its own running
ends it (what it kept may not fit its next request).
Without it the busy engine took the memory back as soon as the starved engine's request ended,
and that engine's next request (a quiet neighbour: one a second) starved again: on an H100 the
busy engine preempted ~130 requests a run for a neighbour that never held more than 80 MiB. What
it kept is at least its fair share (giving never goes below it), so the hold never keeps an engine
from its share; it only keeps it from going above it again at once. The engine never gives more
than would take it below its fair share. It gives whole pages of its cache, one page in every KV
tensor (its unit); it publishes that unit once (kvcached_share_set_unit), so the shim computes its
share in whole units and asks it for whole units, and a starved engine's episode ends once it
lacks less than one of its own units.
(With a shim that predates units the policy counts in pages, and the starved engine may get up to
one unit less than it lacks.) What was given and preempted is reported to the ledger
(kvcached_share_report) for kvctl.

Progress rule: while admissions are stopped, an engine with no running request may still admit one
request into pages it already holds (no page is acquired for it), except in a step in which it
preempted. So an engine whose own requests were all preempted, or finished, never waits for
itself; what does not fit in its pages waits until the verdict is ok again (the starved engine got
its share, or stopped asking). An engine asked to give less than one of its page units (one page
in each KV tensor) above its share cannot give anything without going below it: nothing of it can
help the starved engine, so it admits into the pages it holds (no new page) instead of stalling.

An engine whose shim has no verdict (an older shim, or a call that failed) behaves as before the
policy existed: the prefix cache goes back whenever another process was refused (steps.py).
"""

from __future__ import annotations

import logging
import time

from ..._log import important
from . import tp

OK, STOP, GIVE_CACHED, PREEMPT = "ok", "stop_admitting", "give_cached", "preempt"
_RANK = {OK: 0, STOP: 1, GIVE_CACHED: 2, PREEMPT: 3}

# allocate_slots decisions for one request
RUN, REFUSE, BACKED_ONLY = "run", "refuse", "backed_only"


def _size(nbytes: int) -> str:
    if nbytes >= 1 << 20 or nbytes == 0:
        return f"{nbytes / (1 << 20):.1f} MiB"
    return f"{nbytes >> 10} KiB"


class Episode:
    """One stretch of steps with a verdict other than ok (for the log line and the snapshot)."""

    def __init__(self, step: int, verdict) -> None:
        self.first_step = step
        self.steps = 0
        self.worst = OK
        self.starved_pid = verdict.starved_pid
        self.held_at_start = verdict.held_bytes
        self.fair_share = verdict.fair_share_bytes
        self.given_bytes = 0
        self.cached_blocks = 0
        self.preempted = 0
        self.preempted_tokens = 0
        self.refused_admissions = 0


class SharePolicy:
    """Reads the verdict each step and applies it to one vLLM scheduler (through its PoolAdapter)."""

    def __init__(self, adapter, hooks) -> None:
        self.adapter = adapter
        self.hooks = hooks
        self.device = adapter.entry.device_index
        self.verdict = None  # this step's verdict; None: the shim has none (or not asked yet)
        self.preempted_now: list = []  # requests this policy preempted in the current step
        self.cannot_give = False  # asked to give, but its smallest page unit exceeds what it may give
        self._released_mark = adapter.tracker.units_released  # pages released up to the last trim
        self.episode: Episode | None = None
        # Totals since start (snapshot).
        self.episodes = 0
        self.stopped_steps = 0
        self.refused_admissions = 0
        self.progress_admissions = 0
        self.given_bytes = 0
        self.cached_blocks_given = 0
        self.preempted = 0
        self.preempted_tokens = 0  # their computed tokens when preempted (recomputed on resume)
        # While the answer is ok it is asked again only after ask_s (KVCACHED_HOOK_SHARE_ASK_MS):
        # the question costs ~6-20 us of the scheduler's time a step (the Python and ctypes path,
        # cold between steps), an answer that changes only when another engine starves.
        self.ask_s = adapter.settings.share_ask_ms / 1000.0
        self.asked_at = float("-inf")
        self.asks = 0
        # The hold after giving (KVCACHED_HOOK_SHARE_HOLD_MS): tracker.max_units is set while it lasts.
        self.hold_s = adapter.settings.share_hold_ms / 1000.0
        self.hold_until: float | None = None
        self.holds = 0  # gives that started or renewed a hold
        self.unit_published = self.publish_unit()

    def unit_bytes(self) -> int:
        """The least this engine takes or gives: one page in every KV tensor of its smallest page
        class (what _give can free at a time)."""
        return self.adapter.tracker.layout.smallest_unit_bytes()

    def publish_unit(self) -> bool:
        """Tells the shim this engine's unit once, so that its fair share is reachable in whole units
        (docs/sharing.md): without it the policy counts in pages, and a starved engine may stay one
        page short of its share forever. False when the shim cannot take it (older shim, tensor
        parallel, a fake without it); the policy then works in pages, as before."""
        api = self.adapter.api
        if isinstance(api, tp.RemoteApi):
            return False  # tensor parallel: the pages are charged to the workers, not to this process
        publish = getattr(api, "share_set_unit", None)
        if publish is None:
            return False
        try:
            return publish(self.device, self.unit_bytes()) == 0
        except Exception:  # noqa: BLE001 - no unit: the policy counts in pages
            return False

    # ------------------------------------------------------------------ the verdict
    def read(self):
        api = self.adapter.api
        if isinstance(api, tp.RemoteApi):
            return None  # tensor parallel: the pages are charged to the workers, not to this process
        # The cheap per-step form where the API has it (the real one); fakes script share_verdict.
        query = getattr(api, "share_verdict_fast", None) or getattr(api, "share_verdict", None)
        if query is None:  # absent from older fakes
            return None
        try:
            return query(self.device)
        except Exception:  # noqa: BLE001 - no verdict: behave as before the policy
            return None

    @property
    def action(self) -> str:
        return self.verdict.action if self.verdict is not None else OK

    @property
    def stopping(self) -> bool:
        """Admissions are stopped for this step."""
        return self.action != OK

    def before_schedule(self, scheduler) -> bool:
        """Reads the verdict and acts. False when the shim gave no verdict (the caller then uses
        the older pressure signal)."""
        self.preempted_now = []
        self.cannot_give = False
        tracker = self.adapter.tracker
        tracker.no_new_pages = False
        if self.hold_until is not None or self.episode is not None:
            # Units given went at their fence (steps.before_schedule's flush): back to the budget
            # now, or they stay charged to this engine, and the next ask takes another unit.
            self._trim()
        verdict = self.verdict
        now = self.adapter.now
        if self.hold_until is not None and (now >= self.hold_until or not scheduler.running):
            # Over; or nothing of its own runs: what it kept may not fit its next request, and an
            # engine must not stall behind its own hold.
            self.hold_until = tracker.max_units = None
            tracker.keep.clear()
        if verdict is not None and verdict.action == OK and now - self.asked_at < self.ask_s:
            return True  # ok still (asked under ask_s ago); its episode ended when it was read
        verdict = self.verdict = self.read()
        self.asked_at = now
        self.asks += 1
        if verdict is None:
            self._end_episode()
            return False
        if verdict.action == OK:
            self._end_episode()
            return True
        self._note(verdict)
        self.stopped_steps += 1
        if verdict.action in (GIVE_CACHED, PREEMPT):
            tracker.no_new_pages = True  # what it frees is for the starved engine
            self._give(verdict, scheduler if verdict.action == PREEMPT else None)
        return True

    def idle(self) -> bool:
        """The idle thread's turn (nothing runs, nothing in flight): cached blocks only. False
        when the shim gave no verdict."""
        verdict = self.read()
        if verdict is None:
            return False
        if verdict.action == OK:
            self._end_episode()
            return True
        self._note(verdict)
        if verdict.action in (GIVE_CACHED, PREEMPT):
            self._give(verdict, None)
        return True

    # ------------------------------------------------------------------ admissions
    def admission(self, request, scheduler) -> str:
        """How allocate_slots treats `request` this step: RUN (as usual), REFUSE (answer None
        without calling vLLM), BACKED_ONLY (the progress rule: only pages already held)."""
        if not self.stopping or getattr(request.status, "name", "") == "RUNNING":
            return RUN
        if self.cannot_give or (scheduler is not None and not scheduler.running and not self.preempted_now):
            self.progress_admissions += 1
            return BACKED_ONLY
        self.refused_admissions += 1
        if self.episode is not None:
            self.episode.refused_admissions += 1
        return REFUSE

    def after_schedule(self, output) -> None:
        """vLLM 0.24 lists only the requests its own schedule() preempted: add ours, so the model
        runner drops their state (0.26 reads the scheduler's set, which has them already)."""
        if not self.preempted_now:
            return
        ids = getattr(output, "preempted_req_ids", None)
        if isinstance(ids, set):
            ids.update(r.request_id for r in self.preempted_now if getattr(r.status, "name", "") == "PREEMPTED")

    # ------------------------------------------------------------------ giving
    def _unit_bytes(self, unit: int) -> int:
        return self.adapter.tracker.layout.unit_bytes(unit)

    def _empty_units(self) -> list[int]:
        """Units backed and empty: released at the next flush the fence allows."""
        tracker = self.adapter.tracker
        return [u for u in tracker.empty_since if tracker.acq[u] and tracker.count[u] == 0]

    def _empty_bytes(self) -> int:
        return sum(self._unit_bytes(u) for u in self._empty_units())

    def _give(self, verdict, scheduler) -> None:
        adapter, tracker = self.adapter, self.adapter.tracker
        target = verdict.give_bytes
        # Never below its share by giving: at most what it holds above it.
        limit = max(0, verdict.held_bytes - verdict.fair_share_bytes)
        empty_before = self._empty_bytes()
        cached_before = len(adapter.cached)
        preempted = []
        tokens = 0  # computed tokens of the requests preempted: vLLM computes them again
        smallest = self.unit_bytes()
        if target > empty_before and empty_before + smallest > limit:
            # Any page it could free would take it below its share: nothing moves, and holding
            # admissions back would not help the starved engine; it admits into pages it holds.
            self.cannot_give = True
        elif target > 0:
            empty = self._evict_whole_pages(empty_before, target, limit)
            while scheduler is not None and empty < target and empty + smallest <= limit and scheduler.running:
                victims = self._victims(scheduler)
                tokens += sum(victim.num_computed_tokens for victim in victims)  # reset by the preemption
                for victim in victims:
                    scheduler.running.remove(victim)
                    scheduler._preempt_request(victim, time.monotonic())
                preempted.extend(victims)
                empty = self._evict_whole_pages(self._empty_bytes(), target, limit)
        cached = max(0, cached_before - len(adapter.cached))
        given = self._hand_over(target, limit)
        self._trim()
        self.preempted_now.extend(preempted)
        if given or preempted:
            self._hold()
            self.given_bytes += given
            self.cached_blocks_given += cached
            self.preempted += len(preempted)
            self.preempted_tokens += tokens
            episode = self.episode
            if episode is not None:
                episode.given_bytes += given
                episode.cached_blocks += cached
                episode.preempted += len(preempted)
                episode.preempted_tokens += tokens
            report = getattr(adapter.api, "share_report", None)
            if report is not None:
                report(self.device, given, len(preempted))

    def _hand_over(self, target: int, limit: int) -> int:
        """Gives empty units worth `target` bytes (whole units, never past `limit`): retired
        (tracker.retire: nothing is handed out in them) and released now, or as soon as the fence
        allows, without the release delay. Units given in an earlier step and still waiting for
        their fence count towards the target. Preempted requests may empty more units than that;
        the rest stay this engine's free pages. Returns the bytes given now."""
        tracker = self.adapter.tracker
        self.hooks._update_fence()
        empty = self._empty_units()
        # Given already, not gone yet (still charged to it, so within `limit` too): counted first,
        # or a surplus unit met before them in the walk was given on top of them.
        total = sum(self._unit_bytes(u) for u in empty if tracker.retiring[u])
        given = 0
        chosen = []
        for unit in sorted((u for u in empty if not tracker.retiring[u]), reverse=True):
            if total >= target:  # the highest first: the rest of the cache stays compact
                break
            size = self._unit_bytes(unit)
            if total + size <= limit:
                chosen.append(unit)
                total += size
                given += size
        tracker.retire(chosen)
        tracker.flush()
        return given

    def _hold(self) -> None:
        """Caps the pages it backs at the units it kept (those still held, less the ones given and
        waiting for their fence) until the hold ends, and keeps its other empty pages meanwhile;
        each give renews it."""
        if self.hold_s <= 0:
            return
        tracker = self.adapter.tracker
        # What it kept: all but the units given (those the give emptied beyond them stay its own).
        tracker.max_units = tracker.held_units - tracker.nretiring
        tracker.keep.update(u for u in self._empty_units() if not tracker.retiring[u])
        self.hold_until = time.monotonic() + self.hold_s  # the idle thread's adapter.now is old
        self.holds += 1

    def _trim(self) -> None:
        """Released pages stay in the shim's pool (mapped, charged to this process) until it trims
        them: during an episode they are returned to the budget at once, for the starved engine."""
        tracker = self.adapter.tracker
        if tracker.units_released == self._released_mark:
            return
        self._released_mark = tracker.units_released
        trim = getattr(self.adapter.api, "trim", None)
        if trim is not None:
            trim(self.device)

    def _evict_whole_pages(self, empty: int, target: int, limit: int) -> int:
        """Evicts the cached blocks of pages whose held blocks are all cached (least recently used
        first) until `target` bytes of pages are empty, never past `limit` (a block may lie in
        pages of several tensors: every page its eviction would empty counts). Returns the bytes
        of empty pages now."""
        adapter, tracker = self.adapter, self.adapter.tracker
        layout = tracker.layout
        if empty >= target or not adapter.cached:
            return empty
        protected = adapter.protected
        for unit, blocks in self._cached_by_unit().items():
            if empty >= target:
                break
            # An earlier unit's eviction may have taken some; a prefix hit being allocated stays.
            blocks = [b for b in blocks if b in adapter.cached and b not in protected]
            if not blocks or not tracker.acq[unit] or tracker.count[unit] != len(blocks):
                continue  # other held blocks (or a pin) keep this page: evicting frees nothing
            touched: dict[int, int] = {}
            for bid in blocks:
                for other in layout.block_units(bid):
                    touched[other] = touched.get(other, 0) + 1
            freed = sum(self._unit_bytes(u) for u, n in touched.items() if tracker.acq[u] and tracker.count[u] == n)
            if empty + freed > limit:
                continue
            for bid in blocks:
                block = adapter.cached[bid]
                adapter.pool._maybe_evict_cached_block(block)
                adapter.sync(block)
            empty = self._empty_bytes()
        return empty

    def _victims(self, scheduler) -> list:
        """The running requests to preempt next: all those holding blocks in the page unit that the
        fewest requests share (newest requests first among equal ones), so that preempting them
        empties a whole unit. A page holds many blocks (128 of 16 KiB in a 2 MiB page) and decode
        steps hand them out to every running request in turn, so preempting the newest request
        alone rarely empties any page: with 128 blocks per page and 24 requests of 300-token
        prompts in decode, newest-first preempted 15 requests to free one unit, this choice 2.
        (When decode blocks dominate, every page holds blocks of every request and no choice of
        victims helps.) A unit that something else holds (the null block, a request that is not
        running) cannot be emptied this way; when no unit can, the newest request goes (vLLM's
        own choice)."""
        tracker, layout = self.adapter.tracker, self.adapter.tracker.layout
        managers = scheduler.kv_cache_manager.coordinator.single_type_managers
        running = list(scheduler.running)
        holders: dict[int, set[int]] = {}  # unit -> indexes into running
        blocks_in: dict[int, set[int]] = {}  # unit -> held block ids of running requests
        for index, request in enumerate(running):
            for manager in managers:
                for block in manager.req_to_blocks.get(request.request_id, ()):
                    if block.is_null:
                        continue
                    for unit in layout.block_units(block.block_id):
                        holders.setdefault(unit, set()).add(index)
                        blocks_in.setdefault(unit, set()).add(block.block_id)
        cached_in = self._cached_by_unit()
        order = self._preemption_order(scheduler, running)
        best = None  # (holders, the newest holder's order key, holders' indexes)
        for unit, indexes in holders.items():
            if not tracker.acq[unit] or tracker.count[unit] != len(blocks_in[unit]) + len(cached_in.get(unit, ())):
                continue  # held by something besides running requests and the prefix cache
            newest = max(order(i) for i in indexes)
            if best is None or len(indexes) < best[0] or (len(indexes) == best[0] and newest > best[1]):
                best = (len(indexes), newest, indexes)
        if best is None:
            return [self._newest(scheduler)]
        return [running[i] for i in sorted(best[2], key=order, reverse=True)]

    def _cached_by_unit(self) -> dict[int, list[int]]:
        """Unit -> the cached blocks in it (every page of each), units in LRU order of their blocks."""
        layout, out = self.adapter.tracker.layout, {}
        for bid in self.adapter.cached:
            for unit in layout.block_units(bid):
                out.setdefault(unit, []).append(bid)
        return out

    @staticmethod
    def _preemption_order(scheduler, running):
        """vLLM's own order of preemption as a key on indexes into `running`, larger for the request
        it would preempt first: the lowest priority, latest arrival under the priority policy;
        otherwise the last one admitted (running is in admission order)."""
        if getattr(scheduler.policy, "value", None) == "priority":
            return lambda i: (running[i].priority, running[i].arrival_time)
        return lambda i: i

    @classmethod
    def _newest(cls, scheduler):
        """The request vLLM itself would preempt first."""
        running = list(scheduler.running)
        return running[max(range(len(running)), key=cls._preemption_order(scheduler, running))]

    # ------------------------------------------------------------------ episodes
    def _note(self, verdict) -> None:
        if self.episode is None:
            self.episode = Episode(self.adapter.tracker.step, verdict)
            self.episodes += 1
        episode = self.episode
        episode.steps += 1
        if _RANK.get(verdict.action, 0) > _RANK[episode.worst]:
            episode.worst = verdict.action

    def _end_episode(self) -> None:
        """One log line per episode, when it ends."""
        episode, self.episode = self.episode, None
        if episode is None:
            return
        important(
            f"{self.adapter.label}: sharing: above its fair share ({_size(episode.held_at_start)} held, share "
            f"{_size(episode.fair_share)}) while pid {episode.starved_pid} was starved, for {episode.steps} step(s) "
            f"from step {episode.first_step} (up to {episode.worst}): {episode.refused_admissions} admission(s) "
            f"held back, gave {_size(episode.given_bytes)} ({episode.cached_blocks} cached blocks), "
            f"preempted {episode.preempted} request(s) ({episode.preempted_tokens} computed tokens)",
            logging.INFO,
        )

    def snapshot(self) -> dict:
        return {
            "share_action": self.action,
            "share_asks": self.asks,
            "share_episodes": self.episodes,
            "share_stopped_steps": self.stopped_steps,
            "share_refused_admissions": self.refused_admissions,
            "share_progress_admissions": self.progress_admissions,
            "share_given_bytes": self.given_bytes,
            "share_cached_blocks_given": self.cached_blocks_given,
            "share_preempted_requests": self.preempted,
            "share_preempted_tokens": self.preempted_tokens,
            "share_holds": self.holds,
            "share_hold_units": self.adapter.tracker.max_units,
        }


__all__ = ["SharePolicy", "RUN", "REFUSE", "BACKED_ONLY"]
