"""What the vLLM adapter shows outside the engine process, against vLLM's real Scheduler on the CPU
(fake C API): per-step costs reported to the shim (kvcached_report_engine_steps) rate-limited,
with totals that match the steps taken and the C calls the fake shim saw; no error without the
call; KVCACHED_SANITY_CHECK=1 with zero violations over a correct run (uniform, hybrid with null
blocks in the tables, asynchronous scheduling), a violation reported at once when a held page is
unbacked or released behind the tracker's back, summaries periodic, at idle and at shutdown, one
check every KVCACHED_HOOK_SANITY_EVERY steps, and under tensor parallelism the scheduler's own
checks only.
"""

import time
import unittest
from unittest import mock

import test_vllm_adapter as A
import vllm_support as V
from fake_capi import FakeCApi, SharedBudget

if V.HAVE_VLLM:
    from kvcached_hook import capi as C
    from kvcached_hook.engines.vllm import registry, sanity_hook, worker
    from kvcached_hook.engines.vllm import tp as tp_mod

PAGE = A.PAGE


class Clock:
    """A clock that advances `tick` seconds each time it is read (one read per step)."""

    def __init__(self, tick: float) -> None:
        self.t = time.monotonic()  # the first report (before the test can swap clocks) used the real one
        self.tick = tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


class SlowApi(FakeCApi):
    """Each acquire takes SLOW_ACQUIRE_NS (a driver mapping pages): its time must show in the
    hook's count, once."""

    delay_ns = 0  # 0: SLOW_ACQUIRE_NS

    def acquire(self, ranges):
        time.sleep((self.delay_ns or SLOW_ACQUIRE_NS) / 1e9)
        return super().acquire(ranges)


SLOW_ACQUIRE_NS = 3_000_000


class NoReportApi(FakeCApi):
    report_engine_steps = None  # an older shim: the symbol is absent


class LyingPageStateApi(FakeCApi):
    """Reports one chosen page unbacked although it is acquired (a shim/hook disagreement)."""

    lie_about: int | None = None

    def page_state(self, addr):
        if self.lie_about is not None and addr // self.page_size == self.lie_about:
            return C.PAGE_ZERO
        return super().page_state(addr)


