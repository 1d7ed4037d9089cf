"""The scale-out mode for real: api, conductor, scheduler and three workers as separate
processes on loopback, sharing a fresh PostgreSQL database and a RabbitMQ namespace of their
own (`./dev test` starts both services when they are down)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from coriolis import task_types
from coriolis.db import models
from coriolis.harness import (
    Cluster,
    RunningServer,
    RunningWriter,
    local_cloud,
    scratch_database,
    start_cluster,
    start_writer,
    stop_server,
)
from tests.e2e.test_cli_writer_agent import FINAL, copy_progress, disk_files, same
from tests.e2e.test_dashboard import dashboard_client, disk_values, read_stream

pytestmark = pytest.mark.e2e
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"



@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with scratch_database(POSTGRES, "coriolis_test") as url:
        yield url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("cluster")
    running = start_cluster(work / "data", database, BROKER, f"test-{uuid.uuid4().hex[:8]}",
                            ["w1", "w2", "w3"],
                            {"CORIOLIS_HEARTBEAT_INTERVAL": "1",
                             "CORIOLIS_WORKER_DOWN_AFTER": "5"})
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def db(database: str) -> Iterator[Engine]:
    engine = create_engine(database)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def setup(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Regions r1 and r2; w1 in r1, w2 in r2, w3 in r1 but disabled. Clouds: a source and a
    destination folder, and a writer agent for the destination."""
    api = _api(cluster)
    work = api.cloud_dir("")  # the project's local cloud root on every worker
    for name in ("src", "dst"):
        local_cloud("init", str(work / name), "--network", "lan")
    regions = {name: api.cli("region", "create", name, "-f", "json").json()["ID"]
               for name in ("r1", "r2")}
    services = {s["Host"]: s["ID"] for s in api.cli("service", "list", "-f", "json").json()}
    api.cli("service", "update", services["w1"], "--coriolis-region", regions["r1"])
    api.cli("service", "update", services["w2"], "--coriolis-region", regions["r2"])
    api.cli("service", "update", services["w3"], "--coriolis-region", regions["r1"],
            "--disabled")
    agent = start_writer(tmp_path_factory.mktemp("agent") / "agent", [work])
    try:
        yield {"work": work, "src": work / "src", "dst": work / "dst", "regions": regions,
               "services": services, "agent": agent}
    finally:
        stop_server(agent)


def _api(cluster: Cluster) -> RunningServer:
    assert cluster.api is not None
    return cluster.api


def endpoint(api: RunningServer, name: str, connection: dict, *regions: str) -> str:
    args = [a for r in regions for a in ("--coriolis-region", r)]
    return api.cli("endpoint", "create", "--name", name, "--provider", "local",
                   "--connection", json.dumps(connection), *args, "-f", "json").json()["id"]


def migrate(api: RunningServer, src: str, dst: str, instance: str,
            dest_env: dict | None = None) -> str:
    return api.cli(
        "migration", "create", "--origin-endpoint", src, "--destination-endpoint", dst,
        "--instance", instance, "--source-environment", '{"snapshot": false}',
        "--destination-environment", json.dumps({"storage_backend": "default",
                                                  **(dest_env or {})}),
        "--network-map", '{"lan": "lan"}', "--skip-os-morphing", "--replication-count", "1",
        "-f", "json").json()["id"]


def wait_final(api: RunningServer, migration: str, timeout: float = 180) -> dict:
    return api.wait_for(["migration", "show", migration], lambda m: m["status"] in FINAL,
                        timeout=timeout)


def task_rows(db: Engine, migration: str) -> list[tuple[str, str | None, str]]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(models.Task.task_type, models.Task.host, models.Task.status)
            .join(models.Execution).where(models.Execution.action_id == migration))]


