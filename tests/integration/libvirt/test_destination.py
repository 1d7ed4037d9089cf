"""The libvirt provider's destination side against the real system libvirtd (TCG): pool
volumes, the pending domain and its finalisation, clones for replica deploys, clean-up, and
bad input refused before anything is made."""

from __future__ import annotations

import os
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis import exceptions
from coriolis.providers.libvirt import metadata
from coriolis.providers.libvirt.destination import PENDING_SUFFIX
from coriolis.providers.libvirt.provider import LibvirtProvider
from coriolis.transfer import locations
from coriolis.transfer.options import TransferOptions
from tests.libvirt_host import LibvirtHost, libvirt_host, small_mount

MiB = 1024 * 1024
MAC = "52:54:00:ab:cd:01"


@pytest.fixture
def host() -> Iterator[LibvirtHost]:
    with libvirt_host() as h:
        yield h


def export_info(name: str, sizes: list[int], network: str = "lan") -> dict[str, Any]:
    return {"id": name, "name": name, "instance_name": name, "num_cpu": 2, "memory_mb": 192,
            "os_type": "linux", "firmware_type": "BIOS", "flavor_name": None,
            "power_state": "stopped",
            "devices": {"disks": [{"id": f"disk{i}", "size_bytes": s, "format": "raw",
                                   "bus": "sata", "storage_backend": None}
                                  for i, s in enumerate(sizes)],
                        "nics": [{"id": "nic0", "mac_address": MAC, "network_name": network}],
                        "controllers": [], "cdroms": [], "floppies": [], "serial_ports": []}}


def env_for(host: LibvirtHost, **extra: Any) -> dict[str, Any]:
    return {"storage_backend": host.name("pool"), "domain_type": "qemu",
            "network_map": {"lan": host.name("net")}, "storage_mappings": {}, **extra}


def write(conn: dict, location: dict, volume: dict, data: bytes) -> None:
    writer = locations.open_writer(location, options=TransferOptions.from_env({}),
                                   transfer_id="t", connection_info=conn,
                                   size=volume["size_bytes"])
    try:
        writer.write(MiB, data)
        writer.flush()
    finally:
        writer.close()


def read_at(path: str, fmt: str, offset: int, length: int) -> bytes:
    """Bytes of a disk image as its guest sees them (qcow2 through qemu-img)."""
    if fmt != "raw":
        out = Path(path + ".read")
        subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", path, str(out)],
                       check=True)
        path = str(out)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)
    finally:
        if fmt != "raw":
            os.unlink(path)


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_migration_volumes_domain_and_finalize(host: LibvirtHost, fmt: str) -> None:
    host.add_pool("pool")
    host.add_network("net")
    provider, conn = LibvirtProvider(), host.connection_info()
    env = env_for(host, disk_format=fmt, instance_name=host.name("vm"), start_instance=True)
    info = export_info("vm", [8 * MiB, 4 * MiB])
    provider.validate_destination_inputs(conn, env, info)

    # A call repeated after a crash (same transfer) replaces what the first one made.
    provider.create_disks(conn, env, info, [], transfer_id="tr-1")
    vols = provider.create_disks(conn, env, info, [], transfer_id="tr-1")
    listed = {v.name() for v in host.conn.storagePoolLookupByName(host.name("pool"))
              .listAllVolumes(0)}
    assert listed == {v["volume"] for v in vols} and len(listed) == 2
    for v in vols:
        assert v["volume"].startswith(f"{host.name('vm')}-{v['disk_id']}-")
        assert v["volume_id"] == v["path"]  # a dir pool volume's key is its path
        assert v["format"] == fmt and v["storage_backend"] == host.name("pool")
    assert provider.create_disks(conn, env, info, vols, transfer_id="tr-1") == vols

    targets = provider.deploy_target_resources(conn, env, info, vols, transfer_id="tr-1")
    location = targets["disks"]["disk0"]
    assert location["kind"] == "path" and location["confine"] == [
        os.path.realpath(host.root / "pools" / "pool")]
    write(conn, location, vols[0], b"\xab" * 65536)
    assert read_at(vols[0]["path"], fmt, MiB, 16) == b"\xab" * 16

    deployed = provider.deploy_instance(conn, env, info, vols, transfer_id="tr-1")
    pending = host.conn.lookupByName(host.name("vm") + PENDING_SUFFIX)
    xml = ET.fromstring(pending.XMLDesc(0))
    assert xml.get("type") == "qemu"
    assert [d.get("bus") for d in xml.findall("./devices/disk/target")] == ["virtio"] * 2
    assert [d.get("file") for d in xml.findall("./devices/disk/source")] == \
        [v["path"] for v in vols]
    nic = xml.find("./devices/interface")
    assert nic.find("source").get("network") == host.name("net")
    assert nic.find("mac").get("address") == MAC and nic.find("model").get("type") == "virtio"
    assert xml.findtext("vcpu") == "2" and int(xml.findtext("memory")) == 192 * 1024
    tag = xml.find(f"./metadata/{metadata.TAG}")
    assert tag.get("pending") == "yes" and tag.get("id") == "tr-1"
    assert not pending.isActive()

    profile = provider.os_morphing_profile(conn, env, info, deployed)
    assert profile["disk_bus"] == "virtio" and profile["nic_model"] == "virtio"
    assert profile["nics"] == [{"mac": MAC, "network": host.name("net")}]
    morph = provider.deploy_os_morphing_resources(conn, env, deployed)
    assert morph == {"helper": None, "disks": [
        {"path": v["path"], "format": fmt, "name": f"disk{i}"} for i, v in enumerate(vols)]}

    result = provider.finalize_instance(conn, env, deployed)
    dom = host.conn.lookupByName(host.name("vm"))
    assert dom.isActive()  # start_instance
    assert ET.fromstring(dom.XMLDesc(0)).find(f"./metadata/{metadata.TAG}").get(
        "pending") == "no"
    assert provider.finalize_instance(conn, env, deployed) == result  # again: the same
    with pytest.raises(exceptions.InvalidInput, match=f"domain named '{host.name('vm')}'"):
        provider.validate_destination_inputs(conn, env, info)


