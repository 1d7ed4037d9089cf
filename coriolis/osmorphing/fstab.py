"""fstab entries that name a disk by the source platform's hardware: ``/dev/disk/by-id/...``
(the disk's serial or WWN, e.g. ``scsi-36000c29...-part2``) and ``/dev/disk/by-path/...``
(its controller and bus address, e.g. ``pci-0000:03:00.0-scsi-0:0:1:0-part1``).

Neither name exists on the destination (virtio disks have other serials and addresses), so such
an entry stops the boot. libguestfs' inspection resolves a ``by-id`` name only on a guest of
one disk and a ``by-path`` name never, so the file system is not even mounted while the guest
is morphed. Here each is matched to the one file system of the instance's disks that fits it
(its partition number, from ``-partN``, its fstab type, and no other entry mounting it; among
several, the one whose ext2/3/4 superblock says it was last mounted on the entry's mount
point); an entry that fits none or several is refused by name, unless ``nofail`` or ``noauto``
says the guest boots without it. Sources: fstab(5); udev's persistent storage rules
(``60-persistent-storage.rules``: the ``-partN`` suffix).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from coriolis.osmorphing.guest import MorphingFailed

_HARDWARE_NAME = re.compile(r"^/dev/disk/by-(id|path)/(.+?)(?:-part(\d+))?$")
_APPLIANCE_DISK = re.compile(r"^/dev/sd[a-z]+(\d*)$")
_SAME_TYPE = {"ext2": "ext2", "ext3": "ext3", "ext4": "ext4", "xfs": "xfs", "btrfs": "btrfs",
              "vfat": "vfat", "swap": "swap"}


@dataclass
class FstabEntry:
    spec: str  # the first field: /dev/sda1, UUID=..., /dev/disk/by-id/...
    mountpoint: str
    fstype: str
    options: list[str]

    @property
    def optional(self) -> bool:
        """The guest boots without it (``nofail``: a missing device is no error;
        ``noauto``: not mounted at boot)."""
        return "nofail" in self.options or "noauto" in self.options


def parse(text: str) -> list[FstabEntry]:
    """The entries of an fstab text (comments and short lines skipped)."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("#"):
            continue
        options = fields[3].split(",") if len(fields) > 3 else []
        entries.append(FstabEntry(fields[0], fields[1], fields[2], options))
    return entries


def names_hardware(spec: str) -> bool:
    return bool(_HARDWARE_NAME.match(spec))


def _partition_number(device: str) -> int | None:
    """1 for /dev/sda1; 0 for a whole disk (/dev/sdb); None for anything else (LVs, md)."""
    match = _APPLIANCE_DISK.match(device)
    if not match:
        return None
    return int(match.group(1)) if match.group(1) else 0


def resolve_hardware_names(entries: list[FstabEntry], filesystems: dict[str, str],
                           claimed: dict[str, str],
                           last_mounted: Callable[[str], str] = lambda _d: "") \
        -> dict[str, str]:
    """``spec -> appliance device`` for the entries naming a disk by id or path.

    ``filesystems``: the appliance's devices and their file system types (libguestfs
    ``list_filesystems``: ``{"/dev/sda1": "ext4", "/dev/sdb": "xfs", ...}``); ``claimed``:
    mount point -> device of the entries already resolved (root and ``UUID=`` ones), never
    candidates; ``last_mounted(device)``: where an ext file system was last mounted ("" if
    unknown), which settles between several candidates. Raises ``MorphingFailed`` naming
    the entry when a required one fits no file system or several; an optional one is then
    left out of the result."""
    taken = set(claimed.values())
    resolved: dict[str, str] = {}
    for entry in entries:
        match = _HARDWARE_NAME.match(entry.spec)
        if not match or entry.spec in resolved:
            continue
        if entry.mountpoint in claimed:
            resolved[entry.spec] = claimed[entry.mountpoint]
            continue
        number = int(match.group(3)) if match.group(3) else 0
        wanted = _SAME_TYPE.get(entry.fstype)
        candidates = sorted(
            dev for dev, fstype in filesystems.items()
            if _partition_number(dev) == number and dev not in taken
            and (wanted is None or fstype == wanted))
        if len(candidates) > 1:
            same = [d for d in candidates if last_mounted(d) == entry.mountpoint]
            candidates = same if len(same) == 1 else candidates
        if len(candidates) == 1:
            resolved[entry.spec] = candidates[0]
            taken.add(candidates[0])
            continue
        if entry.optional:
            continue
        what = (f"{'partition ' + str(number) if number else 'a whole disk'} with "
                f"{wanted or 'any'} file system")
        found = (f"{len(candidates)} fit ({', '.join(candidates)})" if candidates
                 else "none fits")
        raise MorphingFailed(
            f"/etc/fstab mounts {entry.mountpoint} from {entry.spec}, a name of the source "
            f"disk's {match.group(1)} that the destination's disks will not have; looking for "
            f"{what} not mounted by another entry on the instance's disks, {found}. Mount it "
            "by UUID= in the source guest (blkid shows it), or add nofail if the guest can "
            "boot without it, then migrate again")
    return resolved
