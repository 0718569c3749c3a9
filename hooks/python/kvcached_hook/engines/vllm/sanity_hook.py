"""KVCACHED_SANITY_CHECK=1 under vLLM: the checks of sanity.py, run on the scheduler side after each
schedule() (so before the GPU runs the step it scheduled), every KVCACHED_HOOK_SANITY_EVERY steps.

Held blocks are read from vLLM's own structures, not from the adapter's tracker (a tracker bug must
not hide itself): every block in a request's block table (each KV cache group's
`req_to_blocks`) and every block of the prefix cache (`cached_block_hash_to_block`). vLLM's null
block (block 0, backed for good at allocation) is checked as a pinned block.

With one GPU the scheduler and the worker share the EngineCore process: the shim's page states are
checked for every held page of every KV tensor, and on a GPU the stray-write canary reads an
unbacked page through a torch view of the worker's KV tensor. With tensor parallelism (tp.py) the
scheduler process owns no KV tensor: it checks that every held block is outside the free list and
that its pages were acquired (on every rank: acquires are all or nothing); page states and the
canary are not checked there.

The EngineCore process may end by a signal, so the summary line is not left to atexit only: it is
logged every SUMMARY_EVERY checks, once when the engine goes idle after checks, and at
Scheduler.shutdown; each of the first violations is logged at once, with its detail.
"""

from __future__ import annotations

import logging

from ..._env import get_int
from ..._log import important
from ...sanity import SanityChecker
from . import tp

EVERY_ENV = "KVCACHED_HOOK_SANITY_EVERY"
SUMMARY_EVERY = 1000  # checks between two summary lines
NULL_BLOCK = 0
_WARMUP_NOTE = (
    "vLLM's warm-up runs before its scheduler exists and writes into unbacked memory; the canary "
    "watches for changes from now on"
)


class VllmSanity(SanityChecker):
    def __init__(self, adapter, scheduler) -> None:
        entry = adapter.entry
        self.remote = isinstance(adapter.api, tp.RemoteApi)
        by_addr = {}
        for tensor in entry.tensors:
            try:
                by_addr[tensor.untyped_storage().data_ptr()] = tensor
            except Exception:  # noqa: BLE001 - not a torch tensor (tests): no canary
                continue
        self._tensors = by_addr
        on_gpu = any(getattr(t.device, "type", "") == "cuda" for t in by_addr.values())
        super().__init__(
            adapter.tracker,
            adapter.api,
            adapter.label,
            entry.device_index,
            self._page_view if on_gpu and not self.remote else None,
        )
        self.adapter = adapter
        self.every = get_int(EVERY_ENV, 1, 1, 1_000_000)
        self.steps_seen = 0
        self._summarised_at = 0
        self.summaries = 0
        self.failures = 0
        if self.remote:
            important(
                f"sanity [{self.name}]: tensor parallel: this process checks that held blocks are outside the "
                "free list and that their pages were acquired on every rank; the shim's page states and the "
                "stray-write canary live in the worker processes and are not checked",
                logging.INFO,
            )
        self.arm()

    # ------------------------------------------------------------------ vLLM's view
    def held_from_vllm(self, scheduler) -> dict[int, str]:
        """block -> owner, from the request block tables and the prefix cache (the null block
        excluded: it is checked as pinned)."""
        held: dict[int, str] = {}
        managers = scheduler.kv_cache_manager.coordinator.single_type_managers
        for group, manager in enumerate(managers):
            for request_id, blocks in list(manager.req_to_blocks.items()):
                for block in list(blocks):
                    if block.block_id != NULL_BLOCK:
                        held.setdefault(block.block_id, f"request {request_id}, group {group}")
        pool = self.adapter.pool
        table = getattr(getattr(pool, "cached_block_hash_to_block", None), "_cache", None)
        if table is not None:
            for value in list(table.values()):
                for block in (list(value.values()) if isinstance(value, dict) else (value,)):
                    if block.block_id != NULL_BLOCK:
                        held.setdefault(block.block_id, "prefix cache")
        else:  # another layout of vLLM's hash map: every block that has a hash is cached
            for block in pool.blocks:
                if block.block_hash is not None and not block.is_null:
                    held.setdefault(block.block_id, "prefix cache")
        return held

    def _page_view(self, span_index: int, addr: int, length: int):
        import torch

        span = self.layout.spans[span_index]
        tensor = self._tensors.get(span.addr)
        if tensor is None or tensor.device.type != "cuda" or not tensor.is_contiguous():
            return None
        offset = addr - span.addr
        return tensor.view(-1).view(torch.uint8)[offset : offset + length]

    def _check_unit_in_use(self, unit: int, who: str) -> None:
        if self.remote:
            return  # the addresses are the scheduler's synthetic layout: no page of this process
        super()._check_unit_in_use(unit, who)

    def arm(self) -> None:
        if self.page_view is None or self._reference is not None:
            return
        super().arm(dirty_note=_WARMUP_NOTE)

    # ------------------------------------------------------------------ per step
    def after_schedule(self, scheduler) -> None:
        """One check every `every` steps; never raises into vLLM."""
        self.steps_seen += 1
        if (self.steps_seen - 1) % self.every:
            return
        try:
            self.checks += 1
            self.check_held(self.held_from_vllm(scheduler))
            self.check_pinned([NULL_BLOCK])
            if not self.remote:
                self.check_stray_writes()
        except Exception as error:  # noqa: BLE001 - a diagnostic must not stop the engine
            self.failures += 1
            if self.failures <= 3:
                important(f"sanity [{self.name}]: the check itself failed: {error!r}", logging.ERROR)
        if self.checks % SUMMARY_EVERY == 0:
            self.log_summary("periodic")

    def log_summary(self, when: str) -> None:
        """One summary line (same form as at exit), if checks ran since the last one."""
        if self.checks == self._summarised_at and when != "shutdown":
            return
        self._summarised_at = self.checks
        self.summaries += 1
        important(f"{self.summary()}; {when}", logging.WARNING if self.violation_count else logging.INFO)


__all__ = ["VllmSanity", "EVERY_ENV", "SUMMARY_EVERY"]
