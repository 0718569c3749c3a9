"""KVCACHED_SANITY_CHECK=1: verify, before every engine step, that the KV memory the engine uses is
really backed, and detect writes into unbacked memory.

Two checks:

1. Held blocks. Every block the engine holds (in a request's block table or in its prefix cache)
   must be outside the free list, its pages acquired by the hook, and the shim must report each of
   those pages IN_USE in every KV tensor. A violation names the block, its owner (request id and
   layer group), the tensor (K/V and layers) and the page address.

2. Stray writes (the canary). Every unbacked page of a lazy region is an alias of one shared page
   (the zero page, or a poison page if the shim uses one): with KVCACHED_SANITY_CHECK on, the shim
   aliases page by page instead of in multi-page chunks (KVCACHED_ZERO_CHUNK_MB). Its pristine content is recorded when
   the check is armed; before every step an unbacked page of the KV cache is read back through its
   alias and compared. A difference means some kernel wrote into unbacked memory since the last
   step; the report gives the offset inside the page (and which block slot / token row that is).
   Which layer or request did it cannot be known from a shared alias: the held-block check above
   is what catches an engine writing through a stale block. The page is then restored so the next
   step reports only new writes. When the shim exports kvcached_zero_page_check (proposed C API),
   it is used instead of reading through torch.
"""

from __future__ import annotations

import atexit
import logging
import threading

from . import capi as C
from ._log import important

_MAX_PRINTED = 20
_registry_lock = threading.Lock()
_all_checkers: list["SanityChecker"] = []
_atexit_registered = False


