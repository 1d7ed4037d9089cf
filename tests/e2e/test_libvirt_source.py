"""The libvirt provider as a source, end to end through the CLI against a real server and
the system libvirtd: a live replica of a RUNNING domain (changed-block tracking with
checkpoints and pull-mode backups) and a cold migration, both to a `local` cloud."""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.harness import RunningServer, local_cloud
from coriolis.providers.local.boot import boot
from coriolis.providers.local.cloud import LocalCloud
from tests.integration.libvirt.conftest import make_image, raw_bytes
from tests.libvirt_host import LibvirtHost, libvirt_host

pytestmark = pytest.mark.e2e
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
MiB = 1024 * 1024
BLOCK = 64 * 1024
SIZE = 32 * MiB
SOURCE_ENV = '{"shutdown_timeout": 5}'


# A boot sector that prints BOOTED_MARK on the first serial port and halts: enough for the
# deployed copy of a live replica to show it boots from the replicated disk (16-bit code at
# 0x7c00: xor ax,ax; mov ds,ax; cld; mov dx,0x3f8; mov si,msg; lodsb; test al,al; jz done;
# out dx,al; jmp lodsb; done: cli; hlt; jmp hlt; msg).
BOOTED_MARK = b"CORIOLIS-REPLICA-BOOTED"
BOOT_SECTOR = (bytes.fromhex("31c08ed8fcbaf803be177cac84c07403eeebf8faf4ebfd") + BOOTED_MARK
               + b"\r\n\0").ljust(510, b"\0") + b"\x55\xaa"


def write_boot_sector(image: Path) -> None:
    sector = image.with_suffix(".mbr")
    sector.write_bytes(BOOT_SECTOR)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {sector} 0 512", str(image)],
                   check=True, capture_output=True)
    sector.unlink()


def apply(data: bytearray, writes: list[tuple[int, int, int]]) -> None:
    for pattern, offset, length in writes:
        data[offset:offset + length] = bytes([pattern]) * length


@pytest.fixture(scope="module")
def host(server: RunningServer) -> Iterator[LibvirtHost]:
    # In the project's local root: where the server lets its scratch folder be.
    with libvirt_host(server.cloud_dir("libvirt-host")) as h:
        yield h


@pytest.fixture(scope="module")
def setup(server: RunningServer, host: LibvirtHost) -> dict:
    net = host.add_network("lan")
    dst = server.cloud_dir("lv-dst")
    local_cloud("init", str(dst), "--network", "lan", "--storage", "pool:qcow2")
    server.cli("endpoint", "create", "--name", "lv-src", "--provider", "libvirt",
               "--connection", json.dumps(host.connection_info()))
    server.cli("endpoint", "create", "--name", "lv-dst", "--provider", "local",
               "--connection", json.dumps({"path": str(dst)}))
    return {"dst": dst, "net": net.name()}


def execute(server: RunningServer, replica: str) -> dict:
    ex = server.cli("replica", "execute", replica, "-f", "json").json()
    return server.wait_for(["replica", "execution", "show", replica, ex["id"]],
                           lambda e: e["status"] in FINAL)


def volume(server: RunningServer, replica: str, instance: str) -> dict:
    shown = server.cli("replica", "show", replica, "--show-instances-data", "-f", "json").json()
    return shown["instances-data"][instance]["volumes_info"][0]


def events(server: RunningServer, replica: str, execution: str, task_type: str) -> list[str]:
    """``LEVEL: message`` of each event of the execution's task of ``task_type``."""
    found = server.bindings().replica_executions.get(replica, execution)
    task = next(t for t in found.tasks if t["task_type"] == task_type)
    return [f"{e['level']}: {e['message']}" for e in task["events"]]


