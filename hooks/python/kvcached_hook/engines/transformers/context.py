"""Whether a PagedAttentionCache is managed, and with what: the shared CacheContext, named for this
engine, with its own test seam (`overrides`: tests/python replaces the C API, allows CPU caches and
turns the MemPool off to run the real engine on the CPU)."""

from __future__ import annotations

from ...cache_context import CacheContext, default_overrides
from .names import ENGINE

overrides = default_overrides()


class TransformersContext(CacheContext):
    engine = ENGINE
    overrides = overrides


__all__ = ["TransformersContext", "overrides"]
