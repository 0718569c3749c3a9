#!/usr/bin/env python3
"""Preload tests of libkvcached_shim.so (ctest label "preload").

Each case runs programs with and without LD_PRELOAD=<shim>, with LD_LIBRARY_PATH=<fake dir> so
that the fake libcuda.so.1 / libcudart.so.13 stand in for the real ones, and checks what they
print, their exit codes, and the fake driver's leak check (FAKECUDA_LEAK_CHECK=1: exit 97 when
anything is left behind).

    preload_check.py --shim S --fake-dir D --bin-dir B --python P <case>
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import shm_cleanup  # noqa: E402

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_hook_list():
    """The exported hooks of hooks/hook_list.def (the one list the shim is generated from)."""
    text = open(os.path.join(SOURCE_DIR, "hooks", "hook_list.def")).read()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    plain = re.findall(r"^KVC_HOOK\(\s*\w+\s*,\s*(\w+)", text, re.M)
    renamed = re.findall(r"^KVC_HOOK_RENAMED\(\s*\w+\s*,\s*\w+\s*,\s*\"(\w+)\"", text, re.M)
    return set(plain) | set(renamed)


# The hooks of the list, and dlsym (the assembly trampoline, not a CUDA function).
INTERPOSED = read_hook_list() | {"dlsym"}
LEAK_EXIT = 97
FAKE_TOTAL = 8192 << 20  # the fake driver's default device memory


class Failure(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise Failure(message)


class Runner:
    def __init__(self, args, case):
        self.args = args
        # Every run gets its own ledger segment, removed at the end, so that cases (and other
        # suites running at the same time) never share a budget.
        self.ipc_name = "preload_test_%d_%s" % (os.getpid(), case)
        # Leftovers of runs killed by ctest's timeout (they never reached cleanup()).
        shm_cleanup.remove_orphaned_segments("preload_test")

    def env(self, preload, extra):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KVCACHED_", "FAKECUDA_"))
               and k not in ("LD_PRELOAD", "ENABLE_KVCACHED", "PYTHONPATH", "PYTHONHOME")}
        env["LD_LIBRARY_PATH"] = self.args.fake_dir
        env["KVCACHED_IPC_NAME"] = self.ipc_name
        if preload:
            env["LD_PRELOAD"] = self.args.shim
        for key, value in (extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def run(self, argv, preload=True, env=None, rc=0, cwd=None):
        proc = subprocess.run(argv, env=self.env(preload, env), cwd=cwd, capture_output=True,
                              text=True, timeout=90, check=False)
        if rc is not None and proc.returncode != rc:
            raise Failure("%s%s exited %d (expected %d)\n--- stdout\n%s--- stderr\n%s" % (
                "LD_PRELOAD " if preload else "", " ".join(argv), proc.returncode, rc,
                proc.stdout, proc.stderr))
        return proc

    def app(self, name, *argv):
        return [os.path.join(self.args.bin_dir, name)] + list(argv)

    def cleanup(self):
        for entry in os.listdir("/dev/shm"):
            if self.ipc_name in entry:
                os.unlink(os.path.join("/dev/shm", entry))


def same_output(runner, argv, env=None, rc=0, compare_stderr=True):
    """Runs argv with and without the shim; the output must be identical. Returns it."""
    bare = runner.run(argv, preload=False, env=env, rc=rc)
    shim = runner.run(argv, preload=True, env=dict(env or {}, FAKECUDA_LEAK_CHECK="1"), rc=rc)
    expect(shim.stdout == bare.stdout,
           "output differs under the shim for %s\n--- without\n%s--- with\n%s" % (
               " ".join(argv), bare.stdout, shim.stdout))
    expect(not compare_stderr or shim.stderr == bare.stderr,
           "stderr differs under the shim for %s\n--- without\n%s--- with\n%s" % (
               " ".join(argv), bare.stderr, shim.stderr))
    return shim.stdout


# ---------------------------------------------------------------------------------- cases

def case_exports(runner):
    out = subprocess.run(["nm", "-D", "--defined-only", runner.args.shim], capture_output=True,
                         text=True, check=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.strip()]
    versioned = [n for n in names if "@" in n]
    expect(not versioned, "exported symbols carry a version (interposition would fail): %s"
           % versioned)
    unexpected = sorted(n for n in names if n not in INTERPOSED and not n.startswith("kvcached_"))
    expect(not unexpected, "unexpected exported symbols: %s" % unexpected)
    expect(len(INTERPOSED) >= 20, "could not read hooks/hook_list.def (%d names)" % len(INTERPOSED))
    missing = sorted(INTERPOSED - set(names))
    expect(not missing, "interposed symbols not exported: %s (a link option such as "
           "-Wl,--exclude-libs,ALL hides every symbol of the hooks archive; the export list "
           "generated from hooks/hook_list.def already keeps everything else local)" % missing)
    header = open(os.path.join(SOURCE_DIR, "include", "kvcached", "kvcached.h")).read()
    api = set(re.findall(r"KVCACHED_API[^;(]*?\b(kvcached_[a-z_]+)\s*\(", header))
    expect(len(api) >= 20, "could not read the C API from kvcached.h (%d names)" % len(api))
    missing_api = sorted(api - set(names))
    expect(not missing_api, "C API functions not exported: %s" % missing_api)


def case_needed(runner):
    out = subprocess.run(["readelf", "-d", runner.args.shim], capture_output=True, text=True,
                         check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    expect(needed, "readelf found no NEEDED entries at all:\n" + out)
    bad = [n for n in needed if re.match(r"lib(cuda|cudart|stdc\+\+|gcc_s|spdlog|fmt)\b", n)]
    expect(not bad, "the shim must not depend on %s (NEEDED: %s)" % (bad, needed))


def case_versioned_binding(runner):
    argv = runner.app("preload_versioned_app")
    expect(runner.run(argv, preload=False).stdout == "library\n", "the stand-in is not used")
    binding = runner.run(argv).stdout
    expect(binding == "shim\n", "a reference cudaMalloc@libcudart.so.13 did not bind to the "
           "shim (exports.map must stay anonymous): %r" % binding)


def case_dlsym_next(runner):
    argv = runner.app("preload_dlsym_next")
    bare = runner.run(argv, preload=False)
    shim = runner.run(argv, preload=True)
    expect(shim.stdout == bare.stdout == "next=2 default=1 handle=1 direct=1\n",
           "RTLD_NEXT semantics changed under the shim: without %r, with %r"
           % (bare.stdout, shim.stdout))


def threads_of(text):
    match = re.search(r"^Threads:\s+(\d+)$", text, re.M)
    expect(match is not None, "no Threads line in:\n" + text)
    return int(match.group(1))


def listing(path):
    found = []
    for root, dirs, files in os.walk(path):
        found += [os.path.join(root, n) for n in dirs + files]
    return sorted(found)


def case_inert(runner):
    python = runner.args.python
    py_dir = os.path.join(os.path.dirname(runner.args.shim), "kvcached_python")
    commands = [["/bin/true"], ["bash", "-c", "exit 0"], [python, "-c", "pass"]]
    if runner.run([python, "-m", "pip", "--version"], preload=False, rc=None).returncode == 0:
        commands.append([python, "-m", "pip", "--version"])
    else:
        print("note: pip is not installed for %s; pip --version skipped" % python)
    loud = {"KVCACHED_LOG_LEVEL": "debug"}  # even at debug level an unused shim says nothing
    # /dev/shm may change under other suites running at the same time: a clean attempt passes.
    for attempt in range(3):
        work = tempfile.mkdtemp(prefix="kvcached_inert_")
        shm_before = set(os.listdir("/dev/shm"))
        py_before = listing(py_dir)
        for argv in commands:
            bare = runner.run(argv, preload=False, cwd=work)
            shim = runner.run(argv, preload=True, env=loud, cwd=work)
            expect(shim.stdout == bare.stdout and shim.stderr == bare.stderr,
                   "output under the shim for %s:\n%s%s" % (argv, shim.stdout, shim.stderr))
        # Threads: a process that never touches CUDA starts none.
        for argv in (["cat", "/proc/self/status"], ["bash", "-c", "cat /proc/$$/status"],
                     [python, "-c", "print(open('/proc/self/status').read())"]):
            bare = threads_of(runner.run(argv, preload=False, cwd=work).stdout)
            shim = threads_of(runner.run(argv, preload=True, env=loud, cwd=work).stdout)
            expect(shim == bare, "%s: %d threads under the shim, %d without" % (argv, shim, bare))
        new_files = os.listdir(work)
        shutil.rmtree(work)
        expect(not new_files, "files created in the working directory: %s" % new_files)
        expect(listing(py_dir) == py_before, "files created under %s: %s" % (
            py_dir, sorted(set(listing(py_dir)) - set(py_before))))
        shm_new = set(os.listdir("/dev/shm")) - shm_before
        # Only names these programs could have made count: ours (KVCACHED_IPC_NAME), or the
        # default names a shim that ignored it would use. Other suites running at the same time
        # make segments under their own names.
        default_names = ("kvcached_gpu_", "kvcached_u%d_gpu_" % os.getuid())
        shm_new = {n for n in shm_new if runner.ipc_name in n or n.startswith(default_names)}
        if not shm_new:
            return
        print("attempt %d: new /dev/shm entries %s, retrying" % (attempt + 1, sorted(shm_new)))
    raise Failure("new /dev/shm entries appeared while inert programs ran: %s" % sorted(shm_new))


def case_runtime_passthrough(runner):
    out = same_output(runner, runner.app("preload_runtime_app", "sequence"))
    mallocs = re.findall(r"cudaMalloc\((\d+)\) rc=(\d+) real=(\d) driver_calls=(\d+)", out)
    expect(len(mallocs) == 7, "unexpected output:\n" + out)
    expect(all(m[1] == "0" and m[2] == "1" and m[3] == "1" for m in mallocs),
           "every small allocation must be one real cuMemAlloc:\n" + out)
    out = same_output(runner, runner.app("preload_runtime_app", "oom"))
    expect(re.search(r"faulted cudaMalloc rc=2 ptr_unchanged=1", out), "OOM not propagated:\n" + out)
    expect(not re.search(r"faulted cudaFree rc=0\b", out), "free error not propagated:\n" + out)


def case_driver_passthrough(runner):
    for via in ("dlsym", "procaddr"):
        out = same_output(runner, runner.app("preload_driver_app", via, "sequence"))
        allocs = re.findall(r"cuMemAlloc\((\d+)\) rc=(\d+) real=(\d) driver_calls=(\d+)", out)
        expect(len(allocs) == 4 and all(a[1:] == ("0", "1", "1") for a in allocs),
               "%s: unexpected output:\n%s" % (via, out))
        out = same_output(runner, runner.app("preload_driver_app", via, "oom"))
        expect("faulted rc=2 unchanged=1" in out and "faulted rc=101" in out,
               "%s: injected driver errors not propagated unchanged:\n%s" % (via, out))


def parse_which(text):
    return dict(line.split(": ", 1) for line in text.strip().splitlines())


def case_substitution(runner):
    for via in ("dlsym", "procaddr"):
        argv = runner.app("preload_driver_app", via, "which")
        bare = parse_which(runner.run(argv, preload=False).stdout)
        expect(all(v == "real" for v in bare.values()), "%s without the shim: %s" % (via, bare))
        got = parse_which(runner.run(argv, preload=True).stdout)
        want = {
            "cuMemAlloc": "hook cuMemAlloc_v2", "cuMemFree": "hook cuMemFree_v2",
            "cuMemGetInfo": "hook cuMemGetInfo_v2", "cuMemAllocAsync": "hook cuMemAllocAsync",
            "cuIpcGetMemHandle": "hook cuIpcGetMemHandle", "cuInit": "real",
            "cuGetProcAddress_v2 (dlsym)": "hook cuGetProcAddress_v2",
            "cuGetProcAddress (dlsym)": "hook cuGetProcAddress",
        }
        if via == "procaddr":
            want.update({
                "cuMemGetInfo@2000": "real",  # the legacy 32-bit ABI is never replaced
                "cuMemAllocAsync/ptsz": "hook cuMemAllocAsync_ptsz",
                "cuMemFreeAsync/legacy": "hook cuMemFreeAsync",
                "cuGetProcAddress@12000": "hook cuGetProcAddress_v2",
                "cuGetProcAddress@11030": "hook cuGetProcAddress",
                "legacy cuGetProcAddress(cuMemFree)": "hook cuMemFree_v2",
            })
        expect(got == want, "%s under the shim:\n got %s\nwant %s" % (via, got, want))
    argv = runner.app("preload_runtime_app", "entry")
    bare = parse_which(runner.run(argv, preload=False).stdout)
    expect(all(v == "real" for v in bare.values()), "entry points without the shim: %s" % bare)
    got = parse_which(runner.run(argv, preload=True, env={"FAKECUDA_LEAK_CHECK": "1"}).stdout)
    want = {"ByVersion(cuMemAlloc)": "hook cuMemAlloc_v2",
            "EntryPoint(cuMemFree)": "hook cuMemFree_v2", "ByVersion(cuInit)": "real"}
    expect(got == want, "cudaGetDriverEntryPoint under the shim:\n got %s\nwant %s" % (got, want))


def case_local_cudart(runner):
    argv = runner.app("preload_local_app", runner.args.bin_dir)
    bare = runner.run(argv, preload=False)
    expect("dlsym(cudart, cudaMalloc): real" in bare.stdout and "local ok" in bare.stdout,
           bare.stdout)
    shim = runner.run(argv, env={"FAKECUDA_LEAK_CHECK": "1"})
    expect("dlsym(cudart, cudaMalloc): hook" in shim.stdout and "local ok" in shim.stdout,
           shim.stdout)


def case_window(runner):
    leak = {"FAKECUDA_LEAK_CHECK": "1"}
    proc = runner.run(runner.app("preload_runtime_app", "window"),
                      env=dict(leak, KVCACHED_LOG_LEVEL="debug"))
    expect("window ok" in proc.stdout, proc.stdout)
    expect(re.search(r"cudaMalloc\(67108864 bytes\) on device 0 -> lazy region", proc.stderr),
           "KVCACHED_LOG_LEVEL=debug does not show the region:\n" + proc.stderr)
    for via in ("dlsym", "procaddr"):
        proc = runner.run(runner.app("preload_driver_app", via, "window"), env=leak)
        expect("window ok" in proc.stdout, proc.stdout)
    # Without the shim the C API is absent: the programs say so instead of passing.
    runner.run(runner.app("preload_runtime_app", "window"), preload=False, rc=2)


def case_torch(runner):
    proc = runner.run(runner.app("preload_runtime_app", "torch"),
                      env={"FAKECUDA_LEAK_CHECK": "1", "FAKECUDA_DEVICES": "2"})
    expect("torch ok" in proc.stdout, proc.stdout)


def case_capture(runner):
    proc = runner.run(runner.app("preload_runtime_app", "capture"),
                      env={"FAKECUDA_LEAK_CHECK": "1", "KVCACHED_CAPTURE_MIN_MB": "16"})
    expect("capture ok" in proc.stdout, proc.stdout)
    # Off by default: the same program fails its "eager region" check.
    proc = runner.run(runner.app("preload_runtime_app", "capture"), rc=1)
    expect("CHECK failed" in proc.stderr, proc.stderr)


def meminfo(text):
    match = re.search(r"rc=0 free=(\d+) total=(\d+)", text)
    expect(match is not None, "unexpected meminfo output: " + text)
    return int(match.group(1)), int(match.group(2))


def case_meminfo(runner):
    budget = {"KVCACHED_VIRTUAL_MEMINFO": "1", "KVCACHED_BUDGET": "1G"}
    programs = [runner.app("preload_runtime_app", "meminfo"),
                runner.app("preload_driver_app", "dlsym", "meminfo"),
                runner.app("preload_driver_app", "procaddr", "meminfo")]
    for argv in programs:
        _, bare_total = meminfo(runner.run(argv, preload=False).stdout)
        expect(bare_total == FAKE_TOTAL, "fake total %d" % bare_total)
        free, total = meminfo(runner.run(argv, env={"KVCACHED_BUDGET": "1G"}).stdout)
        expect(total == FAKE_TOTAL, "%s: meminfo changed without KVCACHED_VIRTUAL_MEMINFO" % argv)
        free, total = meminfo(runner.run(argv, env=budget).stdout)
        expect(total == 1 << 30 and 0 < free <= 1 << 30,
               "%s: virtual meminfo free=%d total=%d, want total=1 GiB" % (argv, free, total))


def case_meminfo_process(runner):
    """KVCACHED_VIRTUAL_MEMINFO=1: each process sees a GPU of its own, of its limit. A neighbour
    that charges the shared budget changes nothing; only this process's own allocations do."""
    budget = {"KVCACHED_VIRTUAL_MEMINFO": "1", "KVCACHED_BUDGET": "1G"}
    watch = subprocess.Popen(runner.app("preload_runtime_app", "meminfo_watch"),
                             env=runner.env(True, budget), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hold = None
    try:
        def ask(command):
            watch.stdin.write(command + "\n")
            watch.stdin.flush()
            answer = watch.stdout.readline()
            if not answer:  # (stderr is read only then: reading it waits for the process's end)
                raise Failure("meminfo_watch ended at %r:\n%s" % (command, watch.stderr.read()))
            return answer

        free0, total0 = meminfo(ask("read"))
        expect(total0 == 1 << 30 and free0 == total0,
               "fresh process: free=%d total=%d, want both 1 GiB" % (free0, total0))
        # The neighbour holds 256 MiB of the shared budget (an eager region).
        hold = subprocess.Popen(runner.app("preload_runtime_app", "hold", "256"),
                                env=runner.env(True, dict(budget, KVCACHED_CAPTURE_MIN_MB="16")),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        if hold.stdout.readline().strip() != "holding":
            raise Failure("the neighbour did not start:\n" + hold.stderr.read())
        expect(meminfo(ask("read")) == (free0, total0),
               "a neighbour's 256 MiB changed this process's view (process mode)")
        # The variable names the modes too: "shared" sees the neighbour, "process" does not,
        # "real" is the driver's; a bad value stops the shim with one line naming the choices.
        one_shot = runner.app("preload_runtime_app", "meminfo")
        free_s, total_s = meminfo(runner.run(one_shot, env=dict(
            budget, KVCACHED_VIRTUAL_MEMINFO="shared")).stdout)
        expect(total_s == 1 << 30 and free_s <= (1 << 30) - (256 << 20),
               "KVCACHED_VIRTUAL_MEMINFO=shared: free=%d total=%d" % (free_s, total_s))
        expect(meminfo(runner.run(one_shot, env=dict(budget, KVCACHED_VIRTUAL_MEMINFO="Process"))
                       .stdout) == (1 << 30, 1 << 30), "KVCACHED_VIRTUAL_MEMINFO=Process")
        expect(meminfo(runner.run(one_shot, env=dict(budget, KVCACHED_VIRTUAL_MEMINFO="real"))
                       .stdout)[1] == FAKE_TOTAL, "KVCACHED_VIRTUAL_MEMINFO=real")
        bad = runner.run(one_shot, env=dict(budget, KVCACHED_VIRTUAL_MEMINFO="procss"), rc=None)
        lines = [l for l in bad.stderr.splitlines() if "KVCACHED_VIRTUAL_MEMINFO" in l]
        expect(len(lines) == 1 and all(w in lines[0] for w in ("procss", "process", "shared",
                                                               "real")),
               "KVCACHED_VIRTUAL_MEMINFO=procss: %r" % bad.stderr)
        # This process's own allocations do count, and their frees give the memory back.
        expect(ask("alloc 64").strip() == "ok", "alloc failed")
        free2, _ = meminfo(ask("read"))
        expect(free2 == free0 - (64 << 20), "after allocating 64 MiB: free=%d, want %d"
               % (free2, free0 - (64 << 20)))
        expect(ask("free").strip() == "ok", "free failed")
        expect(meminfo(ask("read")) == (free0, total0), "the free did not give the 64 MiB back")
        # The engine hook may switch modes: the shared view sees the neighbour's charge...
        expect(ask("mode 2").strip() == "status=0", "kvcached_set_meminfo_mode(2) failed")
        free3, total3 = meminfo(ask("read"))
        expect(total3 == 1 << 30 and free3 <= (1 << 30) - (256 << 20),
               "shared view: free=%d total=%d, want free <= 768 MiB" % (free3, total3))
        # ...and the real one is the driver's.
        expect(ask("mode 0").strip() == "status=0", "kvcached_set_meminfo_mode(0) failed")
        expect(meminfo(ask("read"))[1] == FAKE_TOTAL, "mode 0 did not give the real total")
        expect(ask("mode 7").strip() == "status=%d" % 1, "an unknown mode was accepted")
    finally:
        for proc in (hold, watch):
            if proc is not None:
                proc.stdin.close()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    expect(watch.returncode == 0, "meminfo_watch exited %s" % watch.returncode)
    expect(hold.returncode == 0, "hold exited %s" % hold.returncode)


def case_counting(runner):
    proc = runner.run(runner.app("preload_runtime_app", "count"), env={"FAKECUDA_LEAK_CHECK": "1"})
    expect("delta=3145728 back=0" in proc.stdout, proc.stdout)


def case_ipc(runner):
    proc = runner.run(runner.app("preload_runtime_app", "ipc"), env={"FAKECUDA_LEAK_CHECK": "1"})
    expect("plain ipc rc=0" in proc.stdout, proc.stdout)
    expect(re.search(r"cudaIpcGetMemHandle\(0x[0-9a-f]+\) refused: .*kvcached region", proc.stderr),
           "no clear message for the refused IPC handle:\n" + proc.stderr)


def case_fork(runner):
    proc = runner.run(runner.app("preload_runtime_app", "fork"), env={"FAKECUDA_LEAK_CHECK": "1"})
    expect("child exit=0" in proc.stdout, proc.stdout)


def case_disabled(runner):
    off = {"ENABLE_KVCACHED": "false"}
    proc = runner.run(runner.app("preload_runtime_app", "disabled"), env=off)
    expect(proc.stderr == "", "ENABLE_KVCACHED=false must be silent:\n" + proc.stderr)
    expect("ENABLE_KVCACHED=false" in proc.stdout, proc.stdout)
    for via in ("dlsym", "procaddr"):
        which = parse_which(runner.run(runner.app("preload_driver_app", via, "which"),
                                       env=off).stdout)
        real = {k: v for k, v in which.items() if "(dlsym)" not in k}
        expect(all(v == "real" for v in real.values()),
               "%s: hooks handed out although disabled: %s" % (via, which))
    same_output(runner, runner.app("preload_runtime_app", "sequence"), env=off)


def case_bad_config(runner):
    proc = runner.run(runner.app("preload_runtime_app", "disabled"),
                      env={"KVCACHED_PAGE_SIZE_MB": "3"})
    lines = proc.stderr.strip().splitlines()
    expect(len(lines) == 1 and "KVCACHED_PAGE_SIZE_MB" in lines[0],
           "a bad value must give one line naming the variable, got:\n" + proc.stderr)
    expect("KVCACHED_PAGE_SIZE_MB" in proc.stdout, "kvcached_last_error: " + proc.stdout)
    # Pass-through from then on (the error line is the only difference).
    same_output(runner, runner.app("preload_runtime_app", "oom"),
                env={"KVCACHED_PAGE_SIZE_MB": "3"}, compare_stderr=False)


def case_misspelled_variable(runner):
    # Issue 12, defect 6: a misspelled variable is ignored by every reader, so the shim says so once,
    # at its lazy start (never at load time: a program that does not use CUDA stays silent).
    typo = {"KVCACHED_BUGDET": "1G", "kvcached_page_size_mb": "4"}  # not-a-variable
    quiet = runner.run(["/bin/true"], env=typo)
    expect(quiet.stderr == "", "the shim spoke in a program without CUDA:\n" + quiet.stderr)
    proc = runner.run(runner.app("preload_runtime_app", "sequence"), env=typo)
    lines = [l for l in proc.stderr.splitlines() if "is not a kvcached variable" in l]
    expect(len(lines) == 2, "expected one warning per misspelled name, got:\n" + proc.stderr)
    expect(any("KVCACHED_BUGDET" in l and "did you mean KVCACHED_BUDGET?" in l  # not-a-variable
               for l in lines), proc.stderr)
    expect(any("did you mean KVCACHED_PAGE_SIZE_MB? (names are case-sensitive)" in l
               for l in lines), proc.stderr)


def case_race(runner):
    for _ in range(5):
        proc = runner.run(runner.app("preload_runtime_app", "race"),
                          env={"FAKECUDA_LEAK_CHECK": "1"})
        expect("race ok" in proc.stdout, proc.stdout)


def case_leak_detected(runner):
    # The leak check used by the other cases can fail: a region left behind is reported.
    proc = runner.run(runner.app("preload_runtime_app", "leak"), env={"FAKECUDA_LEAK_CHECK": "1"},
                      rc=LEAK_EXIT)
    expect(proc.stderr.strip() != "", "the fake reported no leak details")
    runner.run(runner.app("preload_runtime_app", "leak"))


def python_probe(runner, env, cwd):
    code = ("import builtins, os, sys\n"
            "sc = sys.modules.get('sitecustomize')\n"
            "print('pythonpath=%s' % os.environ.get('PYTHONPATH'))\n"
            "print('hook=%s' % ('kvcached_hook' in sys.modules))\n"
            "print('user_sc=%s' % getattr(builtins, '_kvc_user_sitecustomize', False))\n"
            "print('sitecustomize=%s' % getattr(sc, '__file__', None))\n")
    proc = runner.run([runner.args.python, "-c", code], env=env, cwd=cwd)
    expect(proc.stderr == "", "the interpreter printed:\n" + proc.stderr)
    return dict(line.split("=", 1) for line in proc.stdout.strip().splitlines())


def case_python_boot(runner):
    shim_dir = os.path.dirname(os.path.realpath(runner.args.shim))
    real_boot = os.path.join(shim_dir, "kvcached_python", "kvcached_boot")
    expect(os.path.isfile(os.path.join(real_boot, "sitecustomize.py")),
           "the build did not install %s/sitecustomize.py" % real_boot)
    work = tempfile.mkdtemp(prefix="kvcached_pyboot_")
    try:
        # A private copy of the boot folder with a stub engine-hook package.
        packages = os.path.join(work, "packages")
        shutil.copytree(real_boot, os.path.join(packages, "kvcached_boot"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        os.makedirs(os.path.join(packages, "kvcached_hook"))
        with open(os.path.join(packages, "kvcached_hook", "__init__.py"), "w") as f:
            f.write("")
        user = os.path.join(work, "user")
        os.makedirs(user)
        with open(os.path.join(user, "sitecustomize.py"), "w") as f:
            f.write("import builtins\nbuiltins._kvc_user_sitecustomize = True\n")
        boot = os.path.join(packages, "kvcached_boot")
        stub = {"KVCACHED_PYTHON_DIR": packages}

        # 1. Default: the boot folder comes first on PYTHONPATH and loads the hook package.
        got = python_probe(runner, stub, work)
        expect(got["pythonpath"] == boot and got["hook"] == "True",
               "autopatch (default) did not load the hook: %s" % got)
        # 2. A sitecustomize already on PYTHONPATH still runs, and is the one sys.modules shows.
        got = python_probe(runner, dict(stub, PYTHONPATH=user), work)
        expect(got["pythonpath"] == boot + ":" + user and got["hook"] == "True"
               and got["user_sc"] == "True"
               and got["sitecustomize"] == os.path.join(user, "sitecustomize.py"),
               "the user's sitecustomize was shadowed: %s" % got)
        # 3. KVCACHED_AUTOPATCH=0: nothing changes.
        for off in ("0", "false"):
            got = python_probe(runner, dict(stub, PYTHONPATH=user, KVCACHED_AUTOPATCH=off), work)
            expect(got["pythonpath"] == user and got["hook"] == "False"
                   and got["user_sc"] == "True", "KVCACHED_AUTOPATCH=%s: %s" % (off, got))
        got = python_probe(runner, dict(stub, ENABLE_KVCACHED="false"), work)
        expect(got["pythonpath"] == "None" and got["hook"] == "False",
               "ENABLE_KVCACHED=false still injected: %s" % got)
        # 4. Without the shim, nothing at all.
        proc = runner.run([runner.args.python, "-c", "import os; print(os.environ.get("
                           "'PYTHONPATH'))"], preload=False, env=stub, cwd=work)
        expect(proc.stdout.strip() == "None", proc.stdout)
        # 5. A child interpreter inherits the entry once, not twice.
        code = ("import os, subprocess, sys; print(subprocess.run([sys.executable, '-c', "
                "'import os; print(os.environ[\"PYTHONPATH\"])'], capture_output=True, "
                "text=True).stdout.strip())")
        proc = runner.run([runner.args.python, "-c", code], env=stub, cwd=work)
        expect(proc.stdout.strip() == boot, "nested interpreter: %r" % proc.stdout)
        # 6. The installed location next to the library (no KVCACHED_PYTHON_DIR).
        got = python_probe(runner, {}, work)
        expect(got["pythonpath"] == real_boot, "installed boot folder not used: %s" % got)
        # 7. A system sitecustomize (Debian's /usr/bin/python3 has one) is chained to.
        system_python = "/usr/bin/python3"
        if os.path.exists(system_python):
            proc = runner.run([system_python, "-c", "import sys; print(getattr(sys.modules.get("
                               "'sitecustomize'), '__file__', None))"], preload=False, cwd=work)
            system_sc = proc.stdout.strip()
            proc = runner.run([system_python, "-c", "import sys; print(getattr(sys.modules.get("
                               "'sitecustomize'), '__file__', None))"], env=stub, cwd=work)
            expect(proc.stdout.strip() == system_sc,
                   "system sitecustomize %s shadowed: %s" % (system_sc, proc.stdout))
        expect(sorted(os.listdir(work)) == ["packages", "user"], "files created in cwd")
    finally:
        shutil.rmtree(work)


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shim", required=True)
    parser.add_argument("--fake-dir", required=True)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("case", choices=sorted(CASES))
    args = parser.parse_args()
    args.shim = os.path.abspath(args.shim)
    runner = Runner(args, args.case)
    try:
        CASES[args.case](runner)
    except Failure as failure:
        print("FAIL %s: %s" % (args.case, failure))
        return 1
    finally:
        runner.cleanup()
    print("PASS %s" % args.case)
    return 0


if __name__ == "__main__":
    sys.exit(main())
