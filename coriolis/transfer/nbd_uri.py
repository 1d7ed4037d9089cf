"""Reading an NBD export by URI (``nbd://host:port/name``, ``nbd+unix:///name?socket=PATH``)
with libnbd: a qemu-nbd export, a libvirt pull-mode backup, nbdkit.

Extents come from the ``base:allocation`` block status (all data when the server has none);
given a ``dirty_bitmap``, the ``qemu:dirty-bitmap:NAME`` meta context is asked too and
``extents(since=T)`` yields only the ranges it marks dirty (what changed since the bitmap
was created) when ``T`` is the token the bitmap counts from: ``bitmap_since`` (a libvirt
pull-mode backup exports ``backup-vda`` for the changes since checkpoint ``bitmap_since``),
or the bitmap's own name without one. libnbd is Debian's ``python3-libnbd``; a virtualenv
without it loads it from the system's dist-packages.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from coriolis import exceptions
from coriolis.system_modules import load_system_module
from coriolis.transfer.base import Data, Extent
from coriolis.transfer.extents import merge

MAX_REQUEST = 32 * 1024 * 1024
STATUS_SPAN = 1 << 30  # bytes of block status asked at once
BASE_ALLOCATION = "base:allocation"
_STATE_ZERO, _DIRTY = 2, 1
_LOADING = threading.Lock()


def load_libnbd() -> ModuleType:
    """The ``nbd`` module (libnbd's bindings), from this interpreter or the system's;
    ``ProviderError`` saying what to install when neither has it."""
    with _LOADING:
        try:
            return importlib.import_module("nbd")
        except ImportError:
            pass
        module = load_system_module("nbd", "libnbdmod")
        if module is None:
            raise exceptions.ProviderError(
                "reading an NBD export needs libnbd's Python bindings on this worker (Debian: "
                "apt-get install python3-libnbd)")
        return module


class NbdUriReader:
    """A DiskReader over one NBD connection (libnbd handles are thread-safe: the copy's
    parallel reads share it). ``ProviderError`` naming the URI when it cannot connect."""

    def __init__(self, uri: str, dirty_bitmap: str | None = None,
                 bitmap_since: str | None = None) -> None:
        self.uri, self.dirty_bitmap = uri, dirty_bitmap
        self.bitmap_since = bitmap_since or dirty_bitmap
        self._nbd = load_libnbd()
        self._h: Any = self._nbd.NBD()
        self._h.add_meta_context(BASE_ALLOCATION)
        if dirty_bitmap:
            self._h.add_meta_context(self._bitmap_context)
        try:
            self._h.connect_uri(uri)
            self._size = int(self._h.get_size())
        except self._nbd.Error as exc:
            self._h = None  # libnbd closes a handle when it is dropped
            raise exceptions.ProviderError(f"cannot read NBD export {uri}: {exc}") from None
        if dirty_bitmap and not self._h.can_meta_context(self._bitmap_context):
            self.close()
            raise exceptions.ProviderError(
                f"NBD export {uri} has no dirty bitmap {dirty_bitmap!r}")

    @property
    def _bitmap_context(self) -> str:
        return f"qemu:dirty-bitmap:{self.dirty_bitmap}"

    @property
    def size(self) -> int:
        return self._size

    def _status(self, context: str) -> Iterator[tuple[int, int, int]]:
        """(offset, length, flags) of ``context`` over the whole export."""
        offset = 0
        while offset < self._size:
            found: list[tuple[int, int]] = []

            def collect(metacontext: str, start: int, entries: list[int], err: Any,
                        found: list[tuple[int, int]] = found) -> int:
                if metacontext == context:
                    found.extend(zip(entries[0::2], entries[1::2], strict=True))
                return 0

            try:
                self._h.block_status(min(STATUS_SPAN, self._size - offset), offset, collect)
            except self._nbd.Error as exc:
                raise exceptions.ProviderError(
                    f"block status of NBD export {self.uri} failed at {offset}: {exc}") from None
            if not found:
                raise exceptions.ProviderError(
                    f"NBD export {self.uri} sent no {context} status at offset {offset}")
            for length, flags in found:
                length = min(length, self._size - offset)
                if length <= 0:
                    break
                yield offset, length, flags
                offset += length

    def extents(self, since: str | None = None) -> Iterator[Extent]:
        if since is not None and self.dirty_bitmap and since == self.bitmap_since:
            return iter(merge(Extent(o, n) for o, n, f in self._status(self._bitmap_context)
                              if f & _DIRTY))
        if not self._h.can_meta_context(BASE_ALLOCATION):
            return iter([Extent(0, self._size)])
        return iter(merge(Extent(o, n, zero=bool(f & _STATE_ZERO))
                          for o, n, f in self._status(BASE_ALLOCATION)))

    def read(self, offset: int, length: int) -> Data:
        buf = bytearray()
        try:
            while len(buf) < length:
                n = min(MAX_REQUEST, length - len(buf))
                buf += self._h.pread(n, offset + len(buf))
        except self._nbd.Error as exc:
            raise exceptions.ProviderError(
                f"reading NBD export {self.uri} at {offset} failed: {exc}") from None
        return buf

    def change_token(self) -> str | None:
        return None

    def close(self) -> None:
        if self._h is not None:
            try:
                self._h.shutdown()
            except self._nbd.Error:
                pass
            self._h = None  # libnbd closes a handle when it is dropped
