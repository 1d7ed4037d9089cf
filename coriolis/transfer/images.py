"""Disk images on this host as DiskReaders and DiskWriters: raw files directly, every other
format qemu knows (qcow2, vmdk, vhdx…) through qemu-nbd."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from coriolis import exceptions
from coriolis.transfer.base import DiskReader, DiskWriter
from coriolis.transfer.files import RawFileReader, RawFileWriter
from coriolis.transfer.nbd import NbdImageReader, NbdImageWriter


def open_image_reader(path: str, fmt: str) -> DiskReader:
    return RawFileReader(path) if fmt == "raw" else NbdImageReader(path, fmt)


def open_image_writer(path: str, fmt: str) -> DiskWriter:
    return RawFileWriter(path) if fmt == "raw" else NbdImageWriter(path, fmt)


def backing_chain(path: Path, fmt: str) -> list[dict[str, Any]]:
    """``qemu-img info --backing-chain`` of an image: its files, top first."""
    proc = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json",
                           "-f", fmt, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise exceptions.ProviderError(
            f"cannot read disk image {path.name}: {proc.stderr.strip()}")
    chain = json.loads(proc.stdout)
    return chain if isinstance(chain, list) else [chain]


def image_files(path: Path, fmt: str) -> list[str]:
    """Every file the image at ``path`` is made of (absolute, normalised, each once): the
    backing chain, vmdk extents, qcow2 external data files; the top file first."""
    files: list[str] = []

    def add(name: str | None) -> None:
        if name:
            full = os.path.normpath(os.path.join(os.path.dirname(str(path)), name))
            if full not in files:
                files.append(full)

    for entry in backing_chain(Path(os.path.abspath(path)), fmt):
        add(entry.get("filename"))
        data = (entry.get("format-specific") or {}).get("data") or {}
        for extent in data.get("extents") or []:
            add(extent.get("filename"))
        add(data.get("data-file"))
    return files
