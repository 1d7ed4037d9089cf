"""Replica disks that are always in a known committed state.

Before an execution writes a replica's disks, each volume gets a snapshot: an undo journal
beside a raw volume (``<disk>.coriolis-undo``, filled by the writer with the old contents of
what it overwrites), an internal snapshot in a qcow2 one (``coriolis-replica``). A deploy on
the replica disks themselves (no ``clone_disks``) writes them by other means than the writer
(OS morphing through libguestfs, the booted guest), which no undo journal sees: a raw volume
gets a point-in-time copy beside it instead (``<disk>.coriolis-copy``, see ``_copy_volume``
for its cost). The snapshot is then either committed (the execution succeeded) or rolled back
(anything else). Which of the two happened is recorded in one small file per instance, beside
its first volume, ``<disk>.coriolis-commit``::

    {"committed": "<id of the last committed snapshot>", "pending": "<id>" | null}

- ``take``: settle what an earlier snapshot left, record ``pending`` (durably), then make the
  snapshots; made again from scratch when repeated.
- ``commit``: record ``committed = pending, pending = null`` (one atomic rename: THE commit
  point, for every volume of the instance at once), then drop the snapshots.
- ``settle``: a ``pending`` snapshot is rolled back (the journal replayed, the copy renamed over
  the volume, the qcow2 snapshot applied), then dropped, then ``pending`` cleared; snapshots
  left without a ``pending`` belong to a committed execution whose commit was interrupted:
  they are dropped.

A volume that is a whole block device (``block_device``, see ``devices.py``) keeps these side
files under its ``state_base`` in the cloud's storage folder instead of beside its path
(``/dev/...``): ``<state_base>.coriolis-undo``, ``.coriolis-copy`` (a sparse file holding the
device's contents, written back onto the device by a roll-back), ``.coriolis-commit``.

Every step is safe to repeat after a crash at any point (replaying a journal again writes the
same old contents; a copy renamed over its volume is gone, one half-made (``.tmp``) is only
ever dropped; an applied snapshot is applied again), so a restore, a snapshot or a commit
that was killed half-way is finished by running it again, or by ``settle`` in whatever touches
the disks next. All of it runs under an exclusive ``flock`` of the first volume's file, so a
restore and a commit of the same disks never interleave (taken again when a roll-back renamed
a copy over that file while it waited).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coriolis import exceptions
from coriolis.providers.local.cloud import fsync_dir, install_file, write_json_atomic
from coriolis.providers.local.source_snapshot import reflink_copy
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.files import RawFileReader, RawFileWriter
from coriolis.transfer.journal import roll_back
from coriolis.worker.faults import crash_point

JSON = dict[str, Any]
JOURNAL_SUFFIX = ".coriolis-undo"
COPY_SUFFIX = ".coriolis-copy"
RECORD_SUFFIX = ".coriolis-commit"
SNAPSHOT_NAME = "coriolis-replica"


def _qemu_img(*args: str) -> str:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise exceptions.ProviderError(f"qemu-img {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def _base(volume: JSON) -> str:
    """What the side files of ``volume`` are named after: its ``state_base`` (a block
    device's, in the cloud's storage folder), else its path."""
    return str(volume.get("state_base") or volume["path"])


def _record_path(volumes: list[JSON]) -> Path:
    return Path(f"{_base(volumes[0])}{RECORD_SUFFIX}")


def read_record(volumes: list[JSON]) -> JSON:
    """The instance's commit record (``committed``/``pending`` ids, None when absent)."""
    path = _record_path(volumes)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        record = {}
    except ValueError as exc:  # never torn (written by rename); a hand-edited one
        raise exceptions.ProviderError(f"{path.name} is not valid JSON: {exc}") from None
    return {"committed": record.get("committed"), "pending": record.get("pending")}


def _write_record(volumes: list[JSON], committed: str | None, pending: str | None) -> None:
    write_json_atomic(_record_path(volumes), {"committed": committed, "pending": pending})


