"""Exports from vSphere: a snapshot per transfer, the disks read through the datastore HTTP
interface, Changed Block Tracking where the VM has it.

``deploy_source_resources`` takes a snapshot named ``coriolis-transfer-<transfer id>``
(memory not included; quiesced when the source environment asks and the VM runs), so that
the disk files the snapshot froze stay as they were while they are read. A snapshot of that
name left by an interrupted call is removed first; the VM's other snapshots (the user's) are
never touched. Each disk's location is a ``platform`` location::

    {"kind": "platform", "platform": "vmware_vsphere", "vm": moref, "snapshot": moref,
     "datacenter": str, "datastore": str, "path": flat extent path in the datastore
     (or "layout": "vmdk", "chain": vmdk_chain files),
     "descriptor": datastore path of the disk, "size": int, "device_key": int,
     "change_id": str|None, "what": "VM 'x': disk scsi0-0"}

It carries no secret: ``open_platform_reader`` logs in with the endpoint's connection info
and sends the session's cookie with every ranged GET (``/folder``).

Disk layouts: a flat VMDK (``FlatVer2`` backing whose descriptor names a ``VMFS``/``FLAT``
extent, or vcsim's empty placeholder descriptor next to a ``-flat.vmdk``) is read as its
flat extent with ranged GETs. Every other layout (``monolithicSparse``, ``streamOptimized``,
split extents, a ``vmfsSparse``/``seSparse`` delta under a user snapshot, with its
``parentFileNameHint`` chain) is read by qemu's vmdk driver over nbdkit curl mounts of its
files (``vmdk_chain``); the location then says ``"layout": "vmdk", "chain": chain_files``
instead of ``"path"``.

Replicas: with ``changeTrackingEnabled`` on the VM, ``source_resources["cbt"][disk]["token"]``
is the snapshot's disk ``changeId``; a reader asked for ``extents(since=<an earlier
changeId>)`` answers ``QueryChangedDiskAreas`` on the snapshot. Without it (and on vcsim,
which has no CBT), every extent is read and the worker's block manifests send only what
changed. Enabling CBT (``ReconfigVM changeTrackingEnabled=true``) takes effect on real
vSphere only after a power cycle or a snapshot create/delete ("stun/unstun").

``delete_source_resources`` removes every snapshot of the transfer's name, also when the
transfer failed or was cancelled; a VM that is gone takes its snapshots with it.

Platform doc: ``VirtualMachine.CreateSnapshot_Task``, ``VirtualMachineSnapshot.
RemoveSnapshot_Task``, ``VirtualMachine.QueryChangedDiskAreas``, "Datastore File Access"
(``/folder``), VMDK descriptor format (VMware Virtual Disk Format 1.1).
"""

from __future__ import annotations

import logging
import posixpath
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import urllib3
from pyVmomi import vim, vmodl

from coriolis import exceptions
from coriolis.providers.base import ReplicaExportProvider
from coriolis.providers.vmware_vsphere import connection as conn
from coriolis.providers.vmware_vsphere import inventory, vmdk_chain
from coriolis.transfer.base import Data, Extent
from coriolis.transfer.http_reader import HttpRangeReader
from coriolis.transfer.locations import PlatformLocation, to_json

JSON = dict[str, Any]
log = logging.getLogger(__name__)
PLATFORM = "vmware_vsphere"
SNAPSHOT_PREFIX = "coriolis-transfer-"
DEFAULT_SHUTDOWN_TIMEOUT = 120
SOURCE_ENV_SCHEMA: JSON = {
    "$schema": conn.DRAFT, "type": "object",
    "properties": {
        "quiesce": {"type": "boolean", "default": False,
                    "description": "quiesce the guest file systems (VMware Tools) for the "
                                   "transfer's snapshot when the VM runs"},
        "shutdown_timeout": {"type": "number", "minimum": 0,
                             "default": DEFAULT_SHUTDOWN_TIMEOUT,
                             "description": "seconds to wait for a guest shutdown (VMware "
                                            "Tools) before the VM is powered off"},
    },
    "additionalProperties": False,
}
EXTENT_RE = re.compile(r'^\s*(RW|RDONLY)\s+(\d+)\s+(FLAT|VMFS)\s+"([^"]+)"[ \t]*(\d*)',
                       re.M)
