"""The crash matrix (issue 12): for every task type of every execution graph of
coriolis/engine/graphs.py (migration, replica execution, replica deploy, replica disks delete,
replica update; with and without their options: shutdown_instances, clone_disks...), the
all-in-one server is killed (SIGKILL, by the fault hook
``CORIOLIS_TEST_CRASH_AT``, see coriolis/worker/faults.py) while that task runs and again right
after it completes (before its result is recorded), restarted on the same data directory, and
the invariant is checked:

- a migration or deploy ends COMPLETED with disks bit-identical to the source (``qemu-img
  compare``), or ERROR/CANCELED with nothing left on either side;
- a replica disk always equals the source as of the last completed execution, or of the new
  one when it completed;
- nothing stays RUNNING or CANCELLING; a cancel ends;
- whatever the outcome, no debris in either cloud: every disk file of the destination belongs
  to an instance or to the replica, every instance folder holds just its ``instance.json``,
  the source's ``.coriolis/`` (snapshot copies) is empty.

Rows also drive the error paths (a task that fails after doing its work,
``TYPE:fail``) and a cancel (``TYPE:hold`` keeps a task running until cancelled) and kill
the server in their cleanups and rollbacks. The scale-out row SIGKILLs a worker during a task.

The OS-morphing task types share one row on a disk without an OS (the morphing fails after
one libguestfs appliance start under TCG; a real guest costs ~80 s a run): OS_MORPHING is
killed as it starts, never after it completes. The disks are small (2 x 6 MiB) so that a row
costs a few seconds, mostly restarts.

The guard test (no server) builds every graph with every option combination and fails when one
of their task types is not killed during and after by some row: a task type added to a graph
needs a row here. The same holds for the steps of minion pool operations
(coriolis/minions/steps.py), killed during and after by the pool test's stages.
"""

from __future__ import annotations

import inspect
import json
import random
import shutil
import signal
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import create_engine, text

from coriolis import constants as c
from coriolis.engine import graphs
from coriolis.harness import (
    Cluster,
    RunningServer,
    local_cloud,
    start_cluster,
    start_server,
    stop_server,
)
from coriolis.minions import steps as pool_steps
from coriolis.providers.local.cloud import write_json_atomic
from coriolis.worker.faults import ENV
from tests.e2e.test_cli_writer_agent import FINAL, same
from tests.e2e.test_distributed import BROKER, POSTGRES

pytestmark = pytest.mark.e2e
ACTIVE = {"RUNNING", "CANCELLING", "PENDING", "STARTING", "SCHEDULED"}
BLOCK = 64 * 1024


def instance_disks(cloud: Path, name: str) -> list[Path]:
    folder = cloud / "instances" / name
    desc = json.loads((folder / "instance.json").read_text())
    return [(folder / d["file"]).resolve() for d in desc["disks"]]


@dataclass
class Crashing:
    """An all-in-one server armed through a file (``CORIOLIS_TEST_CRASH_AT=@FILE``), restarted
    on the same data directory each time the hook kills it."""

    work: Path
    server: RunningServer
    _api: Any = None
    _kills_before: int = 0

    @property
    def arm_file(self) -> Path:
        return self.work / "crash-at"

    EXTRA_ENV: ClassVar[dict[str, str]] = {}  # more environment for the server

    @classmethod
    def start(cls, work: Path) -> RunningServer:
        """Start the server; again when the hook killed it before it listened (a task sent
        again at start-up reached the next armed point)."""
        for _ in range(10):
            try:
                return start_server(work / "data", {ENV: f"@{work / 'crash-at'}",
                                                    "CORIOLIS_LOCAL_ROOT": str(work / "clouds"),
                                                    **cls.EXTRA_ENV})
            except RuntimeError as exc:
                if "killing this process" not in str(exc):
                    raise
        raise AssertionError("the server never came up")

    @property
    def kills(self) -> int:
        """How many times the hook killed the server since ``arm``."""
        log = self.server.log_path.read_text(errors="replace")
        return log.count(f"{ENV}: killing this process") - self._kills_before

    def api(self) -> Any:
        if self._api is None:
            self._api = self.server.bindings().api
        return self._api

    def arm(self, *items: str) -> None:
        self._kills_before = 0
        self._kills_before = self.kills
        self.arm_file.write_text(",".join(items))

    def armed(self) -> list[str]:
        return [i for i in self.arm_file.read_text().split(",") if i]

    def restart_if_killed(self) -> bool:
        if self.server.process.poll() is None:
            return False
        code = self.server.process.returncode
        assert code == -signal.SIGKILL, f"server exited {code}:\n{self.server.log_tail()}"
        self.server = self.start(self.work)
        self._api = None
        return True

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call, again after a restart when the server died under it."""
        deadline = time.monotonic() + 120
        while True:
            try:
                return getattr(self.api(), method)(path, **kwargs).json()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
                if not self.restart_if_killed() and self.server.process.poll() is None:
                    raise

    def wait_final(self, path: str, key: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        data: dict = {}
        while time.monotonic() < deadline:
            if self.restart_if_killed():
                continue
            try:
                data = self.api().get(path).json()[key]
            except Exception:
                time.sleep(0.3)
                continue
            status = data.get("last_execution_status") or data.get("status")
            if status in FINAL:
                return data
            time.sleep(0.3)
        raise AssertionError(f"{path} not final after {timeout:g} s: {_summary(data)}\n"
                             f"{self.server.log_tail()}")

    def create(self, path: str, body: dict, listing: str, key: str,
               method: str = "post") -> str:
        """POST (or ``method``) ``body`` to ``path``; the id of what it created, found by
        listing ``listing`` when a kill cut the call before it answered."""
        before = {i["id"] for i in self.request("get", listing)[key]}
        try:
            getattr(self.api(), method)(path, json=body)
        except Exception:  # killed before it answered
            pass
        new = [i["id"] for i in self.request("get", listing)[key] if i["id"] not in before]
        assert len(new) == 1, new
        return str(new[0])


def _summary(data: dict) -> str:
    return f"status={data.get('last_execution_status') or data.get('status')} " + ", ".join(
        f"{t['task_type']}={t['status']}" + (f" ({t['exception_details']})"
                                             if t.get("exception_details") else "")
        for t in data.get("tasks") or [])


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Clouds ``src`` (instance vm: two 6 MiB raw disks) and ``dst``; endpoints; a replica
    of vm with one completed execution."""
    work = tmp_path_factory.mktemp("crash")
    src, dst = work / "clouds" / "src", work / "clouds" / "dst"
    local_cloud("init", str(src), "--network", "lan")
    local_cloud("add-instance", str(src), "vm", "--disk-size", "6M", "--disks", "2",
                "--allocated", "0.5", "--network", "lan", "--seed", "31")
    local_cloud("init", str(dst), "--network", "lan", "--storage", "bulk:raw")
    crashing = Crashing(work, Crashing.start(work))
    crashing.arm()
    try:
        api = crashing.api()
        ids = {}
        for name, cloud in (("src", src), ("dst", dst)):
            ids[name] = api.post("/endpoints", json={"endpoint": {
                "name": name, "type": "local",
                "connection_info": {"path": str(cloud)}}}).json()["endpoint"]["id"]
        replica = api.post("/replicas", json={"replica": {
            "origin_endpoint_id": ids["src"], "destination_endpoint_id": ids["dst"],
            "instances": ["vm"], "source_environment": {"snapshot": True},
            "destination_environment": {"storage_backend": "bulk"},
            "network_map": {"lan": "lan"}}}).json()["replica"]["id"]
        rig = {"work": work, "src": src, "dst": dst, "ids": ids, "replica": replica,
               "crashing": crashing, "committed": work / "committed"}
        first = _execute(rig)
        assert first["status"] == "COMPLETED", _summary(first)
        _commit(rig)
        yield rig
    finally:
        stop_server(crashing.server)


