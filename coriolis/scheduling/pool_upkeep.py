"""Minion pool upkeep: every ``Settings.pool_upkeep_interval`` seconds each ALLOCATED pool's
machines are health-checked (dead ones replaced), those idle longer than the pool's
``minion_max_idle_time`` are powered off or deleted (its retention strategy), and the pool
is refilled to its minimum (``PoolManager.upkeep``)."""

from __future__ import annotations

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
