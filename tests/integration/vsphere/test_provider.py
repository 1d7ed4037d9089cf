"""The vmware_vsphere provider's calls against a real vcsim: listings with placement and
devices, the VMware guest profile, a VM name in two folders, the transfer snapshot (made,
user snapshots untouched, removed also when the VM vanished mid-transfer), and the CBT path
(vcsim has no QueryChangedDiskAreas: that one call is faked, and the test says so)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from coriolis import exceptions, vcsim
from coriolis.providers.vmware_vsphere import connection as conn
from coriolis.providers.vmware_vsphere import inventory
from coriolis.providers.vmware_vsphere.provider import VSphereProvider
from coriolis.providers.vmware_vsphere.source import SNAPSHOT_PREFIX
from coriolis.transfer.base import Extent
from coriolis.transfer.locations import PlatformLocation, from_json
from tests.vcsim_host import (
    create_vm,
    destroy_vm,
    session,
    snapshot_names,
    vcsim_server,
    write_disk,
)

MiB = 1024 * 1024
__all__ = ["vcsim_server"]


def test_listing_describes_a_vmware_guest(vcsim_server: vcsim.Vcsim, made: list) -> None:
    with session(vcsim_server) as si:
        made.append(create_vm(si, "vs-list", [2 * MiB, 4 * MiB], folder="vs-apps",
                              firmware="efi"))
    provider, ci = VSphereProvider(), vcsim_server.connection_info()
    info = provider.get_instance(ci, {}, "vs-list")
    assert (info["datacenter"], info["folder"], info["path"], info["host"]) == \
        ("DC0", "DC0/vm/vs-apps", "DC0/vm/vs-apps/vs-list", "DC0_H0")
    assert (info["num_cpu"], info["memory_mb"], info["firmware_type"], info["guest_id"],
            info["os_type"], info["power_state"]) == \
        (2, 1024, "EFI", "debian11_64Guest", "linux", "poweredOff")
    disks = info["devices"]["disks"]
    assert [(d["id"], d["size_bytes"], d["bus"], d["controller"], d["datastore_path"])
            for d in disks] == [
        ("scsi0-0", 2 * MiB, "scsi", "pvscsi", "[LocalDS_0] vs-apps-vs-list/vs-list_0.vmdk"),
        ("scsi0-1", 4 * MiB, "scsi", "pvscsi", "[LocalDS_0] vs-apps-vs-list/vs-list_1.vmdk")]
    assert {d["provisioning"] for d in disks} == {"thick-lazy"}
    nic = info["devices"]["nics"][0]
    assert (nic["adapter_type"], nic["network_name"]) == ("vmxnet3", "DC0_DVPG0")
    assert nic["mac_address"]
    seeded = provider.get_instance(ci, {}, "DC0_C0_RP0_VM0")
    assert seeded["cluster"] == "DC0_C0"
    options = {o["name"]: o["values"] for o in provider.list_source_options(ci, {}, None)}
    assert options["datacenter"] == ["DC0"] and "DC0/vm/vs-apps" in options["folder"]
    assert options["cluster"] == ["DC0/host/DC0_C0"]


def test_sata_bus_is_reported(vcsim_server: vcsim.Vcsim, made: list) -> None:
    with session(vcsim_server) as si:
        made.append(create_vm(si, "vs-sata", [MiB], sata=True))
    disk = VSphereProvider().get_instance(vcsim_server.connection_info(), {}, "vs-sata")[
        "devices"]["disks"][0]
    assert (disk["id"], disk["bus"]) == ("sata0-0", "sata")


def test_a_name_in_two_folders_is_refused_naming_both(vcsim_server: vcsim.Vcsim,
                                                      made: list) -> None:
    with session(vcsim_server) as si:
        made.append(create_vm(si, "vs-twin", [MiB], folder="vs-a"))
        made.append(create_vm(si, "vs-twin", [MiB], folder="vs-b"))
    provider, ci = VSphereProvider(), vcsim_server.connection_info()
    with pytest.raises(exceptions.InvalidInput) as err:
        provider.get_instance(ci, {}, "vs-twin")
    assert "'DC0/vm/vs-a/vs-twin'" in str(err.value) and "'DC0/vm/vs-b/vs-twin'" in str(err.value)
    assert provider.get_instance(ci, {}, "DC0/vm/vs-b/vs-twin")["folder"] == "DC0/vm/vs-b"


def test_transfer_snapshot_is_removed_and_user_snapshots_kept(vcsim_server: vcsim.Vcsim,
                                                              made: list) -> None:
    provider, ci = VSphereProvider(), vcsim_server.connection_info()
    with session(vcsim_server) as si:
        vm = create_vm(si, "vs-snap", [2 * MiB])
        made.append(vm)
        write_disk(vcsim_server, si, "vs-snap", 0, os.urandom(2 * MiB))
        conn.wait_task(si, vm.CreateSnapshot_Task(name="mine", description="", memory=False,
                                                  quiesce=False), "user snapshot")
    info = provider.get_instance(ci, {}, "vs-snap")
    first = provider.deploy_source_resources(ci, {}, info, transfer_id="t-1")
    again = provider.deploy_source_resources(ci, {}, info, transfer_id="t-1")  # a re-run
    with session(vcsim_server) as si:
        assert snapshot_names(si, vm) == ["coriolis-transfer-t-1", "mine"]
    assert first["snapshot"] != again["snapshot"]
    for _ in range(2):  # idempotent; knowing only the export info and the transfer id
        provider.delete_source_resources(ci, {}, {"export_info": info, "transfer_id": "t-1"})
    with session(vcsim_server) as si:
        assert snapshot_names(si, vm) == ["mine"]


def test_vm_deleted_mid_transfer(vcsim_server: vcsim.Vcsim, made: list) -> None:
    provider, ci = VSphereProvider(), vcsim_server.connection_info()
    with session(vcsim_server) as si:
        create_vm(si, "vs-gone", [MiB])
        write_disk(vcsim_server, si, "vs-gone", 0, os.urandom(MiB))
    info = provider.get_instance(ci, {}, "vs-gone")
    resources = provider.deploy_source_resources(ci, {}, info, transfer_id="t-gone")
    with session(vcsim_server) as si:
        destroy_vm(si, inventory.find_vm(si, "vs-gone"))
    location = from_json(resources["disks"]["scsi0-0"])
    assert isinstance(location, PlatformLocation)
    with pytest.raises(exceptions.ProviderError) as err:
        provider.open_platform_reader(ci, {}, location)
    assert "vs-gone" in str(err.value) and vcsim_server.password not in str(err.value)
    provider.delete_source_resources(ci, {}, {**resources, "export_info": info,
                                              "transfer_id": "t-gone"})
    with pytest.raises(exceptions.InstanceNotFound):
        provider.deploy_source_resources(ci, {}, info, transfer_id="t-gone-2")
    with session(vcsim_server) as si:
        assert all(not s.startswith(SNAPSHOT_PREFIX)
                   for vm in inventory.objects(si, inventory.vim.VirtualMachine)
                   for s in snapshot_names(si, vm))


@contextlib.contextmanager
def tracked_disk(server: vcsim.Vcsim, made: list, name: str, size: int,
                 fake_change_id: str) -> Iterator[PlatformLocation]:
    """A VM with ``size`` of data exported for a replica (tracking id), its disk's location
    with a FAKE change id (vcsim keeps none); the transfer's resources deleted after."""
    provider, ci = VSphereProvider(), server.connection_info()
    with session(server) as si:
        made.append(create_vm(si, name, [size]))
        write_disk(server, si, name, 0, os.urandom(size))
    info = provider.get_instance(ci, {}, name)
    resources = provider.deploy_source_resources(ci, {}, info, tracking_id=f"r-{name}",
                                                 transfer_id=f"t-{name}")
    try:
        loc = from_json(resources["disks"]["scsi0-0"])
        assert isinstance(loc, PlatformLocation)
        yield PlatformLocation(loc.platform, {**loc.params, "change_id": fake_change_id})
    finally:
        provider.delete_source_resources(ci, {}, {**resources, "export_info": info,
                                                  "transfer_id": f"t-{name}"})


