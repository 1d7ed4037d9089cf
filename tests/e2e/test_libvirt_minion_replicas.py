"""Replica executions written through a libvirt destination minion (real system libvirtd,
TCG), against an all-in-one server that the fault hook (``CORIOLIS_TEST_CRASH_AT``) can kill:

- a local → libvirt replica naming a pool of one minion: executions 1 and 2 (after source
  blocks changed) complete, the volume is bit-identical to the source after each, the data
  went through the minion's agent (its serial console logs the requests), nothing stays
  attached to the minion, no overlay stays beside the volume; a deploy from the replica
  gives a domain whose disk equals the source. The same execution 2 without a pool is timed
  beside it;
- the server killed in the middle of an execution's disk writes: the volume is in its last
  committed state (the minion writes an overlay; the volume is untouched), and the
  restarted server completes the execution;
- the server killed half-way through the commit's merge of the overlay into the volume: the
  volume's undo journal rolls it back to the last committed state (checked on a copy), and
  the restarted server completes the commit;
- the copy fails after writing (``REPLICATE_DISKS:fail``): the roll-back detaches and drops
  the overlay, the volume holds the last committed execution;
- a replica with qcow2 volumes through the same minion: two executions, bit-identical.

One minion for the whole module (a TCG boot costs 30-120 s here)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis.harness import local_cloud, stop_server
from coriolis.providers.libvirt import overlays
from coriolis.providers.local import replica_disks
from tests.e2e.test_crash_matrix import Crashing, _summary
from tests.libvirt_host import libvirt_host

pytestmark = pytest.mark.e2e
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
MiB = 2**20
SIZE = 48 * MiB


class LibvirtCrashing(Crashing):
    """``Crashing`` with this host's libvirtd allowed as a destination."""

    EXTRA_ENV = {"CORIOLIS_LIBVIRT_ALLOW_LOCAL": "1"}


