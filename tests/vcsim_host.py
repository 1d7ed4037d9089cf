"""A vcsim (govmomi's vCenter simulator, built by ``coriolis.vcsim``) per test session, and
helpers that make VMs with real disk content in it: the VM is created through the API, its
disk descriptor and flat extent are PUT through the datastore HTTP interface (``/folder``),
since vcsim's own disk files are empty placeholders (../shared/reference/platform-backends.md).
"""

from __future__ import annotations

import contextlib
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from pyVmomi import vim

from coriolis import vcsim
from coriolis.providers.vmware_vsphere import connection as conn
from coriolis.providers.vmware_vsphere import inventory
from coriolis.providers.vmware_vsphere.source import snapshot_trees

DATACENTER = "DC0"
DATASTORE = "LocalDS_0"
PORTGROUP = "DC0_DVPG0"

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


@pytest.fixture(scope="session")
def vcsim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vcsim.Vcsim]:
    try:
        server = vcsim.start(tmp_path_factory.mktemp("vcsim"))
    except vcsim.VcsimUnavailable as exc:
        pytest.fail(f"{exc} (./dev setup installs golang-go golang-github-vmware-govmomi-dev)")
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def session(server: vcsim.Vcsim) -> Iterator[Any]:
    with conn.connect(server.connection_info()) as si:
        yield si


def descriptor(flat_name: str, size: int) -> bytes:
    """A monolithic-flat VMDK descriptor (as ESXi writes for a ``vmfs`` disk)."""
    return (f'# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
            f'createType="vmfs"\n\n# Extent description\nRW {size // 512} VMFS "{flat_name}"\n'
            f'\n# The Disk Data Base\nddb.adapterType = "lsilogic"\n'
            f'ddb.virtualHWVersion = "13"\n').encode()


def put(server: vcsim.Vcsim, si: Any, path: str, data: bytes | Path,
        datastore: str = DATASTORE) -> None:
    url = (f"https://{server.host}:{server.port}/folder/{urllib.parse.quote(path)}?"
           f"dcPath={DATACENTER}&dsName={datastore}")
    http = requests.Session()
    http.trust_env = False
    body = data.open("rb") if isinstance(data, Path) else data
    try:
        response = http.put(url, data=body, verify=False,
                            headers={"Cookie": conn.session_cookie(si)})
    finally:
        if not isinstance(body, bytes):
            body.close()
    response.raise_for_status()


def write_disk(server: vcsim.Vcsim, si: Any, vm_name: str, disk_index: int,
               data: bytes | Path) -> None:
    """Make the VM's disk ``disk_index`` a flat VMDK holding ``data`` (a descriptor and its
    ``-flat`` extent, PUT over ``/folder``)."""
    vm = inventory.find_vm(si, vm_name)
    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    _, path = conn.split_datastore_path(disks[disk_index].backing.fileName)
    size = disks[disk_index].capacityInKB * 1024
    flat = path[:-5] + "-flat.vmdk"
    put(server, si, flat, data)
    put(server, si, path, descriptor(flat.rsplit("/", 1)[-1], size))


