"""Storage pool volumes of the libvirt destination: lookup, creation, clones, deletion.

A volume is described in ``volumes_info`` as ``{"disk_id", "volume_id": its key, "pool",
"volume": its name, "path", "format", "size_bytes", "storage_backend": the pool}``.
Errors are ``ProviderError``/``InvalidInput`` naming the pool and volume.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape

from coriolis import exceptions
from coriolis.providers.libvirt.connection import load_libvirt

JSON = dict[str, Any]
FORMATS = ("raw", "qcow2")


def transfer_key(transfer_id: str | None, *parts: str) -> str:
    """A short name part, the same each time the same transfer (and instance, disk) asks, so
    a call repeated after a crash finds what the interrupted one made; random without a
    ``transfer_id``."""
    if not transfer_id:
        return uuid.uuid4().hex[:8]
    return hashlib.sha256("|".join((transfer_id, *parts)).encode()).hexdigest()[:8]


def safe_name(text: str) -> str:
    """``text`` usable in a file (volume) name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def volume_name(instance: str, disk_id: str, key: str, fmt: str, clone: bool = False) -> str:
    return f"{safe_name(instance)}-{safe_name(disk_id)}-{'clone-' if clone else ''}{key}.{fmt}"


BUSY = "has asynchronous jobs running"
"""libvirt's refusal to refresh a pool while a volume is being built in it (by any client:
another task creating a transfer's disks, a minion's config disk)."""


def refresh(pool: Any, timeout: float = 120.0) -> None:
    """``pool.refresh(0)``, waiting out ``BUSY``: libvirt's storage driver refuses to
    refresh a pool (``virStoragePoolRefresh``: "pool 'x' has asynchronous jobs running",
    VIR_ERR_INTERNAL_ERROR) while a volume is being created in it, which happens whenever
    two transfers or a transfer and a minion pool use one storage pool at once. Retries
    with growing pauses (50 ms to 1 s) for at most ``timeout`` seconds, then raises that
    ``libvirtError``; any other error at once."""
    libvirt = load_libvirt()
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        try:
            pool.refresh(0)
            return
        except libvirt.libvirtError as exc:
            if BUSY not in (exc.get_error_message() or "") or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def lookup_pool(conn: Any, name: str) -> Any:
    """The running pool ``name``; ``InvalidInput`` naming it when missing or inactive."""
    libvirt = load_libvirt()
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        known = ", ".join(sorted(p.name() for p in conn.listAllStoragePools(0))) or "none"
        raise exceptions.InvalidInput(
            f"storage pool '{name}' does not exist on the destination (available: {known})"
        ) from None
    if not pool.isActive():
        raise exceptions.InvalidInput(f"storage pool '{name}' is not running")
    return pool


def pool_folder(pool: Any) -> str:
    """The folder of a dir-like pool (its ``<target><path>``), resolved."""
    path = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path")
    if not path:
        raise exceptions.InvalidInput(f"storage pool '{pool.name()}' has no target folder")
    return os.path.realpath(path)


def find(conn: Any, volume: JSON) -> Any | None:
    """The ``virStorageVol`` of a ``volumes_info`` entry (by key, else pool and name), or
    None when it is gone."""
    libvirt = load_libvirt()
    try:
        return conn.storageVolLookupByKey(volume["volume_id"])
    except (libvirt.libvirtError, KeyError):
        pass
    try:
        pool = conn.storagePoolLookupByName(volume["pool"])
        refresh(pool)
        return pool.storageVolLookupByName(volume["volume"])
    except (libvirt.libvirtError, KeyError):
        return None


def _in_pool(pool: Any, name: str) -> Any | None:
    libvirt = load_libvirt()
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def _xml(name: str, size: int, fmt: str) -> str:
    return (f"<volume><name>{escape(name)}</name><allocation>0</allocation>"
            f"<capacity unit='bytes'>{int(size)}</capacity>"
            f"<target><format type='{fmt}'/></target></volume>")


def describe(pool: Any, vol: Any, disk_id: str, fmt: str, size: int) -> JSON:
    folder = pool_folder(pool)
    path = os.path.realpath(vol.path())
    if os.path.dirname(path) != folder:
        raise exceptions.ProviderError(
            f"volume {pool.name()}/{vol.name()} is not in its pool's folder {folder}")
    return {"disk_id": disk_id, "volume_id": vol.key(), "pool": pool.name(),
            "volume": vol.name(), "path": path, "format": fmt, "size_bytes": int(size),
            "storage_backend": pool.name()}


def replace(pool: Any, name: str) -> None:
    """Delete the volume ``name`` of ``pool`` if it exists (what an interrupted call of the
    same transfer half-made: names carry the transfer's key)."""
    refresh(pool)
    old = _in_pool(pool, name)
    if old is not None:
        old.delete(0)


def create(pool: Any, name: str, size: int, fmt: str, disk_id: str) -> JSON:
    """A new blank (sparse) volume ``name``; one of that name is replaced."""
    libvirt = load_libvirt()
    replace(pool, name)
    try:
        vol = pool.createXML(_xml(name, size, fmt), 0)
    except libvirt.libvirtError as exc:
        raise exceptions.ProviderError(
            f"cannot create volume {pool.name()}/{name} for disk {disk_id}: "
            f"{exc.get_error_message()}") from None
    return describe(pool, vol, disk_id, fmt, size)


def clone(conn: Any, source: JSON, name: str) -> JSON:
    """A new volume ``name`` in the pool of ``source`` with its contents (a reflink where the
    file system has them, else libvirt's sparse copy or ``qemu-img convert``)."""
    libvirt = load_libvirt()
    vol = find(conn, source)
    if vol is None:
        raise exceptions.ProviderError(
            f"volume {source.get('pool')}/{source.get('volume')} of disk {source['disk_id']} "
            "is missing")
    pool = vol.storagePoolLookupByVolume()
    replace(pool, name)
    xml = _xml(name, source["size_bytes"], source["format"])
    made = None
    for flags in (libvirt.VIR_STORAGE_VOL_CREATE_REFLINK, 0):
        try:
            made = pool.createXMLFrom(xml, vol, flags)
            break
        except libvirt.libvirtError as exc:
            replace(pool, name)
            if flags == 0:
                raise exceptions.ProviderError(
                    f"cannot clone volume {pool.name()}/{vol.name()} of disk "
                    f"{source['disk_id']}: {exc.get_error_message()}") from None
    return describe(pool, made, source["disk_id"], source["format"], source["size_bytes"])


def delete(conn: Any, volume: JSON) -> None:
    """Delete a volume; one already gone is skipped."""
    vol = find(conn, volume)
    if vol is not None:
        vol.delete(0)


def available_bytes(pool: Any) -> int:
    refresh(pool)
    return int(pool.info()[3])
