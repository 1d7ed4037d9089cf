"""Replica disks are always in a known committed state (issue 12, items 2b and 2c): the
change-tracking point moves only with a committed execution, a roll-back and a commit never
touch the disks at once, and source snapshots hold every file of a disk. Real services on
SQLite, the real `local` provider, real qemu-img images; failures are injected through
CORIOLIS_TEST_CRASH_AT (coriolis/worker/faults.py)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coriolis import constants as c
from coriolis import exceptions
from coriolis.cmd.local_cloud import add_instance
from coriolis.db import models
from coriolis.worker import faults
from tests.integration.engine.test_conductor import (
    body,
    disks,
    qcow2_bitmaps,
    same,
    wait_execution,
    wait_task,
)

MiB = 1024 * 1024


@pytest.fixture
def arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Arm injected faults (each fires once) in the in-process worker."""
    file = tmp_path / "faults"
    file.write_text("")
    monkeypatch.setenv(faults.ENV, f"@{file}")
    return file.write_text


def volume_of(services, replica_id: str, instance: str) -> dict:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        return session.get(models.TransferAction, replica_id).info[instance]["volumes_info"][0]


def execute(services, ctx, replica_id: str) -> models.Execution:  # type: ignore[no-untyped-def]
    services.conductor.execute_replica(ctx, replica_id, False)
    return wait_execution(services, replica_id)


def cancel_before_the_commit(services, ctx, replica_id: str,  # type: ignore[no-untyped-def]
                             then: Callable[[], None] = lambda: None) -> models.Execution:
    """Run an execution whose commit is held (``DELETE_REPLICA_TARGET_DISK_SNAPSHOTS:hold``
    armed), call ``then``, cancel the execution there and wait for its end."""
    services.conductor.execute_replica(ctx, replica_id, False)
    execution_id = wait_task(services, replica_id,
                             c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS,
                             c.TASK_STATUS_RUNNING)
    then()
    services.conductor.cancel_execution(ctx, execution_id, False)
    return wait_execution(services, replica_id)


def statuses(execution: models.Execution) -> dict[str, str]:
    return {t.task_type: t.status for t in execution.tasks}


def snapshot_debris(cloud: Path) -> list[Path]:
    scratch = cloud / ".coriolis"
    return sorted(scratch.iterdir()) if scratch.is_dir() else []


def test_a_rolled_back_execution_leaves_the_previous_tracking_point(
        services, ctx, endpoints, clouds, tmp_path, arm) -> None:
    """2b: execution 2 copies 12 MiB of guest writes and is cancelled as its copy finishes
    (its commit held until the cancel): rolled back, execution 3 must send them again (main
    kept execution 2's bitmap: execution 3 scanned 0 bytes and the replica differed from the
    source)."""
    add_instance(clouds["src"], "tracked", disk_size="64M", disk_format="qcow2",
                 allocated_fraction=0.5, network="lan", seed=6)
    source = disks(clouds["src"], "tracked")[0]
    replica_id = services.conductor.create_replica(ctx, body(endpoints, "tracked"))
    assert execute(services, ctx, replica_id).status == c.EXECUTION_STATUS_COMPLETED
    first = volume_of(services, replica_id, "tracked")
    before = tmp_path / "before.raw"
    subprocess.run(["cp", "--sparse=always", first["path"], str(before)], check=True)

    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 8M",
                    "-c", "write -P 0x44 40M 4M", str(source)], check=True, capture_output=True)
    arm(f"{c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS}:hold")
    second = cancel_before_the_commit(services, ctx, replica_id)
    assert second.status == c.EXECUTION_STATUS_CANCELED
    assert statuses(second)[c.TASK_TYPE_REPLICATE_DISKS] == c.TASK_STATUS_COMPLETED
    assert statuses(second)[c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS] == \
        c.TASK_STATUS_COMPLETED
    rolled_back = volume_of(services, replica_id, "tracked")
    assert same(before, Path(rolled_back["path"]))
    assert rolled_back["cbt"] == first["cbt"]
    assert "pending" not in rolled_back and "snapshot" not in rolled_back
    assert qcow2_bitmaps(source) == [first["cbt"]]  # execution 2's went with it
    assert not Path(rolled_back["path"] + ".coriolis-undo").exists()

    third = execute(services, ctx, replica_id)
    assert third.status == c.EXECUTION_STATUS_COMPLETED
    done = volume_of(services, replica_id, "tracked")
    assert done["bytes_scanned"] >= 12 * MiB
    assert same(source, Path(done["path"]))
    assert qcow2_bitmaps(source) == [done["cbt"]] != [first["cbt"]]


