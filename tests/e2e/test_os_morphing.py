"""OS morphing proven by booting: a real Debian guest configured like a VMware VM (root by
/dev/sda1, SATA-only initramfs, static IP on ens192, open-vm-tools) is migrated through the
CLI to a local cloud whose hypervisor gives virtio disks and NICs, then booted with qemu (TCG).
The morphed guest must reach multi-user with its root mounted by UUID and its NIC configured
by DHCP; the same guest migrated with --skip-os-morphing must not boot. A replica of it to a
libvirt host (the system libvirtd, TCG), deployed with morphing and started by libvirt, boots
the same way.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis import guest_image
from coriolis.harness import (
    RunningServer,
    local_cloud,
    parse_tasks,
    processes_naming,
    transfer_summary,
)
from coriolis.providers.local.boot import boot
from coriolis.providers.local.cloud import LocalCloud
from tests.libvirt_host import LibvirtHost, libvirt_host

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
SOURCE_MAC = "52:54:00:12:34:56"
BOOT_FAILURES = ("ALERT!", "Gave up waiting for root", "Kernel panic")
USER_SCRIPT = "echo \"user script ran on $(cat /etc/hostname)\"\ntouch /etc/coriolis-was-here\n"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ext4_image(path: Path, tree: dict[str, str]) -> None:
    """A whole-disk ext4 file system holding ``tree`` (mkfs.ext4 -d: no loop device)."""
    source = path.with_suffix(".tree")
    for rel, text in tree.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(text)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(source), str(path), "64M"], check=True)


def vmware_like_cloud(src: Path) -> None:
    """A local cloud at ``src`` with network ``vmnet`` and the Debian guest ``debian-vm``
    configured like a VMware VM (SATA disk, MAC ``SOURCE_MAC``)."""
    image = guest_image.build()
    local_cloud("init", str(src), "--network", "vmnet")
    local_cloud("add-instance", str(src), "debian-vm", "--image", str(image), "--bus", "sata",
                "--mac", SOURCE_MAC, "--memory-mb", "1024", "--cpus", "2",
                "--network", "vmnet")


@pytest.fixture(scope="module")
def setup(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("morph")
    src, dst = server.cloud_dir("morph-src"), server.cloud_dir("morph-dst")
    vmware_like_cloud(src)
    blank, alpine = base / "blank.raw", base / "alpine.raw"
    ext4_image(blank, {"data/readme.txt": "just data\n"})
    ext4_image(alpine, {"etc/os-release": 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\n'
                                          'PRETTY_NAME="Alpine Linux v3.19"\n',
                        "etc/fstab": "/dev/sda / ext4 rw 0 1\n", "etc/hosts": "127.0.0.1 x\n",
                        "bin/busybox": "", "usr/bin/env": "", "sbin/init": ""})
    for name, disk in (("blank-vm", blank), ("alpine-vm", alpine)):
        local_cloud("add-instance", str(src), name, "--image", str(disk), "--network", "vmnet")
    local_cloud("init", str(dst), "--network", "kvmnet", "--storage", "default:qcow2")
    for name, cloud in (("vmware-like", src), ("kvm-like", dst)):
        server.cli("endpoint", "create", "--name", name, "--provider", "local",
                   "--connection", json.dumps({"path": str(cloud)}))
    script = base / "user-script.sh"
    script.write_text(USER_SCRIPT)
    source_disk = LocalCloud({"path": str(src)}).disk_path(
        "debian-vm", {"file": "disk0.qcow2"})
    return {"src": src, "dst": dst, "script": script, "source_disk": source_disk,
            "source_sha": sha256(source_disk), "base": base}


def start_migration(server: RunningServer, *args: str,
                    destination: dict | None = None) -> dict:
    return server.cli(
        "migration", "create", "--origin-endpoint", "vmware-like",
        "--destination-endpoint", "kvm-like", "--network-map", '{"vmnet": "kvmnet"}',
        "--source-environment", '{"snapshot": false}',
        "--destination-environment", json.dumps({"storage_backend": "default",
                                                 **(destination or {})}),
        *args, "-f", "json").json()


def migrate(server: RunningServer, *args: str, destination: dict | None = None) -> dict:
    created = start_migration(server, *args, destination=destination)
    return server.wait_for(["migration", "show", created["id"]],
                           lambda m: m["status"] in FINAL, timeout=1200)


def task_events(server: RunningServer, migration_id: str, task_type: str) -> list[str]:
    migration = server.bindings().migrations.get(migration_id)
    task = next(t for t in migration.tasks if t["task_type"] == task_type)
    return [e["message"] for e in task["events"]]


def probe(serial: str) -> dict[str, str]:
    assert guest_image.PROBE_END in serial, serial[-3000:]
    block = serial.split(guest_image.PROBE_BEGIN, 1)[1].split(guest_image.PROBE_END, 1)[0]
    lines = [line.strip() for line in block.splitlines() if ": " in line]
    return {k: v for k, v in (line.split(": ", 1) for line in lines)}


def test_morphed_guest_boots_on_virtio(server: RunningServer, setup: dict) -> None:
    done = migrate(server, "--instance", "debian-vm",
                   "--user-script-global", f"linux={setup['script']}")
    tasks = parse_tasks(done["tasks"])
    assert done["status"] == "COMPLETED", done["tasks"]
    types = [t["task_type"] for t in tasks]
    for task_type in ("DEPLOY_OS_MORPHING_RESOURCES", "OS_MORPHING",
                      "DELETE_OS_MORPHING_RESOURCES"):
        assert task_type in types

    events = task_events(server, done["id"], "OS_MORPHING")
    text = "\n".join(events)
    assert "found Debian 12" in text
    assert "fstab: /dev/sda1 → UUID=" in text
    assert "network: /etc/network/interfaces: ens192 configured with DHCP" in text
    assert f"the NIC with MAC {SOURCE_MAC} is named ens192" in text
    assert "agents: removed open-vm-tools" in text
    assert "initramfs: added virtio_pci virtio_blk" in text
    assert "user script (global linux): user script ran on source-vm" in events
    assert sha256(setup["source_disk"]) == setup["source_sha"]  # the source is never touched

    assert_boots_morphed(setup, "debian-vm")


def assert_boots_morphed(setup: dict, name: str) -> None:
    """Boot the destination instance ``name``: it must reach multi-user on virtio, root
    mounted by UUID, its NIC named as on the source and configured by DHCP, no VMware agent."""
    cloud = LocalCloud({"path": str(setup["dst"])})
    desc = cloud.load_instance(name)
    assert {d["bus"] for d in desc["disks"]} == {"virtio"}
    result = boot(cloud, name, setup["base"] / f"{name}-serial.log", timeout=600,
                  until=(guest_image.PROBE_END,), fail_on=BOOT_FAILURES)
    report = probe(result.serial)
    assert report["multi-user"] == "active"
    assert report["root-source"] == "/dev/vda1"
    assert "root=UUID=" in report["cmdline"] and report["fstab-root"].startswith("UUID=")
    nic = report["nic"].split()
    assert nic[:2] == ["ens192", SOURCE_MAC] and nic[2].startswith("10.0.2."), report
    assert "not-installed" in report["open-vm-tools"]


@pytest.fixture
def lv_host() -> Iterator[LibvirtHost]:
    with libvirt_host() as host:
        yield host


def wait_for_serial(dom: Any, log: Path, timeout: float) -> str:
    """The domain's serial log once it shows the probe's end (and the guest powered off, or
    30 s more), a boot failure, the domain stopped, or ``timeout``."""
    deadline, seen_end = time.monotonic() + timeout, False
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if guest_image.PROBE_END in text and not seen_end:
            seen_end, deadline = True, min(deadline, time.monotonic() + 30)
        if any(m in text for m in BOOT_FAILURES) or not dom.isActive():
            break
        time.sleep(1)
    return log.read_text(errors="replace") if log.exists() else text


def assert_boots_under_libvirt(host: LibvirtHost, name: str, mac: str, network: str,
                               timeout: float = 600) -> None:
    """The libvirt domain ``name`` (started by the deploy) has virtio disks and NICs and
    reaches multi-user: root by UUID on /dev/vda1, the NIC named ``ens192`` with ``mac``
    and a DHCP address of the host's ``network``, no VMware agent."""
    dom = host.conn.lookupByName(name)
    xml = ET.fromstring(dom.XMLDesc(0))
    assert {t.get("bus") for t in xml.findall("./devices/disk/target")} == {"virtio"}
    assert [m.get("type") for m in xml.findall("./devices/interface/model")] == ["virtio"]
    log = Path(xml.find("./devices/serial/log").get("file"))  # type: ignore[union-attr]
    try:
        serial = wait_for_serial(dom, log, timeout=timeout)
    finally:
        log.unlink(missing_ok=True)
    report = probe(serial)
    assert report["multi-user"] == "active"
    assert report["root-source"] == "/dev/vda1"
    assert "root=UUID=" in report["cmdline"] and report["fstab-root"].startswith("UUID=")
    nic = report["nic"].split()
    assert nic[:2] == ["ens192", mac], report
    assert len(nic) == 3 and nic[2].startswith(host.network_subnet(network) or "?"), report
    assert "not-installed" in report["open-vm-tools"]