# ======================================================================= the invariants
def _source_disks(rig: dict) -> list[Path]:
    return instance_disks(rig["src"], "vm")


def _replica_volumes(rig: dict) -> list[Path]:
    info = rig["crashing"].request("get", f"/replicas/{rig['replica']}")["replica"]["info"]
    return [Path(v["path"]) for v in info["vm"]["volumes_info"]]


def _commit(rig: dict) -> None:
    """Keep a copy of the source as the replica now holds it (the last completed execution)."""
    rig["committed"].mkdir(exist_ok=True)
    for i, disk in enumerate(_source_disks(rig)):
        shutil.copyfile(disk, rig["committed"] / f"disk{i}")


def _committed(rig: dict) -> list[Path]:
    return [rig["committed"] / f"disk{i}" for i in range(len(_source_disks(rig)))]


def assert_no_debris(rig: dict) -> None:
    """No half-defined instance, no disk file that belongs to nothing, no snapshot copy."""
    dst, src = rig["dst"], rig["src"]
    # The replica's disks, and the commit record beside them (replica_disks.py) that says
    # which of their states is committed.
    owned = {f"{p}{suffix}" for p in _replica_volumes(rig) for suffix in ("", ".coriolis-commit")}
    for folder in (dst / "instances").iterdir() if (dst / "instances").exists() else []:
        assert sorted(p.name for p in folder.iterdir()) == ["instance.json"], folder
        owned |= {str(p) for p in instance_disks(dst, folder.name)}
    stray = [str(p) for p in (dst / "storage").rglob("*") if p.is_file()
             and str(p) not in owned]
    assert stray == []
    for cloud in (src, dst):
        assert list((cloud / ".coriolis").rglob("*")) == []  # snapshot copies, scratch files


def assert_ended(data: dict, expected_error: str = "injected failure") -> None:
    """Nothing stays active, and no task failed but the one made to fail (its error says
    ``expected_error``): every task the kills interrupted, cleanups and rollbacks included,
    ran again to its end."""
    tasks = data.get("tasks") or []
    stuck = [(t["task_type"], t["status"]) for t in tasks if t["status"] in ACTIVE]
    assert stuck == [], stuck
    failed = [(t["task_type"], t["exception_details"]) for t in tasks
              if t["status"] == "ERROR" and expected_error not in (t["exception_details"] or "")]
    assert failed == [], failed


def _fired(rig: dict, items: tuple[str, ...]) -> None:
    """Every armed item fired: each crash item killed the server once."""
    crashing: Crashing = rig["crashing"]
    assert crashing.armed() == [], f"never reached: {crashing.armed()}"
    crashes = [i for i in items if i.endswith((":during", ":after"))]
    assert crashing.kills == len(crashes), (crashing.kills, crashes)


