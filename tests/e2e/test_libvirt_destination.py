"""Local clouds → the libvirt destination through the real CLI and server, on the real system
libvirtd (TCG): pool volumes bit-identical to the source disks, the domain defined with virtio
disks and NICs on the mapped network and the source's CPUs and memory, started on request;
a replica's two executions and its deploy; bad input refused naming it, and a failed deploy
leaving nothing on the host."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis.harness import RunningServer, local_cloud, parse_tasks
from coriolis.providers.local.cloud import LocalCloud
from tests.libvirt_host import LibvirtHost, libvirt_host, small_mount

pytestmark = pytest.mark.e2e

FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
MAC = "52:54:00:aa:bb:01"


@pytest.fixture(scope="module")
def lv(server: RunningServer) -> Iterator[dict[str, Any]]:
    with libvirt_host() as host:
        host.add_pool("pool")
        host.add_network("net")
        src = server.cloud_dir("lv-src")
        local_cloud("init", str(src), "--network", "lan")
        local_cloud("add-instance", str(src), "vmraw", "--disk-size", "48M",
                    "--disk-format", "raw", "--network", "lan", "--mac", MAC,
                    "--cpus", "2", "--memory-mb", "160")
        local_cloud("add-instance", str(src), "vmq", "--disk-size", "32M",
                    "--disk-format", "qcow2", "--disks", "2", "--network", "lan")
        server.cli("endpoint", "create", "--name", "lv-src", "--provider", "local",
                   "--connection", json.dumps({"path": str(src)}))
        server.cli("endpoint", "create", "--name", "lv-dst", "--provider", "libvirt",
                   "--connection", json.dumps(host.connection_info(scratch=False)))
        yield {"host": host, "src": src}


def dest_env(host: LibvirtHost, name: str, **extra: Any) -> str:
    return json.dumps({"storage_backend": host.name("pool"), "domain_type": "qemu",
                       "instance_name": host.name(name), **extra})


def create_migration(server: RunningServer, lv: dict, instance: str, env: str,
                     network: str | None = None, check: bool = True) -> Any:
    return server.cli(
        "migration", "create", "--origin-endpoint", "lv-src", "--destination-endpoint",
        "lv-dst", "--instance", instance, "--source-environment", '{"snapshot": false}',
        "--destination-environment", env,
        "--network-map", json.dumps({"lan": network or lv["host"].name("net")}),
        "--skip-os-morphing", "-f", "json", check=check)


def migrate(server: RunningServer, lv: dict, instance: str, env: str) -> dict:
    created = create_migration(server, lv, instance, env).json()
    return server.wait_for(["migration", "show", created["id"]],
                           lambda m: m["status"] in FINAL)


def source_disks(lv: dict, instance: str) -> list[Path]:
    cloud = LocalCloud({"path": str(lv["src"])})
    desc = cloud.load_instance(instance)
    return [cloud.disk_path(instance, d) for d in desc["disks"]]


def domain_xml(host: LibvirtHost, name: str) -> ET.Element:
    return ET.fromstring(host.conn.lookupByName(host.name(name)).XMLDesc(0))


def same(a: Path | str, b: Path | str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", "-U", str(a), str(b)]).returncode == 0


def test_migration_to_libvirt_runs_with_bit_identical_volumes(
        server: RunningServer, lv: dict) -> None:
    host = lv["host"]
    done = migrate(server, lv, "vmraw", dest_env(host, "raw", start_instance=True))
    assert done["status"] == "COMPLETED", done["tasks"]
    xml = domain_xml(host, "raw")
    files = [d.get("file") for d in xml.findall("./devices/disk/source")]
    assert [Path(f).parent for f in files] == [host.root / "pools" / "pool"]
    assert [t.get("bus") for t in xml.findall("./devices/disk/target")] == ["virtio"]
    assert [d.get("type") for d in xml.findall("./devices/disk/driver")] == ["raw"]
    nic = xml.find("./devices/interface")
    assert nic.get("type") == "network"
    assert nic.find("source").get("network") == host.name("net")
    assert nic.find("model").get("type") == "virtio" and nic.find("mac").get("address") == MAC
    assert xml.findtext("vcpu") == "2" and int(xml.findtext("memory")) == 160 * 1024
    assert host.conn.lookupByName(host.name("raw")).isActive()  # start_instance
    for src, dst in zip(source_disks(lv, "vmraw"), files, strict=True):
        assert same(src, dst)


def test_migration_to_qcow2_volumes(server: RunningServer, lv: dict) -> None:
    host = lv["host"]
    done = migrate(server, lv, "vmq", dest_env(host, "q", disk_format="qcow2"))
    assert done["status"] == "COMPLETED", done["tasks"]
    xml = domain_xml(host, "q")
    files = [d.get("file") for d in xml.findall("./devices/disk/source")]
    assert [d.get("type") for d in xml.findall("./devices/disk/driver")] == ["qcow2"] * 2
    assert not host.conn.lookupByName(host.name("q")).isActive()
    for src, dst in zip(source_disks(lv, "vmq"), files, strict=True):
        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", dst],
                                         capture_output=True, text=True, check=True).stdout)
        assert info["format"] == "qcow2"
        assert same(src, dst)


def test_replica_two_executions_then_deploy(server: RunningServer, lv: dict) -> None:
    host = lv["host"]
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "lv-src", "--destination-endpoint", "lv-dst",
        "--instance", "vmq", "--network-map", json.dumps({"lan": host.name("net")}),
        "--source-environment", '{"snapshot": false}',
        "--destination-environment", dest_env(host, "rep", disk_format="qcow2"),
        "-f", "json").json()["id"]
    for _ in range(2):
        ex = server.cli("replica", "execute", replica, "-f", "json").json()
        done = server.wait_for(["replica", "execution", "show", replica, ex["id"]],
                               lambda e: e["status"] in FINAL)
        assert done["status"] == "COMPLETED", done["tasks"]
    shown = server.cli("replica", "show", replica, "--show-instances-data", "-f", "json").json()
    volumes = shown["instances-data"]["vmq"]["volumes_info"]
    assert [v["bytes_sent"] for v in volumes] == [0, 0]  # nothing changed since the first
    deployed = server.cli("migration", "deploy", "replica", replica, "--skip-os-morphing",
                          "-f", "json").json()
    done = server.wait_for(["migration", "show", deployed["id"]],
                           lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    files = [d.get("file") for d in domain_xml(host, "rep").findall("./devices/disk/source")]
    assert set(files).isdisjoint(v["path"] for v in volumes)  # clones of the replica's
    for src, clone, volume in zip(source_disks(lv, "vmq"), files, volumes, strict=True):
        assert same(src, clone) and same(src, volume["path"])


def test_bad_input_is_refused_and_a_failed_deploy_leaves_nothing(
        server: RunningServer, lv: dict) -> None:
    host = lv["host"]
    before = host.inventory()
    refused = [
        (create_migration(server, lv, "vmraw", dest_env(host, "b1"),
                          network=host.name("nonet"), check=False), host.name("nonet")),
        (create_migration(server, lv, "vmraw",
                          json.dumps({"storage_backend": host.name("nopool"),
                                      "instance_name": host.name("b2")}), check=False),
         host.name("nopool")),
        (create_migration(server, lv, "vmraw", dest_env(host, "raw"), check=False),
         f"domain named '{host.name('raw')}' already exists"),
    ]
    for result, named in refused:
        assert result.returncode != 0 and named in result.stderr, result.stderr
    assert host.inventory() == before
    with small_mount(host.root / "pools" / "small", "8m"):
        host.add_pool("small")
        small = create_migration(server, lv, "vmraw", json.dumps({
            "storage_backend": host.name("small"), "instance_name": host.name("b3")}),
            check=False)
        assert small.returncode != 0
        assert f"storage pool '{host.name('small')}' has" in small.stderr, small.stderr
        host.conn.storagePoolLookupByName(host.name("small")).destroy()
        host.conn.storagePoolLookupByName(host.name("small")).undefine()
    assert host.inventory() == before

    done = migrate(server, lv, "vmq", dest_env(host, "broken", machine_type="no-such-machine"))
    assert done["status"] == "ERROR"
    failed = [t for t in parse_tasks(done["tasks"]) if t["status"] == "ERROR"]
    assert any("cannot define domain" in t["exception_details"] for t in failed), failed
    assert host.inventory() == before
