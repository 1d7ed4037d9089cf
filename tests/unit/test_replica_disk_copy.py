"""A deploy on a replica's raw disks themselves (``clone_disks: false``) snapshots them with a
point-in-time copy (coriolis/providers/local/replica_disks.py), so that a failed deploy rolls
back every write to them, not only what a disk writer journals. Real files; the kills at each
crash point of the snapshot code are simulated in-process (``crash_point`` raises, leaving the
files as a kill -9 there would); the real kill -9 of the server is the crash matrix's row
``test_replica_deploy_without_clone_rolls_back_writes_to_the_instance_disks``."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from coriolis.providers.local import replica_disks

KiB = 1024
SIZE = 256 * KiB


class Killed(BaseException):
    """A simulated kill -9 at a crash point."""


@pytest.fixture
def volumes(tmp_path: Path) -> list[dict[str, Any]]:
    """Two raw volumes with random contents (one sparse at its end)."""
    rng = random.Random(7)
    made = []
    for i in range(2):
        path = tmp_path / f"vm-disk{i}.raw"
        path.write_bytes(rng.randbytes(SIZE // (i + 1)))
        os.truncate(path, SIZE)
        made.append({"disk_id": f"disk{i}", "path": str(path), "format": "raw"})
    return made


def contents(volumes: list[dict[str, Any]]) -> list[bytes]:
    return [Path(v["path"]).read_bytes() for v in volumes]


def scribble(volumes: list[dict[str, Any]], seed: int) -> None:
    """Write the volumes as OS morphing or a guest would: not through a disk writer."""
    rng = random.Random(seed)
    for volume in volumes:
        with open(volume["path"], "r+b") as f:
            f.seek(rng.randrange(SIZE - 8 * KiB))
            f.write(rng.randbytes(8 * KiB))


def debris(tmp_path: Path) -> list[str]:
    """Files beside the volumes but the commit record."""
    return sorted(p.name for p in tmp_path.iterdir()
                  if not p.name.endswith((".raw", replica_disks.RECORD_SUFFIX)))


def test_a_deploy_snapshot_rolls_back_writes_no_journal_sees(volumes, tmp_path) -> None:
    before = contents(volumes)
    taken = replica_disks.take(volumes, "deploy-1", for_deploy=True)
    assert debris(tmp_path) == [f"vm-disk{i}.raw.coriolis-copy" for i in range(2)]
    # A disk writer opened on such a volume journals nothing: the copy needs no journal.
    assert [replica_disks.journal_of(v) for v in taken["volumes_info"]] == [None, None]
    scribble(volumes, 1)
    assert contents(volumes) != before
    outcome = replica_disks.settle(volumes)
    assert outcome["rolled_back"] == "deploy-1"
    assert contents(volumes) == before
    assert debris(tmp_path) == []
    assert replica_disks.read_record(volumes) == {"committed": None, "pending": None}


def test_a_committed_deploy_snapshot_keeps_the_writes(volumes, tmp_path) -> None:
    replica_disks.take(volumes, "deploy-1", for_deploy=True)
    scribble(volumes, 2)
    written = contents(volumes)
    assert replica_disks.commit(volumes)["committed"] == "deploy-1"
    assert contents(volumes) == written
    assert debris(tmp_path) == []


def test_an_execution_snapshot_is_still_an_undo_journal(volumes, tmp_path) -> None:
    taken = replica_disks.take(volumes, "exec-1")
    assert debris(tmp_path) == [f"vm-disk{i}.raw.coriolis-undo" for i in range(2)]
    assert [replica_disks.journal_of(v) for v in taken["volumes_info"]] == [
        f"{v['path']}.coriolis-undo" for v in volumes]
    replica_disks.settle(volumes)


def _kill_at(monkeypatch: pytest.MonkeyPatch, n: int) -> Callable[[], bool]:
    """Make the ``n``-th crash point (0-based) from now a simulated kill; returns whether it
    fired."""
    calls = {"n": 0, "fired": False}

    def crash_point() -> None:
        calls["n"] += 1
        if calls["n"] - 1 == n:
            calls["fired"] = True
            raise Killed
    monkeypatch.setattr(replica_disks, "crash_point", crash_point)
    return lambda: bool(calls["fired"])


def _until_done(step: Callable[[], Any]) -> None:
    """Run ``step`` again after each simulated kill, as the engine runs a task again."""
    for _ in range(10):
        try:
            step()
            return
        except Killed:
            continue
    raise AssertionError("never finished")


@pytest.mark.parametrize("outcome", ["rolled-back", "committed"])
def test_killed_at_any_point_the_volumes_end_committed(volumes, tmp_path, monkeypatch,
                                                       outcome) -> None:
    """A kill at each crash point of the snapshot, of the roll-back or of the commit, then
    the step run again: the volumes hold the last committed state (rolled back) or the
    deploy's writes (committed), and no copy is left."""
    before = contents(volumes)
    n = 0
    while True:
        for volume, data in zip(volumes, before, strict=True):
            Path(volume["path"]).write_bytes(data)
        fired = _kill_at(monkeypatch, n)
        _until_done(partial(replica_disks.take, volumes, f"deploy-{n}", for_deploy=True))
        scribble(volumes, n)
        written = contents(volumes)
        if outcome == "rolled-back":
            _until_done(lambda: replica_disks.settle(volumes))
            assert contents(volumes) == before, f"killed at point {n}"
        else:
            _until_done(lambda: replica_disks.commit(volumes))
            assert contents(volumes) == written, f"killed at point {n}"
            assert replica_disks.read_record(volumes)["committed"] == f"deploy-{n}"
        assert debris(tmp_path) == [], f"killed at point {n}"
        assert replica_disks.read_record(volumes)["pending"] is None
        if not fired():
            break
        n += 1
    print(f"{outcome}: killed at each of {n} crash points")
    assert n >= 4  # take: 2 volumes; settle: 2 volumes + its end; commit: record + end


def test_a_copy_half_made_by_a_killed_snapshot_is_dropped(volumes, tmp_path) -> None:
    """Killed while ``cp`` wrote the copy: the record says pending, a ``.tmp`` copy is
    there. The roll-back leaves the volume (nothing wrote it yet) and drops the ``.tmp``."""
    before = contents(volumes)
    replica_disks.take(volumes, "deploy-1", for_deploy=True)
    for volume in volumes:  # as the kill left it: renamed back to the half-made name
        copy = Path(volume["path"] + replica_disks.COPY_SUFFIX)
        os.truncate(copy, SIZE // 3)
        copy.rename(f"{copy}.tmp")
    assert replica_disks.settle(volumes)["rolled_back"] == "deploy-1"
    assert contents(volumes) == before
    assert debris(tmp_path) == []


def test_the_lock_still_excludes_after_a_roll_back_renamed_a_copy_over_the_volume(
        volumes) -> None:
    """A roll-back renames each copy over its volume while the disks' lock is held: whoever
    comes next (opening the volume's new file) must still wait for the holder."""
    replica_disks.take(volumes, "deploy-1", for_deploy=True)
    entered = threading.Event()

    def third() -> None:
        with replica_disks._locked(volumes):
            entered.set()

    with replica_disks._locked(volumes):
        replica_disks._settle(volumes)  # renames each copy over its volume
        thread = threading.Thread(target=third)
        thread.start()
        assert not entered.wait(0.5), "another caller ran beside the lock's holder"
    assert entered.wait(10)
    thread.join()
