"""The openstack provider's Cinder side against the real cloud of ``tests/openstack_cloud.py``
(Cinder's NFS driver on a bind mount: volumes are files this host opens):

- an export reads a point-in-time copy (Cinder snapshot → temporary volume) with exactly the
  volume's bytes, and ``delete_source_resources`` knowing only ``export_info`` and
  ``transfer_id`` removes the snapshot and temporary volume of two calls;
- ``create_disks`` twice for one transfer (the first result lost) leaves one volume per disk
  of the mapped volume type, ``delete_disks`` leaves nothing;
- bad input: an unknown volume type names it and the disk; a Cinder quota refusal names the
  disk and says quota, and the volumes made before it are gone; a volume that Cinder puts in
  ``error`` (its type's backend does not exist) names the disk and the volume, and it and
  the volumes made before it are gone;
- replica snapshots: the roll-back (Cinder ``revert``) restores the bytes before the writes,
  the commit keeps them, and no snapshot is left;
- a server booted from a Glance image is exported through a Glance image of the instance
  (Nova ``createImage``) and a temporary volume made from it, with exactly its disk's bytes;
  the image and the volume go, also those of a call whose result was lost; a snapshot that
  fails on the compute host is an error naming the instance and the image, leaving nothing.
  The compute is Nova's fake driver whose snapshot uploads the server's base image
  (``coriolis/openstack_fake_compute.py``): the root disk of a guest that never wrote.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis import exceptions
from coriolis.providers.openstack import volumes
from coriolis.providers.openstack.connection import connect
from coriolis.providers.openstack.provider import OpenStackProvider

pytestmark = pytest.mark.timeout(900)
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def ci(openstack_cloud: Any) -> Iterator[dict[str, Any]]:
    auth = {k: v for k, v in openstack_cloud.auth.items() if k != "identity_api_version"}
    yield {**auth, "nfs_mount_point_base": str(openstack_cloud.work / "cinder" / "mnt")}


def inventory(ci: dict[str, Any]) -> set[str]:
    with connect(ci) as conn:
        return ({f"volume {v.id}" for v in conn.block_storage.volumes()}
                | {f"snapshot {s.id}" for s in conn.block_storage.snapshots()}
                | {f"image {i.id}" for i in conn.image.images()})


def export_info(disks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "not-a-server", "name": "osprov-int", "num_cpu": 1, "memory_mb": 512,
            "devices": {"disks": disks, "nics": []}}


def read(path: str, length: int, offset: int = 0) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def write(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_export_reads_a_snapshot_copy_and_leaves_nothing(ci: dict[str, Any]) -> None:
    provider = OpenStackProvider()
    before = inventory(ci)
    with connect(ci) as conn:
        vol = volumes.create_volume(conn, ci, "test source", name="osprov-src", size=1)
        path, fmt, _ = volumes.open_file(conn, ci, vol.id, "test source")
        assert fmt == "raw"
        write(path, 3 * MiB + 5, b"source bytes" * 1000)
        volumes.close_file(conn, ci, vol.id)
    disk = {"id": vol.id, "volume_id": vol.id, "size_bytes": 1024 ** 3, "format": "raw",
            "bus": "virtio", "storage_backend": None}
    info = export_info([disk])
    try:
        first = provider.deploy_source_resources(ci, {}, info, transfer_id="t-export")
        res = provider.deploy_source_resources(ci, {}, info, transfer_id="t-export")
        assert first["volumes"] != res["volumes"]  # the first call's were replaced
        loc = res["disks"][vol.id]
        assert loc["kind"] == "path" and loc["path"] != path
        assert loc["confine"] == [os.path.dirname(loc["path"])]
        write(path, 3 * MiB + 5, b"later writes" * 1000)  # after the snapshot
        assert read(loc["path"], 12000, 3 * MiB + 5) == b"source bytes" * 1000
        assert len(inventory(ci) - before) == 3  # source volume, snapshot, temporary volume
        for _ in range(2):
            provider.delete_source_resources(ci, {}, {"export_info": info,
                                                      "transfer_id": "t-export"})
        assert inventory(ci) - before == {f"volume {vol.id}"}
    finally:
        with connect(ci) as conn:
            volumes.delete_volume(conn, ci, vol.id)
    assert inventory(ci) == before


def test_create_disks_twice_then_delete(ci: dict[str, Any], openstack_cloud: Any) -> None:
    provider = OpenStackProvider()
    before = inventory(ci)
    info = export_info([{"id": f"d{i}", "size_bytes": 5 * MiB, "storage_backend": "fast"}
                        for i in range(2)])
    env = {"storage_mappings": {"backend_mappings": [
        {"source": "fast", "destination": openstack_cloud.volume_type_other}]}}
    provider.create_disks(ci, env, info, [], transfer_id="t-disks")
    made = provider.create_disks(ci, env, info, [], transfer_id="t-disks")
    assert [v["disk_id"] for v in made] == ["d0", "d1"]
    assert {v["storage_backend"] for v in made} == {openstack_cloud.volume_type_other}
    assert len(inventory(ci) - before) == 2  # the first call's volumes were replaced
    again = provider.create_disks(ci, env, info, made, transfer_id="t-disks")
    assert again == made
    target = provider.deploy_target_resources(ci, env, info, made, transfer_id="t-disks")
    for volume in made:
        loc = target["disks"][volume["disk_id"]]
        assert os.path.getsize(loc["path"]) == volume["size_bytes"] == 1024 ** 3
    provider.delete_target_resources(ci, env, target)
    provider.delete_target_resources(ci, env, {})
    provider.delete_disks(ci, env, made)
    provider.delete_disks(ci, env, made)
    assert inventory(ci) == before


def test_unknown_volume_type_and_quota(ci: dict[str, Any]) -> None:
    provider = OpenStackProvider()
    before = inventory(ci)
    info = export_info([{"id": f"d{i}", "size_bytes": 5 * MiB} for i in range(3)])
    with pytest.raises(exceptions.InvalidInput) as err:
        provider.create_disks(ci, {"volume_type": "no-such-type"}, info, [])
    assert "unknown volume type 'no-such-type' for disk d0" in str(err.value)
    with connect(ci) as conn:
        project = conn.session.get_project_id()
        used = sum(v.size for v in conn.block_storage.volumes())
        old = conn.block_storage.get_quota_set(project).gigabytes
        conn.block_storage.update_quota_set(project, gigabytes=used + 2)
    try:
        with pytest.raises(exceptions.InvalidInput) as err:
            provider.create_disks(ci, {}, info, [], transfer_id="t-quota")
        assert "disk d2" in str(err.value) and "quota" in str(err.value).lower()
        assert ci["password"] not in str(err.value)
    finally:
        with connect(ci) as conn:
            conn.block_storage.update_quota_set(project, gigabytes=old)
    assert inventory(ci) == before


def test_volume_in_error_names_it_and_leaves_nothing(ci: dict[str, Any]) -> None:
    provider = OpenStackProvider()
    with connect(ci) as conn:  # no backend serves this type: the scheduler fails its volumes
        broken = conn.block_storage.create_type(
            name="osprov-broken", extra_specs={"volume_backend_name": "no-such-backend"})
    try:
        before = inventory(ci)
        info = export_info([{"id": "ok", "size_bytes": MiB, "storage_backend": "good"},
                            {"id": "bad", "size_bytes": MiB, "storage_backend": "gone"}])
        env = {"storage_mappings": {"backend_mappings": [
            {"source": "gone", "destination": "osprov-broken"}]}}
        with pytest.raises(exceptions.ProviderError) as err:
            provider.create_disks(ci, env, info, [], transfer_id="t-error")
        text = str(err.value)
        assert re.search(r"disk bad of instance 'osprov-int': Cinder volume [0-9a-f-]{36} "
                         r"went to status 'error'", text), text
        assert inventory(ci) == before
    finally:
        with connect(ci) as conn:
            conn.block_storage.delete_type(broken)


def test_replica_snapshot_roll_back_and_commit(ci: dict[str, Any], tmp_path: Path) -> None:
    provider = OpenStackProvider()
    before = inventory(ci)
    info = export_info([{"id": "r0", "size_bytes": 5 * MiB}])
    made = provider.create_disks(ci, {}, info, [], transfer_id="t-rep")
    try:
        def write_through_target(data: bytes) -> None:
            target = provider.deploy_target_resources(ci, {}, info, vols)
            loc = target["disks"]["r0"]
            if loc["format"] == "raw":
                write(loc["path"], MiB, data)
            else:  # a qcow2 overlay on the snapshot: write through qemu-io
                import subprocess
                pattern = data[0]
                subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                                f"write -P {pattern} {MiB} {len(data)}", loc["path"]],
                               check=True, capture_output=True)
            provider.delete_target_resources(ci, {}, target)

        def content() -> bytes:
            with connect(ci) as conn:
                p, fmt, _ = volumes.open_file(conn, ci, vols[0]["volume_id"], "check")
                volumes.close_file(conn, ci, vols[0]["volume_id"])
            if fmt == "raw":
                return read(p, 4096, MiB)
            import subprocess
            flat = tmp_path / "flat.raw"
            subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", p,
                            str(flat)], check=True, capture_output=True)
            return read(str(flat), 4096, MiB)

        vols = made
        outcome = provider.snapshot_disks(ci, {}, vols, "exec-1")
        vols = outcome["volumes_info"]
        assert vols[0]["snapshot_id"] == "exec-1" and vols[0]["snapshot"]
        write_through_target(b"\x11" * 4096)
        assert content() == b"\x11" * 4096
        rolled = provider.restore_disk_snapshots(ci, {}, vols)
        assert rolled["rolled_back"] == "exec-1"
        assert content() == b"\0" * 4096

        outcome = provider.snapshot_disks(ci, {}, rolled["volumes_info"], "exec-2")
        vols = outcome["volumes_info"]
        write_through_target(b"\x22" * 4096)
        committed = provider.delete_disk_snapshots(ci, {}, vols)
        assert committed["committed"] == "exec-2" and committed["rolled_back"] is None
        again = provider.restore_disk_snapshots(ci, {}, committed["volumes_info"])
        assert again["rolled_back"] is None
        assert content() == b"\x22" * 4096
        with connect(ci) as conn:
            assert list(conn.block_storage.snapshots(volume_id=made[0]["volume_id"])) == []
    finally:
        provider.delete_disks(ci, {}, made)
    assert inventory(ci) == before


def _image_server(openstack_cloud: Any, name: str, content: bytes) -> tuple[Any, Any]:
    """(server, base image): an ACTIVE server booted from a new raw image of ``content``."""
    conn = openstack_cloud.connect()
    base = conn.image.create_image(name=f"{name}-base", disk_format="raw",
                                   container_format="bare", data=content)
    server = conn.compute.create_server(
        name=name, image_id=base.id, flavor_id=openstack_cloud.flavors["m1.tiny"],
        networks=[{"uuid": openstack_cloud.network_id}])
    return conn.compute.wait_for_server(server, status="ACTIVE", wait=300), base


def _remove_server(openstack_cloud: Any, server: Any, base: Any) -> None:
    conn = openstack_cloud.connect()
    conn.compute.delete_server(server, ignore_missing=True)
    conn.compute.wait_for_delete(server, wait=300)
    conn.image.delete_image(base, ignore_missing=True)


def test_image_backed_server_through_a_glance_image(ci: dict[str, Any],
                                                    openstack_cloud: Any) -> None:
    provider = OpenStackProvider()
    content = bytearray(3 * MiB)
    content[:4096] = b"boot" * 1024
    content[2 * MiB + 7:2 * MiB + 7 + 1000] = b"\x5a" * 1000
    server, base = _image_server(openstack_cloud, "osprov-img", bytes(content))
    try:
        info = provider.get_instance(ci, {}, "osprov-img")
        [disk] = info["devices"]["disks"]
        assert (disk["id"], disk["image_id"], disk["size_bytes"]) == ("image", base.id,
                                                                      1024 ** 3)
        provider.validate_source_inputs(ci, {}, "osprov-img")
        before = inventory(ci)
        first = provider.deploy_source_resources(ci, {}, info, transfer_id="t-img")
        res = provider.deploy_source_resources(ci, {}, info, transfer_id="t-img")
        assert first["images"]["image"] != res["images"]["image"]  # the first one replaced
        added = inventory(ci) - before
        assert added == {f"image {res['images']['image']}",
                         f"volume {res['volumes']['image']}"}
        with connect(ci) as conn:
            image = conn.image.get_image(res["images"]["image"])
            assert image.name.startswith("coriolis-export-") and image.status == "active"
        loc = res["disks"]["image"]
        assert loc["kind"] == "path" and os.path.getsize(loc["path"]) == 1024 ** 3
        assert read(loc["path"], len(content)) == bytes(content)
        assert read(loc["path"], MiB, 512 * MiB) == bytes(MiB)
        provider.delete_source_resources(ci, {}, {"export_info": info,
                                                  "transfer_id": "t-img"})
        assert inventory(ci) == before
    finally:
        _remove_server(openstack_cloud, server, base)


def test_image_backed_server_whose_snapshot_fails(ci: dict[str, Any],
                                                  openstack_cloud: Any) -> None:
    """The compute host cannot make the snapshot (here: the base image it reads is gone; Nova
    takes that for a deleted snapshot and ends the task, the image staying ``queued``): the
    error, once Nova has finished, names the instance and the image; nothing stays."""
    provider = OpenStackProvider()
    server, base = _image_server(openstack_cloud, "osprov-imgfail", b"\x01" * MiB)
    try:
        info = provider.get_instance(ci, {}, "osprov-imgfail")
        with connect(ci) as conn:
            conn.image.delete_image(base)
        before = inventory(ci)
        with pytest.raises(exceptions.ProviderError) as err:
            provider.deploy_source_resources(ci, {}, info, transfer_id="t-imgfail")
        assert "instance 'osprov-imgfail'" in str(err.value)
        assert "Glance image" in str(err.value)
        assert "the compute host uploaded nothing" in str(err.value), str(err.value)
        assert inventory(ci) == before
    finally:
        _remove_server(openstack_cloud, server, base)