# ======================================================================= migrations
MIGRATION_TYPES = [
    c.TASK_TYPE_GET_INSTANCE_INFO, c.TASK_TYPE_VALIDATE_MIGRATION_SOURCE_INPUTS,
    c.TASK_TYPE_VALIDATE_MIGRATION_DESTINATION_INPUTS, c.TASK_TYPE_CREATE_INSTANCE_DISKS,
    c.TASK_TYPE_DEPLOY_MIGRATION_SOURCE_RESOURCES, c.TASK_TYPE_DEPLOY_MIGRATION_TARGET_RESOURCES,
    c.TASK_TYPE_REPLICATE_DISKS, c.TASK_TYPE_DELETE_MIGRATION_SOURCE_RESOURCES,
    c.TASK_TYPE_DELETE_MIGRATION_TARGET_RESOURCES, c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES,
    c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT,
]
MIGRATION_ROWS = [
    *[pytest.param((f"{t}:during", f"{t}:after"), "COMPLETED", id=t) for t in MIGRATION_TYPES],
    # The disks were written, then the copy fails: the destination disks go, even when
    # their deletion and the source cleanup are interrupted.
    pytest.param((f"{c.TASK_TYPE_REPLICATE_DISKS}:fail",
                  f"{c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE}:during",
                  f"{c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE}:after",
                  f"{c.TASK_TYPE_DELETE_MIGRATION_SOURCE_RESOURCES}:during"), "ERROR",
                 id="copy-fails-cleanups-killed"),
    # instance.json was written, then finalizing fails: the instance goes, never listed
    # half-removed (the 0 MB instance of issue 12).
    pytest.param((f"{c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT}:fail",
                  f"{c.TASK_TYPE_CLEANUP_FAILED_INSTANCE_DEPLOYMENT}:during",
                  f"{c.TASK_TYPE_CLEANUP_FAILED_INSTANCE_DEPLOYMENT}:after",
                  f"{c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE}:during"), "ERROR",
                 id="finalize-fails-cleanups-killed"),
]


def _migration_body(rig: dict, name: str, morph: bool = False) -> dict:
    """Migrate vm (reading a snapshot of its disks) to an instance called ``name``."""
    return {"migration": {
        "origin_endpoint_id": rig["ids"]["src"], "destination_endpoint_id": rig["ids"]["dst"],
        "instances": ["vm"], "source_environment": {"snapshot": True},
        "destination_environment": {"storage_backend": "bulk", "instance_name": name},
        "network_map": {"lan": "lan"}, "skip_os_morphing": not morph, "replication_count": 1}}


def _migrate(rig: dict, row: str, morph: bool = False) -> dict:
    crashing: Crashing = rig["crashing"]
    notes = f"crash-{row}-{uuid.uuid4().hex[:6]}"
    migration = crashing.create("/migrations", _migration_body(rig, notes, morph),
                                "/migrations", "migrations")
    data = crashing.wait_final(f"/migrations/{migration}", "migration")
    data["instance_name"] = notes
    return data


def _check_migration(rig: dict, data: dict, expected: str,
                     expected_error: str = "injected failure") -> None:
    status = data["last_execution_status"]
    assert status == expected, _summary(data)
    assert_ended(data, expected_error)
    name = data["instance_name"]
    if status == "COMPLETED":
        for a, b in zip(_source_disks(rig), instance_disks(rig["dst"], name), strict=True):
            assert same(a, b), (a, b)
    else:
        assert not (rig["dst"] / "instances" / name).exists()
        assert not list((rig["dst"] / "storage").rglob(f"{name}-*"))
    assert_no_debris(rig)


@pytest.mark.parametrize("items, expected", MIGRATION_ROWS)
def test_migration_survives_kills(rig: dict, items: tuple[str, ...], expected: str,
                                  request: pytest.FixtureRequest) -> None:
    crashing: Crashing = rig["crashing"]
    crashing.arm(*items)
    data = _migrate(rig, request.node.callspec.id.lower().replace("_", "-"))
    _check_migration(rig, data, expected)
    _fired(rig, items)


OS_MORPHING_ITEMS = (f"{c.TASK_TYPE_DEPLOY_OS_MORPHING_RESOURCES}:during",
                     f"{c.TASK_TYPE_DEPLOY_OS_MORPHING_RESOURCES}:after",
                     f"{c.TASK_TYPE_OS_MORPHING}:during",
                     f"{c.TASK_TYPE_DELETE_OS_MORPHING_RESOURCES}:during",
                     f"{c.TASK_TYPE_DELETE_OS_MORPHING_RESOURCES}:after")


def test_os_morphing_steps_survive_kills(rig: dict) -> None:
    """The OS-morphing task types, on a disk without an OS: the morphing itself fails (after
    one libguestfs appliance start, ~20-30 s here, which is why this is one row), the
    resources are deployed and deleted although each is killed during and after, and the
    migration ends ERROR with nothing left. OS_MORPHING is killed only as it starts: it
    never completes on such a disk."""
    crashing: Crashing = rig["crashing"]
    items = OS_MORPHING_ITEMS
    crashing.arm(*items)
    data = _migrate(rig, "os-morphing", morph=True)
    _check_migration(rig, data, "ERROR", expected_error="no operating system found")
    _fired(rig, items)


MIGRATION_CANCEL_ITEMS = (f"{c.TASK_TYPE_REPLICATE_DISKS}:hold",
                          f"{c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE}:during",
                          f"{c.TASK_TYPE_DELETE_MIGRATION_SOURCE_RESOURCES}:after")


def test_migration_cancel_ends_although_its_cleanups_are_killed(rig: dict) -> None:
    """A plain cancel while the copy runs; the server is killed in the cleanups that follow:
    after the restart the cancel goes on and ends, nothing left."""
    crashing: Crashing = rig["crashing"]
    items = MIGRATION_CANCEL_ITEMS
    crashing.arm(*items)
    notes = f"crash-cancel-{uuid.uuid4().hex[:6]}"
    migration = crashing.api().post("/migrations", json=_migration_body(rig, notes)).json()[
        "migration"]["id"]
    _wait_running(crashing, f"/migrations/{migration}", "migration")
    crashing.api().post(f"/migrations/{migration}/actions", json={"cancel": {"force": False}})
    data = crashing.wait_final(f"/migrations/{migration}", "migration")
    data["instance_name"] = notes
    _check_migration(rig, data, "CANCELED")
    _fired(rig, items)


