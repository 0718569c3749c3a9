"""A fake of the shim's C API (kvcached_hook.capi.CApi surface) for CPU tests.

Pages are identified by absolute page number (address // page_size): every fake region starts on
a page boundary, so two tensors that share a page share it here too, as they would in one real
region. Page reference counts follow the C API's contract: every acquired range counts once on
each page it touches; release undoes it; acquire is all or nothing against a page budget that
several FakeCApi objects (several "processes") may share.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "hooks", "python"))

from kvcached_hook import capi as C  # noqa: E402


class SharedBudget:
    """The per-GPU budget, in pages, shared by fake processes."""

    def __init__(self, pages: int | None) -> None:
        self.pages = pages
        self.used = 0

    def take(self, n: int) -> bool:
        if self.pages is not None and self.used + n > self.pages:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n
        assert self.used >= 0


class FakeCApi:
    has_torch_allocator = False
    path = None

    def __init__(self, page_size: int = 2 << 20, budget: SharedBudget | None = None) -> None:
        self.page_size = page_size
        self.budget = budget if budget is not None else SharedBudget(None)
        self.refs: dict[int, int] = {}
        self.peak_pages = 0
        self.acquire_calls = 0
        self.release_calls = 0
        self.ranges_acquired = 0
        self.refusals = 0
        self.release_errors = 0
        self.label = ""
        self.meminfo_mode: int | None = None  # set by set_meminfo_mode
        self.fail_next: list[int] = []  # statuses to return from the next acquire calls
        self.headroom_supported = True
        self.headroom_calls = 0
        self._error = ""

    # ---- helpers for tests ----
    def pages_of(self, addr: int, length: int) -> range:
        return range(addr // self.page_size, (addr + length - 1) // self.page_size + 1)

    def in_use_pages(self) -> set[int]:
        return {p for p, n in self.refs.items() if n > 0}

    def backed(self, addr: int, length: int = 1) -> bool:
        return all(self.refs.get(p, 0) > 0 for p in self.pages_of(addr, length))

    # ---- the CApi surface ----
    def version(self) -> str:
        return "fake"

    def api_version(self) -> int:
        return 1

    def enabled(self) -> bool:
        return True

    def last_error(self) -> str:
        return self._error

    def status_string(self, status: int) -> str:
        return C.STATUS_NAMES.get(status, str(status))

    def region_info(self, addr: int):
        base = addr - addr % self.page_size
        size = 1 << 40
        return C.RegionInfo(base, size, self.page_size, size // self.page_size, 0, 0, 0, 0, C.REGION_LAZY)

    def acquire(self, ranges) -> int:
        self.acquire_calls += 1
        if self.fail_next:
            status = self.fail_next.pop(0)
            self._error = f"injected {C.STATUS_NAMES.get(status)}"
            if status == C.ERR_NO_MEMORY:
                self.refusals += 1
            return status
        pages: list[int] = []
        for addr, length in ranges:
            if length <= 0:
                self._error = "empty range"
                return C.ERR_INVALID
            pages.extend(self.pages_of(addr, length))
        new = len({p for p in pages if self.refs.get(p, 0) == 0})
        if not self.budget.take(new):
            self.refusals += 1
            self._error = "budget exhausted"
            return C.ERR_NO_MEMORY
        for page in pages:
            self.refs[page] = self.refs.get(page, 0) + 1
        self.ranges_acquired += len(ranges)
        self.peak_pages = max(self.peak_pages, len(self.in_use_pages()))
        return C.OK

    def release(self, ranges) -> int:
        self.release_calls += 1
        pages: list[int] = []
        for addr, length in ranges:
            pages.extend(self.pages_of(addr, length))
        need: dict[int, int] = {}
        for page in pages:
            need[page] = need.get(page, 0) + 1
        for page, n in need.items():
            if self.refs.get(page, 0) < n:
                self.release_errors += 1
                self._error = f"release of page {page} that is not acquired"
                return C.ERR_STATE
        freed = 0
        for page in pages:
            self.refs[page] -= 1
            if self.refs[page] == 0:
                del self.refs[page]
                freed += 1
        self.budget.give(freed)
        return C.OK

    def page_state(self, addr: int) -> int:
        return C.PAGE_IN_USE if self.refs.get(addr // self.page_size, 0) > 0 else C.PAGE_ZERO

    def stats(self, device: int) -> dict:
        return {"in_use_bytes": len(self.in_use_pages()) * self.page_size, "page_size": self.page_size}

    def budget_headroom(self, device: int) -> int | None:
        """The shared budget's room in bytes (a large number when unlimited); None while
        `headroom_supported` is False (a shim without kvcached_budget_headroom_get)."""
        self.headroom_calls += 1
        if not self.headroom_supported:
            return None
        if self.budget.pages is None:
            return 1 << 50
        return max(0, self.budget.pages - self.budget.used) * self.page_size

    def trim(self, device: int) -> int:
        return C.OK

    def set_label(self, label: str) -> int:
        self.label = label
        return C.OK

    def set_meminfo_mode(self, mode: int) -> int:
        if mode not in (C.MEMINFO_REAL, C.MEMINFO_PROCESS, C.MEMINFO_SHARED):
            self._error = f"kvcached_set_meminfo_mode: unknown mode {mode}"
            return C.ERR_INVALID
        self.meminfo_mode = mode
        return C.OK

    def kv_window_begin(self) -> int:
        return C.OK

    def kv_window_end(self) -> int:
        return C.OK

    # ---- sharing (docs/sharing.md): tests set `share_next` to the verdict the policy would give ----
    def share_verdict(self, device: int):
        verdict = getattr(self, "share_next", None)
        return verdict if verdict is not None else C.ShareVerdict(action="ok")

    def share_report(self, device: int, given_bytes: int, preempted_requests: int) -> int:
        self.share_given = getattr(self, "share_given", 0) + given_bytes
        self.share_preempted = getattr(self, "share_preempted", 0) + preempted_requests
        return C.OK

    def share_set_unit(self, device: int, unit_bytes: int) -> int:
        self.share_units = getattr(self, "share_units", [])
        self.share_units.append((device, unit_bytes))
        return C.OK


    # ---- per-step costs for kvctl (kvcached_report_engine_steps): every call is kept ----
    def report_engine_steps(self, device: int, steps: int, hook_ns: int, c_calls: int) -> int:
        self.step_reports = getattr(self, "step_reports", [])
        self.step_reports.append((device, steps, hook_ns, c_calls))
        return C.OK
