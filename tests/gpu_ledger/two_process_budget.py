#!/usr/bin/env python3
"""Two processes, one GPU, one small budget (issue: shared ledger, "On the H100").

Process A fills the budget; process B is refused a page while A holds it; A releases its pages
(without trimming: they stay mapped ahead, charged as reserved) and B must get its page within
100 ms, through the ledger's pressure signal that makes A's pool thread give reserved pages back.
`kvctl watch NAME --json` must show both processes at every step.

Usage (GPU machine, repo root): python3 tests/gpu_ledger/two_process_budget.py [BUILD_DIR]
Exit 0 = pass, 1 = fail, 77 = skipped (no GPU / no driver).
"""
import ctypes
import json
import os
import subprocess
import sys
import time

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build-gpu")
SHIM = os.path.join(BUILD, "lib", "libkvcached_shim.so")
KVCTL = os.path.join(BUILD, "bin", "kvctl")
PAGE = 2 << 20
BUDGET_PAGES = 32
IPC = f"twoproc_{os.getpid()}"

CHILD = r"""
import ctypes, sys, time
shim = ctypes.CDLL(sys.argv[1])
shim.kvcached_last_error.restype = ctypes.c_char_p
base = ctypes.c_uint64(0)
PAGE = 2 << 20
def say(*a):
    print(*a, flush=True)
st = shim.kvcached_region_create(0, ctypes.c_uint64(256 * PAGE), 0, ctypes.byref(base))
if st != 0:
    say("ERROR create", st, shim.kvcached_last_error()); sys.exit(2)
shim.kvcached_set_label(sys.argv[2].encode())
say("ready")  # the region (and its zero memory, outside the budget) exists
held = []
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "fill":          # acquire pages until refused
        i = 0
        while shim.kvcached_acquire(ctypes.c_uint64(base.value + i * PAGE), ctypes.c_uint64(PAGE)) == 0:
            held.append(i); i += 1
        say("filled", len(held))
    elif cmd[0] == "try":         # one attempt on a fresh page
        i = len(held)
        st = shim.kvcached_acquire(ctypes.c_uint64(base.value + i * PAGE), ctypes.c_uint64(PAGE))
        if st == 0: held.append(i)
        say("try", st)
    elif cmd[0] == "retry":       # retry every 2 ms until success or deadline (s)
        deadline = time.monotonic() + float(cmd[1]); i = len(held); n = 0
        while True:
            n += 1
            st = shim.kvcached_acquire(ctypes.c_uint64(base.value + i * PAGE), ctypes.c_uint64(PAGE))
            if st == 0 or time.monotonic() > deadline: break
            time.sleep(0.002)
        if st == 0: held.append(i)
        say("retry", st, time.monotonic(), n)
    elif cmd[0] == "release":     # release everything, no explicit trim
        for i in held:
            shim.kvcached_release(ctypes.c_uint64(base.value + i * PAGE), ctypes.c_uint64(PAGE))
        n = len(held); held.clear()
        say("released", n, time.monotonic())
    elif cmd[0] == "pressure":    # the latest pressure request on the shared budget
        seq, pid = ctypes.c_uint64(0), ctypes.c_int32(0)
        st = shim.kvcached_pressure_get(0, ctypes.byref(seq), ctypes.byref(pid))
        say("pressure", st, seq.value, pid.value)
    elif cmd[0] == "quit":
        shim.kvcached_region_destroy(base); say("bye"); break
"""


def main() -> int:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        print("SKIP: no CUDA driver (libcuda.so.1) on this machine")
        return 77
    for p in (SHIM, KVCTL):
        if not os.path.exists(p):
            print(f"FAIL: {p} not found (build first: scripts/gpu/build-for-gpu.sh)")
            return 1
    env = dict(os.environ, KVCACHED_IPC_NAME=IPC, KVCACHED_BUDGET=str(BUDGET_PAGES * PAGE),
               KVCACHED_PAGE_PREALLOC_ENABLED="false", KVCACHED_MIN_RESERVED_PAGES="0",
               KVCACHED_MAX_RESERVED_PAGES="4", KVCACHED_MAP_AHEAD_PAGES="0",
               KVCACHED_MAP_AHEAD_BURST_PAGES="0",
               KVCACHED_TRIM_DELAY_MS="60000",  # only pressure may take A's pages back
               KVCACHED_LOG_LEVEL="warn")

    def spawn(label):
        return subprocess.Popen([sys.executable, "-c", CHILD, SHIM, label], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(p, cmd):
        p.stdin.write(cmd + "\n"); p.stdin.flush()
        line = p.stdout.readline().split()
        if not line or line[0] == "ERROR":
            raise RuntimeError(f"child said {line}")
        return line

    failures = []

    def check(cond, what):
        print(("PASS " if cond else "FAIL ") + what, flush=True)
        if not cond:
            failures.append(what)

    def procs_in_kvctl():
        out = subprocess.run([KVCTL, "watch", IPC, "--json", "--count", "1"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode != 0:
            return None, out.stderr.strip()
        doc = json.loads(out.stdout.strip().splitlines()[-1])
        return doc, ""

    a = spawn("engine-A")
    b = spawn("engine-B")
    steps = []
    try:
        # Both regions exist before A fills the budget; a process's zero memory is outside the
        # budget, so all of it is left for pages.
        for p in (a, b):
            line = p.stdout.readline().split()
            if line != ["ready"]:
                raise RuntimeError(f"child did not start: {line}")
        filled = int(ask(a, "fill")[1])
        room = BUDGET_PAGES
        check(room - 1 <= filled <= room, f"A filled the budget ({filled} pages of {room})")
        steps.append(("A full", procs_in_kvctl()))
        st = int(ask(b, "try")[1])
        check(st == 2, f"B refused while A holds the budget (status {st}, 2 = NO_MEMORY)")
        steps.append(("B refused", procs_in_kvctl()))
        p = ask(a, "pressure")
        check(int(p[1]) == 0 and int(p[2]) > 0 and int(p[3]) == b.pid,
              f"A sees B's pressure request (kvcached_pressure_get: seq {p[2]}, pid {p[3]})")
        t_rel = float(ask(a, "release")[2])
        r = ask(b, "retry 2.0")
        st, t_ok = int(r[1]), float(r[2])
        wait_ms = (t_ok - t_rel) * 1000.0
        check(st == 0 and wait_ms <= 100.0, f"B got a page {wait_ms:.1f} ms after A released (<= 100 ms)")
        steps.append(("B served", procs_in_kvctl()))
        for name, (doc, err) in steps:
            text = json.dumps(doc) if doc is not None else ""
            both = str(a.pid) in text and str(b.pid) in text
            check(both, f"kvctl watch {IPC} --json shows both pids at step '{name}' {err}")
        print("kvctl sample:", json.dumps(steps[-1][1][0])[:600])
        ask(a, "quit"); ask(b, "quit")
    finally:
        for p in (a, b):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([KVCTL, "delete", IPC, "--force"], capture_output=True)
    print(f"two_process_budget: {'FAIL' if failures else 'PASS'} ({len(failures)} failed checks)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