def test_clone_deploy_and_cleanup_keep_the_replica_volumes(host: LibvirtHost) -> None:
    host.add_pool("pool")
    host.add_network("net")
    provider, conn = LibvirtProvider(), host.connection_info()
    env = env_for(host, disk_format="qcow2", firmware_type="EFI")
    info = export_info(host.name("rep"), [4 * MiB])
    vols = provider.create_disks(conn, env, info, [], transfer_id="rep-1")
    targets = provider.deploy_target_resources(conn, env, info, vols)
    write(conn, targets["disks"]["disk0"], vols[0], b"\x5a" * 65536)
    before = host.inventory()

    deployed = provider.deploy_instance(conn, env, info, vols, clone_disks=True,
                                        transfer_id="dep-1")
    clone = deployed["cloned_volumes"][0]
    assert "-clone-" in clone["volume"] and clone["path"] != vols[0]["path"]
    assert read_at(clone["path"], "qcow2", MiB, 16) == b"\x5a" * 16
    xml = ET.fromstring(host.conn.lookupByUUIDString(deployed["uuid"]).XMLDesc(0))
    assert xml.find("./os").get("firmware") == "efi"
    assert [d.get("file") for d in xml.findall("./devices/disk/source")] == [clone["path"]]

    # Repeated after a crash, the same transfer's pending domain and clones are replaced.
    deployed = provider.deploy_instance(conn, env, info, vols, clone_disks=True,
                                        transfer_id="dep-1")
    # Another transfer may not take the name while it is being deployed.
    with pytest.raises(exceptions.InvalidInput, match="another transfer"):
        provider.deploy_instance(conn, env, info, vols, transfer_id="dep-2")

    provider.cleanup_failed_instance(conn, env, deployed)
    provider.cleanup_failed_instance(conn, env, deployed)  # idempotent
    assert host.inventory() == before
    assert read_at(vols[0]["path"], "qcow2", MiB, 16) == b"\x5a" * 16

    provider.delete_disks(conn, env, vols)
    provider.delete_disks(conn, env, vols)
    assert not any(i.startswith("volume:") for i in host.inventory())


def test_replica_snapshots_roll_back_pool_volumes(host: LibvirtHost) -> None:
    host.add_pool("pool")
    host.add_network("net")
    provider, conn = LibvirtProvider(), host.connection_info()
    env = env_for(host)
    info = export_info(host.name("rs"), [4 * MiB])
    vols = provider.create_disks(conn, env, info, [], transfer_id="rs-1")
    snap = provider.snapshot_disks(conn, env, vols, "exec-1")["volumes_info"]
    write(conn, provider.deploy_target_resources(conn, env, info, snap)["disks"]["disk0"],
          snap[0], b"\x11" * 65536)
    assert provider.delete_disk_snapshots(conn, env, snap)["committed"] == "exec-1"
    snap = provider.snapshot_disks(conn, env, vols, "exec-2")["volumes_info"]
    location = provider.deploy_target_resources(conn, env, info, snap)["disks"]["disk0"]
    assert location["journal"]
    write(conn, location, snap[0], b"\x22" * 65536)
    outcome = provider.restore_disk_snapshots(conn, env, snap)
    assert outcome["rolled_back"] == "exec-2" and outcome["committed"] == "exec-1"
    assert read_at(vols[0]["path"], "raw", MiB, 16) == b"\x11" * 16
    provider.delete_disks(conn, env, vols)
    assert not any(i.startswith(("volume:", "file:lv/pools")) for i in host.inventory())


