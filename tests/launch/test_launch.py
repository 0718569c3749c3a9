#!/usr/bin/env python3
"""`kvctl launch` end to end, with stand-in engines (standin_engine.py) on loopback only.

Run one case: test_launch.py KVCTL FAKE_DRIVER LaunchTest.test_name (tests/launch/CMakeLists.txt
registers each as its own ctest). Every case is bounded in time (kvctl runs under a timeout).
"""
import os
import pathlib
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

HERE = pathlib.Path(__file__).resolve().parent
STANDIN = HERE / "standin_engine.py"
KVCTL = FAKE = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not reaped yet) is gone for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LaunchTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="kvctl-launch-test.")
        self.tmp = pathlib.Path(self.dir.name)
        self.stamp = self.tmp / "stamp"
        self.ipc = f"launchtest_{os.getpid()}"

    def tearDown(self):
        for seg in pathlib.Path("/dev/shm").glob(f"kvcached_{self.ipc}*"):
            seg.unlink(missing_ok=True)
        self.dir.cleanup()

    def engine(self, *args):
        return str(["python3", str(STANDIN), "--stamp", str(self.stamp), *map(str, args)])

    def write(self, text):
        path = self.tmp / "launch.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    def run_kvctl(self, path, *extra, timeout=30):
        return subprocess.run([KVCTL, "launch", *extra, str(path)], capture_output=True, text=True,
                              timeout=timeout)

    def events(self):
        out = []
        if self.stamp.exists():
            for line in self.stamp.read_text().splitlines():
                label, event, pid, t = line.split()
                out.append((label, event, int(pid), float(t)))
        return out

    def first(self, label, event):
        return next(e for e in self.events() if e[0] == label and e[1] == event)

    def wait_for(self, predicate, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.05)
        self.fail(f"timed out after {timeout}s waiting for {what}")

    # --- cases -----------------------------------------------------------------------------

    def test_DryRunPrintsEachEnginesEnvironmentAndCommandAndStartsNothing(self):
        f = self.write(f"""\
            shim: {self.tmp}/libkvcached_shim.so
            gpus:
              "0": {{utilization: 0.5}}
            env: {{SHARED: "a b"}}
            engines:
              - label: model-a
                command: {self.engine("--port", 1)}
                gpu: 0
                limit: 40%
                ready: {{port: 1, timeout: 30s}}
                restart: on-failure
              - label: model-b
                command: echo "it's here"
                gpu: 0
                env: {{OWN: x}}
            """)
        (self.tmp / "libkvcached_shim.so").write_text("")
        r = self.run_kvctl(f, "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        shim = f"LD_PRELOAD={self.tmp}/libkvcached_shim.so"
        lines = [l for l in r.stdout.splitlines() if l.startswith("env ")]
        self.assertEqual(len(lines), 2, r.stdout)
        for l, label in zip(lines, ["model-a", "model-b"]):
            for want in [shim, "CUDA_VISIBLE_DEVICES=0", f"KVCACHED_LABEL={label}",
                         "KVCACHED_GPU_UTILIZATION=0.5", "'SHARED=a b'"]:
                self.assertIn(want, l)
        self.assertIn(str(STANDIN), lines[0])
        self.assertIn("OWN=x", lines[1])
        self.assertNotIn("OWN=x", lines[0])
        self.assertEqual(shlex.split(lines[1])[-3:], ["/bin/sh", "-c", "exec echo \"it's here\""])
        self.assertEqual(shlex.split(lines[0])[-6:-2], ["python3", str(STANDIN), "--stamp", str(self.stamp)])
        self.assertIn("ready: 127.0.0.1:1 accepts (timeout 30s)", r.stdout)
        self.assertIn("restart: on-failure", r.stdout)
        self.assertIn("limit: 40%", r.stdout)
        self.assertFalse(self.stamp.exists(), "dry run started an engine")

    def test_TheGpuExampleFileIsValid(self):
        example = HERE.parent.parent / "examples" / "launch" / "two-models.yaml"
        r = self.run_kvctl(example, "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [shlex.split(l) for l in r.stdout.splitlines() if l.startswith("env ")]
        self.assertEqual([w for l in lines for w in l if w.startswith("KVCACHED_LABEL=")],
                         ["KVCACHED_LABEL=model-a", "KVCACHED_LABEL=model-b"])
        for words in lines:
            self.assertIn("CUDA_VISIBLE_DEVICES=0", words)  # one GPU, one budget
            self.assertIn("KVCACHED_GPU_UTILIZATION=0.9", words)
            self.assertIn("vllm", words)

    def test_BadFilesAreRefusedWithTheirLineAndKey(self):
        cases = [
            ("engines:\n  - label: a\n    command: [true]\n    restrat: always\n",
             r":4:5: engines\[0\]\.restrat: unknown key"),
            ("engines:\n  - label: a\n    command: [true]\n    restart: sometimes\n",
             r":4:14: engines\[0\]\.restart: 'sometimes' is not one of never, on-failure, always"),
            ("engines:\n  - label: a\n    command: [true]\n    env: {LD_PRELOAD: /x.so}\n",
             r":4:11: engines\[0\]\.env\.LD_PRELOAD: kvctl launch sets LD_PRELOAD itself; use the top-level `shim:` key"),
            ("engines:\n  - label: a\n    gpu: 0\n", r":2:5: engines\[0\]\.command: missing"),
            ("engines:\n  - label: a\n    command: [true]\n    ready: {port: 99999}\n",
             r":4:19: engines\[0\]\.ready\.port: '99999' is not an integer from 1 to 65535"),
            ("engines:\n  - label: a\n    command: [true]\n    ready: {log: '(unclosed'}\n",
             r":4:18: engines\[0\]\.ready\.log: '\(unclosed' is not a valid regular expression"),
            ("engines:\n  - label: a\n    command: [true]\n  - label: a\n    command: [true]\n",
             r":4:12: engines\[1\]\.label: 'a' is used by an earlier engine"),
            ("engines:\n  - label: a\n    command: [true]\n    limit: 12 parsecs\n",
             r":4:12: engines\[0\]\.limit: "),
            ("engines: [\n  {label: a\n", r":\d+:\d+: not valid YAML: "),
            ("grace_period: soon\nengines:\n  - command: [true]\n",
             r":1:15: grace_period: 'soon' is not a duration"),
        ]
        for text, pattern in cases:
            with self.subTest(pattern=pattern):
                f = self.write(text)
                r = self.run_kvctl(f)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertRegex(r.stderr, re.escape(str(f)) + pattern)
                self.assertEqual(r.stdout, "")

    def test_EnginesOnOneGpuStartOnlyOnceTheEarlierOneIsReady(self):
        pa, pc = free_port(), free_port()
        f = self.write(f"""\
            status_interval: 0s
            engines:
              - label: a
                command: {self.engine("--delay", 1.0, "--port", pa)}
                gpu: 0
                ready: {{port: {pa}, timeout: 20s}}
              - label: b
                command: {self.engine("--delay", 0.2, "--ready-line", "b: serving")}
                gpu: 0
                ready: {{log: "serving$"}}
              - label: c
                command: {self.engine("--delay", 0.1, "--port", pc)}
                gpu: 1
                ready: {{port: {pc}}}
            """)
        p = subprocess.Popen([KVCTL, "launch", str(f)], stdout=subprocess.PIPE, text=True)
        try:
            self.wait_for(lambda: any(e[:2] == ("b", "ready") for e in self.events()), 20, "b ready")
            time.sleep(0.3)
            p.send_signal(signal.SIGTERM)
            out, _ = p.communicate(timeout=15)
        finally:
            p.kill()
        self.assertEqual(p.returncode, 0, out)
        a_ready, b_start = self.first("a", "ready")[3], self.first("b", "start")[3]
        self.assertGreaterEqual(b_start, a_ready, "b started before a (same GPU) was ready")
        self.assertLess(self.first("c", "start")[3], a_ready,
                        "c (another GPU) waited for a")
        self.assertRegex(out, r"\[kvctl\] a: ready after")
        self.assertRegex(out, r"\[kvctl\] b: ready after")
        self.assertIn("[b] b: serving", out)  # output teed with the label
        self.assertRegex(out, r"\[a\] starting, env LD_PRELOAD=\S*libkvcached_shim.so CUDA_VISIBLE_DEVICES=0")
        self.assertRegex(out, r"\[c\] starting, env LD_PRELOAD=\S+ CUDA_VISIBLE_DEVICES=1")

    def test_ACrashedEngineIsRestartedWithGrowingBackOffThenGivenUp(self):
        f = self.write(f"""\
            status_interval: 0s
            engines:
              - label: flaky
                command: {self.engine("--crash-after", 0.1, "--exit-code", 7)}
                restart: on-failure
                max_restarts: 3
                backoff: {{initial: 300ms, max: 1s}}
                log_file: {self.tmp}/flaky.log
              - label: steady
                command: {self.engine("--run", 0.5)}
                restart: on-failure
            """)
        r = self.run_kvctl(f, timeout=40)
        self.assertEqual(r.returncode, 1, r.stdout)  # flaky failed for good
        crashes = [e[3] for e in self.events() if e[:2] == ("flaky", "crash")]
        starts = [e[3] for e in self.events() if e[:2] == ("flaky", "start")]
        self.assertEqual(len(starts), 4, r.stdout)  # the first run and three restarts
        gaps = [s - c for c, s in zip(crashes, starts[1:])]
        for gap, delay in zip(gaps, [0.3, 0.6, 1.0]):  # doubling, capped at max
            self.assertGreaterEqual(gap, delay - 0.02, f"gaps {gaps}")
        self.assertIn("restarting in 0.3s (restart 1", r.stdout)
        self.assertIn("restarting in 0.6s (restart 2", r.stdout)
        self.assertIn("restarting in 1.0s (restart 3", r.stdout)
        self.assertIn("flaky: exited with status 7; giving up after 3 restart(s)", r.stdout)
        self.assertIn("steady: exited with status 0", r.stdout)  # status 0: no restart
        self.assertEqual([e[1] for e in self.events() if e[0] == "steady"].count("start"), 1)
        log = (self.tmp / "flaky.log").read_text()
        self.assertEqual(log.count("crashing with status 7"), 4)
        self.assertNotIn("[flaky]", log)  # the log file holds the engine's own lines

    def test_SigtermReachesEveryEngineAndWorkerAndKillsLateOnes(self):
        f = self.write(f"""\
            status_interval: 0s
            grace_period: 1s
            engines:
              - label: polite
                command: {self.engine("--worker", "--ready-line", "up")}
                ready: {{log: "^up$"}}
              - label: stubborn
                command: {self.engine("--worker", "--ignore-term")}
              - label: shell
                command: python3 {STANDIN} --stamp {self.stamp} --label shell --worker
            """)
        p = subprocess.Popen([KVCTL, "launch", str(f)], stdout=subprocess.PIPE, text=True)
        try:
            self.wait_for(lambda: sum(e[1] == "worker" for e in self.events()) == 3, 20,
                          "three workers")
            pids = [e[2] for e in self.events() if e[1] in ("start", "worker")]
            self.assertEqual(len(pids), 6)
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            out, _ = p.communicate(timeout=15)
            took = time.monotonic() - t0
        finally:
            p.kill()
        self.assertEqual(p.returncode, 1, out)  # stubborn needed SIGKILL
        self.assertLess(took, 5, out)
        self.assertGreaterEqual(took, 0.9, "SIGKILL came before the grace period")
        self.assertIn("SIGTERM: stopping every engine", out)
        self.assertIn("stubborn: killed by signal 9", out)
        self.assertIn("polite: exited with status 0", out)
        left = [pid for pid in pids if pid_alive(pid)]
        self.assertEqual(left, [], f"processes left after kvctl exited: {left}\n{out}")

    def test_WorkersLeftByAnEndedEngineDoNotOutliveKvctl(self):
        f = self.write(f"""\
            status_interval: 0s
            grace_period: 1s
            engines:
              - label: leaves-worker
                command: {self.engine("--worker", "--ignore-term", "--run", 0.3)}
            """)
        t0 = time.monotonic()
        r = self.run_kvctl(f, timeout=20)
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stdout)  # the engine itself ended with status 0
        self.assertIn("leaves-worker: exited with status 0", r.stdout)
        workers = [e[2] for e in self.events() if e[1] == "worker"]
        self.assertEqual(len(workers), 1)
        self.assertFalse(pid_alive(workers[0]), "the worker outlived kvctl")
        self.assertLess(took, 8)

    def test_AnEngineUnderTheShimGetsItsLimitAndShowsItsMemory(self):
        if not FAKE or not os.path.exists(FAKE):
            self.skipTest(f"no fake CUDA driver at {FAKE!r} (build target fakecuda)")
        f = self.write(f"""\
            status_interval: 300ms
            gpus:
              "0": {{ipc_name: {self.ipc}, budget: 256M}}
            env:
              KVCACHED_CUDA_DRIVER: {FAKE}
              FAKECUDA_TOTAL_MB: "1024"
              KVCACHED_PAGE_PREALLOC_ENABLED: "false"
              KVCACHED_MIN_RESERVED_PAGES: "0"
              KVCACHED_MAP_AHEAD_PAGES: "0"
              KVCACHED_ZERO_CHUNK_MB: "2"
            engines:
              - label: capped
                command: {self.engine("--alloc-mib", 4, 32, "--alloc-wait", 10, "--expect-limit-mib", 16, "--run", 1.0)}
                gpu: 0
                limit: 16MiB
            """)
        r = self.run_kvctl(f, timeout=40)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertRegex(r.stdout, r"\[kvctl\] capped: limit 16 MiB set on pid \d+ \(kvcached_" + self.ipc)
        self.assertIn("[capped] limit seen: 16 MiB", r.stdout)
        self.assertIn("[capped] acquire 4 MiB: status 0", r.stdout)
        self.assertIn("[capped] acquire 32 MiB: status 2", r.stdout)  # KVCACHED_ERR_NO_MEMORY
        self.assertRegex(r.stdout, r"capped +ready +pid \d+ restarts 0 in-use 4 MiB reserved \S+ \S+ limit 16 MiB")


if __name__ == "__main__":
    KVCTL, FAKE = sys.argv[1], sys.argv[2]
    result = unittest.main(argv=[sys.argv[0], *sys.argv[3:]], verbosity=2, exit=False).result
    if not result.wasSuccessful():
        sys.exit(1)
    sys.exit(77 if result.skipped else 0)  # 77: ctest reports SKIP
