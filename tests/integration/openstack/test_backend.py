"""The OpenStack backend the ``openstack`` provider is tested against does what the provider
needs: a catalog with every service, Cinder volumes of a chosen type whose bytes a worker on
this host reads and writes through ``initialize_connection``'s NFS export, snapshots and
volumes from them, a Nova server booted from a Cinder volume on a Neutron port with a chosen
MAC, and deletes that leave nothing behind. Everything runs for real (see
coriolis/openstack_cloud.py); only Nova's hypervisor is Nova's own FakeDriver."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from coriolis.openstack_cloud import COMPUTE_HOST, OpenStackCloud

pytestmark = pytest.mark.timeout(900)
CONNECTOR = {"ip": "127.0.0.1", "host": "coriolis-worker", "initiator": "none",
             "multipath": False, "platform": "x86_64", "os_type": "linux"}
MAC = "fa:16:3e:c0:ff:ee"


def _write_read(cloud: OpenStackCloud, conn: Any, volume: Any,
                write: dict[int, bytes] | None, read: dict[int, bytes]) -> None:
    info = conn.block_storage.init_volume_attachment(volume, CONNECTOR)
    assert (info["driver_volume_type"], info["data"]["format"]) == ("nfs", "raw")
    path = cloud.volume_file(info)
    assert path.stat().st_size == volume.size << 30
    fd = os.open(path, os.O_RDWR)
    try:
        for offset, data in (write or {}).items():
            os.pwrite(fd, data, offset)
        os.fsync(fd)
        for offset, data in read.items():
            assert os.pread(fd, len(data), offset) == data
    finally:
        os.close(fd)
        conn.block_storage.terminate_volume_attachment(volume, CONNECTOR)


def test_catalog_and_provisioned_resources(openstack_cloud: OpenStackCloud) -> None:
    conn = openstack_cloud.connect()
    types = {s["type"] for s in conn.session.auth.get_access(conn.session).service_catalog
             .catalog}
    assert {"identity", "image", "volumev3", "network", "placement", "compute"} <= types
    by_name = {t.name: t for t in conn.block_storage.types()}
    for name in (openstack_cloud.volume_type, openstack_cloud.volume_type_other):
        assert by_name[name].extra_specs["volume_backend_name"] == "nfs"
    assert {f.name for f in conn.compute.flavors()} >= set(openstack_cloud.flavors)
    assert conn.image.get_image(openstack_cloud.image_id).status == "active"
    nets = {n.id: n for n in conn.network.networks()}
    assert nets[openstack_cloud.network_id].provider_network_type == "vlan"
    assert nets[openstack_cloud.network_other_id].provider_network_type == "flat"
    assert [h.name for h in conn.compute.hypervisors()] == [COMPUTE_HOST]


def test_volume_bytes_snapshot_and_clone(openstack_cloud: OpenStackCloud) -> None:
    conn = openstack_cloud.connect()
    bs = conn.block_storage
    volume = bs.create_volume(name="osb-src", size=1,
                              volume_type=openstack_cloud.volume_type_other)
    volume = bs.wait_for_status(volume, "available", failures=["error"], wait=120)
    assert volume.volume_type == openstack_cloud.volume_type_other
    assert volume.host.endswith("@nfs#nfs")
    pattern = {0: b"\xab" * 65536, (1 << 30) - 4096: b"end!" * 1024}
    _write_read(openstack_cloud, conn, volume, pattern, pattern)

    snap = bs.create_snapshot(volume_id=volume.id, name="osb-snap")
    snap = bs.wait_for_status(snap, "available", failures=["error"], wait=120)
    # A snapshot turns the volume into a qcow2 overlay on the raw file that now holds the
    # snapshot's bytes: writers must then go through qemu, not write the file directly.
    info = bs.init_volume_attachment(volume, CONNECTOR)
    bs.terminate_volume_attachment(volume, CONNECTOR)
    assert info["data"]["format"] == "qcow2"
    overlay = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(openstack_cloud.volume_file(info))],
        check=True, capture_output=True, text=True).stdout)
    assert overlay["format"] == "qcow2"
    assert overlay["backing-filename"] == f"volume-{volume.id}"

    clone = bs.create_volume(name="osb-clone", size=1, snapshot_id=snap.id)
    clone = bs.wait_for_status(clone, "available", failures=["error"], wait=120)
    _write_read(openstack_cloud, conn, clone, None, pattern)  # the snapshot's bytes

    for res in (clone, snap, volume):
        (bs.delete_snapshot if res is snap else bs.delete_volume)(res)
        bs.wait_for_delete(res, wait=120)
    # The cloud is the session's: other tests' resources may exist; only ours must be gone.
    assert not {v.id for v in bs.volumes()} & {volume.id, clone.id}
    assert snap.id not in {s.id for s in bs.snapshots()}


def test_server_from_volume_on_port_with_chosen_mac(openstack_cloud: OpenStackCloud) -> None:
    conn = openstack_cloud.connect()
    bs = conn.block_storage
    volume = bs.create_volume(name="osb-boot", size=1, imageRef=openstack_cloud.image_id)
    volume = bs.wait_for_status(volume, "available", failures=["error"], wait=180)
    assert volume.is_bootable
    port = conn.network.create_port(network_id=openstack_cloud.network_id, name="osb-port",
                                    mac_address=MAC)
    server = conn.compute.create_server(
        name="osb-server", flavor_id=openstack_cloud.flavors["m1.tiny"],
        networks=[{"port": port.id}], block_device_mapping=[{
            "uuid": volume.id, "source_type": "volume", "destination_type": "volume",
            "boot_index": 0, "delete_on_termination": False}])
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=180)

    shown = conn.compute.get_server(server.id)
    assert [a["id"] for a in shown.attached_volumes] == [volume.id]
    assert [a["OS-EXT-IPS-MAC:mac_addr"] for net in shown.addresses.values() for a in net] \
        == [MAC]
    assert shown.flavor["original_name"] == "m1.tiny"
    assert server.id in [s.id for s in conn.compute.servers()]
    port = conn.network.get_port(port.id)
    # Bound to the compute host's (stand-in) OVS agent; DOWN as no agent wires it.
    assert (port.device_id, port.binding_host_id, port.binding_vif_type) == (
        server.id, COMPUTE_HOST, "ovs")
    volume = bs.get_volume(volume.id)
    assert volume.status == "in-use"
    assert [a["server_id"] for a in volume.attachments] == [server.id]

    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=120)
    volume = bs.wait_for_status(volume, "available", failures=["error"], wait=120)
    assert volume.attachments == []
    conn.network.delete_port(port)
    bs.delete_volume(volume)
    bs.wait_for_delete(volume, wait=120)
    # The cloud is the session's: other tests' servers may exist; only ours must be gone.
    assert server.id not in {s.id for s in conn.compute.servers()}
    assert port.id not in {p.id for p in conn.network.ports()}
    assert volume.id not in {v.id for v in bs.volumes()}
