"""VMware -> OpenStack end to end, through the real CLI and server: a vcsim VM (govmomi's
vCenter simulator) with a flat disk and a snapshot-delta disk is migrated to a real
OpenStack (the ``openstack_cloud`` session fixture: Keystone, Glance, Cinder on NFS,
Neutron, Placement, Nova with the fake compute driver). Each Cinder volume holds exactly the
source disk's bytes (then zeroes to the whole GiB), and the Nova server is ACTIVE with the
flavor and a port on the mapped network keeping the VM's MAC. The fake compute driver runs
no guest, so nothing boots: the disks are checked in Cinder (the flagship vcsim -> libvirt
test boots a migrated VMware guest)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis import vcsim
from coriolis.harness import start_server, stop_server
from coriolis.providers.openstack.connection import connect
from coriolis.providers.vmware_vsphere import inventory
from tests.e2e.test_openstack_cloud import migrated_server, same, volume_file
from tests.vcsim_host import (
    PORTGROUP,
    create_vm,
    delta_chain,
    destroy_vm,
    put,
    session,
    vcsim_server,
    vmdk_raw,
    write_disk,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
MiB = 1024 * 1024
MAC = "00:50:56:8a:0b:15"  # a VMware-assigned MAC
NET, FLAVOR = "private", "m1.small"  # of tests/openstack_cloud.py
__all__ = ["vcsim_server"]


def warm_quota_rows(ci: dict[str, Any]) -> None:
    """One volume made and deleted before the test. The first volumes of a project race to
    insert its ``quota_usages`` rows; on a real database the loser gets a duplicate entry,
    which Cinder retries, but on the test cloud's SQLite it gets "database is locked" (a
    500), so two disks created at once in a fresh project can fail. Seen here: Cinder's
    error, not the provider's."""
    with connect(ci) as conn:
        volume = conn.block_storage.create_volume(size=1, name="vsos-warm")
        conn.block_storage.wait_for_status(volume, "available", failures=["error"], wait=300)
        conn.block_storage.delete_volume(volume)
        conn.block_storage.wait_for_delete(volume, wait=300)


@pytest.fixture(scope="module")
def vsos(openstack_cloud: Any, vcsim_server: vcsim.Vcsim,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("vsos")
    cloud = openstack_cloud
    auth = {k: v for k, v in cloud.auth.items() if k != "identity_api_version"}
    ci = {**auth, "nfs_mount_point_base": str(cloud.work / "cinder" / "mnt")}
    warm_quota_rows(ci)
    server = start_server(work / "data", {"CORIOLIS_OPENSTACK_MOUNT_ROOTS": str(cloud.work)})
    try:
        for name, provider, info in (("vsos-os", "openstack", ci),
                                     ("vsos-vc", "vmware_vsphere",
                                      vcsim_server.connection_info())):
            (work / f"{name}.json").write_text(json.dumps(info))  # secrets out of argv
            server.cli("endpoint", "create", "--name", name, "--provider", provider,
                       "--connection-file", str(work / f"{name}.json"))
        yield {"ci": ci, "server": server, "work": work}
    finally:
        stop_server(server)


def test_vcsim_to_openstack_bit_identical_with_the_mapped_network(
        vsos: dict[str, Any], vcsim_server: vcsim.Vcsim, tmp_path: Path) -> None:
    server, ci = vsos["server"], vsos["ci"]
    flat = os.urandom(3 * MiB) + bytes(4 * MiB) + os.urandom(MiB)
    size = 16 * MiB
    with session(vcsim_server) as si:
        vm = create_vm(si, "vsos-vm", [size, size], mac=MAC)
        try:
            write_disk(vcsim_server, si, "vsos-vm", 0, flat)
            chain = delta_chain(tmp_path, "vsos-vm_1", size,
                                [(0x61, 0, 2 * MiB), (0x62, 8 * MiB, MiB)],
                                [(0x63, MiB, 2 * MiB)])
            for file in chain:
                put(vcsim_server, si, f"vsos-vm/{file.name}", file)
            expected = {"scsi0-0": tmp_path / "disk0.raw", "scsi0-1": tmp_path / "disk1.raw"}
            expected["scsi0-0"].write_bytes(flat + bytes(size - len(flat)))
            vmdk_raw(chain[0], expected["scsi0-1"])
            created = server.cli(
                "migration", "create", "--origin-endpoint", "vsos-vc",
                "--destination-endpoint", "vsos-os", "--instance", "vsos-vm",
                "--source-environment", '{"shutdown_timeout": 5}',
                "--destination-environment", json.dumps(
                    {"flavor_name": FLAVOR, "instance_name": "vsos-vm",
                     "preserve_mac_addresses": True}),
                "--network-map", json.dumps({PORTGROUP: NET}), "--skip-os-morphing",
                "-f", "json").json()
            done = server.wait_for(["migration", "show", created["id"]],
                                   lambda m: m["status"] in FINAL, timeout=900)
        finally:
            destroy_vm(si, inventory.find_vm(si, "vsos-vm") or vm)
    assert done["status"] == "COMPLETED", done["tasks"]
    with connect(ci) as conn:
        [srv] = [s for s in conn.compute.servers(details=True) if s.name == "vsos-vm"]
        vols = [conn.block_storage.get_volume(a["id"]) for a in srv.attached_volumes]
        try:
            migrated_server(conn, "vsos-vm", FLAVOR, MAC, NET)
            by_disk = {v.metadata.get("coriolis_disk"): v for v in vols}
            assert set(by_disk) == set(expected)
            for disk, raw in expected.items():
                assert same(raw, volume_file(ci, by_disk[disk].id)), disk
        finally:
            conn.compute.delete_server(srv)
            conn.compute.wait_for_delete(srv, wait=300)
            for volume in vols:
                conn.block_storage.delete_volume(volume.id)
