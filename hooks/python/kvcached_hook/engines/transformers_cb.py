"""The transformers adapter under its former module name (kept for tests and GPU scripts that
import `kvcached_hook.engines.transformers_cb`: the same objects as in engines/transformers/,
so patching or replacing them here acts on the adapter itself)."""

from .. import capi as C  # noqa: F401
from .._env import HookSettings  # noqa: F401
from .transformers import ENGINE, MODULE, CacheAdapter, adapters, arm, patch, unpatch  # noqa: F401
from .transformers.context import TransformersContext as _Context  # noqa: F401
from .transformers.context import overrides as _overrides  # noqa: F401


def _acquire_waiting(ctx, ranges, what: str) -> int:
    """Start-up backing that waits for the budget (see kvcached_hook.start_wait)."""
    return ctx.acquire_waiting(ranges, what)
