"""Time the hook spends in each engine step (before and after scheduling), for the adapters'
snapshots: the overhead the operator pays per step, as a total and as p50/p99 per step."""

from __future__ import annotations

import time

from .tracker import percentile

KEEP_STEPS = 200_000  # per-step samples kept; the oldest half goes when full


class StepHookTiming:
    def __init__(self) -> None:
        self.total_ns = 0
        self.counted_ns = 0  # of the steps that ran (what kvctl's per-step figures divide)
        self.counted_steps = 0
        self.per_step_us: list[float] = []
        self._begin_ns = 0

    @staticmethod
    def now() -> int:
        return time.perf_counter_ns()

    def began(self, start_ns: int) -> None:
        """End of the hook's pre-step work that started at `start_ns`."""
        self._begin_ns = time.perf_counter_ns() - start_ns

    def finished(self, start_ns: int, counted: bool) -> None:
        """End of the hook's post-step work that started at `start_ns`; `counted`: the step ran (only
        those steps enter the per-step statistics; every step enters the total)."""
        spent = self._begin_ns + time.perf_counter_ns() - start_ns
        self.total_ns += spent
        if counted:
            self.counted_ns += spent
            self.counted_steps += 1
            if len(self.per_step_us) >= KEEP_STEPS:
                del self.per_step_us[: KEEP_STEPS // 2]
            self.per_step_us.append(spent / 1000.0)

    def snapshot(self) -> dict:
        return {
            "hook_time_s": self.total_ns / 1e9,
            "hook_us_per_step_p50": percentile(self.per_step_us, 50),
            "hook_us_per_step_p99": percentile(self.per_step_us, 99),
        }


__all__ = ["StepHookTiming"]