def create_vm(si: Any, name: str, disk_sizes: list[int], *, folder: str | None = None,
              network: str = PORTGROUP, guest_id: str = "debian11_64Guest",
              firmware: str = "bios", sata: bool = False, mac: str | None = None) -> Any:
    """A powered-off VM in DC0 (in ``folder`` under DC0/vm when given): a PVSCSI controller
    (or SATA) with one disk per size, a vmxnet3 NIC on ``network`` (a DV portgroup)."""
    dc = next(d for d in inventory.objects(si, vim.Datacenter) if d.name == DATACENTER)
    parent = dc.vmFolder
    if folder:
        parent = next((f for f in parent.childEntity
                       if isinstance(f, vim.Folder) and f.name == folder), None) \
            or parent.CreateFolder(folder)
    directory = f"{folder}-{name}" if folder else name  # two folders may hold one name
    host = next(h for h in inventory.objects(si, vim.HostSystem) if h.name == "DC0_H0")
    pool = host.parent.resourcePool
    spec = vim.vm.device.VirtualDeviceSpec
    ctl: Any = vim.vm.device.VirtualAHCIController() if sata \
        else vim.vm.device.ParaVirtualSCSIController(sharedBus="noSharing")
    ctl.key, ctl.busNumber = 1000, 0
    changes = [spec(operation="add", device=ctl)]
    for unit, size in enumerate(disk_sizes):
        disk = vim.vm.device.VirtualDisk(
            key=-(unit + 10), controllerKey=1000, unitNumber=unit, capacityInKB=size // 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                diskMode="persistent", thinProvisioned=False,
                fileName=f"[{DATASTORE}] {directory}/{name}_{unit}.vmdk"))
        changes.append(spec(operation="add", fileOperation="create", device=disk))
    pg = next(p for p in inventory.objects(si, vim.dvs.DistributedVirtualPortgroup)
              if p.name == network)
    nic = vim.vm.device.VirtualVmxnet3(
        key=-1, addressType="manual" if mac else "generated", macAddress=mac,
        backing=vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(
                portgroupKey=pg.key, switchUuid=pg.config.distributedVirtualSwitch.uuid)))
    changes.append(spec(operation="add", device=nic))
    config = vim.vm.ConfigSpec(
        name=name, guestId=guest_id, numCPUs=2, memoryMB=1024, firmware=firmware,
        files=vim.vm.FileInfo(vmPathName=f"[{DATASTORE}] {directory}"), deviceChange=changes)
    conn.wait_task(si, parent.CreateVM_Task(config=config, pool=pool, host=host),
                   f"creating VM {name}")
    return inventory.find_vm(si, f"{DATACENTER}/vm/{folder}/{name}" if folder else name)


def destroy_vm(si: Any, vm: Any) -> None:
    with contextlib.suppress(Exception):
        if vm.runtime.powerState != "poweredOff":
            conn.wait_task(si, vm.PowerOffVM_Task(), "power off")
    with contextlib.suppress(Exception):
        conn.wait_task(si, vm.Destroy_Task(), "destroy")


def snapshot_names(si: Any, vm: Any) -> list[str]:
    return sorted(tree.name for tree in snapshot_trees(si, vm))


def qemu(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def vmdk_write(image: Path, *writes: tuple[int, int, int]) -> None:
    """Pattern writes ``(byte, offset, length)`` into a VMDK through qemu-io."""
    qemu("qemu-io", "-f", "vmdk", *(a for b, o, n in writes
                                    for a in ("-c", f"write -P {b} {o} {n}")), str(image))


def vmdk_raw(image: Path, out: Path) -> bytes:
    """Every byte of a VMDK (its chain included) as qemu reads it locally."""
    qemu("qemu-img", "convert", "-f", "vmdk", "-O", "raw", str(image), str(out))
    return out.read_bytes()


def delta_chain(folder: Path, disk: str, size: int, base_writes: list[tuple[int, int, int]],
                child_writes: list[tuple[int, int, int]]) -> list[Path]:
    """The ESXi shape of a disk under a user snapshot, made by qemu-img: ``<disk>.vmdk``, a
    text descriptor with ``parentFileNameHint="<disk>-base.vmdk"`` and its own sparse extent
    ``<disk>-s001.vmdk``, over the parent descriptor and extent (twoGbMaxExtentSparse; no
    packaged tool writes vmfsSparse or seSparse). The files, the top descriptor first."""
    base, child = folder / f"{disk}-base.vmdk", folder / f"{disk}.vmdk"
    qemu("qemu-img", "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
         str(base), str(size))
    vmdk_write(base, *base_writes)
    qemu("qemu-img", "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
         "-b", base.name, "-F", "vmdk", str(child))
    vmdk_write(child, *child_writes)
    return [child, folder / f"{disk}-s001.vmdk", base, folder / f"{disk}-base-s001.vmdk"]