def test_bad_input_is_refused_naming_it_and_nothing_is_made(host: LibvirtHost) -> None:
    host.add_pool("pool")
    host.add_network("net")
    provider, conn = LibvirtProvider(), host.connection_info()
    info = export_info(host.name("bad"), [4 * MiB])
    host.define_domain("bad", [], None)  # a domain of the same name exists already
    before = host.inventory()
    new = host.name("new")
    cases = [
        (env_for(host, storage_backend=host.name("nopool")), f"'{host.name('nopool')}'"),
        (env_for(host, network_map={"lan": host.name("nonet")}), f"'{host.name('nonet')}'"),
        (env_for(host, network_map={"lan": "bridge:nobr0"}), "'bridge:nobr0'"),
        ({**env_for(host), "network_map": {}}, "network 'lan'"),
    ]
    for env, named in cases:
        with pytest.raises(exceptions.InvalidInput, match=named):
            provider.validate_destination_inputs(conn, {**env, "instance_name": new}, info)
    with pytest.raises(exceptions.InvalidInput, match=f"domain named '{host.name('bad')}'"):
        provider.validate_destination_inputs(conn, env_for(host), info)
    assert host.inventory() == before
    # deploy_instance refuses the clash itself too, making nothing.
    with pytest.raises(exceptions.InvalidInput, match="already exists"):
        provider.deploy_instance(conn, env_for(host), info, [], transfer_id="x")
    assert host.inventory() == before

    small = host.root / "pools" / "small"
    with small_mount(small, "8m"):
        host.add_pool("small")
        env = env_for(host, storage_backend=host.name("small"), instance_name=host.name("ok"))
        with pytest.raises(exceptions.InvalidInput, match=f"pool '{host.name('small')}' has"):
            provider.validate_destination_inputs(conn, env, export_info("big", [64 * MiB]))
        provider.validate_destination_inputs(conn, env, export_info("fits", [4 * MiB]))
        host.conn.storagePoolLookupByName(host.name("small")).destroy()


def test_failed_define_leaves_no_domain_and_no_clone(host: LibvirtHost) -> None:
    host.add_pool("pool")
    host.add_network("net")
    provider, conn = LibvirtProvider(), host.connection_info()
    env = env_for(host)
    info = export_info(host.name("fail"), [4 * MiB])
    vols = provider.create_disks(conn, env, info, [], transfer_id="f-1")
    before = host.inventory()
    with pytest.raises(exceptions.ProviderError, match=f"cannot define domain "
                                                       f"'{host.name('fail')}'"):
        provider.deploy_instance(conn, {**env, "machine_type": "no-such-machine"}, info, vols,
                                 clone_disks=True, transfer_id="f-1")
    assert host.inventory() == before


def test_efi_domain_finalized_started_then_cleaned_up_with_its_nvram(host: LibvirtHost) -> None:
    host.add_pool("pool")
    host.add_network("net")
    provider, conn = LibvirtProvider(), host.connection_info()
    env = env_for(host, firmware_type="EFI", instance_name=host.name("efi"),
                  start_instance=True, num_cpu=1, memory_mb=128)
    info = export_info("efi", [4 * MiB])
    vols = provider.create_disks(conn, env, info, [], transfer_id="efi-1")
    before = host.inventory()
    deployed = provider.deploy_instance(conn, env, info, vols, transfer_id="efi-1")
    provider.finalize_instance(conn, env, deployed)
    dom = host.conn.lookupByName(host.name("efi"))
    xml = ET.fromstring(dom.XMLDesc(0))
    assert dom.isActive() and xml.findtext("vcpu") == "1"  # the environment's overrides
    assert int(xml.findtext("memory")) == 128 * 1024
    nvram = Path(xml.findtext("./os/nvram"))
    assert nvram.name.startswith(host.name("efi")) and nvram.exists()
    provider.cleanup_failed_instance(conn, env, deployed)
    assert not nvram.exists()
    assert host.inventory() == before


