"""Disk images on this host as DiskReaders and DiskWriters: raw files directly, every other
format qemu knows (qcow2, vmdk, vhdx…) through qemu-nbd."""

from __future__ import annotations

from coriolis.transfer.base import DiskReader, DiskWriter
from coriolis.transfer.files import RawFileReader, RawFileWriter
from coriolis.transfer.nbd import NbdImageReader, NbdImageWriter


def open_image_reader(path: str, fmt: str) -> DiskReader:
    return RawFileReader(path) if fmt == "raw" else NbdImageReader(path, fmt)


def open_image_writer(path: str, fmt: str) -> DiskWriter:
    return RawFileWriter(path) if fmt == "raw" else NbdImageWriter(path, fmt)
