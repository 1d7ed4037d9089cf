"""The copy pipeline on real sparse files: only data is read, zeroes stay holes, checksums
are verified, manifests make re-runs incremental."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from coriolis import exceptions
from coriolis.transfer.base import Extent
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.extents import merge, qemu_img_extents, sparse_file_extents
from coriolis.transfer.files import RawFileReader, RawFileWriter
from coriolis.transfer.manifest import BlockManifest

MiB = 1024 * 1024
SIZE = 10 * MiB + 12345  # not a multiple of any chunk size


def make_source(path: Path, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for offset in (0, 3 * MiB + 17, SIZE - 5000):
            f.seek(offset)
            f.write(rng.randbytes(min(300_000, SIZE - offset)))
        f.seek(6 * MiB)  # a run of explicit zeroes inside the allocated area
        f.write(bytes(MiB))
    return path.read_bytes()


def blank(path: Path, size: int = SIZE) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def copy(src: Path, dst: Path, **kwargs):  # type: ignore[no-untyped-def]
    reader, writer = RawFileReader(str(src)), RawFileWriter(str(dst))
    try:
        return copy_disk(reader, writer, **kwargs)
    finally:
        reader.close()
        writer.close()


def test_copy_is_identical_reads_only_data_and_stays_sparse(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.raw", blank(tmp_path / "dst.raw")
    content = make_source(src)
    stats = copy(src, dst, chunk_size=MiB)
    assert dst.read_bytes() == content
    data = sum(e.length for e in sparse_file_extents(str(src)) if not e.zero)
    assert stats.bytes_scanned == data < SIZE
    assert stats.bytes_written < data  # the explicit zero MiB was not written
    assert os.stat(dst).st_blocks <= os.stat(src).st_blocks


def test_progress_is_monotonic_and_ends_at_total(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.raw", blank(tmp_path / "dst.raw")
    make_source(src)
    seen: list[tuple[int, int]] = []
    rates: list[float] = []
    copy(src, dst, progress=lambda done, total, rate: (seen.append((done, total)),
                                                       rates.append(rate)))
    assert seen[-1][0] == seen[-1][1] > 0
    assert rates[-1] > 0
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


class FlakyWriter(RawFileWriter):
    """Fault injection: corrupts the first ``bad`` writes (one flipped byte each)."""

    def __init__(self, path: str, bad: int) -> None:
        super().__init__(path)
        self.bad = bad

    def write(self, offset: int, data: bytes) -> None:
        if self.bad > 0:
            self.bad -= 1
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        super().write(offset, data)


def test_corrupted_chunk_is_rewritten(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.raw", blank(tmp_path / "dst.raw")
    content = make_source(src)
    reader, writer = RawFileReader(str(src)), FlakyWriter(str(dst), bad=1)
    copy_disk(reader, writer, workers=1, verify=True)
    assert dst.read_bytes() == content


def test_persistent_corruption_fails_naming_the_offset(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.raw", blank(tmp_path / "dst.raw")
    make_source(src)
    reader, writer = RawFileReader(str(src)), FlakyWriter(str(dst), bad=1000)
    with pytest.raises(exceptions.ProviderError, match="offset 0"):
        copy_disk(reader, writer, workers=1, verify=True)


def test_cancel_stops_the_copy(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.raw", blank(tmp_path / "dst.raw")
    make_source(src)
    with pytest.raises(exceptions.TaskCanceled):
        copy(src, dst, cancel=lambda: True)


def test_manifest_rerun_writes_only_changed_blocks(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.raw", blank(tmp_path / "dst.raw")
    make_source(src)
    manifest = BlockManifest(MiB, SIZE)
    copy(src, dst, manifest=manifest)
    with open(src, "r+b") as f:  # change 3 blocks; zero out one that had data
        for block in (0, 3):
            f.seek(block * MiB + 100)
            f.write(os.urandom(1000))
        f.seek(SIZE - 5000)
        f.write(bytes(5000))
    manifest.save(tmp_path / "m")
    again = BlockManifest.load(tmp_path / "m")
    stats = copy(src, dst, manifest=again, dest_is_blank=False)
    assert dst.read_bytes() == src.read_bytes()
    assert stats.bytes_written == 2 * MiB
    assert stats.bytes_zeroed == SIZE - 10 * MiB  # the last, partial block became zero
    assert copy(src, dst, manifest=again, dest_is_blank=False).bytes_written == 0


def test_qemu_map_and_seek_hole_agree(tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    make_source(src)
    data = [e for e in sparse_file_extents(str(src)) if not e.zero]
    mapped = [e for e in qemu_img_extents(str(src), "raw") if not e.zero]
    assert sum(e.length for e in mapped) <= sum(e.length for e in data)
    assert mapped[0].offset == data[0].offset == 0


def test_merge_joins_adjacent_extents_of_a_kind() -> None:
    assert merge([Extent(0, 10), Extent(10, 5), Extent(15, 5, True), Extent(20, 1, True)]) == [
        Extent(0, 15), Extent(15, 6, True)]


def test_undo_journal_rolls_a_copy_back(tmp_path: Path) -> None:
    from coriolis.transfer.journal import JournalingWriter, roll_back

    src, dst = tmp_path / "src.raw", tmp_path / "dst.raw"
    make_source(src, seed=1)
    original = make_source(dst, seed=2)
    journal = tmp_path / "undo"
    reader, writer = RawFileReader(str(src)), JournalingWriter(RawFileWriter(str(dst)), journal)
    copy_disk(reader, writer, dest_is_blank=False)
    reader.close()
    writer.close()
    assert dst.read_bytes() == src.read_bytes() != original
    with open(journal, "ab") as f:  # a record torn by a crash is ignored
        f.write(b"\x00" * 7)
    plain = RawFileWriter(str(dst))
    assert roll_back(journal, plain) > 0
    plain.close()
    assert dst.read_bytes() == original
