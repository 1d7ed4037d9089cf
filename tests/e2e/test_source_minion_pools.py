"""SOURCE minion pools of a local cloud through the CLI against a running server: the source
disks are read through a minion's agent (its read sessions, ``transfer.agent_reads``), one
minion reserved per instance, released after success, failure and cancel; a second
migration waits for the only minion; a replica's second execution reads only the changes
through it; the refusals."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis.harness import RunningServer, local_cloud, parse_tasks, start_server, stop_server
from tests.e2e.conftest import server_with_faults
from tests.e2e.test_cli_minion_pools import disk_files, machines, same, show, wait_settled
from tests.e2e.test_os_morphing import task_events

pytestmark = pytest.mark.e2e
ENV = json.dumps({"verbose": True})
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
MiB = 1024 * 1024
BLOCK = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from server_with_faults(tmp_path_factory.mktemp("srcpool-server"))


@pytest.fixture(scope="module")
def clouds(server: RunningServer) -> dict[str, Any]:
    src, dst = server.cloud_dir("sp-src"), server.cloud_dir("sp-dst")
    local_cloud("init", str(src), "--network", "lan")
    for i in range(3):
        local_cloud("add-instance", str(src), f"vm{i}", "--disk-size", "24M", "--network",
                    "lan", "--seed", str(60 + i))
    local_cloud("add-instance", str(src), "big", "--disk-size", "64M", "--allocated", "1",
                "--network", "lan", "--seed", "69")
    local_cloud("add-instance", str(src), "db", "--disk-size", "32M", "--disk-format",
                "qcow2", "--allocated", "0.5", "--network", "lan", "--seed", "70")
    local_cloud("init", str(dst), "--network", "lan", "--storage", "bulk:raw")
    return {"src": src, "dst": dst, "src_id": server.local_endpoint("sp-src", src),
            "dst_id": server.local_endpoint("sp-dst", dst)}


@pytest.fixture(scope="module")
def pool(server: RunningServer, clouds: dict[str, Any]) -> Iterator[str]:
    """A source pool of one minion (the seed README's spellings)."""
    pool_id = server.cli(
        "minion", "pool", "create", "--pool-endpoint", "sp-src", "--pool-platform", "source",
        "--pool-os-type", "linux", "--environment-options", ENV, "--minimum-minions", "1",
        "--maximum-minions", "1", "--minion-max-idle-time", "3600", "readers",
        "-f", "json").json()["ID"]
    data = wait_settled(server, pool_id)
    assert data["Pool Status"] == "ALLOCATED", data["Events"]
    yield pool_id
    server.cli("minion", "pool", "deallocate", pool_id, "--force")
    wait_settled(server, pool_id)
    server.cli("minion", "pool", "delete", pool_id)


def agent_log(clouds: dict[str, Any], pool_id: str) -> Path:
    (minion,) = sorted(p for p in (clouds["src"] / ".coriolis" / "minions" / pool_id).iterdir()
                       if p.is_dir())
    return minion / "agent.log"


def migrate(server: RunningServer, instance: str, pool_id: str | None, *extra: str,
            check: bool = True, mib_per_s: int = 16, name: str | None = None,
            snapshot: bool = False) -> Any:
    name = name or f"{instance}-{os.urandom(3).hex()}"
    args = ["migration", "create", "--origin-endpoint", "sp-src", "--destination-endpoint",
            "sp-dst", "--instance", instance, "--source-environment",
            json.dumps({"snapshot": snapshot}),
            "--destination-environment", json.dumps(
                {"storage_backend": "bulk", "transfer_bandwidth_limit_mib": mib_per_s,
                 "instance_name": name}),
            "--network-map", '{"lan": "lan"}', "--skip-os-morphing", "--replication-count",
            "1", *extra, "-f", "json"]
    if pool_id:
        args[2:2] = ["--origin-minion-pool-id", pool_id]
    return server.cli(*args, check=check)


def wait_done(server: RunningServer, migration_id: str, timeout: float = 180) -> Any:
    return server.wait_for(["migration", "show", migration_id],
                           lambda d: d["status"] in FINAL, timeout=timeout)


def released(server: RunningServer, pool_id: str, action_id: str) -> bool:
    data = show(server, pool_id)
    return f"released by migration {action_id}" in data["Events"] and all(
        m["allocation_status"] == "AVAILABLE" for m in machines(data))


def test_a_migration_reads_its_disks_through_the_source_minion(
        server: RunningServer, clouds: dict[str, Any], pool: str) -> None:
    log = agent_log(clouds, pool)
    before = len(log.read_text())
    name = f"vm0-{os.urandom(3).hex()}"
    done = wait_done(server, migrate(server, "vm0", pool, name=name).json()["id"])
    assert done["status"] == "COMPLETED", done["tasks"]
    for a, b in zip(disk_files(clouds["src"], "vm0"), disk_files(clouds["dst"], name),
                    strict=True):
        assert same(a, b)
    served = log.read_text()[before:]
    src_disk = str(disk_files(clouds["src"], "vm0")[0])
    assert f"{src_disk} (raw) opened read-only" in served, served[-2000:]
    assert "GET /v1/reads/" in served and "/extents" in served
    (machine,) = machines(show(server, pool))
    assert f"source disks are read through minion {machine['id']}" in "\n".join(
        task_events(server, done["id"], "DEPLOY_MIGRATION_SOURCE_RESOURCES"))
    assert "reading through the agent at https://127.0.0.1:" in "\n".join(
        task_events(server, done["id"], "REPLICATE_DISKS"))
    assert released(server, pool, done["id"])
    # The agent key travelled with the tasks only: not in the migration, not in the log.
    key = json.loads(Path(machine["provider_properties"]["directory"], "writer.json")
                     .read_text())["key"]
    assert key not in json.dumps(done) and key not in server.log_path.read_text()


def test_failed_and_cancelled_migrations_release_the_minion(
        server: RunningServer, clouds: dict[str, Any], pool: str) -> None:
    faults: Path = server.faults  # type: ignore[attr-defined]
    faults.write_text("REPLICATE_DISKS:fail")  # the copy runs, then the task fails
    failed = wait_done(server, migrate(server, "vm1", pool).json()["id"])
    assert failed["status"] == "ERROR", failed["tasks"]
    assert "injected failure" in json.dumps(failed["tasks"])
    server.wait_for(["minion", "pool", "show", pool],
                    lambda d: f"released by migration {failed['id']}" in d["Events"],
                    timeout=60)
    assert released(server, pool, failed["id"])

    faults.write_text("REPLICATE_DISKS:hold")  # stays RUNNING until cancelled
    held = migrate(server, "vm2", pool).json()
    server.wait_for(["migration", "show", held["id"]],
                    lambda d: any(t["task_type"] == "REPLICATE_DISKS"
                                  and t["status"] == "RUNNING"
                                  for t in parse_tasks(d["tasks"])), timeout=60)
    server.cli("migration", "cancel", held["id"])
    assert wait_done(server, held["id"])["status"] == "CANCELED"
    assert released(server, pool, held["id"])
    faults.write_text("")


def test_a_second_migration_waits_for_the_only_minion(
        server: RunningServer, clouds: dict[str, Any], pool: str) -> None:
    faults: Path = server.faults  # type: ignore[attr-defined]
    faults.write_text("REPLICATE_DISKS:hold")  # the first holds its minion until cancelled
    first = migrate(server, "big", pool).json()
    server.wait_for(["migration", "show", first["id"]],
                    lambda d: any(t["task_type"] == "REPLICATE_DISKS"
                                  and t["status"] == "RUNNING"
                                  for t in parse_tasks(d["tasks"])), timeout=60)
    second = migrate(server, "vm1", pool).json()
    assert second["status"] == "AWAITING_MINION_ALLOCATIONS", second["status"]
    time.sleep(2)
    assert server.cli("migration", "show", second["id"], "-f", "json").json()["status"] \
        == "AWAITING_MINION_ALLOCATIONS"
    server.cli("migration", "cancel", first["id"])
    done = [wait_done(server, m["id"]) for m in (first, second)]
    assert [d["status"] for d in done] == ["CANCELED", "COMPLETED"], \
        [d["tasks"] for d in done]
    events = show(server, pool)["Events"]
    # The second was reserved only once the first released the minion.
    assert events.index(f"released by migration {first['id']}") \
        < events.index(f"reserved for migration {second['id']}")
    assert released(server, pool, second["id"])


def volume(server: RunningServer, replica: str) -> dict[str, Any]:
    shown = server.cli("replica", "show", replica, "--show-instances-data", "-f", "json").json()
    return shown["instances-data"]["db"]["volumes_info"][0]


def test_a_replica_reads_only_the_changes_through_the_minion(
        server: RunningServer, clouds: dict[str, Any], pool: str) -> None:
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "sp-src", "--destination-endpoint",
        "sp-dst", "--instance", "db", "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "bulk"}', "--network-map",
        '{"lan": "lan"}', "--origin-minion-pool-id", pool, "-f", "json").json()
    assert replica["origin_minion_pool_id"] == pool
    log = agent_log(clouds, pool)

    def execute() -> dict[str, Any]:
        ex = server.cli("replica", "execute", replica["id"], "-f", "json").json()
        return server.wait_for(["replica", "execution", "show", replica["id"], ex["id"]],
                               lambda e: e["status"] in FINAL)

    first = execute()
    assert first["status"] == "COMPLETED", first["tasks"]
    assert volume(server, replica["id"])["bytes_sent"] > 8 * MiB
    src = disk_files(clouds["src"], "db")[0]
    served = len(log.read_text())
    blocks = [3, 77, 200, 301]
    for i, block in enumerate(blocks):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        f"write -P {0x40 + i} {block * BLOCK} {BLOCK}", str(src)],
                       check=True, capture_output=True)
    second = execute()
    assert second["status"] == "COMPLETED", second["tasks"]
    counters = volume(server, replica["id"])
    # Only the changed blocks were listed by the minion (the dirty bitmap), read and sent.
    assert counters["bytes_scanned"] == counters["bytes_sent"] == len(blocks) * BLOCK, \
        counters
    new = log.read_text()[served:]
    assert "opened read-only, changes since coriolis-cbt-" in new, new[-2000:]
    assert "released by replica" in show(server, pool)["Events"]
    assert all(m["allocation_status"] == "AVAILABLE" for m in machines(show(server, pool)))
    dst = Path(volume(server, replica["id"])["path"])
    assert subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", str(src),
                           str(dst)]).returncode == 0
    server.cli("replica", "delete", replica["id"], "--delete-disks")


