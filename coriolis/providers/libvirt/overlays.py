"""Replica volumes written through libvirt minions: a qcow2 overlay on the host.

A replica volume must always be in a known committed state (``replica_disks``: an undo
journal beside a raw volume, an internal snapshot in a qcow2 one, committed or rolled back
with the execution). The journal is filled by a writer on the host; a minion's agent writes a
disk hot-plugged into its domain and sees neither the volume's file nor its journal. So a
minion never gets the volume itself: it gets a qcow2 overlay ``<volume>.coriolis-overlay``
whose backing file is the volume (opened read-only by the minion's qemu). The volume is not
written at all while the execution copies:

- a crash of the worker, the server or the minion mid-copy leaves the volume as the last
  committed execution left it; the overlay holds what the execution wrote so far, and a
  re-run of the copy (same transfer, resumed by the block manifest and the agent's
  acknowledgements) goes on writing it: ``attach`` keeps an existing overlay;
- the commit (``merge`` then ``replica_disks.commit``) writes the overlay's own clusters into
  the volume on the host, through the volume's undo journal (raw) or over its internal
  snapshot (qcow2): a crash mid-merge leaves a pending snapshot that the roll-back undoes, and
  a repeated merge writes the same data;
- a roll-back (or the next execution's settle) drops the overlay: it belongs either to an
  execution never committed, or to one whose merge finished before its commit point.

Before any of these touch the files, the overlay is detached from every minion holding it
(``minions.detach_paths``): the commit and the transfer cleanup run side by side.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from coriolis import exceptions
from coriolis.providers.local.cloud import fsync_dir, install_file
from coriolis.providers.local.replica_disks import JOURNAL_SUFFIX
from coriolis.providers.local.replica_disks import _qemu_img as qemu_img
from coriolis.transfer.files import RawFileWriter
from coriolis.transfer.journal import JournalingWriter
from coriolis.transfer.nbd import NbdImageReader
from coriolis.worker.faults import crash_point

JSON = dict[str, Any]
SUFFIX = ".coriolis-overlay"
CHUNK = 4 * 2**20


def path_of(volume: JSON) -> Path:
    return Path(f"{volume['path']}{SUFFIX}")


def ensure(volume: JSON) -> str:
    """The volume's overlay, made (empty, over the volume) unless it exists: an existing one
    holds what this execution wrote before an interruption. Made as ``.tmp`` then renamed,
    so the name exists only for a whole overlay."""
    overlay = path_of(volume)
    if overlay.exists():
        return str(overlay)
    tmp = overlay.with_name(overlay.name + ".tmp")
    tmp.unlink(missing_ok=True)
    qemu_img("create", "-q", "-f", "qcow2", "-F", volume["format"], "-b",
             os.path.realpath(volume["path"]), str(tmp))
    install_file(tmp, overlay, 0o600)
    return str(overlay)


def discard(volume: JSON) -> bool:
    """Drop the volume's overlay (and a half-made one); whether there was one."""
    overlay = path_of(volume)
    found = False
    for path in (overlay, overlay.with_name(overlay.name + ".tmp")):
        if path.exists():
            path.unlink()
            found = True
    if found:
        fsync_dir(overlay.parent)
    return found


def _own_ranges(overlay: Path) -> list[JSON]:
    """The overlay's own clusters (``qemu-img map`` entries of depth 0): what was written
    through it, data or zeroes."""
    entries = json.loads(qemu_img("map", "--output=json", "-f", "qcow2", str(overlay)))
    return [e for e in entries if e.get("depth") == 0]


def merge(volume: JSON) -> int:
    """Write what the overlay holds into the volume (durably); the bytes merged. A raw
    volume is written through its undo journal (``volume["snapshot"]``), so a roll-back
    undoes a merge cut short; a qcow2 one by ``qemu-img commit`` over its internal snapshot,
    which a roll-back applies. Repeating it writes the same."""
    overlay = path_of(volume)
    if not overlay.exists():
        return 0
    ranges = _own_ranges(overlay)
    total = sum(int(e["length"]) for e in ranges)
    if volume["format"] != "raw":
        qemu_img("commit", "-q", "-d", "-f", "qcow2", str(overlay))
        crash_point()
        return total
    journal = volume.get("snapshot")
    if not journal or not str(journal).endswith(JOURNAL_SUFFIX):
        raise exceptions.ProviderError(
            f"volume {volume.get('volume')} of disk {volume['disk_id']} has no undo journal: "
            "its overlay cannot be merged safely")
    reader = NbdImageReader(str(overlay), "qcow2")
    writer = JournalingWriter(RawFileWriter(volume["path"]), journal)
    done = 0
    halfway = False
    try:
        for entry in ranges:
            start, length = int(entry["start"]), int(entry["length"])
            if entry.get("zero") and not entry.get("data"):
                writer.zero(start, length)
                done += length
            else:
                for offset in range(start, start + length, CHUNK):
                    n = min(CHUNK, start + length - offset)
                    writer.write(offset, reader.read(offset, n))
                    done += n
            if not halfway and done * 2 >= total:
                halfway = True
                writer.flush()
                crash_point()
        writer.flush()
    finally:
        reader.close()
        writer.close()
    return total
