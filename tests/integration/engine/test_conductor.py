"""The conductor, bus and worker together on a real SQLite database and the real `local`
provider, moving real disk images."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coriolis import constants as c
from coriolis import exceptions
from coriolis.cmd.local_cloud import add_instance
from coriolis.db import models
from coriolis.service import Services
from coriolis.transfer.extents import sparse_file_extents
from tests.integration.conftest import FINAL


def wait_execution(services: Services, action_id: str, timeout: float = 60) -> models.Execution:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with services.db.session() as session:
            action = session.get(models.TransferAction, action_id)
            execution = action.executions[-1]
            if execution.status in FINAL:
                _ = [(t.progress_updates, t.events) for t in execution.tasks]
                return execution
        time.sleep(0.1)
    raise AssertionError("execution did not finish")


def disks(cloud: Path, name: str) -> list[Path]:
    desc = json.loads((cloud / "instances" / name / "instance.json").read_text())
    return [(cloud / "instances" / name / d["file"]).resolve() for d in desc["disks"]]


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)]).returncode == 0


def body(endpoints: dict[str, str], instance: str, **extra: object) -> dict:
    return {"origin_endpoint_id": endpoints["src"], "destination_endpoint_id": endpoints["dst"],
            "instances": [instance], "source_environment": {},
            "destination_environment": {"storage_backend": "bulk"},
            "network_map": {"lan": "prod"}, "skip_os_morphing": True, **extra}


@pytest.mark.parametrize("instance, backend", [("vm1", "bulk"), ("vm2", "fast")])
def test_migration_completes_and_disks_match(services, ctx, endpoints, clouds, instance,
                                             backend) -> None:
    mid = services.conductor.create_migration(
        ctx, body(endpoints, instance, destination_environment={"storage_backend": backend}))
    execution = wait_execution(services, mid)
    statuses = {t.task_type: t.status for t in execution.tasks}
    assert execution.status == c.EXECUTION_STATUS_COMPLETED, [
        (t.task_type, t.status, t.exception_details) for t in execution.tasks]
    assert statuses[c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE] == c.TASK_STATUS_ON_ERROR_ONLY
    for a, b in zip(disks(clouds["src"], instance), disks(clouds["dst"], instance), strict=True):
        assert same(a, b)
    with services.db.session() as session:
        action = session.get(models.TransferAction, mid)
        assert action.last_execution_status == c.EXECUTION_STATUS_COMPLETED
        assert action.transfer_result[instance]["instance_name"] == instance
        volumes = action.info[instance]["volumes_info"]
        # second (incremental) sync of the default replication_count=2 wrote nothing
        assert all(v["bytes_sent"] == 0 and v["bytes_scanned"] > 0 for v in volumes)
        syncs = [t for t in action.executions[0].tasks
                 if t.task_type == c.TASK_TYPE_REPLICATE_DISKS]
        assert len(syncs) == 2 and syncs[0].progress_updates


@pytest.mark.parametrize("change, needle", [
    ({"instances": ["ghost"]}, "ghost"),
    ({"destination_environment": {"storage_backend": "nope"}}, "nope"),
    ({"network_map": {}}, "lan"),
    ({"destination_environment": {"bogus": 1}}, "bogus"),
    ({"storage_mappings": {"default": 3}}, "storage_mappings"),
    ({"instances": []}, "instances"),
])
def test_bad_input_refused_before_anything_is_stored(services, ctx, endpoints, change,
                                                     needle) -> None:
    with pytest.raises(exceptions.InvalidInput, match=needle):
        services.conductor.create_migration(ctx, {**body(endpoints, "vm1"), **change})
    with services.db.session() as session:
        assert session.query(models.TransferAction).count() == 0


def test_other_project_endpoints_are_not_found(services, endpoints) -> None:
    from coriolis.context import RequestContext

    other = RequestContext(user_id="u2", project_id="other", roles=("member",))
    with pytest.raises(exceptions.NotFound):
        services.conductor.create_migration(other, body(endpoints, "vm1"))


def test_failure_runs_cleanup_and_removes_destination_disks(services, ctx, endpoints,
                                                            clouds) -> None:
    add_instance(clouds["src"], "frail", disk_size="20M", network="lan")
    src_disk = disks(clouds["src"], "frail")[0]
    mid = services.conductor.create_migration(ctx, body(endpoints, "frail"))
    # The validation passed; now the disk disappears before the copy reads it.
    src_disk.unlink()
    execution = wait_execution(services, mid)
    assert execution.status == c.EXECUTION_STATUS_ERROR
    by_type = {t.task_type: t for t in execution.tasks}
    failed = [t for t in execution.tasks if t.status == c.TASK_STATUS_ERROR]
    assert failed and "frail" in (failed[0].exception_details or "")
    assert by_type[c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT].status == c.TASK_STATUS_UNSCHEDULED
    if by_type[c.TASK_TYPE_CREATE_INSTANCE_DISKS].status == c.TASK_STATUS_COMPLETED:
        assert by_type[c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE].status == \
            c.TASK_STATUS_COMPLETED
    assert not list((clouds["dst"] / "storage").glob("*/frail-*"))
    assert not (clouds["dst"] / "instances" / "frail").exists()


@pytest.mark.parametrize("force", [False, True])
def test_cancel_running_copy(services, ctx, endpoints, clouds, force) -> None:
    add_instance(clouds["src"], "big", disk_size="1500M", allocated_fraction=0.5,
                 network="lan", fill="random")
    mid = services.conductor.create_migration(ctx, body(endpoints, "big",
                                                        replication_count=1))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with services.db.session() as session:
            execution = session.get(models.TransferAction, mid).executions[0]
            copy = [t for t in execution.tasks if t.task_type == c.TASK_TYPE_REPLICATE_DISKS][0]
            if copy.status == c.TASK_STATUS_RUNNING:
                break
        time.sleep(0.02)
    services.conductor.cancel_execution(ctx, execution.id, force)
    execution = wait_execution(services, mid)
    assert execution.status == c.EXECUTION_STATUS_CANCELED
    if force:
        time.sleep(1)  # the copy thread stops at its next chunk
    statuses = {t.task_type: t.status for t in execution.tasks}
    assert statuses[c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES] in c.CANCELED_TASK_STATUSES
    assert statuses[c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE] == c.TASK_STATUS_COMPLETED
    assert not list((clouds["dst"] / "storage").glob("*/big-*"))
    with pytest.raises(exceptions.InvalidState):
        services.conductor.cancel_execution(ctx, execution.id, False)


def _interrupted(services: Services, src: str, dst: str, execution_status: str,
                 tasks: list[tuple[str, str, bool]]) -> str:
    """A transfer whose execution a dead process left ``execution_status`` with ``tasks``
    (type, status, on_error_only) of instance vm1, nothing in its task_info."""
    from tests.integration.conftest import PROJECT

    with services.db.session() as session:
        action = models.TransferAction(type="migration", project_id=PROJECT,
                                       origin_endpoint_id=src, destination_endpoint_id=dst,
                                       instances=["vm1"], last_execution_status=execution_status)
        execution = models.Execution(action=action, number=1, type="migration",
                                     status=execution_status)
        for task_type, status, on_error_only in tasks:
            models.Task(execution=execution, instance="vm1", task_type=task_type,
                        status=status, on_error_only=on_error_only)
        session.add(action)
        session.flush()
        return action.id


def test_restart_runs_interrupted_tasks_again(tmp_path, ctx, clouds) -> None:
    """A task left RUNNING by a process that died is sent again under the same id (here it
    then fails: the hand-made row has no export_info; tests/e2e/test_crash_matrix.py has
    the real runs); an execution left CANCELLING ends, its interrupted task cancelled."""
    from coriolis.config import Settings
    from coriolis.service import build_all_in_one
    from tests.integration.conftest import PROJECT, add_endpoint

    settings = Settings(data_dir=tmp_path / "data")
    first = build_all_in_one(settings)
    src = add_endpoint(first, PROJECT, "src", clouds["src"])
    dst = add_endpoint(first, PROJECT, "dst", clouds["dst"])
    running = _interrupted(first, src, dst, "RUNNING",
                           [(c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES, "RUNNING", False)])
    cancelling = _interrupted(first, src, dst, "CANCELLING",
                              [(c.TASK_TYPE_REPLICATE_DISKS, "CANCELLING", False),
                               (c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE, "RUNNING", True)])
    first.close()
    second = build_all_in_one(settings)
    try:
        execution = wait_execution(second, running)
        assert execution.status == c.EXECUTION_STATUS_ERROR
        task = execution.tasks[0]
        assert "runs again" in task.events[0].message
        assert "lacks 'export_info'" in (task.exception_details or "")
        execution = wait_execution(second, cancelling)
        assert execution.status == c.EXECUTION_STATUS_CANCELED
        statuses = {t.task_type: t.status for t in execution.tasks}
        assert statuses == {c.TASK_TYPE_REPLICATE_DISKS: c.TASK_STATUS_CANCELED,
                            c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE: c.TASK_STATUS_COMPLETED}
    finally:
        second.close()


def test_a_cancel_lets_a_half_done_task_that_a_cleanup_needs_finish(services, ctx,
                                                                     endpoints) -> None:
    """Cancelled while a task that makes what a cleanup removes waits, taken over half-done,
    to run again (PENDING, once started: a process id): it is not cancelled, so its cleanup
    learns all it made; a task never started is."""
    action_id = _interrupted(services, endpoints["src"], endpoints["dst"], "RUNNING",
                             [(c.TASK_TYPE_CREATE_INSTANCE_DISKS, "PENDING", False),
                              (c.TASK_TYPE_REPLICATE_DISKS, "PENDING", False)])
    with services.db.session() as session:
        execution = session.get(models.TransferAction, action_id).executions[0]
        half_done = next(t for t in execution.tasks
                         if t.task_type == c.TASK_TYPE_CREATE_INSTANCE_DISKS)
        half_done.process_id, execution_id = 4242, execution.id
    services.conductor.cancel_execution(ctx, execution_id, force=False)
    with services.db.reader() as session:
        statuses = {t.task_type: t.status
                    for t in session.get(models.Execution, execution_id).tasks}
    assert statuses[c.TASK_TYPE_REPLICATE_DISKS] == c.TASK_STATUS_CANCELED
    assert statuses[c.TASK_TYPE_CREATE_INSTANCE_DISKS] != c.TASK_STATUS_CANCELED


def wait_task(services: Services, action_id: str, task_type: str, status: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with services.db.session() as session:
            execution = session.get(models.TransferAction, action_id).executions[-1]
            if any(t.task_type == task_type and t.status == status for t in execution.tasks):
                return execution.id
        time.sleep(0.02)
    raise AssertionError(f"{task_type} never reached {status}")


def test_replica_refusals_and_rollback_of_a_cancelled_execution(services, ctx, endpoints,
                                                                clouds, tmp_path) -> None:
    add_instance(clouds["src"], "busy", disk_size="1200M", allocated_fraction=0.5,
                 network="lan", seed=9)
    source = disks(clouds["src"], "busy")[0]
    replica_id = services.conductor.create_replica(ctx, body(endpoints, "busy"))
    with pytest.raises(exceptions.InvalidState, match="no completed execution"):
        services.conductor.deploy_replica(ctx, {"replica_id": replica_id})
    services.conductor.execute_replica(ctx, replica_id, False)
    assert wait_execution(services, replica_id).status == c.EXECUTION_STATUS_COMPLETED
    before = tmp_path / "before.raw"
    subprocess.run(["cp", "--sparse=always", str(source), str(before)], check=True)

    with open(source, "r+b") as f:  # rewrite every allocated MiB: execution 2 takes a while
        for ext in sparse_file_extents(str(source)):
            if not ext.zero:
                f.seek(ext.offset)
                f.write(os.urandom(ext.length))
    services.conductor.execute_replica(ctx, replica_id, False)
    execution_id = wait_task(services, replica_id, c.TASK_TYPE_REPLICATE_DISKS,
                             c.TASK_STATUS_RUNNING)
    with pytest.raises(exceptions.InvalidState, match="in progress"):
        services.conductor.execute_replica(ctx, replica_id, False)
    with pytest.raises(exceptions.InvalidState, match="in progress"):
        services.conductor.delete_action(ctx, replica_id)
    with pytest.raises(exceptions.InvalidState):
        services.conductor.delete_execution(ctx, execution_id)
    services.conductor.cancel_execution(ctx, execution_id, False)
    cancelled = wait_execution(services, replica_id)
    assert cancelled.status == c.EXECUTION_STATUS_CANCELED
    statuses = {t.task_type: t.status for t in cancelled.tasks}
    assert statuses[c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS] == c.TASK_STATUS_COMPLETED
    with services.db.session() as session:
        volume = session.get(models.TransferAction, replica_id).info["busy"]["volumes_info"][0]
    # rolled back: the replica disk is what execution 1 left, not a mix
    assert same(before, Path(volume["path"]))
    assert not Path(volume["path"] + ".coriolis-undo").exists()

    services.conductor.execute_replica(ctx, replica_id, False)
    assert wait_execution(services, replica_id).status == c.EXECUTION_STATUS_COMPLETED
    assert same(source, Path(volume["path"]))


def qcow2_bitmaps(path: Path) -> list[str]:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)
    return [b["name"] for b in info["format-specific"]["data"].get("bitmaps", [])]


def test_qcow2_replica_reads_only_what_the_dirty_bitmap_marks(services, ctx, endpoints,
                                                              clouds) -> None:
    add_instance(clouds["src"], "cbt", disk_size="256M", disk_format="qcow2",
                 allocated_fraction=0.5, network="lan", seed=4)
    source = disks(clouds["src"], "cbt")[0]
    replica_id = services.conductor.create_replica(ctx, body(endpoints, "cbt"))

    def run() -> dict:
        services.conductor.execute_replica(ctx, replica_id, False)
        assert wait_execution(services, replica_id).status == c.EXECUTION_STATUS_COMPLETED
        with services.db.session() as session:
            action = session.get(models.TransferAction, replica_id)
            return action.info["cbt"]["volumes_info"][0]

    first = run()
    assert first["bytes_scanned"] >= 100 * 1024 * 1024
    assert qcow2_bitmaps(source) == [first["cbt"]]
    # a "guest" writes through qemu: 3 x 64 KiB, one of them zeroes
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 1M 64k",
                    "-c", "write -P 0x22 100M 64k", "-c", "write -z 200M 64k", str(source)],
                   check=True, capture_output=True)
    second = run()
    assert second["bytes_scanned"] == 3 * 64 * 1024
    assert second["bytes_changed"] <= 3 * 64 * 1024
    assert qcow2_bitmaps(source) == [second["cbt"]] != [first["cbt"]]
    assert same(source, Path(second["path"]))


def test_a_task_whose_end_report_was_lost_is_taken_over_and_a_plain_cancel_ends(
        services, ctx, endpoints, clouds, monkeypatch) -> None:
    """Issue 12: a task whose end report never reached the database (there: `database is
    locked` under load) stayed RUNNING, and a plain cancel left its execution CANCELLING
    forever. The lost report is simulated (dropping the report is the only way to lose it on
    demand); the conductor's check finds the task no longer run by this process, and the
    cancel ends, its cleanups done."""
    from coriolis.worker import service as worker_service

    real_report = worker_service._report
    dropped: list[str] = []

    def lossy(send, *args, **kwargs):  # type: ignore[no-untyped-def]
        if send.__name__ == "task_completed" and not dropped:
            with services.db.session() as session:
                task = session.get(models.Task, args[0])
                if task.task_type == c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES:
                    dropped.append(task.id)
                    return
        real_report(send, *args, **kwargs)

    monkeypatch.setattr(worker_service, "_report", lossy)
    mid = services.conductor.create_migration(ctx, body(endpoints, "vm1", replication_count=1))
    deadline = time.monotonic() + 60
    while not dropped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dropped
    time.sleep(0.5)  # the runner thread ends
    with services.db.session() as session:
        execution_id = session.get(models.TransferAction, mid).executions[0].id
        assert session.get(models.Task, dropped[0]).status == c.TASK_STATUS_RUNNING
    services.conductor.cancel_execution(ctx, execution_id, force=False)
    services.conductor.check_workers()
    services.conductor.check_workers()
    execution = wait_execution(services, mid, timeout=30)
    assert execution.status == c.EXECUTION_STATUS_CANCELED
    statuses = {t.task_type: t.status for t in execution.tasks}
    assert statuses[c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES] == c.TASK_STATUS_COMPLETED
    assert statuses[c.TASK_TYPE_CLEANUP_FAILED_INSTANCE_DEPLOYMENT] == c.TASK_STATUS_COMPLETED
    assert statuses[c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE] == c.TASK_STATUS_COMPLETED
    assert not (clouds["dst"] / "instances" / "vm1").exists()
    assert not list((clouds["dst"] / "storage").glob("*/vm1-*"))


def test_a_task_end_and_the_dispatch_it_allows_are_one_transaction(services, ctx, endpoints,
                                                                   monkeypatch) -> None:
    """Each worker report is one write transaction: a task's end also sends the tasks it made
    ready (no second transaction per task), and its start records the "started on" event
    (no report of its own)."""
    callers: collections.Counter[str] = collections.Counter()
    real = services.db.session

    def counting():  # type: ignore[no-untyped-def]
        callers[sys._getframe(1).f_code.co_name] += 1
        return real()

    monkeypatch.setattr(services.db, "session", counting)
    mid = services.conductor.create_migration(ctx, body(endpoints, "vm1"))
    execution = wait_execution(services, mid)
    assert execution.status == c.EXECUTION_STATUS_COMPLETED
    ran = [t for t in execution.tasks if t.status == c.TASK_STATUS_COMPLETED]
    assert len(ran) >= 8
    # Only the create's own dispatch opens a transaction for dispatching.
    assert callers["_dispatch_pending"] == 1, callers
    for task in ran:
        started = [e.message for e in task.events if " started on " in e.message]
        assert started == [f"{task.task_type} started on {task.host}"], task.task_type
        assert task.events[0].message == started[0]