def test_deployed_replica_boots_under_libvirt_and_its_volumes_stay_as_copied(
        server: RunningServer, setup: dict, lv_host: LibvirtHost) -> None:
    """A local → libvirt replica deployed with morphing: the deploy morphs the new domain's
    clones of the replica volumes, libvirt starts it (start_instance) and it reaches
    multi-user on virtio (root by UUID, the NIC named as on the source with a DHCP address of
    the libvirt network); the replica's own volume still equals the source, ready for the
    next execution."""
    host = lv_host
    host.add_pool("pool")
    host.add_network("kvm", dhcp=True)
    server.cli("endpoint", "create", "--name", "libvirt-kvm", "--provider", "libvirt",
               "--connection", json.dumps(host.connection_info(scratch=False)))
    name = host.name("debian-replica")
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "vmware-like",
        "--destination-endpoint", "libvirt-kvm", "--instance", "debian-vm",
        "--network-map", json.dumps({"vmnet": host.name("kvm")}),
        "--source-environment", '{"snapshot": false}',
        "--destination-environment", json.dumps({
            "storage_backend": host.name("pool"), "disk_format": "qcow2",
            "instance_name": name, "domain_type": "qemu", "start_instance": True}),
        "-f", "json").json()["id"]
    execution = server.cli("replica", "execute", replica, "-f", "json").json()["id"]
    executed = server.wait_for(["replica", "execution", "show", replica, execution],
                               lambda e: e["status"] in FINAL, timeout=600)
    assert executed["status"] == "COMPLETED", executed["tasks"]
    shown = server.cli("replica", "show", replica, "--show-instances-data", "-f", "json").json()
    volume = Path(shown["instances-data"]["debian-vm"]["volumes_info"][0]["path"])

    deployed = server.cli("migration", "deploy", "replica", replica, "-f", "json").json()
    done = server.wait_for(["migration", "show", deployed["id"]],
                           lambda m: m["status"] in FINAL, timeout=1200)
    assert done["status"] == "COMPLETED", done["tasks"]
    assert "fstab: /dev/sda1 → UUID=" in "\n".join(
        task_events(server, done["id"], "OS_MORPHING"))

    assert_boots_under_libvirt(host, name, SOURCE_MAC, "kvm")
    assert subprocess.run(["qemu-img", "compare", "-q", "-U", str(setup["source_disk"]),
                           str(volume)]).returncode == 0