def test_pools_of_the_wrong_side_or_os_are_refused(
        server: RunningServer, clouds: dict[str, Any], pool: str) -> None:
    dest_pool = server.cli(
        "minion", "pool", "create", "--endpoint-id", clouds["dst_id"], "--platform",
        "destination", "--os-type", "linux", "--environment-options", ENV,
        "--skip-allocation", "writers", "-f", "json").json()["ID"]
    # A source pool given as the destination pool and the other way round.
    for args, field in ((["--destination-minion-pool-id", pool], "destination_minion_pool_id"),
                        (["--origin-minion-pool-id", dest_pool], "origin_minion_pool_id")):
        result = migrate(server, "vm0", None, *args, check=False)
        assert result.returncode != 0 and field in result.stderr and "HTTP 400" in \
            result.stderr, result.stderr
    # A source pool on the destination's endpoint (right side, wrong endpoint).
    other = server.cli(
        "minion", "pool", "create", "--endpoint-id", clouds["dst_id"], "--platform", "source",
        "--os-type", "linux", "--environment-options", ENV, "--skip-allocation", "elsewhere",
        "-f", "json").json()["ID"]
    result = migrate(server, "vm0", other, check=False)
    assert result.returncode != 0 and "origin_minion_pool_id" in result.stderr \
        and "not to the source endpoint" in result.stderr, result.stderr
    # A non-Linux source pool is refused at create, naming the field.
    result = server.cli(
        "minion", "pool", "create", "--endpoint-id", clouds["src_id"], "--platform", "source",
        "--os-type", "windows", "--environment-options", ENV, "win", check=False)
    assert result.returncode != 0 and "os_type" in result.stderr \
        and "source pool must be 'linux'" in result.stderr, result.stderr
    for pool_id in (dest_pool, other):
        server.cli("minion", "pool", "delete", pool_id)


