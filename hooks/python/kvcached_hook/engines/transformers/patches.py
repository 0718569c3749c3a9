"""What the transformers adapter patches, and when.

The continuous-batching module is imported by far more than continuous batching: every import of
transformers.modeling_utils (PreTrainedModel) pulls it in through integrations/eager_paged.py, and
vLLM imports PreTrainedModel in its own processes. So importing the module only *arms* the
adapter: one small wrapper on PagedAttentionCache.__init__, installed when the full patch set
matches this transformers. The first PagedAttentionCache built in the process -- continuous
batching really running -- disarms it and installs the whole set. Processes that never build one
keep transformers exactly as it was, and never hear from this adapter above debug level. A process
that imported vLLM is not armed at all: vLLM is the engine running there (its own adapter decides),
and only the running engine is touched.

`patch()` installs the whole set at once (explicit use, tests); `unpatch()` removes everything.
"""

from __future__ import annotations

import sys
import threading

from ..._log import logger
from ...patching import PatchSet, Target
from . import wrappers as W
from .names import API_MODULE, CACHE_MODULE, ENGINE, MANAGER_MODULE, MODULE, REQUESTS_MODULE

LOWEST, BELOW = "5.0", "6"  # transformers 5.x (read against 5.17)


def transformers_version() -> str:
    return getattr(sys.modules.get("transformers"), "__version__", "?")


_CACHE = "PagedAttentionCache"
TARGETS = [
    Target(CACHE_MODULE, _CACHE, "__init__", ("self", "config", "continuous_batching_config", "device"), W.wrap_cache_init),
    Target(CACHE_MODULE, _CACHE, "allocate_blocks", ("self", "n_blocks", "request_id", "allocated_blocks"),
           W.wrap_allocate_blocks),
    Target(CACHE_MODULE, _CACHE, "get_num_free_blocks", ("self",), W.wrap_get_num_free_blocks),
    Target(CACHE_MODULE, _CACHE, "blocks_needed", ("self", "num_requested_blocks", "allocated_blocks")),
    Target(CACHE_MODULE, _CACHE, "will_allocation_be_successful", ("self",)),
    Target(CACHE_MODULE, _CACHE, "compute_max_num_forks", ("self", "source_request_id"), W.wrap_compute_max_num_forks),
    Target(MANAGER_MODULE, "BlockManager", "get_free_blocks",
           ("self", "n_blocks", "last_block_id", "shareable", "group_id"), W.wrap_get_free_blocks),
    Target(MANAGER_MODULE, "BlockManager", "has_enough_free_blocks", ("self", "n_blocks")),
    Target(API_MODULE, "ContinuousBatchProcessor", "prepare_next_batch", ("self",), W.wrap_prepare_next_batch),
    Target(REQUESTS_MODULE, "", "RequestStatus"),  # demand prediction reads RequestStatus.DECODING
]

PATCHES = PatchSet(ENGINE, TARGETS, version=transformers_version, lowest=LOWEST, below=BELOW)


def _wrap_arming_init(orig):
    def __init__(self, *args, **kwargs):
        activate()
        # The class's __init__ now: the full wrapper, or the original when activation refused.
        init = sys.modules[CACHE_MODULE].PagedAttentionCache.__dict__.get("__init__", orig)
        return (orig if getattr(init, "_kvcached_arming", False) else init)(self, *args, **kwargs)

    __init__._kvcached_arming = True
    return __init__


# Only needs an __init__ of its own to wrap: versions and signatures are PATCHES' business.
ARMING = PatchSet(f"{ENGINE} (armed)", [Target(CACHE_MODULE, _CACHE, "__init__", (), _wrap_arming_init)],
                  version=transformers_version)
_lock = threading.RLock()


def arm(_module=None) -> bool:
    """Called when the continuous-batching module is imported: installs the trigger on
    PagedAttentionCache.__init__. When the patch set does not match this transformers, it says so
    at debug level only (this process may not run continuous batching at all); the trigger then
    makes the refusal heard once a cache is really built. True when armed with a matching set."""
    with _lock:
        if PATCHES.applied or ARMING.applied:
            return True
        if "vllm" in sys.modules:  # vLLM imports PreTrainedModel, hence this module, in its processes
            logger.debug("%s: not armed in a vLLM process (vLLM's adapter manages its KV cache)", ENGINE)
            return False
        try:
            problems = PATCHES.problems()
        except Exception as error:  # noqa: BLE001 - a hook must never break the host's import
            problems = [f"its modules cannot be read ({error})"]
        if problems:
            logger.debug(
                "%s: transformers %s continuous batching is not the layout this hook knows (%s); elastic KV cache "
                "disabled",
                ENGINE,
                transformers_version(),
                "; ".join(problems),
            )
        if ARMING.problems() or not ARMING.apply():  # no __init__ of its own: nothing to trigger on
            return False
        logger.debug("%s: armed (patched at the first PagedAttentionCache)", ENGINE)
        return not problems


def activate() -> bool:
    """Continuous batching is running: replace the trigger with the whole patch set."""
    with _lock:
        if ARMING.applied:
            ARMING.revert()
        return PATCHES.apply()


def patch(_module=None) -> bool:
    """Installs the whole patch set now (idempotent). False when this transformers is not one the
    adapter knows (said once)."""
    return activate()


def unpatch() -> None:
    """Restores the original methods (tests, kvcached_hook.disable())."""
    with _lock:
        PATCHES.revert()
        ARMING.revert()


def is_armed() -> bool:
    return ARMING.applied


def is_patched() -> bool:
    return PATCHES.applied


__all__ = ["arm", "activate", "patch", "unpatch", "is_armed", "is_patched", "PATCHES", "TARGETS", "MODULE"]