def test_same_guest_without_morphing_does_not_boot(server: RunningServer, setup: dict) -> None:
    done = migrate(server, "--instance", "debian-vm", "--skip-os-morphing",
                   destination={"instance_name": "debian-raw"})
    assert done["status"] == "COMPLETED", done["tasks"]
    assert "OS_MORPHING" not in {t["task_type"] for t in parse_tasks(done["tasks"])}
    cloud = LocalCloud({"path": str(setup["dst"])})
    result = boot(cloud, "debian-raw", setup["base"] / "raw-serial.log", timeout=600,
                  until=(guest_image.PROBE_END,), fail_on=BOOT_FAILURES)
    assert result.reason == "failure", result.serial[-2000:]
    assert guest_image.PROBE_BEGIN not in result.serial
    assert "/dev/sda1 does not exist" in result.serial


def test_no_os_and_unsupported_distribution_stop_at_os_morphing(
        server: RunningServer, setup: dict) -> None:
    sources = {n: sha256(setup["src"] / "instances" / n / "disk0.raw")
               for n in ("blank-vm", "alpine-vm")}
    done = migrate(server, "--instance", "blank-vm", "--instance", "alpine-vm")
    assert done["status"] == "ERROR"
    tasks = parse_tasks(done["tasks"])
    failed = {t["instance"]: t["exception_details"] for t in tasks
              if t["task_type"] == "OS_MORPHING"}
    assert "no operating system found on disk0 [qcow2]; file systems there: /dev/sda ext4" \
        in failed["blank-vm"]
    assert "unsupported distribution 'alpinelinux'" in failed["alpine-vm"]
    for task in tasks:
        if task["task_type"] in ("DELETE_OS_MORPHING_RESOURCES",
                                 "CLEANUP_FAILED_INSTANCE_DEPLOYMENT",
                                 "CLEANUP_INSTANCE_TARGET_STORAGE"):
            assert task["status"] == "COMPLETED", task
    cloud = LocalCloud({"path": str(setup["dst"])})
    assert not {"blank-vm", "alpine-vm"} & set(cloud.instance_names())
    left = [p.name for p in (setup["dst"] / "storage" / "default").iterdir()
            if p.name.startswith(("blank-vm", "alpine-vm"))]
    assert left == []
    for name, digest in sources.items():
        assert sha256(setup["src"] / "instances" / name / "disk0.raw") == digest


