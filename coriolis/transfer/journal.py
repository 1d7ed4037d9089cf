"""An undo journal: the old contents of every range a writer overwrites, so that a disk can be
rolled back to how it was before a copy began. Cheap where a full snapshot is not: it holds
only what the copy changed (a replica execution's changed blocks).

Crash safety: a record (offset, length, old bytes) reaches the journal file before the write it
undoes is issued, so a process killed at any moment leaves a journal that undoes every write
that happened; a torn last record is one whose write never happened. A writer opened again on
the journal (a copy resumed after a crash) first cuts such a torn tail, so that its records
follow whole ones. Replaying is idempotent: records are undone newest first, so replaying a
journal again, whole or after an interrupted replay, ends with the same old contents.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from coriolis.transfer.base import Data, DiskWriter

_RECORD = struct.Struct(">QQ")  # offset, length; the old bytes follow


class JournalingWriter:
    """A DiskWriter that records the old contents of a range before changing it."""

    def __init__(self, writer: DiskWriter, journal: str | Path) -> None:
        self._writer = writer
        self._journal = open(journal, "ab")  # noqa: SIM115 - closed in close()
        valid = valid_length(journal)
        if self._journal.tell() > valid:  # a torn record a killed writer left
            self._journal.truncate(valid)
            self._journal.seek(valid)

    @property
    def size(self) -> int:
        return self._writer.size

    def _save(self, offset: int, length: int) -> None:
        old = self._writer.read(offset, length)
        self._journal.write(_RECORD.pack(offset, length) + old)
        self._journal.flush()

    def write(self, offset: int, data: Data) -> None:
        self._save(offset, len(data))
        self._writer.write(offset, data)

    def zero(self, offset: int, length: int) -> None:
        self._save(offset, length)
        self._writer.zero(offset, length)

    def read(self, offset: int, length: int) -> Data:
        return self._writer.read(offset, length)

    def flush(self) -> None:
        os.fsync(self._journal.fileno())
        self._writer.flush()

    def close(self) -> None:
        self._journal.close()
        self._writer.close()


def _records(journal: str | Path) -> Iterator[tuple[int, int, int]]:
    """The whole records of a journal, oldest first, as (disk offset, length, position of
    the old bytes in the journal)."""
    with open(journal, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        while header := f.read(_RECORD.size):
            if len(header) < _RECORD.size:
                return  # a torn last record: its write never happened
            offset, length = _RECORD.unpack(header)
            position = f.tell()
            if position + length > end:
                return
            f.seek(length, os.SEEK_CUR)
            yield offset, length, position


def valid_length(journal: str | Path) -> int:
    """Bytes of the journal taken by whole records."""
    return sum(_RECORD.size + length for _, length, _ in _records(journal))


def roll_back(journal: str | Path, writer: DiskWriter,
              progress: Callable[[int, int], None] | None = None) -> int:
    """Undo every recorded change (newest first, reading one record at a time) and flush;
    returns the bytes restored. ``progress(records_done, records_total)`` is called after
    each record."""
    records = list(_records(journal))
    with open(journal, "rb") as f:
        for done, (offset, length, position) in enumerate(reversed(records), 1):
            f.seek(position)
            writer.write(offset, f.read(length))
            if progress is not None:
                progress(done, len(records))
    writer.flush()
    return sum(length for _, length, _ in records)
