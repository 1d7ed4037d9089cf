"""Migrations and replica executions whose disks go through a writer agent (a separate
`coriolis-server writer` process, over TLS), driven through the CLI."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.harness import (
    RunningServer,
    RunningWriter,
    local_cloud,
    parse_tasks,
    processes_naming,
    start_server,
    start_writer,
    stop_server,
)

pytestmark = pytest.mark.e2e
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
BLOCK = 64 * 1024


@pytest.fixture(scope="module")
def setup(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("agent")
    src, dst = server.cloud_dir("agent-src"), server.cloud_dir("agent-dst")
    local_cloud("init", str(src), "--network", "lan")
    local_cloud("add-instance", str(src), "web", "--disk-size", "40M", "--disk-format", "qcow2",
                "--disks", "2", "--network", "lan", "--seed", "11")
    local_cloud("add-instance", str(src), "db", "--disk-size", "48M", "--allocated", "0.5",
                "--network", "lan", "--seed", "12")
    local_cloud("init", str(dst), "--network", "lan", "--storage", "fast:qcow2",
                "--storage", "bulk:raw")
    agent = start_writer(base / "agent", [dst])
    server.cli("endpoint", "create", "--name", "a-src", "--provider", "local",
               "--connection", json.dumps({"path": str(src)}))
    server.cli("endpoint", "create", "--name", "a-dst", "--provider", "local", "--connection",
               json.dumps({"path": str(dst), "writer": {**agent.details, "mode": "always"}}))
    try:
        yield {"src": src, "dst": dst, "agent": agent}
    finally:
        stop_server(agent)


def disk_files(cloud: Path, instance: str) -> list[Path]:
    desc = json.loads((cloud / "instances" / instance / "instance.json").read_text())
    return [(cloud / "instances" / instance / d["file"]).resolve() for d in desc["disks"]]


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)]).returncode == 0


def copy_progress(tasks: str) -> str:
    return " ".join(t["progress_updates"] for t in parse_tasks(tasks)
                    if t["task_type"] == "REPLICATE_DISKS")


def migrate(server: RunningServer, instance: str, env: dict) -> dict:
    """Migrate ``instance`` from a-src to a-dst with destination environment ``env``; the
    COMPLETED migration."""
    created = server.cli(
        "migration", "create", "--origin-endpoint", "a-src", "--destination-endpoint", "a-dst",
        "--instance", instance, "--source-environment", '{"snapshot": false}',
        "--destination-environment", json.dumps(env), "--network-map", '{"lan": "lan"}',
        "--skip-os-morphing", "-f", "json").json()
    done = server.wait_for(["migration", "show", created["id"]], lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    return dict(done)


def test_migration_through_the_writer_agent(server: RunningServer, setup: dict) -> None:
    done = migrate(server, "web", {"storage_backend": "fast", "transfer_compression": "zstd"})
    progress = copy_progress(done["tasks"])
    assert progress.count("on the wire") >= 2, progress  # both disks, each pass
    for a, b in zip(disk_files(setup["src"], "web"), disk_files(setup["dst"], "web"),
                    strict=True):
        assert same(a, b)
    agent: RunningWriter = setup["agent"]
    assert not any((agent.data_dir / "transfers").iterdir())  # finished transfers forgotten


def test_migration_over_the_agents_tls_nbd_export(server: RunningServer, setup: dict) -> None:
    """``writer_agent_transport`` nbd: the disks (qcow2 targets) go through the agent's TLS
    NBD export; nothing of the export is left afterwards."""
    local_cloud("add-instance", str(setup["src"]), "app", "--disk-size", "24M",
                "--disk-format", "qcow2", "--network", "lan", "--seed", "13")
    done = migrate(server, "app", {"storage_backend": "fast", "writer_agent_transport": "nbd"})
    assert "over NBD with TLS" in copy_progress(done["tasks"])
    targets = disk_files(setup["dst"], "app")
    for a, b in zip(disk_files(setup["src"], "app"), targets, strict=True):
        assert same(a, b)
    assert not processes_naming(f"--tls-creds tls0 {targets[0]}")
    agent: RunningWriter = setup["agent"]
    assert not any((agent.data_dir / "transfers").iterdir())


def test_replica_executions_through_the_writer_agent(server: RunningServer,
                                                     setup: dict) -> None:
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "a-src", "--destination-endpoint", "a-dst",
        "--instance", "db", "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "bulk"}',
        "--network-map", '{"lan": "lan"}', "-f", "json").json()["id"]

    def execute() -> dict:
        ex = server.cli("replica", "execute", replica, "-f", "json").json()
        return server.wait_for(["replica", "execution", "show", replica, ex["id"]],
                               lambda e: e["status"] in FINAL)

    assert execute()["status"] == "COMPLETED"
    disk = setup["src"] / "instances" / "db" / "disk0.raw"
    blocks = sorted(random.Random(2).sample(range(disk.stat().st_size // BLOCK), 5))
    with open(disk, "r+b") as f:
        for block in blocks:
            f.seek(block * BLOCK)
            f.write(os.urandom(BLOCK))
    second = execute()
    assert second["status"] == "COMPLETED", second["tasks"]
    shown = server.cli("replica", "show", replica, "--show-instances-data", "-f", "json").json()
    volume = shown["instances-data"]["db"]["volumes_info"][0]
    assert volume["bytes_sent"] == len(blocks) * BLOCK
    assert "on the wire" in copy_progress(second["tasks"])
    assert same(disk, Path(volume["path"]))


def test_endpoint_validation_checks_the_agent(server: RunningServer, setup: dict) -> None:
    agent: RunningWriter = setup["agent"]
    unserved = server.cloud_dir("unserved")
    cases = [
        ({**agent.details, "fingerprint": ":".join(["ab"] * 32)}, str(setup["dst"]),
         "fingerprint is not the pinned one"),
        ({**agent.details, "key": "not-the-key"}, str(setup["dst"]), "agent key"),
        (agent.details, str(unserved), "does not serve"),
        (agent.details, str(setup["dst"].parent.parent), "connection_info.path"),
    ]
    local_cloud("init", str(unserved), "--network", "lan")
    for writer, path, message in cases:
        res = server.cli("endpoint", "create", "--name", "bad-agent", "--provider", "local",
                         "--connection", json.dumps({"path": path, "writer": writer}),
                         check=False)
        assert res.returncode != 0 and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
        assert agent.details["key"] not in res.stderr
        server.cli("endpoint", "delete", "bad-agent", check=False)


def test_server_killed_mid_copy_resumes_from_the_last_acknowledged_chunk(
        setup: dict, tmp_path: Path) -> None:
    """SIGKILL of the all-in-one server (and so of its worker) while a disk goes through the
    agent; restarted on the same data directory, it sends the copy task again under the same
    id and the agent's acknowledgement log spares what was already durable."""
    local_cloud("add-instance", str(setup["src"]), "big", "--disk-size", "96M",
                "--allocated", "1.0", "--network", "lan", "--seed", "13")
    # a second server that shares the first one's clouds: its local cloud root names them
    roots = {"CORIOLIS_LOCAL_ROOT": str(setup["src"].parent)}
    srv = start_server(tmp_path / "data", roots)
    try:
        agent: RunningWriter = setup["agent"]
        srv.cli("endpoint", "create", "--name", "k-src", "--provider", "local",
                "--connection", json.dumps({"path": str(setup["src"])}))
        srv.cli("endpoint", "create", "--name", "k-dst", "--provider", "local", "--connection",
                json.dumps({"path": str(setup["dst"]),
                            "writer": {**agent.details, "mode": "always"}}))
        created = srv.cli(
            "migration", "create", "--origin-endpoint", "k-src", "--destination-endpoint",
            "k-dst", "--instance", "big", "--source-environment", '{"snapshot": false}',
            "--destination-environment", json.dumps(
                {"storage_backend": "bulk", "transfer_compression": "none",
                 "transfer_bandwidth_limit_mib": 24}),
            "--network-map", '{"lan": "lan"}', "--skip-os-morphing",
            "--replication-count", "1", "-f", "json").json()

        def copied_a_quarter(m: dict) -> bool:
            found = re.findall(r"Disk disk0: ([\d.]+) of ([\d.]+) MiB", json.dumps(m["tasks"]))
            return bool(found) and float(found[-1][0]) >= float(found[-1][1]) / 4

        srv.wait_for(["migration", "show", created["id"]], copied_a_quarter, timeout=60)
        srv.process.send_signal(signal.SIGKILL)
        srv.process.wait()
        stop_server(srv)
        srv = start_server(tmp_path / "data", roots)
        done = srv.wait_for(["migration", "show", created["id"]],
                            lambda m: m["status"] in FINAL)
        assert done["status"] == "COMPLETED", done["tasks"]
        resumed = re.findall(r"([\d.]+) MiB resumed", copy_progress(done["tasks"]))
        assert resumed and float(resumed[-1]) >= 24, copy_progress(done["tasks"])
        for a, b in zip(disk_files(setup["src"], "big"), disk_files(setup["dst"], "big"),
                        strict=True):
            assert same(a, b)
    finally:
        stop_server(srv)


