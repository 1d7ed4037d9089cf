"""The steps of minion pool operations: each a provider operation (``MinionPoolProvider``)
that the pool manager sends to a worker which may reach the pool's endpoint (its regions), by
the name the crash tests and events use, with why running it again after a crash is safe.

A pool's running operation is stored with the pool (``MinionPool.operation``: allocate,
refresh, deallocate, delete); a restarted server runs it again from its first step, and a step
whose worker stopped heart-beating is sent again to another worker, so every step must be safe
to repeat: that is the ``rerun`` column. ``tests/e2e/test_crash_matrix.py`` kills the server
while each step runs and right after it ends (``worker.faults``: ``STEP:during|after``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolStep:
    name: str
    operation: str
    rerun: str


STEPS = [PoolStep(*row) for row in [
    ("VALIDATE_MINION_POOL_OPTIONS", "validate_minion_pool_options",
     "reads and checks only"),
    ("SET_UP_POOL_SHARED_RESOURCES", "set_up_pool_shared_resources",
     "shared resources are named after the pool: one found is reused or made again"),
    ("CREATE_MINION_MACHINE", "create_minion",
     "a machine is named after its id; one a run that died left ALLOCATING is removed, "
     "and a new one made"),
    ("HEALTHCHECK_MINION_MACHINE", "healthcheck_minion",
     "reads only; a machine a crash left HEALTHCHECKING is put back AVAILABLE at start-up"),
    ("POWER_OFF_MINION_MACHINE", "power_off_minion",
     "stopping a stopped machine does nothing; one a crash left POWERING_OFF is put back "
     "AVAILABLE at start-up and retired again by the next upkeep"),
    ("POWER_ON_MINION_MACHINE", "power_on_minion",
     "starting a machine stops a stale agent first; the new keys are recorded"),
    ("DELETE_MINION_MACHINE", "delete_minion",
     "removing what is already gone does nothing"),
    ("TEAR_DOWN_POOL_SHARED_RESOURCES", "tear_down_pool_shared_resources",
     "removing what is already gone does nothing"),
]]

STEP_OF_OPERATION = {s.operation: s.name for s in STEPS}
"""The step name of a pool provider operation (for the worker's fault hooks and events)."""