@contextlib.contextmanager
def _locked(volumes: list[JSON]) -> Iterator[None]:
    """Exclusive use of an instance's replica disks: a flock of the folder of the first
    volume, which nothing renames (a roll-back renames a copy over a volume, so a lock of the
    volume's own file would stop excluding whoever opens the new file). It serialises the
    snapshot, commit and roll-back steps of the replicas sharing that folder, never their
    copies; qemu's OFD byte-range locks on the images are not touched."""
    try:
        fd = os.open(os.path.dirname(_base(volumes[0])), os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _journal(volume: JSON) -> Path:
    return Path(f"{_base(volume)}{JOURNAL_SUFFIX}")


def _copy(volume: JSON) -> Path:
    return Path(f"{_base(volume)}{COPY_SUFFIX}")


def _write_back(copy: Path, device: str) -> None:
    """Put a block device back as its copy holds it (every range: what reads as zeroes in
    the copy is zeroed on the device); repeating it writes the same."""
    reader, writer = RawFileReader(str(copy)), RawFileWriter(device)
    try:
        copy_disk(reader, writer, dest_is_blank=False)
    finally:
        reader.close()
        writer.close()


def _raw_snapshot_files(volume: JSON) -> list[Path]:
    """What a raw volume's snapshot may be made of: its undo journal, its copy, a copy
    half-made (``.tmp``)."""
    copy = _copy(volume)
    return [_journal(volume), copy, copy.with_name(copy.name + ".tmp")]


def journal_of(volume: JSON) -> str | None:
    """The undo journal a disk writer of ``volume`` must fill, or None (no snapshot, a qcow2
    one, or a raw volume's copy, which needs none)."""
    snapshot = volume.get("snapshot")
    if volume["format"] == "raw" and snapshot and snapshot.endswith(JOURNAL_SUFFIX):
        return str(snapshot)
    return None


def _copy_volume(volume: JSON) -> str:
    """Make a raw volume's point-in-time copy ``<disk>.coriolis-copy``: written as ``.tmp``,
    fsynced, renamed, the folder fsynced (so the name exists only for a whole, durable copy).

    ``cp --reflink=auto --sparse=always``: on a file system with reflinks (XFS, btrfs) the copy
    shares the volume's extents, instant and free until either is written. Elsewhere (ext4)
    it is a real copy of the volume's allocated data: as much free space again, and the time
    to read and write it (1 to 4 s per GiB allocated on this project's shared ext4 test
    machine, against 2 ms for an undo journal); the deploy's snapshot task fails
    (ProviderError, nothing deployed) when space runs out. Rolling back is a rename, whatever
    the size; committing deletes the copy."""
    path = Path(volume["path"])
    copy = _copy(volume)
    tmp = copy.with_name(copy.name + ".tmp")
    tmp.unlink(missing_ok=True)
    reflink_copy(path, tmp)
    install_file(tmp, copy, stat.S_IMODE(os.stat(path).st_mode))
    return str(copy)


def _qcow2_has_snapshot(volume: JSON) -> bool:
    listed = _qemu_img("info", "-U", "--output=json", "-f", "qcow2", volume["path"])
    return any(s.get("name") == SNAPSHOT_NAME for s in json.loads(listed).get("snapshots") or [])


def _has_snapshot(volume: JSON) -> bool:
    if not os.path.exists(volume["path"]):
        return False
    if volume["format"] == "raw":
        return any(p.exists() for p in _raw_snapshot_files(volume))
    return _qcow2_has_snapshot(volume)


def _drop(volume: JSON) -> None:
    """Drop a volume's snapshot, keeping the volume as it is (done already is done)."""
    if volume["format"] == "raw":
        files = [p for p in _raw_snapshot_files(volume) if p.exists()]
        for path in files:
            path.unlink()
        if files:
            fsync_dir(files[0].parent)
    elif _has_snapshot(volume):
        _qemu_img("snapshot", "-d", SNAPSHOT_NAME, volume["path"])


def _revert(volume: JSON) -> int:
    """Roll a volume back to its snapshot and drop it; returns the bytes restored (qcow2: 0,
    unknown). Repeating it after an interrupted run finishes the same roll-back."""
    if not _has_snapshot(volume):
        return 0
    copy = _copy(volume)
    if volume["format"] == "raw" and copy.exists():
        # The copy is the volume as it was: it takes the volume's name at once (a journal
        # beside it has nothing left to undo); a device's copy is written back onto it.
        if volume.get("block_device"):
            _write_back(copy, volume["path"])
            copy.unlink()
        else:
            os.replace(copy, volume["path"])
        fsync_dir(copy.parent)
        restored = 0
    elif volume["format"] == "raw" and _journal(volume).exists():
        def halfway(done: int, total: int) -> None:
            if done * 2 >= total:
                crash_point()

        writer = RawFileWriter(volume["path"])
        try:
            restored = roll_back(_journal(volume), writer, progress=halfway)
        finally:
            writer.close()
    elif volume["format"] == "raw":  # only a half-made copy: nothing was written since
        restored = 0
    else:
        _qemu_img("snapshot", "-a", SNAPSHOT_NAME, volume["path"])
        restored = 0
    _drop(volume)
    return restored


def _without_snapshot(volumes: list[JSON]) -> list[JSON]:
    return [{k: v for k, v in volume.items() if k not in ("snapshot", "snapshot_id")}
            for volume in volumes]


def _settle(volumes: list[JSON], last_point: bool = True) -> JSON:
    """``settle`` under the lock; ``last_point``: pass a crash point at the end (for the crash
    tests, so that a settle with nothing to do has one too)."""
    record = read_record(volumes)
    pending = record["pending"]
    leftovers = [v for v in volumes if _has_snapshot(v)]
    restored = 0
    if pending is not None:
        for volume in volumes:
            restored += _revert(volume)
            crash_point()
        _write_record(volumes, record["committed"], None)
    else:
        for volume in leftovers:
            _drop(volume)
    if last_point:
        crash_point()
    return {"volumes_info": _without_snapshot(volumes), "committed": record["committed"],
            "rolled_back": pending, "bytes_restored": restored,
            "finished_commit": pending is None and bool(leftovers)}


def settle(volumes: list[JSON]) -> JSON:
    """Bring an instance's replica disks to a committed state: roll back a snapshot that was
    never committed, drop one whose commit was interrupted.

    Returns ``{"volumes_info": volumes without snapshot keys, "committed": id of the last
    committed snapshot or None, "rolled_back": id of the snapshot rolled back or None,
    "bytes_restored": bytes an undo journal put back, "finished_commit": whether snapshots of
    a committed one were dropped}``."""
    if not volumes:
        return {"volumes_info": [], "committed": None, "rolled_back": None,
                "bytes_restored": 0, "finished_commit": False}
    with _locked(volumes):
        return _settle(volumes)


def take(volumes: list[JSON], snapshot_id: str, for_deploy: bool = False) -> JSON:
    """Settle, then snapshot every volume for ``snapshot_id`` (an execution's id); returns the
    settle result, its ``volumes_info`` recording each snapshot (``snapshot``: the journal's
    path, the copy's path or the qcow2 snapshot's name; ``snapshot_id``). ``for_deploy``: an
    instance will run on the volumes themselves, so anything may write them; a raw volume then
    gets a copy (``_copy_volume``) instead of an undo journal only a disk writer fills."""
    if not volumes:
        return settle(volumes)
    with _locked(volumes):
        outcome = _settle(volumes, last_point=False)
        _write_record(volumes, outcome["committed"], snapshot_id)
        result = []
        for volume in outcome["volumes_info"]:
            if volume["format"] == "raw" and for_deploy:
                snapshot = _copy_volume(volume)
            elif volume["format"] == "raw":
                journal = _journal(volume)
                with open(journal, "wb") as f:
                    os.fsync(f.fileno())
                fsync_dir(journal.parent)
                snapshot = str(journal)
            else:
                _qemu_img("snapshot", "-c", SNAPSHOT_NAME, volume["path"])
                snapshot = SNAPSHOT_NAME
            result.append({**volume, "snapshot": snapshot, "snapshot_id": snapshot_id})
            crash_point()
        return {**outcome, "volumes_info": result}


def commit(volumes: list[JSON]) -> JSON:
    """Commit the snapshot the volumes record (their ``snapshot_id``; else the pending one):
    the writes made since stay, the snapshots go. Returns what ``settle`` returns, with
    ``committed`` the committed id. A snapshot that was rolled back already cannot be
    committed (ProviderError)."""
    if not volumes:
        return settle(volumes)
    wanted = next((v["snapshot_id"] for v in volumes if v.get("snapshot_id")), None)
    with _locked(volumes):
        record = read_record(volumes)
        snapshot_id = wanted or record["pending"]
        if snapshot_id is not None and record["pending"] == snapshot_id:
            _write_record(volumes, snapshot_id, None)  # the commit point
            crash_point()
        elif snapshot_id is not None and record["committed"] != snapshot_id:
            raise exceptions.ProviderError(
                f"the replica disk snapshot of {snapshot_id} was rolled back already; its "
                "writes cannot be committed")
        outcome = _settle(volumes, last_point=False)
        crash_point()
        return {**outcome, "finished_commit": False}


def forget(volumes: list[JSON]) -> None:
    """Remove the snapshots and the commit record of volumes being deleted."""
    for volume in volumes:
        for path in _raw_snapshot_files(volume):
            path.unlink(missing_ok=True)
    if volumes:
        _record_path(volumes).unlink(missing_ok=True)
