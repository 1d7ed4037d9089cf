"""What the contract checks share: opening locations, checking extents and data shapes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from coriolis.transfer import locations
from coriolis.transfer.base import DiskReader, DiskWriter, Extent
from coriolis.transfer.options import TransferOptions
from tests.providers.backends import JSON, Disk

BLOCK = 64 * 1024
NoneType = type(None)


def open_reader(provider: Any, connection_info: JSON, env: JSON,
                location: JSON) -> DiskReader:
    """A reader of a source location, as the worker opens it (a ``platform`` location by
    the provider's ``open_platform_reader``, with the source environment ``env``)."""

    def platform_reader(loc: locations.PlatformLocation, conn: JSON) -> DiskReader:
        reader: DiskReader = provider.open_platform_reader(conn, env, loc)
        return reader

    return locations.open_reader(location, connection_info=connection_info,
                                 platform_opener=platform_reader)


def open_writer(connection_info: JSON, env: JSON, location: JSON, transfer_id: str,
                volume: JSON) -> DiskWriter:
    """A writer of a target location for ``volume``, as the worker opens it: with the
    transfer options of the destination environment ``env``, one writer transfer id per
    disk, at least the volume's size."""
    return locations.open_writer(location, options=TransferOptions.from_env(env),
                                 transfer_id=f"{transfer_id}-{volume['disk_id']}",
                                 connection_info=connection_info, size=volume["size_bytes"])


def check_extents(extents: Iterable[Extent], disk: Disk,
                  image: bytes | None = None) -> list[Extent]:
    """``extents`` cover the disk in order without overlap, and every non-zero byte of
    ``disk`` (``image``: its bytes, when the caller has them) is in a data extent; returns
    them."""
    found = list(extents)
    pos = 0
    for ext in found:
        assert ext.offset == pos, f"extents leave a gap or overlap at {pos}: {ext}"
        assert ext.length > 0, f"empty extent {ext}"
        pos = ext.end
    assert pos == disk.size, f"extents end at {pos}, the disk at {disk.size}"
    image = disk.image() if image is None else image
    for ext in found:
        if ext.zero and image.count(0, ext.offset, ext.end) != ext.length:
            raise AssertionError(f"zero extent {ext} holds data of the source")
    return found


def read_all(reader: DiskReader, size: int, chunk: int = 1024 * 1024) -> bytes:
    out = bytearray()
    for offset in range(0, size, chunk):
        out += reader.read(offset, min(chunk, size - offset))
    return bytes(out)


def write_image(writer: DiskWriter, image: bytes) -> None:
    """Write ``image`` as a copy does: blocks with data written, the rest zeroed (runs of
    each joined)."""
    runs: list[tuple[int, int, bool]] = []
    for offset in range(0, len(image), BLOCK):
        block = image[offset:offset + BLOCK]
        zero = not any(block)
        if runs and runs[-1][2] == zero:
            start, _, _ = runs[-1]
            runs[-1] = (start, offset + len(block), zero)
        else:
            runs.append((offset, offset + len(block), zero))
    for start, end, zero in runs:
        if zero:
            writer.zero(start, end - start)
        else:
            writer.write(start, image[start:end])
    writer.flush()


def assert_no_secret(value: Any, secrets: list[str], what: str) -> None:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    for secret in secrets:
        assert secret not in text, f"{what} contains a secret of the connection info"


# Keys of export_info and their types, as coriolis/providers/base.py documents them.
EXPORT_INFO = {"id": str, "name": str, "instance_name": str, "num_cpu": int, "memory_mb": int,
               "os_type": str, "firmware_type": str, "flavor_name": (str, NoneType),
               "power_state": str, "devices": dict}
SUMMARY = {k: v for k, v in EXPORT_INFO.items() if k not in ("power_state", "devices")}
DISK = {"id": str, "size_bytes": int, "format": str, "bus": str,
        "storage_backend": (str, NoneType)}
NIC = {"id": str, "mac_address": str, "network_name": str}
DEVICE_LISTS = ("disks", "nics", "controllers", "cdroms", "floppies", "serial_ports")
VOLUME = {"disk_id": str, "size_bytes": int, "storage_backend": str, "format": str}


def check_shape(value: Any, shape: dict[str, Any], what: str) -> None:
    """``value`` is an object with at least ``shape``'s keys, of its types."""
    assert isinstance(value, dict), f"{what} is not an object: {value!r}"
    for key, kind in shape.items():
        assert key in value, f"{what} lacks '{key}'"
        assert isinstance(value[key], kind) and not (
            kind is int and isinstance(value[key], bool)), \
            f"{what}.{key} is {value[key]!r}, not {kind}"


def check_export_info(info: Any) -> None:
    check_shape(info, EXPORT_INFO, "export_info")
    assert info["firmware_type"] in ("BIOS", "EFI"), info["firmware_type"]
    for name in DEVICE_LISTS:
        assert isinstance(info["devices"].get(name), list), f"devices.{name} is not a list"
    for i, disk in enumerate(info["devices"]["disks"]):
        check_shape(disk, DISK, f"devices.disks[{i}]")
    for i, nic in enumerate(info["devices"]["nics"]):
        check_shape(nic, NIC, f"devices.nics[{i}]")
    json.dumps(info)  # JSON-able: it is stored in task_info
