"""The sharing benchmark's scheduler timer (examples/vllm_sharing/steptimer/sitecustomize.py and
steptimes.py): it runs the sitecustomize it shadows exactly once, also behind the shim's boot
folder; it times vLLM's real Scheduler instance, with what is patched inside, and its totals give
the scheduler's time per step between two readings; it hooks EngineCore only once that module ran.

Needs vLLM (the environment of scripts/python-env.sh) for the real-Scheduler case.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

import vllm_support as V

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SHARING = os.path.join(ROOT, "examples", "vllm_sharing")
STEPTIMER = os.path.join(SHARING, "steptimer")
BOOT = os.path.join(ROOT, "hooks", "python", "kvcached_boot")
sys.path.insert(0, SHARING)

import steptimes  # noqa: E402


def load_timer():
    """The steptimer module under another name: `site` is not involved, nothing is chained."""
    spec = importlib.util.spec_from_file_location("steptimer_site", os.path.join(STEPTIMER, "sitecustomize.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ChainTest(unittest.TestCase):
    def run_python(self, *path, **env):
        with tempfile.TemporaryDirectory() as shadowed:
            with open(os.path.join(shadowed, "sitecustomize.py"), "w", encoding="utf-8") as f:
                f.write("print('shadowed sitecustomize ran')\n")
            full = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, shadowed]), **env)
            full.pop("LD_PRELOAD", None)
            done = subprocess.run([sys.executable, "-c", "import sitecustomize; print(sitecustomize.__file__)"],
                                  env=full, capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    def test_it_runs_the_sitecustomize_it_shadows_exactly_once(self):
        out = self.run_python(STEPTIMER, SHARING_STEPTIMER_DIR="/nonexistent")
        self.assertEqual(out.count("shadowed sitecustomize ran"), 1, out)
        self.assertIn(os.path.join("", "sitecustomize.py"), out.splitlines()[-1])
        self.assertNotIn("steptimer", out.splitlines()[-1], "sitecustomize is still the timer, not the shadowed one")

    def test_behind_the_shims_boot_folder_each_runs_once(self):
        # The shim prepends its boot folder; that one chains to the timer, which chains on.
        out = self.run_python(BOOT, STEPTIMER, KVCACHED_AUTOPATCH="0", SHARING_STEPTIMER_DIR="/nonexistent")
        self.assertEqual(out.count("shadowed sitecustomize ran"), 1, out)


class AfterImportTest(unittest.TestCase):
    def test_the_engine_cores_scheduler_is_timed_once_its_module_ran(self):
        timer = load_timer()
        with tempfile.TemporaryDirectory() as pkgs, tempfile.TemporaryDirectory() as out:
            os.makedirs(os.path.join(pkgs, "stprobe"))
            open(os.path.join(pkgs, "stprobe", "__init__.py"), "w").close()
            with open(os.path.join(pkgs, "stprobe", "core.py"), "w", encoding="utf-8") as f:
                f.write(textwrap.dedent("""
                    class Sched:
                        def schedule(self):
                            return type("Out", (), {"total_num_scheduled_tokens": 1})()
                        def update_from_output(self, *a):
                            return {}
                        def has_requests(self):
                            return False
                    class EngineCore:
                        def __init__(self):
                            self.scheduler = Sched()
                """))
            finder = timer._AfterImport("stprobe.core", timer._on_core)
            sys.path.insert(0, pkgs)
            sys.meta_path.insert(0, finder)
            os.environ.update(SHARING_STEPTIMER_DIR=out, SHARING_STEPTIMER_LABEL="engine-x")
            try:
                import stprobe.core as core

                engine = core.EngineCore()  # the wrapped __init__ times its scheduler
                engine.scheduler.schedule()
                engine.scheduler.update_from_output(None, None)  # idle after it: written now
            finally:
                sys.meta_path.remove(finder)
                sys.path.remove(pkgs)
                os.environ.pop("SHARING_STEPTIMER_DIR")
                os.environ.pop("SHARING_STEPTIMER_LABEL")
            totals = steptimes.read(out, "engine-x")
            self.assertIsNotNone(totals, "no totals written")
            self.assertEqual((totals["steps"], totals["steps_with_work"], totals["updates"]), (1, 1, 1))


@unittest.skipUnless(V.HAVE_VLLM, V.SKIP_REASON if not V.HAVE_VLLM else "")
class RealSchedulerTest(unittest.TestCase):
    def test_a_real_scheduler_is_timed_and_the_totals_give_time_per_step(self):
        timer = load_timer()
        vllm_config = V.make_vllm_config(64)
        config = V.kv_cache_config(vllm_config, "uniform")
        scheduler = V.make_scheduler(vllm_config, config)
        calls = []
        inner = scheduler.schedule  # stands for a patch inside: the timer must wrap it, not replace it
        scheduler.schedule = lambda *a, **k: calls.append(1) or inner(*a, **k)
        with tempfile.TemporaryDirectory() as out:
            timer.time_scheduler(scheduler, out, "engine-a")
            before = steptimes.read(out, "engine-a")
            for i in range(4):
                scheduler.add_request(V.make_request(f"r{i}", [1 + i] * 40, 8))
            V.run_loop(scheduler)
            after = steptimes.read(out, "engine-a")
        self.assertEqual(before["steps"], 0)
        self.assertEqual(after["steps"], len(calls), "not every schedule() was counted (or the patch inside was lost)")
        self.assertGreater(after["steps_with_work"], 0)
        result = steptimes.per_step(before, after)
        self.assertGreater(result["sched_us_per_step"], 0)
        self.assertEqual(result["steps"], len(calls))
        self.assertEqual(steptimes.per_step(before, dict(after, pid=-1)), "n/a", "another process's totals")
        self.assertEqual(steptimes.per_step(None, after), "n/a")


if __name__ == "__main__":
    unittest.main()
