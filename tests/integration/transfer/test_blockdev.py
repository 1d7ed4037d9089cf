"""Block devices as disks, on real loop devices: size from the device, reads equal the
backing file, zero ranges read back as zeroes, a read-only or busy device is refused."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis import exceptions
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.files import RawFileReader, RawFileWriter
from tests import loop_devices

MiB = 1024 * 1024
SIZE = 10 * MiB + 3 * 512  # a loop device is a whole number of 512-byte sectors


@pytest.fixture(autouse=True)
def _needs_loop_devices() -> None:
    loop_devices.skip_unless_available()


def make_image(path: Path, seed: int = 3) -> bytes:
    """A sparse image: data at the start, an odd place and the end; a run of written zeroes."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for offset, length in ((0, 300_000), (4 * MiB + 17, 200_000), (SIZE - 5000, 5000)):
            f.seek(offset)
            f.write(rng.randbytes(length))
        f.seek(7 * MiB)
        f.write(bytes(MiB))
    return path.read_bytes()


@pytest.fixture
def device(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    backing = tmp_path / "backing.img"
    make_image(backing)
    with loop_devices.loop_device(backing) as dev:
        yield dev, backing


def test_reader_gets_size_from_the_device_and_reads_the_backing_file(
        device: tuple[str, Path]) -> None:
    dev, backing = device
    reader = RawFileReader(dev)
    try:
        assert os.stat(dev).st_size == 0  # what a size from fstat would have been
        assert reader.size == SIZE
        extents = list(reader.extents())
        assert [(e.offset, e.length, e.zero) for e in extents] == [(0, SIZE, False)]
        expected = backing.read_bytes()
        assert reader.read(0, SIZE) == expected
        assert reader.read(4 * MiB + 10, 1000) == expected[4 * MiB + 10:4 * MiB + 1010]
    finally:
        reader.close()


def test_copy_from_a_device_to_a_blank_file_writes_no_zero_chunk(
        device: tuple[str, Path], tmp_path: Path) -> None:
    dev, backing = device
    target = tmp_path / "copy.raw"
    with open(target, "wb") as f:
        f.truncate(SIZE)
    reader, writer = RawFileReader(dev), RawFileWriter(str(target))
    try:
        stats = copy_disk(reader, writer, chunk_size=MiB, dest_is_blank=True)
    finally:
        reader.close()
        writer.close()
    assert target.read_bytes() == backing.read_bytes()
    assert stats.bytes_scanned == SIZE  # no extents information: every range is read
    assert stats.bytes_written <= 3 * MiB + 3 * 512  # only the chunks holding data
    assert os.stat(target).st_blocks * 512 <= 4 * MiB  # the rest stayed holes


def test_copy_onto_a_used_device_zeroes_what_the_source_has_as_zeroes(
        device: tuple[str, Path], tmp_path: Path) -> None:
    dev, backing = device
    source = tmp_path / "source.raw"
    expected = make_image(source, seed=11)  # other data: everything else must become zeroes
    reader, writer = RawFileReader(str(source)), RawFileWriter(dev)
    try:
        assert writer.size == SIZE
        copy_disk(reader, writer, chunk_size=MiB, dest_is_blank=False)
    finally:
        reader.close()
        writer.close()
    check = RawFileReader(dev)
    try:
        assert check.read(0, SIZE) == expected
    finally:
        check.close()
    assert backing.read_bytes() == expected


def test_zero_ranges_read_back_as_zeroes_and_deallocate(device: tuple[str, Path]) -> None:
    dev, backing = device
    before = os.stat(backing).st_blocks
    writer = RawFileWriter(dev)
    try:
        writer.zero(0, 300_000)  # aligned start, unaligned end
        writer.zero(4 * MiB + 17, 200_000)  # unaligned both ends
        writer.zero(SIZE - 5000, 5000)  # the device's last bytes
        writer.zero(100, 10)  # within one sector
        writer.flush()
        assert writer.read(0, SIZE) == bytes(SIZE)
    finally:
        writer.close()
    assert backing.read_bytes() == bytes(SIZE)
    # The aligned middles were zeroed by the kernel (holes in the backing file), not written.
    assert os.stat(backing).st_blocks < before


def test_writes_land_on_the_device(device: tuple[str, Path]) -> None:
    dev, backing = device
    writer = RawFileWriter(dev)
    try:
        writer.write(MiB + 3, b"coriolis")
        writer.flush()
    finally:
        writer.close()
    assert backing.read_bytes()[MiB + 3:MiB + 11] == b"coriolis"


def test_a_read_only_device_is_refused_naming_it(tmp_path: Path) -> None:
    backing = tmp_path / "ro.img"
    expected = make_image(backing)
    with loop_devices.loop_device(backing, read_only=True) as dev:
        with pytest.raises(exceptions.ProviderError, match=f"{dev} is read-only"):
            RawFileWriter(dev)
        reader = RawFileReader(dev)  # reading it is fine
        try:
            assert reader.read(0, SIZE) == expected
        finally:
            reader.close()
    assert backing.read_bytes() == expected


def test_a_device_in_exclusive_use_is_refused_naming_it(device: tuple[str, Path]) -> None:
    dev, backing = device
    held = os.open(dev, os.O_RDONLY | os.O_EXCL)  # as a mounted file system holds it
    try:
        with pytest.raises(exceptions.ProviderError, match=f"{dev} is in use"):
            RawFileWriter(dev)
    finally:
        os.close(held)
    RawFileWriter(dev).close()  # free again