def test_destination_options_list_the_host(host: LibvirtHost) -> None:
    host.add_pool("pool")
    host.add_network("net")
    options = {o["name"]: o for o in LibvirtProvider().list_destination_options(
        host.connection_info(), {}, None)}
    assert host.name("pool") in options["storage_backend"]["values"]
    assert host.name("net") in options["network"]["values"]
    assert "pc" in options["machine_type"]["values"]
    assert "q35" in options["machine_type"]["values"]
    assert options["firmware_type"]["values"] == ["BIOS", "EFI"]  # OVMF is installed
    assert options["disk_format"]["values"] == ["raw", "qcow2"]
    assert "qemu" in options["domain_type"]["values"]
    only = LibvirtProvider().list_destination_options(host.connection_info(), {},
                                                      ["disk_format"])
    assert [o["name"] for o in only] == ["disk_format"]


def test_nic_on_a_host_bridge(host: LibvirtHost) -> None:
    host.add_pool("pool")
    bridge = f"br{host.prefix[2:]}"
    made = subprocess.run(["ip", "link", "add", bridge, "type", "bridge"],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a bridge: {made.stderr.strip()}")
    try:
        provider, conn = LibvirtProvider(), host.connection_info()
        env = env_for(host, network_map={"lan": f"bridge:{bridge}"})
        info = export_info(host.name("br"), [4 * MiB])
        provider.validate_destination_inputs(conn, env, info)
        vols = provider.create_disks(conn, env, info, [], transfer_id="br-1")
        deployed = provider.deploy_instance(conn, env, info, vols, transfer_id="br-1")
        nic = ET.fromstring(host.conn.lookupByUUIDString(deployed["uuid"]).XMLDesc(0)).find(
            "./devices/interface")
        assert nic.get("type") == "bridge" and nic.find("source").get("bridge") == bridge
        assert provider.os_morphing_profile(conn, env, info, deployed)["nics"] == [
            {"mac": MAC, "network": f"bridge:{bridge}"}]
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def test_create_disks_failing_half_way_removes_what_it_made(host: LibvirtHost) -> None:
    """disk1 goes to a pool on a full file system (its qcow2 header cannot be written): the
    volume made for disk0 goes too, and the error names the disk."""
    host.add_pool("pool")
    host.add_network("net")
    provider, conn = LibvirtProvider(), host.connection_info()
    info = export_info(host.name("half"), [4 * MiB, 4 * MiB])
    with small_mount(host.root / "pools" / "full", "4k"):
        host.add_pool("full")
        subprocess.run(["dd", "if=/dev/zero", f"of={host.root / 'pools' / 'full' / 'fill'}",
                        "bs=4k", "count=4"], capture_output=True)
        env = env_for(host, disk_format="qcow2", storage_mappings={
            "disk_mappings": [{"disk_id": "disk1", "destination": host.name("full")}]})
        before = host.inventory()
        with pytest.raises(exceptions.ProviderError, match="for disk disk1"):
            provider.create_disks(conn, env, info, [], transfer_id="half-1")
        assert host.inventory() == before
        host.conn.storagePoolLookupByName(host.name("full")).destroy()


def test_a_remote_host_is_refused_naming_it_before_anything_is_made() -> None:
    """The worker writes, snapshots and morphs the volumes' files where they are: a remote
    URI is refused by validation (no connection is even tried)."""
    conn = {"uri": "qemu+ssh://coriolis@kvm7.invalid/system"}
    with pytest.raises(exceptions.ProviderError, match=r"remote libvirt host \(kvm7.invalid\)"):
        LibvirtProvider().validate_destination_inputs(conn, {}, export_info("vm", [MiB]))
    with pytest.raises(exceptions.ProviderError, match="kvm7.invalid"):
        LibvirtProvider().deploy_target_resources(conn, {}, export_info("vm", [MiB]), [])


def test_transfers_into_one_pool_at_once_do_not_fail_each_other(host: LibvirtHost) -> None:
    """Three transfers making their disks in one storage pool while others validate theirs
    (a pool refresh): libvirt refuses to refresh a pool while a volume is being built in it
    ("has asynchronous jobs running"); the provider waits that out instead of failing a
    transfer (the flake of three migrations through one libvirt minion pool)."""
    host.add_pool("pool")
    host.add_network("net")
    provider, conn = LibvirtProvider(), host.connection_info()
    env = env_for(host, disk_format="qcow2")
    errors: list[BaseException] = []

    def transfer(i: int) -> None:
        info = export_info(host.name(f"busy{i}"), [4 * MiB] * 3)
        try:
            for round_ in range(4):
                provider.validate_destination_inputs(conn, env, info)
                made = provider.create_disks(conn, env, info, [],
                                             transfer_id=f"busy-{i}-{round_}")
                provider.delete_disks(conn, env, made)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=transfer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