def test_a_cancel_during_the_commit_never_races_the_roll_back(
        services, ctx, endpoints, clouds) -> None:
    """2b: a cancel that arrives while the snapshots are being dropped (the commit) must not
    start the roll-back beside it (main: FileNotFoundError on .coriolis-undo, ERROR). The
    commit is held on the disks' lock while the cancel arrives."""
    add_instance(clouds["src"], "late", disk_size="48M", allocated_fraction=0.5,
                 network="lan", seed=8)
    source = disks(clouds["src"], "late")[0]
    replica_id = services.conductor.create_replica(ctx, body(endpoints, "late"))
    assert execute(services, ctx, replica_id).status == c.EXECUTION_STATUS_COMPLETED
    volume = volume_of(services, replica_id, "late")
    with open(source, "r+b") as f:
        f.write(b"\x5a" * 4 * MiB)

    services.conductor.execute_replica(ctx, replica_id, False)
    wait_task(services, replica_id, c.TASK_TYPE_CREATE_REPLICA_DISK_SNAPSHOTS,
              c.TASK_STATUS_COMPLETED)
    held = os.open(os.path.dirname(volume["path"]), os.O_RDONLY | os.O_DIRECTORY)
    try:  # the disks' lock (replica_disks._locked): a flock of their folder
        fcntl.flock(held, fcntl.LOCK_EX)
        execution_id = wait_task(services, replica_id,
                                 c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS,
                                 c.TASK_STATUS_RUNNING)
        services.conductor.cancel_execution(ctx, execution_id, False)
        time.sleep(1)  # a roll-back started now would run beside the commit
    finally:
        os.close(held)
    second = wait_execution(services, replica_id)
    assert not [t for t in second.tasks if t.status == c.TASK_STATUS_ERROR], [
        (t.task_type, t.exception_details) for t in second.tasks]
    # The commit had begun: the execution's data stays and is in force.
    assert statuses(second)[c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS] == \
        c.TASK_STATUS_COMPLETED
    committed = volume_of(services, replica_id, "late")
    assert same(source, Path(committed["path"]))
    assert "pending" not in committed and "snapshot" not in committed
    assert not Path(committed["path"] + ".coriolis-undo").exists()
    third = execute(services, ctx, replica_id)
    assert third.status == c.EXECUTION_STATUS_COMPLETED
    assert volume_of(services, replica_id, "late")["bytes_sent"] == 0


def _relative_overlay(folder: Path) -> None:
    """disk0.qcow2 becomes an overlay over base.qcow2 (named relatively) with its own
    writes on top."""
    disk = folder / "disk0.qcow2"
    (folder / "base.qcow2").write_bytes(b"")
    disk.rename(folder / "base.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F",
                    "qcow2", str(disk)], check=True, cwd=folder)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x66 2M 3M", str(disk)],
                   check=True, capture_output=True)


def _absolute_chain(folder: Path) -> None:
    """disk0.qcow2 becomes the top of a two-file chain whose base (in a sub-folder) it names
    by an absolute path."""
    disk = folder / "disk0.qcow2"
    (folder / "bases").mkdir()
    base = folder / "bases" / "base.qcow2"
    disk.rename(base)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F",
                    "qcow2", str(disk)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 6M 1M", str(disk)],
                   check=True, capture_output=True)


def _vmdk_with_extent(folder: Path) -> None:
    """disk0.qcow2 becomes disk0.vmdk: a descriptor naming a separate flat extent file."""
    disk = folder / "disk0.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "vmdk", "-o",
                    "subformat=monolithicFlat", str(disk), str(folder / "disk0.vmdk")],
                   check=True)
    disk.unlink()
    desc_file = folder / "instance.json"
    desc = json.loads(desc_file.read_text())
    desc["disks"][0].update(file="disk0.vmdk", format="vmdk")
    desc_file.write_text(json.dumps(desc))


@pytest.mark.parametrize("make", [_relative_overlay, _absolute_chain, _vmdk_with_extent],
                         ids=["relative-backing", "absolute-chain", "vmdk-extent"])