class SanityChecker:
    def __init__(self, tracker, api, name: str, device: int = 0, page_view=None) -> None:
        """page_view(span_index, addr, length) -> a torch uint8 tensor aliasing those bytes, or None
        when the canary cannot be used (no torch, CPU tests)."""
        self.tracker = tracker
        self.layout = tracker.layout
        self.api = api
        self.name = name
        self.device = device
        self.page_view = page_view
        self.checks = 0
        self.violations: list[str] = []
        self.violation_count = 0
        self.stray_writes = 0
        self.canary_reads = 0
        self._reference = None  # pristine content of the shared alias page (torch tensor)
        self._canary_note_given = False
        with _registry_lock:
            _all_checkers.append(self)
            _register_atexit()

    # ------------------------------------------------------------------ reporting
    def _violation(self, message: str) -> None:
        self.violation_count += 1
        if len(self.violations) < 1000:
            self.violations.append(message)
        if self.violation_count <= _MAX_PRINTED:
            important(f"sanity violation [{self.name}]: {message}", logging.ERROR)
        elif self.violation_count == _MAX_PRINTED + 1:
            important(f"sanity [{self.name}]: more violations; counting silently", logging.ERROR)

    def counts(self) -> dict:
        """The counters an adapter's snapshot carries (one set of names for every engine)."""
        return {
            "sanity_checks": self.checks,
            "sanity_violations": self.violation_count,
            "sanity_stray_writes": self.stray_writes,
        }

    def summary(self) -> str:
        return (
            f"kvcached sanity [{self.name}]: {self.checks} checks, {self.violation_count} violations "
            f"({self.stray_writes} stray writes, {self.canary_reads} canary reads)"
        )

    # ------------------------------------------------------------------ check 1: held blocks
    def check_held(self, held: dict[int, str]) -> int:
        """held: block -> owner description. Returns the number of new violations."""
        before = self.violation_count
        tracker, layout = self.tracker, self.layout
        unit_owner: dict[int, tuple[int, str]] = {}
        for block, owner in held.items():
            if not 0 <= block < tracker.managed:
                self._violation(f"block {block} ({owner}) is outside the cache's {tracker.managed} blocks")
                continue
            if tracker.is_free(block):
                self._violation(f"block {block} ({owner}) is held by the engine but free in the allocator")
            for unit in layout.block_units(block):
                unit_owner.setdefault(unit, (block, owner))
        for unit, (block, owner) in sorted(unit_owner.items()):
            if not tracker.acq[unit]:
                self._violation(f"block {block} ({owner}): {layout.describe_unit(unit)} not acquired by the hook")
            self._check_unit_in_use(unit, f"block {block} ({owner})")
        return self.violation_count - before

    def check_pinned(self, blocks) -> None:
        for block in blocks:
            for unit in self.layout.block_units(block):
                self._check_unit_in_use(unit, f"padding block {block}")

    def _check_unit_in_use(self, unit: int, who: str) -> None:
        for span_index, addr, _ in self.layout.unit_span_ranges(unit):
            try:
                state = self.api.page_state(addr)
            except C.KVCachedError as error:
                self._violation(f"{who}: page state of {addr:#x} unavailable: {error}")
                continue
            if state != C.PAGE_IN_USE:
                span = self.layout.spans[span_index]
                self._violation(
                    f"{who}: tensor {span.name or span_index} (layers {list(span.layers)}) page at {addr:#x} "
                    f"is {C.PAGE_STATE_NAMES.get(state, state)}, expected IN_USE"
                )

    # ------------------------------------------------------------------ check 2: stray writes
    def _unbacked_page(self, skip: set[int]) -> tuple[int, int, int, int] | None:
        """(unit, span index, addr, length) of a full-size page that is ZERO in the shim."""
        tracker, layout = self.tracker, self.layout
        for unit in range(layout.num_units):
            if unit in skip or tracker.acq[unit] or tracker.count[unit]:
                continue
            for span_index, addr, length in layout.unit_span_ranges(unit):
                if length != layout.page_size:
                    continue
                try:
                    if self.api.page_state(addr) == C.PAGE_ZERO:
                        return unit, span_index, addr, length
                except C.KVCachedError:
                    continue
        return None

    def arm(self, dirty_note: str | None = None) -> None:
        """Records the pristine content of the shared alias page. dirty_note: why the page may
        legitimately hold writes already (said at INFO instead of the warning)."""
        if self.page_view is None or self._reference is not None:
            return
        found = self._unbacked_page(set())
        if found is None:
            return
        view = self.page_view(found[1], found[2], found[3])
        if view is None:
            return
        self._reference = view.clone()
        if bool((self._reference != self._reference[0]).any()):
            important(
                f"sanity [{self.name}]: the page behind unbacked memory is not uniform when armed "
                f"({dirty_note or 'something wrote into unbacked memory before the check started'})",
                logging.INFO if dirty_note else logging.WARNING,
            )

    def check_stray_writes(self) -> int:
        before = self.violation_count
        native = getattr(self.api, "zero_page_check", None)
        if native is not None:
            result = native(self.device)
            if result is not None:
                clean, offset, nbytes = result
                self.canary_reads += 1
                if not clean:
                    self._report_stray(offset, nbytes, "kvcached_zero_page_check")
                return self.violation_count - before
        if self.page_view is None:
            return 0
        if self._reference is None:
            self.arm()
            if self._reference is None:
                if not self._canary_note_given:
                    self._canary_note_given = True
                    important(f"sanity [{self.name}]: no unbacked page to watch; stray-write check idle", logging.INFO)
                return 0
        first = self._read_alias(set())
        if first is None:
            return 0
        unit, span_index, addr, live, snapshot = first
        diff = snapshot != self._reference
        if not bool(diff.any()):
            return 0
        # Confirm through a second unbacked page: the alias is shared, so a real stray write shows
        # the same bytes there (a page mapped ahead between our state query and the read does not).
        second = self._read_alias({unit})
        if second is not None and not bool((second[4] == snapshot).all()):
            return 0  # inconclusive: the first page was remapped under us
        offsets = diff.nonzero()
        offset, nbytes = int(offsets[0].item()), int(offsets.numel())
        self._report_stray(offset, nbytes, f"read through tensor {self.layout.spans[span_index].name} at {addr:#x}")
        live.copy_(self._reference)  # restore the alias, so the next step reports only new writes
        return self.violation_count - before

    def _read_alias(self, skip: set[int]):
        """(unit, span index, addr, live view, snapshot) of an unbacked page read through its alias."""
        found = self._unbacked_page(skip)
        if found is None:
            return None
        unit, span_index, addr, length = found
        live = self.page_view(span_index, addr, length)
        if live is None:
            return None
        self.canary_reads += 1
        snapshot = live.clone()
        int(snapshot[0].item())  # wait for the read, so the state query below comes after it
        try:  # a page mapped ahead while we read is not the alias any more: skip this round
            if self.api.page_state(addr) != C.PAGE_ZERO:
                return None
        except C.KVCachedError:
            return None
        return unit, span_index, addr, live, snapshot

    def _report_stray(self, offset: int, nbytes: int, how: str) -> None:
        self.stray_writes += 1
        block_bytes = self.layout.block_bytes
        slot, inner = divmod(offset, block_bytes) if block_bytes else (0, offset)
        self._violation(
            f"stray write into unbacked KV memory: the shared unbacked page changed at page offset {offset} "
            f"({nbytes} bytes differ; block slot {slot} of the page, byte {inner} of that block; {how}). "
            "The writer used a block whose pages were not acquired."
        )


def all_checkers() -> list[SanityChecker]:
    with _registry_lock:
        return list(_all_checkers)


def _print_summaries() -> None:
    for checker in all_checkers():
        important(checker.summary(), logging.WARNING if checker.violation_count else logging.INFO)


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_print_summaries)
