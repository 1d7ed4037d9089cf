"""Cinder volumes and snapshots: made under names derived from the transfer, waited for,
removed, and opened as files of an NFS share mounted on the worker's host.

Names: ``coriolis-<key>-<what>`` where ``key`` is the first 16 hex digits of
``sha256(transfer_id | instance | disk)``, so a re-run after a crash finds what an interrupted
call made (``find_named``). Each carries the metadata ``coriolis_key`` too.

A volume is opened for the copy with Cinder's ``os-initialize_connection`` (legacy
attach: no attachment record, the volume stays ``available``); with the NFS driver it
answers ``{"driver_volume_type": "nfs", "data": {"export", "name", "format"}}``: the volume
is the file ``<nfs_mount_point_base>/<md5(export)>/<name>`` (a qcow2 overlay once the
volume has snapshots), which this worker reads or writes, confined to that share folder.
``os-terminate_connection`` undoes it. Source: Cinder API v3 reference
(docs.openstack.org/api-ref/block-storage/v3, volume actions), openstacksdk
``block_storage.v3`` proxy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
import uuid
from typing import Any

from coriolis import exceptions
from coriolis.providers.openstack.connection import (
    JSON,
    http_error,
    share_folder,
    timeout_of,
)
from coriolis.transfer.locations import PathLocation

GiB = 1024 ** 3
PREFIX = "coriolis-"


def transfer_key(transfer_id: str | None, instance: str, disk_id: str) -> str:
    owner = transfer_id or uuid.uuid4().hex
    return hashlib.sha256(f"{owner}|{instance}|{disk_id}".encode()).hexdigest()[:16]


def safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))[:48]


def gib(size_bytes: int) -> int:
    """Cinder sizes are whole GiB: the smallest that holds ``size_bytes``."""
    return max(1, -(-int(size_bytes) // GiB))


def sdk_errors() -> tuple[type[BaseException], ...]:
    from openstack import exceptions as os_exc
    return (os_exc.SDKException,)


def find_named(conn: Any, name: str) -> list[Any]:
    """Volumes named exactly ``name`` (any status)."""
    return [v for v in conn.block_storage.volumes(details=True, name=name) if v.name == name]


def find_snapshots(conn: Any, name: str) -> list[Any]:
    return [s for s in conn.block_storage.snapshots(details=True, name=name) if s.name == name]


def _wait(conn: Any, ci: JSON, res: Any, what: str, kind: str, status: str) -> Any:
    """Wait for ``status``; a resource in ``error`` (or that does not get there in the
    endpoint's timeout) is a ``ProviderError`` naming ``what`` and the resource."""
    from openstack import exceptions as os_exc
    try:
        return conn.block_storage.wait_for_status(
            res, status=status, failures=["error", "error_restoring", "error_extending"],
            interval=1, wait=timeout_of(ci))
    except os_exc.ResourceFailure:
        raise exceptions.ProviderError(
            f"{what}: Cinder {kind} {res.id} went to status 'error'") from None
    except os_exc.ResourceTimeout:
        raise exceptions.ProviderError(
            f"{what}: Cinder {kind} {res.id} is not {status} after {timeout_of(ci)} s"
        ) from None


def wait_volume(conn: Any, ci: JSON, volume: Any, what: str,
                status: str = "available") -> Any:
    return _wait(conn, ci, volume, what, "volume", status)


def wait_snapshot(conn: Any, ci: JSON, snap: Any, what: str) -> Any:
    return _wait(conn, ci, snap, what, "snapshot", "available")


SERVER_ERROR_ATTEMPTS = 3


def _made(conn: Any, ci: JSON, make: Any, wait: Any, delete: Any, failed: str,
          what: str, find: Any = None) -> Any:
    """``make()``, then ``wait(conn, ci, it, what)``; what was made is deleted on an
    error, which names ``failed`` (quota, unknown type: ``InvalidInput``). A 5xx answer
    (a transient fault of the service, e.g. a database deadlock) is tried again, up to
    ``SERVER_ERROR_ATTEMPTS`` times, unless ``find()`` (the resources of that name) shows
    the call made it anyway: that one is used and any other of the name deleted."""
    for attempt in range(1, SERVER_ERROR_ATTEMPTS + 1):
        try:
            made = make()
            break
        except sdk_errors() as exc:
            status = getattr(exc, "status_code", None) or 0
            if status < 500 or find is None or attempt == SERVER_ERROR_ATTEMPTS:
                raise http_error(exc, failed, ci) from None
        time.sleep(2 * attempt)
        found = find()
        if found:
            made = found[0]
            for extra in found[1:]:
                delete(conn, ci, extra.id)
            break
    try:
        return wait(conn, ci, made, what)
    except BaseException:
        delete(conn, ci, made.id)
        raise


def create_volume(conn: Any, ci: JSON, what: str, **attrs: Any) -> Any:
    """Create a volume and wait for it; on an error it is deleted and the error names
    ``what``."""
    return _made(conn, ci, lambda: conn.block_storage.create_volume(**attrs), wait_volume,
                 delete_volume, f"cannot create the Cinder volume of {what}", what,
                 (lambda: find_named(conn, attrs["name"])) if attrs.get("name") else None)


def delete_volume(conn: Any, ci: JSON, volume_id: str | None, wait: bool = True) -> None:
    """Delete a volume (forcing it out of a stuck status if it must); gone is done."""
    from openstack import exceptions as os_exc
    if not volume_id:
        return
    try:
        volume = conn.block_storage.get_volume(volume_id)
    except os_exc.NotFoundException:
        return
    try:
        if volume.status in ("creating", "error_deleting", "attaching", "detaching",
                             "reserved", "downloading"):
            conn.block_storage.delete_volume(volume, force=True)
        elif volume.status != "deleting":
            conn.block_storage.delete_volume(volume, cascade=True)
    except os_exc.NotFoundException:
        return
    except os_exc.SDKException as exc:
        raise http_error(exc, f"cannot delete Cinder volume {volume_id}", ci) from None
    if wait:
        try:
            conn.block_storage.wait_for_delete(volume, interval=1, wait=timeout_of(ci))
        except os_exc.ResourceTimeout:
            raise exceptions.ProviderError(
                f"Cinder volume {volume_id} is still there {timeout_of(ci)} s after its "
                "deletion") from None


def delete_snapshot(conn: Any, ci: JSON, snapshot_id: str | None) -> None:
    from openstack import exceptions as os_exc
    if not snapshot_id:
        return
    try:
        snap = conn.block_storage.get_snapshot(snapshot_id)
        if snap.status not in ("available", "error", "deleting"):
            # stuck (an in-use volume's snapshot waiting on Nova): Cinder deletes only
            # available or error ones; an admin may reset it (else the delete says why)
            with contextlib.suppress(os_exc.SDKException):
                conn.block_storage.reset_snapshot_status(snap, "error")
        if snap.status != "deleting":
            conn.block_storage.delete_snapshot(snap, force=snap.status.startswith("error"))
        conn.block_storage.wait_for_delete(snap, interval=1, wait=timeout_of(ci))
    except os_exc.NotFoundException:
        return
    except os_exc.ResourceTimeout:
        raise exceptions.ProviderError(
            f"Cinder snapshot {snapshot_id} is still there {timeout_of(ci)} s after its "
            "deletion") from None
    except os_exc.SDKException as exc:
        raise http_error(exc, f"cannot delete Cinder snapshot {snapshot_id}", ci) from None


def create_snapshot(conn: Any, ci: JSON, volume_id: str, name: str, what: str,
                    metadata: JSON | None = None) -> Any:
    """A snapshot of a volume (in use or not), waited for; on an error it is deleted."""
    return _made(conn, ci, lambda: conn.block_storage.create_snapshot(
        volume_id=volume_id, name=name, is_forced=True,
        metadata=metadata or {"coriolis": "1"}), wait_snapshot, delete_snapshot,
        f"cannot snapshot the Cinder volume of {what}", what,
        lambda: [s for s in find_snapshots(conn, name) if s.volume_id == volume_id])


def connector() -> JSON:
    """What this host says of itself to ``os-initialize_connection`` (the NFS driver only
    needs it to be there)."""
    return {"host": socket.gethostname(), "ip": "127.0.0.1", "multipath": False,
            "platform": "x86_64", "os_type": "linux", "do_local_attach": False}


def open_file(conn: Any, ci: JSON, volume_id: str, what: str) -> tuple[str, str, str]:
    """(path, format, share folder) of a volume as a file of this host's NFS mount;
    ``ProviderError`` naming ``what`` when the backend is not NFS or the file is not under
    ``nfs_mount_point_base``."""
    base = ci.get("nfs_mount_point_base")
    if not base:
        raise exceptions.InvalidInput(
            f"{what}: connection_info.nfs_mount_point_base is not set: this server cannot "
            "open Cinder volumes")
    try:
        info = conn.block_storage.init_volume_attachment(volume_id, connector())
    except sdk_errors() as exc:
        raise http_error(exc, f"{what}: cannot open Cinder volume {volume_id}", ci) from None
    info = info.get("connection_info", info) if isinstance(info, dict) else {}
    kind = info.get("driver_volume_type")
    data = info.get("data") or {}
    if kind != "nfs" or not data.get("export") or not data.get("name"):
        raise exceptions.ProviderError(
            f"{what}: Cinder volume {volume_id} is served as '{kind}', not as a file of an "
            "NFS share this server mounts")
    folder = share_folder(str(base), str(data["export"]))
    name = str(data["name"])
    if "/" in name or name in (".", ".."):
        raise exceptions.ProviderError(f"{what}: Cinder named its file {name!r}")
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        raise exceptions.ProviderError(
            f"{what}: the file of Cinder volume {volume_id} ({path}) is not on this host")
    return path, str(data.get("format") or "raw"), folder


def close_file(conn: Any, ci: JSON, volume_id: str | None) -> None:
    """``os-terminate_connection``; a volume that is gone is done, and so is one Nova holds
    attached (Cinder answers 409: the legacy call made no attachment to undo)."""
    from openstack import exceptions as os_exc
    if not volume_id:
        return
    try:
        conn.block_storage.terminate_volume_attachment(volume_id, connector())
    except (os_exc.NotFoundException, os_exc.ConflictException):
        return


def location(conn: Any, ci: JSON, volume_id: str, what: str) -> PathLocation:
    path, fmt, folder = open_file(conn, ci, volume_id, what)
    return PathLocation(path, fmt, confine=(folder,), what=what)