def test_cbt_extents_come_from_query_changed_disk_areas(vcsim_server: vcsim.Vcsim,
                                                        made: list,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """vcsim has no QueryChangedDiskAreas (MethodNotFound) and keeps no change ids: this
    test FAKES that one call and the change id, to check that a reader asked for changes
    since an earlier change id reads exactly the areas vSphere names, and that the token in
    force reads everything. Everything else (login, snapshot, /folder reads) is vcsim's."""
    provider, ci = VSphereProvider(), vcsim_server.connection_info()
    with tracked_disk(vcsim_server, made, "vs-cbt", 4 * MiB, "52 aa/7") as loc:
        asked: list[tuple[int, str]] = []

        class Area:  # the shape of vim.VirtualMachine.DiskChangeInfo
            def __init__(self, start: int, length: int, areas: list) -> None:
                self.startOffset, self.length = start, length
                self.changedArea = [type("A", (), {"start": a, "length": n})() for a, n in areas]

        def fake_query(self: Any, snapshot: Any, deviceKey: int, startOffset: int,
                       changeId: str) -> Area:
            asked.append((startOffset, changeId))
            if startOffset == 0:
                return Area(0, 2 * MiB, [(64 * 1024, 64 * 1024)])
            return Area(2 * MiB, 2 * MiB, [(3 * MiB, 128 * 1024)])

        from pyVmomi import vim
        monkeypatch.setattr(vim.VirtualMachine, "QueryChangedDiskAreas", fake_query,
                            raising=False)
        reader = provider.open_platform_reader(ci, {}, loc)
        try:
            assert reader.change_token() == "52 aa/7"
            assert list(reader.extents(since="52 aa/3")) == [
                Extent(64 * 1024, 64 * 1024), Extent(3 * MiB, 128 * 1024)]
            assert asked == [(0, "52 aa/3"), (2 * MiB, "52 aa/3")]
            assert list(reader.extents(since="52 aa/7")) == [Extent(0, 4 * MiB)]
        finally:
            reader.close()


def test_missing_flat_extent_fails_the_deploy_and_removes_its_snapshot(
        vcsim_server: vcsim.Vcsim, made: list) -> None:
    """A disk whose flat extent was deleted behind vSphere's back (its data is nowhere): the
    deploy names it and leaves no snapshot."""
    provider, ci = VSphereProvider(), vcsim_server.connection_info()
    with session(vcsim_server) as si:
        vm = create_vm(si, "vs-nodata", [MiB])
        made.append(vm)
        dc = inventory.datacenter_of(vm)
        conn.wait_task(si, si.content.fileManager.DeleteDatastoreFile_Task(
            name="[LocalDS_0] vs-nodata/vs-nodata_0-flat.vmdk", datacenter=dc), "delete")
    info = provider.get_instance(ci, {}, "vs-nodata")
    with pytest.raises(exceptions.ProviderError) as err:
        provider.deploy_source_resources(ci, {}, info, transfer_id="t-nodata")
    assert "VM 'vs-nodata': disk scsi0-0" in str(err.value)
    assert "vs-nodata/vs-nodata_0-flat.vmdk" in str(err.value) and "missing" in str(err.value)
    assert vcsim_server.password not in str(err.value)
    with session(vcsim_server) as si:
        assert snapshot_names(si, vm) == []


def test_unknown_change_id_falls_back_to_a_full_read(vcsim_server: vcsim.Vcsim, made: list,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE, as above (vcsim has no CBT): vSphere refusing a change id (a CBT reset) makes
    the reader read the whole disk instead of failing."""
    from pyVmomi import vim, vmodl
    provider, ci = VSphereProvider(), vcsim_server.connection_info()
    with tracked_disk(vcsim_server, made, "vs-cbt-reset", 2 * MiB, "52 bb/9") as loc:
        def refuse(self: Any, **kwargs: Any) -> Any:
            raise vmodl.fault.InvalidArgument(msg="invalid changeId", invalidProperty="changeId")

        monkeypatch.setattr(vim.VirtualMachine, "QueryChangedDiskAreas", refuse, raising=False)
        reader = provider.open_platform_reader(ci, {}, loc)
        try:
            assert list(reader.extents(since="52 bb/1")) == [Extent(0, 2 * MiB)]
        finally:
            reader.close()


def test_shutdown_instance_stops_a_running_vm(vcsim_server: vcsim.Vcsim, made: list) -> None:
    """``--shutdown-instances``: a guest shutdown (VMware Tools; vcsim's guest has none
    running, so this ends in a power-off after the timeout) and a stopped VM stays so."""
    provider, ci = VSphereProvider(), vcsim_server.connection_info()
    with session(vcsim_server) as si:
        vm = create_vm(si, "vs-stop", [MiB])
        made.append(vm)
        conn.wait_task(si, vm.PowerOnVM_Task(), "power on")
    info = provider.get_instance(ci, {}, "vs-stop")
    assert info["power_state"] == "poweredOn"
    for _ in range(2):
        provider.shutdown_instance(ci, {"shutdown_timeout": 1}, info)
        assert provider.get_instance(ci, {}, "vs-stop")["power_state"] == "poweredOff"
