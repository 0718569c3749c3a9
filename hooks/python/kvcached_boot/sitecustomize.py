"""kvcached boot: loaded by Python at start-up when libkvcached_shim.so is preloaded.

The shim prepends this folder to PYTHONPATH (only in Python interpreters, and only while
KVCACHED_AUTOPATCH is not 0/false), so Python's ``site`` module imports this file as
``sitecustomize``. It:

1. imports the engine-hook package ``kvcached_hook`` from the folder next to this one, if it is
   there (nothing is reported if it is missing or fails: the interpreter must start regardless);
2. chains to the ``sitecustomize`` that this one shadows -- the next one on ``sys.path`` --
   so a system or user sitecustomize still runs, exactly as it would without the shim.

It creates no file or thread, prints nothing and does not import torch.
"""

import os as _os
import sys as _sys


def _kvcached_autopatch_enabled():
    value = _os.environ.get("KVCACHED_AUTOPATCH", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def _kvcached_load_hook(packages_dir):
    if packages_dir not in _sys.path:
        # Appended, not prepended: kvcached_hook is the only module there, so nothing the user
        # imports can be shadowed by it.
        _sys.path.append(packages_dir)
    saved = _sys.dont_write_bytecode
    _sys.dont_write_bytecode = True  # no __pycache__ written next to the shim
    try:
        import kvcached_hook  # noqa: F401  (its import is the hook)
    except BaseException as error:  # noqa: BLE001 - the interpreter must start regardless
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
    finally:
        _sys.dont_write_bytecode = saved


def _kvcached_chain(boot_dir):
    """Runs the sitecustomize that comes after this folder on sys.path, if any."""
    import importlib.machinery

    entries = list(_sys.path)
    here = [i for i, entry in enumerate(entries)
            if _os.path.abspath(entry or _os.curdir) == boot_dir]
    rest = entries[here[0] + 1:] if here else entries
    rest = [entry for entry in rest if _os.path.abspath(entry or _os.curdir) != boot_dir]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    import importlib.util

    module = importlib.util.module_from_spec(spec)
    # Whoever imports sitecustomize from now on sees the chained module, as without the shim.
    _sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)  # its errors surface as they would without the shim


def _kvcached_boot():
    boot_dir = _os.path.dirname(_os.path.abspath(__file__))
    if _kvcached_autopatch_enabled():
        _kvcached_load_hook(_os.path.dirname(boot_dir))
    _kvcached_chain(boot_dir)


_kvcached_boot()
