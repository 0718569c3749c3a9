"""ctypes bindings over the shim's C API (include/kvcached/kvcached.h).

`load()` finds the library: the copy already preloaded into this process (LD_PRELOAD), else the
path in KVCACHED_SHIM_PATH. Nothing is loaded or called at import time.

The adapters use the small `CApi` surface below; tests pass a fake object with the same methods.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import itertools
import os
import threading
from dataclasses import dataclass
from typing import NamedTuple

from ._log import logger

# ---- constants mirrored from kvcached.h (API version 1) ----
OK = 0
ERR_INVALID = 1
ERR_NO_MEMORY = 2
ERR_DRIVER = 3
ERR_NOT_FOUND = 4
ERR_DISABLED = 5
ERR_STATE = 6
ERR_UNSUPPORTED = 7
ERR_INTERNAL = 8

STATUS_NAMES = {
    OK: "KVCACHED_OK",
    ERR_INVALID: "KVCACHED_ERR_INVALID",
    ERR_NO_MEMORY: "KVCACHED_ERR_NO_MEMORY",
    ERR_DRIVER: "KVCACHED_ERR_DRIVER",
    ERR_NOT_FOUND: "KVCACHED_ERR_NOT_FOUND",
    ERR_DISABLED: "KVCACHED_ERR_DISABLED",
    ERR_STATE: "KVCACHED_ERR_STATE",
    ERR_UNSUPPORTED: "KVCACHED_ERR_UNSUPPORTED",
    ERR_INTERNAL: "KVCACHED_ERR_INTERNAL",
}

REGION_LAZY = 0
REGION_EAGER = 1

MEMINFO_REAL = 0
MEMINFO_PROCESS = 1
MEMINFO_SHARED = 2

PAGE_ZERO = 0
PAGE_MAPPED_FREE = 1
PAGE_IN_USE = 2
PAGE_STATE_NAMES = {PAGE_ZERO: "ZERO", PAGE_MAPPED_FREE: "MAPPED_FREE", PAGE_IN_USE: "IN_USE"}

TORCH_MALLOC = "kvcached_torch_malloc"
TORCH_FREE = "kvcached_torch_free"
LIBRARY_BASENAME = "libkvcached_shim.so"


class KVCachedError(RuntimeError):
    """A C API call failed for a reason other than "no memory right now"."""

    def __init__(self, call: str, status: int, detail: str = "") -> None:
        name = STATUS_NAMES.get(status, f"status {status}")
        super().__init__(f"{call} failed: {name}" + (f": {detail}" if detail else ""))
        self.call = call
        self.status = status


class Range(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint64), ("length", ctypes.c_uint64)]


class _RegionInfo(ctypes.Structure):
    _fields_ = [
        ("base", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("page_size", ctypes.c_uint64),
        ("pages", ctypes.c_uint64),
        ("zero_pages", ctypes.c_uint64),
        ("mapped_free_pages", ctypes.c_uint64),
        ("in_use_pages", ctypes.c_uint64),
        ("device", ctypes.c_int32),
        ("kind", ctypes.c_int32),
    ]


class _Stats(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "page_size",
            "regions",
            "reserved_va_bytes",
            "in_use_bytes",
            "mapped_free_bytes",
            "pool_bytes",
            "zero_page_bytes",
            "peak_physical_bytes",
            "passthrough_bytes",
            "budget_limit_bytes",
            "maps",
            "unmaps",
            "sync_maps",
            "budget_refusals",
        )
    ]


# kvcached_share_action (docs/sharing.md)
SHARE_OK = 0
SHARE_STOP_ADMITTING = 1
SHARE_GIVE_CACHED = 2
SHARE_PREEMPT = 3
SHARE_ACTION_NAMES = {
    SHARE_OK: "ok",
    SHARE_STOP_ADMITTING: "stop_admitting",
    SHARE_GIVE_CACHED: "give_cached",
    SHARE_PREEMPT: "preempt",
}


class _ShareVerdict(ctypes.Structure):
    _fields_ = [("action", ctypes.c_int32), ("starved_pid", ctypes.c_int32)] + [
        (name, ctypes.c_uint64)
        for name in (
            "give_bytes",
            "fair_share_bytes",
            "held_bytes",
            "deficit_bytes",
            "starved_ms",
            "weight_milli",
            "min_bytes",
        )
    ]


class ShareVerdict(NamedTuple):
    """What the sharing policy asks of this engine now (kvcached_share_verdict). A named tuple, not
    a dataclass: one is made every engine step, and a frozen dataclass of nine fields costs four
    times as much to make."""

    action: str  # "ok", "stop_admitting", "give_cached" or "preempt"
    give_bytes: int = 0
    fair_share_bytes: int = 0
    held_bytes: int = 0
    deficit_bytes: int = 0
    starved_ms: int = 0
    starved_pid: int = 0
    weight: float = 1.0
    min_bytes: int = 0


_SHARE_OK = ShareVerdict("ok")  # the "ok" verdict's numbers are not read (share_policy.py)


@dataclass(frozen=True)
class RegionInfo:
    base: int
    size: int
    page_size: int
    pages: int
    zero_pages: int
    mapped_free_pages: int
    in_use_pages: int
    device: int
    kind: int


class CApi:
    """The C API of one loaded shim library. Thread-safe (the C side is)."""

    def __init__(self, lib: ctypes.CDLL, path: str | None) -> None:
        self.lib = lib
        self.path = path  # file of the library, for torch's CUDAPluggableAllocator
        # The same library through PyDLL: its functions run holding the GIL. ctypes otherwise
        # releases the GIL around every call, and taking it back after a call of a few
        # microseconds can wait for another Python thread's switch interval (5 ms): measured on
        # the H100 as ~1.4 ms per refused acquire in an engine whose main thread submits
        # requests. The shim never calls back into Python, so holding the GIL cannot deadlock.
        self._held = ctypes.PyDLL(path, handle=lib._handle)
        self._bind()

    def _fn(self, name: str, restype, argtypes, required: bool = True, hold_gil: bool = False):
        try:
            fn = getattr(self._held if hold_gil else self.lib, name)
        except AttributeError:
            if required:
                raise KVCachedError(f"symbol {name}", ERR_UNSUPPORTED, f"not exported by {self.path or 'the shim'}")
            return None
        fn.restype = restype
        fn.argtypes = argtypes
        return fn

    def _bind(self) -> None:
        u64, c_int = ctypes.c_uint64, ctypes.c_int
        self._version = self._fn("kvcached_version", ctypes.c_char_p, [])
        self._api_version = self._fn("kvcached_api_version", c_int, [])
        self._status_string = self._fn("kvcached_status_string", ctypes.c_char_p, [c_int])
        self._last_error = self._fn("kvcached_last_error", ctypes.c_char_p, [])
        self._enabled = self._fn("kvcached_enabled", c_int, [])
        self._region_create = self._fn(
            "kvcached_region_create", c_int, [c_int, u64, c_int, ctypes.POINTER(ctypes.c_uint64)]
        )
        self._region_destroy = self._fn("kvcached_region_destroy", c_int, [u64])
        self._region_info = self._fn("kvcached_region_info_get", c_int, [u64, ctypes.POINTER(_RegionInfo)])
        # Per-step calls hold the GIL (see __init__); trim and region set-up may take long: they don't.
        ranges_args = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]  # (addr, length) pairs
        self._acquire_ranges = self._fn("kvcached_acquire_ranges", c_int, ranges_args, hold_gil=True)
        self._release_ranges = self._fn("kvcached_release_ranges", c_int, ranges_args, hold_gil=True)
        self._page_state = self._fn("kvcached_page_state_get", c_int, [u64, ctypes.POINTER(c_int)], hold_gil=True)
        self._stats = self._fn("kvcached_stats_get", c_int, [c_int, ctypes.POINTER(_Stats)], hold_gil=True)
        self._trim = self._fn("kvcached_trim", c_int, [c_int])
        self._window_begin = self._fn("kvcached_kv_window_begin", c_int, [])
        self._window_end = self._fn("kvcached_kv_window_end", c_int, [])
        self._set_label = self._fn("kvcached_set_label", c_int, [ctypes.c_char_p])
        # Proposed additions (see docs/engine-hook.md), used when present.
        self._pressure_get = self._fn(
            "kvcached_pressure_get", c_int, [c_int, ctypes.POINTER(u64), ctypes.POINTER(ctypes.c_int32)],
            required=False, hold_gil=True,
        )
        self._zero_page_check = self._fn(
            "kvcached_zero_page_check",
            c_int,
            [c_int, ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64)],
            required=False,
        )
        self._share_verdict = self._fn(
            "kvcached_share_verdict", c_int, [c_int, ctypes.POINTER(_ShareVerdict)], required=False, hold_gil=True
        )
        # Every engine step: the action alone, cheap while nobody is starved (kvcached.h).
        self._share_action_get = self._fn(
            "kvcached_share_action_get", c_int, [c_int, ctypes.POINTER(ctypes.c_int32)], required=False, hold_gil=True
        )
        # Asked by an engine refused a while ago, in a step that would otherwise wait (tracker.py).
        self._budget_headroom = self._fn(
            "kvcached_budget_headroom_get", c_int, [c_int, ctypes.POINTER(u64)], required=False, hold_gil=True
        )
        self._share_report = self._fn("kvcached_share_report", c_int, [c_int, u64, u64], required=False)
        self._share_set_unit = self._fn("kvcached_share_set_unit", c_int, [c_int, u64], required=False)
        self._set_meminfo_mode = self._fn("kvcached_set_meminfo_mode", c_int, [c_int], required=False)
        # Called every few engine steps: holds the GIL like the other per-step calls.
        self._report_engine_steps = self._fn(
            "kvcached_report_engine_steps", c_int, [c_int, u64, u64, u64], required=False, hold_gil=True
        )
        # Entry points for torch.cuda.memory.CUDAPluggableAllocator: only their presence matters here.
        self.has_torch_allocator = hasattr(self.lib, TORCH_MALLOC) and hasattr(self.lib, TORCH_FREE)

    # ---- identity ----
    def version(self) -> str:
        return (self._version() or b"").decode(errors="replace")

    def api_version(self) -> int:
        return int(self._api_version())

    def last_error(self) -> str:
        return (self._last_error() or b"").decode(errors="replace")

    def enabled(self) -> bool:
        """Starts the shim if needed (threads, shared memory): call only once CUDA is in use."""
        return bool(self._enabled())

    def status_string(self, status: int) -> str:
        text = self._status_string(status)
        return text.decode(errors="replace") if text else STATUS_NAMES.get(status, str(status))

    # ---- regions and pages ----
    def region_create(self, device: int, size: int, kind: int = REGION_LAZY) -> int:
        base = ctypes.c_uint64(0)
        status = self._region_create(device, size, kind, ctypes.byref(base))
        if status != OK:
            raise KVCachedError("kvcached_region_create", status, self.last_error())
        return int(base.value)

    def region_destroy(self, base: int) -> int:
        return int(self._region_destroy(base))

    def region_info(self, addr: int) -> RegionInfo | None:
        info = _RegionInfo()
        status = self._region_info(addr, ctypes.byref(info))
        if status == ERR_NOT_FOUND:
            return None
        if status != OK:
            raise KVCachedError("kvcached_region_info_get", status, self.last_error())
        return RegionInfo(
            info.base,
            info.size,
            info.page_size,
            info.pages,
            info.zero_pages,
            info.mapped_free_pages,
            info.in_use_pages,
            info.device,
            info.kind,
        )

    @staticmethod
    def _pack(ranges):
        # kvcached_range_t is two uint64 fields: a flat array of pairs has its layout and is
        # built in one C-level pass (3x faster than filling Range structures one by one: 130 us
        # for 1600 ranges). Returns (pointer, count, keep-alive).
        count = len(ranges)
        flat = array.array("Q", itertools.chain.from_iterable(ranges))
        if len(flat) != 2 * count:
            raise ValueError("ranges must be (addr, length) pairs")
        if count == 0:
            flat = array.array("Q", (0, 0))
        buffer = (ctypes.c_uint64 * len(flat)).from_buffer(flat)
        return buffer, count, flat

    def acquire(self, ranges) -> int:
        """Backs every (addr, length) range, all or nothing, in one call. Returns the status."""
        buffer, count, _keep = self._pack(ranges)
        return int(self._acquire_ranges(buffer, count))

    def release(self, ranges) -> int:
        buffer, count, _keep = self._pack(ranges)
        return int(self._release_ranges(buffer, count))

    def page_state(self, addr: int) -> int:
        state = ctypes.c_int(-1)
        status = self._page_state(addr, ctypes.byref(state))
        if status != OK:
            raise KVCachedError("kvcached_page_state_get", status, self.last_error())
        return int(state.value)

    def stats(self, device: int) -> dict:
        out = _Stats()
        status = self._stats(device, ctypes.byref(out))
        if status != OK:
            raise KVCachedError("kvcached_stats_get", status, self.last_error())
        return {name: int(getattr(out, name)) for name, _ in _Stats._fields_}

    def pressure(self, device: int):
        """(seq, pid) of the latest pressure request on the device's shared budget, or None when
        the shim lacks kvcached_pressure_get or the call fails."""
        if self._pressure_get is None:
            return None
        seq = ctypes.c_uint64(0)
        pid = ctypes.c_int32(0)
        if self._pressure_get(device, ctypes.byref(seq), ctypes.byref(pid)) != OK:
            return None
        return int(seq.value), int(pid.value)

    def zero_page_check(self, device: int):
        """(clean, first_dirty_offset, dirty_bytes) from kvcached_zero_page_check, or None when the
        shim does not export it (proposed API; the sanity check then reads the page through torch)."""
        if self._zero_page_check is None:
            return None
        offset, nbytes = ctypes.c_uint64(0), ctypes.c_uint64(0)
        status = self._zero_page_check(device, ctypes.byref(offset), ctypes.byref(nbytes))
        if status == OK:
            return True, 0, 0
        if status == ERR_STATE:
            return False, int(offset.value), int(nbytes.value)
        return None

    def budget_headroom(self, device: int) -> int | None:
        """Bytes this process could back now on `device` without a budget refusal (its budget's room
        plus what its own pool would give up first; non-binding), or None when the shim lacks
        kvcached_budget_headroom_get or the call fails. Cheap: no refusal or pressure is recorded."""
        if self._budget_headroom is None:
            return None
        out = ctypes.c_uint64(0)
        if self._budget_headroom(device, ctypes.byref(out)) != OK:
            return None
        return out.value

    def trim(self, device: int) -> int:
        return int(self._trim(device))

    # ---- policy ----
    def kv_window_begin(self) -> int:
        return int(self._window_begin())

    def kv_window_end(self) -> int:
        return int(self._window_end())

    def set_label(self, label: str) -> int:
        return int(self._set_label(label.encode(errors="replace")))

    # ---- sharing (docs/sharing.md) ----
    def share_verdict(self, device: int) -> ShareVerdict | None:
        """What the sharing policy asks of this engine on `device` now, or None when the shim lacks
        kvcached_share_verdict or the call fails (then: carry on as if "ok")."""
        if self._share_verdict is None:
            return None
        out = _ShareVerdict()
        if self._share_verdict(device, ctypes.byref(out)) != OK:
            return None
        # ctypes gives the fields as Python ints already; positional: once per engine step.
        return ShareVerdict(SHARE_ACTION_NAMES.get(out.action, "ok"), out.give_bytes, out.fair_share_bytes,
                            out.held_bytes, out.deficit_bytes, out.starved_ms, out.starved_pid,
                            out.weight_milli / 1000.0, out.min_bytes)

    def share_verdict_fast(self, device: int) -> ShareVerdict | None:
        """share_verdict, in one cheap call while the answer is "ok" (kvcached_share_action_get:
        nobody else starved); the full verdict otherwise, and with a shim that lacks the call."""
        if self._share_action_get is None:
            return self.share_verdict(device)
        action = ctypes.c_int32(-1)
        if self._share_action_get(device, ctypes.byref(action)) != OK:
            return None
        if action.value == SHARE_OK:
            return _SHARE_OK
        return self.share_verdict(device)

    def share_report(self, device: int, given_bytes: int, preempted_requests: int) -> int:
        """Tells kvctl what the engine gave back / preempted for the policy (no-op without it)."""
        if self._share_report is None:
            return OK
        return int(self._share_report(device, int(given_bytes), int(preempted_requests)))

    def share_set_unit(self, device: int, unit_bytes: int) -> int:
        """Publishes the smallest amount the engine takes or gives on `device` (bytes, whole pages;
        0 = one page), so that its fair share is reachable in whole units. Returns the status;
        ERR_UNSUPPORTED when the shim predates kvcached_share_set_unit (shares are then whole pages)."""
        if self._share_set_unit is None:
            return ERR_UNSUPPORTED
        return int(self._share_set_unit(device, int(unit_bytes)))

    # ---- engine hook statistics (docs/metrics.md) ----
    def report_engine_steps(self, device: int, steps: int, hook_ns: int, c_calls: int) -> int:
        """Publishes the hook's cumulative totals on `device` (steps seen, ns spent in the hook, C API
        calls it made) for kvctl list/metrics; the last call wins, so pass running totals. Returns the
        status; ERR_UNSUPPORTED when the shim predates kvcached_report_engine_steps."""
        if self._report_engine_steps is None:
            return ERR_UNSUPPORTED
        return int(self._report_engine_steps(device, int(steps), int(hook_ns), int(c_calls)))

    def set_meminfo_mode(self, mode: int) -> int:
        """What cudaMemGetInfo reports in this process (MEMINFO_*); ERR_UNSUPPORTED on an older shim."""
        if self._set_meminfo_mode is None:
            return ERR_UNSUPPORTED
        return int(self._set_meminfo_mode(mode))


# ---------------------------------------------------------------------------------------------
# Finding the library


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _file_of_symbol(lib: ctypes.CDLL, symbol: str) -> str | None:
    """Absolute path of the object that defines `symbol` (dladdr, then /proc/self/maps)."""
    try:
        addr = ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
    except AttributeError:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        dladdr = libc.dladdr
        dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        dladdr.restype = ctypes.c_int
        info = _DlInfo()
        if dladdr(addr, ctypes.byref(info)) and info.dli_fname:
            name = os.fsdecode(info.dli_fname)
            if os.path.isfile(name):
                return os.path.abspath(name)
    except (OSError, AttributeError):
        pass
    try:  # dladdr may report a relative name; the kernel's map always has the real path
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) < 6:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if lo <= addr < hi:
                    return parts[5] if parts[5].startswith("/") else None
    except OSError:
        pass
    return None


_lock = threading.Lock()
_loaded: CApi | None = None
_load_failed = False


def load(explicit_path: str | None = None) -> CApi | None:
    """The shim's C API, or None when no shim is in this process and none was named.

    Order: an explicit path argument; the preloaded copy (found through the process's global
    symbol table); KVCACHED_SHIM_PATH; an LD_PRELOAD entry naming libkvcached_shim. The result is
    cached; failures are logged at debug level only (no shim is a normal situation).
    """
    global _loaded, _load_failed
    with _lock:
        if _loaded is not None and explicit_path is None:
            return _loaded
        if _load_failed and explicit_path is None:
            return None
        api = _load_uncached(explicit_path)
        if explicit_path is None:
            _loaded = api
            _load_failed = api is None
        return api


def _load_uncached(explicit_path: str | None) -> CApi | None:
    candidates: list[str | None] = []
    if explicit_path:
        candidates.append(explicit_path)
    else:
        candidates.append(None)  # the process's global scope: the preloaded shim
        env_path = os.environ.get("KVCACHED_SHIM_PATH", "").strip()
        if env_path:
            candidates.append(env_path)
        for entry in os.environ.get("LD_PRELOAD", "").replace(":", " ").split():
            if "kvcached" in os.path.basename(entry):
                candidates.append(entry)
    for candidate in candidates:
        try:
            lib = ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
        except OSError as error:
            logger.debug("kvcached shim not loadable from %s: %s", candidate, error)
            continue
        if not hasattr(lib, "kvcached_version"):
            continue
        path = _file_of_symbol(lib, "kvcached_version") if candidate is None else os.path.abspath(candidate)
        try:
            api = CApi(lib, path)
        except KVCachedError as error:
            logger.debug("kvcached shim at %s unusable: %s", path, error)
            continue
        logger.debug("kvcached shim %s (API %d) at %s", api.version(), api.api_version(), path)
        return api
    logger.debug("no kvcached shim in this process (not preloaded, KVCACHED_SHIM_PATH unset)")
    return None


def reset_for_tests() -> None:
    global _loaded, _load_failed
    with _lock:
        _loaded = None
        _load_failed = False
