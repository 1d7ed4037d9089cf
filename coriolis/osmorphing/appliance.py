"""Opening a guest's disks with libguestfs, inspecting its OS and mounting its file systems.

libguestfs comes from the distribution (Debian: ``libguestfs-tools`` and ``python3-guestfs``);
its Python module is installed for the system interpreter, so it is loaded from there when the
server runs in a virtualenv. The appliance backend is configurable because hardware
acceleration misbehaves on some hosts:

- ``CORIOLIS_LIBGUESTFS_BACKEND`` (default ``direct``: qemu started by libguestfs itself);
- ``CORIOLIS_LIBGUESTFS_BACKEND_SETTINGS`` (default ``force_tcg``: software emulation, which
  works everywhere; set it to an empty string on hosts where KVM works, for speed);
- ``CORIOLIS_LIBGUESTFS_MEMORY_MB`` (default 1024).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from coriolis.osmorphing import fstab
from coriolis.osmorphing.guest import MorphingFailed, OsInfo
from coriolis.osmorphing.windows import checks as windows_checks
from coriolis.system_modules import load_system_module

_STATUS = "__coriolis_exit_status="
_LOADING = threading.Lock()


@dataclass(frozen=True)
class GuestDisk:
    path: str
    format: str
    name: str  # how events and errors call it (the instance's disk id)


def load_guestfs() -> ModuleType:
    """The ``guestfs`` module, from this interpreter or the system's. Threads may ask at once:
    the lock keeps them from seeing a module that another is still executing."""
    with _LOADING:
        try:
            return importlib.import_module("guestfs")
        except ImportError:
            return _load_system_guestfs()


def _load_system_guestfs() -> ModuleType:
    module = load_system_module("guestfs", "libguestfsmod")
    if module is None:
        raise MorphingFailed(
            "libguestfs is not installed on this worker (Debian: apt-get install "
            "libguestfs-tools python3-guestfs); OS morphing needs it, or run the transfer "
            "with --skip-os-morphing")
    return module


def new_handle() -> Any:
    """A libguestfs handle with this host's appliance settings (not launched)."""
    guestfs = load_guestfs()
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend(os.environ.get("CORIOLIS_LIBGUESTFS_BACKEND", "direct"))
    settings = os.environ.get("CORIOLIS_LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    g.set_backend_settings([s for s in settings.split(":") if s])
    g.set_memsize(int(os.environ.get("CORIOLIS_LIBGUESTFS_MEMORY_MB", "1024")))
    g.set_smp(min(os.cpu_count() or 1, 2))
    return g


def run_script(g: Any, script: str) -> str:
    """Run a shell script chrooted in the mounted guest of a launched handle: its output
    (stdout and stderr together); on a non-zero exit status, ``MorphingFailed`` with the
    status and the end of that output."""
    try:
        output = str(g.sh(f"( {script}\n) 2>&1; echo \"{_STATUS}$?\""))
    except RuntimeError as exc:
        raise MorphingFailed(f"in the guest, `{script.splitlines()[0]}` failed: {exc}") \
            from None
    output, _, status = output.rpartition(_STATUS)
    if status.strip() != "0":
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise MorphingFailed(f"in the guest, `{script.splitlines()[0]}` exited with status "
                             f"{status.strip()}: {tail}")
    return output


class GuestfsGuest:
    """A guest opened with libguestfs: paths are the guest's, commands run chrooted in it."""

    def __init__(self, g: Any, os_info: OsInfo, disks: list[GuestDisk]) -> None:
        self.g = g
        self.os = os_info
        self.disks = disks

    def read_text(self, path: str) -> str:
        return bytes(self.g.read_file(path)).decode("utf-8", "replace")

    def write_text(self, path: str, text: str) -> None:
        self.g.write(path, text.encode())

    def exists(self, path: str) -> bool:
        return bool(self.g.exists(path))

    def is_dir(self, path: str) -> bool:
        return bool(self.g.is_dir(path))

    def listdir(self, path: str) -> list[str]:
        return sorted(self.g.ls(path))

    def rename(self, src: str, dst: str) -> None:
        self.g.mv(src, dst)

    def remove(self, path: str) -> None:
        self.g.rm_rf(path)

    def mkdir_p(self, path: str) -> None:
        self.g.mkdir_p(path)

    def run(self, script: str) -> str:
        """The script's output (stdout and stderr together); on a non-zero exit status,
        ``MorphingFailed`` with the status and the end of that output."""
        return run_script(self.g, script)

    def filesystem_uuid(self, device: str) -> str:
        try:
            return str(self.g.vfs_uuid(device))
        except RuntimeError:
            return ""

    def disk_count(self) -> int:
        return len(self.disks)

    def installed_packages(self) -> set[str]:
        """Names of the installed packages; ``MorphingFailed`` when the guest's package
        database cannot be read."""
        try:
            apps = self.g.inspect_list_applications2(self.os.root)
        except RuntimeError as exc:
            raise MorphingFailed(f"the package database of {self.os.product} could not be "
                                 f"read: {exc}") from None
        return {app["app2_name"] for app in apps}

    def make_writable(self) -> None:
        """Mount the guest's file systems again for writing (Windows guests are opened
        read-only)."""
        self.g.umount_all()
        _mount(self.g, self.os)


def _names(disks: list[GuestDisk]) -> str:
    return ", ".join(f"{d.name} [{d.format}]" for d in disks)


def _os_info(g: Any, root: str) -> OsInfo:
    return OsInfo(type=g.inspect_get_type(root), distro=g.inspect_get_distro(root),
                  major=g.inspect_get_major_version(root),
                  minor=g.inspect_get_minor_version(root),
                  product=g.inspect_get_product_name(root), root=root,
                  mountpoints=dict(g.inspect_get_mountpoints(root)))


def _mount(g: Any, os_info: OsInfo, readonly: bool = False) -> None:
    """Mount the guest's file systems as its fstab does, shortest mount point first. The root
    must mount; another that does not is left out (its files are not morphed). Entries naming
    a disk by id or path are resolved here (``fstab.resolve_hardware_names``; recorded in
    ``os_info.fstab_devices``), since inspection leaves most of them unmounted. A Windows
    volume ntfs-3g will not write to (hibernated, dirty) is refused first; ``readonly``
    mounts everything read-only."""
    if os_info.type == "windows":
        windows_checks.refuse_unsafe_ntfs(g, os_info.product,
                                          sorted(set(os_info.mountpoints.values())))
    mountpoints = dict(os_info.mountpoints)
    if "/" not in mountpoints or fstab.names_hardware(mountpoints["/"]):
        mountpoints["/"] = os_info.root  # the file system inspection found the OS on
    _mount_one(g, os_info, mountpoints["/"], "/", readonly)
    if g.is_file("/etc/fstab"):
        entries = fstab.parse(bytes(g.read_file("/etc/fstab")).decode("utf-8", "replace"))
        by_hardware = {e.mountpoint for e in entries if fstab.names_hardware(e.spec)} - {"/"}
        claimed = {m: d for m, d in mountpoints.items() if m not in by_hardware}
        os_info.fstab_devices = fstab.resolve_hardware_names(
            entries, g.list_filesystems(), claimed, lambda device: _last_mounted(g, device))
        for entry in entries:
            if entry.mountpoint in by_hardware:
                mountpoints.pop(entry.mountpoint, None)
                device = os_info.fstab_devices.get(entry.spec)
                if device and entry.mountpoint.startswith("/") and entry.fstype != "swap":
                    mountpoints[entry.mountpoint] = device
    for mountpoint, device in sorted(mountpoints.items(), key=lambda m: len(m[0])):
        if mountpoint != "/":
            _mount_one(g, os_info, device, mountpoint, readonly)


def _last_mounted(g: Any, device: str) -> str:
    """Where an ext2/3/4 file system was last mounted (its superblock), "" if unknown."""
    try:
        value = str(g.tune2fs_l(device).get("Last mounted on", ""))
    except RuntimeError:
        return ""
    return "" if value == "<not available>" else value


def _mount_one(g: Any, os_info: OsInfo, device: str, mountpoint: str,
               readonly: bool = False) -> None:
    try:
        (g.mount_ro if readonly else g.mount)(device, mountpoint)
    except RuntimeError as exc:
        if mountpoint == "/":
            raise MorphingFailed(
                f"the root file system of {os_info.product} ({device}) cannot be mounted: "
                f"{exc}") from None


@contextlib.contextmanager
def open_guest(disks: list[GuestDisk],
               launched: Callable[[], None] = lambda: None) -> Iterator[GuestfsGuest]:
    """Start the appliance on the disks (then call ``launched``), inspect and mount the guest;
    unmount and shut the appliance down whatever happens (a guest's files are only final
    after that)."""
    g = new_handle()
    try:
        for disk in disks:
            g.add_drive_opts(disk.path, format=disk.format, readonly=False)
        try:
            g.launch()
        except RuntimeError as exc:
            raise MorphingFailed(f"the libguestfs appliance did not start: {exc}") from None
        launched()
        windows_checks.refuse_unsafe_disks(g, [d.name for d in disks])
        roots = g.inspect_os()
        if not roots:
            found = sorted(g.list_filesystems().items())
            windows_checks.refuse_unsafe_ntfs(g, _names(disks),
                                              [dev for dev, fs in found if fs == "ntfs"])
            described = ", ".join(f"{dev} {fs}" for dev, fs in found) or "no file systems"
            raise MorphingFailed(
                f"no operating system found on {_names(disks)}; file systems there: "
                f"{described}")
        if len(roots) > 1:
            raise MorphingFailed(
                f"several operating systems found on {_names(disks)} (roots "
                f"{', '.join(roots)}); OS morphing handles one per instance")
        os_info = _os_info(g, roots[0])
        # Windows is read first and written only once the morpher has nothing to refuse
        # (GuestfsGuest.make_writable): even mounting NTFS for writing changes it.
        _mount(g, os_info, readonly=os_info.type == "windows")
        yield GuestfsGuest(g, os_info, disks)
        g.sync()
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
