"""The one table of task types: for each, the side it touches, the capability it needs of
that side's provider, why running it again after a crash is safe, and its runner.

- ``side``: the endpoint whose provider the task loads and whose regions and provider the
  worker must have (``both``: the disk copy, which reads one side and writes the other).
- ``capability``: what the provider of that side must declare (``providers.base``); creating
  a migration or replica whose endpoints lack one its graph needs is a 400 naming both.
- ``rerun``: why re-running the task after the process running it died is safe (the
  conductor sends it again under the same id); None: it is failed instead.
- ``runner``: the name of its function in ``coriolis.worker.tasks``.
"""

from __future__ import annotations

import enum
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
    runner: str


S, D, B = Side.SOURCE, Side.DESTINATION, Side.BOTH
K = Capability

_ROWS: list[tuple[str, Side, Capability | None, str]] = [
    (c.TASK_TYPE_GET_INSTANCE_INFO, S, K.INSTANCES, "get_instance_info"),
    (c.TASK_TYPE_VALIDATE_MIGRATION_SOURCE_INPUTS, S, K.EXPORT, "validate_source"),
    (c.TASK_TYPE_VALIDATE_REPLICA_SOURCE_INPUTS, S, K.REPLICA_EXPORT, "validate_source"),
    (c.TASK_TYPE_UPDATE_SOURCE_REPLICA, S, K.REPLICA_EXPORT, "validate_source"),
    (c.TASK_TYPE_VALIDATE_MIGRATION_DESTINATION_INPUTS, D, K.IMPORT,
     "validate_migration_destination"),
    (c.TASK_TYPE_VALIDATE_REPLICA_DESTINATION_INPUTS, D, K.REPLICA_IMPORT,
     "validate_replica_destination"),
    (c.TASK_TYPE_UPDATE_DESTINATION_REPLICA, D, K.REPLICA_IMPORT,
     "validate_replica_destination"),
    (c.TASK_TYPE_VALIDATE_REPLICA_DEPLOYMENT_INPUTS, D, K.REPLICA_IMPORT, "validate_deployment"),
    (c.TASK_TYPE_CREATE_INSTANCE_DISKS, D, K.IMPORT, "create_disks"),
    (c.TASK_TYPE_DEPLOY_REPLICA_DISKS, D, K.REPLICA_IMPORT, "create_disks"),
    (c.TASK_TYPE_DEPLOY_MIGRATION_SOURCE_RESOURCES, S, K.EXPORT, "deploy_source_resources"),
    (c.TASK_TYPE_DEPLOY_REPLICA_SOURCE_RESOURCES, S, K.REPLICA_EXPORT,
     "deploy_source_resources"),
    (c.TASK_TYPE_DELETE_MIGRATION_SOURCE_RESOURCES, S, K.EXPORT, "delete_source_resources"),
    (c.TASK_TYPE_DELETE_REPLICA_SOURCE_RESOURCES, S, K.REPLICA_EXPORT,
     "delete_source_resources"),
    (c.TASK_TYPE_DEPLOY_MIGRATION_TARGET_RESOURCES, D, K.IMPORT, "deploy_target_resources"),
    (c.TASK_TYPE_DEPLOY_REPLICA_TARGET_RESOURCES, D, K.REPLICA_IMPORT,
     "deploy_target_resources"),
    (c.TASK_TYPE_DELETE_MIGRATION_TARGET_RESOURCES, D, K.IMPORT, "delete_target_resources"),
    (c.TASK_TYPE_DELETE_REPLICA_TARGET_RESOURCES, D, K.REPLICA_IMPORT,
     "delete_target_resources"),
    (c.TASK_TYPE_SHUTDOWN_INSTANCE, S, K.EXPORT, "shutdown_instance"),
    (c.TASK_TYPE_REPLICATE_DISKS, B, None, "replicate_disks"),
    (c.TASK_TYPE_CLEANUP_INSTANCE_SOURCE_STORAGE, S, K.EXPORT, "nothing"),
    (c.TASK_TYPE_DELETE_REPLICA_SOURCE_DISK_SNAPSHOTS, S, K.REPLICA_EXPORT, "nothing"),
    (c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE, D, K.IMPORT, "delete_disks"),
    (c.TASK_TYPE_DELETE_REPLICA_DISKS, D, K.REPLICA_IMPORT, "delete_disks"),
    (c.TASK_TYPE_CREATE_REPLICA_DISK_SNAPSHOTS, D, K.REPLICA_IMPORT, "snapshot_disks"),
    (c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS, D, K.REPLICA_IMPORT, "restore_snapshots"),
    (c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS, D, K.REPLICA_IMPORT, "delete_snapshots"),
    (c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES, D, K.IMPORT, "deploy_instance"),
    (c.TASK_TYPE_DEPLOY_REPLICA_INSTANCE_RESOURCES, D, K.REPLICA_IMPORT, "deploy_instance"),
    (c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT, D, K.IMPORT, "finalize"),
    (c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT, D, K.REPLICA_IMPORT, "finalize"),
    (c.TASK_TYPE_CLEANUP_FAILED_INSTANCE_DEPLOYMENT, D, K.IMPORT, "cleanup_failed_instance"),
    (c.TASK_TYPE_CLEANUP_FAILED_REPLICA_INSTANCE_DEPLOYMENT, D, K.REPLICA_IMPORT,
     "cleanup_failed_instance"),
    (c.TASK_TYPE_DEPLOY_OS_MORPHING_RESOURCES, D, K.OS_MORPHING,
     "deploy_os_morphing_resources"),
    (c.TASK_TYPE_OS_MORPHING, D, K.OS_MORPHING, "os_morphing"),
    (c.TASK_TYPE_DELETE_OS_MORPHING_RESOURCES, D, K.OS_MORPHING,
     "delete_os_morphing_resources"),
    (c.TASK_TYPE_GET_OPTIMAL_FLAVOR, D, K.IMPORT, "nothing"),
]

TASK_TYPES: dict[str, TaskType] = {
    name: TaskType(name, side, cap, c.TASK_RERUN.get(name), runner)
    for name, side, cap, runner in _ROWS
}
