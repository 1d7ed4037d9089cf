"""The flagship VMware case end to end: the Debian test guest (configured like a VMware VM:
root on sda1, NIC ens192, open-vm-tools; ``coriolis/guest_image.py``) is the flat disk of a
vcsim VM (PVSCSI disk, vmxnet3 NIC with a fixed MAC, PUT through ``/folder``), migrated
vcsim -> libvirt (the system libvirtd, TCG) with OS morphing, started by libvirt, and it
reaches multi-user on virtio with its NIC named as on the source and configured by DHCP."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis import guest_image, vcsim
from coriolis.harness import RunningServer
from tests.e2e.test_os_morphing import assert_boots_under_libvirt
from tests.libvirt_host import LibvirtHost, libvirt_host
from tests.vcsim_host import PORTGROUP, create_vm, destroy_vm, session, vcsim_server, write_disk

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
SOURCE_MAC = "00:50:56:12:34:56"
__all__ = ["vcsim_server"]


@pytest.fixture
def lv_host() -> Iterator[LibvirtHost]:
    """A libvirt host whose objects are named ``vs-<hex>-...`` (this helper's prefix)."""
    with libvirt_host(prefix=f"vs-{uuid.uuid4().hex[:6]}") as host:
        yield host


def test_vmware_guest_migrated_to_libvirt_boots_on_virtio(
        server: RunningServer, vcsim_server: vcsim.Vcsim, lv_host: LibvirtHost,
        tmp_path: Path) -> None:
    image = guest_image.build()
    size = int(json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)],
                                         check=True, capture_output=True,
                                         text=True).stdout)["virtual-size"])
    raw = tmp_path / "guest.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    with session(vcsim_server) as si:
        vm = create_vm(si, "vs-debian", [size], mac=SOURCE_MAC)
        write_disk(vcsim_server, si, "vs-debian", 0, raw)
    raw.unlink()
    host = lv_host
    try:
        host.add_pool("pool")
        host.add_network("kvm", dhcp=True)
        conn_file = tmp_path / "vc.json"
        conn_file.write_text(json.dumps(vcsim_server.connection_info()))
        server.cli("endpoint", "create", "--name", "vs-vcenter", "--provider",
                   "vmware_vsphere", "--connection-file", str(conn_file))
        server.cli("endpoint", "create", "--name", "vs-kvm", "--provider", "libvirt",
                   "--connection", json.dumps(host.connection_info(scratch=False)))
        name = host.name("debian")
        created = server.cli(
            "migration", "create", "--origin-endpoint", "vs-vcenter",
            "--destination-endpoint", "vs-kvm", "--instance", "vs-debian",
            "--network-map", json.dumps({PORTGROUP: host.name("kvm")}),
            "--source-environment", '{"shutdown_timeout": 5}',
            "--destination-environment", json.dumps({
                "storage_backend": host.name("pool"), "disk_format": "qcow2",
                "instance_name": name, "domain_type": "qemu", "start_instance": True}),
            "-f", "json").json()
        done = server.wait_for(["migration", "show", created["id"]],
                               lambda m: m["status"] in FINAL, timeout=1800)
        assert done["status"] == "COMPLETED", done["tasks"]

        assert_boots_under_libvirt(host, name, SOURCE_MAC, "kvm", timeout=900)
    finally:
        with session(vcsim_server) as si:
            destroy_vm(si, vm)
