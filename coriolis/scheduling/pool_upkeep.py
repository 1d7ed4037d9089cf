"""Minion pool upkeep: every ``Settings.pool_upkeep_interval`` seconds each ALLOCATED pool's
machines are health-checked (dead ones replaced), those idle longer than the pool's
``minion_max_idle_time`` are powered off or deleted (its retention strategy), and the pool
is refilled to its minimum (``PoolManager.upkeep``)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from coriolis.periodic import Periodic

if TYPE_CHECKING:
    from coriolis.config import Settings
    from coriolis.minions.manager import PoolManager


class _Never:
    def stop(self) -> None:
        pass


def start(pools: PoolManager, settings: Settings) -> Periodic | _Never:
    """Start the periodic upkeep (nothing when the interval is 0 or less)."""
    interval = settings.pool_upkeep_interval or 0
    if interval <= 0:
        return _Never()
    return Periodic("pool-upkeep", interval, pools.upkeep).start()


def retention(idle: list[tuple[str, dt.datetime | None]], now: dt.datetime, max_idle: int,
              strategy: str, spare: int) -> list[tuple[str, str]]:
    """What the retention strategy does to a pool's powered-on, available machines
    (``idle``: machine id and when it was last used, naive UTC): those unused for more than
    ``max_idle`` seconds, longest idle first, are deleted while the pool has ``spare``
    machines beyond its minimum (``delete``), or all powered off (``poweroff``). Returns
    ``(machine id, "delete" | "poweroff")`` pairs."""
    expired = sorted(((m, used) for m, used in idle
                      if used is not None and (now - used).total_seconds() > max_idle),
                     key=lambda pair: pair[1] or now)
    plan = []
    for machine_id, _ in expired:
        if strategy == "delete" and spare > 0:
            plan.append((machine_id, "delete"))
            spare -= 1
        elif strategy == "poweroff":
            plan.append((machine_id, "poweroff"))
    return plan
