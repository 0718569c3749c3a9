"""Adapter for vLLM 0.24.x-0.26.x (V1 engine, V1 and V2 model runners), one GPU per engine.

Triggered when a process imports vllm.v1.worker.gpu_worker: only processes that run a GPU worker
(vLLM's EngineCore with one GPU, or a worker process) are patched; the API server process never
imports it. What is patched and why: docs/vllm.md. Parts:
  worker.py          KV tensors as lazy shim regions, null block backed, layout check
  layout_check.py    "block b = bytes [b*P, (b+1)*P) of its raw tensor" on the actual views
  registry.py        worker -> scheduler hand-over inside the EngineCore process
  blocks.py          BlockPool <-> KVPageTracker, page-aware block choice, refusal
  steps.py           per-step acquire, fenced releases, pressure and idle trim
  share_policy.py    the sharing policy's verdicts: stop admitting, give cached, preempt
  scheduler_side.py  the scheduler-side wrappers
  observe.py         per-step costs to kvctl, KVCACHED_SANITY_CHECK (sanity_hook.py)
  tp.py              tensor parallel (experimental, KVCACHED_HOOK_VLLM_TP=1)
"""

from __future__ import annotations

import os
import sys

from ... import capi as C
from ..._log import logger
from ...patching import PatchSet, Target
from . import observe, registry, scheduler_side as S, worker as W

LOWEST, BELOW = "0.24", "0.27"

_V2 = "vllm.v1.worker.gpu.attn_utils"
_V2_RUNNER = "vllm.v1.worker.gpu.model_runner"
_V1_RUNNER = "vllm.v1.worker.gpu_model_runner"
_CONNECTOR = "vllm.v1.worker.kv_connector_model_runner_mixin"
_POOL = "vllm.v1.core.block_pool"
_QUEUE = "vllm.v1.core.kv_cache_utils"
_COORD = "vllm.v1.core.kv_cache_coordinator"
_MANAGER = "vllm.v1.core.kv_cache_manager"
_SCHED = "vllm.v1.core.sched.scheduler"

_v2_outer = W.wrap_outer(lambda a: a["vllm_config"], lambda a: a["device"], lambda r, a: r)
_v1_outer = W.wrap_outer(lambda a: a["self"].vllm_config, lambda a: a["self"].device, lambda r, a: r)


def _raw_dict(result):
    return list(result.values())


TARGETS = [
    # Worker side: V2 model runner (the reference bound in model_runner too: it imports the name).
    Target(_V2, "", "_allocate_kv_cache", ("kv_cache_config", "shared_layers", "device"),
           W.wrap_allocate("kv_cache_config", lambda a: a["device"], _raw_dict)),
    Target(_V2, "", "init_kv_cache", ("runner_kv_caches", "forward_context", "kv_cache_config", "attn_groups", "device"),
           _v2_outer),
    Target(_V2_RUNNER, "", "init_kv_cache", ("runner_kv_caches", "forward_context", "kv_cache_config"), _v2_outer),
    # V1 model runner, and its KV-connector allocation.
    Target(_V1_RUNNER, "GPUModelRunner", "_allocate_kv_cache_tensors", ("self", "kv_cache_config"),
           W.wrap_allocate("kv_cache_config", lambda a: a["self"].device, _raw_dict)),
    Target(_V1_RUNNER, "GPUModelRunner", "initialize_kv_cache_tensors", ("self", "kv_cache_config", "kernel_block_sizes"),
           _v1_outer),
    Target(_CONNECTOR, "KVConnectorModelRunnerMixin", "allocate_uniform_kv_caches",
           ("kv_cache_config", "attn_groups", "cache_dtype", "device"),
           W.wrap_allocate("kv_cache_config", lambda a: a["device"], lambda r: [r[1]])),
    # Scheduler side.
    Target(_POOL, "BlockPool", "__init__", ("self", "num_gpu_blocks", "enable_caching"), S.wrap_pool_init),
    Target(_POOL, "BlockPool", "get_new_blocks", ("self", "num_blocks"), S.wrap_get_new_blocks),
    Target(_POOL, "BlockPool", "free_blocks", ("self", "ordered_blocks"), S.wrap_free_blocks),
    Target(_POOL, "BlockPool", "touch", ("self", "blocks"), S.wrap_touch),
    Target(_POOL, "BlockPool", "evict_blocks", ("self", "block_ids"), S.wrap_evict_blocks),
    Target(_POOL, "BlockPool", "reset_prefix_cache", ("self",), S.wrap_reset_prefix_cache),
    Target(_POOL, "BlockPool", "get_num_free_blocks", ("self",)),  # shadowed per call (allocation.py)
    Target(_POOL, "BlockPool", "_maybe_evict_cached_block", ("self", "block")),
    Target(_QUEUE, "FreeKVCacheBlockQueue", "remove", ("self", "block")),
    Target(_QUEUE, "FreeKVCacheBlockQueue", "prepend_n", ("self", "blocks")),
    Target(_COORD, "KVCacheCoordinator", "get_num_blocks_to_allocate",
           ("self", "request_id", "num_tokens", "new_computed_blocks")),  # shadowed per call (allocation.py)
    # The fast path's bound reads these keyword arguments (allocation.py).
    Target(_MANAGER, "KVCacheManager", "allocate_slots",
           ("self", "request", "num_new_tokens", "num_new_computed_tokens", "new_computed_blocks", "num_lookahead_tokens",
            "num_external_computed_tokens", "delay_cache_blocks", "num_encoder_tokens"), S.wrap_allocate_slots),
    Target(_SCHED, "Scheduler", "schedule", ("self",), S.wrap_schedule),
    Target(_SCHED, "Scheduler", "update_from_output", ("self", "scheduler_output", "model_runner_output"),
           S.wrap_update_from_output),
    Target(_SCHED, "Scheduler", "has_requests", ("self",)),
    Target(_SCHED, "Scheduler", "shutdown", ("self",), observe.wrap_scheduler_shutdown),
    # The sharing policy preempts with vLLM's own mechanics (share_policy.py).
    Target(_SCHED, "Scheduler", "_preempt_request", ("self", "request", "timestamp")),
    # Tensor parallel (tp.py, opt-in): the scheduler's way to its workers, releases on each step.
    Target("vllm.v1.executor.abstract", "Executor", "__init__", ("self", "vllm_config"), S.wrap_executor_init),
    Target("vllm.v1.worker.gpu_worker", "Worker", "execute_model", ("self", "scheduler_output"), S.wrap_execute_model),
]