@unittest.skipUnless(V.HAVE_VLLM, V.SKIP_REASON if not V.HAVE_VLLM else "")
class VllmObserveTest(A.PatchedVllmTest):
    def setUp(self):
        registry.clear()

    def engine(self, kind="uniform", num_blocks=64, api_cls=FakeCApi, **config):
        self.api = api_cls(page_size=PAGE, budget=SharedBudget(None))
        worker.overrides["api"] = self.api
        vllm_config = V.make_vllm_config(num_blocks, **config)
        kv_config = V.kv_cache_config(vllm_config, kind)
        V.build_worker_cache(vllm_config, kv_config)
        scheduler = V.make_scheduler(vllm_config, kv_config)
        adapter = scheduler.kv_cache_manager.block_pool.__dict__["_kvcached"]
        self.calls_at_start = self.api.acquire_calls + self.api.release_calls
        return scheduler, adapter

    def add(self, scheduler, n, prompt_len=70, max_tokens=20):
        for i in range(n):
            scheduler.add_request(V.make_request(f"r{i}", [1 + i] * prompt_len, max_tokens))

    # ---------------------------------------------------------------- per-step costs
    def test_reported_totals_match_the_steps_and_c_calls_and_are_rate_limited(self):
        scheduler, adapter = self.engine()
        self.add(scheduler, 10)
        clock = Clock(0.1)  # 0.1 s per step: with a 0.5 s period, one report every 5 steps
        schedules = [0]

        def check(stage, _out):
            if stage == "scheduled":
                schedules[0] += 1
                if schedules[0] == 1:  # the observer exists from the first schedule() on
                    adapter.hooks.observer.reporter.clock = clock

        V.run_loop(scheduler, check=check)
        reporter = adapter.hooks.observer.reporter
        reports = self.api.step_reports
        self.assertGreater(schedules[0], 20)
        # Rate-limited: one report per 0.5 s of (fake) time, never one per step.
        self.assertLessEqual(len(reports), schedules[0] // 5 + 2)
        self.assertGreaterEqual(len(reports), schedules[0] // 5 - 1)
        steps = [r[1] for r in reports]
        self.assertEqual(steps, sorted(steps), "totals are cumulative")
        # Idle: the last totals go out once (rate-limited too), then nothing while nothing changes.
        for k in range(10):  # 1 s of fake time: past the period, so the idle report went out
            adapter.hooks.idle_tick(now=float(k))
        final = self.api.step_reports[-1]
        count = len(self.api.step_reports)
        for k in range(10):
            adapter.hooks.idle_tick(now=10.0 + k)
        self.assertEqual(len(self.api.step_reports), count, "an idle engine kept reporting")
        device, steps, hook_ns, c_calls = final
        self.assertEqual(device, adapter.entry.device_index)
        self.assertEqual(steps, schedules[0], "reported steps != schedule() calls")
        self.assertEqual(hook_ns, adapter.hooks.hook_ns_total)
        self.assertGreater(hook_ns, 0)
        # The hook's C calls are exactly the acquire/release calls the (fake) shim received,
        # those of the final idle release included.
        seen = self.api.acquire_calls + self.api.release_calls - self.calls_at_start
        self.assertEqual(c_calls, seen)
        self.assertGreater(c_calls, 0)
        self.assertEqual(adapter.snapshot()["step_reports"], reporter.reports)

    def test_hook_time_counts_the_c_calls_made_inside_schedule(self):
        # Without prediction every acquire happens inside vLLM's schedule() (allocate_slots): its C
        # time is the hook's too.
        with V.env(KVCACHED_HOOK_PREDICT=0):
            scheduler, adapter = self.engine(api_cls=SlowApi)
        self.add(scheduler, 6)
        V.run_loop(scheduler)
        acquires = adapter.tracker.acquire_calls
        self.assertGreater(acquires, 2)
        self.assertGreaterEqual(adapter.hooks.hook_ns_total, acquires * SLOW_ACQUIRE_NS)

    def test_hook_time_counts_the_backing_the_exact_path_does_inside_vllms_call(self):
        # The exact path leaves vLLM's allocate_slots out of the own count, but the hook's
        # get_num_free_blocks runs inside it and backs the demand there (free_count: evicting
        # cached blocks, the budget's headroom, the plan): that Python is the hook's time too.
        from unittest import mock

        from kvcached_hook.engines.vllm.blocks import PoolAdapter

        slow_ns, calls, free_count = 2_000_000, [], PoolAdapter.free_count

        def slow(self_, engine_free):
            calls.append(1)
            end = time.perf_counter_ns() + slow_ns
            while time.perf_counter_ns() < end:
                pass
            return free_count(self_, engine_free)

        with V.env(KVCACHED_HOOK_PREDICT=0), mock.patch.object(PoolAdapter, "free_count", slow):
            scheduler, adapter = self.engine()
            self.add(scheduler, 6)
            V.run_loop(scheduler)
        self.assertGreater(len(calls), 2, "no exact call backed a demand: the test proves less")
        self.assertGreaterEqual(adapter.hooks.phase_ns[4], len(calls) * slow_ns)
        self.assertEqual(sum(adapter.hooks.phase_ns), adapter.hooks.hook_ns_total)

    def test_hook_time_counts_its_own_time_in_vllms_block_calls_but_not_their_c_calls_twice(self):
        # The BlockPool and allocate_slots wrappers run inside vLLM's schedule() and
        # update_from_output(): their Python is the hook's cost too (a phase of its own); the C
        # calls made in them are already in after_schedule's count.
        with V.env(KVCACHED_HOOK_PREDICT=0):
            scheduler, adapter = self.engine(api_cls=SlowApi)
        self.add(scheduler, 6)
        V.run_loop(scheduler)
        hooks = adapter.hooks
        acquires = adapter.tracker.acquire_calls
        self.assertGreater(acquires, 2)
        self.assertGreater(hooks.phase_ns[4], 0, "no time counted in the block calls")
        self.assertLess(hooks.phase_ns[4], acquires * SLOW_ACQUIRE_NS, "the block calls' C time counted twice")
        self.assertEqual(sum(hooks.phase_ns), hooks.hook_ns_total)
        self.assertIn("in vLLM's block calls", hooks.cost_line())
        # A get_new_blocks that must back pages itself (every free block at once, the idle
        # engine's pages given back first): its acquires are C time, not the block call's.
        later = time.monotonic() + 3600
        hooks.idle_tick(now=later)  # the idle spell starts (unless the idle thread started it)
        hooks.idle_tick(now=later + 3600)  # a long one: prefix cache dropped, empty pages released
        pool, tracker = scheduler.kv_cache_manager.block_pool, adapter.tracker
        spent, acquires = hooks.phase_ns[4], tracker.acquire_calls
        # An acquire far longer than the call's own Python, waits for the GIL included (the idle
        # thread may hold it for a switch interval, 5 ms): counted or not, never a close call.
        self.api.delay_ns = 20 * SLOW_ACQUIRE_NS
        blocks = pool.get_new_blocks(tracker.nfree)
        self.assertGreater(tracker.acquire_calls, acquires, "the blocks were backed already")
        self.assertLess(hooks.phase_ns[4] - spent, self.api.delay_ns, "the block call's C time counted in it")
        pool.free_blocks(blocks)

    def test_without_the_call_in_the_shim_nothing_is_reported_and_nothing_fails(self):
        scheduler, adapter = self.engine(api_cls=NoReportApi)
        self.add(scheduler, 4)
        V.run_loop(scheduler)
        adapter.hooks.idle_tick(now=0.0)
        scheduler.shutdown()
        self.assertFalse(scheduler.has_requests())
        self.assertFalse(adapter.hooks.observer.reporter.active)
        self.assertEqual(adapter.snapshot()["step_reports"], 0)

    def test_an_unsupported_answer_stops_the_reports(self):
        scheduler, adapter = self.engine()
        calls = []

        def old_shim(*args):
            calls.append(args)
            return C.ERR_UNSUPPORTED

        self.api.report_engine_steps = old_shim
        self.add(scheduler, 4)
        V.run_loop(scheduler)
        adapter.hooks.idle_tick(now=0.0)
        self.assertEqual(len(calls), 1, "asked again after ERR_UNSUPPORTED")

    def test_shutdown_sends_the_last_totals_at_once(self):
        scheduler, adapter = self.engine()
        self.add(scheduler, 4)

        def freeze(stage, _out):  # time stands still: only the first step's report goes out
            if stage == "scheduled":
                adapter.hooks.observer.reporter.clock = lambda: 5.0

        V.run_loop(scheduler, check=freeze)
        self.assertEqual(len(self.api.step_reports), 1)
        self.assertEqual(self.api.step_reports[0][1], 1)
        scheduler.shutdown()  # vLLM's EngineCore.shutdown calls it: forced, whatever the clock says
        self.assertEqual(len(self.api.step_reports), 2)
        self.assertEqual(self.api.step_reports[-1][1], adapter.hooks.steps)
        self.assertGreater(adapter.hooks.steps, 5)

    def test_shutdown_says_where_the_hooks_time_per_step_goes(self):
        # The phases add up to the hook's total; vLLM's own schedule() is timed apart; the line
        # goes to the log when vLLM shuts the scheduler down.
        scheduler, adapter = self.engine(api_cls=SlowApi)
        self.add(scheduler, 6)
        V.run_loop(scheduler)
        hooks = adapter.hooks
        self.assertEqual(sum(hooks.phase_ns), hooks.hook_ns_total)
        self.assertGreaterEqual(hooks.phase_ns[2] + hooks.phase_ns[3], SLOW_ACQUIRE_NS, "the acquires' time is in no phase")
        self.assertGreater(hooks.schedule_ns_total, 0)
        with self.assertLogs("kvcached", level="INFO") as logs:
            scheduler.shutdown()
        line = [r for r in logs.output if "us/step" in r]
        self.assertEqual(len(line), 1, logs.output)
        self.assertIn(f"over {hooks.steps} steps", line[0])
        self.assertIn("sharing policy", line[0])
        self.assertIn("vLLM's schedule() itself", line[0])

    def test_each_idle_after_new_steps_logs_the_cost_line_at_info_once(self):
        # `vllm serve` stopped by a signal may kill the EngineCore before Scheduler.shutdown: the
        # line also goes out when the engine goes idle, once per batch of new steps.
        scheduler, adapter = self.engine()
        self.add(scheduler, 4)
        V.run_loop(scheduler)
        hooks = adapter.hooks
        with self.assertLogs("kvcached", level="INFO") as logs:
            hooks.idle_tick(now=0.0)
            hooks.idle_tick(now=100.0)
        lines = [r for r in logs.output if "us/step" in r]
        self.assertEqual(len(lines), 1, logs.output)
        self.assertTrue(lines[0].startswith("INFO:"), lines[0])
        self.assertIn(f"over {hooks.steps} steps", lines[0])
        self.add(scheduler, 2)
        V.run_loop(scheduler)
        with self.assertLogs("kvcached", level="INFO") as logs:
            hooks.idle_tick(now=200.0)
        lines = [r for r in logs.output if "us/step" in r]
        self.assertEqual(len(lines), 1, logs.output)
        self.assertIn(f"over {hooks.steps} steps", lines[0])

    # ---------------------------------------------------------------- sanity check
    def sane_run(self, kind="uniform", num_blocks=64, **config):
        with V.env(KVCACHED_SANITY_CHECK=1):
            scheduler, adapter = self.engine(kind, num_blocks, **config)
        self.add(scheduler, 10)
        schedules = [0]

        def count(stage, _out):
            schedules[0] += int(stage == "scheduled")

        with self.assertLogs("kvcached", level="INFO") as logs:
            V.run_loop(scheduler, check=count, in_flight=2 if config.get("async_scheduling") else 1)
            adapter.hooks.idle_tick(now=0.0)
        sanity = adapter.hooks.observer.sanity
        self.assertIsNotNone(sanity)
        return scheduler, adapter, sanity, schedules[0], logs.output

    def test_sanity_zero_violations_over_correct_runs_with_a_summary_at_idle(self):
        for kind, blocks, config in (("uniform", 64, {}), ("hybrid", 192, {}), ("uniform", 64, {"async_scheduling": True})):
            with self.subTest(kind=kind, **config):
                registry.clear()
                scheduler, adapter, sanity, schedules, logs = self.sane_run(kind, blocks, **config)
                self.assertEqual(sanity.violations, [])
                self.assertEqual(sanity.checks, schedules, "not one check per schedule()")
                self.assertGreater(sanity.checks, 20)
                summary = [line for line in logs if "kvcached sanity" in line]
                self.assertTrue(summary and summary[-1].endswith("; idle"), logs[-3:])
                self.assertIn(f"{sanity.checks} checks, 0 violations", summary[-1])
                snap = adapter.snapshot()
                self.assertEqual((snap["sanity_checks"], snap["sanity_violations"]), (sanity.checks, 0))

    def test_hybrid_tables_hold_the_null_block_which_is_checked_as_pinned(self):
        # Sliding-window groups replace blocks that left the window with the null block: the check
        # must not count it as a held block (it is never in the free list), only as pinned.
        registry.clear()
        with V.env(KVCACHED_SANITY_CHECK=1):
            scheduler, adapter = self.engine("hybrid", 192)
        self.add(scheduler, 4, prompt_len=150, max_tokens=40)
        nulls = []

        def check(stage, _out):
            if stage == "scheduled":
                for manager in scheduler.kv_cache_manager.coordinator.single_type_managers:
                    nulls.extend(b for blocks in manager.req_to_blocks.values() for b in blocks if b.is_null)

        V.run_loop(scheduler, check=check)
        self.assertTrue(nulls, "no null block in a table: the case is not exercised")
        self.assertEqual(adapter.hooks.observer.sanity.violations, [])
        unit = adapter.tracker.layout.block_units(0)[0]
        null_page = adapter.tracker.layout.unit_ranges(unit)[0][0] // PAGE
        self.api.release([(null_page * PAGE, PAGE)])  # the null block's page goes: reported
        adapter.hooks.observer.sanity.after_schedule(scheduler)
        self.assertIn("padding block 0: tensor", adapter.hooks.observer.sanity.violations[-1])

    def test_sanity_reports_a_held_page_the_shim_calls_unbacked_at_once_with_detail(self):
        with V.env(KVCACHED_SANITY_CHECK=1):
            scheduler, adapter = self.engine(api_cls=LyingPageStateApi)
        self.add(scheduler, 10)
        layout = adapter.tracker.layout
        planted = []

        def check(stage, _out):
            if stage == "processed" and not planted:
                held = sorted(b for b in adapter.held_blocks() if b != 0)
                if held:
                    addr = layout.block_ranges(held[-1])[0][0]
                    self.api.lie_about = addr // PAGE
                    planted.append((held[-1], addr // PAGE))

        with self.assertLogs("kvcached", level="ERROR") as logs:
            V.run_loop(scheduler, check=check)
        sanity = adapter.hooks.observer.sanity
        self.assertTrue(planted)
        self.assertGreater(sanity.violation_count, 0)
        first = sanity.violations[0]
        self.assertIn("request r", first)
        self.assertIn("ZERO, expected IN_USE", first)
        self.assertTrue(any("sanity violation" in line and "ZERO" in line for line in logs.output))
        self.assertFalse(scheduler.has_requests(), "the check disturbed the engine")

    def test_sanity_reports_a_block_whose_page_was_released_behind_the_tracker(self):
        # The bug class the fence prevents: a page released while a block on it is still held.
        with V.env(KVCACHED_SANITY_CHECK=1):
            scheduler, adapter = self.engine()
        self.add(scheduler, 10)
        tracker, layout = adapter.tracker, adapter.tracker.layout
        broken = []

        def check(stage, _out):
            if stage == "processed" and not broken and tracker.step >= 3:
                block = max(b for b in adapter.held_blocks() if b != 0)
                unit = layout.block_units(block)[0]
                tracker.acq[unit] = 0
                self.api.release(layout.unit_ranges(unit))
                broken.append(layout.describe_unit(unit))

        with self.assertLogs("kvcached", level="ERROR"):
            V.run_loop(scheduler, check=check)
        sanity = adapter.hooks.observer.sanity
        text = "\n".join(sanity.violations)
        self.assertIn(f"{broken[0]} not acquired by the hook", text)
        self.assertIn("expected IN_USE", text)

    def test_sanity_every_n_steps_and_periodic_summaries_and_shutdown(self):
        with V.env(KVCACHED_SANITY_CHECK=1, KVCACHED_HOOK_SANITY_EVERY=4), mock.patch.object(sanity_hook, "SUMMARY_EVERY", 3):
            scheduler, adapter = self.engine()
            self.add(scheduler, 10)
            schedules = [0]

            def count(stage, _out):
                schedules[0] += int(stage == "scheduled")

            with self.assertLogs("kvcached", level="INFO") as logs:
                V.run_loop(scheduler, check=count)
                scheduler.shutdown()
        sanity = adapter.hooks.observer.sanity
        self.assertEqual(sanity.checks, (schedules[0] + 3) // 4)
        periodic = [line for line in logs.output if line.endswith("; periodic")]
        self.assertEqual(len(periodic), sanity.checks // 3)
        self.assertTrue(logs.output[-1].endswith("; shutdown"), logs.output[-1])
        self.assertIn(f"{sanity.checks} checks, 0 violations", logs.output[-1])


@unittest.skipUnless(V.HAVE_VLLM, V.SKIP_REASON if not V.HAVE_VLLM else "")
class VllmObserveTensorParallelTest(A.PatchedVllmTest):
    def test_the_scheduler_process_checks_its_own_view_only(self):
        registry.clear()
        vllm_config = V.make_vllm_config(64)
        config = V.kv_cache_config(vllm_config, "uniform")
        workers = []
        for rank in range(2):
            api = A.TensorRegionApi(page_size=PAGE, budget=SharedBudget(None))
            worker.overrides["api"] = api
            V.build_worker_cache(vllm_config, config)
            entry = registry.caches()[-1]
            entry.remote = True
            workers.append(A.FakeWorker(rank, entry))
        local = FakeCApi(page_size=PAGE)
        worker.overrides["api"] = local  # this process's own shim: it must not be asked for page states
        local.page_state = lambda addr: self.fail(f"page state of a synthetic address {addr:#x} asked")
        registry.clear()
        executor = A.FakeExecutor(workers)
        registry.set_executor(executor)
        with V.env(KVCACHED_HOOK_VLLM_TP=1, KVCACHED_SANITY_CHECK=1):
            scheduler = V.make_scheduler(vllm_config, config)
        adapter = scheduler.kv_cache_manager.block_pool.__dict__["_kvcached"]
        for i in range(6):
            scheduler.add_request(V.make_request(f"r{i}", [1 + i] * 100, 30))

        def check(stage, out):
            if stage == "scheduled":
                for w in workers:
                    tp_mod.before_execute(w, out)

        V.run_loop(scheduler, check=check)
        sanity = adapter.hooks.observer.sanity
        self.assertTrue(sanity.remote)
        self.assertGreater(sanity.checks, 10)
        self.assertEqual(sanity.violations, [])
        # The scheduler's view still catches a held block whose pages the hook does not hold.
        scheduler.add_request(V.make_request("late", [3] * 100, 30))
        scheduler.schedule()
        block = max(b for b in adapter.held_blocks() if b != 0)
        adapter.tracker.acq[adapter.tracker.layout.block_units(block)[0]] = 0
        sanity.after_schedule(scheduler)
        self.assertIn("not acquired by the hook", sanity.violations[-1])


if __name__ == "__main__":
    unittest.main()
