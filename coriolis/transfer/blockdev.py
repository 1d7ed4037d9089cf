"""Block devices as disks: size, read-only state and zeroing through the kernel's ioctls.

``RawFileReader``/``RawFileWriter`` (``transfer.files``) use these when the path they open is
a block device (``is_block_device``): its size comes from ``BLKGETSIZE64`` (``st_size`` of a
device node is 0), every range of it is data (``SEEK_DATA`` fails with EINVAL on a block
device: there is no extents information; the copy pipeline still skips the chunks that read
as zeroes), a flush is an ``fsync`` of the device, and ``zero_range`` zeroes a range.

Zeroing, and why a plain discard is never used for it. The kernel no longer tells whether a
discard leaves zeroes behind: ``discard_zeroes_data`` was removed in Linux 4.12 (commit
48920ff2a5a9, "block: remove the discard_zeroes_data flag"), and
``Documentation/ABI/stable/sysfs-block`` says of ``/sys/block/<disk>/queue/discard_zeroes_data``
"Will always return 0. Don't rely on any specific behavior for discards, and don't read this
file". What the kernel guarantees instead is a *zeroing* operation, which it may carry out
by unmapping only where the device promises zeroes (``REQ_OP_WRITE_ZEROES``; see
``blkdev_issue_zeroout`` in ``block/blk-lib.c``). ``block/fops.c`` (``blkdev_fallocate``)
exposes it two ways:

- ``fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`` on a block device is
  ``blkdev_issue_zeroout(..., BLKDEV_ZERO_NOFALLBACK)``: zeroes guaranteed, deallocating
  where the device can (a thin volume, a loop device over a sparse file gets a hole), and
  ``EOPNOTSUPP`` rather than writing zeroes where it cannot; only
  ``FALLOC_FL_NO_HIDE_STALE`` added to those flags is a plain discard (not used here).
- ``ioctl(BLKZEROOUT)`` is ``blkdev_issue_zeroout(..., BLKDEV_ZERO_NOUNMAP)``: zeroes
  guaranteed, the device's write-zeroes command where it has one, else the kernel writes
  zero pages itself.

``zero_range`` tries them in that order and finally writes zeroes with ``pwrite``; ranges
not aligned to the device's logical block size get written zeroes for their unaligned ends.
Both kernel paths drop the device's page cache for the range first, so a later buffered read
sees the zeroes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
import struct

from coriolis import exceptions

BLKROGET = 0x125E  # _IO(0x12, 94): int, nonzero when the device is read-only
BLKSSZGET = 0x1268  # _IO(0x12, 104): int, logical block size
BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t): size in bytes
BLKZEROOUT = 0x127F  # _IO(0x12, 127): uint64 [start, length], both 512-aligned

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
_ZERO_BLOCK = 1 << 20


def is_block_device(fd: int) -> bool:
    """Whether the open descriptor ``fd`` is a block device."""
    return stat.S_ISBLK(os.fstat(fd).st_mode)


def _int_ioctl(fd: int, request: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(fd, request, b"\0" * 4))[0])


def device_size(fd: int) -> int:
    """Size in bytes of the block device open as ``fd`` (``BLKGETSIZE64``)."""
    return int(struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))[0])


def is_read_only(fd: int) -> bool:
    """Whether the block device open as ``fd`` refuses writes (``BLKROGET``: a read-only
    loop device, ``blockdev --setro``, a write-protected disk). Opening such a device for
    writing succeeds; only its writes fail (EPERM)."""
    return _int_ioctl(fd, BLKROGET) != 0


def logical_block_size(fd: int) -> int:
    """The device's logical block size in bytes (``BLKSSZGET``), the unit of zeroing."""
    return _int_ioctl(fd, BLKSSZGET)


def check_writable(fd: int, path: str) -> None:
    """``ProviderError`` naming ``path`` if the block device open as ``fd`` is read-only."""
    if is_read_only(fd):
        raise exceptions.ProviderError(
            f"block device {path} is read-only; it cannot be written (a loop device "
            "attached with 'losetup -r', or 'blockdev --setro')")


def open_for_writing(path: str) -> int:
    """``os.open(path, O_RDWR)``, with ``O_EXCL`` when ``path`` is a block device: a device
    mounted or held exclusively by another user (``EBUSY``) is a ``ProviderError`` naming it,
    never written under a file system."""
    try:
        device = stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        device = False  # the open below names the missing file
    try:
        return os.open(path, os.O_RDWR | (os.O_EXCL if device else 0))
    except OSError as exc:
        if device and exc.errno == errno.EBUSY:
            raise exceptions.ProviderError(
                f"block device {path} is in use (mounted, or held by another program); it "
                "cannot be written") from None
        raise


def write_zeroes(fd: int, offset: int, length: int) -> None:
    """Write zero bytes over ``[offset, offset + length)`` with ``pwrite``."""
    block = bytes(min(length, _ZERO_BLOCK))
    end = offset + length
    while offset < end:
        offset += os.pwrite(fd, memoryview(block)[:min(len(block), end - offset)], offset)


def _kernel_zeroout(fd: int, offset: int, length: int) -> bool:
    """Zero an aligned range by the kernel: a deallocating zeroout, else ``BLKZEROOUT``.
    False when neither is available for this device (the caller writes zeroes)."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    try:
        fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", offset, length))
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
            return False
        raise
    return True


def zero_range(fd: int, offset: int, length: int) -> None:
    """Make ``[offset, offset + length)`` of the block device open as ``fd`` read as
    zeroes (see the module docstring for how); OSError (EPERM on a read-only device) when
    it cannot be written."""
    unit = logical_block_size(fd)
    start = -(-offset // unit) * unit
    end = (offset + length) // unit * unit
    if end <= start:
        write_zeroes(fd, offset, length)
        return
    if start > offset:
        write_zeroes(fd, offset, start - offset)
    if not _kernel_zeroout(fd, start, end - start):
        write_zeroes(fd, start, end - start)
    if offset + length > end:
        write_zeroes(fd, end, offset + length - end)
