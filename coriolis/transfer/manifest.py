"""Block-hash manifests: what a destination disk held after the last copy, block by block.

Where a platform has no native change tracking, a re-run compares each source block's xxh3
hash with the manifest and writes only the blocks that differ.
"""

from __future__ import annotations

import os
from array import array
from pathlib import Path

import xxhash

# Reserved entry values: UNKNOWN (content not known, always rewritten) and ZERO (reads as
# zeroes). Real hashes are mapped away from both.
UNKNOWN = 0
ZERO = 1


def block_hash(data: bytes | bytearray | memoryview) -> int:
    """xxh3-64 of a non-zero block, never equal to UNKNOWN or ZERO."""
    value = xxhash.xxh3_64_intdigest(data)
    return value if value > ZERO else value + 2


class BlockManifest:
    def __init__(self, block_size: int, disk_size: int, hashes: array | None = None,
                 fill: int = ZERO) -> None:
        """A new manifest describes a blank (all-zero) destination unless ``fill`` says
        otherwise (``UNKNOWN`` for a destination of unknown content)."""
        self.block_size = block_size
        self.disk_size = disk_size
        count = (disk_size + block_size - 1) // block_size
        self.hashes = hashes if hashes is not None else array("Q", [fill]) * count
        if len(self.hashes) != count:
            raise ValueError("manifest does not match the disk size")

    def get(self, index: int) -> int:
        return self.hashes[index]

    def set(self, index: int, value: int) -> None:
        self.hashes[index] = value

    def to_bytes(self) -> bytes:
        header = array("Q", [self.block_size, self.disk_size]).tobytes()
        return header + self.hashes.tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> BlockManifest:
        header = array("Q")
        header.frombytes(blob[:16])
        hashes = array("Q")
        hashes.frombytes(blob[16:])
        return cls(header[0], header[1], hashes)

    def save(self, path: str | Path) -> None:
        """Write atomically (a crash leaves the previous manifest)."""
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(self.to_bytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> BlockManifest:
        return cls.from_bytes(Path(path).read_bytes())

    @classmethod
    def load_or_new(cls, path: str | Path, block_size: int, disk_size: int) -> BlockManifest:
        try:
            manifest = cls.load(path)
        except FileNotFoundError:
            return cls(block_size, disk_size)
        if manifest.block_size != block_size or manifest.disk_size != disk_size:
            return cls(block_size, disk_size)
        return manifest