def test_tasks_land_only_where_the_region_rules_allow(cluster: Cluster, setup: dict,
                                                      db: Engine) -> None:
    api, r = _api(cluster), setup["regions"]
    for name in ("vm-a", "vm-b", "vm-c"):
        local_cloud("add-instance", str(setup["src"]), name, "--disk-size", "16M",
                    "--network", "lan")
    endpoint(api, "src-r1", {"path": str(setup["src"])}, r["r1"])
    endpoint(api, "src-r2", {"path": str(setup["src"])}, r["r2"])
    endpoint(api, "dst-any", {"path": str(setup["dst"])})
    endpoint(api, "dst-r1r2", {"path": str(setup["dst"])}, r["r1"], r["r2"])
    endpoint(api, "dst-r2", {"path": str(setup["dst"])}, r["r2"])

    # Source in r1: its tasks and the disk copy on w1 only (w3 is in r1 but disabled);
    # the destination has no region, so its own tasks may use any enabled worker.
    a = migrate(api, "src-r1", "dst-any", "vm-a")
    # Source in r2: w2; destination in r1 or r2: w1 or w2; the copy needs both: w2.
    b = migrate(api, "src-r2", "dst-r1r2", "vm-b")
    for migration, source_side, dest_side in ((a, {"w1"}, {"w1", "w2"}),
                                              (b, {"w2"}, {"w1", "w2"})):
        assert wait_final(api, migration)["status"] == "COMPLETED"
        ran = [(t, h) for t, h, s in task_rows(db, migration) if s == "COMPLETED"]
        assert len(ran) >= 8, ran
        for task_type, host in ran:
            if task_types.Side.SOURCE in task_types.sides(task_type):
                assert host in source_side, (task_type, host)
            else:
                assert host in dest_side, (task_type, host)

    # Source tasks may run in r1 and destination tasks in r2, but the disk copy touches
    # both: no worker is in both, so it fails at once, saying why.
    started = time.monotonic()
    crossed = migrate(api, "src-r1", "dst-r2", "vm-c")
    done = wait_final(api, crossed, timeout=60)
    assert done["status"] == "ERROR"
    assert time.monotonic() - started < 30
    rows = task_rows(db, crossed)
    assert ("GET_INSTANCE_INFO", "w1", "COMPLETED") in rows
    assert ("VALIDATE_MIGRATION_DESTINATION_INPUTS", "w2", "COMPLETED") in rows
    assert ("REPLICATE_DISKS", None, "FAILED_TO_SCHEDULE") in rows
    assert re.search(r"endpoint 'src-r1' \(local\) in regions \[r1\] and endpoint 'dst-r2' "
                     r"\(local\) in regions \[r2\]", json.dumps(done["tasks"])), done["tasks"]

    # A listing follows the same rules: no enabled worker in r2 once w2 is disabled.
    api.cli("service", "update", setup["services"]["w2"], "--disabled")
    try:
        res = api.cli("endpoint", "instance", "list", "src-r2", check=False)
        assert res.returncode != 0 and "No enabled worker" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    finally:
        api.cli("service", "update", setup["services"]["w2"], "--coriolis-region", r["r2"],
                "--enabled")


def _copy_started(db: Engine, migration: str, fraction: float, api: RunningServer
                  ) -> str:
    """Wait until the disk copy has done ``fraction`` of the disk; return its worker."""
    def far_enough(m: dict) -> bool:
        found = re.findall(r"Disk disk0: ([\d.]+) of ([\d.]+) MiB", json.dumps(m["tasks"]))
        return bool(found) and float(found[-1][0]) >= float(found[-1][1]) * fraction

    api.wait_for(["migration", "show", migration], far_enough, timeout=90)
    hosts = [h for t, h, _ in task_rows(db, migration) if t == "REPLICATE_DISKS"]
    assert hosts and hosts[0], hosts
    return hosts[0]


def test_worker_killed_mid_copy_the_copy_resumes_on_another(
        cluster: Cluster, setup: dict, db: Engine) -> None:
    """w1 and w3 (enabled now) both serve r1: SIGKILL the one copying; once it is marked
    down its copy goes to the other and resumes from the agent's last acknowledged chunk."""
    api, agent = _api(cluster), setup["agent"]
    api.cli("service", "update", setup["services"]["w3"], "--coriolis-region",
            setup["regions"]["r1"], "--enabled")
    local_cloud("add-instance", str(setup["src"]), "big1", "--disk-size", "96M",
                "--allocated", "1.0", "--network", "lan", "--seed", "21")
    endpoint(api, "k-src", {"path": str(setup["src"])}, setup["regions"]["r1"])
    endpoint(api, "k-dst", {"path": str(setup["dst"]), "writer": _always(agent)},
             setup["regions"]["r1"])
    migration = migrate(api, "k-src", "k-dst", "big1",
                        {"transfer_compression": "none", "transfer_bandwidth_limit_mib": 24})
    victim = _copy_started(db, migration, 0.25, api)
    cluster.kill(victim)
    try:
        done = wait_final(api, migration)
        assert done["status"] == "COMPLETED", done["tasks"]
        copy = [(h, s) for t, h, s in task_rows(db, migration) if t == "REPLICATE_DISKS"]
        survivor = ({"w1", "w3"} - {victim}).pop()
        assert copy == [(survivor, "COMPLETED")]
        with db.connect() as conn:
            events = [r[0] for r in conn.execute(
                select(models.TaskEvent.message).join(models.Task).join(models.Execution)
                .where(models.Execution.action_id == migration,
                       models.Task.task_type == "REPLICATE_DISKS"))]
        assert any(f"Worker {victim} stopped heart-beating" in e for e in events), events
        resumed = re.findall(r"([\d.]+) MiB resumed", copy_progress(done["tasks"]))
        assert resumed and float(resumed[-1]) >= 24, copy_progress(done["tasks"])
        for a, b in zip(disk_files(setup["src"], "big1"), disk_files(setup["dst"], "big1"),
                        strict=True):
            assert same(a, b)
        services = {s["Host"]: s for s in api.cli("service", "list", "-f", "json").json()}
        assert services[victim]["Status"] == "DOWN"
    finally:
        cluster.start_part("worker", victim)
    # Back: registered again under the same row, UP, keeping its region and enabled flag.
    again = api.cli("service", "show", setup["services"][victim], "-f", "json").json()
    assert again["Status"] == "UP" and again["Enabled"] is True
    assert again["Mapped Region IDs"] == [setup["regions"]["r1"]]