# ======================================================================= replica executions
REPLICA_TYPES = [
    c.TASK_TYPE_VALIDATE_REPLICA_SOURCE_INPUTS, c.TASK_TYPE_GET_INSTANCE_INFO,
    c.TASK_TYPE_VALIDATE_REPLICA_DESTINATION_INPUTS, c.TASK_TYPE_DEPLOY_REPLICA_DISKS,
    c.TASK_TYPE_CREATE_REPLICA_DISK_SNAPSHOTS, c.TASK_TYPE_DEPLOY_REPLICA_SOURCE_RESOURCES,
    c.TASK_TYPE_DEPLOY_REPLICA_TARGET_RESOURCES, c.TASK_TYPE_REPLICATE_DISKS,
    c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS,
    c.TASK_TYPE_DELETE_REPLICA_SOURCE_RESOURCES, c.TASK_TYPE_DELETE_REPLICA_TARGET_RESOURCES,
]
REPLICA_ROWS = [
    *[pytest.param((f"{t}:during", f"{t}:after"), "COMPLETED", id=t) for t in REPLICA_TYPES],
    # The copy wrote the new data, then fails: the disks are rolled back to the last
    # completed execution although the rollback is killed twice.
    pytest.param((f"{c.TASK_TYPE_REPLICATE_DISKS}:fail",
                  f"{c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS}:during",
                  f"{c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS}:after"), "ERROR",
                 id="copy-fails-rollback-killed"),
]


def _execute(rig: dict, shutdown: bool = False) -> dict:
    crashing: Crashing = rig["crashing"]
    executions = f"/replicas/{rig['replica']}/executions"
    execution = crashing.create(executions, {"execution": {"shutdown_instances": shutdown}},
                                executions, "executions")
    return crashing.wait_final(f"{executions}/{execution}", "execution")