def test_cancel_during_os_morphing_stops_the_appliance_at_once(
        server: RunningServer, setup: dict) -> None:
    """The morphing runs in a child process: a cancel while it works on the guest kills it and
    its qemu without waiting for the guest's initramfs to be rebuilt (over a minute)."""
    created = start_migration(server, "--instance", "debian-vm",
                              destination={"instance_name": "debian-cancelled"})

    def morphing(m: dict) -> bool:
        task = next((t for t in parse_tasks(m["tasks"]) if t["task_type"] == "OS_MORPHING"),
                    None)
        return m["status"] in FINAL or (task is not None and task["status"] == "RUNNING")

    running = server.wait_for(["migration", "show", created["id"]], morphing, timeout=600)
    assert running["status"] == "RUNNING", running["tasks"]
    deadline = time.monotonic() + 300  # until the appliance is up and working on the guest
    while not any(e.startswith("found ") for e in
                  task_events(server, created["id"], "OS_MORPHING")):
        assert time.monotonic() < deadline, "the appliance never inspected the guest"
        time.sleep(1)
    server.cli("migration", "cancel", created["id"])
    asked = time.monotonic()
    done = server.wait_for(["migration", "show", created["id"]],
                           lambda m: m["status"] in FINAL, timeout=300)
    assert done["status"] == "CANCELED", done["tasks"]
    assert time.monotonic() - asked < 45
    task = next(t for t in parse_tasks(done["tasks"]) if t["task_type"] == "OS_MORPHING")
    assert task["status"] == "CANCELED", task
    assert "debian-cancelled" not in LocalCloud({"path": str(setup["dst"])}).instance_names()
    assert not list((setup["dst"] / "storage").glob("**/debian-cancelled*"))
    assert processes_naming("debian-cancelled") == []  # no qemu left on its disks



def test_guest_morphed_on_an_osmorphing_pool_minion(server: RunningServer,
                                                    setup: dict) -> None:
    """``--osmorphing-minion-pool-mapping VM=POOL``: the libguestfs appliance runs on the
    pool's minion (a writer agent process of the destination cloud, with its own key), not
    on the worker: the OS_MORPHING events name the minion's agent, whose log shows the morph
    job; the guest gets the same changes as when the worker morphs it; the minion is
    reserved for the instance's morphing and released after."""
    pool_id = server.cli(
        "minion", "pool", "create", "--pool-endpoint", "kvm-like", "--pool-platform",
        "destination", "--pool-os-type", "linux", "--environment-options",
        '{"verbose": true}', "--minimum-minions", "1", "morphers", "-f", "json").json()["ID"]
    pool = server.wait_for(["minion", "pool", "show", pool_id],
                           lambda d: d["Pool Status"] in ("ALLOCATED", "ERROR"))
    assert pool["Pool Status"] == "ALLOCATED", pool["Events"]
    value = pool["Minion Machines"]
    (minion,) = json.loads(value) if isinstance(value, str) else value
    try:
        done = migrate(server, "--instance", "debian-vm", "--osmorphing-minion-pool-mapping",
                       f"debian-vm={pool_id}", destination={"instance_name": "debian-pooled"})
        assert done["status"] == "COMPLETED", transfer_summary(done)
        events = task_events(server, done["id"], "OS_MORPHING")
        text = "\n".join(events)
        url = minion["provider_properties"]["url"]
        assert f"starting the libguestfs appliance on 1 disk(s) on the helper at {url}" in text
        assert "found Debian 12" in text
        assert "fstab: /dev/sda1 → UUID=" in text
        assert "initramfs: added virtio_pci virtio_blk" in text
        prepared = "\n".join(task_events(server, done["id"], "DEPLOY_OS_MORPHING_RESOURCES"))
        assert f"the guest is morphed on minion {minion['id']} of pool {pool_id}" in prepared
        agent_log = Path(minion["provider_properties"]["directory"], "agent.log").read_text()
        assert "/v1/morphs/" in agent_log
        pool_events = server.cli("minion", "pool", "show", pool_id, "-f", "json").json()[
            "Events"]
        assert f"Minion {minion['id']} reserved for migration {done['id']} (debian-vm: " \
            "osmorphing)" in pool_events
        assert f"Minion {minion['id']} released by migration {done['id']}" in pool_events
        # The source guest's bytes are untouched. Not its file's hash: the replica test before
        # this one added a dirty bitmap to the source qcow2's metadata.
        assert subprocess.run(["qemu-img", "compare", "-q", "-U", str(guest_image.build()),
                               str(setup["source_disk"])]).returncode == 0
    finally:
        server.cli("minion", "pool", "deallocate", pool_id)
        server.wait_for(["minion", "pool", "show", pool_id],
                        lambda d: d["Pool Status"] in ("DEALLOCATED", "ERROR"))
        server.cli("minion", "pool", "delete", pool_id)
