"""Disks that must not be changed offline, refused before anything is written.

- BitLocker: a volume whose boot sector carries the ``-FVE-FS-`` signature (offset 3; the
  BitLocker on-disk format) is encrypted; nothing in it can be read or changed without its key.
- Dynamic disks (Windows' Logical Disk Manager): an MBR partition of type 0x42, or GPT
  partitions of the LDM metadata/data types; their volumes are described in LDM's own database,
  which the morphing appliance does not assemble.
- A hibernated or dirty NTFS (Windows shut down with fast startup on, hibernated, or not shut
  down cleanly): ntfs-3g refuses to write to it (``ntfs-3g.probe --readwrite``), and what Windows
  kept in memory would overwrite any change when it resumes.

Each refusal says what was found, on which disk and what the operator can do.
"""

from __future__ import annotations

from typing import Any

from coriolis.osmorphing.guest import MorphingFailed

BITLOCKER_SIGNATURE = b"-FVE-FS-"
LDM_MBR_TYPE = 0x42
LDM_GPT_TYPES = {"5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "LDM metadata",
                 "AF9B60A0-1431-4F62-BC68-3311714A69AD": "LDM data"}
# ntfs-3g.probe's exit statuses (ntfs-3g's NTFS_VOLUME_* codes).
NTFS_PROBE = {14: "hibernated (Windows was hibernated or shut down with fast startup on)",
              15: "not cleanly unmounted (Windows did not shut down cleanly)",
              13: "marked dirty or inconsistent (Windows did not shut down cleanly, or a disk "
                  "check is scheduled)",
              16: "locked by another program"}
FAST_STARTUP_REMEDY = (
    "Start the source VM, turn fast startup off (powercfg /h off, as administrator), let a "
    "scheduled disk check finish (chkdsk C: /f), shut Windows down fully (shutdown /s /t 0; "
    "not hibernate) and migrate again")


def _partitions(g: Any, device: str) -> list[tuple[int, str]]:
    """(number, partition device) of a whole-disk device; [] without a partition table."""
    try:
        return [(p["part_num"], f"{device}{p['part_num']}") for p in g.part_list(device)]
    except RuntimeError:
        return []


def _partition_type(g: Any, device: str, number: int) -> str | None:
    try:
        if g.part_get_parttype(device) == "msdos":
            return "mbr" if g.part_get_mbr_id(device, number) == LDM_MBR_TYPE else None
        return LDM_GPT_TYPES.get(str(g.part_get_gpt_type(device, number)).upper())
    except RuntimeError:
        return None


def refuse_unsafe_disks(g: Any, names: list[str]) -> None:
    """Look at every disk of a launched handle (``names``: how the instance calls them, in
    the order they were added): ``MorphingFailed`` for a BitLocker volume or a dynamic disk."""
    for index, device in enumerate(g.list_devices()):
        name = names[index] if index < len(names) else device
        volumes = _partitions(g, device) or [(0, device)]
        for number, volume in volumes:
            try:
                head = bytes(g.pread_device(volume, 11, 0))
            except RuntimeError:
                head = b""
            if head[3:11] == BITLOCKER_SIGNATURE:
                where = f"partition {number}" if number else "the whole disk"
                raise MorphingFailed(
                    f"disk {name}: {where} is a BitLocker-encrypted volume, which cannot be "
                    "changed offline. Suspend or turn off BitLocker in the source VM "
                    "(manage-bde -off C:, then wait until manage-bde -status says "
                    "'Fully Decrypted') and migrate again")
            kind = _partition_type(g, device, number) if number else None
            if kind:
                what = "partition type 0x42" if kind == "mbr" else f"a {kind} partition"
                raise MorphingFailed(
                    f"disk {name} is a Windows dynamic disk ({what}); its volumes are in "
                    "the Logical Disk Manager's database, which OS morphing does not read. "
                    "Convert it to a basic disk in the source VM (back up; Disk Management "
                    "or diskpart 'convert basic'), or migrate with --skip-os-morphing")


def refuse_unsafe_ntfs(g: Any, product: str, devices: list[str]) -> None:
    """Before the Windows volumes are mounted for writing (and when inspection found no OS,
    which a dirty NTFS causes): ``MorphingFailed`` for one that ntfs-3g will not write to
    (hibernated, dirty, ...), with the reason and the remedy."""
    for device in devices:
        try:
            status = int(g.ntfs_3g_probe(True, device))
        except RuntimeError:
            continue  # not NTFS (a FAT system partition)
        if status != 0:
            reason = NTFS_PROBE.get(status, f"refused by ntfs-3g (status {status})")
            raise MorphingFailed(
                f"{product}: the NTFS volume {device} is {reason}; changing it offline would "
                f"be lost or corrupt it. {FAST_STARTUP_REMEDY}")