def test_source_snapshot_holds_every_file_of_the_disk(services, ctx, endpoints, clouds,
                                                      make) -> None:
    """2c: with "snapshot": true the snapshot copies the whole image (main copied only the
    top file: ERROR, "Could not open backing file .../.coriolis/snapshot-.../base.qcow2")."""
    add_instance(clouds["src"], "layered", disk_size="24M", disk_format="qcow2",
                 allocated_fraction=0.5, network="lan", seed=12)
    make(clouds["src"] / "instances" / "layered")
    source = disks(clouds["src"], "layered")[0]
    replica_id = services.conductor.create_replica(
        ctx, body(endpoints, "layered", source_environment={"snapshot": True}))
    execution = execute(services, ctx, replica_id)
    assert execution.status == c.EXECUTION_STATUS_COMPLETED, [
        (t.task_type, t.status, t.exception_details) for t in execution.tasks]
    assert same(source, Path(volume_of(services, replica_id, "layered")["path"]))
    assert snapshot_debris(clouds["src"]) == []


def has_undo(path: Path) -> bool:
    """An undo journal (raw) or the qcow2 snapshot (qcow2) of a replica disk is there."""
    if path.suffix == ".raw":
        return Path(f"{path}.coriolis-undo").exists()
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)
    return any(s["name"] == "coriolis-replica" for s in info.get("snapshots") or [])


@pytest.mark.parametrize("backend", ["bulk", "fast"], ids=["raw-journal", "qcow2-snapshot"])
def test_a_leftover_snapshot_is_rolled_back_first_and_blocks_deploys(
        services, ctx, endpoints, clouds, tmp_path, arm, backend) -> None:
    """Execution 2 is cancelled before its commit and its roll-back fails (an immutable disk
    file): its undo journal (raw) or qcow2 snapshot stays. A deploy is refused (409) until
    the next execution, whose first task rolls the disks back and says so."""
    add_instance(clouds["src"], "stuck", disk_size="32M", allocated_fraction=0.5,
                 network="lan", seed=5)
    source = disks(clouds["src"], "stuck")[0]
    replica_id = services.conductor.create_replica(ctx, body(
        endpoints, "stuck", destination_environment={"storage_backend": backend}))
    assert execute(services, ctx, replica_id).status == c.EXECUTION_STATUS_COMPLETED
    path = Path(volume_of(services, replica_id, "stuck")["path"])
    before = tmp_path / "before.raw"
    subprocess.run(["cp", "--sparse=always", str(path), str(before)], check=True)
    with open(source, "r+b") as f:
        f.seek(3 * MiB)
        f.write(b"\xa5" * 5 * MiB)
    arm(f"{c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS}:hold")
    # Then the roll-back fails for real: the disk cannot be opened for writing.
    try:
        second = cancel_before_the_commit(
            services, ctx, replica_id,
            then=lambda: subprocess.run(["chattr", "+i", str(path)], check=True))
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert second.status == c.EXECUTION_STATUS_ERROR
    assert statuses(second)[c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS] == c.TASK_STATUS_ERROR
    assert same(source, path) and has_undo(path)

    with pytest.raises(exceptions.Conflict, match="neither committed nor rolled back"):
        services.conductor.deploy_replica(ctx, {"replica_id": replica_id})
    with pytest.raises(exceptions.Conflict, match=f"execution 2 \\({second.id}, ERROR\\)"):
        services.conductor.deploy_replica(ctx, {"replica_id": replica_id, "force": True})

    third = execute(services, ctx, replica_id)
    assert third.status == c.EXECUTION_STATUS_COMPLETED
    first_task = next(t for t in third.tasks if t.task_type == c.TASK_TYPE_DEPLOY_REPLICA_DISKS)
    with services.db.session() as session:
        events = [e.message for e in session.get(models.Task, first_task.id).events]
    assert any(f"Rolled back what execution {second.id} wrote" in e for e in events), events
    assert same(source, path) and not has_undo(path)
    # rolled back to execution 1, then execution 3 sent the 5 MiB again
    assert volume_of(services, replica_id, "stuck")["bytes_sent"] == 5 * MiB
    deployed = services.conductor.deploy_replica(ctx, {"replica_id": replica_id,
                                                       "skip_os_morphing": True})
    assert wait_execution(services, deployed).status == c.EXECUTION_STATUS_COMPLETED


