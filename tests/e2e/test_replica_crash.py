"""Issue 12, item 2: kill -9 of the all-in-one server during a replica's roll-back or commit;
after a restart the replica disk equals the last committed execution (or the newly committed
one), and a replica whose disks are not committed is not deployed (409) until an execution
completes. The kills are injected through CORIOLIS_TEST_CRASH_AT (coriolis/worker/faults.py):
the server SIGKILLs itself at the named point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.harness import RunningServer, local_cloud, parse_tasks, start_server, stop_server
from coriolis.transfer.extents import sparse_file_extents
from coriolis.worker import faults

pytestmark = pytest.mark.e2e
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}


class World:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data_dir = base / "data"
        self.faults = base / "faults"
        self.faults.write_text("")
        self.server = self.start()
        self.src, self.dst = self.server.cloud_dir("src"), self.server.cloud_dir("dst")
        local_cloud("init", str(self.src), "--network", "lan")
        local_cloud("add-instance", str(self.src), "db", "--disk-size", "48M",
                    "--allocated", "0.5", "--network", "lan", "--seed", "21")
        local_cloud("init", str(self.dst), "--network", "lan", "--storage", "pool:raw")

    def start(self) -> RunningServer:
        return start_server(self.data_dir, env={faults.ENV: f"@{self.faults}"})

    def killed(self) -> None:
        """Wait for the server to kill itself at the armed point, then start it again."""
        assert self.server.process.wait(timeout=240) == -signal.SIGKILL, \
            self.server.log_tail()
        self.server = self.start()

    def execute(self, replica: str) -> str:
        return self.server.cli("replica", "execute", replica, "-f", "json").json()["id"]

    def finished(self, replica: str, execution: str) -> dict:
        return self.server.wait_for(["replica", "execution", "show", replica, execution],
                                    lambda e: e["status"] in FINAL, timeout=240)

    def volume(self, replica: str) -> dict:
        shown = self.server.cli("replica", "show", replica, "--show-instances-data",
                                "-f", "json").json()
        return shown["instances-data"]["db"]["volumes_info"][0]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        stop_server(w.server)


def make_replica(w: World) -> str:
    for name, path in (("src", w.src), ("dst", w.dst)):
        w.server.local_endpoint(name, path)
    return w.server.cli(
        "replica", "create", "--origin-endpoint", "src", "--destination-endpoint", "dst",
        "--instance", "db", "--source-environment", '{"snapshot": true}',
        "--destination-environment", '{"storage_backend": "pool"}',
        "--network-map", '{"lan": "lan"}', "-f", "json").json()["id"]


def source_disk(w: World) -> Path:
    return w.src / "instances" / "db" / "disk0.raw"


def same(a: Path | str, b: Path | str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)]).returncode == 0


def rewrite_source(w: World) -> None:
    """New random data in every allocated MiB of the source (many separate writes)."""
    with open(source_disk(w), "r+b") as f:
        for ext in sparse_file_extents(str(source_disk(w))):
            if not ext.zero:
                f.seek(ext.offset)
                f.write(os.urandom(ext.length))


def first_execution(w: World) -> tuple[str, Path]:
    """A replica with one completed execution, and a copy of what it left."""
    replica = make_replica(w)
    assert w.finished(replica, w.execute(replica))["status"] == "COMPLETED"
    before = w.base / "before.raw"
    subprocess.run(["cp", "--sparse=always", w.volume(replica)["path"], str(before)],
                   check=True)
    return replica, before


def task(execution: dict, task_type: str) -> dict:
    return next(t for t in parse_tasks(execution["tasks"]) if t["task_type"] == task_type)


def deploy(w: World, replica: str) -> Path:
    deployed = w.server.cli("migration", "deploy", "replica", replica, "--skip-os-morphing",
                            "-f", "json").json()
    done = w.server.wait_for(["migration", "show", deployed["id"]],
                             lambda m: m["status"] in FINAL, timeout=240)
    assert done["status"] == "COMPLETED", done["tasks"]
    desc = json.loads((w.dst / "instances" / "db" / "instance.json").read_text())
    return (w.dst / "instances" / "db" / desc["disks"][0]["file"]).resolve()


def assert_no_debris(w: World, volume: dict) -> None:
    assert not Path(volume["path"] + ".coriolis-undo").exists()
    record = json.loads(Path(volume["path"] + ".coriolis-commit").read_text())
    assert record["pending"] is None
    scratch = w.src / ".coriolis"
    assert not scratch.exists() or not list(scratch.iterdir())


def test_kill_during_the_roll_back(world: World) -> None:
    """Execution 2 copies new data and is cancelled as the copy finishes (its commit held
    until then); the server is killed half-way through replaying the undo journal. Main:
    execution 2 ERROR, the journal left, the disk neither execution 1 nor the source, and the
    deploy shipped that disk."""
    w = world
    replica, before = first_execution(w)
    rewrite_source(w)
    w.faults.write_text("DELETE_REPLICA_TARGET_DISK_SNAPSHOTS:hold,"
                        "RESTORE_REPLICA_DISK_SNAPSHOTS:during")
    second = w.execute(replica)
    w.server.wait_for(["replica", "execution", "show", replica, second],
                      lambda e: task(e, "DELETE_REPLICA_TARGET_DISK_SNAPSHOTS")["status"]
                      == "RUNNING", timeout=240)
    w.server.cli("replica", "execution", "cancel", replica, second)
    w.killed()
    volume_path = w.volume(replica)["path"]
    done = w.finished(replica, second)
    # The conductor runs the interrupted roll-back again: the cancel ends, execution 1 back.
    assert done["status"] == "CANCELED", done["tasks"]
    assert task(done, "RESTORE_REPLICA_DISK_SNAPSHOTS")["status"] == "COMPLETED"
    assert same(before, volume_path)

    third = w.finished(replica, w.execute(replica))
    assert third["status"] == "COMPLETED", third["tasks"]
    volume = w.volume(replica)
    assert same(source_disk(w), volume["path"])
    assert_no_debris(w, volume)
    assert same(source_disk(w), deploy(w, replica))


def killed_in_execution_2(w: World, point: str) -> tuple[str, Path, dict]:
    """Execution 1, new source data, execution 2 killed at ``point``, restart; returns the
    replica, execution 1's disk and execution 2 once it ended."""
    replica, before = first_execution(w)
    rewrite_source(w)
    w.faults.write_text(point)
    second = w.execute(replica)
    w.killed()
    return replica, before, w.finished(replica, second)


