"""The virtio-win drivers the operator gives, and which of them a destination needs.

The server setting ``CORIOLIS_VIRTIO_WIN`` (an environment variable of the worker, or of the
helper that runs the morphing) names the virtio-win ISO (``virtio-win.iso``; read with pycdlib,
its Rock Ridge or Joliet names) or a folder holding its contents. Its layout is
``DRIVER/OSDIR/ARCH/`` (``viostor/2k19/amd64/viostor.inf``, ``.sys``, ``.cat``;
https://github.com/virtio-win/virtio-win-pkg-scripts). Folder names are matched
case-insensitively. A driver counts as found when its folder for the guest's Windows and
architecture holds its ``.inf``, ``.sys`` and ``.cat``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from coriolis.osmorphing.guest import MorphingFailed
from coriolis.osmorphing.windows.inspect import WindowsInfo

SETTING = "CORIOLIS_VIRTIO_WIN"
# Driver → (folder in virtio-win, what it drives, PCI hardware ids of its devices: virtio
# vendor 1AF4, transitional then modern device ids; virtio spec 1.1 §4.1.2).
DRIVERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "viostor": ("viostor", "virtio-blk disks", (
        "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
        "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01")),
    "vioscsi": ("vioscsi", "virtio-scsi disks", (
        "PCI\\VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00",
        "PCI\\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01")),
    "netkvm": ("NetKVM", "virtio-net NICs", (
        "PCI\\VEN_1AF4&DEV_1000&SUBSYS_00011AF4&REV_00",
        "PCI\\VEN_1AF4&DEV_1041&SUBSYS_11001AF4&REV_01")),
}
STORAGE_DRIVER = {"virtio": "viostor", "scsi": "vioscsi", "virtio-scsi": "vioscsi"}
# Disk buses Windows drives with its own (inbox) boot drivers.
INBOX_STORAGE = {"sata": ("storahci",), "ide": ("intelide", "pciide", "atapi")}


@dataclass(frozen=True)
class Driver:
    name: str  # service and file name: viostor, vioscsi, netkvm
    folder: Path  # the folder holding its .inf/.sys/.cat for this guest

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


def needed_drivers(disk_bus: str, nic_model: str) -> list[str]:
    """The virtio drivers a destination with this disk bus and NIC model needs, storage
    first."""
    needed = [STORAGE_DRIVER[disk_bus]] if disk_bus in STORAGE_DRIVER else []
    return needed + (["netkvm"] if nic_model == "virtio" else [])


def _child(folder: Path, name: str) -> Path | None:
    if not folder.is_dir():
        return None
    return next((p for p in folder.iterdir() if p.name.lower() == name.lower()), None)


def find(root: Path, info: WindowsInfo, folder_name: str) -> Path | None:
    """The folder of driver ``folder_name`` for the guest's Windows and architecture."""
    found: Path | None = root
    for part in (folder_name, info.virtio_os_dir(), info.virtio_arch()):
        found = _child(found, part) if found else None
    return found


def has_driver(folder: Path, name: str) -> bool:
    names = {p.name.lower() for p in folder.iterdir()}
    return all(f"{name}.{ext}" in names for ext in ("inf", "sys", "cat"))


def virtio_win_root() -> Path | None:
    value = os.environ.get(SETTING, "").strip()
    return Path(value) if value else None


@contextlib.contextmanager
def opened(setting: Path | None, info: WindowsInfo) -> Iterator[Path | None]:
    """The virtio-win tree of the setting: the folder itself, or, for an ISO, the guest's
    drivers (``*/OSDIR/ARCH/*``) extracted into a temporary folder for the block."""
    if setting is None or not setting.is_file():
        yield setting
        return
    with tempfile.TemporaryDirectory(prefix="virtio-win-") as tmp:
        _extract(setting, Path(tmp), info)
        yield Path(tmp)


def _extract(iso_path: Path, target: Path, info: WindowsInfo) -> None:
    import pycdlib  # only when an ISO is given
    from pycdlib.pycdlibexception import PyCdlibException

    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(iso_path))
    except (PyCdlibException, OSError) as exc:
        raise MorphingFailed(f"{SETTING}={iso_path} is not a readable ISO 9660 image "
                             f"(virtio-win.iso): {exc}") from None
    try:
        facade = (iso.get_rock_ridge_facade() if iso.has_rock_ridge() else
                  iso.get_joliet_facade() if iso.has_joliet() else iso.get_iso9660_facade())
        wanted = (info.virtio_os_dir().lower(), info.virtio_arch().lower())
        for folder, _, files in facade.walk("/"):
            parts = [p for p in folder.split("/") if p]
            if len(parts) != 3 or (parts[1].lower(), parts[2].lower()) != wanted:
                continue
            local = target.joinpath(*parts)
            local.mkdir(parents=True, exist_ok=True)
            for name in files:
                facade.get_file_from_iso(str(local / name.split(";")[0]), f"{folder}/{name}")
    finally:
        iso.close()


def resolve(info: WindowsInfo, needed: list[str], root: Path | None,
            shown: Path | None = None) -> tuple[list[Driver], list[Driver]]:
    """(the needed drivers, the other drivers of the tree ``root`` for this guest);
    ``MorphingFailed`` naming every needed driver that is missing, and where it was looked
    for (in ``shown``, the setting's value, when ``root`` is an ISO's extracted copy)."""
    if not needed:
        return [], []
    if root is None:
        raise MorphingFailed(
            f"the destination needs the virtio drivers {', '.join(needed)} for "
            f"{info.product}, and no virtio-win is given: set {SETTING} on the worker to a "
            "virtio-win tree (the contents of virtio-win.iso) and run the migration again")
    try:
        os_dir = info.virtio_os_dir()
    except ValueError as exc:
        raise MorphingFailed(str(exc)) from None
    if not root.is_dir():
        raise MorphingFailed(f"{SETTING}={root} is neither the virtio-win ISO nor a folder "
                             "holding its contents")
    drivers, missing = [], []
    for name in needed:
        folder_name, what, _ = DRIVERS[name]
        folder = find(root, info, folder_name)
        if folder is None or not has_driver(folder, name):
            missing.append(f"{name} ({what}; looked for {folder_name}/{os_dir}/"
                           f"{info.virtio_arch()}/{name}.inf, .sys and .cat)")
        else:
            drivers.append(Driver(name, folder))
    if missing:
        raise MorphingFailed(
            f"the destination needs drivers that {SETTING}={shown or root} does not have for "
            f"{info.product} ({os_dir}, {info.virtio_arch()}): {'; '.join(missing)}. Use a "
            "virtio-win release that supports this Windows")
    others = []
    for entry in sorted(root.iterdir()):
        folder = find(root, info, entry.name) if entry.is_dir() else None
        name = entry.name.lower()
        if folder and name not in needed and has_driver(folder, name):
            others.append(Driver(name, folder))
    return drivers, others