CHANGED_AREAS_LIMIT = 1 << 40


def snapshot_name(transfer_id: str | None) -> str:
    return f"{SNAPSHOT_PREFIX}{transfer_id or 'adhoc'}"


def _walk(snapshots: Iterable[Any]) -> Iterator[Any]:
    for tree in snapshots or []:
        yield tree
        yield from _walk(tree.childSnapshotList)


def snapshot_trees(si: Any, vm: Any) -> list[Any]:
    """Every snapshot tree node of the VM (user snapshots included)."""
    info = conn.get_property(si, vm, "snapshot")
    return list(_walk(info.rootSnapshotList)) if info is not None else []


def transfer_snapshots(si: Any, vm: Any, transfer_id: str | None) -> list[Any]:
    """The snapshot trees of the VM named for ``transfer_id`` (never the user's)."""
    name = snapshot_name(transfer_id)
    return [tree for tree in snapshot_trees(si, vm) if tree.name == name]


def remove_transfer_snapshots(si: Any, vm: Any, transfer_id: str | None) -> int:
    removed = 0
    for tree in transfer_snapshots(si, vm, transfer_id):
        try:
            conn.wait_task(si, tree.snapshot.RemoveSnapshot_Task(removeChildren=False),
                           f"removing snapshot '{tree.name}' of VM '{vm.name}'")
        except vmodl.fault.ManagedObjectNotFound:
            continue
        removed += 1
    return removed


def _get(si: Any, connection_info: JSON, url: str, what: str, head: bool = False,
         limit: int = 1 << 20) -> bytes:
    """The first ``limit`` bytes of a datastore file (a ranged GET; nothing with ``head``,
    which only checks that it exists); ``ProviderError`` naming ``what`` when it is missing
    or unreachable."""
    pool = urllib3.PoolManager(ssl_context=conn.ssl_context(connection_info),
                               retries=False, timeout=urllib3.Timeout(connect=10, read=60))
    headers = {"Cookie": conn.session_cookie(si),
               "Range": "bytes=0-0" if head else f"bytes=0-{limit - 1}"}
    try:
        response = pool.request("GET", url, headers=headers, preload_content=False)
        if response.status == 416:  # an empty file
            return b""
        if response.status == 404:
            raise exceptions.ProviderError(f"{what} is missing on its datastore")
        if response.status >= 400:
            raise exceptions.ProviderError(f"{what}: the datastore answered HTTP "
                                           f"{response.status}")
        return response.read(limit)  # a descriptor is a few hundred bytes
    except urllib3.exceptions.HTTPError as exc:
        raise exceptions.ProviderError(f"{what}: the datastore is unreachable ({exc})") \
            from None
    finally:
        pool.clear()


def mirror_tls(connection_info: JSON) -> dict[str, str]:
    """nbdkit curl's certificate check for this endpoint: ``allow_untrusted`` and a pinned
    thumbprint (already compared when the session logged in: the curl plugin cannot pin
    one) read unverified, ``ca_bundle`` is its ``cainfo``, else the system's CAs."""
    if conn._thumbprint(connection_info) or connection_info.get("allow_untrusted"):
        return {"sslverify": "false"}
    bundle = connection_info.get("ca_bundle")
    return {"ca_bundle": str(bundle)} if bundle else {}


def new_mirror(si: Any, connection_info: JSON, datacenter: str, datastore: str,
               what: str) -> vmdk_chain.Mirror:
    return vmdk_chain.Mirror(
        datastore, lambda path: conn.folder_url(connection_info, datacenter, datastore, path),
        conn.session_cookie(si), mirror_tls(connection_info), what)


