"""Sparse and snapshot-delta VMDKs read from a real vcsim's ``/folder`` by qemu's vmdk
driver over nbdkit curl mounts: bit-identical to what qemu reads from the same files
locally, only allocated grains fetched, and the chain's bad cases named.

vcsim writes no sparse disks and its snapshots make no delta files, so each test builds the
VMDK files with ``qemu-img create -f vmdk`` (monolithicSparse, streamOptimized, a
twoGbMaxExtentSparse delta over a parent: the descriptor + extent + parentFileNameHint
shape of an ESXi snapshot delta) and PUTs them as the VM's disk through ``/folder``.
``vmfsSparse`` (COWD) and ``seSparse`` extents go through the same qemu driver, but no
packaged tool writes them, so no test here holds one."""

from __future__ import annotations

from pathlib import Path

import pytest

from coriolis import exceptions, vcsim
from coriolis.providers.vmware_vsphere import connection as conn
from coriolis.providers.vmware_vsphere import inventory
from coriolis.providers.vmware_vsphere.provider import VSphereProvider
from coriolis.transfer.locations import PlatformLocation, from_json
from tests.vcsim_host import (
    create_vm,
    delta_chain,
    put,
    qemu,
    session,
    snapshot_names,
    vcsim_server,
    vmdk_raw,
    vmdk_write,
)

MiB = 1024 * 1024
SIZE = 64 * MiB
__all__ = ["vcsim_server"]


def within_rounding(size: int) -> int:
    """``size`` plus what nbdkit's stats filter may add by printing 3 significant digits."""
    return int(size * 1.005) + 1


def export_all(server: vcsim.Vcsim, name: str, files: list[Path],
               snapshot_first: bool = False, tls: dict | None = None
               ) -> tuple[bytes, int, int, dict]:
    """A VM ``name`` whose disk 0 is ``files[0]`` (the other files beside it), exported
    (with ``tls`` in the connection info): (every byte its reader reads, the bytes of its
    data extents, bytes fetched over HTTP, the location's params). The transfer's snapshot
    is gone afterwards."""
    provider, ci = VSphereProvider(), server.connection_info(**(tls or {}))
    with session(server) as si:
        vm = create_vm(si, name, [SIZE])
        for file in files:
            put(server, si, f"{name}/{file.name}", file)
        if snapshot_first:
            conn.wait_task(si, vm.CreateSnapshot_Task(name="mine", description="",
                                                      memory=False, quiesce=False), "snap")
    info = provider.get_instance(ci, {}, name)
    resources = provider.deploy_source_resources(ci, {}, info, transfer_id=f"t-{name}")
    try:
        location = from_json(resources["disks"]["scsi0-0"])
        assert isinstance(location, PlatformLocation)
        reader = provider.open_platform_reader(ci, {}, location)
        try:
            data = bytearray(SIZE)
            allocated = 0
            for extent in reader.extents():
                if not extent.zero:
                    allocated += extent.length
                    data[extent.offset:extent.end] = reader.read(extent.offset, extent.length)
        finally:
            reader.close()
        return bytes(data), allocated, reader.bytes_fetched, location.params
    finally:
        provider.delete_source_resources(ci, {}, {**resources, "export_info": info,
                                                  "transfer_id": f"t-{name}"})
        with session(server) as si:
            assert [s for s in snapshot_names(si, inventory.find_vm(si, name))
                    if s.startswith("coriolis")] == []


@pytest.mark.parametrize("subformat, tls", [
    ("monolithicSparse", "allow_untrusted"),
    ("streamOptimized", "allow_untrusted"),
    # nbdkit curl checks vcsim's certificate against the endpoint's CA bundle (cainfo)
    ("monolithicSparse", "ca_bundle"),
])
def test_sparse_disk_reads_bit_identical_fetching_only_its_grains(
        vcsim_server: vcsim.Vcsim, made: list, tmp_path: Path, subformat: str,
        tls: str) -> None:
    name = f"vs-{subformat.lower()[:8]}-{tls[:2]}"
    image = tmp_path / f"{name}_0.vmdk"
    scratch = tmp_path / "src.vmdk"
    qemu("qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicSparse",
         str(scratch), str(SIZE))
    vmdk_write(scratch, (0x11, 0, MiB), (0x22, 20 * MiB, 64 * 1024), (0x33, SIZE - 4096, 4096))
    qemu("qemu-img", "convert", "-f", "vmdk", "-O", "vmdk", "-o", f"subformat={subformat}",
         str(scratch), str(image))
    expected = vmdk_raw(image, tmp_path / "expected.raw")
    strict = {"allow_untrusted": False, "ca_bundle": vcsim_server.cert_file.read_text()}
    data, allocated, fetched, params = export_all(
        vcsim_server, name, [image], tls=strict if tls == "ca_bundle" else None)
    with session(vcsim_server) as si:
        made.append(inventory.find_vm(si, name))
    assert params["layout"] == "vmdk" and "path" not in params
    assert data == expected
    # the grains written (64 KiB grains: 1 MiB + 64 KiB + 64 KiB), not the 64 MiB disk
    assert allocated <= MiB + 2 * 64 * 1024
    # what crossed HTTP: each byte of the VMDK file once (its grains, header and tables;
    # nbdkit's stats round to 3 digits), never the whole 64 MiB disk
    assert 0 < fetched <= within_rounding(image.stat().st_size), (fetched, image.stat().st_size)


