"""Tensor parallel (experimental, opt-in: KVCACHED_HOOK_VLLM_TP=1): one scheduler, N worker processes.

With TP > 1 vLLM runs its workers in other processes (MultiprocExecutor) and every rank keeps the
same block numbering over its own shard of the KV heads: the same tensor sizes, the same bytes per
block, hence the same block -> page map. So the scheduler process runs the one page tracker, over
a *synthetic* layout (tensor i lives at SPAN_STRIDE * (i + 1) + its phase in the page grid), and a
`RemoteApi` stands in for the C API:

- acquire: one `collective_rpc` to every rank, which translates the synthetic ranges to its own
  tensors and calls its shim; all or nothing: when any rank refuses, the ranks that succeeded give
  the same ranges back and the tracker sees the refusal (fewer free blocks, never an exception);
- release: the ranges ride on the next SchedulerOutput (`kvcached_release`, pickled to every
  worker with it) and are applied by Worker.execute_model before the step runs; the tracker's
  fence already guarantees that no step that used those pages is still running. Releases decided
  while the engine is idle go out by collective_rpc.

Each worker's cache stays lazy only once the scheduler has described it (`describe`); a worker
asked to run a step before that backs its whole cache (correct, not elastic) and says so.
"""

from __future__ import annotations

from ... import capi as C
from ..._env import get_bool
from . import registry

SPAN_STRIDE = 1 << 48
ENV = "KVCACHED_HOOK_VLLM_TP"


def enabled() -> bool:
    return get_bool(ENV, False)


# ---------------------------------------------------------------------------------------------
# Worker side: called in each worker process through collective_rpc(function)


def _local_entry(worker):
    entry = getattr(worker, "kvcached_entry", None)  # tests: each fake worker carries its own
    if entry is not None:
        return entry
    entries = [c for c in registry.caches() if c.managed]
    return entries[0] if len(entries) == 1 else None


def describe(worker):
    """The rank's cache in the form the scheduler checks (None: not elastic on this rank)."""
    entry = _local_entry(worker)
    if entry is None:
        return None
    from .worker import pin_null_block

    entry.claimed = True
    pin_null_block(entry)  # the scheduler takes the cache now: start-up is over on this rank
    layout = entry.layout
    return {
        "num_blocks": entry.num_blocks,
        "page_size": layout.page_size,
        "spans": [(s.nbytes, bb, (s.addr - s.region_base) % layout.page_size)
                  for s, bb in zip(layout.spans, layout.span_block_bytes)],
        "pinned_units": list(entry.pinned_units),
        "label": entry.label,
    }


def _translate(entry, ranges):
    spans = entry.layout.spans
    out = []
    for addr, length in ranges:
        index, rest = divmod(addr, SPAN_STRIDE)
        span = spans[index - 1]
        offset = rest - (span.addr - span.region_base) % entry.layout.page_size
        out.append((span.addr + offset, length))
    return out


def acquire(worker, ranges):
    entry = _local_entry(worker)
    return C.ERR_STATE if entry is None else entry.api.acquire(_translate(entry, ranges))


def release(worker, ranges, only_ranks=None):
    entry = _local_entry(worker)
    if entry is None:
        return C.ERR_STATE
    if only_ranks is not None and _rank(worker) not in only_ranks:
        return C.OK
    return entry.api.release(_translate(entry, ranges))


def back_fully(worker, why):
    from .worker import _back_fully

    entry = _local_entry(worker)
    if entry is not None and entry.managed:
        _back_fully(entry, why)
    return True


def _rank(worker) -> int:
    return int(getattr(worker, "rank", 0) or 0)


def before_execute(worker, scheduler_output) -> None:
    """Worker.execute_model: apply releases riding on the step; guard a cache nobody drives."""
    entry = _local_entry(worker)
    if entry is None or not getattr(entry, "remote", False):
        return
    ranges = getattr(scheduler_output, "kvcached_release", None)
    if ranges:
        entry.api.release(_translate(entry, ranges))
    if entry.managed and not entry.claimed and getattr(scheduler_output, "total_num_scheduled_tokens", 0) > 0:
        back_fully(worker, "no scheduler drives this worker's pages")


# ---------------------------------------------------------------------------------------------
# Scheduler side


class RemoteApi:
    """The C API surface the tracker uses, answered by every rank together."""

    def __init__(self, executor, local) -> None:
        self.executor = executor
        self.local = local  # this process's shim (pressure, labels), may be None
        self.pending: list | None = None  # releases collected while a step is being scheduled
        self._error = ""
        self.rpc_calls = 0

    def _rpc(self, fn, *args):
        self.rpc_calls += 1
        return self.executor.collective_rpc(fn, args=args)

    def acquire(self, ranges) -> int:
        statuses = list(self._rpc(acquire, list(ranges)))
        if all(s == C.OK for s in statuses):
            return C.OK
        ok = [rank for rank, s in enumerate(statuses) if s == C.OK]
        if ok:
            self._rpc(release, list(ranges), ok)  # all or nothing across ranks
        bad = next(s for s in statuses if s != C.OK)
        self._error = f"rank {statuses.index(bad)} answered {C.STATUS_NAMES.get(bad, bad)}"
        return C.ERR_NO_MEMORY if C.ERR_NO_MEMORY in statuses else bad

    def release(self, ranges) -> int:
        if self.pending is not None:
            self.pending.extend(ranges)
            return C.OK
        statuses = list(self._rpc(release, list(ranges)))
        return next((s for s in statuses if s != C.OK), C.OK)

    def last_error(self) -> str:
        return self._error

    def set_label(self, label: str) -> int:
        return self.local.set_label(label) if self.local is not None else C.OK

    def __getattr__(self, name):  # pressure, stats ...: this process's shim, when there is one
        local = self.__dict__.get("local")
        if local is None:
            raise AttributeError(name)
        return getattr(local, name)


def remote_cache(executor, num_blocks: int, local_api):
    """A WorkerCache over every rank's KV cache, or None (then every rank backs fully)."""
    from ...pages import KVLayout, TensorSpan

    described = list(executor.collective_rpc(describe))
    first = described[0] if described else None
    problem = None
    if first is None or any(d is None for d in described):
        problem = "a rank's KV cache is not lazy"
    elif any((d["num_blocks"], d["page_size"], d["spans"]) != (first["num_blocks"], first["page_size"], first["spans"])
             for d in described):
        problem = "the ranks' KV layouts differ"
    elif first["num_blocks"] != num_blocks:
        problem = f"the workers hold {first['num_blocks']} blocks, the scheduler {num_blocks}"
    if problem is not None:
        executor.collective_rpc(back_fully, args=(f"tensor parallel: {problem}",))
        return None
    spans = [
        TensorSpan(SPAN_STRIDE * (i + 1) + phase, nbytes, SPAN_STRIDE * (i + 1), name=f"kv[{i}]", block_bytes=bb)
        for i, (nbytes, bb, phase) in enumerate(first["spans"])
    ]
    layout = KVLayout(spans, spans[0].block_bytes, num_blocks, first["page_size"])
    return registry.WorkerCache(
        api=RemoteApi(executor, local_api),
        layout=layout,
        num_blocks=num_blocks,
        device_index=0,
        label=first["label"],
        pinned_units=list(first["pinned_units"]),
        pinned=True,  # every rank pinned its null block in describe()
        claimed=True,
    )
