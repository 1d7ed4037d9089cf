"""Import: a write round trip through the target locations (create_disks, then
deploy_target_resources, then transfer's writer), zero ranges included."""

from __future__ import annotations

import random
from typing import Any

import pytest

from coriolis.providers.base import BaseProvider, Capability
from coriolis.transfer import locations
from tests.providers.backends import JSON, Backend, Disk
from tests.providers.conftest import need
from tests.providers.kit import (
    VOLUME,
    assert_no_secret,
    check_shape,
    open_writer,
    read_all,
    write_image,
)


def export_info_for(name: str, disks: tuple[Disk, ...], network: str = "lan") -> JSON:
    """An ``export_info`` as a source provider describes an instance with these disks."""
    return {"id": name, "name": name, "instance_name": name, "num_cpu": 1, "memory_mb": 512,
            "os_type": "linux", "firmware_type": "BIOS", "flavor_name": None,
            "power_state": "stopped",
            "devices": {"disks": [{"id": f"disk{i}", "size_bytes": d.size, "format": d.format,
                                   "bus": "virtio", "storage_backend": None}
                                  for i, d in enumerate(disks)],
                        "nics": [{"id": "nic0", "mac_address": "52:54:00:00:00:01",
                                  "network_name": network}],
                        "controllers": [], "cdroms": [], "floppies": [], "serial_ports": []}}


def storage_choice(backend: Backend, index: int) -> str | None:
    if index >= len(backend.storage):
        pytest.skip(f"the {backend.platform} backend fixture has {len(backend.storage)} "
                    "storage choice(s)")
    return backend.storage[index]


class Volumes:
    """Destination volumes of one instance, and writing or reading them through the target
    locations."""

    def __init__(self, provider: BaseProvider, backend: Backend, env: JSON,
                 disks: tuple[Disk, ...], transfer_id: str) -> None:
        self.p: Any = provider  # the import interfaces, checked by the caller
        self.backend, self.env, self.disks, self.transfer_id = backend, env, disks, transfer_id
        self.info = backend.connection_info()
        # Named per transfer: runs sharing one platform (a host's libvirtd) never collide.
        self.export_info = export_info_for(f"kit-target-{transfer_id[:8]}", disks)
        self.volumes: list[JSON] = self.p.create_disks(
            self.info, env, self.export_info, [], transfer_id=transfer_id)

    def check(self) -> None:
        assert [v["disk_id"] for v in self.volumes] == \
            [d["id"] for d in self.export_info["devices"]["disks"]]
        for i, volume in enumerate(self.volumes):
            check_shape(volume, VOLUME, f"volumes_info[{i}]")
            assert volume["size_bytes"] >= self.disks[i].size
        assert_no_secret(self.volumes, self.backend.secrets(), "volumes_info")

    def deploy(self) -> JSON:
        target: JSON = self.p.deploy_target_resources(
            self.info, self.env, self.export_info, self.volumes, transfer_id=self.transfer_id)
        assert_no_secret(target, self.backend.secrets(), "target_resources")
        return target

    def undeploy(self, target: JSON) -> None:
        self.p.delete_target_resources(self.info, self.env, target)

    def write(self, images: list[bytes]) -> None:
        """Each volume's contents become ``images[i]`` (through one deploy of the target
        resources)."""
        target = self.deploy()
        try:
            for volume, image in zip(self.volumes, images, strict=True):
                location = target["disks"][volume["disk_id"]]
                locations.from_json(location)
                writer = open_writer(self.info, self.env, location, self.transfer_id, volume)
                try:
                    assert writer.size >= len(image)
                    write_image(writer, image)
                finally:
                    writer.close()
        finally:
            self.undeploy(target)

    def read(self) -> list[bytes]:
        target = self.deploy()
        try:
            found = []
            for volume, disk in zip(self.volumes, self.disks, strict=True):
                writer = open_writer(self.info, self.env, target["disks"][volume["disk_id"]],
                                     f"{self.transfer_id}-read", volume)
                try:
                    found.append(read_all(writer, disk.size))
                finally:
                    writer.close()
            return found
        finally:
            self.undeploy(target)

    def delete(self) -> None:
        self.p.delete_disks(self.info, self.env, self.volumes)


def noise(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize("storage", [0, 1, 2])
def test_write_round_trip(provider: BaseProvider, backend: Backend, storage: int,
                          transfer_id: str) -> None:
    need(provider, Capability.IMPORT)
    env = backend.destination_env(storage_choice(backend, storage))
    disks = (backend.sample_disk("raw", 20),
             backend.sample_disk("raw", 21, size=2 * 1024 * 1024))
    before = backend.inventory()
    volumes = Volumes(provider, backend, env, disks, transfer_id)
    try:
        volumes.check()
        # Noise everywhere first, so that the zero ranges of the second write must zero.
        volumes.write([noise(d.size, i) for i, d in enumerate(disks)])
        volumes.write([d.image() for d in disks])
        assert volumes.read() == [d.image() for d in disks], "read back differs"
    finally:
        volumes.delete()
    assert backend.inventory() == before, "the volumes were left behind"
