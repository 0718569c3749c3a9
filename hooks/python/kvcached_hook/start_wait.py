"""Start-up backing that waits for the budget.

An engine cannot run before the pages it must always have (padding or null blocks) are backed. When
the budget is full because other engines hold it, each refused acquire asks them to give back their
reserve, so waiting a little usually succeeds. Only for start-up: at run time a refusal is answered
as "no free blocks now" instead.
"""

from __future__ import annotations

import time

from . import capi as C
from ._log import important

NOTE_EVERY_S = 10.0  # how often the operator hears that we are still waiting
RETRY_S = 0.05


def acquire_waiting(api, ranges, what: str, *, wait_s: float, engine: str) -> int:
    """Acquires `ranges`, retrying while the budget refuses, for up to `wait_s` seconds (the
    caller's KVCACHED_HOOK_START_WAIT_S). Returns the last status (C.OK on success)."""
    deadline = time.monotonic() + wait_s
    next_note = time.monotonic()
    while True:
        status = api.acquire(ranges)
        if status != C.ERR_NO_MEMORY or time.monotonic() >= deadline:
            return status
        if time.monotonic() >= next_note:
            left = deadline - time.monotonic()
            important(
                f"{engine}: waiting for KV memory for {what} (the budget is full: {api.last_error()}); "
                f"giving up in {left:.0f} s"
            )
            next_note = time.monotonic() + NOTE_EVERY_S
        time.sleep(RETRY_S)


__all__ = ["acquire_waiting"]
