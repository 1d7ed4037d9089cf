"""A real libvirt host (the system libvirtd, qemu TCG) for the libvirt provider's tests."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.providers.libvirt.provider import LibvirtProvider
from tests.libvirt_host import LibvirtHost, libvirt_host


@pytest.fixture(scope="module")
def host() -> Iterator[LibvirtHost]:
    with libvirt_host() as h:
        yield h


@pytest.fixture(scope="module")
def provider() -> LibvirtProvider:
    return LibvirtProvider()


def make_image(path: Path, fmt: str, size: str, writes: list[tuple[int, int, int]]) -> Path:
    """An image of ``fmt`` with ``writes`` ((pattern byte, offset, length)) done by
    qemu-io."""
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)
    if writes:
        args = [a for p, o, n in writes for a in ("-c", f"write -P {p} {o} {n}")]
        subprocess.run(["qemu-io", "-f", fmt, *args, str(path)], check=True,
                       capture_output=True)
    return path


def read_all(uri: str, size: int) -> bytes:
    """Every byte of an NBD export (libnbd)."""
    from coriolis.transfer.nbd_uri import NbdUriReader

    reader = NbdUriReader(uri)
    try:
        assert reader.size == size
        return bytes(reader.read(0, size))
    finally:
        reader.close()


def raw_bytes(path: Path | str, fmt: str) -> bytes:
    """The guest-visible content of an image (qemu-img convert to raw, outside the host's
    folders)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "image.raw"
        subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", str(path),
                        str(out)], check=True)
        return out.read_bytes()
