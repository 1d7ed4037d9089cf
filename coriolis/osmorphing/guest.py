"""What a morpher may do to a guest: read and write its files, run its own tools inside it.

Two implementations: ``appliance.GuestfsGuest`` (a real guest's disks opened with libguestfs,
commands run chrooted in the guest) and ``DirectoryGuest`` (a file tree, for fixture trees of
distributions that cannot boot here; it records the commands it is asked to run instead of
running them, so that tests can check them).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from coriolis import exceptions


@dataclass
class OsInfo:
    """What inspection found (libguestfs inspection terms)."""

    type: str  # linux, windows, ...
    distro: str  # debian, ubuntu, rhel, centos, rocky, sles, opensuse-leap, ...
    major: int
    minor: int
    product: str
    root: str  # the appliance's device holding the root file system
    mountpoints: dict[str, str] = field(default_factory=dict)
    # fstab specs naming a source disk by id or path -> the appliance device they are here
    # (coriolis.osmorphing.fstab); empty when the guest has none.
    fstab_devices: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        product = self.product if not self.product[:1].isdigit() \
            else f"{self.distro.capitalize()} {self.product}"
        return f"{product} ({self.distro} {self.major}.{self.minor}, root {self.root})"


class Guest(Protocol):
    os: OsInfo

    def read_text(self, path: str) -> str: ...
    def write_text(self, path: str, text: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def mkdir_p(self, path: str) -> None: ...

    def run(self, script: str) -> str:
        """Run a shell script inside the guest (its own /bin/sh, chrooted); stdout, or
        ``MorphingFailed`` with the script's error output."""

    def filesystem_uuid(self, device: str) -> str:
        """UUID of the file system (or swap) on an appliance device, "" if it has none."""

    def disk_count(self) -> int: ...

    def installed_packages(self) -> set[str]: ...


class MorphingFailed(exceptions.ProviderError):
    """OS morphing stopped; the message says which guest and why."""


_GUEST_DISK = re.compile(r"^/dev/(?:(?:[shv]|xv)d([a-z]+)|nvme(\d+)n1p?)(\d*)$")


def appliance_device(guest_device: str, disk_count: int) -> str | None:
    """The appliance's name for a device the guest names after its source platform's bus:
    /dev/sdb2, /dev/vdb2, /dev/xvdb2, /dev/hdb2 and /dev/nvme1n1p2 are all partition 2 of the
    guest's second disk, which the appliance calls /dev/sdb2. None when the guest name is
    not a disk device, or names a disk the instance does not have."""
    match = _GUEST_DISK.match(guest_device)
    if not match:
        return None
    letters, nvme, partition = match.groups()
    if nvme is not None:
        index = int(nvme)
    else:
        index = 0
        for ch in letters:
            index = index * 26 + (ord(ch) - ord("a") + 1)
        index -= 1
    if index >= disk_count:
        return None
    name, n = "", index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        name = chr(ord("a") + rem) + name
    return f"/dev/sd{name}{partition}"


class DirectoryGuest:
    """A guest whose root is a directory (fixture trees). ``run`` records the scripts and
    answers from ``responses`` (script substring → output); nothing is executed."""

    def __init__(self, root: Path, os_info: OsInfo, *, uuids: dict[str, str] | None = None,
                 packages: set[str] | None = None, disks: int = 1,
                 responses: dict[str, str] | None = None) -> None:
        self.root = root
        self.os = os_info
        self.uuids = uuids or {}
        self.packages = set(packages or ())
        self.disks = disks
        self.responses = responses or {}
        self.scripts: list[str] = []

    def _path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def read_text(self, path: str) -> str:
        return self._path(path).read_text()

    def write_text(self, path: str, text: str) -> None:
        self._path(path).write_text(text)

    def exists(self, path: str) -> bool:
        return os.path.lexists(self._path(path))

    def is_dir(self, path: str) -> bool:
        return self._path(path).is_dir()

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self._path(path)))

    def rename(self, src: str, dst: str) -> None:
        os.replace(self._path(src), self._path(dst))

    def remove(self, path: str) -> None:
        target = self._path(path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif os.path.lexists(target):
            target.unlink()

    def mkdir_p(self, path: str) -> None:
        self._path(path).mkdir(parents=True, exist_ok=True)

    def run(self, script: str) -> str:
        self.scripts.append(script)
        return next((out for key, out in self.responses.items() if key in script), "")

    def filesystem_uuid(self, device: str) -> str:
        return self.uuids.get(device, "")

    def disk_count(self) -> int:
        return self.disks

    def installed_packages(self) -> set[str]:
        return set(self.packages)


EventLog = Callable[[str], None]
