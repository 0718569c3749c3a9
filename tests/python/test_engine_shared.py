"""The engine-agnostic pieces every adapter shares: PressureWatch (another process was refused
memory), StallWatch (say when no step ran for long because of the budget), StepHookTiming (hook
time per step), CacheContext (is a cache managed). No torch needed except where noted."""

import os
import unittest
import sys
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "hooks", "python"))

from kvcached_hook import cache_context, pressure_watch, stall_watch, step_timing # noqa: E402


class Api:
    def __init__(self):
        self.value = None

    def pressure(self, device):
        return self.value


class PressureWatchTest(unittest.TestCase):
    def test_only_a_new_refusal_of_another_process_counts(self):
        api = Api()
        watch = pressure_watch.PressureWatch(api, 0)
        self.assertFalse(watch.poll())  # no report yet
        api.value = (5, 4242)
        self.assertFalse(watch.poll())  # first report: from before this engine, not news
        self.assertFalse(watch.poll())  # unchanged
        api.value = (6, 4242)
        self.assertTrue(watch.poll())
        api.value = (7, os.getpid())
        self.assertFalse(watch.poll())  # our own refusal
        api.value = (8, 0)
        self.assertFalse(watch.poll())  # no process named

    def test_shims_without_pressure_never_report(self):
        self.assertFalse(pressure_watch.PressureWatch(object(), 0).poll())


class StallWatchTest(unittest.TestCase):
    def test_warns_after_the_threshold_and_again_only_after_another(self):
        clock = [100.0]
        with mock.patch.object(stall_watch.time, "monotonic", lambda: clock[0]), \
                mock.patch.object(stall_watch, "important") as said:
            watch = stall_watch.StallWatch("eng", warn_after_s=30.0)
            watch.update(progressed=False, refused=True)
            clock[0] += 29
            watch.update(progressed=False, refused=True)
            self.assertEqual(said.call_count, 0)
            clock[0] += 2
            watch.update(progressed=False, refused=True)
            self.assertEqual(said.call_count, 1)
            self.assertIn("no step for 31 s", said.call_args[0][0])
            clock[0] += 10
            watch.update(progressed=False, refused=True)
            self.assertEqual(said.call_count, 1)
            watch.update(progressed=True, refused=False)  # a step ran: the count starts over
            clock[0] += 40
            watch.update(progressed=False, refused=True)
            self.assertEqual(said.call_count, 1)


class StepHookTimingTest(unittest.TestCase):
    def test_both_halves_of_a_step_count_and_idle_steps_only_in_the_total(self):
        timing = step_timing.StepHookTiming()
        clock = iter([5_000, 12_000, 20_000, 26_000])
        with mock.patch.object(step_timing.time, "perf_counter_ns", lambda: next(clock)):
            timing.began(1_000)  # 4 us before scheduling
            timing.finished(10_000, counted=True)  # 2 us after
            timing.began(18_000)  # 2 us
            timing.finished(25_000, counted=False)  # 1 us, an idle step
        snap = timing.snapshot()
        self.assertEqual(timing.per_step_us, [6.0])
        self.assertAlmostEqual(snap["hook_time_s"], 9e-6)
        self.assertEqual(snap["hook_us_per_step_p50"], 6.0)


class CacheContextTest(unittest.TestCase):
    class Context(cache_context.CacheContext):
        engine = "test-engine"
        overrides = cache_context.default_overrides()

    def test_no_shim_means_not_managed(self):
        with mock.patch.object(cache_context.C, "load", lambda *a: None):
            self.assertIsNone(self.Context.create("cpu"))

    def test_hook_switched_off_means_not_managed(self):
        with mock.patch.dict(os.environ, {"ENABLE_KVCACHED": "false"}):
            self.assertIsNone(self.Context.create("cpu"))

    def test_each_engine_has_its_own_test_seam(self):
        self.assertIsNot(self.Context.overrides, cache_context.CacheContext.overrides)

    class LabelApi:
        def __init__(self):
            self.labels = []

        def set_label(self, label):
            self.labels.append(label)
            return cache_context.C.OK

    def context(self, env):
        with mock.patch.dict(os.environ, env):
            settings = cache_context.HookSettings()
        return self.Context(self.LabelApi(), settings, None, 0)

    def test_label_is_engine_and_model_base_name_unless_the_operator_set_one(self):
        with mock.patch.dict(os.environ):
            os.environ.pop("KVCACHED_LABEL", None)
            ctx = self.context({})
        self.assertEqual(ctx.label("/models/Llama-3-8B/"), "test-engine:Llama-3-8B")
        self.assertEqual(ctx.label(""), "test-engine:model")
        ctx.name_process("test-engine:x")
        self.assertEqual(ctx.api.labels, ["test-engine:x"])
        ctx = self.context({"KVCACHED_LABEL": "mine"})
        self.assertEqual(ctx.label("/models/Llama-3-8B"), "mine")
        ctx.name_process("mine")
        self.assertEqual(ctx.api.labels, [], "the shim applied KVCACHED_LABEL itself")


class SettingsTest(unittest.TestCase):
    def test_idle_trim_zero_means_at_once_and_off_means_never(self):
        """A number is a number: KVCACHED_HOOK_IDLE_TRIM_S=0 trims at once (it read as "off")."""
        cases = {"0": 0.0, "2.5": 2.5, "off": -1.0, "no": -1.0, "": 1.0}
        for raw, expected in cases.items():
            with mock.patch.dict(os.environ, {"KVCACHED_HOOK_IDLE_TRIM_S": raw}):
                self.assertEqual(cache_context.HookSettings().idle_trim_s, expected, raw)


if __name__ == "__main__":
    unittest.main()