def disk_layout(si: Any, connection_info: JSON, datacenter: str, descriptor_path: str,
                size: int, what: str) -> JSON:
    """How a disk's data is read: ``{"path": flat extent}`` (datastore-relative) for one
    flat extent, read with ranged GETs directly; else ``{"layout": "vmdk", "chain":
    chain_files}`` (``vmdk_chain``: sparse, stream-optimized, split, or a snapshot delta
    chain), checked here by opening it with qemu. ``ProviderError`` naming the disk when a
    file is missing or qemu cannot read the chain."""
    datastore, path = conn.split_datastore_path(descriptor_path)

    def fetch(file: str, limit: int) -> bytes:
        return _get(si, connection_info,
                    conn.folder_url(connection_info, datacenter, datastore, file),
                    f"{what} ([{datastore}] {file})", limit=limit)

    head = fetch(path, vmdk_chain.DESCRIPTOR_LIMIT)
    flat = None
    if not head.strip():
        # vcsim's placeholder descriptor: the flat extent is <name>-flat.vmdk beside it.
        flat = f"{path[:-5]}-flat.vmdk" if path.endswith(".vmdk") else path
    elif vmdk_chain.is_text_descriptor(head):
        flat = _single_flat_extent(head.decode("utf-8", "replace"), path)
    if flat is not None:
        fetch(flat, 1)
        return {"path": flat}
    mirror = new_mirror(si, connection_info, datacenter, datastore, what)
    try:
        chain = vmdk_chain.discover_and_check(mirror, path, fetch, size,
                                              f"{what} ({descriptor_path})")
    finally:
        mirror.close()
    return {"layout": "vmdk", "chain": chain}


def _single_flat_extent(text: str, path: str) -> str | None:
    """The one flat extent a descriptor names (datastore-relative), None for anything else
    (sparse, split, a delta with a parent, an extent at an offset)."""
    if vmdk_chain.PARENT_HINT.search(text):
        return None
    extents = EXTENT_RE.findall(text)
    if len(extents) != 1 or len(vmdk_chain.EXTENT_LINE.findall(text)) != 1 or \
            extents[0][4] not in ("", "0"):
        return None
    return posixpath.join(posixpath.dirname(path), extents[0][3])


class VSphereDiskReader:
    """A ``DiskReader`` of one disk of a transfer's snapshot: ranged GETs of the flat extent
    over ``/folder`` with the session cookie; ``extents(since=changeId)`` through
    ``QueryChangedDiskAreas``. Bytes past the end of a shorter file (vcsim's placeholders)
    read as zeroes."""

    def __init__(self, si: Any, connection_info: JSON, location: PlatformLocation) -> None:
        params = location.params
        self._si = si
        self._params = params
        self._what = str(params.get("what") or f"disk {params.get('path')}")
        self._size = int(params["size"])
        self._chain: vmdk_chain.VmdkChainReader | None = None
        if params.get("layout") == "vmdk":
            self._chain = vmdk_chain.VmdkChainReader(
                new_mirror(si, connection_info, params["datacenter"], params["datastore"],
                           self._what), params["chain"])
            return
        fingerprint = conn._thumbprint(connection_info)
        self._http = HttpRangeReader(
            conn.folder_url(connection_info, params["datacenter"], params["datastore"],
                            params["path"]),
            self._size, fingerprint=fingerprint if fingerprint and len(fingerprint) == 64
            else None, headers={"Cookie": conn.session_cookie(si)},
            ssl_context=conn.ssl_context(connection_info), name=self._what)
        self._file_size = self._probe_file_size()

    def _probe_file_size(self) -> int:
        pool = self._http._pool
        response = pool.request("GET", self._http.url,
                                headers={**self._http._headers, "Range": "bytes=0-0"},
                                preload_content=False)
        response.release_conn()
        if response.status == 404:
            raise exceptions.ProviderError(f"{self._what} is missing on its datastore")
        if response.status == 416:
            return 0
        content_range = response.headers.get("Content-Range", "")
        if response.status == 206 and "/" in content_range:
            return int(content_range.rsplit("/", 1)[1])
        if response.status == 200:
            return int(response.headers.get("Content-Length", self._size))
        raise exceptions.ProviderError(
            f"{self._what}: the datastore answered HTTP {response.status}")

    @property
    def size(self) -> int:
        return self._size

    def _changed_areas(self, since: str) -> Iterator[Extent]:
        vm = vim.VirtualMachine(self._params["vm"], self._si._stub)
        snapshot = vim.vm.Snapshot(self._params["snapshot"], self._si._stub)
        offset = 0
        while offset < self._size:
            result = vm.QueryChangedDiskAreas(snapshot=snapshot,
                                              deviceKey=int(self._params["device_key"]),
                                              startOffset=offset, changeId=since)
            for area in result.changedArea or []:
                yield Extent(area.start, area.length)
            end = int(result.startOffset) + int(result.length)
            if end <= offset:
                break
            offset = end

    def extents(self, since: str | None = None) -> Iterator[Extent]:
        if since and self._params.get("change_id") and since != self._params["change_id"]:
            try:
                changed = list(self._changed_areas(since))
            except vmodl.MethodFault as exc:
                # a change id vSphere no longer knows (CBT reset, disk resized): a full
                # read, which the block manifests still thin to what changed
                log.warning("%s: no changed areas since %s (%s): reading all of it",
                            self._what, since, getattr(exc, "msg", None) or type(exc).__name__)
            else:
                yield from changed
                return
        if self._chain is not None:
            yield from self._chain.extents()
            return
        data_end = min(self._file_size, self._size)
        if data_end:
            yield Extent(0, data_end)
        if data_end < self._size:
            yield Extent(data_end, self._size - data_end, zero=True)

    def read(self, offset: int, length: int) -> Data:
        if self._chain is not None:
            return self._chain.read(offset, length)
        if offset + length <= self._file_size:
            return self._http.read(offset, length)
        inside = max(0, self._file_size - offset)
        head = self._http.read(offset, inside) if inside else b""
        return bytes(head) + bytes(length - inside)

    def change_token(self) -> str | None:
        return self._params.get("change_id")

    @property
    def bytes_fetched(self) -> int | None:
        """Bytes nbdkit read over ``/folder`` for a sparse or delta chain (after ``close``);
        None for a flat disk (read as asked)."""
        return self._chain.bytes_fetched if self._chain is not None else None

    def close(self) -> None:
        if self._chain is not None:
            self._chain.close()
            log.info("%s: %d bytes read over the datastore for its VMDK chain", self._what,
                     self._chain.bytes_fetched)
        else:
            self._http.close()


