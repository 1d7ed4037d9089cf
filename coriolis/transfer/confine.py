"""Reading and writing only inside given folders: what was *opened* is checked (the kernel's
name for each open file), not a name looked up before, so a folder swapped for a symlink
between a check and the open leaves nothing to exploit.

A raw disk is opened without following a last symlink and used through ``/proc/self/fd/N``
(so it stays that file whatever its path leads to later); qemu-nbd's open files (the image,
its backing chain, VMDK extents, data files) are read from ``/proc/PID/fd``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from coriolis import exceptions
from coriolis.transfer.files import RawFileReader, RawFileWriter


def check_opened(files: Iterable[str], bases: Iterable[str | Path], what: str) -> None:
    """``files`` were opened (each named as the kernel resolved it then): ``InvalidInput``
    naming ``what`` and the first file outside unless all are inside one of ``bases``."""
    roots = [Path(os.path.realpath(b)) for b in bases]
    outside = [f for f in files if not any(Path(f).is_relative_to(r) for r in roots)]
    if outside:
        raise exceptions.InvalidInput(f"{what} leads out of the instance folder (to "
                                      f"{outside[0]})")


def hold(path: str, bases: Iterable[str | Path], what: str, *, writable: bool = False) -> int:
    """A descriptor of ``path`` (a last symlink not followed) checked to be inside ``bases``;
    ``InvalidInput`` naming ``what`` when it cannot be opened or leads out."""
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise exceptions.InvalidInput(f"{what} cannot be opened: {exc.strerror}") from None
    try:
        check_opened([os.readlink(f"/proc/self/fd/{fd}")], bases, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _HeldFile:
    """A raw file class (after this one in the MRO) used through a descriptor that ``hold``
    opened (``/proc/self/fd/N``), which is closed after the file."""

    _writable = False

    def __init__(self, path: str, bases: Iterable[str | Path], what: str) -> None:
        self._held = hold(path, bases, what, writable=self._writable)
        try:
            super().__init__(f"/proc/self/fd/{self._held}")  # type: ignore[call-arg]
        except BaseException:
            os.close(self._held)
            raise

    def close(self) -> None:
        super().close()  # type: ignore[misc]
        if self._held >= 0:
            os.close(self._held)
            self._held = -1


class ConfinedRawReader(_HeldFile, RawFileReader):
    """A raw disk (file or block device) read through a descriptor held by ``hold``."""


class ConfinedRawWriter(_HeldFile, RawFileWriter):
    """A raw disk (file or block device) written through a descriptor held by ``hold``."""

    _writable = True