def test_a_source_snapshot_never_reads_the_live_files(clouds) -> None:
    """2c: the snapshot of a qcow2 whose base is named by an absolute path reads a copy of
    the base too (main: the copied top still read the live base file)."""
    from coriolis.providers.local.provider import LocalProvider

    add_instance(clouds["src"], "chained", disk_size="16M", disk_format="qcow2",
                 allocated_fraction=0.5, network="lan", seed=13)
    folder = clouds["src"] / "instances" / "chained"
    _absolute_chain(folder)
    provider, conn = LocalProvider(), {"path": str(clouds["src"])}
    export_info = provider.get_instance(conn, {}, "chained")
    resources = provider.deploy_source_resources(conn, {"snapshot": True}, export_info)
    top = resources["snapshots"]["disk0"]
    chain = json.loads(subprocess.run(
        ["qemu-img", "info", "--backing-chain", "--output=json", top],
        capture_output=True, text=True, check=True).stdout)
    inside = str(Path(resources["snapshot_dir"]).resolve())
    assert len(chain) == 2
    assert all(os.path.realpath(e["filename"]).startswith(inside + os.sep) for e in chain)
    frozen = clouds["src"] / "frozen.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", top, str(frozen)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x99 0 1M",
                    str(folder / "bases" / "base.qcow2")], check=True, capture_output=True)
    assert same(frozen, Path(top))
    provider.delete_source_resources(conn, {"snapshot": True}, resources)
    assert not Path(resources["snapshot_dir"]).exists()


def test_a_deploy_on_the_replica_disks_rolls_back_any_write(services, ctx, endpoints, clouds,
                                                            arm) -> None:
    """Deployed without clone_disks on raw replica disks, the instance's disks are written
    as OS morphing or a guest would (not by a disk writer) while finalizing is held; the
    deploy is cancelled: the replica disks are again what the replica execution left (main:
    the undo journal it snapshotted them with saw none of those writes). The snapshot is a
    copy beside each volume only for such a deploy (a cloned deploy takes none); a completed
    deploy leaves none."""
    add_instance(clouds["src"], "inplace", disk_size="16M", allocated_fraction=0.5,
                 network="lan", seed=21)
    source = disks(clouds["src"], "inplace")[0]
    replica_id = services.conductor.create_replica(ctx, body(endpoints, "inplace"))
    assert execute(services, ctx, replica_id).status == c.EXECUTION_STATUS_COMPLETED
    path = Path(volume_of(services, replica_id, "inplace")["path"])
    copy, journal = Path(f"{path}.coriolis-copy"), Path(f"{path}.coriolis-undo")

    def held_deploy(clone: bool) -> str:
        arm(f"{c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT}:hold")
        deploy_id = services.conductor.deploy_replica(ctx, {
            "replica_id": replica_id, "clone_disks": clone, "skip_os_morphing": True})
        wait_task(services, deploy_id, c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT,
                  c.TASK_STATUS_RUNNING)
        return deploy_id

    cloned = held_deploy(True)
    assert not copy.exists()
    services.conductor.cancel_execution(ctx, wait_task(
        services, cloned, c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT,
        c.TASK_STATUS_RUNNING), False)
    assert wait_execution(services, cloned).status == c.EXECUTION_STATUS_CANCELED

    in_place = held_deploy(False)
    assert copy.exists() and not journal.exists()
    with open(path, "r+b") as f:
        f.seek(2 * MiB)
        f.write(os.urandom(MiB))
    assert not same(source, path)
    services.conductor.cancel_execution(ctx, wait_task(
        services, in_place, c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT,
        c.TASK_STATUS_RUNNING), False)
    cancelled = wait_execution(services, in_place)
    assert cancelled.status == c.EXECUTION_STATUS_CANCELED
    assert statuses(cancelled)[c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS] == \
        c.TASK_STATUS_COMPLETED
    assert same(source, path)
    assert not copy.exists() and not journal.exists()

    arm("")
    deployed = services.conductor.deploy_replica(ctx, {
        "replica_id": replica_id, "clone_disks": False, "skip_os_morphing": True})
    assert wait_execution(services, deployed).status == c.EXECUTION_STATUS_COMPLETED
    assert disks(clouds["dst"], "inplace") == [path] and same(source, path)
    assert not copy.exists() and not journal.exists()
