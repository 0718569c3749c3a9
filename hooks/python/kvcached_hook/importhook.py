"""Post-import callbacks: run a function right after a given module has been executed.

A tiny sys.meta_path finder that only answers for the module names registered here. For those it
asks the other finders for the real spec and wraps the loader so that, once the module's code has
run, the callback patches it. Importing anything else costs one dict lookup. The callback never
breaks the import: its exceptions are logged and swallowed.
"""


import _thread
import sys

# _thread, not threading, and logging only on failure: importing this module must stay cheap
# (it is imported at every interpreter start under LD_PRELOAD).
_lock = _thread.RLock()
_callbacks: dict[str, list] = {}


def _log_failure(fullname: str) -> None:
    from ._log import logger

    logger.exception("kvcached: patching %s failed; the engine runs without the hook", fullname)


class _PatchingLoader:
    """Delegates to the real loader, then runs the callbacks for the module."""

    def __init__(self, loader, fullname: str) -> None:
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        # Hide the wrapper from code that inspects the loader afterwards.
        try:
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader
        except (AttributeError, TypeError):
            pass
        _run_callbacks(self._fullname, module)

    def __getattr__(self, name):  # get_code, get_source, is_package, resource readers...
        return getattr(self._loader, name)


class _PostImportFinder:
    def __init__(self) -> None:
        self._busy = _thread._local()

    def find_spec(self, fullname, path, target=None):
        if fullname not in _callbacks:
            return None
        busy = getattr(self._busy, "names", None)
        if busy is None:
            busy = self._busy.names = set()
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is self or isinstance(finder, _PostImportFinder):
                    continue
                find = getattr(finder, "find_spec", None)
                if find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    break
        finally:
            busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader, fullname)
        return spec


_finder: _PostImportFinder | None = None


def _run_callbacks(fullname: str, module) -> None:
    with _lock:
        callbacks = list(_callbacks.get(fullname, ()))
    for callback in callbacks:
        try:
            callback(module)
        except Exception:  # noqa: BLE001 - a hook must never break the host's import
            _log_failure(fullname)


def when_imported(fullname: str, callback) -> None:
    """Calls callback(module) once `fullname` is imported (now, if it already is)."""
    global _finder
    with _lock:
        _callbacks.setdefault(fullname, []).append(callback)
        if _finder is None:
            _finder = _PostImportFinder()
            sys.meta_path.insert(0, _finder)
    module = sys.modules.get(fullname)
    if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False) is False:
        try:
            callback(module)
        except Exception:  # noqa: BLE001
            _log_failure(fullname)


def uninstall() -> None:
    """Removes the finder and every registered callback (tests)."""
    global _finder
    with _lock:
        _callbacks.clear()
        if _finder is not None:
            try:
                sys.meta_path.remove(_finder)
            except ValueError:
                pass
            _finder = None
