"""The local cloud's block-device storage backends, on real loop devices: volumes claim a
free device at least as large as the disk, a re-run finds its own claim, side files stay in
the cloud's storage folder, deleting releases and zeroes the device; unusable, too small or
unlisted devices are refused naming them, with nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis import exceptions
from coriolis.cmd.local_cloud import add_instance, add_storage, init_cloud
from coriolis.providers.local import replica_disks
from coriolis.providers.local.cloud import LocalCloud
from coriolis.providers.local.provider import LocalProvider
from coriolis.transfer.files import RawFileWriter
from coriolis.transfer.journal import JournalingWriter
from tests import loop_devices

MiB = 1024 * 1024
JSON = dict[str, Any]


@pytest.fixture(autouse=True)
def _needs_loop_devices() -> None:
    loop_devices.skip_unless_available()


class Devices:
    """Loop devices over files filled with non-zero bytes (what a previous user left)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.attached = folder, []  # type: ignore[var-annotated]
        self.backing: dict[str, Path] = {}

    def make(self, size: int, read_only: bool = False) -> str:
        backing = self.folder / f"dev{len(self.attached)}.img"
        backing.write_bytes(b"\xa5" * size)
        device = loop_devices.attach(backing, read_only)
        self.attached.append(device)
        self.backing[device] = backing
        return device

    def read(self, device: str) -> bytes:
        with open(device, "rb") as f:
            return f.read()


@pytest.fixture
def devs(tmp_path: Path) -> Iterator[Devices]:
    folder = tmp_path / "devices"
    folder.mkdir()
    made = Devices(folder)
    try:
        yield made
    finally:
        for device in made.attached:
            loop_devices.detach(device)


def make_cloud(tmp_path: Path, devices: list[str]) -> JSON:
    root = init_cloud(tmp_path / "cloud", storage=[("default", "raw")])
    add_storage(root, "fast", "raw", devices)
    return {"path": str(root)}


def export_info(*sizes: int, name: str = "vm") -> JSON:
    return {"name": name, "num_cpu": 1, "memory_mb": 256, "os_type": "linux",
            "firmware_type": "BIOS",
            "devices": {"disks": [{"id": f"disk{i}", "size_bytes": s, "format": "raw"}
                                  for i, s in enumerate(sizes)], "nics": []}}


ENV = {"storage_backend": "fast"}


def claims(conn: JSON) -> list[str]:
    folder = Path(conn["path"]) / "storage" / "fast" / "claims"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_volumes_claim_the_smallest_fitting_free_device_zeroed(
        tmp_path: Path, devs: Devices) -> None:
    small, large = devs.make(4 * MiB), devs.make(8 * MiB)
    conn = make_cloud(tmp_path, [large, small])
    provider = LocalProvider()
    info = export_info(3 * MiB)
    provider.validate_destination_inputs(conn, ENV, info)
    volumes = provider.create_disks(conn, ENV, info, [], transfer_id="t1")
    (volume,) = volumes
    assert volume["path"] == small and volume["block_device"] is True
    assert volume["volume_id"].startswith("vm-disk0-")
    assert volume["state_base"].startswith(str(Path(conn["path"]) / "storage" / "fast"))
    assert devs.read(small) == bytes(4 * MiB)  # zeroed: the copy may take it as blank
    assert devs.read(large) == b"\xa5" * 8 * MiB  # untouched
    # A re-run after a crash (its volumes_info lost) finds its own claim.
    again = provider.create_disks(conn, ENV, info, [], transfer_id="t1")
    assert again == volumes
    # Another transfer gets the other device; a third finds none free.
    other = provider.create_disks(conn, ENV, export_info(3 * MiB, name="vm2"), [],
                                  transfer_id="t2")
    assert other[0]["path"] == large
    with pytest.raises(exceptions.InvalidInput,
                       match="storage backend 'fast' has no free block device"):
        provider.create_disks(conn, ENV, export_info(MiB, name="vm3"), [], transfer_id="t3")
    assert len(claims(conn)) == 2
    # Deleting releases the claim and zeroes the device; done twice is done.
    with open(small, "r+b") as f:
        f.write(b"guest data")
    provider.delete_disks(conn, ENV, volumes)
    provider.delete_disks(conn, ENV, volumes)
    assert devs.read(small) == bytes(4 * MiB)
    assert len(claims(conn)) == 1
    provider.delete_disks(conn, ENV, other)
    assert claims(conn) == []
    # A volume whose claim is gone gets no target location (its device may be another's).
    with pytest.raises(exceptions.ProviderError,
                       match=f"disk disk0 is missing \\(block device {small} is no longer"):
        provider.deploy_target_resources(conn, ENV, info, volumes)
    # A device released is claimed again.
    assert provider.create_disks(conn, ENV, info, [], transfer_id="t4")[0]["path"] == small


