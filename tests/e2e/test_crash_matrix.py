"""The crash matrix (issue 12): for every task type of the migration, replica execution and
replica deploy graphs, the all-in-one server is killed (SIGKILL, by the fault hook
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
"""

from __future__ import annotations

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
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from coriolis import constants as c
from coriolis.harness import (
    Cluster,
    RunningServer,
    local_cloud,
    start_cluster,
    start_server,
    stop_server,
)
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

    @staticmethod
    def start(work: Path) -> RunningServer:
        """Start the server; again when the hook killed it before it listened (a task sent
        again at start-up reached the next armed point)."""
        for _ in range(10):
            try:
                return start_server(work / "data", {ENV: f"@{work / 'crash-at'}",
                                                    "CORIOLIS_LOCAL_ROOT": str(work / "clouds")})
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

    def create(self, path: str, body: dict, listing: str, key: str) -> str:
        """POST ``body`` to ``path``; the id of what it created, found by listing ``listing``
        when a kill cut the call before it answered."""
        before = {i["id"] for i in self.request("get", listing)[key]}
        try:
            self.api().post(path, json=body)
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


def test_os_morphing_steps_survive_kills(rig: dict) -> None:
    """The OS-morphing task types, on a disk without an OS: the morphing itself fails (after
    one libguestfs appliance start, ~20-30 s here, which is why this is one row), the
    resources are deployed and deleted although each is killed during and after, and the
    migration ends ERROR with nothing left. OS_MORPHING is killed only as it starts: it
    never completes on such a disk."""
    crashing: Crashing = rig["crashing"]
    items = (f"{c.TASK_TYPE_DEPLOY_OS_MORPHING_RESOURCES}:during",
             f"{c.TASK_TYPE_DEPLOY_OS_MORPHING_RESOURCES}:after",
             f"{c.TASK_TYPE_OS_MORPHING}:during",
             f"{c.TASK_TYPE_DELETE_OS_MORPHING_RESOURCES}:during",
             f"{c.TASK_TYPE_DELETE_OS_MORPHING_RESOURCES}:after")
    crashing.arm(*items)
    data = _migrate(rig, "os-morphing", morph=True)
    _check_migration(rig, data, "ERROR", expected_error="no operating system found")
    _fired(rig, items)


def test_migration_cancel_ends_although_its_cleanups_are_killed(rig: dict) -> None:
    """A plain cancel while the copy runs; the server is killed in the cleanups that follow:
    after the restart the cancel goes on and ends, nothing left."""
    crashing: Crashing = rig["crashing"]
    items = (f"{c.TASK_TYPE_REPLICATE_DISKS}:hold",
             f"{c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE}:during",
             f"{c.TASK_TYPE_DELETE_MIGRATION_SOURCE_RESOURCES}:after")
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


def _execute(rig: dict) -> dict:
    crashing: Crashing = rig["crashing"]
    executions = f"/replicas/{rig['replica']}/executions"
    execution = crashing.create(executions, {"execution": {"shutdown_instances": False}},
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


def test_replica_execution_cancel_ends_although_its_rollback_is_killed(rig: dict) -> None:
    """A plain cancel while the copy runs; the server is killed while the disks are rolled
    back and right after: the cancel ends, the replica holds the last completed execution."""
    crashing: Crashing = rig["crashing"]
    _change_source(rig, 7)
    items = (f"{c.TASK_TYPE_REPLICATE_DISKS}:hold",
             f"{c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS}:during",
             f"{c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS}:after")
    crashing.arm(*items)
    executions = f"/replicas/{rig['replica']}/executions"
    execution = crashing.api().post(executions, json={"execution": {
        "shutdown_instances": False}}).json()["execution"]["id"]
    _wait_running(crashing, f"{executions}/{execution}", "execution")
    crashing.api().post(f"{executions}/{execution}/actions", json={"cancel": {"force": False}})
    data = crashing.wait_final(f"{executions}/{execution}", "execution")
    _check_replica(rig, data, "CANCELED")
    _fired(rig, items)


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
    *[pytest.param((f"{t}:during", f"{t}:after"), "COMPLETED", id=t) for t in DEPLOY_TYPES],
    pytest.param((f"{c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT}:fail",
                  f"{c.TASK_TYPE_CLEANUP_FAILED_REPLICA_INSTANCE_DEPLOYMENT}:during",
                  f"{c.TASK_TYPE_CLEANUP_FAILED_REPLICA_INSTANCE_DEPLOYMENT}:after"), "ERROR",
                 id="finalize-fails-cleanup-killed"),
]


@pytest.mark.parametrize("items, expected", DEPLOY_ROWS)
def test_replica_deploy_survives_kills(rig: dict, items: tuple[str, ...], expected: str,
                                       request: pytest.FixtureRequest) -> None:
    crashing: Crashing = rig["crashing"]
    crashing.arm(*items)
    body = {"migration": {"replica_id": rig["replica"], "clone_disks": True,
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
                                f"test-{uuid.uuid4().hex[:8]}", ["w1", "w2", "w3"],
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
    task = c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES
    arm.write_text(f"{task}:during,{task}:after")
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
