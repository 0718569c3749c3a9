"""Tells the operator when an engine has not made a step for a long time because the budget refuses
the KV pages its waiting requests need (held by other engines, or more than this engine may hold)."""

from __future__ import annotations

import time

from ._log import important

STALL_WARN_S = 30.0


class StallWatch:
    def __init__(self, label: str, warn_after_s: float = STALL_WARN_S) -> None:
        self.label = label
        self.warn_after_s = warn_after_s
        self._since: float | None = None
        self._warned = 0.0

    def update(self, progressed: bool, refused: bool) -> None:
        """Once per step: `progressed` when the step ran, `refused` when the budget refused pages."""
        now = time.monotonic()
        if progressed or not refused:
            self._since = None
            return
        if self._since is None:
            self._since, self._warned = now, now
        elif now - self._warned >= self.warn_after_s:
            self._warned = now
            important(
                f"{self.label}: no step for {now - self._since:.0f} s: waiting requests need KV pages the "
                "budget refuses (held by other engines, or more than this engine may hold); see `kvctl list`"
            )


__all__ = ["StallWatch", "STALL_WARN_S"]