def test_a_failed_create_releases_what_it_claimed(tmp_path: Path, devs: Devices) -> None:
    device = devs.make(4 * MiB)
    conn = make_cloud(tmp_path, [device])
    with pytest.raises(exceptions.InvalidInput, match="no free block device of at least"):
        LocalProvider().create_disks(conn, ENV, export_info(MiB, 2 * MiB), [],
                                     transfer_id="t1")
    assert claims(conn) == []


def test_a_device_too_small_is_refused_naming_it(tmp_path: Path, devs: Devices) -> None:
    device = devs.make(2 * MiB)
    conn = make_cloud(tmp_path, [device])
    provider = LocalProvider()
    with pytest.raises(exceptions.InvalidInput,
                       match=f"'fast' has no block device of at least {3 * MiB} bytes for "
                             f"disk disk0 .*{device} \\({2 * MiB} bytes\\)"):
        provider.validate_destination_inputs(conn, ENV, export_info(3 * MiB))
    with pytest.raises(exceptions.InvalidInput, match=f"{device} \\({2 * MiB} bytes\\)"):
        provider.create_disks(conn, ENV, export_info(3 * MiB), [], transfer_id="t1")
    assert claims(conn) == []
    assert devs.read(device) == b"\xa5" * 2 * MiB


def test_a_read_only_device_is_refused_naming_it(tmp_path: Path, devs: Devices) -> None:
    writable = devs.make(4 * MiB)
    conn = make_cloud(tmp_path, [writable])
    read_only = devs.make(4 * MiB, read_only=True)
    with pytest.raises(ValueError, match=f"{read_only} is read-only"):
        add_storage(conn["path"], "slow", "raw", [read_only])
    # Listed by hand in cloud.json: refused when used.
    config = json.loads((Path(conn["path"]) / "cloud.json").read_text())
    config["storage"][1]["block_devices"] = [read_only]
    (Path(conn["path"]) / "cloud.json").write_text(json.dumps(config))
    provider = LocalProvider()
    with pytest.raises(exceptions.InvalidInput,
                       match=f"storage backend 'fast': block device {read_only} is read-only"):
        provider.validate_destination_inputs(conn, ENV, export_info(MiB))
    with pytest.raises(exceptions.InvalidInput, match=f"{read_only} is read-only"):
        provider.create_disks(conn, ENV, export_info(MiB), [], transfer_id="t1")
    assert claims(conn) == []
    assert devs.read(read_only) == b"\xa5" * 4 * MiB


def test_a_device_or_file_that_is_not_listed_is_refused(tmp_path: Path,
                                                        devs: Devices) -> None:
    listed, unlisted = devs.make(4 * MiB), devs.make(4 * MiB)
    conn = make_cloud(tmp_path, [listed])
    with pytest.raises(ValueError, match="is not a block device"):
        add_storage(conn["path"], "other", "raw", [str(tmp_path / "devices" / "dev0.img")])
    with pytest.raises(ValueError, match=f"{listed} is listed by storage backend 'fast'"):
        add_storage(conn["path"], "other", "raw", [listed])
    cloud = LocalCloud(conn)
    add_instance(conn["path"], "vm", disk_size="1M", seed=1)
    folder = cloud.instance_dir("vm")
    desc = json.loads((folder / "instance.json").read_text())
    for device in (unlisted, "/etc/passwd"):
        desc["disks"][0]["file"] = device
        (folder / "instance.json").write_text(json.dumps(desc))
        with pytest.raises(exceptions.InvalidInput,
                           match=f"instance 'vm': disk file {device} leads out"):
            cloud.load_instance("vm")
    desc["disks"][0]["file"] = listed
    (folder / "instance.json").write_text(json.dumps(desc))
    assert cloud.load_instance("vm")["disks"][0]["file"] == listed
    got = LocalProvider().get_instance(conn, {}, "vm")["devices"]["disks"][0]
    assert (got["size_bytes"], got["storage_backend"]) == (4 * MiB, "fast")


