"""Notices when another process on this GPU was refused memory by the shared budget.

The shim records the latest refusal on each device's budget as (sequence number, pid). An engine
that holds pages only it can free (its prefix cache) gives them back when a new refusal from
another process appears. Shims without kvcached_pressure_get (and test fakes) never report one.
"""

from __future__ import annotations

import os


class PressureWatch:
    def __init__(self, api, device_index: int) -> None:
        self.api = api
        self.device_index = device_index
        self.seen: tuple[int, int] | None = None

    def poll(self) -> bool:
        """True when another process was refused since the last poll (never on the first poll: a
        refusal from before this engine started is not news)."""
        query = getattr(self.api, "pressure", None)  # absent from older shims and test fakes
        pressure = query(self.device_index) if query is not None else None
        if pressure is None:
            return False
        first = self.seen is None
        changed = pressure[0] != (self.seen or (None,))[0]
        self.seen = pressure
        return not (first or not changed or pressure[1] in (0, os.getpid()))


__all__ = ["PressureWatch"]