class VSphereSource(ReplicaExportProvider):
    """The export side (``ExportProvider``, ``ReplicaExportProvider``)."""

    platform: ClassVar[str] = PLATFORM

    def source_environment_schema(self) -> JSON:
        return SOURCE_ENV_SCHEMA

    def validate_source_inputs(self, connection_info: JSON, env: JSON, instance: str) -> None:
        with conn.connect(connection_info) as si:
            vm = inventory.find_vm(si, instance)
            inventory.describe_vm(vm, {}, full=False)

    def _vm(self, si: Any, export_info: JSON) -> Any:
        vm = inventory.find_by_id(si, export_info["id"])
        if vm is None:
            raise exceptions.InstanceNotFound(
                f"VM '{export_info.get('name')}' ({export_info['id']}) is gone")
        return vm

    def deploy_source_resources(
        self, connection_info: JSON, env: JSON, export_info: JSON,
        tracking_id: str | None = None, transfer_id: str | None = None,
        keep_tokens: Iterable[str] = (),
    ) -> JSON:
        name = snapshot_name(transfer_id)
        with conn.connect(connection_info) as si:
            vm = self._vm(si, export_info)
            remove_transfer_snapshots(si, vm, transfer_id)
            quiesce = bool(env.get("quiesce")) and vm.runtime.powerState == "poweredOn"
            snapshot = conn.wait_task(
                si, vm.CreateSnapshot_Task(
                    name=name, description=f"Made by Coriolis for transfer {transfer_id}; "
                    "removed when the transfer ends", memory=False, quiesce=quiesce),
                f"snapshot of VM '{vm.name}'")
            try:
                return self._locations(si, connection_info, vm, snapshot, export_info,
                                       tracking_id, name)
            except BaseException:
                remove_transfer_snapshots(si, vm, transfer_id)
                raise

    def _locations(self, si: Any, connection_info: JSON, vm: Any, snapshot: Any,
                   export_info: JSON, tracking_id: str | None, name: str) -> JSON:
        if not isinstance(snapshot, vim.vm.Snapshot):  # some servers answer the moref only
            snapshot = next(t.snapshot for t in snapshot_trees(si, vm) if t.name == name)
        datacenter = inventory.datacenter_of(vm).name
        frozen = inventory.devices(snapshot.config.hardware.device, {})["disks"]
        cbt_on = bool(vm.config.changeTrackingEnabled)
        disks: JSON = {}
        cbt: JSON = {}
        wanted = {d["id"] for d in export_info.get("devices", {}).get("disks", [])}
        check_described(vm.name, export_info, frozen)
        for disk in frozen:
            if wanted and disk["id"] not in wanted:
                continue
            what = f"VM '{vm.name}': disk {disk['id']}"
            if not disk["datastore_path"]:
                raise exceptions.ProviderError(f"{what} has no file backing (RDM or other)")
            datastore, _ = conn.split_datastore_path(disk["datastore_path"])
            layout = disk_layout(si, connection_info, datacenter, disk["datastore_path"],
                                 disk["size_bytes"], what)
            device = next((d for d in snapshot.config.hardware.device
                           if getattr(d, "key", None) == disk["device_key"]), None)
            change_id = getattr(getattr(device, "backing", None), "changeId", None) \
                if cbt_on else None
            disks[disk["id"]] = to_json(PlatformLocation(PLATFORM, {
                "vm": vm._moId, "snapshot": snapshot._moId, "datacenter": datacenter,
                "datastore": datastore, **layout, "descriptor": disk["datastore_path"],
                "size": disk["size_bytes"], "device_key": disk["device_key"],
                "change_id": change_id, "what": what}))
            if tracking_id and change_id:
                cbt[disk["id"]] = {"token": change_id}
        return {"disks": disks, "cbt": cbt, "vm": vm._moId, "snapshot": snapshot._moId,
                "point_in_time": True,
                "snapshot_name": name}

    def delete_source_resources(self, connection_info: JSON, env: JSON,
                                source_resources: JSON) -> None:
        export_info = source_resources.get("export_info") or {}
        moref = source_resources.get("vm") or export_info.get("id")
        if not moref:
            return
        with conn.connect(connection_info) as si:
            vm = inventory.find_by_id(si, moref)
            if vm is None:
                return  # the VM is gone, and its snapshots with it
            remove_transfer_snapshots(si, vm, source_resources.get("transfer_id"))

    def shutdown_instance(self, connection_info: JSON, env: JSON, export_info: JSON) -> None:
        timeout = float(env.get("shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT))
        with conn.connect(connection_info) as si:
            vm = self._vm(si, export_info)
            if vm.runtime.powerState == "poweredOff":
                return
            try:
                vm.ShutdownGuest()
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and vm.runtime.powerState != "poweredOff":
                    time.sleep(1)
            except vmodl.MethodFault:
                pass  # no VMware Tools: power off
            if vm.runtime.powerState != "poweredOff":
                conn.wait_task(si, vm.PowerOffVM_Task(), f"powering off VM '{vm.name}'")

    def open_platform_reader(self, connection_info: JSON, env: JSON,
                             location: PlatformLocation) -> Any:
        stack = conn.connect(connection_info)
        si = stack.__enter__()
        try:
            reader = VSphereDiskReader(si, connection_info, location)
        except BaseException:
            stack.__exit__(None, None, None)
            raise
        return _Closing(reader, stack)


class _Closing:
    """A reader that logs out of its session when closed."""

    def __init__(self, reader: VSphereDiskReader, stack: Any) -> None:
        self._reader, self._stack = reader, stack

    @property
    def size(self) -> int:
        return self._reader.size

    def extents(self, since: str | None = None) -> Iterator[Extent]:
        return self._reader.extents(since)

    def read(self, offset: int, length: int) -> Data:
        return self._reader.read(offset, length)

    def change_token(self) -> str | None:
        return self._reader.change_token()

    @property
    def bytes_fetched(self) -> int | None:
        return self._reader.bytes_fetched

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            self._stack.__exit__(None, None, None)



def check_described(vm_name: str, export_info: JSON, frozen: list[JSON]) -> None:
    """Every disk ``export_info`` describes is still on the VM's snapshot, at the datastore
    path it was described with. ``InvalidInput`` naming the disk otherwise: the VM changed
    since it was described (a disk removed or moved by Storage vMotion), and reading what is
    there now would copy another disk than the one mapped."""
    by_id = {d["id"]: d for d in frozen}
    for described in export_info.get("devices", {}).get("disks", []):
        now = by_id.get(described["id"])
        what = f"VM '{vm_name}': disk {described['id']}"
        if now is None:
            raise exceptions.InvalidInput(f"{what} is no longer on the VM; describe the "
                                          "instance again")
        was = described.get("datastore_path")
        if was and was != now["datastore_path"]:
            raise exceptions.InvalidInput(f"{what} is now {now['datastore_path']}, not {was} "
                                          "as described; describe the instance again")
