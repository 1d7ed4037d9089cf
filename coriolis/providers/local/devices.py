"""Volumes that are whole block devices of a local cloud's storage backend.

A backend of ``cloud.json`` may list block devices the operator set aside for it::

    {"name": "fast", "format": "raw", "block_devices": ["/dev/loop5", "/dev/sdc"]}

A volume on such a backend is one whole device. ``claim`` takes a free one at least as large
as the disk: a **claim record** ``DIR/storage/<backend>/claims/<device>.claim`` (JSON
``{"device", "volume_id", "backend"}``), made atomically (written whole to a temporary file,
then hard-linked to its name, which fails if the device is claimed already). The volume id
is named after the transfer (``<instance>-<disk>-<transfer key>``), so a create_disks run
again after a crash finds its own claim instead of taking a second device. The undo journal
and commit record of a replica volume live beside the claims (the volume's ``state_base``),
never beside ``/dev/...``.

Zeroing: a claimed device is zeroed whole before it is handed out (the copy pipeline takes
a new volume as blank and skips the chunks that are zeroes), and zeroed again when its
volume is deleted, before the claim goes, so nothing of a deleted volume is left on a device
another volume may get. ``transfer.blockdev.zero_range`` does it: a deallocating zeroout or
the device's write-zeroes command where it has one (quick: thin volumes, SSDs, loop devices),
otherwise the kernel writes zeroes over the whole device (as long as writing it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from coriolis import exceptions
from coriolis.providers.local.cloud import LocalCloud, StorageBackend, fsync_dir
from coriolis.transfer import blockdev
from coriolis.transfer.files import RawFileWriter

JSON = dict[str, Any]
CLAIMS = "claims"


def _claims_dir(cloud: LocalCloud, backend: StorageBackend) -> Path:
    folder = cloud.storage_dir(backend.name) / CLAIMS
    folder.mkdir(exist_ok=True)
    return folder


def _claim_name(device: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9]+", "_", device.strip("/"))[:60]
    return f"{readable}-{hashlib.sha256(device.encode()).hexdigest()[:8]}.claim"


def _read_claim(path: Path) -> JSON | None:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def owned_claim(cloud: LocalCloud, backend: StorageBackend, volume_id: str) -> Path | None:
    """The claim record of ``volume_id`` in ``backend``, None if it holds none."""
    folder = _claims_dir(cloud, backend)
    for path in sorted(folder.glob("*.claim")):
        claim = _read_claim(path)
        if claim and claim.get("volume_id") == volume_id:
            return path
    return None


def probe(device: str) -> tuple[int, str | None]:
    """The size in bytes of ``device`` and why it cannot hold a volume (None if it can):
    missing, not a block device, read-only."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return 0, f"{device} cannot be opened ({exc.strerror})"
    try:
        if not blockdev.is_block_device(fd):
            return 0, f"{device} is not a block device"
        size = blockdev.device_size(fd)
        if blockdev.is_read_only(fd):
            return size, f"{device} is read-only"
        return size, None
    finally:
        os.close(fd)


def _take(folder: Path, device: str, claim: JSON) -> bool:
    """Claim ``device`` atomically; False if it is claimed already."""
    tmp = folder / f".{claim['volume_id']}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(claim) + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, folder / _claim_name(device))
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
        fsync_dir(folder)
    return True


def usable_devices(backend: StorageBackend) -> list[tuple[str, int]]:
    """The devices ``backend`` lists, with their sizes; ``InvalidInput`` naming the backend
    and the device when one is unusable (missing, not a block device, read-only)."""
    usable = []
    for device in backend.block_devices:
        size, problem = probe(device)
        if problem:
            raise exceptions.InvalidInput(
                f"storage backend '{backend.name}': block device {problem}")
        usable.append((device, size))
    return usable


def free_devices(cloud: LocalCloud, backend: StorageBackend) -> list[tuple[str, int]]:
    """``usable_devices`` that nobody claims."""
    folder = _claims_dir(cloud, backend)
    return [(device, size) for device, size in usable_devices(backend)
            if not (folder / _claim_name(device)).exists()]


def claim(cloud: LocalCloud, backend: StorageBackend, volume_id: str, size: int) -> str:
    """The device of ``volume_id`` (its own claim if it made one already, else the smallest
    free device of at least ``size`` bytes, claimed), zeroed. ``InvalidInput`` naming the
    backend and the devices when none fits; ``ProviderError`` naming the device when it
    cannot be zeroed (in use, read-only), the claim then released."""
    own = owned_claim(cloud, backend, volume_id)
    if own is not None:
        device = str((_read_claim(own) or {})["device"])
    else:
        folder = _claims_dir(cloud, backend)
        free = free_devices(cloud, backend)
        fitting = sorted((s, d) for d, s in free if s >= size)
        device = next((d for _, d in fitting if _take(folder, d, {
            "device": d, "volume_id": volume_id, "backend": backend.name})), "")
        if not device:
            listed = ", ".join(f"{d} ({s} bytes)" for d, s in free) or "none"
            raise exceptions.InvalidInput(
                f"storage backend '{backend.name}' has no free block device of at least "
                f"{size} bytes (free: {listed}; listed: {', '.join(backend.block_devices)})")
    try:
        _zero(device)
    except BaseException:
        release(cloud, backend, volume_id, zero=False)
        raise
    return device


def _zero(device: str) -> None:
    writer = RawFileWriter(device)
    try:
        writer.zero(0, writer.size)
        writer.flush()
    finally:
        writer.close()


def release(cloud: LocalCloud, backend: StorageBackend, volume_id: str,
            zero: bool = True) -> None:
    """Zero the device ``volume_id`` claims (unless ``zero`` is false), then remove the
    claim; nothing when it holds none (released already)."""
    own = owned_claim(cloud, backend, volume_id)
    if own is None:
        return
    device = (_read_claim(own) or {}).get("device")
    if zero and isinstance(device, str):
        try:
            _zero(device)
        except OSError as exc:
            raise exceptions.ProviderError(
                f"block device {device} of storage backend '{backend.name}' cannot be "
                f"zeroed: {exc.strerror or exc}") from None
    own.unlink()
    fsync_dir(own.parent)


def state_base(cloud: LocalCloud, backend: StorageBackend, volume_id: str) -> str:
    """Where the side files of a device volume go (``<state_base>.coriolis-undo``...)."""
    return str(_claims_dir(cloud, backend) / volume_id)


def is_device_volume(volume: JSON) -> bool:
    return bool(volume.get("block_device"))
