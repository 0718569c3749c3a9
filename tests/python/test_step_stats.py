"""scripts/gpu/vllm/step_stats.py (proof 5's numbers: hook microseconds and C calls per engine step
from `kvctl list --json` samples) on canned samples: medians over the windows, short windows and a
restarted engine left out, the time range respected, engines without the fields ignored; and
ledger_samples.py's recorder keeping the fields (a fake kvctl printing canned JSON).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "..", "scripts", "gpu", "vllm")
sys.path.insert(0, SCRIPTS)

import step_stats  # noqa: E402


def proc(pid, label, steps=None, ns=None, calls=None):
    p = {"pid": pid, "label": label, "charged_bytes": 1 << 20, "in_use_bytes": 1 << 20}
    if steps is not None:
        p.update(engine_steps=steps, engine_hook_ns=ns, engine_hook_c_calls=calls)
    return p


def kvctl_sample(t, procs):
    return {"t": t, "segments": [{"name": "gpu0", "processes": procs}]}


class StepStatsTest(unittest.TestCase):
    def rows(self):
        """Engine a: 100 steps a window at 40 us and 0.5 calls a step, one slow window (400 us, 3
        calls); engine b (an older shim's process) reports nothing; engine c: 4 steps a window."""
        rows, steps, ns, calls = [], 0, 0, 0
        for k in range(8):
            slow = k == 3
            steps += 100
            ns += 100 * (400_000 if slow else 40_000)
            calls += 100 * 3 if slow else 50
            rows.append(kvctl_sample(100.0 + k, [
                proc(10, "vllm:a", steps, ns, calls),
                proc(11, "vllm:b"),
                proc(12, "vllm:c", 4 * (k + 1), 4 * (k + 1) * 1000, 0),
            ]))
        return rows

    def test_medians_over_windows_ignore_one_slow_window(self):
        result = {e["label"]: e for e in step_stats.summarize(self.rows())}
        a = result["vllm:a"]
        self.assertEqual(a["windows"], 7)
        self.assertEqual(a["hook_us_per_step_median"], 40.0)
        self.assertEqual(a["c_calls_per_step_median"], 0.5)
        self.assertEqual(a["steps"], 700)
        # The whole run's ratio includes the slow window.
        self.assertAlmostEqual(a["hook_us_per_step_run"], (600 * 40 + 100 * 400) / 700, places=2)
        self.assertNotIn("vllm:b", result, "a process without the fields was counted")
        self.assertEqual(result["vllm:c"]["windows"], 0, "windows of 4 steps were counted")

    def test_time_range_and_prefix(self):
        result = step_stats.summarize(self.rows(), prefix="vllm:a", t_from=104.0, t_to=107.0)
        self.assertEqual([e["label"] for e in result], ["vllm:a"])
        self.assertEqual(result[0]["windows"], 3)  # 104-105, 105-106, 106-107: the slow one is before
        self.assertEqual(result[0]["hook_us_per_step_run"], 40.0)

    def test_a_restarted_engine_under_the_same_pid_is_not_a_window(self):
        rows = [kvctl_sample(1.0, [proc(10, "e", 1000, 10**9, 100)]),
                kvctl_sample(2.0, [proc(10, "e", 50, 10**6, 5)]),
                kvctl_sample(3.0, [proc(10, "e", 150, 3 * 10**6, 15)])]
        (e,) = step_stats.summarize(rows)
        self.assertEqual(e["windows"], 1)
        self.assertEqual(e["hook_us_per_step_median"], 20.0)
        self.assertEqual(e["c_calls_per_step_median"], 0.1)

    def test_the_hook_time_of_windows_in_which_the_charge_grew_is_counted_apart(self):
        # A load's start: 4 steps that back 3 GiB through 2 C calls (600 ms of hook), then steady
        # windows of 100 steps at 40 us with no call; the median sees only the steady windows.
        def sample(t, steps, ns, calls, charged):
            p = proc(10, "e", steps, ns, calls)
            p["charged_bytes"] = charged
            return kvctl_sample(t, [p])

        g = 1 << 30
        rows = [sample(1.0, 100, 0, 0, g // 16), sample(2.0, 104, 600 * 10**6, 2, 3 * g + g // 16)]
        rows += [sample(3.0 + k, 204 + 100 * k, 600 * 10**6 + (k + 1) * 4 * 10**6, 2, 3 * g + g // 16) for k in range(3)]
        (e,) = step_stats.summarize(rows)
        self.assertEqual(e["hook_us_per_step_median"], 40.0)
        self.assertEqual(e["growth_hook_ms"], 600.0)
        self.assertEqual(e["growth_steps"], 4)
        self.assertEqual(e["growth_mib"], 3072.0)
        self.assertEqual(e["hook_ms_run"], 612.0)
        # A charge that grew without a C call (pages mapped ahead by the pool) is not growth here.
        rows[1]["segments"][0]["processes"][0]["engine_hook_c_calls"] = 0
        for r in rows[2:]:
            r["segments"][0]["processes"][0]["engine_hook_c_calls"] = 0
        (e,) = step_stats.summarize(rows)
        self.assertEqual(e["growth_hook_ms"], 0.0)

    def test_pages_mapped_and_those_on_the_callers_thread_over_the_range(self):
        # 1000 pages mapped between the first and last sample inside the range, 250 of them on the
        # engine's own thread; the sample before the range (t=0.5) is not counted.
        rows = []
        for t, steps, mapped, sync in ((0.5, 10, 50, 40), (1.0, 100, 100, 50), (2.0, 200, 700, 200), (3.0, 300, 1100, 300)):
            p = proc(10, "e", steps, steps * 40_000, 0)
            p.update(pages_mapped=mapped, sync_maps=sync)
            rows.append(kvctl_sample(t, [p]))
        (e,) = step_stats.summarize(rows, t_from=1.0)
        self.assertEqual((e["pages_mapped"], e["sync_maps"]), (1000, 250))
        # An older recorder's samples lack the counts: nothing is made up.
        for r in rows:
            del r["segments"][0]["processes"][0]["sync_maps"]
        (e,) = step_stats.summarize(rows, t_from=1.0)
        self.assertNotIn("pages_mapped", e)

    def test_command_line_and_exit_status(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "s.jsonl")
            with open(path, "w") as f:
                for row in self.rows():
                    f.write(json.dumps(row) + "\n")
            done = subprocess.run([sys.executable, os.path.join(SCRIPTS, "step_stats.py"), path, "--json"],
                                  capture_output=True, text=True, timeout=60)
            self.assertEqual(done.returncode, 0, done.stderr)
            engines = json.loads(done.stdout)["engines"]
            self.assertEqual(engines[0]["hook_us_per_step_median"], 40.0)
            with open(path, "w") as f:
                f.write(json.dumps(kvctl_sample(1.0, [proc(11, "old")])) + "\n")
            done = subprocess.run([sys.executable, os.path.join(SCRIPTS, "step_stats.py"), path],
                                  capture_output=True, text=True, timeout=60)
            self.assertEqual(done.returncode, 1)
            self.assertIn("no engine reported", done.stdout)

    def test_ledger_samples_record_keeps_the_step_fields_and_the_slot_state(self):
        with tempfile.TemporaryDirectory() as tmp:
            counter = os.path.join(tmp, "n")
            kvctl = os.path.join(tmp, "kvctl")
            # A kvctl whose engine made 100 more steps at 25 us and 1 call each time it is asked.
            with open(kvctl, "w") as f:
                f.write(f"""#!{sys.executable}
import json
try:
    n = int(open({counter!r}).read())
except OSError:
    n = 0
open({counter!r}, "w").write(str(n + 1))
p = {{"pid": 7, "label": "vllm:x", "charged_bytes": 0, "in_use_bytes": 0, "state": "dead",
     "pages_mapped": 10 * n, "sync_maps": n,
     "engine_steps": 100 * n, "engine_hook_ns": 2500000 * n, "engine_hook_c_calls": 100 * n}}
print(json.dumps({{"segments": [{{"name": "g", "budget_bytes": 1, "processes": [p]}}]}}))
""")
            os.chmod(kvctl, 0o755)
            out = os.path.join(tmp, "samples.jsonl")
            # Its own process group: the kvctl it is running when killed dies with it (else that
            # one may write into tmp while tmp is being removed).
            recorder = subprocess.Popen([sys.executable, os.path.join(SCRIPTS, "ledger_samples.py"), "record", kvctl, out, "0.05"],
                                        start_new_session=True)
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    time.sleep(0.2)
                    # 5 lines: the first (n = 0, no step yet) is no point, and 3 windows need 4.
                    if os.path.exists(out) and sum(1 for _ in open(out)) >= 5:
                        break
            finally:
                os.killpg(recorder.pid, signal.SIGKILL)
                recorder.wait()
                gone = time.monotonic() + 5  # until no member of the group is left (or 5 s)
                while time.monotonic() < gone:
                    try:
                        os.killpg(recorder.pid, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.01)
            with open(out) as f:  # a dead engine's slot stays listed until reclaimed: say so
                self.assertEqual(json.loads(f.readline())["procs"][0]["state"], "dead")
            (e,) = step_stats.summarize(step_stats.load(out))
            self.assertGreaterEqual(e["windows"], 3)
            self.assertEqual(e["hook_us_per_step_median"], 25.0)
            self.assertEqual(e["c_calls_per_step_median"], 1.0)
            self.assertEqual(e["pages_mapped"], 10 * e["sync_maps"])  # the recorder kept both counts
            self.assertGreater(e["sync_maps"], 0)


if __name__ == "__main__":
    unittest.main()
