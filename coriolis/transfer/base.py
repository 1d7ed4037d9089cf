"""The two ends of every disk copy, as providers implement them.

A provider's export side hands out a ``DiskReader``; its import side a ``DiskWriter``.
``coriolis.transfer.copy`` moves data between them; neither end knows about the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

# What a read returns: bytearray where filling a preallocated buffer saves a copy.
Data = bytes | bytearray


@dataclass(frozen=True)
class Extent:
    """A byte range of a disk. ``zero`` ranges read as zeroes (holes, unallocated or zeroed)."""

    offset: int
    length: int
    zero: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.length


class DiskReader(Protocol):
    """Read side of a disk (virtual size in bytes, allocated extents, data)."""

    @property
    def size(self) -> int: ...

    def extents(self, since: str | None = None) -> Iterator[Extent]:
        """Cover the disk in order. With ``since`` (a change-tracking token returned by
        ``change_token`` on an earlier run), yield only ranges that may have changed since."""
        ...

    def read(self, offset: int, length: int) -> Data: ...

    def change_token(self) -> str | None:
        """A token marking 'now' for native change tracking, or None if unsupported."""
        ...

    def close(self) -> None: ...


class DiskWriter(Protocol):
    """Write side of a disk."""

    @property
    def size(self) -> int: ...

    def write(self, offset: int, data: Data) -> None: ...

    def zero(self, offset: int, length: int) -> None:
        """Make the range read as zeroes, leaving a hole where the format allows."""
        ...

    def read(self, offset: int, length: int) -> Data:
        """Read back (used to verify checksums after writing)."""
        ...

    def flush(self) -> None:
        """Make everything written so far durable."""
        ...

    def close(self) -> None: ...
