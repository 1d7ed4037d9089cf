"""Replica import: a snapshot taken before an execution writes the disks is rolled back by
``restore_disk_snapshots`` (the disks as before the writes) or committed by
``delete_disk_snapshots`` (the writes kept); each call is safe to repeat."""

from __future__ import annotations

from typing import Any

import pytest

from coriolis.providers.base import BaseProvider, Capability
from tests.providers.backends import JSON, Backend
from tests.providers.conftest import need
from tests.providers.test_writer import Volumes, noise, storage_choice

OUTCOME = ("volumes_info", "committed", "rolled_back")


def _outcome(value: JSON, what: str) -> list[JSON]:
    assert isinstance(value, dict), f"{what} returned {value!r}, not a snapshot outcome"
    for key in OUTCOME:
        assert key in value, f"{what}'s outcome lacks '{key}'"
    return list(value["volumes_info"])


@pytest.mark.parametrize("storage", [0, 1, 2])
def test_restore_rolls_back_and_delete_commits(provider: BaseProvider, backend: Backend,
                                               storage: int, transfer_id: str) -> None:
    need(provider, Capability.REPLICA_IMPORT)
    p: Any = provider  # the replica import interface, checked above
    env = backend.destination_env(storage_choice(backend, storage))
    disks = (backend.sample_disk("raw", 30),
             backend.sample_disk("raw", 31, size=2 * 1024 * 1024))
    first = [d.image() for d in disks]
    second = [bytearray(image) for image in first]
    for image, new in zip(second, [noise(len(i) // 4, 7) for i in first], strict=True):
        image[len(image) // 2:len(image) // 2 + len(new)] = new  # changed data
        image[:len(image) // 8] = bytes(len(image) // 8)  # and a range zeroed
    second_images = [bytes(i) for i in second]
    before = backend.inventory()
    volumes = Volumes(provider, backend, env, disks, transfer_id)
    info = volumes.info
    try:
        volumes.write(first)
        for attempt in ("execution-1", "execution-2"):
            # A snapshot, then writes: rolled back (twice: the second finds nothing to do).
            volumes.volumes = _outcome(
                p.snapshot_disks(info, env, volumes.volumes, attempt),
                "snapshot_disks")
            volumes.write(second_images)
            assert volumes.read() == second_images
            for _ in range(2):
                volumes.volumes = _outcome(
                    p.restore_disk_snapshots(info, env, volumes.volumes),
                    "restore_disk_snapshots")
            assert volumes.read() == first, f"{attempt}: the roll-back did not undo the writes"
        volumes.volumes = _outcome(
            p.snapshot_disks(info, env, volumes.volumes, "execution-3"),
            "snapshot_disks")
        volumes.write(second_images)
        for _ in range(2):
            volumes.volumes = _outcome(
                p.delete_disk_snapshots(info, env, volumes.volumes),
                "delete_disk_snapshots")
        # A later settle must not roll back what was committed.
        volumes.volumes = _outcome(
            p.restore_disk_snapshots(info, env, volumes.volumes),
            "restore_disk_snapshots")
        assert volumes.read() == second_images, "the commit did not keep the writes"
    finally:
        volumes.delete()
    assert backend.inventory() == before, "replica volumes or snapshots were left behind"
