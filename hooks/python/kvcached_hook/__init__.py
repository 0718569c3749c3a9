"""kvcached engine hook: makes an LLM engine's KV cache elastic through the kvcached shim.

Loaded automatically at interpreter start when the shim is preloaded and KVCACHED_AUTOPATCH is on
(the shim's boot sitecustomize imports this package). Importing it only registers an import hook
for the engines it knows (see engines/__init__.py): no torch import, no thread, no file, no output.
The engine is patched when (and only when) the process imports it.

Explicit use (for example without LD_PRELOAD, with KVCACHED_SHIM_PATH set):

    import kvcached_hook
    kvcached_hook.enable()

See docs/engine-hook.md.
"""

import os as _os

__version__ = "0.1.0"
__all__ = ["enable", "disable", "is_enabled", "stats", "adapters", "__version__"]

_enabled = False


def _off(name: str) -> bool:
    return _os.environ.get(name, "").strip().lower() in ("0", "false", "no", "off")


def _patcher(target: str):
    module_name, _, function = target.partition(":")

    def patch(module):
        import importlib

        from ._log import logger

        logger.debug("kvcached: engine module %s imported; patching", module.__name__)
        getattr(importlib.import_module(module_name), function)(module)

    return patch


def enable() -> bool:
    """Installs the engine import hooks (idempotent). Engines already imported are patched now."""
    global _enabled
    if _enabled:
        return True
    from . import importhook
    from .engines import ENGINES

    for module, target in ENGINES.items():
        importhook.when_imported(module, _patcher(target))
    _enabled = True
    return True


def _engine_modules() -> list:
    """The engine adapter modules this process has imported (each exposes patch, unpatch,
    adapters), from the registry in engines/__init__.py."""
    import sys

    from .engines import ENGINES

    names = sorted({target.partition(":")[0] for target in ENGINES.values()})
    return [sys.modules[name] for name in names if name in sys.modules]


def disable() -> None:
    """Removes the import hooks and restores patched engine classes (mostly for tests)."""
    global _enabled
    from . import importhook

    importhook.uninstall()
    for module in _engine_modules():
        unpatch = getattr(module, "unpatch", None)
        if unpatch is not None:
            unpatch()
    _enabled = False


def is_enabled() -> bool:
    return _enabled


def adapters() -> list:
    """Live cache adapters in this process (one per managed engine cache, any engine)."""
    found = []
    for module in _engine_modules():
        listing = getattr(module, "adapters", None)
        if listing is not None:
            found.extend(listing())
    return found


def stats() -> list:
    """One dict per managed cache: blocks, pages, C calls, refusals, times (see tracker.snapshot)."""
    return [adapter.snapshot() for adapter in adapters()]


if not _off("KVCACHED_AUTOPATCH") and not _off("ENABLE_KVCACHED"):
    enable()
