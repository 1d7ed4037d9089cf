"""Sparse disk layouts shared by the data-path tests and benchmarks (issue 20): which byte
ranges of a raw file hold data. Every layout is a list of (offset, length) in bytes."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

KiB, MiB = 1024, 1024 * 1024
Pieces = list[tuple[int, int]]


def every_other_mib(size: int) -> Pieces:
    """1 MiB of data every 2 MiB."""
    return [(o, MiB) for o in range(0, size - MiB + 1, 2 * MiB)]


def scattered_64k(size: int, count: int = 200, seed: int = 3) -> Pieces:
    """``count`` 64 KiB pieces at random 4 KiB-aligned offsets: most straddle two 64 KiB
    manifest blocks."""
    rng = random.Random(seed)
    return [(rng.randrange(0, (size - 64 * KiB) // 4096) * 4096, 64 * KiB)
            for _ in range(count)]


def contiguous(size: int) -> Pieces:
    """One run of data, unaligned, a third of the disk."""
    return [(size // 10 + 12 * KiB, size // 3)]


def full(size: int) -> Pieces:
    return [(0, size)]


def spread(size: int, data: int) -> Pieces:
    """``data`` bytes in 1 MiB pieces spread evenly (8 GiB with 3 GiB: one every 2 MiB)."""
    pieces = data // MiB
    stride = size // pieces // MiB * MiB
    return [(i * stride, MiB) for i in range(pieces)]


LAYOUTS: dict[str, Callable[[int], Pieces]] = {
    "1MiB-every-2MiB": every_other_mib, "64KiB-scattered": scattered_64k,
    "contiguous": contiguous, "full": full}


def write_layout(path: Path, size: int, pieces: Pieces) -> int:
    """A sparse raw file of ``size`` with random bytes at ``pieces`` (from a 64 MiB pool, so
    that large layouts are quick to write); returns the bytes written."""
    pool = random.Random(1).randbytes(64 * MiB)
    written = 0
    with open(path, "wb") as f:
        f.truncate(size)
        for i, (offset, length) in enumerate(pieces):
            f.seek(offset)
            pos = 0
            while pos < length:
                n = min(length - pos, 32 * MiB)
                start = (i * 4096 * 7 + pos) % (len(pool) - n) if len(pool) > n else 0
                f.write(pool[start:start + n])
                pos += n
            written += length
    return written
