"""Replicas end to end through the CLI: executions send only changed blocks, schedules,
deploy, and the refusals that protect a replica."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from coriolis.harness import RunningServer, local_cloud, parse_tasks

pytestmark = pytest.mark.e2e
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
BLOCK = 64 * 1024


@pytest.fixture(scope="module")
def setup(server: RunningServer) -> dict:
    src, dst = server.cloud_dir("replica-src"), server.cloud_dir("replica-dst")
    local_cloud("init", str(src), "--network", "lan")
    local_cloud("add-instance", str(src), "db", "--disk-size", "64M", "--allocated", "0.5",
                "--network", "lan", "--seed", "3")
    local_cloud("init", str(dst), "--network", "lan", "--storage", "pool:qcow2")
    for name, path in (("r-src", src), ("r-dst", dst)):
        server.cli("endpoint", "create", "--name", name, "--provider", "local",
                   "--connection", json.dumps({"path": str(path)}))
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "r-src", "--destination-endpoint", "r-dst",
        "--instance", "db", "--source-environment", '{"snapshot": true}',
        "--destination-environment", '{"storage_backend": "pool"}',
        "--network-map", '{"lan": "lan"}', "--notes", "nightly", "-f", "json").json()
    return {"src": src, "dst": dst, "replica": replica["id"]}


def source_disk(cloud: Path) -> Path:
    return cloud / "instances" / "db" / "disk0.raw"


def execute(server: RunningServer, replica: str) -> dict:
    ex = server.cli("replica", "execute", replica, "-f", "json").json()
    return server.wait_for(["replica", "execution", "show", replica, ex["id"]],
                           lambda e: e["status"] in FINAL)


def volume_counters(server: RunningServer, replica: str) -> dict:
    shown = server.cli("replica", "show", replica, "--show-instances-data", "-f", "json").json()
    return shown["instances-data"]["db"]["volumes_info"][0]


def test_deploy_before_any_execution_is_refused(server: RunningServer, setup: dict) -> None:
    res = server.cli("migration", "deploy", "replica", setup["replica"], "--skip-os-morphing",
                     check=False)
    assert res.returncode == 1 and "HTTP 400" in res.stderr and "no completed" in res.stderr


def test_second_execution_sends_only_changed_blocks(server: RunningServer, setup: dict) -> None:
    first = execute(server, setup["replica"])
    assert first["status"] == "COMPLETED", first["tasks"]
    counters = volume_counters(server, setup["replica"])
    assert counters["bytes_sent"] > 20 * 1024 * 1024

    disk = source_disk(setup["src"])
    blocks = sorted(random.Random(5).sample(range(disk.stat().st_size // BLOCK), 12))
    with open(disk, "r+b") as f:
        for block in blocks:
            f.seek(block * BLOCK)
            f.write(os.urandom(BLOCK))
    second = execute(server, setup["replica"])
    assert second["status"] == "COMPLETED", second["tasks"]
    counters = volume_counters(server, setup["replica"])
    assert counters["bytes_sent"] == len(blocks) * BLOCK
    copy = [t for t in parse_tasks(second["tasks"]) if t["task_type"] == "REPLICATE_DISKS"][0]
    assert "sent 0.8 MiB" in copy["progress_updates"]

    listed = server.cli("replica", "execution", "list", setup["replica"], "-f", "json").json()
    assert [e["Status"] for e in listed] == ["COMPLETED", "COMPLETED"]


def test_schedules_validate_and_list(server: RunningServer, setup: dict) -> None:
    replica = setup["replica"]
    bad = server.cli("replica", "schedule", "create", replica, "-M", "61", check=False)
    assert bad.returncode == 2
    past = server.cli("replica", "schedule", "create", replica, "-M", "5",
                      "--expires-at", "2001-01-01T00:00:00", check=False)
    assert past.returncode == 1 and "expiration_date" in past.stderr
    created = server.cli("replica", "schedule", "create", replica, "-M", "5", "-H", "3",
                         "-w", "0", "-f", "json").json()
    assert created["schedule"] == {"minute": 5, "hour": 3, "dow": 0}
    updated = server.cli("replica", "schedule", "update", replica, created["id"], "--disabled",
                         "-f", "json").json()
    assert updated["enabled"] is False
    rows = server.cli("replica", "schedule", "list", replica, "-f", "json").json()
    assert [r["ID"] for r in rows] == [created["id"]]
    server.cli("replica", "schedule", "delete", replica, created["id"])
    assert server.cli("replica", "schedule", "list", replica, "-f", "json").json() == []


def test_deploy_gives_an_instance_equal_to_the_source(server: RunningServer,
                                                      setup: dict) -> None:
    deployed = server.cli("migration", "deploy", "replica", setup["replica"],
                          "--skip-os-morphing", "-f", "json").json()
    done = server.wait_for(["migration", "show", deployed["id"]],
                           lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    desc = json.loads((setup["dst"] / "instances" / "db" / "instance.json").read_text())
    disk = (setup["dst"] / "instances" / "db" / desc["disks"][0]["file"]).resolve()
    assert subprocess.run(["qemu-img", "compare", "-q", str(source_disk(setup["src"])),
                           str(disk)]).returncode == 0
    rows = server.cli("deployment", "list", "-f", "json").json()
    assert deployed["id"] in {r["ID"] for r in rows}


def test_update_and_disks_delete(server: RunningServer, setup: dict) -> None:
    replica = setup["replica"]
    update = server.cli("replica", "update", replica, "--notes", "weekly", "-f", "json").json()
    server.wait_for(["replica", "execution", "show", replica, update["id"]],
                    lambda e: e["status"] in FINAL)
    assert server.cli("replica", "show", replica, "-f", "json").json()["notes"] == "weekly"
    volume = Path(volume_counters(server, replica)["path"])
    assert volume.exists()
    deleted = server.cli("replica", "disks", "delete", replica, "-f", "json").json()
    done = server.wait_for(["replica", "execution", "show", replica, deleted["id"]],
                           lambda e: e["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    assert not volume.exists()
    # the deployed instance keeps its own (cloned) disk
    desc = json.loads((setup["dst"] / "instances" / "db" / "instance.json").read_text())
    assert (setup["dst"] / "instances" / "db" / desc["disks"][0]["file"]).resolve().exists()
    again = server.cli("replica", "disks", "delete", replica, check=False)
    assert again.returncode == 1 and "no disks" in again.stderr
    server.cli("replica", "delete", replica)
    assert server.cli("replica", "show", replica, check=False).returncode == 1