def test_live_replica_reads_only_what_changed(server: RunningServer, host: LibvirtHost,
                                              setup: dict) -> None:
    image = make_image(host.root / "live.qcow2", "qcow2", str(SIZE),
                       [(0x41, 0, 4 * MiB), (0x42, 20 * MiB, 2 * MiB)])
    write_boot_sector(image)
    expected = bytearray(raw_bytes(image, "qcow2"))
    dom = host.define_domain("live", [(image, "qcow2")], setup["net"], running=True)
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "lv-src", "--destination-endpoint", "lv-dst",
        "--instance", dom.name(), "--source-environment", SOURCE_ENV, "--destination-environment",
        '{"storage_backend": "pool"}', "--network-map", json.dumps({setup["net"]: "lan"}),
        "-f", "json").json()["id"]

    first = execute(server, replica)
    assert first["status"] == "COMPLETED", first["tasks"]
    counters = volume(server, replica, dom.name())
    assert counters["bytes_sent"] == 6 * MiB  # base:allocation: only the allocated data
    cps = [c.getName() for c in dom.listAllCheckpoints(0)]
    assert len(cps) == 1 and counters["cbt"] == cps[0]

    blocks = sorted(random.Random(7).sample(range(SIZE // BLOCK), 10))
    writes = [(0x50 + i, b * BLOCK, BLOCK) for i, b in enumerate(blocks)]
    writes.append((0x6a, 10 * MiB + 4096, 8192))  # a partial block: a whole 64 KiB is dirty
    host.guest_write(dom, writes)
    apply(expected, writes)
    second = execute(server, replica)
    assert second["status"] == "COMPLETED", second["tasks"]
    counters = volume(server, replica, dom.name())
    dirty = (len(set(blocks) | {(10 * MiB) // BLOCK})) * BLOCK
    assert counters["bytes_scanned"] == dirty
    assert counters["bytes_changed"] == dirty
    assert raw_bytes(counters["path"], counters["format"]) == bytes(expected)
    cps = [c.getName() for c in dom.listAllCheckpoints(0)]
    assert cps == [counters["cbt"]]  # the previous checkpoint is gone

    # the checkpoint's bitmap is lost behind libvirt's back: a full read and a warning,
    # still only the changed blocks sent
    node = json.loads(subprocess.run(
        ["virsh", "-c", "qemu:///system", "qemu-monitor-command", dom.name(),
         '{"execute": "query-named-block-nodes", "arguments": {"flat": true}}'],
        check=True, capture_output=True, text=True).stdout)["return"]
    fmt_node = next(n["node-name"] for n in node if n["drv"] == "qcow2")
    subprocess.run(["virsh", "-c", "qemu:///system", "qemu-monitor-command", dom.name(),
                    json.dumps({"execute": "block-dirty-bitmap-remove",
                                "arguments": {"node": fmt_node, "name": cps[0]}})],
                   check=True, capture_output=True)
    more = [(0x7b, 30 * MiB, BLOCK)]
    host.guest_write(dom, more)
    apply(expected, more)
    third = execute(server, replica)
    assert third["status"] == "COMPLETED", third["tasks"]
    counters = volume(server, replica, dom.name())
    assert counters["bytes_scanned"] >= 6 * MiB and counters["bytes_sent"] == BLOCK
    assert raw_bytes(counters["path"], counters["format"]) == bytes(expected)
    warned = events(server, replica, third["id"], "DEPLOY_REPLICA_SOURCE_RESOURCES")
    assert any(e.startswith("WARNING: ") and cps[0] in e and "full read" in e
               for e in warned), warned
    cps = [c.getName() for c in dom.listAllCheckpoints(0)]
    assert cps == [counters["cbt"]]

    # after the executions: no backup job, no socket, no folder left
    assert not backup_running(host, dom)
    assert list((host.root / "scratch").glob("*")) == []

    # the deployed copy boots from the replicated disk
    deployed = server.cli("migration", "deploy", "replica", replica, "--skip-os-morphing",
                          "-f", "json").json()
    done = server.wait_for(["migration", "show", deployed["id"]],
                           lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    result = boot(LocalCloud({"path": str(setup["dst"])}), dom.name(),
                  host.root / "deployed-serial.log", timeout=120,
                  until=(BOOTED_MARK.decode(),))
    assert result.reason == "marker", result.serial[-500:]
    (host.root / "deployed-serial.log").unlink()


def backup_running(host: LibvirtHost, dom: object) -> bool:
    try:
        dom.backupGetXMLDesc(0)  # type: ignore[attr-defined]
        return True
    except host.libvirt.libvirtError:
        return False


def test_cancelled_live_execution_leaves_nothing(server: RunningServer, host: LibvirtHost,
                                                 setup: dict) -> None:
    image = make_image(host.root / "big.qcow2", "qcow2", "2G", [(0x33, 0, 768 * MiB)])
    dom = host.define_domain("big", [(image, "qcow2")], setup["net"], running=True)
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "lv-src", "--destination-endpoint", "lv-dst",
        "--instance", dom.name(), "--source-environment", SOURCE_ENV, "--destination-environment",
        '{"storage_backend": "pool"}', "--network-map", json.dumps({setup["net"]: "lan"}),
        "-f", "json").json()["id"]
    ex = server.cli("replica", "execute", replica, "-f", "json").json()
    deadline = time.monotonic() + 120
    while not backup_running(host, dom):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.cli("replica", "execution", "cancel", replica, ex["id"])
    done = server.wait_for(["replica", "execution", "show", replica, ex["id"]],
                           lambda e: e["status"] in FINAL)
    assert done["status"] == "CANCELED", done["tasks"]
    assert not backup_running(host, dom)
    assert dom.listAllCheckpoints(0) == []  # nothing committed: nothing kept
    assert list((host.root / "scratch").glob("*")) == []


def test_cold_migration_is_bit_identical(server: RunningServer, host: LibvirtHost,
                                         setup: dict) -> None:
    pool = host.add_pool("mig")
    vol = pool.createXML(f"<volume><name>{host.name('m2')}.raw</name><capacity unit='MiB'>"
                         "12</capacity><target><format type='raw'/></target></volume>", 0)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5c 3M 320k", vol.path()],
                   check=True, capture_output=True)
    image = make_image(host.root / "mig.qcow2", "qcow2", "24M",
                       [(0x61, 0, MiB), (0x62, 17 * MiB, 64 * 1024)])
    dom = host.define_domain("mig", [(image, "qcow2")], setup["net"], extra_devices=(
        f"<disk type='volume' device='disk'><driver name='qemu' type='raw'/><source "
        f"pool='{pool.name()}' volume='{vol.name()}'/><target dev='vdb' bus='virtio'/></disk>"))
    before = host.inventory()
    created = server.cli(
        "migration", "create", "--origin-endpoint", "lv-src", "--destination-endpoint",
        "lv-dst", "--instance", dom.name(), "--source-environment", SOURCE_ENV,
        "--destination-environment",
        '{"storage_backend": "pool"}', "--network-map", json.dumps({setup["net"]: "lan"}),
        "--skip-os-morphing", "-f", "json").json()
    done = server.wait_for(["migration", "show", created["id"]],
                           lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    folder = setup["dst"] / "instances" / dom.name()
    desc = json.loads((folder / "instance.json").read_text())
    copies = [(folder / d["file"]).resolve() for d in desc["disks"]]
    for source, copy in zip([Path(image), Path(vol.path())], copies, strict=True):
        fmt = "qcow2" if source.suffix == ".qcow2" else "raw"
        assert subprocess.run(["qemu-img", "compare", "-q", "-f", fmt, str(source),
                               str(copy)]).returncode == 0, source
    assert host.inventory() == before
    assert not dom.isActive()


def test_live_migration_of_a_running_domain(server: RunningServer, host: LibvirtHost,
                                            setup: dict) -> None:
    image = make_image(host.root / "livemig.qcow2", "qcow2", "16M",
                       [(0x71, MiB, 3 * MiB), (0x72, 15 * MiB, BLOCK)])
    expected = raw_bytes(image, "qcow2")
    dom = host.define_domain("livemig", [(image, "qcow2")], setup["net"], running=True)
    created = server.cli(
        "migration", "create", "--origin-endpoint", "lv-src", "--destination-endpoint",
        "lv-dst", "--instance", dom.name(), "--source-environment", SOURCE_ENV,
        "--destination-environment", '{"storage_backend": "pool"}',
        "--network-map", json.dumps({setup["net"]: "lan"}), "--skip-os-morphing",
        "-f", "json").json()
    done = server.wait_for(["migration", "show", created["id"]],
                           lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    folder = setup["dst"] / "instances" / dom.name()
    desc = json.loads((folder / "instance.json").read_text())
    copy = (folder / desc["disks"][0]["file"]).resolve()
    assert raw_bytes(copy, "qcow2" if copy.suffix == ".qcow2" else "raw") == expected
    assert dom.isActive() and dom.listAllCheckpoints(0) == []  # a migration makes none
    assert not backup_running(host, dom)
    assert list((host.root / "scratch").glob("*")) == []


def test_libvirt_to_libvirt_migration_is_bit_identical(server: RunningServer,
                                                       host: LibvirtHost, setup: dict) -> None:
    """A shut-off domain to a pool of the same host: the new domain's volumes equal the
    source disks, it is on the mapped network, and the source domain is untouched."""
    target = host.add_pool("l2l")
    net2 = host.add_network("l2l")
    image = make_image(host.root / "l2l.qcow2", "qcow2", "20M",
                       [(0x41, 0, MiB), (0x42, 13 * MiB, 3 * 64 * 1024)])
    dom = host.define_domain("l2l", [(image, "qcow2")], setup["net"])
    source_before = raw_bytes(image, "qcow2")
    # The same host as a second endpoint (a transfer's two endpoints must differ).
    server.cli("endpoint", "create", "--name", "lv-same-host", "--provider", "libvirt",
               "--connection", json.dumps(host.connection_info(scratch=False)))
    created = server.cli(
        "migration", "create", "--origin-endpoint", "lv-src", "--destination-endpoint",
        "lv-same-host", "--instance", dom.name(), "--source-environment", SOURCE_ENV,
        "--destination-environment", json.dumps({
            "storage_backend": target.name(), "disk_format": "raw",
            "instance_name": host.name("l2l-copy")}),
        "--network-map", json.dumps({setup["net"]: net2.name()}),
        "--skip-os-morphing", "-f", "json").json()
    done = server.wait_for(["migration", "show", created["id"]],
                           lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    copy = host.conn.lookupByName(host.name("l2l-copy"))
    xml = copy.XMLDesc(0)
    assert f"<source network='{net2.name()}'" in xml and "bus='virtio'" in xml
    volumes = target.listAllVolumes(0)
    assert len(volumes) == 1
    assert subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", str(image),
                           volumes[0].path()]).returncode == 0
    assert raw_bytes(image, "qcow2") == source_before
    assert not copy.isActive() and not dom.isActive()
