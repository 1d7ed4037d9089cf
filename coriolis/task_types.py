"""The one table of task types: for each, the side it touches, the capability it needs of
that side's provider, why running it again after a crash is safe, and its runner.

- ``side``: the endpoint whose provider the task loads and whose regions and provider the
  worker must have (``both``: the disk copy, which reads one side and writes the other).
- ``capability``: what the provider of that side must declare (``providers.base``); creating
  a migration or replica whose endpoints lack one its graph needs is a 400 naming both.
- ``rerun``: why re-running the task after the process running it died is safe (the
  conductor sends it again under the same id, cleanups and rollbacks included); None: it is
  failed instead, and its execution cleans up. tests/e2e/test_crash_matrix.py kills the
  server while each of them runs and right after each completes.
- ``finish_when_cancelled``: the task makes what its cleanups remove, known to them only
  from the task's result: one interrupted in an execution being cancelled runs again to its
  end (upstream's CANCELLING_AFTER_COMPLETION), so that its cleanup finds what it made. Any
  other interrupted task of such an execution is simply cancelled.
- ``runner``: the name of its function in ``coriolis.worker.tasks``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from coriolis import constants as c
from coriolis.providers.base import Capability


class Side(enum.StrEnum):
    SOURCE = "source"
    DESTINATION = "destination"
    BOTH = "both"


@dataclass(frozen=True)
class TaskType:
    name: str
    side: Side
    capability: Capability | None
    rerun: str | None
    finish_when_cancelled: bool
    runner: str


S, D, B = Side.SOURCE, Side.DESTINATION, Side.BOTH
K = Capability
FINISH = True  # the finish_when_cancelled column, for readability

_READ_ONLY = "reads or checks only"

# (name, side, capability, rerun, finish_when_cancelled, runner)
_ROWS: list[tuple[str, Side, Capability | None, str | None, bool, str]] = [
    (c.TASK_TYPE_GET_INSTANCE_INFO, S, K.INSTANCES, _READ_ONLY, False, "get_instance_info"),
    (c.TASK_TYPE_VALIDATE_MIGRATION_SOURCE_INPUTS, S, K.EXPORT, _READ_ONLY, False,
     "validate_source"),
    (c.TASK_TYPE_VALIDATE_REPLICA_SOURCE_INPUTS, S, K.REPLICA_EXPORT, _READ_ONLY, False,
     "validate_source"),
    (c.TASK_TYPE_UPDATE_SOURCE_REPLICA, S, K.REPLICA_EXPORT, _READ_ONLY, False,
     "validate_source"),
    (c.TASK_TYPE_VALIDATE_MIGRATION_DESTINATION_INPUTS, D, K.IMPORT,
     _READ_ONLY + "; a name clash with the transfer's own half-deployed instance is none",
     False, "validate_migration_destination"),
    (c.TASK_TYPE_VALIDATE_REPLICA_DESTINATION_INPUTS, D, K.REPLICA_IMPORT, _READ_ONLY, False,
     "validate_replica_destination"),
    (c.TASK_TYPE_UPDATE_DESTINATION_REPLICA, D, K.REPLICA_IMPORT, _READ_ONLY, False,
     "validate_replica_destination"),
    (c.TASK_TYPE_VALIDATE_REPLICA_DEPLOYMENT_INPUTS, D, K.REPLICA_IMPORT, _READ_ONLY, False,
     "validate_deployment"),
    (c.TASK_TYPE_CREATE_INSTANCE_DISKS, D, K.IMPORT,
     "disks are named after the transfer: a re-run reuses the recorded ones and recreates "
     "the half-made ones", FINISH, "create_disks"),
    (c.TASK_TYPE_DEPLOY_REPLICA_DISKS, D, K.REPLICA_IMPORT,
     "as CREATE_INSTANCE_DISKS", FINISH, "create_disks"),
    (c.TASK_TYPE_DEPLOY_MIGRATION_SOURCE_RESOURCES, S, K.EXPORT,
     "the provider replaces what an interrupted call with the same transfer id left (the "
     "local snapshot folder is named after the transfer)", FINISH, "deploy_source_resources"),
    (c.TASK_TYPE_DEPLOY_REPLICA_SOURCE_RESOURCES, S, K.REPLICA_EXPORT,
     "as DEPLOY_MIGRATION_SOURCE_RESOURCES", FINISH,
     "deploy_source_resources"),
    (c.TASK_TYPE_DELETE_MIGRATION_SOURCE_RESOURCES, S, K.EXPORT,
     "deleting what is already gone succeeds; the transfer's snapshot folders are found by "
     "name even when their record was lost", False, "delete_source_resources"),
    (c.TASK_TYPE_DELETE_REPLICA_SOURCE_RESOURCES, S, K.REPLICA_EXPORT,
     "as DELETE_MIGRATION_SOURCE_RESOURCES", False,
     "delete_source_resources"),
    (c.TASK_TYPE_DEPLOY_MIGRATION_TARGET_RESOURCES, D, K.IMPORT,
     "the provider replaces what an interrupted call with the same transfer id left", False,
     "deploy_target_resources"),
    (c.TASK_TYPE_DEPLOY_REPLICA_TARGET_RESOURCES, D, K.REPLICA_IMPORT,
     "as DEPLOY_MIGRATION_TARGET_RESOURCES", False,
     "deploy_target_resources"),
    (c.TASK_TYPE_DELETE_MIGRATION_TARGET_RESOURCES, D, K.IMPORT,
     "deleting what is gone succeeds", False, "delete_target_resources"),
    (c.TASK_TYPE_DELETE_REPLICA_TARGET_RESOURCES, D, K.REPLICA_IMPORT,
     "as DELETE_MIGRATION_TARGET_RESOURCES", False,
     "delete_target_resources"),
    (c.TASK_TYPE_SHUTDOWN_INSTANCE, S, K.EXPORT, "stopping a stopped instance changes nothing",
     False, "shutdown_instance"),
    (c.TASK_TYPE_REPLICATE_DISKS, B, None,
     "resumes: the block manifest and the writer agent's acknowledgements spare what the "
     "destination already holds", False, "replicate_disks"),
    (c.TASK_TYPE_CLEANUP_INSTANCE_SOURCE_STORAGE, S, K.EXPORT, "does nothing", False,
     "nothing"),
    (c.TASK_TYPE_DELETE_REPLICA_SOURCE_DISK_SNAPSHOTS, S, K.REPLICA_EXPORT, "does nothing",
     False, "nothing"),
    (c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE, D, K.IMPORT,
     "deleting what is already gone succeeds; the transfer's disks are found by name", False,
     "delete_disks"),
    (c.TASK_TYPE_DELETE_REPLICA_DISKS, D, K.REPLICA_IMPORT,
     "as CLEANUP_INSTANCE_TARGET_STORAGE", False, "delete_disks"),
    (c.TASK_TYPE_CREATE_REPLICA_DISK_SNAPSHOTS, D, K.REPLICA_IMPORT,
     "a snapshot that exists is kept", FINISH, "snapshot_disks"),
    (c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS, D, K.REPLICA_IMPORT,
     "replaying an undo journal again writes the same old contents; a disk copy renamed "
     "over its volume is gone", False, "restore_snapshots"),
    (c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS, D, K.REPLICA_IMPORT,
     "deleting a snapshot that is already gone succeeds", False, "delete_snapshots"),
    (c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES, D, K.IMPORT,
     "the transfer's pending definition and disk clones are replaced; the local "
     "instance.json is only written by FINALIZE", FINISH, "deploy_instance"),
    (c.TASK_TYPE_DEPLOY_REPLICA_INSTANCE_RESOURCES, D, K.REPLICA_IMPORT,
     "as DEPLOY_INSTANCE_RESOURCES", FINISH, "deploy_instance"),
    (c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT, D, K.IMPORT,
     "makes the instance final atomically; done already is done", False, "finalize"),
    (c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT, D, K.REPLICA_IMPORT,
     "as FINALIZE_INSTANCE_DEPLOYMENT", False, "finalize"),
    (c.TASK_TYPE_CLEANUP_FAILED_INSTANCE_DEPLOYMENT, D, K.IMPORT,
     "removes the instance's definition first, then what else is left; what is gone is "
     "skipped", False, "cleanup_failed_instance"),
    (c.TASK_TYPE_CLEANUP_FAILED_REPLICA_INSTANCE_DEPLOYMENT, D, K.REPLICA_IMPORT,
     "as CLEANUP_FAILED_INSTANCE_DEPLOYMENT", False,
     "cleanup_failed_instance"),
    (c.TASK_TYPE_DEPLOY_OS_MORPHING_RESOURCES, D, K.OS_MORPHING,
     "the provider makes the same disks reachable again (local: reads only)", False,
     "deploy_os_morphing_resources"),
    (c.TASK_TYPE_OS_MORPHING, D, K.OS_MORPHING,
     "each morpher step sets a file to its target state (fstab by UUID, shell variables "
     "set, packages removed if present); a user script runs again", False, "os_morphing"),
    (c.TASK_TYPE_DELETE_OS_MORPHING_RESOURCES, D, K.OS_MORPHING,
     "deleting what is gone succeeds", False, "delete_os_morphing_resources"),
    (c.TASK_TYPE_GET_OPTIMAL_FLAVOR, D, K.IMPORT, "does nothing", False, "nothing"),
]

TASK_TYPES: dict[str, TaskType] = {row[0]: TaskType(*row) for row in _ROWS}

RERUNNABLE_TASK_TYPES = frozenset(t.name for t in TASK_TYPES.values() if t.rerun)
FINISH_WHEN_CANCELLED_TASK_TYPES = frozenset(
    t.name for t in TASK_TYPES.values() if t.finish_when_cancelled)


def sides(task_type: str) -> tuple[Side, ...]:
    """The endpoints a task of ``task_type`` talks to: (SOURCE,), (DESTINATION,) or both."""
    side = TASK_TYPES[task_type].side
    return (Side.SOURCE, Side.DESTINATION) if side == Side.BOTH else (side,)


def needed_capabilities(task_types: Iterable[str]) -> dict[Side, dict[Capability, str]]:
    """Per side (SOURCE, DESTINATION), each capability that some of ``task_types`` needs,
    with the first task type needing it (for error messages)."""
    needed: dict[Side, dict[Capability, str]] = {Side.SOURCE: {}, Side.DESTINATION: {}}
    for name in task_types:
        row = TASK_TYPES[name]
        if row.capability is not None:
            for side in sides(name):
                needed[side].setdefault(row.capability, name)
    return needed