def test_replica_side_files_live_in_the_storage_folder_and_roll_back(
        tmp_path: Path, devs: Devices) -> None:
    device = devs.make(4 * MiB)
    conn = make_cloud(tmp_path, [device])
    provider = LocalProvider()
    volumes = provider.create_disks(conn, ENV, export_info(4 * MiB), [], transfer_id="t1")
    storage = Path(conn["path"]) / "storage" / "fast"
    # An execution's journal: its writes are undone by a roll-back.
    taken = provider.snapshot_disks(conn, ENV, volumes, "exec1")["volumes_info"]
    journal = replica_disks.journal_of(taken[0])
    assert journal is not None and Path(journal).parent == storage / "claims"
    writer = JournalingWriter(RawFileWriter(device), journal)
    writer.write(MiB, b"x" * 4096)
    writer.flush()
    writer.close()
    outcome = provider.restore_disk_snapshots(conn, ENV, taken)
    assert outcome["rolled_back"] == "exec1"
    assert devs.read(device) == bytes(4 * MiB)
    # A deploy's snapshot: a copy of the device, written back by a roll-back.
    with open(device, "r+b") as f:
        f.write(b"committed")
    taken = provider.snapshot_disks(conn, ENV, volumes, "exec2", for_deploy=True)["volumes_info"]
    assert Path(taken[0]["snapshot"]).parent == storage / "claims"
    with open(device, "r+b") as f:
        f.seek(2 * MiB)
        f.write(b"written by the guest")
    provider.restore_disk_snapshots(conn, ENV, taken)
    assert devs.read(device) == b"committed" + bytes(4 * MiB - 9)
    beside = [p for p in os.listdir(os.path.dirname(device))
              if p.startswith(f"{os.path.basename(device)}.")]
    assert beside == []  # nothing beside the device
    provider.delete_disks(conn, ENV, volumes)
    assert list(storage.rglob("*")) == [storage / "claims"]


def test_an_instance_deployed_on_devices(tmp_path: Path, devs: Devices) -> None:
    device = devs.make(4 * MiB)
    conn = make_cloud(tmp_path, [device])
    provider = LocalProvider()
    info = export_info(3 * MiB)
    volumes = provider.create_disks(conn, ENV, info, [], transfer_id="t1")
    with open(device, "r+b") as f:
        f.write(b"boot sector")
    # Cloned (a replica's deploy): a sparse raw file of the backend holding the device.
    cloned = provider.deploy_instance(conn, ENV, info, volumes, clone_disks=True,
                                      transfer_id="d1")
    (clone,) = cloned["cloned_disks"]
    assert Path(clone).parent == Path(conn["path"]) / "storage" / "fast"
    assert Path(clone).read_bytes() == devs.read(device)
    provider.cleanup_failed_instance(conn, ENV, cloned)
    assert not os.path.exists(clone)
    # On the device itself: the definition names it, OS morphing gets it.
    deployed = provider.deploy_instance(conn, ENV, info, volumes, transfer_id="d2")
    assert deployed["disks"] == [device]
    morph = provider.deploy_os_morphing_resources(conn, ENV, deployed)
    assert morph["disks"][0]["path"] == device
    provider.finalize_instance(conn, ENV, deployed)
    desc = LocalCloud(conn).load_instance("vm")
    assert desc["disks"][0]["file"] == device


def test_add_storage_command(tmp_path: Path, devs: Devices) -> None:
    device = devs.make(4 * MiB)
    root = init_cloud(tmp_path / "cloud")
    run = [sys.executable, "-m", "coriolis.cmd.local_cloud"]
    proc = subprocess.run([*run, "add-storage", str(root), "fast", "--block-device", device],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    backends = LocalCloud({"path": str(root)}).storage_backends()
    assert [(b.name, b.block_devices) for b in backends] == [("default", ()),
                                                              ("fast", (device,))]
    proc = subprocess.run([*run, "add-storage", str(root), "fast2", "--block-device",
                           "/dev/null"], capture_output=True, text=True)
    assert proc.returncode != 0 and "/dev/null is not a block device" in proc.stderr
