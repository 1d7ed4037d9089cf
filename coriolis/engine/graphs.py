"""Task graphs per instance, with the upstream task names (server-contract §3.4).

A graph is a list of ``TaskSpec``; ``depends_on`` names other specs of the same instance by
their key. ``on_error`` tasks are cleanups that run whatever happened once a parent completed
("finally"); ``on_error_only`` ones run only when the execution fails or is cancelled ("except").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coriolis import constants as c


@dataclass
class TaskSpec:
    key: str
    task_type: str
    depends_on: list[str] = field(default_factory=list)
    on_error: bool = False
    on_error_only: bool = False


class GraphBuilder:
    def __init__(self) -> None:
        self.specs: list[TaskSpec] = []
        self._counts: dict[str, int] = {}

    def add(self, task_type: str, *depends_on: TaskSpec | None, on_error: bool = False,
            on_error_only: bool = False) -> TaskSpec:
        n = self._counts.get(task_type, 0)
        self._counts[task_type] = n + 1
        spec = TaskSpec(f"{task_type}#{n}", task_type,
                        [d.key for d in depends_on if d is not None], on_error, on_error_only)
        self.specs.append(spec)
        return spec


def _os_morphing(g: GraphBuilder, after: TaskSpec,
                 skip: bool) -> list[TaskSpec]:
    """DEPLOY_OS_MORPHING_RESOURCES → OS_MORPHING → DELETE_OS_MORPHING_RESOURCES [oe]; returns
    what the next step depends on: OS_MORPHING and the cleanup (the cleanup alone would let
    the next step run after a failed morphing), or ``after`` when morphing is skipped."""
    if skip:
        return [after]
    deploy = g.add(c.TASK_TYPE_DEPLOY_OS_MORPHING_RESOURCES, after)
    morph = g.add(c.TASK_TYPE_OS_MORPHING, deploy)
    return [morph, g.add(c.TASK_TYPE_DELETE_OS_MORPHING_RESOURCES, deploy, morph,
                         on_error=True)]


def migration_graph(replication_count: int = 1, shutdown_instances: bool = False,
                    skip_os_morphing: bool = False) -> list[TaskSpec]:
    g = GraphBuilder()
    info = g.add(c.TASK_TYPE_GET_INSTANCE_INFO)
    validate_src = g.add(c.TASK_TYPE_VALIDATE_MIGRATION_SOURCE_INPUTS)
    validate_dst = g.add(c.TASK_TYPE_VALIDATE_MIGRATION_DESTINATION_INPUTS, info)
    disks = g.add(c.TASK_TYPE_CREATE_INSTANCE_DISKS, validate_src, validate_dst)
    src_res = g.add(c.TASK_TYPE_DEPLOY_MIGRATION_SOURCE_RESOURCES, disks)
    dst_res = g.add(c.TASK_TYPE_DEPLOY_MIGRATION_TARGET_RESOURCES, disks)
    last: TaskSpec = dst_res
    previous: TaskSpec | None = None
    for i in range(replication_count):
        parents: list[TaskSpec | None] = [src_res, dst_res, previous]
        if shutdown_instances and i == replication_count - 1:
            parents = [g.add(c.TASK_TYPE_SHUTDOWN_INSTANCE, *parents)]
        previous = last = g.add(c.TASK_TYPE_REPLICATE_DISKS, *parents)
    g.add(c.TASK_TYPE_DELETE_MIGRATION_SOURCE_RESOURCES, src_res, last, on_error=True)
    dst_cleanup = g.add(c.TASK_TYPE_DELETE_MIGRATION_TARGET_RESOURCES, dst_res, last,
                        on_error=True)
    deploy = g.add(c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES, last, dst_cleanup)
    finalize = g.add(c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT,
                     *_os_morphing(g, deploy, skip_os_morphing))
    g.add(c.TASK_TYPE_CLEANUP_FAILED_INSTANCE_DEPLOYMENT, deploy, finalize, on_error_only=True)
    g.add(c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE, disks, finalize, on_error_only=True)
    return g.specs


def replica_execution_graph(shutdown_instances: bool = False) -> list[TaskSpec]:
    g = GraphBuilder()
    validate_src = g.add(c.TASK_TYPE_VALIDATE_REPLICA_SOURCE_INPUTS)
    info = g.add(c.TASK_TYPE_GET_INSTANCE_INFO)
    validate_dst = g.add(c.TASK_TYPE_VALIDATE_REPLICA_DESTINATION_INPUTS, info)
    disks = g.add(c.TASK_TYPE_DEPLOY_REPLICA_DISKS, validate_src, validate_dst)
    # The replica disks stay restorable to the last completed execution: snapshot them before
    # writing, drop the snapshot on success, roll back to it on failure or cancel.
    snapshot = g.add(c.TASK_TYPE_CREATE_REPLICA_DISK_SNAPSHOTS, disks)
    src_res = g.add(c.TASK_TYPE_DEPLOY_REPLICA_SOURCE_RESOURCES, snapshot)
    dst_res = g.add(c.TASK_TYPE_DEPLOY_REPLICA_TARGET_RESOURCES, snapshot)
    parents: list[TaskSpec | None] = [src_res, dst_res]
    if shutdown_instances:
        parents = [g.add(c.TASK_TYPE_SHUTDOWN_INSTANCE, *parents)]
    replicate = g.add(c.TASK_TYPE_REPLICATE_DISKS, *parents)
    # The commit point: the copy's writes and its change-tracking point come into force. The
    # roll-back waits for it (the two never touch the disks at once; after a commit there is
    # nothing to roll back), and the source cleanup for both (it keeps the tracking point in
    # force and drops the other).
    commit = g.add(c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS, replicate)
    restore = g.add(c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS, snapshot, replicate, commit,
                    on_error_only=True)
    g.add(c.TASK_TYPE_DELETE_REPLICA_SOURCE_RESOURCES, src_res, replicate, commit, restore,
          on_error=True)
    g.add(c.TASK_TYPE_DELETE_REPLICA_TARGET_RESOURCES, dst_res, replicate, on_error=True)
    return g.specs


def replica_deploy_graph(clone_disks: bool = True,
                         skip_os_morphing: bool = False) -> list[TaskSpec]:
    g = GraphBuilder()
    validate = g.add(c.TASK_TYPE_VALIDATE_REPLICA_DEPLOYMENT_INPUTS)
    snapshots = g.add(c.TASK_TYPE_CREATE_REPLICA_DISK_SNAPSHOTS, validate)
    deploy = g.add(c.TASK_TYPE_DEPLOY_REPLICA_INSTANCE_RESOURCES, snapshots)
    finalize = g.add(c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT,
                     *_os_morphing(g, deploy, skip_os_morphing))
    g.add(c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS, snapshots, finalize,
          on_error=clone_disks)
    cleanup = g.add(c.TASK_TYPE_CLEANUP_FAILED_REPLICA_INSTANCE_DEPLOYMENT, deploy, finalize,
                    on_error_only=True)
    if not clone_disks:
        # Roll the replica disks back when the deploy fails (upstream marks it on_error after
        # an on_error_only parent; "only on failure" is what it means).
        g.add(c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS, snapshots, cleanup, on_error_only=True)
    return g.specs


def replica_disks_delete_graph() -> list[TaskSpec]:
    g = GraphBuilder()
    snapshots = g.add(c.TASK_TYPE_DELETE_REPLICA_SOURCE_DISK_SNAPSHOTS)
    g.add(c.TASK_TYPE_DELETE_REPLICA_DISKS, snapshots)
    return g.specs


def replica_update_graph() -> list[TaskSpec]:
    g = GraphBuilder()
    info = g.add(c.TASK_TYPE_GET_INSTANCE_INFO)
    src = g.add(c.TASK_TYPE_UPDATE_SOURCE_REPLICA)
    g.add(c.TASK_TYPE_UPDATE_DESTINATION_REPLICA, info, src)
    return g.specs


def check_graph(specs: list[TaskSpec]) -> None:
    """Every dependency exists and the graph has no cycle (raises ValueError)."""
    keys = {s.key for s in specs}
    deps = {s.key: set(s.depends_on) for s in specs}
    for s in specs:
        missing = set(s.depends_on) - keys
        if missing:
            raise ValueError(f"{s.key} depends on unknown {sorted(missing)}")
    done: set[str] = set()
    while len(done) < len(specs):
        ready = [k for k, d in deps.items() if k not in done and d <= done]
        if not ready:
            raise ValueError("task graph has a cycle")
        done.update(ready)
