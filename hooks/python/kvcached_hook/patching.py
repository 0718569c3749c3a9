"""Version-gated patching shared by the engine adapters.

An adapter declares what it wraps as a list of `Target`s (module, class, method, the leading
parameter names it relies on, and a wrapper factory) and the engine versions it was written for.
`PatchSet.apply()` is all-or-nothing: it checks the version, then that every target exists with
the expected parameters, and only then installs every wrapper. Anything unknown (another version,
a renamed method, a changed signature, a reason the engine gives, e.g. a mode the adapter cannot
serve) patches nothing, says why once, and lets the engine run as it would without the hook.

No engine import here: targets name modules, which `apply()` imports.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import threading
from dataclasses import dataclass
from typing import Callable

from ._log import important, logger

WRAPPED_FLAG = "_kvcached_wrapped"


@dataclass(frozen=True)
class Target:
    """One attribute an adapter relies on (and wraps, when `wrap` is given)."""

    module: str  # full module name, e.g. "vllm.v1.core.block_pool"
    owner: str  # class name in that module ("" for a module-level function)
    name: str  # attribute name
    params: tuple[str, ...] = ()  # leading parameter names the wrapper relies on
    wrap: Callable | None = None  # wrap(original) -> replacement; None: only checked

    @property
    def where(self) -> str:
        return f"{self.owner}.{self.name}" if self.owner else self.name


def parse_version(text: str) -> tuple[int, ...]:
    """"0.26.0" -> (0, 26, 0); "0.24.1.dev3+gabc" -> (0, 24, 1); "" or junk -> ()."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text or "")
    return tuple(int(x) for x in match.group(1).split(".")) if match else ()


def version_in(text: str, lowest: str, below: str) -> bool:
    """True when lowest <= version < below (release numbers only)."""
    version = parse_version(text)
    return bool(version) and parse_version(lowest) <= version < parse_version(below)


def leading_params(fn) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return ()


class PatchSet:
    """The wrappers of one engine adapter, installed and removed together."""

    def __init__(
        self,
        engine: str,
        targets: list[Target],
        *,
        version: Callable[[], str],
        lowest: str | None = None,
        below: str | None = None,
        refuse: Callable[[], str | None] | None = None,
    ) -> None:
        self.engine = engine
        self.targets = list(targets)
        self._version = version
        self.lowest, self.below = lowest, below
        self._refuse = refuse
        # Re-entrant: apply() imports the target modules, and an import can fire the package's
        # import hook, which calls apply() again on the same thread (it then answers at once).
        self._lock = threading.RLock()
        self._applying = False
        self._installed: list[tuple[object, str, Callable]] = []
        self.reason: str | None = None  # why the last apply() patched nothing

    @property
    def applied(self) -> bool:
        return bool(self._installed)

    def version(self) -> str:
        try:
            return str(self._version() or "?")
        except Exception:  # noqa: BLE001
            return "?"

    def _resolve(self, target: Target):
        module = sys.modules.get(target.module) or importlib.import_module(target.module)
        owner = getattr(module, target.owner, None) if target.owner else module
        if owner is None:
            return None, None
        return owner, owner.__dict__.get(target.name) if isinstance(owner, type) else getattr(owner, target.name, None)

    def problems(self) -> list[str]:
        """What does not match this adapter (empty: every target is as expected)."""
        out: list[str] = []
        version = self.version()
        if self.lowest and self.below and not version_in(version, self.lowest, self.below):
            out.append(f"version {version} is outside the supported {self.lowest} <= v < {self.below}")
            return out
        for target in self.targets:
            try:
                owner, fn = self._resolve(target)
            except Exception as error:  # noqa: BLE001 - a missing module is a mismatch, not a crash
                out.append(f"{target.module} cannot be imported ({error})")
                continue
            if owner is None:
                out.append(f"{target.module}.{target.owner} missing")
                continue
            if fn is None:
                out.append(f"{target.where} missing")
                continue
            if target.params:
                names = leading_params(getattr(fn, "__wrapped__", fn) if getattr(fn, WRAPPED_FLAG, False) else fn)
                if names[: len(target.params)] != target.params:
                    out.append(f"{target.where}{names} (expected {target.params})")
        return out

    def apply(self) -> bool:
        """Installs every wrapper, or none. Idempotent. False (after one message) when the engine is
        not the one this adapter knows or refuses to be managed."""
        with self._lock:
            if self._installed or self._applying:
                return bool(self._installed)
            self._applying = True
            try:
                return self._apply_locked()
            finally:
                self._applying = False

    def _apply_locked(self) -> bool:
        """apply() with the lock held."""
        reason = None
        try:
            reason = self._refuse() if self._refuse is not None else None
        except Exception as error:  # noqa: BLE001
            reason = f"its configuration could not be read ({error})"
        problems = [reason] if reason else self.problems()
        if problems:
            text = "; ".join(problems)
            if text != self.reason:
                important(f"{self.engine}: not patched ({text}); the engine runs without the elastic KV cache")
            self.reason = text
            return False
        installed = []
        for target in self.targets:
            if target.wrap is None:
                continue
            owner, fn = self._resolve(target)
            if getattr(fn, WRAPPED_FLAG, False):
                continue
            raw = fn
            # staticmethod/classmethod objects live in the class __dict__: wrap their function.
            kind = type(raw) if isinstance(raw, (staticmethod, classmethod)) else None
            func = raw.__func__ if kind is not None else raw
            wrapped = target.wrap(func)
            setattr(wrapped, WRAPPED_FLAG, True)
            wrapped.__wrapped__ = func
            for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
                try:
                    setattr(wrapped, attr, getattr(func, attr))
                except (AttributeError, TypeError):
                    pass
            setattr(owner, target.name, kind(wrapped) if kind is not None else wrapped)
            installed.append((owner, target.name, raw))
        self._installed = installed
        self.reason = None
        logger.debug("%s %s: patched %d function(s)", self.engine, self.version(), len(installed))
        return True

    def revert(self) -> None:
        """Restores every original (tests, and adapters that back out)."""
        with self._lock:
            for owner, name, raw in reversed(self._installed):
                setattr(owner, name, raw)
            self._installed = []


__all__ = ["Target", "PatchSet", "parse_version", "version_in", "leading_params", "WRAPPED_FLAG"]