def test_the_agent_key_never_leaks(server: RunningServer, setup: dict) -> None:
    """After the migrations and replica executions above (one through a killed and restarted
    server): the writer agent's key, a credential in the destination's connection info,
    appears in no log, no database file in clear, and no API response but the owner's
    `endpoint show`."""
    key = setup["agent"].details["key"]
    assert len(key) >= 16
    files = [server.log_path, setup["agent"].log_path,
             *server.data_dir.rglob("*.log"), *server.data_dir.glob("coriolis.db*"),
             *server.log_path.parent.rglob("*-server.out"),
             *server.log_path.parent.rglob("*.log")]
    leaks = [str(f) for f in files if f.is_file() and key.encode() in f.read_bytes()]
    assert leaks == []

    api = server.bindings().api
    responses = []
    for path in ("/endpoints", "/migrations/detail", "/replicas/detail", "/services",
                 "/regions", "/diagnostics"):
        responses.append(api.get(path).text)
    for migration in api.get("/migrations/detail").json()["migrations"]:
        responses.append(api.get(f"/migrations/{migration['id']}").text)
    for replica in api.get("/replicas/detail").json()["replicas"]:
        responses.append(api.get(f"/replicas/{replica['id']}?show_instances_data=true").text)
        responses.append(api.get(f"/replicas/{replica['id']}/executions/detail").text)
    for args in (["migration", "list"], ["replica", "list"], ["endpoint", "list"],
                 ["endpoint", "show", "a-src"]):
        responses.append(server.cli(*args, "-f", "json").stdout)
    assert len(responses) > 10 and any('"tasks"' in r for r in responses)
    assert [r[:200] for r in responses if key in r] == []
    # The one place it is, as upstream: the endpoint's own API object, to its owner; the
    # CLI's `endpoint show` masks it like every secret it prints.
    endpoint = next(e for e in api.get("/endpoints").json()["endpoints"] if e["name"] == "a-dst")
    assert key in api.get(f"/endpoints/{endpoint['id']}").text
    assert key not in server.cli("endpoint", "show", "a-dst", "-f", "json").stdout
