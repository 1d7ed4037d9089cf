"""Raw files as disks: positional I/O, holes punched for zeroes."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator

from coriolis.transfer.base import Data, Extent
from coriolis.transfer.extents import sparse_file_extents

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
_SYNC_FILE_RANGE_WRITE = 2
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a range (reads back as zeroes). False if the file system cannot."""
    rc = _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)
    return rc == 0


def read_exactly(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) < length:  # short read at EOF of a file smaller than its virtual size
        data += bytes(length - len(data))
    return data


class RawFileReader:
    """Reads a raw image; extents from SEEK_DATA/SEEK_HOLE."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def extents(self, since: str | None = None) -> Iterator[Extent]:
        return iter(sparse_file_extents(self.path, self._size))

    def read(self, offset: int, length: int) -> Data:
        return read_exactly(self._fd, offset, length)

    def change_token(self) -> str | None:
        return None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class RawFileWriter:
    """Writes a raw image in place (it must exist, at its final size)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def write(self, offset: int, data: Data) -> None:
        start = offset
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view = view[written:]
            offset += written
        # Start writing the range out now: dirty pages never pile up to the kernel's
        # throttling threshold, and the final fsync has little left to do (measured: a
        # 512 MiB copy goes from ~0.5 s, with stalls up to 1.7 s, to a steady ~0.3 s).
        _libc.sync_file_range(self._fd, start, offset - start, _SYNC_FILE_RANGE_WRITE)

    def zero(self, offset: int, length: int) -> None:
        if not punch_hole(self._fd, offset, length):
            block = bytes(min(length, 1 << 20))
            end = offset + length
            while offset < end:
                n = min(len(block), end - offset)
                self.write(offset, block[:n])
                offset += n

    def read(self, offset: int, length: int) -> Data:
        return read_exactly(self._fd, offset, length)

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
