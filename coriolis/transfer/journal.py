"""An undo journal: the old contents of every range a writer overwrites, so that a disk can be
rolled back to how it was before a copy began. Cheap where a full snapshot is not: it holds
only what the copy changed (a replica execution's changed blocks)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from coriolis.transfer.base import Data, DiskWriter

_RECORD = struct.Struct(">QQ")  # offset, length; the old bytes follow


class JournalingWriter:
    """A DiskWriter that records the old contents of a range before changing it."""

    def __init__(self, writer: DiskWriter, journal: str | Path) -> None:
        self._writer = writer
        self._journal = open(journal, "ab")  # noqa: SIM115 - closed in close()

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


def roll_back(journal: str | Path, writer: DiskWriter) -> int:
    """Undo every recorded change (newest first); returns the bytes restored."""
    records = []
    with open(journal, "rb") as f:
        while header := f.read(_RECORD.size):
            if len(header) < _RECORD.size:
                break  # a torn last record: its write never happened
            offset, length = _RECORD.unpack(header)
            old = f.read(length)
            if len(old) < length:
                break
            records.append((offset, old))
    for offset, old in reversed(records):
        writer.write(offset, old)
    writer.flush()
    return sum(len(old) for _, old in records)