def _version() -> str:
    module = sys.modules.get("vllm")
    if module is None:
        import vllm as module  # noqa: PLC0415 - only when the trigger fired, vLLM is being imported
    return getattr(module, "__version__", "?")


PATCHES = PatchSet("vllm", TARGETS, version=_version, lowest=LOWEST, below=BELOW)


def patch(_module=None) -> bool:
    """Installs every wrapper, or none (another vLLM, a changed signature). Idempotent.

    Applying imports the target modules, and importing one of them may fire this adapter's import
    hook again (both trigger modules are targets): PatchSet.apply answers that nested call at once.
    A patched worker process then sees its own budget in cudaMemGetInfo."""
    patched = PATCHES.apply()
    if patched:
        use_process_meminfo()
    return patched


def use_process_meminfo() -> None:
    """vLLM sizes its cache from cudaMemGetInfo at start (refusing to start when free < total x
    gpu_memory_utilization) and asserts that free memory did not grow while it profiled. A view
    that neighbours' charges change can stop a second engine from starting or trip that assertion,
    so unless the operator chose (KVCACHED_VIRTUAL_MEMINFO is set) this process sees its own
    budget: total = its limit, free = total - what it allocated."""
    if os.environ.get("KVCACHED_VIRTUAL_MEMINFO", "").strip():
        return
    api = W.overrides["api"]
    if api is None and "kvcached" in os.environ.get("LD_PRELOAD", ""):
        api = C.load()
    if api is None:
        return
    status = api.set_meminfo_mode(C.MEMINFO_PROCESS)
    if status != C.OK:
        logger.debug("vllm: kvcached_set_meminfo_mode(PROCESS) -> %s", C.STATUS_NAMES.get(status, status))


def patch_tp(_module=None) -> bool:
    """The EngineCore process of a tensor-parallel engine imports the multiprocess executor but not
    the GPU worker: patch it there too, only when tensor parallel is switched on (tp.py)."""
    from . import tp

    return patch() if tp.enabled() else False


def unpatch() -> None:
    """Restores vLLM's originals (tests)."""
    PATCHES.revert()


def adapters() -> list:
    """Live scheduler-side adapters in this process."""
    from .blocks import LIVE

    return list(LIVE)


__all__ = ["patch", "patch_tp", "unpatch", "adapters", "PATCHES", "TARGETS", "registry", "LOWEST", "BELOW"]