def _change_source(rig: dict, seed: int) -> None:
    rng = random.Random(seed)
    for disk in _source_disks(rig):
        with open(disk, "r+b") as f:
            for _ in range(3):
                f.seek(rng.randrange(disk.stat().st_size // BLOCK) * BLOCK)
                f.write(rng.randbytes(BLOCK))


def _check_replica(rig: dict, data: dict, expected: str) -> None:
    assert data["status"] == expected, _summary(data)
    assert_ended(data)
    if data["status"] == "COMPLETED":
        reference = _source_disks(rig)
    else:
        reference = _committed(rig)
    for a, b in zip(reference, _replica_volumes(rig), strict=True):
        assert same(a, b), (a, b)
    if data["status"] == "COMPLETED":
        _commit(rig)
    for volume in _replica_volumes(rig):
        assert not Path(f"{volume}.coriolis-undo").exists(), "an undo journal survived"
    assert_no_debris(rig)


@pytest.mark.parametrize("items, expected", REPLICA_ROWS)
def test_replica_execution_survives_kills(rig: dict, items: tuple[str, ...], expected: str,
                                          request: pytest.FixtureRequest) -> None:
    crashing: Crashing = rig["crashing"]
    _change_source(rig, zlib.crc32(request.node.callspec.id.encode()))
    crashing.arm(*items)
    data = _execute(rig)
    _check_replica(rig, data, expected)
    _fired(rig, items)


REPLICA_CANCEL_ITEMS = (f"{c.TASK_TYPE_REPLICATE_DISKS}:hold",
                        f"{c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS}:during",
                        f"{c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS}:after")


def test_replica_execution_cancel_ends_although_its_rollback_is_killed(rig: dict) -> None:
    """A plain cancel while the copy runs; the server is killed while the disks are rolled
    back and right after: the cancel ends, the replica holds the last completed execution."""
    crashing: Crashing = rig["crashing"]
    _change_source(rig, 7)
    items = REPLICA_CANCEL_ITEMS
    crashing.arm(*items)
    executions = f"/replicas/{rig['replica']}/executions"
    execution = crashing.api().post(executions, json={"execution": {
        "shutdown_instances": False}}).json()["execution"]["id"]
    _wait_running(crashing, f"{executions}/{execution}", "execution")
    crashing.api().post(f"{executions}/{execution}/actions", json={"cancel": {"force": False}})
    data = crashing.wait_final(f"{executions}/{execution}", "execution")
    _check_replica(rig, data, "CANCELED")
    _fired(rig, items)


SHUTDOWN_ITEMS = (f"{c.TASK_TYPE_SHUTDOWN_INSTANCE}:during",
                  f"{c.TASK_TYPE_SHUTDOWN_INSTANCE}:after")


def test_replica_execution_shutting_the_source_down_survives_kills(rig: dict) -> None:
    """``shutdown_instances``: the source is shut down before the copy although the server
    is killed while it shuts it down and right after; the execution completes. The source is
    powered on again afterwards (instance.json rewritten atomically) for the rows after."""
    crashing: Crashing = rig["crashing"]
    _change_source(rig, 11)
    crashing.arm(*SHUTDOWN_ITEMS)
    described = rig["src"] / "instances" / "vm" / "instance.json"
    try:
        data = _execute(rig, shutdown=True)
        assert json.loads(described.read_text())["power_state"] == "stopped"
        _check_replica(rig, data, "COMPLETED")
        _fired(rig, SHUTDOWN_ITEMS)
    finally:
        write_json_atomic(described, {**json.loads(described.read_text()),
                                      "power_state": "running"})


DISKS_DELETE_TYPES = [c.TASK_TYPE_DELETE_REPLICA_SOURCE_DISK_SNAPSHOTS,
                      c.TASK_TYPE_DELETE_REPLICA_DISKS]
DISKS_DELETE_ROWS = [pytest.param((f"{t}:during", f"{t}:after"), id=t)
                     for t in DISKS_DELETE_TYPES]


@pytest.mark.parametrize("items", DISKS_DELETE_ROWS)
def test_replica_disks_delete_survives_kills(rig: dict, items: tuple[str, ...]) -> None:
    """``delete-disks`` killed during and after each of its tasks completes and leaves no
    replica disk, undo journal, commit record nor snapshot copy; the next execution creates
    the disks again, equal to the source."""
    crashing: Crashing = rig["crashing"]
    volumes = _replica_volumes(rig)
    assert volumes
    crashing.arm(*items)
    executions = f"/replicas/{rig['replica']}/executions"
    execution = crashing.create(f"/replicas/{rig['replica']}/actions",
                                {"delete-disks": None}, executions, "executions")
    data = crashing.wait_final(f"{executions}/{execution}", "execution")
    assert data["status"] == "COMPLETED", _summary(data)
    assert_ended(data)
    _fired(rig, items)
    assert _replica_volumes(rig) == []
    leftovers = [str(p) for p in (rig["dst"] / "storage").rglob("*")
                 if any(str(p).startswith(str(v)) for v in volumes)]
    assert leftovers == []  # the disks, their journals, the commit record
    assert_no_debris(rig)
    crashing.arm()
    _change_source(rig, zlib.crc32(str(items).encode()))
    _check_replica(rig, _execute(rig), "COMPLETED")


UPDATE_TYPES = [c.TASK_TYPE_GET_INSTANCE_INFO, c.TASK_TYPE_UPDATE_SOURCE_REPLICA,
                c.TASK_TYPE_UPDATE_DESTINATION_REPLICA]
UPDATE_ROWS = [pytest.param((f"{t}:during", f"{t}:after"), id=t) for t in UPDATE_TYPES]


@pytest.mark.parametrize("items", UPDATE_ROWS)
def test_replica_update_survives_kills(rig: dict, items: tuple[str, ...],
                                       request: pytest.FixtureRequest) -> None:
    """``PUT /replicas/{id}`` (new notes and a new bandwidth limit) killed during
    and after each task of its execution: one update execution, COMPLETED, the new values
    stored once, the rest of the replica as it was."""
    crashing: Crashing = rig["crashing"]
    path = f"/replicas/{rig['replica']}"
    before = crashing.request("get", path)["replica"]
    notes = f"crash-update-{request.node.callspec.id}"
    env = {**before["destination_environment"],
           "transfer_bandwidth_limit_mib": 100 + len(before["executions"])}
    crashing.arm(*items)
    execution = crashing.create(path, {"replica": {"notes": notes,
                                                   "destination_environment": env}},
                                f"{path}/executions", "executions", method="put")
    data = crashing.wait_final(f"{path}/executions/{execution}", "execution")
    assert data["status"] == "COMPLETED", _summary(data)
    assert_ended(data)
    _fired(rig, items)
    after = crashing.request("get", path)["replica"]
    assert after["notes"] == notes
    assert after["destination_environment"] == env
    assert len(after["executions"]) == len(before["executions"]) + 1
    for key in ("source_environment", "network_map"):
        assert after[key] == before[key], key
    assert after["info"]["vm"]["volumes_info"] == before["info"]["vm"]["volumes_info"]
    assert_no_debris(rig)


def _wait_running(crashing: Crashing, path: str, key: str) -> None:
    """Until the (held) copy of ``path`` is RUNNING."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(t["task_type"] == c.TASK_TYPE_REPLICATE_DISKS and t["status"] == "RUNNING"
               for t in crashing.api().get(path).json()[key]["tasks"]):
            return
        time.sleep(0.2)
    raise AssertionError(f"the copy of {path} never ran")


# ======================================================================= replica deploys
DEPLOY_TYPES = [
    c.TASK_TYPE_VALIDATE_REPLICA_DEPLOYMENT_INPUTS, c.TASK_TYPE_CREATE_REPLICA_DISK_SNAPSHOTS,
    c.TASK_TYPE_DEPLOY_REPLICA_INSTANCE_RESOURCES,
    c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT,
    c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS,
]
DEPLOY_ROWS = [
    *[pytest.param((f"{t}:during", f"{t}:after"), "COMPLETED", True, id=t)
      for t in DEPLOY_TYPES],
    pytest.param((f"{c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT}:fail",
                  f"{c.TASK_TYPE_CLEANUP_FAILED_REPLICA_INSTANCE_DEPLOYMENT}:during",
                  f"{c.TASK_TYPE_CLEANUP_FAILED_REPLICA_INSTANCE_DEPLOYMENT}:after"), "ERROR",
                 True, id="finalize-fails-cleanup-killed"),
    # Deployed on the replica disks themselves (no clone): a failed deploy rolls them back
    # to the last completed execution although the rollback is killed twice.
    pytest.param((f"{c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT}:fail",
                  f"{c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS}:during",
                  f"{c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS}:after"), "ERROR",
                 False, id="no-clone-finalize-fails-rollback-killed"),
]


@pytest.mark.parametrize("items, expected, clone", DEPLOY_ROWS)
def test_replica_deploy_survives_kills(rig: dict, items: tuple[str, ...], expected: str,
                                       clone: bool) -> None:
    crashing: Crashing = rig["crashing"]
    crashing.arm(*items)
    body = {"migration": {"replica_id": rig["replica"], "clone_disks": clone,
                          "skip_os_morphing": True}}
    migration = crashing.create("/migrations", body, "/migrations", "migrations")
    data = crashing.wait_final(f"/migrations/{migration}", "migration")
    assert data["last_execution_status"] == expected, _summary(data)
    assert_ended(data)
    folder = rig["dst"] / "instances" / "vm"
    if expected == "COMPLETED":
        deployed = instance_disks(rig["dst"], "vm")
        for a, b in zip(_committed(rig), deployed, strict=True):
            assert same(a, b), (a, b)
    else:
        assert not folder.exists()
    # The replica itself is untouched, and committed.
    for a, b in zip(_committed(rig), _replica_volumes(rig), strict=True):
        assert same(a, b)
    assert_no_debris(rig)
    _fired(rig, items)
    if folder.exists():  # make room for the next row's deploy
        for disk in instance_disks(rig["dst"], "vm"):
            disk.unlink()
        shutil.rmtree(folder)


NO_CLONE_WRITTEN_ITEMS = (f"{c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT}:during",
                          f"{c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT}:fail",
                          f"{c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS}:during",
                          f"{c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS}:after")


def test_replica_deploy_without_clone_rolls_back_writes_to_the_instance_disks(
        rig: dict) -> None:
    """A deploy on the replica disks themselves: the server dies as finalizing starts; while
    it is down the deployed instance's disks (the replica's) are written, as OS morphing or a
    booted guest would; then finalizing fails: the roll-back, killed twice, must bring the
    replica disks back to the last completed execution."""
    crashing: Crashing = rig["crashing"]
    volumes = _replica_volumes(rig)
    crashing.arm(*NO_CLONE_WRITTEN_ITEMS)
    before = {i["id"] for i in crashing.request("get", "/migrations")["migrations"]}
    body = {"migration": {"replica_id": rig["replica"], "clone_disks": False,
                          "skip_os_morphing": True}}
    try:
        crashing.api().post("/migrations", json=body)
    except Exception:  # killed before it answered
        pass
    deadline = time.monotonic() + 60
    while crashing.server.process.poll() is None:
        assert time.monotonic() < deadline, "finalizing never started"
        time.sleep(0.05)
    rng = random.Random(5)
    for volume in volumes:
        with open(volume, "r+b") as f:
            f.write(rng.randbytes(BLOCK))
    try:
        new = [i["id"] for i in crashing.request("get", "/migrations")["migrations"]
               if i["id"] not in before]
        assert len(new) == 1, new
        data = crashing.wait_final(f"/migrations/{new[0]}", "migration")
        assert data["last_execution_status"] == "ERROR", _summary(data)
        assert_ended(data)
        _fired(rig, NO_CLONE_WRITTEN_ITEMS)
        assert not (rig["dst"] / "instances" / "vm").exists()
        for a, b in zip(_committed(rig), volumes, strict=True):
            assert same(a, b), (a, b)
        assert_no_debris(rig)
    finally:  # the rows after it find the replica as committed, bug or not
        for a, b in zip(_committed(rig), volumes, strict=True):
            shutil.copyfile(a, b)


# ======================================================================= minion pools
def _agents(folder: Path) -> set[int]:
    """Pids of the live writer agents (local minions) serving from under ``folder``."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(folder) in cmd and "writer" in cmd and state != "Z":
            found.add(int(proc.name))
    return found


def _settled_pool(crashing: Crashing, pool_id: str, timeout: float = 120) -> dict:
    """The pool once no operation runs (ALLOCATED, DEALLOCATED or ERROR), restarting the
    server whenever a hook killed it; its machines' records match reality: a powered-on
    machine's agent runs, no other agent of the pool runs."""
    deadline = time.monotonic() + timeout
    while True:
        crashing.restart_if_killed()
        pool = crashing.request("get", f"/minion_pools/{pool_id}")["minion_pool"]
        if pool["status"] in ("ALLOCATED", "DEALLOCATED", "ERROR"):
            break
        assert time.monotonic() < deadline, (pool["status"], pool["events"][-5:])
        time.sleep(0.3)
    machines = pool["minion_machines"]
    assert all(m["allocation_status"] in ("AVAILABLE", "IN_USE") for m in machines), machines
    on = {m["provider_properties"]["pid"] for m in machines
          if m["power_status"] == "POWERED_ON"}
    folder = crashing.work / "clouds" / "pool-dst" / ".coriolis" / "minions"
    assert _agents(folder) == on, (machines, pool["events"][-8:])
    return pool


def _pool_action(crashing: Crashing, pool_id: str, action: dict) -> None:
    try:
        crashing.api().post(f"/minion_pools/{pool_id}/actions", json=action)
    except Exception:  # killed before it answered: the operation was stored, or not
        pass


# The steps of a pool's life, as ``coriolis/minions/steps.py`` names them, killed during and
# after each, by the stage of the test below that runs them.
POOL_STAGES = {
    "allocate": ("VALIDATE_MINION_POOL_OPTIONS", "SET_UP_POOL_SHARED_RESOURCES",
                 "CREATE_MINION_MACHINE"),
    "refresh": ("HEALTHCHECK_MINION_MACHINE", "POWER_OFF_MINION_MACHINE"),
    "wake": ("POWER_ON_MINION_MACHINE",),
    "deallocate": ("DELETE_MINION_MACHINE", "TEAR_DOWN_POOL_SHARED_RESOURCES"),
}
POOL_ITEMS = {stage: tuple(f"{s}:{p}" for s in steps for p in ("during", "after"))
              for stage, steps in POOL_STAGES.items()}


def test_minion_pool_steps_killed_during_and_after_each(rig: dict) -> None:
    """A pool of one local minion (a writer agent process) is allocated, refreshed (its
    idle minion powered off), woken by a migration that names it, and deallocated; the
    server is killed during and right after every step of each stage (the worker's fault
    hooks) and restarted: the stored operation runs again and ends; each time the records
    match reality (no agent left running that the pool does not know of, none missing);
    the migration completes with bit-identical disks; nothing of the pool is left."""
    crashing: Crashing = rig["crashing"]
    dst = crashing.work / "clouds" / "pool-dst"
    local_cloud("init", str(dst), "--network", "lan")
    endpoint = crashing.request("post", "/endpoints", json={"endpoint": {
        "name": "pool-dst", "type": "local",
        "connection_info": {"path": str(dst)}}})["endpoint"]["id"]
    body = {"minion_pool": {"name": "crashy", "endpoint_id": endpoint,
                            "platform": "destination", "os_type": "linux",
                            "environment_options": {}, "minimum_minions": 1,
                            "maximum_minions": 1, "minion_max_idle_time": 1,
                            "minion_retention_strategy": "poweroff"}}
    # allocate: a create killed in its validation stored nothing and is made again.
    crashing.arm(*POOL_ITEMS["allocate"])
    pools: list[str] = []
    while not pools:
        try:
            crashing.api().post("/minion_pools", json=body)
        except Exception:
            crashing.restart_if_killed()
        pools = [p["id"] for p in crashing.request("get", "/minion_pools")["minion_pools"]]
    (pool_id,) = pools
    pool = _settled_pool(crashing, pool_id)
    assert pool["status"] == "ALLOCATED", pool["events"]
    assert len(pool["minion_machines"]) == 1
    _fired(rig, POOL_ITEMS["allocate"])
    # refresh: the health check, then the idle minion powered off; killed after its agent
    # stopped, the dead minion is replaced instead: refresh again until one sleeps.
    crashing.arm(*POOL_ITEMS["refresh"])
    for _ in range(6):
        time.sleep(1.5)  # idle for longer than minion_max_idle_time
        _pool_action(crashing, pool_id, {"refresh": None})
        pool = _settled_pool(crashing, pool_id)
        assert pool["status"] == "ALLOCATED", pool["events"]
        if [m["power_status"] for m in pool["minion_machines"]] == ["POWERED_OFF"] \
                and not crashing.armed():
            break
    assert [m["power_status"] for m in pool["minion_machines"]] == ["POWERED_OFF"]
    _fired(rig, POOL_ITEMS["refresh"])
    # wake: a migration through the pool powers its minion on and completes.
    crashing.arm(*POOL_ITEMS["wake"])
    name = f"pooled-{uuid.uuid4().hex[:6]}"
    migration = _migration_body(rig, name)
    migration["migration"].update({"destination_endpoint_id": endpoint,
                                   "destination_minion_pool_id": pool_id,
                                   "destination_environment": {"storage_backend": "default",
                                                               "instance_name": name}})
    migration_id = crashing.create("/migrations", migration, "/migrations", "migrations")
    data = crashing.wait_final(f"/migrations/{migration_id}", "migration")
    assert data["last_execution_status"] == "COMPLETED", _summary(data)
    for a, b in zip(_source_disks(rig), instance_disks(dst, name), strict=True):
        assert same(a, b), (a, b)
    pool = _settled_pool(crashing, pool_id)
    assert "powered on" in " ".join(e["message"] for e in pool["events"])
    _fired(rig, POOL_ITEMS["wake"])
    # deallocate: machines and shared resources go, whatever the kills.
    crashing.arm(*POOL_ITEMS["deallocate"])
    _pool_action(crashing, pool_id, {"deallocate": {"force": False}})
    pool = _settled_pool(crashing, pool_id)
    assert pool["status"] == "DEALLOCATED", pool["events"]
    assert pool["minion_machines"] == []
    assert not (dst / ".coriolis" / "minions" / pool_id).exists()
    _fired(rig, POOL_ITEMS["deallocate"])
    crashing.api().delete(f"/minion_pools/{pool_id}")


# ======================================================================= scale-out
@pytest.fixture(scope="module")
def crash_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    name = f"coriolis_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    work = tmp_path_factory.mktemp("crash-cluster")
    arm = work / "crash-at"
    arm.write_text("")
    try:
        cluster = start_cluster(work / "data", f"{POSTGRES}/{name}", BROKER,
                                f"test-{uuid.uuid4().hex[:8]}", ["w1", "w2", "w3", "w4"],
                                {"CORIOLIS_HEARTBEAT_INTERVAL": "1",
                                 "CORIOLIS_WORKER_DOWN_AFTER": "4", ENV: f"@{arm}",
                                 "CORIOLIS_LOCAL_ROOT": str(work / "clouds")})
        try:
            yield cluster, arm
        finally:
            cluster.stop()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


SCALE_OUT_ITEMS = (f"{c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES}:during",
                   f"{c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES}:after")


def test_scale_out_worker_killed_in_a_task_another_runs_it_again(
        crash_cluster: tuple[Cluster, Path]) -> None:
    """A worker dies (SIGKILL) while it defines the instance, another right after it did:
    each time, once the dead worker is marked DOWN, the task runs again on a live one and the
    migration completes."""
    cluster, arm = crash_cluster
    api = cluster.api
    assert api is not None
    src, dst = arm.parent / "clouds" / "src", arm.parent / "clouds" / "dst"
    local_cloud("init", str(src), "--network", "lan")
    local_cloud("add-instance", str(src), "vm", "--disk-size", "6M", "--disks", "2",
                "--network", "lan", "--seed", "41")
    local_cloud("init", str(dst), "--network", "lan")
    for name, cloud in (("c-src", src), ("c-dst", dst)):
        api.cli("endpoint", "create", "--name", name, "--provider", "local",
                "--connection", json.dumps({"path": str(cloud)}))
    arm.write_text(",".join(SCALE_OUT_ITEMS))
    migration = api.cli(
        "migration", "create", "--origin-endpoint", "c-src", "--destination-endpoint", "c-dst",
        "--instance", "vm", "--source-environment", '{"snapshot": true}',
        "--destination-environment", '{"storage_backend": "default"}',
        "--network-map", '{"lan": "lan"}', "--skip-os-morphing", "--replication-count", "1",
        "-f", "json").json()["id"]
    done = api.wait_for(["migration", "show", migration], lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    assert arm.read_text() == ""
    dead = [n for n, p in cluster.parts.items() if p.process.poll() is not None]
    assert sorted(p.process.returncode for n, p in cluster.parts.items() if n in dead) == \
        [-signal.SIGKILL] * 2
    for a, b in zip(instance_disks(src, "vm"), instance_disks(dst, "vm"), strict=True):
        assert same(a, b)
    assert sorted(p.name for p in (dst / "instances" / "vm").iterdir()) == ["instance.json"]
    assert not list((src / ".coriolis").rglob("*"))
    for name in dead:
        cluster.parts.pop(name)


def test_scale_out_worker_killed_in_a_pool_step_another_runs_it(
        crash_cluster: tuple[Cluster, Path]) -> None:
    """The worker making a pool's minion dies (SIGKILL) as the step starts: once it stops
    heart-beating, the pool manager sends the step to another worker (not waiting for the
    call's timeout) and the pool is ALLOCATED with a running minion; deallocation leaves
    no agent."""
    cluster, arm = crash_cluster
    api = cluster.api
    assert api is not None
    dst = arm.parent / "clouds" / "pool-dst"
    local_cloud("init", str(dst), "--network", "lan")
    api.cli("endpoint", "create", "--name", "p-dst", "--provider", "local",
            "--connection", json.dumps({"path": str(dst)}))
    arm.write_text("CREATE_MINION_MACHINE:during")
    started = time.monotonic()
    pool_id = api.cli(
        "minion", "pool", "create", "--pool-endpoint", "p-dst", "--pool-platform",
        "destination", "--pool-os-type", "linux", "--environment-options", '{"verbose": true}',
        "--minimum-minions", "1", "scaled", "-f", "json").json()["ID"]
    data = api.wait_for(["minion", "pool", "show", pool_id],
                        lambda d: d["Pool Status"] in ("ALLOCATED", "ERROR"), timeout=110)
    assert data["Pool Status"] == "ALLOCATED", data["Events"]
    assert time.monotonic() - started < 110  # far below the step's 1800 s call timeout
    assert arm.read_text() == ""
    dead = [n for n, p in cluster.parts.items() if p.process.poll() is not None]
    assert [cluster.parts[n].process.returncode for n in dead] == [-signal.SIGKILL]
    value = data["Minion Machines"]
    (machine,) = json.loads(value) if isinstance(value, str) else value
    folder = dst / ".coriolis" / "minions"
    assert _agents(folder) == {machine["provider_properties"]["pid"]}
    api.cli("minion", "pool", "deallocate", pool_id)
    api.wait_for(["minion", "pool", "show", pool_id],
                 lambda d: d["Pool Status"] == "DEALLOCATED", timeout=60)
    assert _agents(folder) == set()
    api.cli("minion", "pool", "delete", pool_id)
    for name in dead:
        cluster.parts.pop(name)


# ======================================================================= the guard
# Every graph builder of coriolis/engine/graphs.py with each of its option combinations; a new
# builder (minion pools...) fails the guard until it is listed here and given rows.
GRAPHS = {
    "migration_graph": [graphs.migration_graph(count, shutdown, skip)
                        for count in (1, 2) for shutdown in (False, True)
                        for skip in (False, True)],
    "replica_execution_graph": [graphs.replica_execution_graph(s) for s in (False, True)],
    "replica_deploy_graph": [graphs.replica_deploy_graph(clone, skip)
                             for clone in (False, True) for skip in (False, True)],
    "replica_disks_delete_graph": [graphs.replica_disks_delete_graph()],
    "replica_update_graph": [graphs.replica_update_graph()],
}
# OS_MORPHING never completes on the matrix's OS-less disk: it is killed only as it starts.
DURING_ONLY = {c.TASK_TYPE_OS_MORPHING}


def armed_items() -> set[str]:
    """Every item the matrix arms: the rows' items and the other tests' tuples."""
    rows = [*MIGRATION_ROWS, *REPLICA_ROWS, *DISKS_DELETE_ROWS, *UPDATE_ROWS, *DEPLOY_ROWS]
    tuples = [OS_MORPHING_ITEMS, MIGRATION_CANCEL_ITEMS, REPLICA_CANCEL_ITEMS, SHUTDOWN_ITEMS,
              NO_CLONE_WRITTEN_ITEMS, SCALE_OUT_ITEMS, *(row.values[0] for row in rows)]
    return {item for items in tuples for item in items}


def uncovered(task_types: set[str], items: set[str]) -> list[str]:
    """The ``TYPE:PHASE`` kills that ``task_types`` need and ``items`` lack."""
    return sorted(f"{t}:{phase}" for t in task_types
                  for phase in (("during",) if t in DURING_ONLY else ("during", "after"))
                  if f"{t}:{phase}" not in items)


def test_guard_every_task_type_of_every_graph_has_a_matrix_row() -> None:
    """No server: each task type of each execution graph is killed during and after its run
    by some row, so a task type added to a graph without a row fails here."""
    builders = {name for name, fn in vars(graphs).items() if inspect.isfunction(fn)
                and not name.startswith("_")
                and inspect.signature(fn).return_annotation == "list[TaskSpec]"}
    assert builders == set(GRAPHS), "list the new graph builder in GRAPHS and give it rows"
    task_types = {spec.task_type for specs in GRAPHS.values() for g in specs for spec in g}
    assert uncovered(task_types, armed_items()) == []
    # Every minion pool step (coriolis/minions/steps.py) is killed during and after.
    pool_items = {i for items in POOL_ITEMS.values() for i in items}
    assert uncovered({step.name for step in pool_steps.STEPS}, pool_items) == []
    # The guard sees a missing row: drop one and it names what is gone.
    assert uncovered(task_types, armed_items() - {f"{c.TASK_TYPE_SHUTDOWN_INSTANCE}:after"}) \
        == [f"{c.TASK_TYPE_SHUTDOWN_INSTANCE}:after"]
