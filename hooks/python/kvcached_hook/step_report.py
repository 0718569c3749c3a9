"""Publishes an engine's cumulative step costs to the shim (kvcached_report_engine_steps), so that
`kvctl list --json` (engine_steps, engine_hook_ns, engine_hook_c_calls) and `kvctl metrics` show
the hook's time and C calls per step from outside the engine process.

The values are cumulative totals for this process and device (last value wins), so a lost or
skipped report costs nothing but freshness. Reports are rate-limited (at most one per `period_s`,
never one per step); an idle engine sends its last totals once; a shim without the call (or a
test fake) makes this a no-op after the first try.
"""

from __future__ import annotations

import time

from . import capi as C
from ._log import logger

DEFAULT_PERIOD_S = 0.5


class StepReporter:
    def __init__(self, api, device: int, period_s: float = DEFAULT_PERIOD_S, clock=time.monotonic) -> None:
        call = getattr(api, "report_engine_steps", None)
        self._call = call if callable(call) else None
        self.device = device
        self.period_s = period_s
        self.clock = clock
        self.reports = 0  # calls the shim accepted
        self.failures = 0
        self._last_t: float | None = None
        self._last: tuple[int, int, int] | None = None
        self._said: set[int] = set()

    @property
    def active(self) -> bool:
        return self._call is not None

    def step(self, steps: int, hook_ns: int, c_calls: int, now: float | None = None) -> bool:
        """After a step: reports the totals when `period_s` has passed since the last report."""
        if self._call is None:
            return False
        now = self.clock() if now is None else now
        if self._last_t is not None and now - self._last_t < self.period_s:
            return False
        return self._send((steps, hook_ns, c_calls), now)

    def flush(self, steps: int, hook_ns: int, c_calls: int, now: float | None = None, force: bool = False) -> bool:
        """Idle (force=False: still at most one report per `period_s`) or shutdown (force=True):
        reports the totals if they changed since the last report."""
        if self._call is None or (steps, hook_ns, c_calls) == self._last:
            return False
        now = self.clock() if now is None else now
        if not force and self._last_t is not None and now - self._last_t < self.period_s:
            return False
        return self._send((steps, hook_ns, c_calls), now)

    def _send(self, totals: tuple[int, int, int], now: float) -> bool:
        self._last_t = now
        try:
            status = self._call(self.device, *totals)
        except Exception as error:  # noqa: BLE001 - statistics must never disturb the engine
            logger.debug("kvcached_report_engine_steps raised %s", error)
            status = C.ERR_INTERNAL
        if status == C.OK:
            self._last = totals
            self.reports += 1
            return True
        if status == C.ERR_UNSUPPORTED:
            self._call = None  # an older shim: kvctl cannot show per-step costs; stop asking
            logger.debug("the shim has no kvcached_report_engine_steps: per-step costs stay in-process")
            return False
        self.failures += 1
        if status not in self._said:
            self._said.add(status)
            logger.debug("kvcached_report_engine_steps -> %s (reported once)", C.STATUS_NAMES.get(status, status))
        return False


__all__ = ["StepReporter", "DEFAULT_PERIOD_S"]