def test_kill_after_the_commit_point(world: World) -> None:
    """The server is killed once execution 2's commit record is written, before its undo
    journal is dropped: the execution's data is committed; after the restart the disk holds
    it, its change-tracking point is in force and nothing is refused or sent again."""
    w = world
    replica, _, done = killed_in_execution_2(w, "DELETE_REPLICA_TARGET_DISK_SNAPSHOTS:during")
    assert done["status"] == "COMPLETED", done["tasks"]  # the commit task ran again
    volume = w.volume(replica)
    assert same(source_disk(w), volume["path"])
    assert "pending" not in volume and "snapshot" not in volume
    assert_no_debris(w, volume)

    third = w.finished(replica, w.execute(replica))
    assert third["status"] == "COMPLETED", third["tasks"]
    assert w.volume(replica)["bytes_sent"] == 0
    assert same(source_disk(w), deploy(w, replica))


def test_kill_while_the_snapshot_is_being_taken(world: World) -> None:
    """The server is killed as execution 2's undo journal is made, before anything is
    written: the disk still holds execution 1, which a deploy ships; the next execution
    settles the half-made snapshot first and completes."""
    w = world
    replica, before, done = killed_in_execution_2(w, "CREATE_REPLICA_DISK_SNAPSHOTS:during")
    assert done["status"] == "COMPLETED", done["tasks"]  # the snapshot task ran again
    third = w.finished(replica, w.execute(replica))
    assert third["status"] == "COMPLETED", third["tasks"]
    volume = w.volume(replica)
    assert same(source_disk(w), volume["path"])
    assert_no_debris(w, volume)
