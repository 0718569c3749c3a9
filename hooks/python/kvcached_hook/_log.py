"""Logging for the engine hook: logger "kvcached", silent unless asked.

The package runs inside other people's processes, so by default it prints nothing. Two ways to see
more: configure the "kvcached" logger like any library logger, or set KVCACHED_LOG_LEVEL (the
shim's variable) to trace/debug/info/warn/error, which attaches one stderr handler at that level.
Only problems that change what the engine does (elastic KV disabled, sanity violations) are
written to stderr when nobody listens, through `important()`.
"""

import logging
import os
import sys

LOGGER_NAME = "kvcached"
logger = logging.getLogger(LOGGER_NAME)

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}

_configured = False


def configure_from_env() -> None:
    """Attaches a NullHandler (library default) or, with KVCACHED_LOG_LEVEL, a stderr handler.

    Called once at import; touches no file and prints nothing.
    """
    global _configured
    if _configured:
        return
    _configured = True
    if any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
        return  # the application configured us already
    level_name = os.environ.get("KVCACHED_LOG_LEVEL", "").strip().lower()
    if level_name in _LEVELS:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("kvcached[%(process)d] %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(_LEVELS[level_name])
    else:
        logger.addHandler(logging.NullHandler())


def _someone_listens(level: int) -> bool:
    """True when a real handler (ours, the app's or the root's) would emit a record at `level`."""
    if not logger.isEnabledFor(level):
        return False
    current = logger
    while current is not None:
        for handler in current.handlers:
            if not isinstance(handler, logging.NullHandler) and level >= handler.level:
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def important(message: str, level: int = logging.WARNING) -> None:
    """Logs `message`; if no handler would show it, writes it to stderr once per call."""
    logger.log(level, message)
    if not _someone_listens(level):
        try:
            sys.stderr.write(f"kvcached[{os.getpid()}]: {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr closed: nothing sensible left to do


configure_from_env()  # first use of the package's logging (never at package import)