@pytest.mark.parametrize("crash_at", ["DEPLOY_MIGRATION_SOURCE_RESOURCES:during",
                                      "REPLICATE_DISKS:during"])
def test_a_server_killed_mid_migration_still_reads_through_and_releases_the_minion(
        tmp_path_factory: pytest.TempPathFactory, crash_at: str) -> None:
    """SIGKILL of the all-in-one server while the source disks are being set up (a
    point-in-time copy of each, ``snapshot``) or read through the minion: restarted, the
    migration completes through the same minion (its key sent again with the re-run tasks),
    bit-identical, and the minion is released; no snapshot is left."""
    base = tmp_path_factory.mktemp("srcpool-crash")
    faults = base / "faults"
    faults.write_text("")
    env = {"CORIOLIS_TEST_CRASH_AT": f"@{faults}"}
    srv = start_server(base / "data", env=env)
    try:
        src, dst = srv.cloud_dir("c-src"), srv.cloud_dir("c-dst")
        local_cloud("init", str(src), "--network", "lan")
        local_cloud("add-instance", str(src), "vm", "--disk-size", "32M", "--allocated", "1",
                    "--network", "lan", "--seed", "71")
        local_cloud("init", str(dst), "--network", "lan", "--storage", "bulk:raw")
        srv.local_endpoint("sp-src", src)
        srv.local_endpoint("sp-dst", dst)
        pool_id = srv.cli("minion", "pool", "create", "--pool-endpoint", "sp-src",
                          "--pool-platform", "source", "--pool-os-type", "linux",
                          "--environment-options", ENV, "crashy", "-f", "json").json()["ID"]
        assert wait_settled(srv, pool_id)["Pool Status"] == "ALLOCATED"
        faults.write_text(crash_at)
        migration = migrate(srv, "vm", pool_id, name="moved", mib_per_s=4,
                            snapshot=True).json()
        assert srv.process.wait(timeout=120) == -9
    finally:
        stop_server(srv)
    srv = start_server(base / "data", env=env)
    try:
        done = wait_done(srv, migration["id"])
        assert done["status"] == "COMPLETED", done["tasks"]
        for a, b in zip(disk_files(src, "vm"), disk_files(dst, "moved"), strict=True):
            assert same(a, b)
        log = agent_log({"src": src}, pool_id).read_text()
        assert "/.coriolis/snapshot-" in log and "opened read-only" in log, log[-2000:]
        assert not list((src / ".coriolis").glob("snapshot-*"))
        srv.wait_for(["minion", "pool", "show", pool_id],
                     lambda d: f"released by migration {migration['id']}" in d["Events"],
                     timeout=60)
        assert released(srv, pool_id, migration["id"])
        srv.cli("minion", "pool", "deallocate", pool_id)
        assert wait_settled(srv, pool_id)["Pool Status"] == "DEALLOCATED"
    finally:
        stop_server(srv)


