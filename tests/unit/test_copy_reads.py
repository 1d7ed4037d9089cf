"""Issue 20, goal 1: the copy pipeline reads the allocated bytes and nothing more, for every
layout, with and without a 64 KiB block manifest (as a replica or migration copy uses), and
its progress counts allocated bytes. The bytes read are counted at the reader, on real
sparse files (raw: SEEK_DATA/SEEK_HOLE) and a real qcow2 image served by qemu-nbd."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.bench_layouts import LAYOUTS, every_other_mib, write_layout
from coriolis.transfer.base import Data, DiskReader, Extent
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.files import RawFileWriter
from coriolis.transfer.images import open_image_reader
from coriolis.transfer.manifest import BlockManifest

MiB = 1024 * 1024
SIZE = 64 * MiB
BLOCK = 64 * 1024  # the worker's manifest block (worker.tasks.MANIFEST_BLOCK)


class CountingReader:
    """Wraps a real reader; counts the bytes its ``read`` returns."""

    def __init__(self, inner: DiskReader) -> None:
        self.inner, self.bytes_read = inner, 0

    @property
    def size(self) -> int:
        return self.inner.size

    def extents(self, since: str | None = None) -> Iterator[Extent]:
        return self.inner.extents(since)

    def read(self, offset: int, length: int) -> Data:
        data = self.inner.read(offset, length)
        self.bytes_read += len(data)
        return data

    def change_token(self) -> str | None:
        return None

    def close(self) -> None:
        self.inner.close()


def _write(path: Path, pieces: list[tuple[int, int]]) -> None:
    write_layout(path, SIZE, pieces)


def _copy(src: Path, fmt: str, dst: Path, manifest: BlockManifest | None,
          ) -> tuple[int, int, list[tuple[int, int]]]:
    """(bytes read, allocated bytes per the reader's extents, progress calls)."""
    reader = CountingReader(open_image_reader(str(src), fmt))
    with open(dst, "wb") as f:
        f.truncate(SIZE)
    writer = RawFileWriter(str(dst))
    seen: list[tuple[int, int]] = []
    try:
        allocated = sum(e.length for e in reader.extents() if not e.zero)
        copy_disk(reader, writer, manifest=manifest,
                  progress=lambda done, total, _rate: seen.append((done, total)))
    finally:
        reader.close()
        writer.close()
    return reader.bytes_read, allocated, seen


@pytest.mark.parametrize("with_manifest", [True, False], ids=["manifest", "plain"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_bytes_read_are_the_allocated_bytes(tmp_path: Path, layout: str,
                                            with_manifest: bool) -> None:
    src, dst = tmp_path / "src.raw", tmp_path / "dst.raw"
    _write(src, LAYOUTS[layout](SIZE))
    manifest = BlockManifest(BLOCK, SIZE) if with_manifest else None
    read, allocated, seen = _copy(src, "raw", dst, manifest)
    assert allocated > 0
    assert read <= 1.01 * allocated, f"read {read} bytes for {allocated} allocated"
    assert dst.read_bytes() == src.read_bytes()
    assert seen[-1] == (allocated, allocated)  # progress counts allocated bytes
    if manifest is not None:  # the manifest still hashes every 64 KiB block
        again = BlockManifest(BLOCK, SIZE, manifest.hashes)
        assert _copy(src, "raw", dst, again)[0] == read


def test_qcow2_reads_only_its_allocated_clusters(tmp_path: Path) -> None:
    raw, src, dst = tmp_path / "src.raw", tmp_path / "src.qcow2", tmp_path / "dst.raw"
    _write(raw, every_other_mib(SIZE))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(src)],
                   check=True)
    read, allocated, _ = _copy(src, "qcow2", dst, BlockManifest(BLOCK, SIZE))
    assert allocated == SIZE // 2
    assert read <= 1.01 * allocated
    assert dst.read_bytes() == raw.read_bytes()
