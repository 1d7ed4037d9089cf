"""The ``openstack`` provider's backend: the session's real OpenStack (``tests/openstack_cloud.py``:
Keystone, Glance, Cinder's NFS driver on a bind mount, Neutron, Placement, Nova with the fake
compute), started when the first check needs it and shared with the ``openstack_cloud``
fixture. What a test makes is named ``<test folder>-<name>``:

- source instances: Nova servers booted from Cinder volumes, one per disk (whole GiB, so
  ``disk_size_unit`` is 1 GiB), whose files the fixture writes through the NFS mount, with a
  port on network ``private`` (the kit's ``lan``). They are stopped (SHUTOFF), so exports
  read their volumes in place: a running server's volumes are snapshotted through Nova's
  assisted snapshots, which the fake compute lacks (the snapshot path is tested on
  unattached volumes in tests/integration/openstack/test_provider.py);
- a malformed instance: a server whose volume Cinder no longer has (detached and deleted
  behind Nova's back);
- destination storage choices: the volume types ``nfs`` and ``nfs-gold``;
- ``inventory``: every volume (with its status), snapshot, image (but the cloud's own),
  port (but the network's) and server of the project. The provider names what it makes
  after the transfer, not the test, so the kit compares the whole project; its checks run
  one at a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from coriolis.openstack_cloud import OpenStackCloud
from tests.openstack_cloud import cloud_base, session_cloud, stop_session_cloud
from tests.providers.backends import JSON, Disk, Instance
from tests.providers.backends import Backend as BaseBackend

GiB = 1024 ** 3
CONNECTOR = {"ip": "127.0.0.1", "host": "coriolis-kit", "initiator": "none",
             "multipath": False, "platform": "x86_64", "os_type": "linux"}
WAIT = 300


class Backend(BaseBackend):
    platform = "openstack"
    formats = ("raw",)
    storage = ("nfs", "nfs-gold")
    disk_size_unit = GiB

    @classmethod
    def start_session(cls, root: Path) -> dict[str, str]:
        """Nothing starts yet; the API server may open files under the cloud's folder."""
        return {"CORIOLIS_OPENSTACK_MOUNT_ROOTS": str(cloud_base())}

    @classmethod
    def stop_session(cls) -> None:
        stop_session_cloud()

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.cloud: OpenStackCloud = session_cloud()
        self.conn: Any = self.cloud.connect()

    def _name(self, name: str) -> str:
        return f"{self.root.name}-{name}"

    def connection_info(self) -> JSON:
        auth = {k: v for k, v in self.cloud.auth.items() if k != "identity_api_version"}
        return {**auth, "nfs_mount_point_base": str(self.cloud.work / "cinder" / "mnt"),
                "timeout": WAIT}

    def secrets(self) -> list[str]:
        return [self.cloud.auth["password"]]

    def network_name(self, network: str) -> str:
        return "private"

    def _volume(self, name: str, disk: Disk | None) -> Any:
        """An available volume of the disk's size (1 GiB without one) holding its bytes."""
        bs = self.conn.block_storage
        size = disk.size // GiB if disk is not None else 1
        volume = bs.create_volume(name=name, size=size, volume_type=self.cloud.volume_type)
        volume = bs.wait_for_status(volume, "available", failures=["error"], wait=WAIT)
        if disk is not None:
            info = bs.init_volume_attachment(volume, CONNECTOR)
            fd = os.open(self.cloud.volume_file(info), os.O_WRONLY)
            try:
                for offset, piece in disk.data:
                    os.pwrite(fd, piece, offset)
                for offset, length in disk.zeros:
                    os.pwrite(fd, bytes(length), offset)
                os.fsync(fd)
            finally:
                os.close(fd)
                bs.terminate_volume_attachment(volume, CONNECTOR)
        return volume

    def _server(self, name: str, volumes: list[Any], networks: list[JSON]) -> Any:
        self.conn.block_storage.set_volume_bootable_status(volumes[0], True)
        server = self.conn.compute.create_server(
            name=name, flavor_id=self.cloud.flavors["m1.tiny"], networks=networks,
            block_device_mapping=[{"uuid": v.id, "source_type": "volume",
                                   "destination_type": "volume", "boot_index": i,
                                   "delete_on_termination": False}
                                  for i, v in enumerate(volumes)])
        return self.conn.compute.wait_for_server(server, status="ACTIVE", wait=WAIT)

    def create_instance(self, instance: Instance) -> str:
        """A stopped server booted from one volume per disk; returns its id."""
        name = self._name(instance.name)
        volumes = [self._volume(f"{name}-disk{i}", disk)
                   for i, disk in enumerate(instance.disks)]
        port = self.conn.network.create_port(network_id=self.cloud.network_id,
                                             name=f"{name}-port")
        server = self._server(name, volumes, [{"port": port.id}])
        self.conn.compute.stop_server(server)
        self.conn.compute.wait_for_server(server, status="SHUTOFF", wait=WAIT)
        return str(server.id)

    def create_malformed_instance(self, name: str) -> str:
        """A server whose one volume was deleted in Cinder behind Nova's back."""
        full = self._name(name)
        volume = self._volume(f"{full}-disk0", None)
        server = self._server(full, [volume], [{"uuid": self.cloud.network_id}])
        bs = self.conn.block_storage
        bs.reset_volume_status(volume, status="available", attach_status="detached",
                               migration_status=None)
        bs.delete_volume(volume, force=True)
        bs.wait_for_delete(volume, wait=WAIT)
        return str(server.id)

    def destination_env(self, storage: str | None = None) -> JSON:
        return {"network_map": {"lan": "private"},
                "storage_mappings": {"default": storage or self.cloud.volume_type,
                                     "backend_mappings": [], "disk_mappings": []}}

    def inventory(self) -> set[str]:
        conn = self.conn
        return ({f"volume {v.name} {v.id} {v.status}" for v in conn.block_storage.volumes()}
                | {f"snapshot {s.name} {s.id}" for s in conn.block_storage.snapshots()}
                | {f"image {i.name} {i.id}" for i in conn.image.images()
                   if i.id != self.cloud.image_id}
                | {f"port {p.name} {p.id}" for p in conn.network.ports()
                   if not (p.device_owner or "").startswith("network:")}
                | {f"server {s.name} {s.id}" for s in conn.compute.servers()})

    def close(self) -> None:
        """This test's servers, then its ports and volumes."""
        conn, prefix = self.conn, f"{self.root.name}-"
        try:
            for server in list(conn.compute.servers()):
                if server.name.startswith(prefix):
                    conn.compute.delete_server(server)
                    conn.compute.wait_for_delete(server, wait=WAIT)
            for port in list(conn.network.ports()):
                if (port.name or "").startswith(prefix):
                    conn.network.delete_port(port, ignore_missing=True)
            for volume in list(conn.block_storage.volumes()):
                if (volume.name or "").startswith(prefix):
                    if volume.status not in ("available", "error"):
                        conn.block_storage.wait_for_status(volume, "available",
                                                           failures=["error"], wait=WAIT)
                    conn.block_storage.delete_volume(volume)
                    conn.block_storage.wait_for_delete(volume, wait=WAIT)
        finally:
            conn.close()
