"""The overlays libvirt minions write replica volumes through (real qemu-img and qemu-nbd, no
libvirt): the volume is untouched while the overlay is written; a merge then a commit leaves
the overlay's writes in the volume; a merge then a roll-back (a crash after a merge, before
the commit point) leaves the volume as it was committed; raw (undo journal) and qcow2
(internal snapshot) volumes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from coriolis.providers.libvirt import overlays
from coriolis.providers.local import replica_disks
from coriolis.transfer.nbd import NbdImageWriter

MiB = 2**20


def make_volume(folder: Path, fmt: str) -> dict:
    raw = folder / "seed.raw"
    with open(raw, "wb") as f:
        f.truncate(16 * MiB)
        for i in range(4):
            f.seek(i * 4 * MiB)
            f.write(os.urandom(MiB))
    path = folder / f"vol.{fmt}"
    if fmt == "raw":
        raw.rename(path)
    else:
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(path)],
                       check=True)
        raw.unlink()
    return {"disk_id": "d0", "volume_id": str(path), "volume": path.name, "path": str(path),
            "format": fmt, "size_bytes": 16 * MiB}


def read_all(path: Path, fmt: str) -> bytes:
    out = path.with_suffix(".check")
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", str(path), str(out)],
                   check=True)
    data = out.read_bytes()
    out.unlink()
    return data


def write_overlay(volume: dict, byte: int) -> None:
    """What a minion's agent would write: data in two places, zeroes in a third."""
    writer = NbdImageWriter(overlays.ensure(volume), "qcow2")
    try:
        writer.write(MiB, bytes([byte]) * (2 * MiB))
        writer.write(9 * MiB, bytes([byte ^ 0xFF]) * 4096)
        writer.zero(12 * MiB, MiB)
        writer.flush()
    finally:
        writer.close()


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_merge_commit_and_merge_roll_back(tmp_path: Path, fmt: str) -> None:
    volume = make_volume(tmp_path, fmt)
    committed = read_all(Path(volume["path"]), fmt)

    # Executed and committed: the overlay's writes end in the volume.
    taken = replica_disks.take([volume], "ex1")["volumes_info"]
    write_overlay(taken[0], 0x5A)
    assert read_all(Path(volume["path"]), fmt) == committed  # untouched while written
    expected = read_all(overlays.path_of(volume), "qcow2")
    assert expected != committed
    assert overlays.merge(taken[0]) >= 3 * MiB
    replica_disks.commit(taken)
    assert overlays.discard(taken[0])
    assert read_all(Path(volume["path"]), fmt) == expected
    assert replica_disks.read_record([volume]) == {"committed": "ex1", "pending": None}

    # Merged, then rolled back (the commit point never reached): the committed state.
    taken = replica_disks.take([volume], "ex2")["volumes_info"]
    write_overlay(taken[0], 0x3C)
    overlays.merge(taken[0])
    overlays.merge(taken[0])  # a merge repeated after a crash
    assert read_all(Path(volume["path"]), fmt) != expected
    outcome = replica_disks.settle(taken)
    assert outcome["rolled_back"] == "ex2"
    overlays.discard(taken[0])
    assert read_all(Path(volume["path"]), fmt) == expected
