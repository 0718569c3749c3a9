"""A hostile neighbour and a careless operator against a real engine on the GPU (the trust model
and fail-safe budget of docs/ledger.md). The engine is engine_worker.py (transformers' continuous
batching, a random Llama) under LD_PRELOAD, run as root (the GPU machine's user); the neighbour is
uid 65534 (nobody). Every engine run must finish every request with the same greedy tokens as a
clean run, and say once, loudly, why it runs on a process-local budget.

squat-copy:    nobody plants a valid-looking segment (a copy of a real one) at the engine's name
squat-random:  nobody plants 64 KiB of random bytes there
squat-default: the same at the per-user default name (no KVCACHED_IPC_NAME), the name derived from
               the GPU's UUID that a squatter can predict
foreign-limit: nobody runs `kvctl limit PID 0` and `kvctl list --json` against a running engine:
               "permission denied", the limit unchanged, nothing of the engine visible to nobody
truncate-0, truncate-8192, unlink: the engine's live segment is cut (or removed) mid-traffic

    python3 tests/gpu/python/test_hostile.py [CASE ...]
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_common as G  # noqa: E402

NOBODY = 65534
FALLBACK = "process-local budget"  # the shim's one loud line when it cannot use the shared ledger
SPEC = {
    "dtype": "bfloat16",
    "model": {"layers": 8, "hidden": 1024, "heads": 16, "kv_heads": 8, "seed": 31},
    "prompts": {"n": 96, "min_len": 32, "max_len": 512, "seed": 5},
    "max_new_tokens": 96,
    "timeout_s": 240,
}


def as_nobody() -> None:  # preexec_fn: drop to uid/gid 65534 with no supplementary groups
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


_SHARED_DIR = "/tmp/kvhostile-shared"  # what nobody may read and run: the checkout may be root's only


def shared_dir() -> str:
    os.makedirs(_SHARED_DIR, exist_ok=True)
    os.chmod(_SHARED_DIR, 0o755)
    return _SHARED_DIR


def plant(path: str, data: bytes) -> None:
    """Creates `path` as nobody (noclobber: O_EXCL, so nobody really owns it), mode 0644, holding
    `data`; with the shell and cat, not Python (nobody may not reach this interpreter)."""
    source = os.path.join(shared_dir(), "planted.bin")
    with open(source, "wb") as handle:
        handle.write(data)
    os.chmod(source, 0o644)
    subprocess.run(["/bin/sh", "-c", 'umask 022; set -C; cat "$1" > "$2"', "plant", source, path],
                   check=True, preexec_fn=as_nobody, timeout=30)
    st = os.stat(path)
    assert st.st_uid == NOBODY, f"{path} is owned by {st.st_uid}, not {NOBODY}"


def remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def kvctl(*args: str, nobody: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
    program = G.kvctl_path()
    if nobody:  # a copy nobody can run (kvctl needs nothing beside it for list/limit)
        program = os.path.join(shared_dir(), "kvctl")
        if not os.path.exists(program):
            shutil.copy2(G.kvctl_path(), program)
            os.chmod(program, 0o755)
    return subprocess.run(
        [program, *args], capture_output=True, text=True, timeout=timeout, cwd="/", preexec_fn=as_nobody if nobody else None
    )


def processes(list_json: str) -> list[dict]:
    """Every process of every segment in `kvctl list --json` output ({"segments": [...]})."""
    try:
        segments = json.loads(list_json or "{}").get("segments") or []
    except ValueError:
        return []
    return [proc for seg in segments for proc in (seg.get("processes") or [])]


def log_text(log_path: str) -> str:
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def gpu_uuid() -> str:
    done = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    return done.stdout.split()[0].strip()


class Checks:
    def __init__(self, out: str) -> None:
        self.out = out
        self.reference: dict | None = None
        self.rows: list[tuple[str, bool, str]] = []

    def record(self, name: str, ok: bool, detail: str) -> None:
        self.rows.append((name, ok, detail))
        G.report(name, ok, detail)

    def engine_ok(self, name: str, rc: int, result: dict | None, tail: str, log_path: str, want_fallback: bool,
                  marker: str = FALLBACK) -> tuple[bool, str]:
        """Every request finished, tokens equal the clean run's, the hook managed the cache, and the
        fallback line is there exactly when expected (`marker`: the line another act must cause)."""
        if rc != 0 or not result or not result.get("ok"):
            return False, f"engine failed (rc {rc}): {(result or {}).get('errors')}\n{tail}"
        if self.reference is not None and result.get("outputs") != self.reference:
            differ = sum(1 for r, t in (result.get("outputs") or {}).items() if self.reference.get(r) != t)
            return False, f"{differ} of {len(self.reference)} outputs differ from the clean run"
        if not result.get("adapters"):
            return False, "the engine hook did not manage the KV cache"
        text = log_text(log_path)
        if want_fallback and marker not in text:
            return False, f"no '{marker}' line in the engine's log\n{tail}"
        if marker != FALLBACK and FALLBACK in text:
            return False, f"unexpected fallback: {[l for l in text.splitlines() if FALLBACK in l][:1]}"
        if not want_fallback and FALLBACK in text:
            return False, f"unexpected fallback: {[l for l in text.splitlines() if FALLBACK in l][:1]}"
        line = next((l.strip() for l in text.splitlines() if marker in l), "")
        return True, f"{len(result['outputs'])} requests identical; {('said: ' + line[:220]) if line else 'shared ledger used'}"

    # ---- cases ----
    def clean(self) -> None:
        log_path = os.path.join(self.out, "clean.log")
        rc, result, tail = G.run_worker(SPEC, True, log_path, 300)
        if rc == 0 and result and result.get("ok"):
            self.reference = result["outputs"]
        ok, detail = self.engine_ok("clean", rc, result, tail, log_path, want_fallback=False)
        self.record("clean", ok, detail)

    def squat(self, name: str, data_for) -> None:
        ipc = f"kvhostile_{name}_{os.getpid()}"
        path = f"/dev/shm/kvcached_{ipc}"
        remove(path)
        try:
            plant(path, data_for(ipc))
            log_path = os.path.join(self.out, f"{name}.log")
            rc, result, tail = G.run_worker(SPEC, True, log_path, 300, ipc_name=ipc)
            ok, detail = self.engine_ok(name, rc, result, tail, log_path, want_fallback=True)
            if ok and str(NOBODY) not in log_text(log_path) and "nobody" not in log_text(log_path):
                ok, detail = False, "the refusal does not name the segment's owner (uid 65534 / nobody)"
            st = os.stat(path)
            if ok and st.st_uid != NOBODY:
                ok, detail = False, "the planted segment changed owner"
        finally:
            remove(path)
        self.record(name, ok, detail)

    def valid_copy(self, _ipc: str) -> bytes:
        """The bytes of a real segment, made by a short shim run as root under another name."""
        donor = f"kvhostile_donor_{os.getpid()}"
        spec = dict(SPEC, prompts={"n": 4, "min_len": 16, "max_len": 32, "seed": 1}, max_new_tokens=4)
        G.run_worker(spec, True, os.path.join(self.out, "donor.log"), 240, ipc_name=donor)
        path = f"/dev/shm/kvcached_{donor}"
        with open(path, "rb") as handle:
            data = handle.read()
        remove(path)
        if len(data) < 4096:
            raise RuntimeError(f"the donor segment is {len(data)} bytes")
        return data

    def default_segment_path(self) -> str:
        """The per-user default segment's path, as the shim really names it: the file a short
        engine run without KVCACHED_IPC_NAME creates (removed again); the documented formula if
        none appears."""
        before = set(os.listdir("/dev/shm"))
        env = G.child_env(True)
        env.pop("KVCACHED_IPC_NAME", None)
        result_path = os.path.join(self.out, "default-donor.json")
        spec = dict(SPEC, prompts={"n": 4, "min_len": 16, "max_len": 32, "seed": 1}, max_new_tokens=4, result_path=result_path)
        G.Child([sys.executable, os.path.join(G.HERE, "engine_worker.py"), json.dumps(spec)], env,
                os.path.join(self.out, "default-donor.log"), "default-donor").wait(240)
        made = sorted(n for n in set(os.listdir("/dev/shm")) - before if n.startswith("kvcached_"))
        for n in made:
            remove(f"/dev/shm/{n}")
        if len(made) == 1:
            return f"/dev/shm/{made[0]}"
        return f"/dev/shm/kvcached_u{os.getuid()}_gpu_{gpu_uuid()}"

    def squat_default(self) -> None:
        name = "squat-default"
        path = self.default_segment_path()
        remove(path)
        try:
            plant(path, random.Random(7).randbytes(65536))
            log_path = os.path.join(self.out, f"{name}.log")
            env = G.child_env(True)
            env.pop("KVCACHED_IPC_NAME", None)  # the default, predictable name
            result_path = os.path.join(self.out, f"{name}.json")
            spec = dict(SPEC, result_path=result_path)
            child = G.Child([sys.executable, os.path.join(G.HERE, "engine_worker.py"), json.dumps(spec)], env, log_path, name)
            rc = child.wait(300)
            result = json.load(open(result_path, encoding="utf-8")) if os.path.exists(result_path) else None
            ok, detail = self.engine_ok(name, rc, result, child.tail(), log_path, want_fallback=True)
            if ok and os.path.basename(path) not in log_text(log_path):
                ok, detail = False, f"the fallback line does not name {path} (is the default name different?)"
        finally:
            remove(path)
        self.record(name, ok, detail)

    def with_running_engine(self, name: str, act, marker: str | None = FALLBACK) -> None:
        """Starts a looping engine on a fresh segment, waits until it holds KV memory, runs
        act(pid, segment_path) -> (ok, detail), stops it with SIGTERM, and checks it ended cleanly."""
        ipc = f"kvhostile_{name}_{os.getpid()}"
        path = f"/dev/shm/kvcached_{ipc}"
        remove(path)
        log_path = os.path.join(self.out, f"{name}.log")
        result_path = os.path.join(self.out, f"{name}.json")
        env = G.child_env(True, ipc_name=ipc, KVCACHED_LABEL=f"hostile-{name}")
        spec = dict(SPEC, mode="loop", result_path=result_path)
        child = G.Child([sys.executable, os.path.join(G.HERE, "engine_worker.py"), json.dumps(spec)], env, log_path, name)
        try:
            pid, deadline = None, time.monotonic() + 180
            while time.monotonic() < deadline and child.proc.poll() is None:
                listing = kvctl("list", "--json")
                try:
                    for proc in processes(listing.stdout):
                            if proc.get("label") == f"hostile-{name}" and int(proc.get("in_use_bytes") or 0) > 0:
                                pid = int(proc["pid"])
                except (ValueError, TypeError, AttributeError):
                    pass
                if pid:
                    break
                time.sleep(0.5)
            if not pid:
                ok, detail = False, f"the engine never showed KV memory in use in kvctl list\n{child.tail()}"
            else:
                time.sleep(1.0)  # mid-traffic
                ok, detail = act(pid, path)
                time.sleep(3.0)  # let it run on after the act
            os.killpg(child.proc.pid, 15)
            rc = child.wait(120)
        finally:
            child.kill()
            remove(path)
        if ok:
            result = json.load(open(result_path, encoding="utf-8")) if os.path.exists(result_path) else None
            ok, engine_detail = self.engine_ok(name, rc, result, child.tail(), log_path, want_fallback=marker is not None,
                                               marker=marker or FALLBACK)
            rounds = (result or {}).get("rounds", 0)
            detail = f"{detail}; engine: {engine_detail}; {rounds} rounds"
        self.record(name, ok, detail)

    def foreign_limit(self, pid: int, path: str) -> tuple[bool, str]:
        before = kvctl("list", "--json").stdout
        tried = kvctl("limit", str(pid), "0", nobody=True)
        seen = kvctl("list", "--json", nobody=True)
        after = kvctl("list", "--json").stdout
        problems = []
        if tried.returncode == 0 or "permission denied" not in (tried.stdout + tried.stderr).lower():
            problems.append(f"kvctl limit as nobody: rc {tried.returncode}: {(tried.stdout + tried.stderr).strip()[:200]}")

        def limit_of(text: str):
            for proc in processes(text):
                if int(proc.get("pid", -1)) == pid:
                    return proc.get("limit_bytes")
            return "absent"

        if limit_of(before) != limit_of(after):
            problems.append(f"the limit changed: {limit_of(before)} -> {limit_of(after)}")
        if str(pid) in seen.stdout:
            problems.append("kvctl list as nobody shows the engine's pid")
        if problems:
            return False, "; ".join(problems)
        return True, f"limit as nobody refused ({(tried.stderr or tried.stdout).strip()[:120]}), limit {limit_of(after)}, nothing visible"

    @staticmethod
    def truncate_to(size: int):
        def act(_pid: int, path: str) -> tuple[bool, str]:
            os.truncate(path, size)
            return True, f"segment truncated to {size} bytes mid-traffic"

        return act

    @staticmethod
    def unlink(_pid: int, path: str) -> tuple[bool, str]:
        os.remove(path)
        return True, "segment removed mid-traffic"


def main() -> int:
    usable, what = G.cuda_status()
    if not usable:
        print(f"SKIP hostile: {what}")
        return 0
    if os.getuid() != 0:
        print("SKIP hostile: needs root (to act as uid 65534)")
        return 0
    wanted = set(sys.argv[1:])
    out = G.out_dir("hostile")
    checks = Checks(out)
    checks.clean()
    cases = [
        ("squat-copy", lambda: checks.squat("squat-copy", checks.valid_copy)),
        ("squat-random", lambda: checks.squat("squat-random", lambda _ipc: random.Random(3).randbytes(65536))),
        ("squat-default", checks.squat_default),
        ("foreign-limit", lambda: checks.with_running_engine("foreign-limit", checks.foreign_limit, marker=None)),
        ("truncate-0", lambda: checks.with_running_engine("truncate-0", Checks.truncate_to(0))),
        ("truncate-8192", lambda: checks.with_running_engine("truncate-8192", Checks.truncate_to(8192))),
        # Unlinked, the mapping stays valid: the engine keeps sharing with those already attached
        # and says so (docs/ledger.md); no fallback.
        ("unlink", lambda: checks.with_running_engine("unlink", Checks.unlink, marker="was deleted (or replaced)")),
    ]
    for name, case in cases:
        if wanted and name not in wanted:
            continue
        try:
            case()
        except Exception as error:  # noqa: BLE001 - one case failing must not hide the others
            checks.record(name, False, f"{type(error).__name__}: {error}")
    shutil.rmtree(_SHARED_DIR, ignore_errors=True)
    G.write_json(os.path.join(out, "hostile.json"), [{"case": n, "ok": ok, "detail": d} for n, ok, d in checks.rows])
    return 0 if all(ok for _, ok, _ in checks.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