def same(a: Path | str, b: Path | str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", "-U", str(a), str(b)]).returncode == 0


def change_source(disk: Path, seed: int, regions: int = 8) -> None:
    """Rewrite ``regions`` MiB-long regions spread over the disk."""
    rng = random.Random(seed)
    with open(disk, "r+b") as f:
        for i in range(regions):
            f.seek(i * (SIZE // regions) + rng.randrange(4) * 64 * 1024)
            f.write(rng.randbytes(MiB))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The server, a libvirt host (pool, network), a source instance ``vm`` (48 MiB raw), a
    pool of one libvirt minion, a replica through it and one without."""
    work = tmp_path_factory.mktemp("lvrep")
    pool_id = None
    crashing = LibvirtCrashing(work, LibvirtCrashing.start(work))
    crashing.arm()
    with libvirt_host(prefix=f"lr{time.time_ns() % 10**6:06d}") as host:
        try:
            host.add_pool("pool")
            host.add_network("net")
            src = work / "clouds" / "src"
            local_cloud("init", str(src), "--network", "lan")
            local_cloud("add-instance", str(src), "vm", "--disk-size", "48M", "--disk-format",
                        "raw", "--allocated", "0.6", "--network", "lan", "--seed", "41")
            server = crashing.server
            server.cli("endpoint", "create", "--name", "lr-src", "--provider", "local",
                       "--connection", json.dumps({"path": str(src)}))
            server.cli("endpoint", "create", "--name", "lr-dst", "--provider", "libvirt",
                       "--connection", json.dumps(host.connection_info(scratch=False)))
            env = {"storage_pool": host.name("pool"), "name_prefix": host.prefix}
            pool_id = server.cli(
                "minion", "pool", "create", "--pool-endpoint", "lr-dst", "--pool-platform",
                "destination", "--pool-os-type", "linux", "--environment-options",
                json.dumps(env), "--minimum-minions", "1", "--maximum-minions", "1",
                "--minion-max-idle-time", "3600", "lr-pool", "-f", "json").json()["ID"]
            data = server.wait_for(["minion", "pool", "show", pool_id],
                                   lambda d: d["Pool Status"] in {"ALLOCATED", "ERROR"},
                                   timeout=900)
            assert data["Pool Status"] == "ALLOCATED", data["Events"]
            machines = data["Minion Machines"]
            (minion,) = json.loads(machines) if isinstance(machines, str) else machines
            replicas = {}
            for kind, pool, fmt in (("pooled", pool_id, "raw"), ("plain", None, "raw"),
                                    ("qcow2", pool_id, "qcow2")):
                replicas[kind] = server.cli(
                    "replica", "create", "--origin-endpoint", "lr-src",
                    "--destination-endpoint", "lr-dst", "--instance", "vm",
                    "--source-environment", '{"snapshot": false}',
                    "--destination-environment", json.dumps({
                        "storage_backend": host.name("pool"), "domain_type": "qemu",
                        "instance_name": host.name(f"vm-{kind}"), "disk_format": fmt}),
                    "--network-map", json.dumps({"lan": host.name("net")}),
                    *(["--destination-minion-pool-id", pool] if pool else []),
                    "-f", "json").json()["id"]
            yield {"crashing": crashing, "host": host, "src": src, "work": work,
                   "pool": pool_id, "minion": minion["provider_properties"],
                   "replicas": replicas, "disk": src / "instances" / "vm" / "disk0.raw"}
        finally:
            try:
                if pool_id and crashing.server.process.poll() is None:
                    crashing.server.cli("minion", "pool", "deallocate", "--force",
                                        pool_id, check=False)
                    crashing.server.wait_for(
                        ["minion", "pool", "show", pool_id],
                        lambda d: d["Pool Status"] in {"DEALLOCATED", "ERROR"}, timeout=300)
            finally:
                stop_server(crashing.server)
                for log in Path("/var/log/libvirt/qemu").glob(f"{host.prefix}-*.log"):
                    log.unlink(missing_ok=True)


def execute(rig: dict[str, Any], kind: str) -> tuple[dict[str, Any], float]:
    """Run an execution of replica ``kind`` to its end (through kills and restarts); the
    execution and its seconds."""
    crashing: Crashing = rig["crashing"]
    executions = f"/replicas/{rig['replicas'][kind]}/executions"
    started = time.monotonic()
    execution = crashing.create(executions, {"execution": {"shutdown_instances": False}},
                                executions, "executions")
    data = crashing.wait_final(f"{executions}/{execution}", "execution", timeout=900)
    return data, time.monotonic() - started


def volume(rig: dict[str, Any], kind: str) -> dict[str, Any]:
    replica = rig["crashing"].request("get", f"/replicas/{rig['replicas'][kind]}")["replica"]
    (vol,) = replica["info"]["vm"]["volumes_info"]
    return dict(vol)


def attached(rig: dict[str, Any]) -> list[str]:
    """The files attached to the minion for transfers (its SCSI disks)."""
    dom = rig["host"].conn.lookupByName(rig["minion"]["domain"])
    return [str(d.find("source").get("file")) for d in ET.fromstring(dom.XMLDesc(0)).findall(
        "./devices/disk") if d.find("target").get("bus") == "scsi"]


def serial_log(rig: dict[str, Any]) -> str:
    return Path(rig["minion"]["serial_log"]).read_text(errors="replace")


def check_committed(rig: dict[str, Any], data: dict[str, Any]) -> None:
    """Completed, the pooled replica's volume equal to the source, nothing attached to the
    minion, no overlay left."""
    assert data["status"] == "COMPLETED", _summary(data) + rig["crashing"].server.log_tail(60)
    vol = volume(rig, "pooled")
    assert same(rig["disk"], vol["path"])
    assert attached(rig) == []
    assert not overlays.path_of(vol).exists()


def test_replica_executions_write_through_the_minion(rig: dict[str, Any]) -> None:
    before = len(serial_log(rig))
    first, _ = execute(rig, "pooled")
    check_committed(rig, first)
    log = serial_log(rig)[before:]
    assert "/v1/transfers/" in log, log[-2000:]
    assert "destination disks are written through minion" in json.dumps(first["tasks"])
    plain, _ = execute(rig, "plain")
    assert plain["status"] == "COMPLETED", _summary(plain)

    change_source(rig["disk"], 1)
    before = len(serial_log(rig))
    second, pooled_s = execute(rig, "pooled")
    check_committed(rig, second)
    assert "/v1/transfers/" in serial_log(rig)[before:]
    second_plain, plain_s = execute(rig, "plain")
    assert second_plain["status"] == "COMPLETED", _summary(second_plain)
    assert same(rig["disk"], volume(rig, "plain")["path"])
    print(f"\nexecution 2 (8 MiB changed of 48 MiB): through the minion {pooled_s:.1f} s, "
          f"without a pool {plain_s:.1f} s")

    # A deploy from the replica (its volumes cloned) gives a domain with the source's disk.
    host, server = rig["host"], rig["crashing"].server
    deployed = server.cli("migration", "deploy", "replica", rig["replicas"]["pooled"],
                          "--skip-os-morphing", "-f", "json").json()
    done = server.wait_for(["migration", "show", deployed["id"]],
                           lambda m: m["status"] in FINAL, timeout=600)
    assert done["status"] == "COMPLETED", done["tasks"]
    dom = host.conn.lookupByName(host.name("vm-pooled"))
    (disk,) = [d.get("file") for d in ET.fromstring(dom.XMLDesc(0)).findall(
        "./devices/disk/source")]
    assert same(rig["disk"], disk)  # the domain goes with the host's other objects


def wait_killed(crashing: Crashing, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while crashing.server.process.poll() is None:
        assert time.monotonic() < deadline, "the armed crash never came"
        time.sleep(0.2)


def crash_execution(rig: dict[str, Any], item: str, seed: int, committed: Path) -> str:
    """Keep the source as the replica holds it in ``committed``, change it, start an
    execution with ``item`` armed and wait for the kill; the execution's id."""
    crashing: Crashing = rig["crashing"]
    shutil.copyfile(rig["disk"], committed)
    change_source(rig["disk"], seed)
    crashing.arm(item)
    executions = f"/replicas/{rig['replicas']['pooled']}/executions"
    execution = crashing.create(executions, {"execution": {"shutdown_instances": False}},
                                executions, "executions")
    wait_killed(crashing)
    return execution


def test_crash_mid_copy_and_mid_merge_keep_the_committed_state(
        rig: dict[str, Any], tmp_path: Path) -> None:
    crashing: Crashing = rig["crashing"]
    executions = f"/replicas/{rig['replicas']['pooled']}/executions"
    first, _ = execute(rig, "pooled")  # the replica holds the source as it is now
    check_committed(rig, first)
    vol = volume(rig, "pooled")  # read now: an API call after a kill restarts the server

    # Killed in the middle of the disk writes: the minion wrote the overlay only.
    committed = tmp_path / "committed"
    execution = crash_execution(rig, "REPLICATE_DISKS:during", 2, committed)
    assert same(committed, vol["path"]), "the volume changed before the commit"
    assert overlays.path_of(vol).exists()
    assert str(overlays.path_of(vol)) in attached(rig)
    crashing.restart_if_killed()
    data = crashing.wait_final(f"{executions}/{execution}", "execution", timeout=900)
    assert crashing.kills == 1
    check_committed(rig, data)

    # Killed half-way through the commit's merge: the volume is half-merged, and its undo
    # journal takes it back to the committed state (checked on a copy); the restarted
    # server finishes the commit instead.
    execution = crash_execution(rig, "DELETE_REPLICA_TARGET_DISK_SNAPSHOTS:during", 3,
                                committed)
    journal = Path(f"{vol['path']}{replica_disks.JOURNAL_SUFFIX}")
    assert journal.stat().st_size > 0 and overlays.path_of(vol).exists()
    assert attached(rig) == []  # detached before the merge
    assert not same(committed, vol["path"]) and not same(rig["disk"], vol["path"])
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", replica_disks.JOURNAL_SUFFIX, replica_disks.RECORD_SUFFIX):
        shutil.copyfile(f"{vol['path']}{suffix}", copy / f"vol{suffix}")
    replica_disks.settle([{**vol, "path": str(copy / "vol"),
                           "snapshot": str(copy / f"vol{replica_disks.JOURNAL_SUFFIX}")}])
    assert same(committed, copy / "vol")
    crashing.restart_if_killed()
    data = crashing.wait_final(f"{executions}/{execution}", "execution", timeout=900)
    check_committed(rig, data)
    # The killed worker's qemu-nbd reading the overlay outlives it (qemu-nbd --persistent
    # has no parent-death signal): stop it here.
    kill_processes_naming(str(overlays.path_of(vol)))


def kill_processes_naming(text: str) -> None:
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in path.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                os.kill(int(path.parent.name), signal.SIGTERM)
        except (OSError, ValueError):
            continue


def test_failed_copy_rolls_back_to_the_committed_state(rig: dict[str, Any],
                                                       tmp_path: Path) -> None:
    """The copy writes the overlay through the minion, then fails: the roll-back detaches
    and drops the overlay; the volume holds the last committed execution."""
    crashing: Crashing = rig["crashing"]
    first, _ = execute(rig, "pooled")
    check_committed(rig, first)
    committed = tmp_path / "committed"
    shutil.copyfile(rig["disk"], committed)
    change_source(rig["disk"], 4)
    crashing.arm("REPLICATE_DISKS:fail")
    failed, _ = execute(rig, "pooled")
    assert failed["status"] == "ERROR", _summary(failed)
    assert crashing.armed() == []
    tasks = {t["task_type"]: t["status"] for t in failed["tasks"]}
    assert tasks["RESTORE_REPLICA_DISK_SNAPSHOTS"] == "COMPLETED", tasks
    vol = volume(rig, "pooled")
    assert same(committed, vol["path"])
    assert attached(rig) == [] and not overlays.path_of(vol).exists()
    again, _ = execute(rig, "pooled")
    check_committed(rig, again)


def test_qcow2_replica_volumes_through_the_minion(rig: dict[str, Any]) -> None:
    """qcow2 volumes (an internal snapshot protects them): the overlay is committed into
    the volume by ``qemu-img commit``; two executions, bit-identical, nothing left."""
    for seed in (None, 5):
        if seed is not None:
            change_source(rig["disk"], seed)
        data, _ = execute(rig, "qcow2")
        assert data["status"] == "COMPLETED", _summary(data)
        vol = volume(rig, "qcow2")
        assert vol["format"] == "qcow2"
        assert same(rig["disk"], vol["path"])
        assert attached(rig) == [] and not overlays.path_of(vol).exists()
