"""`coriolis-server local-cloud`: build sample local clouds and instances with real disks."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from coriolis.config import ConfigError, Settings
from coriolis.exceptions import CoriolisError
from coriolis.providers.local.boot import boot
from coriolis.providers.local.cloud import (
    DISK_BUSES,
    DISK_FORMATS,
    STORAGE_FORMATS,
    LocalCloud,
    write_json_atomic,
)
from coriolis.providers.local.devices import probe
from coriolis.transfer.extents import qemu_img_info

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_REGION = 1 << 20  # data is written in 1 MiB regions


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in _UNITS:
        return int(float(text[:-1]) * _UNITS[text[-1]])
    return int(text)


def init_cloud(path: str | Path, networks: list[str] | None = None,
               storage: list[tuple[str, str]] | None = None) -> Path:
    root = Path(path)
    (root / "instances").mkdir(parents=True, exist_ok=True)
    config = {"networks": networks or ["default"],
              "storage": [{"name": n, "format": f} for n, f in (storage or [("default", "raw")])]}
    write_json_atomic(root / "cloud.json", config)
    return root


def add_storage(path: str | Path, name: str, fmt: str = "raw",
                block_devices: list[str] | None = None) -> dict:
    """Add storage backend ``name`` to the cloud's ``cloud.json``: disk files of ``fmt``, or
    with ``block_devices`` (absolute paths of block devices, raw only) volumes that are whole
    devices. ``ValueError`` naming what is wrong (a backend of that name exists, a device is
    missing, not a block device, read-only or listed by another backend)."""
    cloud = LocalCloud({"path": str(path)})
    config = cloud._config()
    backends = cloud.storage_backends()
    if any(b.name == name for b in backends):
        raise ValueError(f"storage backend '{name}' exists already in {path}")
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid storage backend name '{name}'")
    devices = list(block_devices or [])
    if devices and fmt != "raw":
        raise ValueError("a block-device backend holds raw volumes only (--format raw)")
    taken = cloud.block_devices()
    for device in devices:
        if not os.path.isabs(device):
            raise ValueError(f"block device {device} must be an absolute path")
        _size, problem = probe(device)
        if problem:
            raise ValueError(f"block device {problem}")
        other = taken.get(os.path.realpath(device))
        if other is not None:
            raise ValueError(f"block device {device} is listed by storage backend "
                             f"'{other.name}' already")
    entry: dict = {"name": name, "format": fmt}
    if devices:
        entry["block_devices"] = devices
    config["storage"] = [*config.get("storage", [{"name": "default", "format": "raw"}]),
                         entry]
    write_json_atomic(Path(path) / "cloud.json", config)
    return entry


def _fill_raw(path: Path, size: int, fill: str, fraction: float, rng: random.Random) -> None:
    """Write random (or zero-free text) data into scattered 1 MiB regions of a sparse file."""
    if fill == "none":
        return
    regions = size // _REGION
    count = max(1, int(regions * fraction)) if regions else 0
    chosen = sorted(rng.sample(range(regions), min(count, regions)))
    with open(path, "r+b") as f:
        for index in chosen:
            f.seek(index * _REGION)
            f.write(rng.randbytes(_REGION) if fill == "random" else bytes(_REGION))
        tail = size % _REGION
        if tail and fill == "random":  # odd sizes: put data in the last partial region too
            f.seek(size - tail)
            f.write(rng.randbytes(tail))


def make_disk(path: Path, size: int, fmt: str, *, fill: str = "random",
              allocated_fraction: float = 0.25, seed: int | None = None) -> None:
    rng = random.Random(seed)
    if fmt == "raw":
        with open(path, "wb") as f:
            f.truncate(size)
        _fill_raw(path, size, fill, allocated_fraction, rng)
        return
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "disk.raw"
        make_disk(raw, size, "raw", fill=fill, allocated_fraction=allocated_fraction, seed=seed)
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, str(raw),
                        str(path)], check=True)


def add_instance(path: str | Path, name: str, *, disk_size: str | int = "1G",
                 disk_format: str = "raw", disks: int = 1, fill: str = "random",
                 allocated_fraction: float = 0.25, cpus: int = 1, memory_mb: int = 512,
                 os_type: str = "linux", network: str = "default", firmware: str = "bios",
                 seed: int | None = None, image: Path | None = None, bus: str = "sata",
                 mac: str | None = None) -> Path:
    """An instance with generated disks, or with a copy of ``image`` as its only disk."""
    if disk_format not in DISK_FORMATS:
        raise ValueError(f"disk format must be one of {', '.join(DISK_FORMATS)}")
    cloud = LocalCloud({"path": str(path)})
    folder = cloud.instance_dir(name)
    if folder.exists():
        raise ValueError(f"instance '{name}' already exists in {path}")
    folder.mkdir(parents=True)
    size = disk_size if isinstance(disk_size, int) else parse_size(disk_size)
    entries = []
    if image is not None:
        fmt = qemu_img_info(str(image))["format"]
        file = f"disk0.{fmt}"
        subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(image),
                        str(folder / file)], check=True)
        entries.append({"file": file, "format": fmt, "bus": bus})
    for i in range(disks if image is None else 0):
        file = f"disk{i}.{disk_format}"
        make_disk(folder / file, size, disk_format, fill=fill,
                  allocated_fraction=allocated_fraction,
                  seed=None if seed is None else seed + i)
        entries.append({"file": file, "format": disk_format, "bus": bus})
    mac = mac or "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3))
    desc = {"name": name, "cpus": cpus, "memory_mb": memory_mb, "os_type": os_type,
            "firmware": firmware, "power_state": "running",
            "nics": [{"network": network, "mac": mac}], "disks": entries}
    write_json_atomic(folder / "instance.json", desc)
    return folder


def register_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("local-cloud", help="build sample local clouds")
    sub = parser.add_subparsers(dest="local_cloud_command", required=True)
    init = sub.add_parser("init", help="create a cloud directory with cloud.json")
    init.add_argument("path", help="the cloud's directory; with --project, its name in the "
                                   "project's local cloud root")
    init.add_argument("--project", metavar="PROJECT_ID",
                      help="make the cloud in the local cloud root the server gives this "
                           "project ([local] root, default DATA_DIR/clouds/PROJECT_ID)")
    init.add_argument("--data-dir", help="the server's data directory (with --project)")
    init.add_argument("--config-file", help="the server's configuration file (with --project)")
    init.add_argument("--network", action="append", dest="networks")
    init.add_argument("--storage", action="append", default=None, metavar="NAME:FORMAT")
    init.set_defaults(func=_cmd_init)
    add = sub.add_parser("add-instance", help="add an instance with real disk images")
    add.add_argument("path")
    add.add_argument("name")
    add.add_argument("--disk-size", default="1G")
    add.add_argument("--disk-format", default="raw", choices=DISK_FORMATS)
    add.add_argument("--disks", type=int, default=1)
    add.add_argument("--allocated", type=float, default=0.25,
                     help="fraction of each disk filled with data (default 0.25)")
    add.add_argument("--fill", default="random", choices=("random", "zeros", "none"))
    add.add_argument("--cpus", type=int, default=1)
    add.add_argument("--memory-mb", type=int, default=512)
    add.add_argument("--os-type", default="linux")
    add.add_argument("--network", default="default")
    add.add_argument("--firmware", default="bios", choices=("bios", "uefi"))
    add.add_argument("--seed", type=int)
    add.add_argument("--image", type=Path, help="copy this disk image (any format qemu-img "
                                                 "reads) as the instance's disk")
    add.add_argument("--bus", default="sata", choices=DISK_BUSES)
    add.add_argument("--mac", help="MAC address of the NIC (default: random)")
    add.set_defaults(func=_cmd_add)
    storage = sub.add_parser(
        "add-storage", help="add a storage backend to a cloud's cloud.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Add a storage backend to the cloud's cloud.json.\n\n"
                    "Without --block-device, its disks are files in PATH/storage/NAME/.\n"
                    "With --block-device (repeat it), each volume of the backend is one whole\n"
                    "block device of the list, claimed when a migration or replica creates\n"
                    "its disks (the smallest free device at least as large as the disk),\n"
                    "zeroed, and zeroed again and released when the disks are deleted. The\n"
                    "devices must exist, be writable block devices and be used by nothing\n"
                    "else; claims are kept in PATH/storage/NAME/claims/.\n\n"
                    "example: coriolis-server local-cloud add-storage /srv/cloud fast \\\n"
                    "             --block-device /dev/loop5 --block-device /dev/loop6")
    storage.add_argument("path", help="the cloud's directory")
    storage.add_argument("name", help="the backend's name (what storage_backend and "
                                      "storage_mappings name)")
    storage.add_argument("--format", default="raw", choices=STORAGE_FORMATS,
                         help="disk format of a file backend (block devices: raw)")
    storage.add_argument("--block-device", action="append", dest="block_devices",
                         metavar="DEVICE", help="absolute path of a block device the backend "
                                                "may use (repeat for several)")
    storage.set_defaults(func=_cmd_add_storage)
    run = sub.add_parser("boot", help="boot an instance with qemu and print its serial "
                                      "console until it powers off")
    run.add_argument("path")
    run.add_argument("name")
    run.add_argument("--timeout", type=float, default=600)
    run.set_defaults(func=_cmd_boot)


def _cmd_init(args: argparse.Namespace) -> None:
    storage = []
    for item in args.storage or ["default:raw"]:
        name, _, fmt = item.partition(":")
        if fmt not in ("raw", "qcow2"):
            raise SystemExit(f"--storage {item}: format must be raw or qcow2")
        storage.append((name, fmt))
    path = Path(args.path)
    if args.project:
        if path.is_absolute() or ".." in path.parts:
            raise SystemExit(f"error: with --project, {args.path} must be a name in the "
                             "project's local cloud root")
        try:
            settings = Settings(data_dir=Path(args.data_dir or ""),
                                config_file=Path(args.config_file) if args.config_file
                                else None)
            path = settings.local_roots_for(args.project)[0] / path
        except (ConfigError, ValueError) as exc:
            raise SystemExit(f"error: {exc}") from None
    root = init_cloud(path, args.networks, storage)
    print(json.dumps({"path": str(root.resolve())}))


def _cmd_add(args: argparse.Namespace) -> None:
    try:
        folder = add_instance(args.path, args.name, disk_size=args.disk_size,
                              disk_format=args.disk_format, disks=args.disks, fill=args.fill,
                              allocated_fraction=args.allocated, cpus=args.cpus,
                              memory_mb=args.memory_mb, os_type=args.os_type,
                              network=args.network, firmware=args.firmware, seed=args.seed,
                              image=args.image, bus=args.bus, mac=args.mac)
    except (ValueError, OSError, subprocess.CalledProcessError, CoriolisError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(folder)


def _cmd_add_storage(args: argparse.Namespace) -> None:
    try:
        entry = add_storage(args.path, args.name, args.format, args.block_devices)
    except (ValueError, OSError, CoriolisError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(json.dumps(entry))


def _cmd_boot(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = boot(LocalCloud({"path": args.path}), args.name, Path(tmp) / "serial.log",
                          timeout=args.timeout)
        except CoriolisError as exc:
            raise SystemExit(f"error: {exc}") from None
    sys.stdout.write(result.serial)
    if result.reason == "timeout":
        raise SystemExit(f"error: still running after {args.timeout:.0f} s; stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="coriolis-local-cloud")
    register_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["local-cloud", *(sys.argv[1:] if argv is None else argv)])
    args.func(args)


if __name__ == "__main__":
    main()
