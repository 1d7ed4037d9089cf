"""The undo journal on real files: a roll-back restores the old contents whatever the order
of the writes, a torn record left by a killed writer is cut before a resumed writer appends,
and replaying again (after an interrupted replay) ends the same."""

from __future__ import annotations

import os
from pathlib import Path

from coriolis.transfer.files import RawFileWriter
from coriolis.transfer.journal import JournalingWriter, roll_back, valid_length


def test_resume_after_a_torn_record_and_replay_twice(tmp_path: Path) -> None:
    disk, journal = tmp_path / "d.raw", tmp_path / "d.raw.coriolis-undo"
    old = os.urandom(1 << 20)
    disk.write_bytes(old)
    writer = JournalingWriter(RawFileWriter(str(disk)), journal)
    writer.write(0, b"a" * 4096)
    writer.write(2048, b"b" * 8192)  # overlaps the first write
    writer.zero(100_000, 5000)
    writer.close()
    whole = journal.stat().st_size
    with open(journal, "ab") as f:  # a writer killed while appending a record
        f.write(b"\x00" * 7)
    assert valid_length(journal) == whole
    writer = JournalingWriter(RawFileWriter(str(disk)), journal)
    assert journal.stat().st_size == whole  # the torn tail is cut
    writer.write(500_000, b"c" * 3000)
    writer.close()

    stopped = []

    class Killed(Exception):
        pass

    def kill_half_way(done: int, total: int) -> None:
        if done * 2 >= total:
            stopped.append(done)
            raise Killed

    half = RawFileWriter(str(disk))
    try:
        roll_back(journal, half, progress=kill_half_way)
    except Killed:
        pass
    finally:
        half.close()
    assert stopped and disk.read_bytes() != old
    again = RawFileWriter(str(disk))
    assert roll_back(journal, again) == 4096 + 8192 + 5000 + 3000
    again.close()
    assert disk.read_bytes() == old
