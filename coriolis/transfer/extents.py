"""Finding the allocated ranges of a disk image, so that only data is read."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterable, Iterator

from coriolis import exceptions
from coriolis.transfer.base import Extent


def merge(extents: Iterable[Extent]) -> list[Extent]:
    """Join adjacent extents of the same kind."""
    out: list[Extent] = []
    for ext in extents:
        if ext.length <= 0:
            continue
        if out and out[-1].zero == ext.zero and out[-1].end == ext.offset:
            out[-1] = Extent(out[-1].offset, out[-1].length + ext.length, ext.zero)
        else:
            out.append(ext)
    return out


def sparse_file_extents(path: str, size: int | None = None) -> list[Extent]:
    """Data and hole ranges of a raw file, from SEEK_DATA/SEEK_HOLE."""
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size if size is None else size
        extents: list[Extent] = []
        pos = 0
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    data = end
                else:
                    raise
            data = min(data, end)
            if data > pos:
                extents.append(Extent(pos, data - pos, zero=True))
            if data >= end:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            extents.append(Extent(data, hole - data, zero=False))
            pos = hole
        return merge(extents)
    finally:
        os.close(fd)


def qemu_img_info(path: str, fmt: str | None = None) -> dict:
    cmd = ["qemu-img", "info", "--output=json"]
    if fmt:
        cmd += ["-f", fmt]
    proc = subprocess.run([*cmd, path], capture_output=True, text=True)
    if proc.returncode != 0:
        raise exceptions.ProviderError(
            f"cannot read disk image {os.path.basename(path)}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def qemu_img_extents(path: str, fmt: str) -> list[Extent]:
    """Data and zero ranges of any image format qemu reads, from ``qemu-img map``."""
    proc = subprocess.run(
        ["qemu-img", "map", "--output=json", "-f", fmt, path], capture_output=True, text=True)
    if proc.returncode != 0:
        raise exceptions.ProviderError(
            f"cannot map disk image {os.path.basename(path)}: {proc.stderr.strip()}")
    return merge(
        Extent(int(e["start"]), int(e["length"]), zero=bool(e["zero"]) or not e["data"])
        for e in json.loads(proc.stdout)
    )


def split(extents: Iterable[Extent], chunk_size: int) -> Iterator[Extent]:
    """Cut data extents into chunks of at most ``chunk_size``; zero extents stay whole."""
    for ext in extents:
        if ext.zero:
            yield ext
            continue
        pos = ext.offset
        while pos < ext.end:
            length = min(chunk_size, ext.end - pos)
            yield Extent(pos, length, zero=False)
            pos += length


def qcow2_bitmaps(path: str) -> list[str]:
    """Names of the persistent dirty bitmaps of a qcow2 image."""
    info = qemu_img_info(path, "qcow2")
    data = (info.get("format-specific") or {}).get("data") or {}
    return [b["name"] for b in data.get("bitmaps") or []]
