"""Minion pools of a local cloud through the CLI against a running server: the whole life
cycle in the seed README's and the upstream client's spellings, real minions (writer agent
processes), masked secrets, and the refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coriolis.harness import RunningServer, local_cloud, transfer_summary

pytestmark = pytest.mark.e2e
SERVER_BIN = str(Path(sys.executable).parent / "coriolis-server")
ENV = json.dumps({"verbose": True})
FINAL_POOL = {"ALLOCATED", "DEALLOCATED", "ERROR"}


@pytest.fixture(scope="module")
def cloud(server: RunningServer) -> dict[str, Any]:
    dst = server.cloud_dir("pool-dst")
    local_cloud("init", str(dst), "--network", "lan", "--storage", "bulk:raw")
    endpoint = server.local_endpoint("pool-dst", dst)
    return {"path": dst, "endpoint": endpoint}


def show(server: RunningServer, pool_id: str) -> dict[str, Any]:
    return server.cli("minion", "pool", "show", pool_id, "-f", "json").json()


def wait_settled(server: RunningServer, pool_id: str) -> dict[str, Any]:
    return server.wait_for(["minion", "pool", "show", pool_id],
                           lambda d: d["Pool Status"] in FINAL_POOL, timeout=120)


def machines(data: dict[str, Any]) -> list[dict[str, Any]]:
    value = data["Minion Machines"]
    return json.loads(value) if isinstance(value, str) else value or []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def minion_dirs(cloud: dict[str, Any], pool_id: str) -> list[Path]:
    folder = cloud["path"] / ".coriolis" / "minions" / pool_id
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def test_life_cycle_seed_spellings(server: RunningServer, cloud: dict[str, Any]) -> None:
    created = server.cli(
        "minion", "pool", "create", "--pool-endpoint", "pool-dst", "--pool-platform",
        "destination", "--pool-os-type", "linux", "--environment-options", ENV,
        "--minimum-minions", "2", "--maximum-minions", "3", "--minion-max-idle-time", "600",
        "--minion-retention-strategy", "poweroff", "--notes", "seed pool", "seed-pool",
        "-f", "json").json()
    pool_id = created["ID"]
    assert created["Endpoint"] == cloud["endpoint"]
    data = wait_settled(server, pool_id)
    assert data["Pool Status"] == "ALLOCATED", data["Events"]
    # Every transition is an event, in order.
    order = ["DEALLOCATED -> VALIDATING_INPUTS",
             "VALIDATING_INPUTS -> ALLOCATING_SHARED_RESOURCES",
             "ALLOCATING_SHARED_RESOURCES -> ALLOCATING_MACHINES",
             "ALLOCATING_MACHINES -> ALLOCATED"]
    positions = [data["Events"].index(t) for t in order]
    assert positions == sorted(positions)
    minions = machines(data)
    assert len(minions) == 2
    assert all(m["allocation_status"] == "AVAILABLE" and m["power_status"] == "POWERED_ON"
               for m in minions)
    # Real agents: a process each, its own directory, port, certificate and key.
    dirs = minion_dirs(cloud, pool_id)
    assert [d.name for d in dirs] == sorted(m["id"] for m in minions)
    details = [json.loads((d / "writer.json").read_text()) for d in dirs]
    assert len({d["url"] for d in details}) == 2 and len({d["key"] for d in details}) == 2
    assert len({d["fingerprint"] for d in details}) == 2
    pids = [m["provider_properties"]["pid"] for m in minions]
    assert all(alive(p) for p in pids)
    # Secrets masked in every response (show, list, the action replies).
    listed = server.cli("minion", "pool", "list", "-f", "json")
    for out in (json.dumps(data), listed.stdout):
        assert all(d["key"] not in out for d in details)
    assert all(m["connection_info"] == "***" for m in minions)

    # Allocated: update and delete are refused (409 naming the state), nothing changes.
    refused = server.cli("minion", "pool", "update", pool_id, "--minimum-minions", "1",
                         check=False)
    assert refused.returncode != 0 and "ALLOCATED" in refused.stderr \
        and "updated only when DEALLOCATED" in refused.stderr
    refused = server.cli("minion", "pool", "delete", pool_id, check=False)
    assert refused.returncode != 0 and "deleted only when" in refused.stderr
    assert show(server, pool_id)["Minimum Minions"] == 2

    # The seed's "tear down shared resources": machines, then shared resources.
    server.cli("minion", "pool", "tear", "down", "shared", "resources", pool_id)
    data = wait_settled(server, pool_id)
    assert data["Pool Status"] == "DEALLOCATED", data["Events"]
    assert "DEALLOCATING_MACHINES -> DEALLOCATING_SHARED_RESOURCES" in data["Events"]
    assert machines(data) == [] and not any(alive(p) for p in pids)
    assert not (cloud["path"] / ".coriolis" / "minions" / pool_id).exists()
    updated = server.cli("minion", "pool", "update", pool_id, "--minimum-minions", "1",
                         "--pool-os-type", "linux", "--name", "renamed", "-f", "json").json()
    assert updated["Minimum Minions"] == 1 and updated["Pool Name"] == "renamed"
    server.cli("minion", "pool", "delete", pool_id)
    assert server.cli("minion", "pool", "show", pool_id, check=False).returncode != 0


def test_upstream_spellings_skip_allocation_refresh(server: RunningServer,
                                                    cloud: dict[str, Any]) -> None:
    pool_id = server.cli(
        "minion", "pool", "create", "--endpoint-id", cloud["endpoint"], "--platform",
        "destination", "--os-type", "linux", "--environment-options", '{"verbose": true}',
        "--skip-allocation", "up-pool", "-f", "json").json()["ID"]
    data = show(server, pool_id)
    assert data["Pool Status"] == "DEALLOCATED" and machines(data) == []
    assert data["Minimum Minions"] == 1 and data["Maximum Minions"] == 1
    assert server.cli("minion", "pool", "allocate", pool_id, "-f", "json").json()["ID"] \
        == pool_id
    data = wait_settled(server, pool_id)
    assert data["Pool Status"] == "ALLOCATED" and len(machines(data)) == 1
    refused = server.cli("minion", "pool", "allocate", pool_id, check=False)
    assert refused.returncode != 0 and "allocated only when DEALLOCATED" in refused.stderr
    # Refresh replaces a dead minion.
    old = machines(data)[0]
    os.kill(old["provider_properties"]["pid"], 9)
    data = server.cli("minion", "pool", "refresh", pool_id, "-f", "json").json()
    assert data["Pool Status"] == "IN_MAINTENANCE"  # in the background, not in the request
    data = wait_settled(server, pool_id)
    assert data["Pool Status"] == "ALLOCATED", data["Events"]
    new = machines(data)
    assert len(new) == 1 and new[0]["id"] != old["id"], data["Events"]
    assert "failed its health check" in data["Events"]
    assert alive(new[0]["provider_properties"]["pid"])
    server.cli("minion", "pool", "deallocate", pool_id)
    assert wait_settled(server, pool_id)["Pool Status"] == "DEALLOCATED"
    assert not alive(new[0]["provider_properties"]["pid"])
    server.cli("minion", "pool", "delete", pool_id)
    for spelling in (["endpoint", "minion", "pool", "destination", "options", "list"],
                     ["endpoint", "destination", "minion", "pool", "options", "list"]):
        listed = server.cli(*spelling, cloud["endpoint"], "-f", "json").json()
        assert {o["Option Name"] if "Option Name" in o else next(iter(o.values()))
                for o in listed} == {"verbose"}, listed
    # Local makes source pools too (their minions serve the instances' disks): the same
    # options.
    for spelling in (["endpoint", "minion", "pool", "source", "options", "list"],
                     ["endpoint", "source", "minion", "pool", "options", "list"]):
        listed = server.cli(*spelling, cloud["endpoint"], "-f", "json").json()
        assert {o["Option Name"] if "Option Name" in o else next(iter(o.values()))
                for o in listed} == {"verbose"}, listed


def test_bad_input_changes_nothing(server: RunningServer, cloud: dict[str, Any]) -> None:
    before = server.cli("minion", "pool", "list", "-f", "json").stdout

    def refused(*args: str) -> str:
        result = server.cli("minion", "pool", "create", "--endpoint-id", cloud["endpoint"],
                            "--environment-options", ENV, *args, "-f", "json", check=False)
        assert result.returncode != 0, result.stdout
        return result.stderr

    assert "greater than maximum_minions" in refused(
        "--platform", "destination", "--os-type", "linux", "--minimum-minions", "3",
        "--maximum-minions", "2", "p")
    assert "source pool must be 'linux'" in refused(
        "--platform", "source", "--os-type", "windows", "p")
    assert "platform" in refused("--platform", "sideways", "--os-type", "linux", "p")
    assert "environment_options" in server.cli(
        "minion", "pool", "create", "--endpoint-id", cloud["endpoint"], "--platform",
        "destination", "--os-type", "linux", "--environment-options", '{"nope": 1}', "p",
        check=False).stderr
    assert server.cli("minion", "pool", "list", "-f", "json").stdout == before
    assert not (cloud["path"] / ".coriolis" / "minions").exists() or \
        all(not any(p.iterdir()) for p in (cloud["path"] / ".coriolis" / "minions").iterdir())


def test_other_project_cannot_see_or_use_a_pool(server: RunningServer,
                                                cloud: dict[str, Any]) -> None:
    pool_id = server.cli(
        "minion", "pool", "create", "--endpoint-id", cloud["endpoint"], "--platform",
        "destination", "--os-type", "linux", "--environment-options", ENV,
        "--skip-allocation", "private", "-f", "json").json()["ID"]
    subprocess.run([SERVER_BIN, "user", "create", "carol", "--password", "carol-pass",
                    "--project", "team-c", "--data-dir", str(server.data_dir)], check=True,
                   capture_output=True)
    other = {"OS_USERNAME": "carol", "OS_PASSWORD": "carol-pass", "OS_PROJECT_NAME": "team-c"}
    for args in (["show", pool_id], ["allocate", pool_id], ["delete", pool_id]):
        result = server.cli("minion", "pool", *args, check=False, env=other)
        assert result.returncode != 0 and "could not be found" in result.stderr
    assert pool_id not in server.cli("minion", "pool", "list", env=other).stdout
    # Nor make one on this project's endpoint.
    result = server.cli("minion", "pool", "create", "--endpoint-id", cloud["endpoint"],
                        "--platform", "destination", "--os-type", "linux",
                        "--environment-options", ENV, "theirs", check=False, env=other)
    assert result.returncode != 0
    assert show(server, pool_id)["Pool Status"] == "DEALLOCATED"
    server.cli("minion", "pool", "delete", pool_id)


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)]).returncode == 0


def disk_files(cloud: Path, instance: str) -> list[Path]:
    desc = json.loads((cloud / "instances" / instance / "instance.json").read_text())
    return [(cloud / "instances" / instance / d["file"]).resolve() for d in desc["disks"]]


@pytest.fixture(scope="module")
def source(server: RunningServer) -> Path:
    src = server.cloud_dir("pool-src")
    local_cloud("init", str(src), "--network", "lan")
    for i in range(3):
        local_cloud("add-instance", str(src), f"vm{i}", "--disk-size", "24M", "--network",
                    "lan", "--seed", str(40 + i))
    local_cloud("add-instance", str(src), "big", "--disk-size", "64M", "--allocated", "1",
                "--network", "lan", "--seed", "49")
    server.local_endpoint("pool-src", src)
    return src


def migrate(server: RunningServer, instance: str, pool_id: str | None,
            check: bool = True, mib_per_s: int = 8) -> Any:
    args = ["migration", "create", "--origin-endpoint", "pool-src", "--destination-endpoint",
            "pool-dst", "--instance", instance, "--source-environment", '{"snapshot": false}',
            "--destination-environment", json.dumps(
                {"storage_backend": "bulk", "transfer_bandwidth_limit_mib": mib_per_s,
                 "instance_name": f"{instance}-{os.urandom(3).hex()}"}),
            "--network-map", '{"lan": "lan"}', "--skip-os-morphing", "--replication-count",
            "1", "-f", "json"]
    if pool_id:
        args[2:2] = ["--destination-minion-pool-id", pool_id]
    return server.cli(*args, check=check)


def test_three_migrations_share_two_minions(server: RunningServer, cloud: dict[str, Any],
                                            source: Path) -> None:
    pool_id = server.cli(
        "minion", "pool", "create", "--endpoint-id", cloud["endpoint"], "--platform",
        "destination", "--os-type", "linux", "--environment-options", ENV,
        "--minimum-minions", "2", "--maximum-minions", "2", "--minion-max-idle-time", "3600",
        "--skip-allocation", "shared", "-f", "json").json()["ID"]
    # Not ALLOCATED yet: a transfer naming it is refused (400 naming pool and reason).
    refused = migrate(server, "vm0", pool_id, check=False)
    assert refused.returncode != 0 and pool_id in refused.stderr \
        and "not ALLOCATED" in refused.stderr, refused.stderr
    # --wait returns the settled pool
    assert server.cli("minion", "pool", "allocate", pool_id, "--wait", "--wait-interval", "0.5",
                      "-f", "value", "-c", "Pool Status").stdout.strip() == "ALLOCATED"
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(3) as ex:
        created = list(ex.map(lambda i: migrate(server, f"vm{i}", pool_id).json(), range(3)))
    assert sorted(m["status"] for m in created).count("AWAITING_MINION_ALLOCATIONS") >= 1, \
        [m["status"] for m in created]
    done = [server.wait_for(["migration", "show", m["id"]],
                            lambda d: d["status"] in {"COMPLETED", "ERROR", "CANCELED"},
                            timeout=180) for m in created]
    assert all(d["status"] == "COMPLETED" for d in done), \
        "\n".join(transfer_summary(d) for d in done)
    data = show(server, pool_id)
    events = data["Events"].splitlines()
    # Never more than two in use; the third was reserved only after a release.
    in_use = peak = 0
    for line in events:
        in_use += (" reserved for " in line) - (" released by " in line)
        peak = max(peak, in_use)
    assert peak == 2 and in_use == 0, data["Events"]
    assert sum(" reserved for " in e for e in events) == 3
    assert all(m["allocation_status"] == "AVAILABLE" for m in machines(data))
    for i, d in enumerate(done):
        name = json.loads(d["destination_environment"])["instance_name"] \
            if isinstance(d["destination_environment"], str) \
            else d["destination_environment"]["instance_name"]
        for a, b in zip(disk_files(source, f"vm{i}"), disk_files(cloud["path"], name),
                        strict=True):
            assert same(a, b)
    # The data went through the minions' agents: their logs show the writes.
    logs = [(d / "agent.log").read_text() for d in minion_dirs(cloud, pool_id)]
    assert all("/v1/transfers" in log for log in logs), [log[-2000:] for log in logs]
    assert server.cli("minion", "pool", "deallocate", pool_id, "--wait", "-f", "value", "-c",
                      "Pool Status").stdout.strip() == "DEALLOCATED"
    server.cli("minion", "pool", "delete", pool_id)


def new_pool(server: RunningServer, cloud: dict[str, Any], name: str, *args: str) -> str:
    pool_id = server.cli(
        "minion", "pool", "create", "--endpoint-id", cloud["endpoint"], "--platform",
        "destination", "--os-type", "linux", "--environment-options", ENV, *args, name,
        "-f", "json").json()["ID"]
    assert wait_settled(server, pool_id)["Pool Status"] == "ALLOCATED"
    return pool_id


def test_dead_minion_is_replaced_and_serves(server: RunningServer, cloud: dict[str, Any],
                                            source: Path) -> None:
    pool_id = new_pool(server, cloud, "healing", "--minion-max-idle-time", "3600")
    dead = machines(show(server, pool_id))[0]
    os.kill(dead["provider_properties"]["pid"], 9)
    # The upkeep's health check (refresh runs it now): marked, removed, replaced.
    server.cli("minion", "pool", "refresh", pool_id)
    data = wait_settled(server, pool_id)
    assert f"Minion {dead['id']} failed its health check" in data["Events"]
    assert f"Minion {dead['id']} removed" in data["Events"]
    (new,) = machines(data)
    assert new["id"] != dead["id"] and alive(new["provider_properties"]["pid"])
    done = server.wait_for(["migration", "show", migrate(server, "vm1", pool_id).json()["id"]],
                           lambda d: d["status"] in {"COMPLETED", "ERROR", "CANCELED"})
    assert done["status"] == "COMPLETED", done["tasks"]
    assert f"Minion {new['id']} released" in show(server, pool_id)["Events"]
    server.cli("minion", "pool", "deallocate", pool_id)
    wait_settled(server, pool_id)
    server.cli("minion", "pool", "delete", pool_id)


def test_deallocate_in_use_needs_force_which_cancels(server: RunningServer,
                                                     cloud: dict[str, Any],
                                                     source: Path) -> None:
    pool_id = new_pool(server, cloud, "busy")
    created = migrate(server, "big", pool_id, mib_per_s=1).json()
    running = server.wait_for(["migration", "show", created["id"]],
                              lambda d: any(t["task_type"] == "REPLICATE_DISKS"
                                            and t["instance"] == "big"
                                            and t["status"] == "RUNNING"
                                            for t in d["tasks"]), timeout=60)
    assert running["status"] == "RUNNING"
    waiting = migrate(server, "vm0", pool_id).json()
    assert waiting["status"] == "AWAITING_MINION_ALLOCATIONS"
    refused = server.cli("minion", "pool", "deallocate", pool_id, check=False)
    assert refused.returncode != 0 and created["id"] in refused.stderr \
        and "--force" in refused.stderr, refused.stderr
    refused = server.cli("minion", "pool", "delete", pool_id, check=False)
    assert refused.returncode != 0
    server.cli("minion", "pool", "deallocate", pool_id, "--force")
    done = server.wait_for(["migration", "show", created["id"]],
                           lambda d: d["status"] in {"COMPLETED", "ERROR", "CANCELED"})
    assert done["status"] == "CANCELED", done["tasks"]
    # The one waiting for a minion of the pool ends: the pool can give none any more.
    server.wait_for(["migration", "show", waiting["id"]],
                    lambda d: d["status"] == "ERROR_ALLOCATING_MINIONS", timeout=60)
    data = wait_settled(server, pool_id)
    assert data["Pool Status"] == "DEALLOCATED", data["Events"]
    # Cleanly: the cleanups ran (no half-copied instance left at the destination) and the
    # machine was released before it was removed.
    name = created["destination_environment"]
    name = (json.loads(name) if isinstance(name, str) else name)["instance_name"]
    assert not (cloud["path"] / "instances" / name).exists()
    events = data["Events"]
    assert events.index(f"released by migration {created['id']}") \
        < events.index("DEALLOCATING_MACHINES -> DEALLOCATING_SHARED_RESOURCES")
    server.cli("minion", "pool", "delete", pool_id)


def test_replica_uses_its_destination_pool(server: RunningServer, cloud: dict[str, Any],
                                           source: Path) -> None:
    pool_id = new_pool(server, cloud, "replicas", "--minion-max-idle-time", "3600")
    other = server.cli(
        "minion", "pool", "create", "--endpoint-id", cloud["endpoint"], "--platform",
        "destination", "--os-type", "linux", "--environment-options", ENV,
        "--skip-allocation", "idle", "-f", "json").json()["ID"]
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "pool-src", "--destination-endpoint",
        "pool-dst", "--instance", "vm1", "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "bulk"}', "--network-map",
        '{"lan": "lan"}', "--destination-minion-pool-id", pool_id, "-f", "json").json()
    assert replica["destination_minion_pool_id"] == pool_id
    (minion,) = minion_dirs(cloud, pool_id)
    served = len((minion / "agent.log").read_text())
    ex = server.cli("replica", "execute", replica["id"], "-f", "json").json()
    done = server.wait_for(["replica", "execution", "show", replica["id"], ex["id"]],
                           lambda e: e["status"] in {"COMPLETED", "ERROR", "CANCELED"})
    assert done["status"] == "COMPLETED", done["tasks"]
    assert "/v1/transfers" in (minion / "agent.log").read_text()[served:]
    assert "released by replica" in show(server, pool_id)["Events"]
    # An update naming a pool that is not ALLOCATED is refused, naming it; nothing changed.
    refused = server.cli("replica", "update", replica["id"], "--destination-minion-pool-id",
                         other, check=False)
    assert refused.returncode != 0 and other in refused.stderr \
        and "not ALLOCATED" in refused.stderr, refused.stderr
    shown = server.cli("replica", "show", replica["id"], "-f", "json").json()
    assert shown["destination_minion_pool_id"] == pool_id
    server.cli("replica", "delete", replica["id"], "--delete-disks")
    for pool in (pool_id, other):
        if show(server, pool)["Pool Status"] != "DEALLOCATED":
            server.cli("minion", "pool", "deallocate", pool)
            wait_settled(server, pool)
        server.cli("minion", "pool", "delete", pool)


def test_bad_osmorphing_and_origin_pools_are_refused(server: RunningServer,
                                                     cloud: dict[str, Any],
                                                     source: Path) -> None:
    pool_id = new_pool(server, cloud, "morphers")
    # A made-up OS-morphing pool names the field and the pool (a real morph through a local
    # pool: tests/e2e/test_os_morphing.py).
    result = server.cli(
        "migration", "create", "--origin-endpoint", "pool-src", "--destination-endpoint",
        "pool-dst", "--instance", "vm0", "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "bulk"}', "--network-map",
        '{"lan": "lan"}', "--osmorphing-minion-pool-mapping", "vm0=no-such-pool", check=False)
    assert result.returncode != 0 and "instance_osmorphing_minion_pool_mappings" \
        in result.stderr and "no-such-pool could not be found" in result.stderr, \
        result.stderr
    # A made-up pool id names the pool and says it is not found.
    result = server.cli(
        "migration", "create", "--origin-endpoint", "pool-src", "--destination-endpoint",
        "pool-dst", "--instance", "vm0", "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "bulk"}', "--network-map",
        '{"lan": "lan"}', "--origin-minion-pool-id", pool_id, check=False)
    assert result.returncode != 0 and "origin_minion_pool_id" in result.stderr \
        and pool_id in result.stderr, result.stderr
    server.cli("minion", "pool", "deallocate", pool_id)
    wait_settled(server, pool_id)
    server.cli("minion", "pool", "delete", pool_id)


def agent_pids(folder: Path) -> set[int]:
    """The running agent processes whose command line names a directory under ``folder``."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmd and "writer" in cmd and alive(int(proc.name)):
            found.add(int(proc.name))
    return found


