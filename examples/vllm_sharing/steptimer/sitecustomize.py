"""Scheduler time per engine step, the same measure in every setting of the sharing benchmark.

The shim's own counters (kvctl: engine_hook_ns) cover only this project's hook; kvcached exposes
none. To compare what each setting adds to vLLM's scheduler, engines.py puts this folder first on
PYTHONPATH in every setting (static, shim, kvcached). In the process that builds vLLM's EngineCore,
it wraps that core's scheduler *instance*: schedule() and update_from_output() are timed with
whatever any patch put inside them (an instance attribute shadows the class's patched method).
Totals go to $SHARING_STEPTIMER_DIR/<label>-<pid>.json (label: $SHARING_STEPTIMER_LABEL) at most
once a second while steps run, when the engine goes idle, and at exit; the driver reads them
before and after each run (steptimes.py).

It then runs the sitecustomize it shadows (the next one on sys.path), as Python would have. Any
failure leaves the engine untimed, never broken. Not imported by anything but Python's `site`.
"""

import os
import sys

_CORE = "vllm.v1.engine.core"


class _AfterImport:
    """A sys.meta_path finder that answers only for one module: it lets the other finders find it,
    then runs `callback(module)` once the module's code has run. (Not kvcached_hook.importhook:
    importing that package patches vLLM, which the static and peer settings must not see.)"""

    def __init__(self, name, callback):
        self.name, self.callback, self.busy = name, callback, False

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name or self.busy:
            return None
        import importlib.util

        self.busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.busy = False
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run, callback = loader.exec_module, self.callback

        def exec_module(module):
            run(module)
            try:
                callback(module)
            except Exception:  # noqa: BLE001 - untimed, never broken
                pass

        loader.exec_module = exec_module
        return spec


def time_scheduler(scheduler, folder, label):
    """Wraps the scheduler instance's schedule() and update_from_output(); returns the totals."""
    import atexit
    import json
    import time

    clock = time.perf_counter_ns
    totals = {"pid": os.getpid(), "label": label, "steps": 0, "steps_with_work": 0, "schedule_ns": 0,
              "update_ns": 0, "updates": 0}
    path = os.path.join(folder, f"{label}-{os.getpid()}.json")
    last = [0.0]

    def dump(force=False):
        now = time.monotonic()
        if not force and now - last[0] < 1.0:
            return
        last[0] = now
        try:
            os.makedirs(folder, exist_ok=True)
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(dict(totals, wall_s=time.time()), f)
            os.replace(path + ".tmp", path)
        except OSError:
            pass

    schedule, update, has_requests = scheduler.schedule, scheduler.update_from_output, scheduler.has_requests

    def timed_schedule(*args, **kwargs):
        start = clock()
        try:
            out = schedule(*args, **kwargs)
        finally:
            totals["schedule_ns"] += clock() - start
            totals["steps"] += 1
        if getattr(out, "total_num_scheduled_tokens", 0) > 0:
            totals["steps_with_work"] += 1
        dump()
        return out

    def timed_update(*args, **kwargs):
        start = clock()
        try:
            return update(*args, **kwargs)
        finally:
            totals["update_ns"] += clock() - start
            totals["updates"] += 1
            if not has_requests():  # the engine goes idle (no step may come for a while): write now
                dump(True)

    scheduler.schedule, scheduler.update_from_output = timed_schedule, timed_update
    atexit.register(dump, True)
    dump(True)
    return totals


def _on_core(module):
    folder = os.environ.get("SHARING_STEPTIMER_DIR")
    label = os.environ.get("SHARING_STEPTIMER_LABEL", "engine")
    init = module.EngineCore.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if folder and getattr(self, "scheduler", None) is not None and "_steptimer" not in vars(self):
            self._steptimer = time_scheduler(self.scheduler, folder, label)

    module.EngineCore.__init__ = __init__


def _chain():
    """Runs the sitecustomize that comes after this folder on sys.path, if any (as the shim's own
    boot folder does; that one is not importable as a library)."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    paths = [os.path.abspath(p or os.curdir) for p in sys.path]
    # Only what comes after this folder: a sitecustomize before it already ran (and chained here).
    rest = sys.path[paths.index(here) + 1:] if here in paths else []
    rest = [p for p, a in zip(rest, paths[len(paths) - len(rest):]) if a != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":  # loaded by `site` (tests load it under another name)
    if os.environ.get("SHARING_STEPTIMER_DIR"):
        sys.meta_path.insert(0, _AfterImport(_CORE, _on_core))
    _chain()
