"""Live exports: libvirt checkpoints and pull-mode backups of a running domain.

A backup job serves every exported disk over one NBD unix socket (``<folder>/backup.sock``,
export names = the disks' target devs), with a scratch file per disk in the folder (which
must be owned by the user qemu runs as). The job is ours when its socket is in our folder:
``abort_ours`` never ends someone else's backup.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from coriolis import exceptions
from coriolis.providers.libvirt.sockets import make_socket_folder, socket_folder
from coriolis.transfer.extents import qcow2_bitmaps

SOCKET_NAME = "backup.sock"
QEMU_USER = "libvirt-qemu"


def checkpoint_prefix(tracking_id: str) -> str:
    """The names of one replica's checkpoints start with this."""
    return f"coriolis-{tracking_id[:8]}-"


def prepare_folder(folder: Path) -> None:
    """Make ``folder`` (and its parents, reachable by qemu) and its socket folder owned by
    the qemu user."""
    folder.mkdir(parents=True, exist_ok=True)
    sockets = make_socket_folder(folder)
    for p in [folder, *folder.parents]:
        mode = p.stat().st_mode
        if not mode & 0o001:
            os.chmod(p, mode | 0o001)
    try:
        user = pwd.getpwnam(QEMU_USER)
    except KeyError:
        return  # qemu runs as root (or as this user) here
    for p in (folder, sockets):
        os.chown(p, user.pw_uid, user.pw_gid)
        os.chmod(p, 0o770)


def socket_path(folder: Path) -> Path:
    return socket_folder(folder) / SOCKET_NAME


def backup_xml(folder: Path, disks: list[str], incremental: str | None,
               full: set[str] | frozenset[str] = frozenset()) -> str:
    """A pull-mode backup of ``disks`` (target devs), incremental from checkpoint
    ``incremental`` when given, but for the disks in ``full``."""
    inc = f"<incremental>{escape(incremental)}</incremental>" if incremental else ""
    items = "".join(
        f"<disk name={quoteattr(d)} backup='yes' type='file'"
        + (" backupmode='full'" if d in full else "")
        + f"><scratch file={quoteattr(str(folder / f'{d}.scratch'))}/></disk>" for d in disks)
    return (f"<domainbackup mode='pull'>{inc}<server transport='unix' "
            f"socket={quoteattr(str(socket_path(folder)))}/><disks>{items}</disks>"
            "</domainbackup>")


def checkpoint_xml(name: str, bitmap_disks: list[str], other_disks: list[str]) -> str:
    items = "".join(f"<disk name={quoteattr(d)} checkpoint='bitmap'/>" for d in bitmap_disks)
    items += "".join(f"<disk name={quoteattr(d)} checkpoint='no'/>" for d in other_disks)
    return (f"<domaincheckpoint><name>{escape(name)}</name><disks>{items}</disks>"
            "</domaincheckpoint>")


def uri(folder: Path, disk: str) -> str:
    return f"nbd+unix:///{disk}?socket={socket_path(folder)}"


def running_backup_socket(dom: Any, libvirt: Any) -> str | None:
    """The socket of the domain's backup job, or None when it has none."""
    try:
        xml = dom.backupGetXMLDesc(0)
    except libvirt.libvirtError:
        return None
    server = ET.fromstring(xml).find("./server")
    return server.get("socket") if server is not None else None


def abort_ours(dom: Any, libvirt: Any, folder: Path) -> bool:
    """End the domain's backup job if its socket is in ``folder``; True if it did."""
    sock = running_backup_socket(dom, libvirt)
    if sock is None or os.path.dirname(sock) != str(socket_folder(folder)):
        return False
    try:
        dom.abortJob()
    except libvirt.libvirtError:
        if running_backup_socket(dom, libvirt) is not None:
            raise
    return True


def checkpoints(dom: Any, libvirt: Any, prefix: str) -> list[str]:
    """Names of the domain's checkpoints starting with ``prefix``."""
    try:
        return [cp.getName() for cp in dom.listAllCheckpoints(0)
                if cp.getName().startswith(prefix)]
    except libvirt.libvirtError:
        return []


def delete_checkpoints(dom: Any, libvirt: Any, prefix: str, keep: set[str],
                       images: Iterable[str] = ()) -> list[str]:
    """Delete the domain's checkpoints of ``prefix`` but those in ``keep``; the deleted
    names. Each checkpoint's bitmap records every change since it was made, so deleting one
    leaves the others exact. libvirt cannot delete a checkpoint of a shut-off domain, nor
    one whose bitmap is lost: then the metadata goes, and the bitmap is removed from the
    qcow2 ``images`` (the domain's, when the worker can open them) with qemu-img."""
    gone = []
    for name in checkpoints(dom, libvirt, prefix):
        if name in keep:
            continue
        try:
            checkpoint = dom.checkpointLookupByName(name, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT:
                raise
            continue
        try:
            checkpoint.delete(0)
        except libvirt.libvirtError:
            checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
            if not dom.isActive():
                for image in images:
                    _remove_bitmap(image, name)
        gone.append(name)
    return gone


def _remove_bitmap(image: str, name: str) -> None:
    """Remove bitmap ``name`` from a shut-off domain's qcow2 ``image`` if it has it."""
    if not os.path.exists(image) or name not in qcow2_bitmaps(image):
        return
    proc = subprocess.run(["qemu-img", "bitmap", "--remove", image, name],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise exceptions.ProviderError(
            f"cannot remove bitmap {name} of {image}: {proc.stderr.strip()[-300:]}")