def test_allocation_resumes_after_a_crash(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The server dies right after a minion was made, before it was recorded: restarted, the
    allocation goes on, the half-recorded minion's agent is stopped, nothing is left over."""
    from coriolis.harness import start_server, stop_server

    data_dir = tmp_path_factory.mktemp("pool-crash") / "data"
    srv = start_server(data_dir, env={"CORIOLIS_TEST_CRASH_AT": "CREATE_MINION_MACHINE:after"})
    try:
        dst = srv.cloud_dir("crash-dst")
        local_cloud("init", str(dst), "--network", "lan")
        endpoint = srv.local_endpoint("crash-dst", dst)
        srv.cli("minion", "pool", "create", "--endpoint-id", endpoint, "--platform",
                "destination", "--os-type", "linux", "--environment-options", ENV,
                "--minimum-minions", "2", "crashy", check=False)
        assert srv.process.wait(timeout=60) == -9
        minions = dst / ".coriolis" / "minions"
        assert agent_pids(minions), "the crash left no agent to clean up"
    finally:
        stop_server(srv)
    srv = start_server(data_dir)
    try:
        (pool,) = srv.cli("minion", "pool", "list", "-f", "json").json()
        data = wait_settled(srv, pool["ID"])
        assert data["Pool Status"] == "ALLOCATED", data["Events"]
        kept = machines(data)
        assert len(kept) == 2
        assert agent_pids(minions) == {m["provider_properties"]["pid"] for m in kept}
        assert sorted(p.name for p in (minions / pool["ID"]).iterdir()) \
            == sorted(m["id"] for m in kept)
        srv.cli("minion", "pool", "deallocate", pool["ID"])
        assert wait_settled(srv, pool["ID"])["Pool Status"] == "DEALLOCATED"
        assert agent_pids(minions) == set()
    finally:
        stop_server(srv)