def test_delta_chain_under_a_user_snapshot_reads_through_its_parent(
        vcsim_server: vcsim.Vcsim, made: list, tmp_path: Path) -> None:
    """The ESXi shape of a disk under a user snapshot: a text descriptor with a
    parentFileNameHint and its own sparse extent, over a parent descriptor and extent. The
    export reads the child's grains over the parent's, and the user's snapshot stays."""
    name = "vs-chain"
    files = delta_chain(tmp_path, f"{name}_0", SIZE, [(0x41, 0, 2 * MiB), (0x42, 30 * MiB, MiB)],
                        [(0x43, MiB, 128 * 1024), (0x44, 40 * MiB, 64 * 1024)])
    expected = vmdk_raw(files[0], tmp_path / "expected.raw")
    data, allocated, fetched, params = export_all(vcsim_server, name, files,
                                                  snapshot_first=True)
    with session(vcsim_server) as si:
        vm = inventory.find_vm(si, name)
        made.append(vm)
        assert snapshot_names(si, vm) == ["mine"]
    assert data == expected
    assert sorted(params["chain"]["text"]) == [f"{name}/{name}_0-base.vmdk",
                                               f"{name}/{name}_0.vmdk"]
    assert allocated <= 3 * MiB + 64 * 1024 + 128 * 1024
    assert 0 < fetched <= within_rounding(sum(f.stat().st_size for f in files))


def deploy_error(server: vcsim.Vcsim, made: list, name: str, files: dict[str, bytes]) -> str:
    provider, ci = VSphereProvider(), server.connection_info()
    with session(server) as si:
        vm = create_vm(si, name, [MiB])
        made.append(vm)
        for file, body in files.items():
            put(server, si, f"{name}/{file}", body)
    info = provider.get_instance(ci, {}, name)
    with pytest.raises(exceptions.ProviderError) as err:
        provider.deploy_source_resources(ci, {}, info, transfer_id=f"t-{name}")
    with session(server) as si:
        assert snapshot_names(si, vm) == []
    assert f"VM '{name}': disk scsi0-0" in str(err.value)
    assert server.password not in str(err.value)
    return str(err.value)


def delta(name: str, parent: str, kind: str = "VMFSSPARSE") -> bytes:
    return (f'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=2\ncreateType="vmfsSparse"\n'
            f'parentFileNameHint="{parent}"\nRW 2048 {kind} "{name}_0-delta.vmdk"\n').encode()


@pytest.mark.parametrize("name, parent, expected", [
    # the parent a delta names is not on the datastore
    ("vs-nobase", "vs-nobase_0-base.vmdk", ["[LocalDS_0] vs-nobase/vs-nobase_0-base.vmdk",
                                            "missing"]),
    # a linked clone's parent named by an absolute /vmfs/volumes path is not followed
    ("vs-farbase", "/vmfs/volumes/other/base.vmdk", ["/vmfs/volumes/other/base.vmdk",
                                                     "outside"]),
])
def test_a_delta_whose_parent_cannot_be_read_is_named(
        vcsim_server: vcsim.Vcsim, made: list, name: str, parent: str,
        expected: list[str]) -> None:
    message = deploy_error(vcsim_server, made, name, {
        f"{name}_0.vmdk": delta(name, parent),
        f"{name}_0-delta.vmdk": b"COWD" + bytes(4092)})
    assert all(part in message for part in expected), message


def test_a_missing_sparse_extent_is_named(vcsim_server: vcsim.Vcsim, made: list) -> None:
    """The descriptor is there, its sparse extent is not: nbdkit's 404 is reported as the
    missing file, without the session cookie."""
    message = deploy_error(vcsim_server, made, "vs-noext", {
        "vs-noext_0.vmdk": b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
                           b'createType="twoGbMaxExtentSparse"\n'
                           b'RW 2048 SPARSE "vs-noext_0-s001.vmdk"\n'})
    assert "[LocalDS_0] vs-noext/vs-noext_0-s001.vmdk: missing on its datastore" in message
    assert "vmware_soap_session" not in message


def test_a_raw_device_mapping_extent_is_refused_by_name(vcsim_server: vcsim.Vcsim,
                                                        made: list) -> None:
    message = deploy_error(vcsim_server, made, "vs-rdm", {
        "vs-rdm_0.vmdk": b'# Disk DescriptorFile\nversion=1\ncreateType="vmfsRawDeviceMap"\n'
                         b'RW 2048 VMFSRDM "vs-rdm_0-rdm.vmdk"\n'})
    assert "VMFSRDM" in message
