"""Environment variables of the engine hook, read and validated in one place.

A bad value never raises inside the engine: it is reported once (naming the variable, the value
and what is accepted) and the default is used.
"""

import logging
import os

from ._log import important

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bad(name: str, value: str, accepted: str, default) -> None:
    important(f"{name}={value!r} is not valid (accepted: {accepted}); using {default!r}", logging.WARNING)


def get_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    _bad(name, raw, "1/0, true/false, yes/no, on/off", default)
    return default


def get_float(name: str, default: float, lo: float, hi: float, off_value: float | None = None) -> float:
    """A number in [lo, hi]; "off" maps to `off_value` when one is given."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip().lower()
    # "0" is a number here (KVCACHED_HOOK_IDLE_TRIM_S=0: at once), not the boolean "off".
    if off_value is not None and text in _FALSE - {"0"}:
        return off_value
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not (lo <= value <= hi):
        _bad(name, raw, f"a number in [{lo}, {hi}]" + (" or off" if off_value is not None else ""), default)
        return default
    return value


def get_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or not (lo <= value <= hi):
        _bad(name, raw, f"an integer in [{lo}, {hi}]", default)
        return default
    return value


def get_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value not in choices:
        _bad(name, raw, " or ".join(choices), default)
        return default
    return value


class HookSettings:
    """The hook's own knobs (KVCACHED_HOOK_*) plus the shared ones it reads.

    Read when an engine cache is created, not at import, so that tests and launchers can set them
    late.
    """

    def __init__(self) -> None:
        # Shared with the shim (core/config/config.h).
        self.enabled = get_bool("ENABLE_KVCACHED", True)
        self.sanity_check = get_bool("KVCACHED_SANITY_CHECK", False)
        self.label = os.environ.get("KVCACHED_LABEL", "").strip()
        # The hook's own.
        # elastic: reuse the engine's cached (prefix) blocks in backed pages before backing new
        # pages; keep: the engine's own preference (fresh blocks first), cached blocks are only
        # dropped when the budget refuses a page.
        self.prefix_cache = get_choice("KVCACHED_HOOK_PREFIX_CACHE", "elastic", ("elastic", "keep"))
        # After this many idle seconds the engine's cached blocks are dropped so their pages go back.
        self.idle_trim_s = get_float("KVCACHED_HOOK_IDLE_TRIM_S", 1.0, 0.0, 86400.0, off_value=-1.0)
        # Pages that became empty are given back after this many engine steps (>= 2 keeps pages
        # that an in-flight asynchronous batch may still touch).
        self.release_delay_steps = get_int("KVCACHED_HOOK_RELEASE_DELAY_STEPS", 2, 0, 1000)
        # Back the pages a step will need in one call before the step schedules.
        self.predict = get_bool("KVCACHED_HOOK_PREDICT", True)
        # While the sharing policy's answer is "ok", the engine asks again only after this many
        # milliseconds rather than every step (0: every step); a non-ok answer is asked every step.
        self.share_ask_ms = get_float("KVCACHED_HOOK_SHARE_ASK_MS", 20.0, 0.0, 1000.0)
        # How long memory that moved between vLLM engines stays where it went (0: off): a giver
        # backs no page beyond what it kept (docs/sharing.md).
        self.share_hold_ms = get_float("KVCACHED_HOOK_SHARE_HOLD_MS", 5000.0, 0.0, 600000.0)
        # After the budget refused pages, an engine asks it again only after this many milliseconds
        # (or once it has released pages itself) rather than every step (0: every step).
        self.refused_retry_ms = get_float("KVCACHED_HOOK_REFUSED_RETRY_MS", 20.0, 0.0, 1000.0)
        # At start-up the cache's padding pages must be backed; while other engines hold the whole
        # budget this waits (asking them to give back) up to this many seconds before failing.
        self.start_wait_s = get_float("KVCACHED_HOOK_START_WAIT_S", 60.0, 0.0, 86400.0)
