"""The vLLM adapter acting on the sharing policy's verdicts (docs/sharing.md), with vLLM's real
Scheduler on the CPU and a fake C API whose verdict the test scripts (run once per supported vLLM
release): an ok verdict changes nothing; stop_admitting holds admissions back and lets running
requests finish, and an engine with nothing running still makes progress in the pages it holds;
give_cached frees whole pages worth what is asked, no more; preempt preempts the holders of the
page the fewest requests share (not simply the newest), which are recomputed and finish with their
full output; no page is released before its fence under asynchronous scheduling; every held block
stays backed at every step; one log line per episode; the pressure signal is the fallback only for
a shim without verdicts.
"""

import bisect
import dataclasses
import logging
import os
import unittest

import test_vllm_adapter as base
import vllm_support as V
from fake_capi import FakeCApi, SharedBudget

if V.HAVE_VLLM:
    from kvcached_hook import capi as C
    from kvcached_hook.engines import vllm as adapter_pkg
    from kvcached_hook.engines.vllm import registry, worker
    from kvcached_hook.patching import PatchSet, Target

PAGE = base.PAGE  # 4 blocks of the uniform cache per page, one page per tensor (2 tensors) per unit


class RegionPagesApi(FakeCApi):
    """Each KV tensor its own region starting at the tensor, as the shim's MemPool makes them on a
    GPU, with pages counted from the tensor's start (so one unit of the page map is one page in
    each tensor, and what the fake holds matches the adapter's units)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bases = []

    def region_info(self, addr):
        if addr not in self.bases:
            bisect.insort(self.bases, addr)
        return dataclasses.replace(super().region_info(addr), base=addr)

    def pages_of(self, addr, length):
        index = bisect.bisect_right(self.bases, addr) - 1
        base = self.bases[index] if index >= 0 else 0
        return [(base, page) for page in range((addr - base) // self.page_size,
                                               (addr + length - 1 - base) // self.page_size + 1)]


class Script:
    """The policy's verdict as a function of what this fake process holds: above `share` pages,
    `action` with give_bytes = the excess (at most `deficit` pages, when given); else ok."""

    def __init__(self, api, action, share_pages, deficit_pages=None):
        self.api, self.action, self.share, self.deficit = api, action, share_pages, deficit_pages
        self.calls = 0
        self.actions = []

    def __call__(self, device):
        self.calls += 1
        page = self.api.page_size
        held = len(self.api.in_use_pages())
        if self.action == "ok" or held < self.share:
            verdict = C.ShareVerdict(action="ok", held_bytes=held * page, fair_share_bytes=self.share * page)
        else:
            give = held - self.share if self.deficit is None else min(held - self.share, self.deficit)
            action = self.action if give > 0 or self.action == "stop_admitting" else "stop_admitting"
            verdict = C.ShareVerdict(action=action, give_bytes=give * page, fair_share_bytes=self.share * page,
                                     held_bytes=held * page, deficit_bytes=give * page, starved_pid=4242)
        self.actions.append(verdict.action)
        return verdict


@unittest.skipUnless(V.HAVE_VLLM, V.SKIP_REASON if not V.HAVE_VLLM else "")
class VllmShareTest(base.PatchedVllmTest):

    def setUp(self):
        registry.clear()
        self.api = None
        # These tests script the verdict step by step: asked every step (the interval's own test
        # below sets it).
        self.enterContext(V.env(KVCACHED_HOOK_SHARE_ASK_MS="0"))

    # ---------------------------------------------------------------- helpers
    def engine(self, num_blocks=64, page=PAGE, api_cls=FakeCApi, **config):
        self.api = api_cls(page_size=page, budget=SharedBudget(None))
        worker.overrides["api"] = self.api
        vllm_config = V.make_vllm_config(num_blocks, **config)
        kv_config = V.kv_cache_config(vllm_config, "uniform")
        V.build_worker_cache(vllm_config, kv_config)
        scheduler = V.make_scheduler(vllm_config, kv_config)
        adapter = scheduler.kv_cache_manager.block_pool.__dict__.get("_kvcached")
        self.assertIsNotNone(adapter)
        return scheduler, adapter

    def assert_backed(self, adapter, where=""):
        for block, ranges in base.held_ranges(adapter).items():
            for addr, length in ranges:
                self.assertTrue(self.api.backed(addr, length), f"{where}: held block {block} not backed")
        self.assertEqual(adapter.mismatches(), [], where)

    def add(self, scheduler, prefix, n, prompt_len, max_tokens, first_token=1):
        requests = [V.make_request(f"{prefix}{i}", [first_token + i] * prompt_len, max_tokens) for i in range(n)]
        for request in requests:
            scheduler.add_request(request)
        return requests

    def step(self, scheduler, adapter=None):
        out = scheduler.schedule()
        if adapter is not None:
            self.assert_backed(adapter, f"scheduled step {adapter.tracker.step}")
        scheduler.update_from_output(out, V.fake_output(scheduler, out))
        if adapter is not None:
            self.assert_backed(adapter, f"processed step {adapter.tracker.step}")
        return out

    def spy_allocations(self, scheduler):
        """Request ids that reached vLLM's own block counting (inside allocate_slots)."""
        seen = []
        coordinator = scheduler.kv_cache_manager.coordinator
        original = coordinator.get_num_blocks_to_allocate

        def counting(request_id, *args, **kwargs):
            seen.append(request_id)
            return original(request_id, *args, **kwargs)

        coordinator.get_num_blocks_to_allocate = counting
        return seen

    @staticmethod
    def outputs(requests):
        return {r.request_id: len(r.output_token_ids) for r in requests}

    # ---------------------------------------------------------------- ok
    def test_an_ok_verdict_changes_nothing(self):
        """Same schedule, step by step, as vLLM without the hook; same C calls as a shim without
        verdicts; nothing reported."""

        def run(hooked, verdict):
            registry.clear()
            if hooked:  # pages start at each tensor: the same page map in every run
                scheduler, adapter = self.engine(api_cls=RegionPagesApi)
                self.api.share_verdict = verdict(self.api)
            else:
                adapter_pkg.unpatch()
                try:
                    vllm_config = V.make_vllm_config(64)
                    scheduler = V.make_scheduler(vllm_config, V.kv_cache_config(vllm_config, "uniform"))
                finally:
                    self.assertTrue(adapter_pkg.patch())
                adapter = None
            self.assertEqual(adapter is None, "_kvcached" not in scheduler.kv_cache_manager.block_pool.__dict__)
            requests = self.add(scheduler, "r", 10, 70, 20)
            trace = []
            V.run_loop(scheduler, check=lambda stage, out: trace.append(dict(out.num_scheduled_tokens))
                       if stage == "scheduled" else None)
            self.assertFalse(scheduler.has_requests())
            calls = (self.api.acquire_calls, self.api.release_calls) if hooked else None
            return trace, self.outputs(requests), adapter, calls

        plain, plain_out, _, _ = run(False, None)
        with_ok, ok_out, adapter, ok_calls = run(True, lambda api: Script(api, "ok", 0))
        self.assertGreater(len(plain), 5)
        self.assertEqual(with_ok, plain, "an ok verdict changed the schedule")
        self.assertEqual(ok_out, plain_out)
        snap = adapter.snapshot()
        self.assertGreater(self.api.share_verdict.calls, 0, "the verdict was never read: the test proves nothing")
        for key in ("share_episodes", "share_stopped_steps", "share_refused_admissions", "share_given_bytes",
                    "share_preempted_requests"):
            self.assertEqual(snap[key], 0, key)
        self.assertFalse(hasattr(self.api, "share_given"), "share_report called under ok")
        _, _, _, none_calls = run(True, lambda api: (lambda device: None))
        self.assertEqual(ok_calls, none_calls, "an ok verdict changed the C calls")

    def test_an_ok_answer_is_asked_again_only_after_the_interval_and_any_other_every_step(self):
        with V.env(KVCACHED_HOOK_SHARE_ASK_MS="1000"):
            scheduler, adapter = self.engine()
        script = self.api.share_verdict = Script(self.api, "ok", 0)
        self.add(scheduler, "r", 3, 40, 40)
        for _ in range(8):
            self.step(scheduler, adapter)
        self.assertEqual(script.calls, 1, "ok was asked again within the interval")
        share = adapter.hooks.share
        self.assertEqual(adapter.snapshot()["share_asks"], 1)
        # Another engine starves: this one learns it at its first question after the interval.
        script = self.api.share_verdict = Script(self.api, "stop_admitting", 0)
        self.step(scheduler, adapter)
        self.assertEqual(script.calls, 0)
        share.asked_at -= 1.0  # the interval has passed
        for n in range(1, 6):  # a non-ok answer: asked every step, however recent
            self.step(scheduler, adapter)
            self.assertEqual(script.calls, n)
            self.assertEqual(share.action, "stop_admitting")
        script = self.api.share_verdict = Script(self.api, "ok", 0)
        for _ in range(4):
            self.step(scheduler, adapter)
        self.assertEqual(script.calls, 1, "ok read once, then not again within the interval")
        self.assertEqual(share.action, "ok")
        self.assertEqual(adapter.snapshot()["share_episodes"], 1)

    # ---------------------------------------------------------------- stop_admitting
    def test_stop_admitting_holds_admissions_back_and_running_requests_finish(self):
        scheduler, adapter = self.engine()
        running = self.add(scheduler, "r", 3, 40, 12)
        self.step(scheduler, adapter)
        self.assertEqual(len(scheduler.running), 3)
        script = self.api.share_verdict = Script(self.api, "stop_admitting", 0)
        waiting = self.add(scheduler, "n", 3, 40, 12, first_token=100)
        seen = self.spy_allocations(scheduler)
        steps = 0
        while any(not r.is_finished() for r in running):
            out = self.step(scheduler, adapter)
            self.assertFalse(set(out.num_scheduled_tokens) & {r.request_id for r in waiting}, "admitted while stopped")
            steps += 1
            self.assertLess(steps, 100)
        self.assertFalse([rid for rid in seen if rid.startswith("n")], "vLLM's allocate_slots ran for an admission")
        self.assertEqual(self.outputs(running), {r.request_id: 12 for r in running})
        self.assertEqual(sum(r.num_preemptions for r in running), 0)
        self.assertTrue(all(a == "stop_admitting" for a in script.actions))
        snap = adapter.snapshot()
        self.assertGreaterEqual(snap["share_stopped_steps"], steps)
        self.assertGreater(snap["share_refused_admissions"], 0)
        self.assertEqual(snap["share_episodes"], 1)
        # The starved engine got its share: admissions resume.
        self.api.share_verdict = Script(self.api, "ok", 0)
        V.run_loop(scheduler, check=lambda stage, _o: self.assert_backed(adapter, stage))
        self.assertEqual(self.outputs(waiting), {r.request_id: 12 for r in waiting})

    def test_an_engine_with_nothing_running_still_progresses_in_its_own_pages(self):
        with V.env(KVCACHED_HOOK_RELEASE_DELAY_STEPS=1000):
            scheduler, adapter = self.engine(prefix_caching=False)
        self.add(scheduler, "w", 2, 60, 4)  # leaves ~10 blocks' pages backed (released only after 1000 steps)
        V.run_loop(scheduler)
        self.api.share_verdict = Script(self.api, "stop_admitting", 0)
        acquires = self.api.acquire_calls
        small = self.add(scheduler, "s", 3, 20, 4, first_token=50)
        most_running = []
        V.run_loop(scheduler, check=lambda stage, out: (most_running.append(len(scheduler.running)),
                                                        self.assert_backed(adapter, stage)))
        self.assertEqual(self.outputs(small), {r.request_id: 4 for r in small}, "deadlocked on itself")
        self.assertEqual(max(most_running), 1, "more than one admission at a time while stopped")
        self.assertEqual(self.api.acquire_calls, acquires, "a page was acquired for an admission while stopped")
        snap = adapter.snapshot()
        self.assertEqual(snap["share_progress_admissions"], 3)
        self.assertGreater(snap["share_refused_admissions"], 0, "never held one back: the test proves nothing")
        # What does not fit in the pages it holds waits, without error and without acquiring.
        big = self.add(scheduler, "b", 1, 300, 4, first_token=90)[0]
        for _ in range(5):
            self.step(scheduler, adapter)
        self.assertEqual(big.num_computed_tokens, 0)
        self.assertEqual(self.api.acquire_calls, acquires)
        self.api.share_verdict = Script(self.api, "ok", 0)
        V.run_loop(scheduler)
        self.assertEqual(len(big.output_token_ids), 4)

    # ---------------------------------------------------------------- give_cached
    def test_give_cached_frees_whole_pages_worth_what_is_asked_and_no_more(self):
        # keep: vLLM's own block order, so that finished requests leave all their blocks cached;
        # pages start at each tensor: 4 blocks per page, a unit is one page in each of 2 tensors.
        with V.env(KVCACHED_HOOK_PREFIX_CACHE="keep"):
            scheduler, adapter = self.engine(api_cls=RegionPagesApi)
        self.add(scheduler, "c", 8, 64, 1)  # 4 full (cached) blocks each, distinct prompts
        V.run_loop(scheduler)
        adapter.hooks.idle_tick(now=0.0)  # empty pages go now; cached blocks keep theirs
        before = len(self.api.in_use_pages())
        cached = len(adapter.cached)
        lru = list(adapter.cached)
        self.assertGreaterEqual(cached, 28)
        unit_pages = len(adapter.tracker.layout.spans)  # one page per tensor
        give_pages = 3 * unit_pages
        script = self.api.share_verdict = Script(self.api, "give_cached", before - give_pages)
        x = self.add(scheduler, "x", 1, 20, 3, first_token=200)[0]
        for _ in range(4):
            out = self.step(scheduler, adapter)
            self.assertNotIn("x", out.num_scheduled_tokens)
        self.assertEqual(script.actions[0], "give_cached")
        self.assertEqual(set(script.actions[1:]), {"stop_admitting"}, "asked again: the first step gave too little")
        self.assertEqual(len(self.api.in_use_pages()), before - give_pages, "gave other than what was asked")
        evicted = set(lru) - set(adapter.cached)
        self.assertTrue(evicted)
        tracker = adapter.tracker
        stay = [b for b in evicted for u in tracker.layout.block_units(b) if tracker.acq[u]]
        self.assertEqual(stay, [], "evicted blocks whose pages stay held")
        self.assertEqual(self.api.share_given, give_pages * PAGE)
        self.assertEqual(self.api.share_preempted, 0)
        # Least recently used first: the most recently cached blocks stay.
        self.assertTrue(all(b in adapter.cached for b in lru[-8:]), "evicted recently used blocks first")
        snap = adapter.snapshot()
        self.assertEqual(snap["share_given_bytes"], give_pages * PAGE)
        self.assertEqual(snap["share_cached_blocks_given"], len(evicted))
        self.api.share_verdict = Script(self.api, "ok", 0)
        V.run_loop(scheduler)
        self.assertEqual(len(x.output_token_ids), 3)

    # ---------------------------------------------------------------- preempt
    def run_preempt(self, in_flight=1, **engine):
        scheduler, adapter = self.engine(**engine)
        requests = self.add(scheduler, "r", 6, 40, 30)
        checks = {"preempt_step": None, "preempted_scheduled": []}
        state = {"schedules": 0}

        def check(stage, out):
            self.assert_backed(adapter, f"{stage} step {adapter.tracker.step}")
            if stage != "scheduled":
                return
            state["schedules"] += 1
            if state["schedules"] == 3:  # all prefilled: the next schedule() sees the verdict
                held = len(self.api.in_use_pages())
                self.api.share_verdict = Script(self.api, "preempt", held - 2 * len(adapter.tracker.layout.spans))
                checks["held_before"] = held
            elif state["schedules"] == 4:
                checks["preempt_step"] = [r.request_id for r in requests if r.num_preemptions]
                checks["preempted_scheduled"] = [rid for rid in out.num_scheduled_tokens
                                                 if rid in checks["preempt_step"]]
                checks["held_after"] = len(self.api.in_use_pages())
                checks["preempted_ids"] = set(out.preempted_req_ids or ())
                self.api.share_verdict = Script(self.api, "ok", 0)

        V.run_loop(scheduler, check=check, in_flight=in_flight)
        return scheduler, adapter, requests, checks

    def test_preempt_takes_the_newest_among_equally_shared_pages_and_they_are_recomputed_and_finish(self):
        scheduler, adapter, requests, checks = self.run_preempt()
        preempted = checks["preempt_step"]
        self.assertTrue(preempted, "nothing was preempted")
        ids = [r.request_id for r in requests]
        self.assertEqual(preempted, ids[len(ids) - len(preempted):], "pages equally shared: not the newest first")
        self.assertLess(len(preempted), len(ids), "preempted more than was asked")
        self.assertEqual(checks["preempted_scheduled"], [], "a preempted request was resumed in the same step")
        self.assertEqual(checks["preempted_ids"], set(preempted), "the model runner was not told")
        self.assertLessEqual(checks["held_after"], checks["held_before"] - 4, "the pages did not go")
        self.assertFalse(scheduler.has_requests())
        self.assertEqual(self.outputs(requests), {rid: 30 for rid in ids}, "not every request finished in full")
        self.assertEqual(self.api.share_preempted, len(preempted))
        self.assertGreaterEqual(self.api.share_given, 4 * PAGE)
        self.assertEqual(adapter.snapshot()["share_preempted_requests"], len(preempted))

    def preempt_one_unit(self, async_scheduling=False):
        """24 requests decoding in pages of 128 blocks (as 16 KiB blocks in 2 MiB pages), one unit
        asked for at the 50th schedule, measured once what was given can have gone (a step later;
        with a batch in flight, after its fence). Returns (scheduler, requests, state, unit)."""
        config = {"async_scheduling": True} if async_scheduling else {}
        scheduler, adapter = self.engine(num_blocks=2048, page=PAGE * 32, api_cls=RegionPagesApi, max_num_seqs=32,
                                         **config)
        requests = self.add(scheduler, "r", 24, 300, 100)
        unit = len(adapter.tracker.layout.spans)  # pages per unit: one per tensor
        measure_at = 54 if async_scheduling else 51
        state = {"schedules": 0, "trims": []}
        real_trim = self.api.trim
        # Units released by then, at each trim (pool pages back to the budget).
        self.api.trim = lambda device: state["trims"].append(adapter.tracker.units_released) or real_trim(device)

        def check(stage, _out):
            if stage != "scheduled":
                return
            state["schedules"] += 1
            if state["schedules"] == 50:  # all prefilled, decode under way
                state["held_before"] = len(self.api.in_use_pages())
                self.api.share_verdict = Script(self.api, "preempt", state["held_before"] - unit)
            elif state["schedules"] == measure_at:
                state["preempted"] = sum(1 for r in requests if r.num_preemptions)
                state["held_after"] = len(self.api.in_use_pages())
                self.api.share_verdict = Script(self.api, "ok", 0)

        V.run_loop(scheduler, check=check, in_flight=2 if async_scheduling else 1)
        self.assertEqual(state["held_after"], state["held_before"] - unit, "not the one unit asked for")
        self.assertGreater(state["preempted"], 0)
        self.assertLessEqual(state["preempted"], 4, "preempted many requests to free one unit")
        self.assertFalse(scheduler.has_requests())
        self.assertEqual(self.outputs(requests), {r.request_id: 100 for r in requests}, "not every request finished in full")
        return scheduler, requests, state, unit

    def test_preempt_empties_the_page_the_fewest_requests_share(self):
        """Each page holds the prompts of several requests, and decode steps hand out blocks to
        every running request in turn. Preempting the newest requests until a page empties took 15
        of 24 requests for one unit; preempting the holders of the page the fewest requests share
        takes a few."""
        self.preempt_one_unit()

    def test_under_async_scheduling_the_unit_asked_for_goes_with_no_more_preemptions(self):
        """As above with a batch in flight: the emptied unit waits for its fence. Before it was
        kept out of the block choice, the running requests' next blocks refilled it within the
        step; it was counted as given, nothing went, and every later step preempted more (here
        2.0 MiB "given" and 6 requests preempted over 4 steps with nothing released; on an H100
        176 MiB given, 18 preempted, 16 MiB moved)."""
        _, _, state, unit = self.preempt_one_unit(async_scheduling=True)
        self.assertEqual(self.api.share_given, unit * self.api.page_size, "reported as given: not what went")
        # Released at its fence, a step after the give: trimmed then, or it stays charged to the
        # giver (the shim's pool) and the next ask takes another unit.
        self.assertTrue(any(released > 0 for released in state["trims"]), f"no trim after the release: {state['trims']}")

    def test_a_request_larger_than_what_the_giver_kept_still_finishes(self):
        """A long request alone in one unit, two short ones sharing the next: the long one is
        preempted (its unit has the fewest holders) and, once the short ones are done, needs more
        than the giver kept. The hold ends when nothing of the engine's own runs, so it is admitted
        again at once instead of stalling behind its own engine's hold. Pages start at each tensor:
        4 blocks a page."""
        scheduler, adapter = self.engine(api_cls=RegionPagesApi)
        old = self.add(scheduler, "old", 1, 100, 40)[0]  # 7 blocks: 1-3 (with the null block) and 4-7
        fresh = self.add(scheduler, "f", 2, 10, 40, first_token=50)  # a block each: 8 and 9
        unit = len(adapter.tracker.layout.spans)
        state = {"schedules": 0}

        def check(stage, _out):
            if stage != "scheduled":
                return
            state["schedules"] += 1
            if state["schedules"] == 2:
                held = len(self.api.in_use_pages())
                manager = scheduler.kv_cache_manager.coordinator.single_type_managers[0]
                state["units"] = {r.request_id: sorted({u for b in manager.req_to_blocks[r.request_id]
                                                        for u in adapter.tracker.layout.block_units(b.block_id)})
                                  for r in [old, *fresh]}
                state["computed"] = old.num_computed_tokens
                self.api.share_verdict = Script(self.api, "preempt", held - unit)
            elif state["schedules"] == 3:
                state["preempted"] = sorted(r.request_id for r in [old, *fresh] if r.num_preemptions)
                state["cap"] = adapter.tracker.max_units
                self.api.share_verdict = Script(self.api, "ok", 0)

        steps = V.run_loop(scheduler, check=check)
        units = state["units"]  # the set-up: the long request alone in its second unit
        self.assertEqual(units["f0"], units["f1"], units)
        self.assertFalse(set(units["old0"]) & set(units["f0"]), units)
        self.assertEqual(state["preempted"], ["old0"])
        self.assertIsNotNone(state["cap"], "no hold after giving")
        self.assertEqual(self.outputs([old, *fresh]), {"old0": 40, "f0": 40, "f1": 40}, "stalled behind its own hold")
        self.assertLess(steps, 200)
        snap = adapter.snapshot()
        self.assertEqual(snap["share_preempted_requests"], 1)
        # Its computed tokens when preempted: the 100-token prompt and a token or two of output.
        self.assertGreaterEqual(snap["share_preempted_tokens"], 100)
        self.assertLessEqual(snap["share_preempted_tokens"], state["computed"])

    def run_hold(self, hold_ms):
        """Preempts for 2 units at the 3rd schedule, then answers ok; records the pages held over
        the next 20 schedules (the preempted requests wait to resume meanwhile) and ends the hold
        at the 25th (as KVCACHED_HOOK_SHARE_HOLD_MS would)."""
        with V.env(KVCACHED_HOOK_SHARE_HOLD_MS=hold_ms):
            scheduler, adapter = self.engine()
        requests = self.add(scheduler, "r", 6, 40, 30)
        tracker = adapter.tracker
        unit = len(tracker.layout.spans)
        state = {"schedules": 0, "held": [], "units_counted": True}

        def check(stage, _out):
            state["units_counted"] &= tracker.held_units == sum(tracker.acq)
            if stage != "scheduled":
                return
            state["schedules"] += 1
            n = state["schedules"]
            if n == 3:
                self.api.share_verdict = Script(self.api, "preempt", len(self.api.in_use_pages()) - 2 * unit)
            elif n == 4:
                state["kept"] = len(self.api.in_use_pages())
                state["preempted"] = sum(1 for r in requests if r.num_preemptions)
                self.api.share_verdict = Script(self.api, "ok", 0)
            elif 4 < n <= 24:
                state["held"].append(len(self.api.in_use_pages()))
            elif n == 25 and adapter.hooks.share.hold_until is not None:
                adapter.hooks.share.hold_until = adapter.now  # the hold ends at the next step

        V.run_loop(scheduler, check=check)
        self.assertGreater(state["preempted"], 0)
        self.assertTrue(state["units_counted"], "held_units differs from the units backed")
        self.assertFalse(scheduler.has_requests())
        self.assertEqual(self.outputs(requests), {r.request_id: 30 for r in requests}, "not every request finished in full")
        return state, adapter

    def test_after_giving_it_backs_nothing_beyond_what_it_kept_until_the_hold_ends(self):
        held, adapter = self.run_hold(60000)
        self.assertLessEqual(max(held["held"]), held["kept"], "took back what it gave while the hold lasted")
        self.assertEqual(adapter.snapshot()["share_holds"], 1)
        self.assertIsNone(adapter.tracker.max_units, "the hold did not end")
        # Control: without the hold the same engine takes the pages back at once.
        free, _ = self.run_hold(0)
        self.assertGreater(max(free["held"]), free["kept"], "without a hold it did not grow again")

    def test_no_page_is_released_before_its_fence_when_preempting_under_async_scheduling(self):
        with V.env(KVCACHED_HOOK_RELEASE_DELAY_STEPS=0):
            # One block per page, pages starting at each tensor: a preempted block empties its page.
            scheduler, adapter = self.engine(page=2048, api_cls=RegionPagesApi, async_scheduling=True)
        layout = adapter.tracker.layout
        unit_of = {r: u for u in range(layout.num_units) for r in layout.unit_ranges(u)}
        in_flight, violations, held_back = [], [], []
        real_release = self.api.release

        def release(ranges):
            units = {unit_of[(a, n)] for a, n in ranges}
            for used in in_flight:
                if units & used:
                    violations.append(sorted(units & used))
            return real_release(ranges)

        self.api.release = release
        requests = self.add(scheduler, "r", 6, 40, 30)
        state = {"schedules": 0}

        def check(stage, out):
            self.assert_backed(adapter, f"{stage} step {adapter.tracker.step}")
            if stage == "scheduled" and out.total_num_scheduled_tokens > 0:
                state["schedules"] += 1
                blocks = set()
                for rid in out.num_scheduled_tokens:
                    for group in scheduler.kv_cache_manager.get_block_ids(rid):
                        blocks.update(group)
                tracker = adapter.tracker
                for used in in_flight:  # in-flight pages the tracker sees empty: only the fence keeps them
                    held_back.extend(u for u in used if tracker.count[u] == 0)
                in_flight.append({u for b in blocks for u in layout.block_units(b)})
                if state["schedules"] == 3:
                    held = len(self.api.in_use_pages())
                    self.api.share_verdict = Script(self.api, "preempt", held - 6)
                elif state["schedules"] == 4:
                    self.api.share_verdict = Script(self.api, "ok", 0)
            elif stage == "processed":
                in_flight.pop(0)

        V.run_loop(scheduler, check=check, in_flight=2)
        self.assertGreater(sum(r.num_preemptions for r in requests), 0, "nothing was preempted")
        self.assertEqual(violations, [])
        self.assertTrue(held_back, "no preempted page was in flight: the test proves nothing")
        self.assertFalse(scheduler.has_requests())
        self.assertEqual(self.outputs(requests), {r.request_id: 30 for r in requests})

    def test_pages_given_under_async_scheduling_take_no_new_blocks_before_they_go(self):
        """Under asynchronous scheduling a page emptied for the starved engine stays backed until
        the batch in flight is processed. Its free blocks must not be handed out meanwhile: the
        running requests' next blocks (from vLLM's arranged queue head, or the lowest free ones)
        refilled such a page, it was counted as given but never went, and the next ask preempted
        more (an H100 run: 176 MiB reported given in 16 steps, the ledger's charge down 16 MiB)."""
        scheduler, adapter = self.engine(num_blocks=1024, page=PAGE * 8, api_cls=RegionPagesApi,
                                         async_scheduling=True, max_num_seqs=32)
        tracker = adapter.tracker
        unit = len(tracker.layout.spans)  # pages per unit
        requests = self.add(scheduler, "r", 24, 8, 120)
        seen = {"given": None, "taken": None, "schedules": 0}

        def watch(policy):
            real_give = policy._give

            def give(verdict, sched):
                real_give(verdict, sched)
                waiting = [u for u in policy._empty_units()]  # emptied, kept by the fence
                if seen["given"] is None and waiting:
                    seen["given"] = set(waiting)
                    # What the next allocation of this step would take (then given back).
                    blocks = adapter.pool.get_new_blocks(8)
                    seen["taken"] = {u for b in blocks for u in tracker.layout.block_units(b.block_id)}
                    adapter.pool.free_blocks(blocks)
            policy._give = give

        def check(stage, out):
            if seen["schedules"] == 0:
                watch(adapter.hooks.share)
            if stage != "scheduled" or out.total_num_scheduled_tokens == 0:
                return
            seen["schedules"] += 1
            if seen["schedules"] == 40:  # prefilled, decoding
                seen["held_before"] = len(self.api.in_use_pages())
                self.api.share_verdict = Script(self.api, "preempt", seen["held_before"] - 2 * unit)
            elif seen["schedules"] == 44:
                seen["held_after"] = len(self.api.in_use_pages())
                self.api.share_verdict = Script(self.api, "ok", 0)

        V.run_loop(scheduler, check=check, in_flight=2)
        self.assertTrue(seen["given"], "no page waited for its fence: the test proves nothing")
        self.assertEqual(seen["taken"] & seen["given"], set(), "blocks handed out in a page given away")
        self.assertEqual(tracker.nretiring, 0, "a given page was never released")
        # What was asked went, and no more (the preempted requests had emptied more pages: they
        # stay the engine's, which is not pushed below its share).
        self.assertEqual(seen["held_after"], seen["held_before"] - 2 * unit)
        self.assertEqual(self.api.share_given, 2 * unit * self.api.page_size)
        self.assertFalse(scheduler.has_requests())
        self.assertEqual(self.outputs(requests), {r.request_id: 120 for r in requests})

    def test_the_async_preempt_run_also_finishes_every_request_in_full(self):
        scheduler, adapter, requests, checks = self.run_preempt(in_flight=2, async_scheduling=True)
        self.assertTrue(checks["preempt_step"])
        self.assertEqual(checks["preempted_scheduled"], [])
        self.assertEqual(self.outputs(requests), {r.request_id: 30 for r in requests})

    # ---------------------------------------------------------------- below its share, pressure, logs
    def test_below_its_share_the_engine_keeps_its_fresh_prefix_cache_under_pressure(self):
        with V.env(KVCACHED_HOOK_PREFIX_CACHE="keep"):  # only the pressure signal could evict
            scheduler, adapter = self.engine(page=2048)
        seq = [1]
        self.api.pressure = lambda device: (seq[0], os.getpid() + 1)  # another process refused
        self.api.share_verdict = Script(self.api, "give_cached", 10**6)  # its share: far above what it holds
        scheduler.add_request(V.make_request("a", list(range(1, 65)), 4))
        V.run_loop(scheduler)
        cached = len(adapter.cached)
        self.assertGreater(cached, 0)
        seq[0] += 1
        scheduler.add_request(V.make_request("b", [5] * 20, 2))
        V.run_loop(scheduler)
        adapter.hooks.idle_tick(now=0.0)
        self.assertEqual(adapter.hooks.pressure_trims, 0, "the pressure signal dropped the cache despite the verdict")
        self.assertGreaterEqual(len(adapter.cached), cached)
        self.assertEqual(adapter.snapshot()["share_episodes"], 0)

    def test_below_its_share_stale_cached_blocks_go_back_under_pressure_and_fresh_ones_stay(self):
        # Cached blocks count toward the engine's share; those unused for KVCACHED_HOOK_IDLE_TRIM_S
        # go back when another process is refused, oldest first, so an engine whose requests are
        # done does not hold its neighbour at its share with an old prefix cache. The share hold
        # (60 s here) does not keep them: it holds back the giver's growth, not a neighbour's
        # unused cache. (Block ids are reused: blocks are told apart by when they became cached.)
        import time

        with V.env(KVCACHED_HOOK_PREFIX_CACHE="keep", KVCACHED_HOOK_IDLE_TRIM_S="1", KVCACHED_HOOK_SHARE_HOLD_MS="60000"):
            scheduler, adapter = self.engine(page=2048)
        seq = [1]
        self.api.pressure = lambda device: (seq[0], os.getpid() + 1)
        self.api.share_verdict = Script(self.api, "give_cached", 10**6)  # far below its share: ok

        def cached_before(t):
            return [b for b in adapter.cached if adapter.cached_at[b] <= t]

        scheduler.add_request(V.make_request("old", list(range(1, 65)), 2))
        V.run_loop(scheduler)
        adapter.hooks.pressure.poll()  # its first look, never news
        old_end = time.monotonic()
        self.assertGreater(len(cached_before(old_end)), 0)
        # Another process is refused at once: the old blocks are younger than the trim age, they stay.
        seq[0] += 1
        scheduler.add_request(V.make_request("young", [6] * 20, 2))
        V.run_loop(scheduler)
        self.assertGreater(len(cached_before(old_end)), 0, "gave back blocks used within KVCACHED_HOOK_IDLE_TRIM_S")
        self.assertEqual(adapter.hooks.stale_gives, 0)
        # (Nothing was stale, so the hook did not look at the signal: a refusal it has not seen
        # would count as news later. Seen here, as the next step's look would.)
        adapter.hooks.pressure.poll()
        time.sleep(1.2)
        # No new refusal: nothing goes, however old.
        scheduler.add_request(V.make_request("quiet", [7] * 20, 2))
        V.run_loop(scheduler)
        self.assertGreater(len(cached_before(old_end)), 0, "dropped without pressure")
        fresh = len(adapter.cached) - len(cached_before(old_end))
        self.assertGreater(fresh, 0)
        # Another process is refused: the old blocks go although the share hold (60 s) has not
        # passed since their use; the fresh ones stay.
        seq[0] += 1
        scheduler.add_request(V.make_request("next", [9] * 20, 2))
        V.run_loop(scheduler)
        self.assertEqual(cached_before(old_end), [], "stale cached blocks stayed under pressure (kept for the share hold?)")
        self.assertGreaterEqual(len(adapter.cached), fresh, "fresh cached blocks went")
        self.assertGreaterEqual(adapter.hooks.stale_gives, 1)
        self.assertEqual(adapter.snapshot()["stale_gives"], adapter.hooks.stale_gives)
        self.assert_backed(adapter, "after")

    def test_one_log_line_per_episode(self):
        scheduler, adapter = self.engine()
        self.add(scheduler, "r", 2, 40, 8)
        self.step(scheduler, adapter)
        self.api.share_verdict = Script(self.api, "stop_admitting", 0)
        self.add(scheduler, "n", 1, 40, 4, first_token=100)
        with self.assertLogs("kvcached", level=logging.INFO) as logs:
            for _ in range(5):
                self.step(scheduler, adapter)
            self.api.share_verdict = Script(self.api, "ok", 0)
            for _ in range(3):
                self.step(scheduler, adapter)
        lines = [line for line in logs.output if "sharing:" in line]
        self.assertEqual(len(lines), 1, logs.output)
        self.assertIn("for 5 step(s)", lines[0])
        self.assertIn("pid 4242", lines[0])
        self.assertEqual(adapter.snapshot()["share_episodes"], 1)

    def test_units_given_and_waiting_for_their_fence_count_before_any_other_is_given(self):
        """Asked again before the fence let its given units go (the starved engine does not have
        them yet), an engine gives nothing more: the walk met a higher empty unit before the
        waiting ones and gave it on top of them (48 MiB for a 32 MiB deficit in the rehearsal,
        which left the giver below its share)."""
        scheduler, adapter = self.engine(api_cls=RegionPagesApi)
        self.add(scheduler, "c", 1, 8, 2)
        V.run_loop(scheduler)  # the hooks exist
        tracker, policy = adapter.tracker, adapter.hooks.share
        tracker.step_begin()
        self.assertTrue(tracker.ensure(tracker.nbfree + 12))  # three more units, all empty
        empty = sorted(policy._empty_units())
        self.assertGreaterEqual(len(empty), 3)
        adapter.in_flight.append(tracker.step)  # a batch in flight: nothing released yet
        size = policy._unit_bytes(empty[0])
        self.assertEqual(tracker.retire([empty[0]]), 1)  # given in the step before
        self.assertEqual(policy._hand_over(size, size), 0, "gave more on top of what waits for its fence")
        self.assertEqual(tracker.nretiring, 1)
        self.assertEqual(policy._hand_over(2 * size, 2 * size), size)  # asked for one more: one more
        self.assertEqual(tracker.retiring[empty[-1]], 1, "not the highest")

    def test_the_idle_engine_gives_cached_blocks_when_asked(self):
        with V.env(KVCACHED_HOOK_PREFIX_CACHE="keep"):
            scheduler, adapter = self.engine(api_cls=RegionPagesApi)
        self.add(scheduler, "c", 6, 64, 1)
        V.run_loop(scheduler)
        adapter.hooks.idle_tick(now=0.0)
        before = len(self.api.in_use_pages())
        unit = len(adapter.tracker.layout.spans)  # pages per unit: one in each tensor
        for give in (unit, 2 * unit):
            with self.subTest(give=give):
                self.api.share_verdict = Script(self.api, "give_cached", before - give)
                adapter.hooks.idle_tick(now=0.1)
                self.assertEqual(len(self.api.in_use_pages()), before - give)
                self.assertTrue(adapter.cached, "the whole prefix cache went")
                before -= give
        self.assertEqual(self.api.share_given, 3 * unit * PAGE)

    def test_it_never_gives_more_than_it_holds_above_its_share(self):
        # The fake's tensors start anywhere in a page: a unit may be one page of one tensor, and a
        # block may straddle pages, so evicting one page's blocks can empty pages of the other
        # tensor too. Asked for one page, it never gives two.
        with V.env(KVCACHED_HOOK_PREFIX_CACHE="keep"):
            scheduler, adapter = self.engine()
        self.add(scheduler, "c", 6, 64, 1)
        V.run_loop(scheduler)
        adapter.hooks.idle_tick(now=0.0)
        for _ in range(4):
            before = len(self.api.in_use_pages())
            self.api.share_verdict = Script(self.api, "give_cached", before - 1)
            adapter.hooks.idle_tick(now=0.1)
            self.assertIn(len(self.api.in_use_pages()), (before, before - 1), "went below its share")
        self.assertTrue(adapter.cached)

    def test_asked_less_than_a_unit_it_gives_nothing_and_admits_into_its_own_pages(self):
        with V.env(KVCACHED_HOOK_PREFIX_CACHE="keep", KVCACHED_HOOK_RELEASE_DELAY_STEPS=1000):
            scheduler, adapter = self.engine(api_cls=RegionPagesApi)
        self.add(scheduler, "c", 6, 64, 1)
        V.run_loop(scheduler)
        unit = len(adapter.tracker.layout.spans)
        self.assertGreater(unit, 1)
        before = len(self.api.in_use_pages())
        acquires = self.api.acquire_calls
        self.api.share_verdict = Script(self.api, "preempt", before - (unit - 1))  # less than a unit above
        running = self.add(scheduler, "r", 1, 20, 40, first_token=100)
        V.run_loop(scheduler, max_steps=5)
        x = self.add(scheduler, "x", 1, 10, 2, first_token=150)[0]
        V.run_loop(scheduler, check=lambda stage, _o: self.assert_backed(adapter, stage))
        self.assertEqual(len(self.api.in_use_pages()), before, "went below its share")
        self.assertEqual(self.api.acquire_calls, acquires, "grew while above its share")
        self.assertEqual(len(x.output_token_ids), 2, "stalled although it could give nothing")
        self.assertEqual(len(running[0].output_token_ids), 40)
        self.assertEqual(adapter.snapshot()["share_preempted_requests"], 0)

    def test_the_preempt_target_is_checked_like_every_other(self):
        (target,) = [t for t in adapter_pkg.TARGETS if t.name == "_preempt_request"]
        self.assertEqual(target.params, ("self", "request", "timestamp"))
        changed = [Target(t.module, t.owner, t.name, ("self", "req", "ts") if t is target else t.params, t.wrap)
                   for t in adapter_pkg.TARGETS]
        fresh = PatchSet("vllm-test", changed, version=lambda: V.vllm.__version__, lowest="0.24", below="0.27")
        self.assertIn("_preempt_request", "; ".join(fresh.problems()))


if __name__ == "__main__":
    unittest.main()
