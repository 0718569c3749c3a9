"""What an operator can see of the vLLM adapter from outside the EngineCore process:

- per-step costs: the hook's cumulative steps, time and C calls go to the shim
  (kvcached_report_engine_steps, rate-limited: step_report.py), shown by `kvctl list --json` and
  `kvctl metrics`;
- KVCACHED_SANITY_CHECK=1: the checks of sanity_hook.py after every schedule(), with summary lines
  in the log (periodic, at idle, at shutdown);
- where the hook's time per step goes (StepHooks.cost_line): at shutdown, and at each idle after
  new steps at INFO only (KVCACHED_LOG_LEVEL=info), since `vllm serve` stopped by a signal may
  kill the EngineCore before its scheduler's shutdown runs.

Attached to a StepHooks when the scheduler makes its first step.

C calls counted: the hook's acquire and release calls (the ones that can map or unmap pages),
wherever they are made (before schedule(), inside it, from the idle thread). Not counted: the
O(1) reads of the shim's state each step (pressure), the sanity check's page-state queries, and
the report itself.
"""

from __future__ import annotations

import logging

from ..._env import HookSettings
from ..._log import important, logger
from ...step_report import StepReporter


class Observer:
    def __init__(self, hooks, scheduler, settings: HookSettings | None = None) -> None:
        self.hooks = hooks
        adapter = hooks.adapter
        self.tracker = adapter.tracker
        self.reporter = StepReporter(adapter.api, adapter.entry.device_index)
        self.sanity = None
        if (settings or adapter.settings).sanity_check:
            from .sanity_hook import VllmSanity

            try:
                self.sanity = VllmSanity(adapter, scheduler)
            except Exception as error:  # noqa: BLE001 - the engine runs on, unchecked, and says so
                important(f"sanity [{adapter.label}]: could not be set up ({error!r}); not checking", logging.ERROR)
        self.cost_logged_steps = 0  # steps covered by the last cost line logged at idle
        hooks.on_step.append(self.on_step)
        hooks.on_idle.append(self.on_idle)

    def totals(self) -> tuple[int, int, int]:
        tracker = self.tracker
        return self.hooks.steps, self.hooks.hook_ns_total, tracker.acquire_calls + tracker.release_calls

    def on_step(self, _adapter, _output) -> None:
        if self.sanity is not None:
            scheduler = self.hooks.scheduler()
            if scheduler is not None:
                self.sanity.after_schedule(scheduler)
        self.reporter.step(*self.totals())

    def on_idle(self, _adapter) -> None:
        self.reporter.flush(*self.totals())
        if self.hooks.steps != self.cost_logged_steps:
            self.cost_logged_steps = self.hooks.steps
            logger.info(f"vllm [{self.hooks.adapter.label}]: {self.hooks.cost_line()}")
        if self.sanity is not None:
            self.sanity.log_summary("idle")

    def shutdown(self) -> None:
        self.reporter.flush(*self.totals(), force=True)
        if self.hooks.steps:
            important(f"vllm [{self.hooks.adapter.label}]: {self.hooks.cost_line()}", logging.INFO)
        if self.sanity is not None:
            self.sanity.log_summary("shutdown")

    def snapshot(self) -> dict:
        data = {"step_reports": self.reporter.reports}
        if self.sanity is not None:
            data.update(self.sanity.counts())
        return data


def attach(hooks, scheduler) -> Observer | None:
    """Never raises: observation must not stop the engine."""
    try:
        observer = Observer(hooks, scheduler)
    except Exception as error:  # noqa: BLE001
        important(f"vllm: per-step reporting not set up ({error!r})", logging.ERROR)
        return None
    hooks.observer = observer
    return observer


def wrap_scheduler_shutdown(orig):
    """Scheduler.shutdown: the last step totals and the sanity summary, before vLLM tears down (the
    process may be killed soon after, so atexit may never run)."""

    def shutdown(self, *args, **kwargs):
        hooks = getattr(self, "_kvcached_steps", None)  # not __dict__ (scheduler_side.py)
        observer = getattr(hooks, "observer", None) if hooks is not None else None
        if observer is not None:
            try:
                with hooks.adapter.lock:
                    observer.shutdown()
            except Exception as error:  # noqa: BLE001
                important(f"vllm: final report failed ({error!r})", logging.ERROR)
        return orig(self, *args, **kwargs)

    return shutdown


__all__ = ["Observer", "attach", "wrap_scheduler_shutdown"]