def test_source_and_destination_minions_in_one_migration(
        server: RunningServer, clouds: dict[str, Any], pool: str) -> None:
    """Both pools at once: each side's minion gets its own key (the source's in the source
    connection info, the destination's in the destination's); the data goes from one agent
    to the other; both are released."""
    writers = server.cli(
        "minion", "pool", "create", "--endpoint-id", clouds["dst_id"], "--platform",
        "destination", "--os-type", "linux", "--environment-options", ENV, "writers2",
        "-f", "json").json()["ID"]
    assert wait_settled(server, writers)["Pool Status"] == "ALLOCATED"
    (writer_dir,) = sorted(p for p in (clouds["dst"] / ".coriolis" / "minions" / writers)
                           .iterdir() if p.is_dir())
    read_log = agent_log(clouds, pool)
    before = len(read_log.read_text())
    name = f"vm2-{os.urandom(3).hex()}"
    done = wait_done(server, migrate(server, "vm2", pool, "--destination-minion-pool-id",
                                     writers, name=name).json()["id"])
    assert done["status"] == "COMPLETED", done["tasks"]
    for a, b in zip(disk_files(clouds["src"], "vm2"), disk_files(clouds["dst"], name),
                    strict=True):
        assert same(a, b)
    assert "opened read-only" in read_log.read_text()[before:]
    assert "/v1/transfers/" in (writer_dir / "agent.log").read_text()
    assert released(server, pool, done["id"]) and released(server, writers, done["id"])
    server.cli("minion", "pool", "deallocate", writers)
    wait_settled(server, writers)
    server.cli("minion", "pool", "delete", writers)