def test_conductor_restarted_mid_execution_the_execution_completes(
        cluster: Cluster, setup: dict, db: Engine) -> None:
    """The conductor dies while a worker copies; reports queue up in the broker, the new
    conductor applies them and carries the execution to the end."""
    api = _api(cluster)
    local_cloud("add-instance", str(setup["src"]), "big2", "--disk-size", "64M",
                "--allocated", "1.0", "--network", "lan", "--seed", "22")
    migration = migrate(api, "k-src", "k-dst", "big2",
                        {"transfer_compression": "none", "transfer_bandwidth_limit_mib": 16})
    worker = _copy_started(db, migration, 0.1, api)
    cluster.kill("conductor")
    time.sleep(2)
    cluster.start_part("conductor")
    done = wait_final(api, migration)
    assert done["status"] == "COMPLETED", done["tasks"]
    copy = [(h, s) for t, h, s in task_rows(db, migration) if t == "REPLICATE_DISKS"]
    assert copy == [(worker, "COMPLETED")]  # the same worker went on: nothing was re-run
    for a, b in zip(disk_files(setup["src"], "big2"), disk_files(setup["dst"], "big2"),
                    strict=True):
        assert same(a, b)


def test_dashboard_streams_what_the_conductor_stores(cluster: Cluster, setup: dict) -> None:
    """The dashboard of the ``api`` process: its live stream follows a migration whose tasks
    run on the workers and whose progress the separate conductor stores."""
    api = _api(cluster)
    local_cloud("add-instance", str(setup["src"]), "dash1", "--disk-size", "48M",
                "--allocated", "1.0", "--network", "lan", "--seed", "23")
    endpoint(api, "d-src", {"path": str(setup["src"])})
    endpoint(api, "d-dst", {"path": str(setup["dst"]), "writer": _always(setup["agent"])})
    migration = migrate(api, "d-src", "d-dst", "dash1",
                        {"transfer_compression": "none", "transfer_bandwidth_limit_mib": 16})
    with dashboard_client(api) as http:
        events = read_stream(http, migration)
    assert events[-1] == ("done", "COMPLETED"), events[-1]
    seen = [v for event, html in events if event == "execution" for v in disk_values(html)]
    assert seen and seen[-1] == 100 and any(v < 100 for v in seen), seen
    assert any("dash1 deployed" in html for _, html in events)


def _always(agent: RunningWriter) -> dict:
    return {**agent.details, "mode": "always"}


def test_worker_registration_is_unique_per_host(cluster: Cluster, db: Engine) -> None:
    with db.connect() as conn:
        hosts = [r[0] for r in conn.execute(select(models.Service.host))]
    assert sorted(hosts) == sorted(set(hosts))
    assert {"w1", "w2", "w3"} <= set(hosts)
    # Each process's log is a log stream of the coriolis-logger service.
    assert cluster.api is not None
    names = {r["Log name"] for r in cluster.api.cli("log", "list", "-f", "json").json()}
    assert {"coriolis-api", "coriolis-conductor", "coriolis-scheduler", "coriolis-worker-w1",
            "coriolis-worker-w2", "coriolis-worker-w3"} <= names, names
