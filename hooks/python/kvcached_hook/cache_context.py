"""Whether an engine's KV cache is to be managed, and with what (the C API, the settings, the device).

Every engine adapter asks the same questions before it lets its engine allocate the KV cache:
is the hook on (ENABLE_KVCACHED), is the shim in this process, is the cache on a CUDA device the
shim runs on, can PyTorch route the allocation to the shim (MemPool on the pluggable allocator)?
`CacheContext.create(device)` answers them all: None means "leave this cache alone".

Each engine subclasses it with its name and its own `overrides` dict, the seam its CPU tests use to
run the real engine with a fake C API (api), on the CPU (require_cuda=False) and without a MemPool
(use_pool=False).
"""

from __future__ import annotations

import contextlib
import os

from . import capi as C
from ._env import HookSettings
from ._log import important, logger
from .start_wait import acquire_waiting


def default_overrides() -> dict:
    return {"api": None, "require_cuda": True, "use_pool": True}


class CacheContext:
    engine = "engine"  # subclasses: the adapter's name in messages
    overrides: dict = default_overrides()  # subclasses: their own dict (test seam)

    def __init__(self, api, settings: HookSettings, device, device_index: int) -> None:
        self.api = api
        self.settings = settings
        self.device = device
        self.device_index = device_index

    @classmethod
    def create(cls, device) -> "CacheContext | None":
        """A context for a cache on `device`, or None when the cache is not to be managed (the
        reason is logged: at debug level when the hook is simply not in play)."""
        settings = HookSettings()
        if not settings.enabled:
            logger.debug("%s: ENABLE_KVCACHED=false: cache not managed", cls.engine)
            return None
        api = cls.overrides["api"] if cls.overrides["api"] is not None else C.load()
        if api is None:
            logger.debug("%s: no kvcached shim in this process: cache not managed", cls.engine)
            return None
        import torch

        torch_device = torch.device(device) if device is not None else torch.device("cpu")
        if cls.overrides["require_cuda"]:
            if torch_device.type != "cuda":
                logger.debug("%s: cache on %s, not CUDA: not managed", cls.engine, torch_device)
                return None
            if not api.enabled():
                logger.debug("%s: shim disabled or not started: cache not managed", cls.engine)
                return None
        if cls.overrides["use_pool"]:
            from . import torch_pool

            reason = torch_pool.available(api)
            if reason is not None:
                cls.pool_unavailable(reason)
                return None
        index = torch_device.index
        if index is None and torch_device.type == "cuda":
            index = torch.cuda.current_device()
        return cls(api, settings, torch_device, index or 0)

    @classmethod
    def pool_unavailable(cls, reason: str) -> None:
        """Tells the operator why no pool on the shim can be made (subclasses: their own wording)."""
        important(f"{cls.engine}: KV cache stays static: {reason}")

    def make_pool(self):
        """A MemPool on the shim (None when the test seam turns pools off)."""
        if not self.overrides["use_pool"]:
            return None
        from . import torch_pool

        return torch_pool.make_pool(self.api)

    def use_pool(self, pool, device=None):
        """Routes the enclosed allocations on this device (or on `device`, the one the engine's
        allocation call names) to `pool`."""
        if pool is None:
            return contextlib.nullcontext()
        from . import torch_pool

        return torch_pool.use_pool(pool, self.device if device is None else device)

    def label(self, model_name) -> str:
        """This engine's name in kvctl: KVCACHED_LABEL, else "<engine>:<model's base name>"."""
        if self.settings.label:
            return self.settings.label
        name = model_name or "model"
        return f"{self.engine}:{os.path.basename(str(name).rstrip('/')) or name}"

    def name_process(self, label: str) -> None:
        """Shows `label` in kvctl for this process (KVCACHED_LABEL, when set, was applied by the shim
        itself)."""
        if label and not self.settings.label:
            status = self.api.set_label(label)
            if status != C.OK:
                logger.debug("kvcached_set_label(%s) -> %s", label, C.STATUS_NAMES.get(status, status))

    def acquire_waiting(self, ranges, what: str) -> int:
        """Start-up backing, waiting up to KVCACHED_HOOK_START_WAIT_S for the budget."""
        return acquire_waiting(self.api, ranges, what, wait_s=self.settings.start_wait_s, engine=self.engine)


__all__ = ["CacheContext", "default_overrides"]
