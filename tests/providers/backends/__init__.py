"""Backend fixtures of the provider contract kit.

One module per provider, named after its entry point in the ``coriolis.providers`` group
(``local.py`` for ``local``), holding a ``Backend`` subclass named ``Backend``. The kit runs
its checks only for providers that have one; the others are skipped with the reason
"no backend fixture".

A backend fixture brings up the platform the provider talks to (a directory, a libvirt
daemon, vcsim, an OpenStack) and makes what the checks need on it. The kit makes one
``Backend`` per test, in an empty folder of its own, and calls ``close`` after the test.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

JSON = dict[str, Any]
KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Disk:
    """The known contents of one source disk.

    ``size``: virtual size in bytes. ``format``: the image format the backend stores it in
    ("raw", "qcow2"...). ``data``: (offset, bytes) pieces, not overlapping; every other byte
    reads as zero. ``zeros``: (offset, length) ranges written with zero bytes (allocated
    zeroes, unlike the holes around them)."""

    size: int
    format: str = "raw"
    data: tuple[tuple[int, bytes], ...] = ()
    zeros: tuple[tuple[int, int], ...] = ()

    def image(self) -> bytes:
        """Every byte of the disk."""
        out = bytearray(self.size)
        for offset, piece in self.data:
            out[offset:offset + len(piece)] = piece
        return bytes(out)


DEFAULT_SIZE = 6 * MiB + 12 * KiB + 512


def sample_disk(fmt: str, seed: int, size: int = DEFAULT_SIZE) -> Disk:
    """A small disk (``size`` of 2 MiB or more) with holes and data: data at the start, in
    the first half, one piece aligned to nothing in the middle, at the very end, and a range
    of written zeroes in the last quarter."""
    rng = random.Random(seed)
    quarter = size // 4 // (64 * KiB) * (64 * KiB)
    data = ((0, rng.randbytes(64 * KiB)),
            (quarter + 4 * KiB, rng.randbytes(min(1 * MiB, quarter - 8 * KiB))),
            (size // 2 + 7, rng.randbytes(100)),
            (size - 4 * KiB, rng.randbytes(4 * KiB)))
    return Disk(size, fmt, data, zeros=((3 * quarter, min(256 * KiB, quarter)),))


@dataclass(frozen=True)
class Instance:
    """A source instance to make: ``name``, its disks, and the network its one NIC is on."""

    name: str
    disks: tuple[Disk, ...]
    network: str = "lan"
    extra: JSON = field(default_factory=dict)


class Backend(abc.ABC):
    """What the kit needs of a provider's platform.

    ``root`` is an empty folder of this test; put the backend's own files under it."""

    platform: ClassVar[str]
    formats: ClassVar[tuple[str, ...]] = ("raw",)
    """The source disk formats ``create_instance`` can make."""
    storage: ClassVar[tuple[str | None, ...]] = (None,)
    """The destination storage choices the write checks run on (``destination_env``)."""
    disk_size_unit: ClassVar[int] = 512
    """The platform keeps source disk sizes in multiples of this many bytes (vSphere: 1 KiB,
    Cinder volumes: 1 GiB): ``source_disk`` rounds up to it."""

    @classmethod
    def start_session(cls, root: Path) -> dict[str, str]:
        """Bring up what all tests share, once per session before any ``Backend`` is made
        (``root``: the parent folder of every test's root). Returns the environment
        variables the kit's API server needs to accept connection infos of these backends."""
        return {}

    @classmethod
    def stop_session(cls) -> None:
        """Tear down what ``start_session`` brought up."""
        return None

    def __init__(self, root: Path) -> None:
        self.root = root

    @abc.abstractmethod
    def connection_info(self) -> JSON:
        """A valid connection info of the backend (with its secrets, if it has any)."""

    def secrets(self) -> list[str]:
        """The secret values in ``connection_info()`` (passwords, keys): no error, result or
        location may contain one."""
        return []

    def network_name(self, network: str) -> str:
        """The platform's name of the kit's network ``network`` (``Instance.network``), as
        ``get_instance`` reports it: the same, unless the fixture prefixes what it makes on a
        shared platform."""
        return network

    @abc.abstractmethod
    def create_instance(self, instance: Instance) -> str:
        """Make a source instance with exactly these disks (in order) and one NIC on
        ``instance.network``; returns what ``get_instance`` takes to find it."""

    @abc.abstractmethod
    def create_malformed_instance(self, name: str) -> str:
        """Make an instance the provider cannot describe (a broken definition, a disk that
        does not exist...); returns what ``get_instance`` would take."""

    def source_env(self) -> JSON:
        """The source environment for export calls (valid against its schema)."""
        return {}

    @abc.abstractmethod
    def destination_env(self, storage: str | None = None) -> JSON:
        """The destination environment for import calls, disks going to ``storage`` (one of
        ``storage``; None: the default), with ``network_map`` (mapping ``Instance.network``)
        and ``storage_mappings`` as the API adds them; valid against the destination
        schema."""

    @abc.abstractmethod
    def inventory(self) -> set[str]:
        """Names of everything that exists on the backend (instances, volumes, snapshots,
        helper files, attachments): the kit takes it before a check and requires the same
        after every cleanup."""

    def sample_disk(self, fmt: str, seed: int, size: int | None = None) -> Disk:
        """``sample_disk``: a disk to write to the destination (whose volume may be larger)."""
        return sample_disk(fmt, seed, size or DEFAULT_SIZE)

    def source_disk(self, fmt: str, seed: int, size: int | None = None) -> Disk:
        """``sample_disk`` with its size rounded up to ``disk_size_unit``: a disk a source
        instance of the platform can have."""
        size = size or DEFAULT_SIZE
        unit = self.disk_size_unit
        return sample_disk(fmt, seed, -(-size // unit) * unit)

    def close(self) -> None:
        """Tear down what ``__init__`` brought up."""
        return None
