"""Windows registry hives edited offline with libguestfs' hivex calls (``g.hivex_*``).

Value types are the registry's (winnt.h): ``REG_SZ`` 1, ``REG_EXPAND_SZ`` 2, ``REG_BINARY``
3, ``REG_DWORD`` 4 (little endian), ``REG_MULTI_SZ`` 7. Strings are stored UTF-16LE with a
terminating NUL, as Windows writes them. Key and value names are matched case-insensitively,
as Windows does.

``empty_hive`` makes a valid hive with only a root key (the regf format: a 4 KiB base block
whose checksum is the XOR of its first 127 little-endian dwords, then one 4 KiB hive bin with
a root ``nk`` cell, its ``sk`` security cell and a free cell), from which test hives are grown.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ = 1, 2, 3, 4, 7
_BLOCK = 4096
_ROOT_CELL = 0x20  # the root nk cell's offset inside the hive bins
_NONE = 0xFFFFFFFF


def utf16z(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\0\0"


def multi_sz(items: list[str]) -> bytes:
    return b"".join(utf16z(i) for i in items) + b"\0\0"


def dword(value: int) -> bytes:
    return struct.pack("<I", value)


def decode(value_type: int, data: bytes) -> Any:
    """A value's data as Python: str, int, list[str] or bytes (by type)."""
    if value_type in (REG_SZ, REG_EXPAND_SZ):
        return data.decode("utf-16-le", "replace").split("\0", 1)[0]
    if value_type == REG_DWORD and len(data) == 4:
        return struct.unpack("<I", data)[0]
    if value_type == REG_MULTI_SZ:
        return [s for s in data.decode("utf-16-le", "replace").split("\0") if s]
    return data


def _cell(data: bytes) -> bytes:
    """An allocated cell (negative size), padded to 8 bytes."""
    size = (len(data) + 4 + 7) & ~7
    return struct.pack("<i", -size) + data.ljust(size - 4, b"\0")


def empty_hive(root_name: str = "ROOT") -> bytes:
    """An 8 KiB hive holding one empty root key named ``root_name``."""
    name = root_name.encode("ascii")
    sk_offset = _ROOT_CELL + ((0x50 + len(name) + 7) & ~7)
    # Security descriptor: revision 1, self-relative, no owner/group/ACLs.
    descriptor = struct.pack("<BBHIIII", 1, 0, 0x8000, 0, 0, 0, 0)
    nk = struct.pack("<2sHQ15IHH", b"nk", 0x2C, 0, 0, _NONE, 0, 0, _NONE, _NONE,
                     0, _NONE, sk_offset, _NONE, 0, 0, 0, 0, 0, len(name), 0) + name
    sk = struct.pack("<2sHIIII", b"sk", 0, sk_offset, sk_offset, 1, len(descriptor)) + descriptor
    cells = _cell(nk) + _cell(sk)
    free = _BLOCK - 0x20 - len(cells)
    hbin = (struct.pack("<4sIIQQI", b"hbin", 0, _BLOCK, 0, 0, 0) + cells
            + struct.pack("<i", free) + b"\0" * (free - 4))
    base = bytearray(_BLOCK)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, 0, 1, 3, 0, 1, _ROOT_CELL,
                     _BLOCK, 1)
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(base[:0x1FC])):
        checksum ^= word
    struct.pack_into("<I", base, 0x1FC, checksum)
    return bytes(base) + hbin


class Hive:
    """One hive opened for writing in a launched libguestfs handle; keys by path
    (``"ControlSet001\\Services\\viostor"``, relative to the hive's root)."""

    def __init__(self, g: Any, path: str) -> None:
        self.g, self.path = g, path

    def _child(self, node: int, name: str) -> int | None:
        child = self.g.hivex_node_get_child(node, name)
        return int(child) if child else None

    def node(self, key: str, create: bool = False) -> int | None:
        """The node of ``key``; with ``create``, missing keys on the way are added."""
        node = int(self.g.hivex_root())
        for part in [p for p in key.split("\\") if p]:
            child = self._child(node, part)
            if child is None:
                if not create:
                    return None
                child = int(self.g.hivex_node_add_child(node, part))
            node = child
        return node

    def subkeys(self, key: str) -> list[str]:
        node = self.node(key)
        if node is None:
            return []
        return [str(self.g.hivex_node_name(c["hivex_node_h"]))
                for c in self.g.hivex_node_children(node)]

    def values(self, key: str) -> dict[str, tuple[int, bytes]]:
        """``{name: (type, data)}`` of a key (names as stored; {} when the key is missing)."""
        node = self.node(key)
        if node is None:
            return {}
        found = {}
        for v in self.g.hivex_node_values(node):
            handle = v["hivex_value_h"]
            found[str(self.g.hivex_value_key(handle))] = (
                int(self.g.hivex_value_type(handle)), bytes(self.g.hivex_value_value(handle)))
        return found

    def get(self, key: str, name: str) -> Any:
        """A value decoded (``decode``), None when it or its key is missing."""
        for found, (value_type, data) in self.values(key).items():
            if found.lower() == name.lower():
                return decode(value_type, data)
        return None

    def set(self, key: str, name: str, value_type: int, data: bytes) -> None:
        node = self.node(key, create=True)
        assert node is not None
        self.g.hivex_node_set_value(node, name, value_type, data)

    def set_sz(self, key: str, name: str, text: str, expand: bool = False) -> None:
        self.set(key, name, REG_EXPAND_SZ if expand else REG_SZ, utf16z(text))

    def set_dword(self, key: str, name: str, value: int) -> None:
        self.set(key, name, REG_DWORD, dword(value))

    def set_multi_sz(self, key: str, name: str, items: list[str]) -> None:
        self.set(key, name, REG_MULTI_SZ, multi_sz(items))


@contextmanager
def open_hive(g: Any, path: str, write: bool = False) -> Iterator[Hive]:
    """Open the hive file ``path`` (a path in the mounted guest); with ``write``, the changes
    are committed when the block ends without an error, and dropped otherwise."""
    g.hivex_open(path, write=write)
    try:
        yield Hive(g, path)
        if write:
            g.hivex_commit(None)
    finally:
        g.hivex_close()
