"""Reading and writing the on-disk layout of a local cloud.

    DIR/cloud.json                      networks and storage backends (optional)
    DIR/instances/<name>/instance.json  one instance, disks referenced by relative path
    DIR/storage/<backend>/              disks imported into a storage backend
    DIR/storage/<backend>/claims/       a block-device backend's claims (providers/local/
                                        devices.py); its volumes' undo journals beside them
    DIR/.coriolis/                      snapshots and other temporary files

Confinement: an instance folder is ``DIR/instances/<name>`` itself (not a symlink, nor under a
symlinked ``instances``), and every file an instance names (its disks, the backing files and
extents of those images) resolves inside that folder or under ``DIR/storage/`` (where imported
disks live), never elsewhere on the host: no absolute path, no ``..`` or symlink out. An
instance that breaks this is malformed (``InvalidInput`` naming it and the disk).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coriolis import exceptions
from coriolis.transfer.extents import qemu_img_info

DISK_FORMATS = ("raw", "qcow2", "vmdk", "vhdx")
STORAGE_FORMATS = ("raw", "qcow2")
INSTANCE_FILE = "instance.json"
PENDING_FILE = "instance.json.coriolis-pending"
REQUIRED_KEYS = ("name", "cpus", "memory_mb", "os_type", "firmware", "power_state", "nics",
                 "disks")


DISK_BUSES = ("virtio", "sata", "scsi", "ide")
NIC_MODELS = ("virtio", "e1000", "rtl8139")
# What the cloud's hypervisor gives guests (cloud.json "guest"): OS morphing prepares migrated
# guests for it, and imported instances get this disk bus and NIC model.
GUEST_DEFAULTS: dict[str, Any] = {
    "disk_bus": "virtio", "nic_model": "virtio", "serial_console": "ttyS0",
    "cloud_init_datasources": ["NoCloud", "None"], "keep_agents_of": [], "required_packages": [],
    "tagged_vlans": False,  # the cloud's networks carry 802.1Q-tagged frames: VLANs are kept
    "keep_static_ips": False,  # Windows: the source's static IPs on the new NICs
}


@dataclass(frozen=True)
class StorageBackend:
    """A storage backend: disk files in ``DIR/storage/<name>/``, or with ``block_devices``
    (absolute paths) volumes that are whole block devices the operator set aside."""

    name: str
    format: str
    block_devices: tuple[str, ...] = ()


# "json:{...}", "nbd://host/x", "https://...": a file name that makes qemu open a protocol.
_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
MAX_BACKING_CHAIN = 32


def real_path(path: str | Path) -> Path:
    """``path`` with every symlink and ``..`` resolved (what an open would reach)."""
    return Path(os.path.realpath(path))


def is_inside(path: str | Path, *bases: Path) -> bool:
    """Whether ``path``, resolved, is one of ``bases`` (already resolved) or under one."""
    real = real_path(path)
    return any(real.is_relative_to(base) for base in bases)


_INFO_CACHE: dict[tuple[Any, ...], dict[str, Any]] = {}
_INFO_CACHE_SIZE = 256


def checked_image_info(path: str, fmt: str | None) -> dict[str, Any]:
    """``qemu-img info`` of an image that ``check_image`` passed. Both are run once per
    version of the file (same name, format, inode, size, modification and change times):
    the tasks of one execution ask again about the same unchanged image, and each call
    was two processes (issue 20). ``ProviderError`` as those two raise."""
    try:
        st = os.stat(path)
        key: tuple[Any, ...] | None = (path, fmt, st.st_dev, st.st_ino, st.st_size,
                                       st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        key = None  # qemu-img says why
    cached = _INFO_CACHE.get(key) if key else None
    if cached is not None:
        return json.loads(json.dumps(cached))  # callers get their own copy
    info = qemu_img_info(path, fmt)
    check_image(path, info["format"])
    if key:
        if len(_INFO_CACHE) >= _INFO_CACHE_SIZE:
            _INFO_CACHE.clear()
        _INFO_CACHE[key] = json.loads(json.dumps(info))
    return info


def check_image(path: str, fmt: str) -> None:
    """``ProviderError`` with qemu-img's reason if ``qemu-img check`` finds the image corrupt
    (a truncated qcow2 reads as zeroes where its data was); leaked clusters are harmless."""
    if fmt == "raw":
        return
    proc = subprocess.run(["qemu-img", "check", "-U", "-f", fmt, "--output=json", path],
                          capture_output=True, text=True)
    if proc.returncode in (0, 3, 63):  # clean, leaks only, no check for this format
        return
    errors = [line.removeprefix("ERROR: ") for line in proc.stderr.splitlines() if line]
    try:
        found = json.loads(proc.stdout).get("corruptions")
    except ValueError:
        found = None
    what = f"{found} corrupted clusters" if found else "errors"
    raise exceptions.ProviderError(
        f"qemu-img check found {what} in {os.path.basename(path)}"
        + (f": {errors[0]}" if errors else ""))


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``path`` whole or not at all, durably: a temporary file, fsynced, renamed over
    it, and the folder fsynced."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(value, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def install_file(tmp: Path, final: Path, mode: int) -> None:
    """Give the finished file ``tmp`` its ``mode``, make it durable and rename it to
    ``final`` (durably): a crash leaves either no ``final`` or the whole file."""
    os.chmod(tmp, mode)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def fsync_dir(folder: Path) -> None:
    """Make the creations, renames and removals of entries in ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalCloud:
    def __init__(self, connection_info: dict[str, Any]) -> None:
        path = connection_info.get("path") if isinstance(connection_info, dict) else None
        if not isinstance(path, str) or not path:
            raise exceptions.InvalidInput("connection_info.path must be a directory path")
        self.root = Path(path)

    @property
    def real_root(self) -> Path:
        return real_path(self.root)

    # --- cloud.json -------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        file = self.root / "cloud.json"
        if not file.exists():
            return {}
        if not is_inside(file, self.real_root):
            raise exceptions.InvalidInput(f"{file} leads out of {self.root} (a symlink)")
        try:
            config = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise exceptions.InvalidInput(f"{file} is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise exceptions.InvalidInput(f"{file} must hold a JSON object")
        return config

    def networks(self) -> list[str]:
        nets = self._config().get("networks", ["default"])
        if not isinstance(nets, list) or not all(isinstance(n, str) for n in nets):
            raise exceptions.InvalidInput("cloud.json: networks must be a list of names")
        return nets

    def storage_backends(self) -> list[StorageBackend]:
        raw = self._config().get("storage", [{"name": "default", "format": "raw"}])
        backends = []
        for item in raw if isinstance(raw, list) else [None]:
            if (not isinstance(item, dict) or not isinstance(item.get("name"), str)
                    or item.get("format", "raw") not in STORAGE_FORMATS):
                raise exceptions.InvalidInput(
                    "cloud.json: storage must be a list of {name, format: raw|qcow2, "
                    "block_devices: [absolute paths] (raw only)}")
            devices = item.get("block_devices", [])
            if (not isinstance(devices, list) or not all(
                    isinstance(d, str) and os.path.isabs(d) and "\0" not in d for d in devices)
                    or (devices and item.get("format", "raw") != "raw")):
                raise exceptions.InvalidInput(
                    f"cloud.json: storage backend '{item['name']}': block_devices must be a "
                    "list of absolute paths, in a backend of format raw")
            backends.append(StorageBackend(item["name"], item.get("format", "raw"),
                                           tuple(devices)))
        return backends

    def block_devices(self) -> dict[str, StorageBackend]:
        """Every block device the storage backends list (as the kernel resolves the listed
        path) and its backend."""
        return {str(real_path(d)): b for b in self.storage_backends() for d in b.block_devices}

    def device_backend(self, path: str | Path) -> StorageBackend | None:
        """The backend that lists block device ``path`` (resolved), None if none does."""
        return self.block_devices().get(str(real_path(path)))

    def guest_profile(self) -> dict[str, Any]:
        guest = self._config().get("guest", {})
        if not isinstance(guest, dict) or set(guest) - set(GUEST_DEFAULTS):
            raise exceptions.InvalidInput(
                f"cloud.json: guest must be an object with keys {', '.join(GUEST_DEFAULTS)}")
        profile = {**GUEST_DEFAULTS, **guest}
        if profile["disk_bus"] not in DISK_BUSES or profile["nic_model"] not in NIC_MODELS:
            raise exceptions.InvalidInput(
                f"cloud.json: guest.disk_bus must be one of {', '.join(DISK_BUSES)} and "
                f"guest.nic_model one of {', '.join(NIC_MODELS)}")
        if not isinstance(profile["tagged_vlans"], bool):
            raise exceptions.InvalidInput("cloud.json: guest.tagged_vlans must be true or false")
        return profile

    def backend(self, name: str) -> StorageBackend:
        for backend in self.storage_backends():
            if backend.name == name:
                return backend
        known = ", ".join(b.name for b in self.storage_backends())
        raise exceptions.InvalidInput(
            f"storage backend '{name}' does not exist on the destination (available: {known})")

    def validate(self) -> None:
        if not self.root.is_dir():
            raise exceptions.ConnectionValidationFailed(
                f"{self.root} does not exist or is not a directory")
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise exceptions.ConnectionValidationFailed(f"{self.root} is not readable and writable")
        try:
            self.networks()
            self.storage_backends()
            self.guest_profile()
        except exceptions.InvalidInput as exc:
            raise exceptions.ConnectionValidationFailed(str(exc)) from None

    # --- instances --------------------------------------------------------------------------
    @property
    def instances_dir(self) -> Path:
        return self.root / "instances"

    def instance_dir(self, name: str) -> Path:
        """``DIR/instances/<name>``; ``InvalidInput`` if the name is not a plain file name or
        the folder (or ``instances``) is a symlink that leads elsewhere."""
        if not name or "/" in name or "\0" in name or name in (".", ".."):
            raise exceptions.InvalidInput(f"invalid instance name '{name}'")
        folder = self.instances_dir / name
        for path in (self.instances_dir, folder):
            if os.path.lexists(path) and real_path(path) != self.real_root.joinpath(
                    *path.relative_to(self.root).parts):
                raise exceptions.InvalidInput(
                    f"instance '{name}': its folder leads out of {self.instances_dir} "
                    "(a symlink)")
        return folder

    def instance_names(self) -> list[str]:
        if not self.instances_dir.is_dir():
            return []
        return sorted(p.name for p in self.instances_dir.iterdir()
                      if (p / INSTANCE_FILE).is_file())

    def exists(self, name: str) -> bool:
        folder = self.instance_dir(name)
        return (folder / INSTANCE_FILE).exists() or (folder / PENDING_FILE).exists()

    def load_instance(self, name: str) -> dict[str, Any]:
        """The instance description, checked; ``InstanceNotFound``/``InvalidInput`` naming it."""
        folder = self.instance_dir(name)
        file = folder / INSTANCE_FILE
        if not file.is_file():
            raise exceptions.InstanceNotFound(f"instance '{name}' not found in {self.root}")
        if not is_inside(file, real_path(folder)):
            raise exceptions.InvalidInput(
                f"instance '{name}': {INSTANCE_FILE} leads out of the instance folder")
        try:
            desc = json.loads(file.read_text())
        except ValueError as exc:
            raise exceptions.InvalidInput(f"instance '{name}': invalid instance.json: {exc}"
                                          ) from None
        if not isinstance(desc, dict):
            raise exceptions.InvalidInput(f"instance '{name}': instance.json is not an object")
        missing = [k for k in REQUIRED_KEYS if k not in desc]
        if missing:
            raise exceptions.InvalidInput(
                f"instance '{name}': instance.json lacks {', '.join(missing)}")
        if not isinstance(desc["disks"], list) or not isinstance(desc["nics"], list):
            raise exceptions.InvalidInput(f"instance '{name}': disks and nics must be lists")
        for i, disk in enumerate(desc["disks"]):
            if not isinstance(disk, dict) or not isinstance(disk.get("file"), str):
                raise exceptions.InvalidInput(f"instance '{name}': disk {i} has no file")
            if disk.get("format", "raw") not in DISK_FORMATS:
                raise exceptions.InvalidInput(
                    f"instance '{name}': disk {i} has unsupported format {disk.get('format')}")
            path = self.disk_path(name, disk)
            if not (path.is_file() or path.is_block_device()):
                raise exceptions.InvalidInput(
                    f"instance '{name}': disk file {disk['file']} is missing")
        return desc

    def _disk_bases(self, name: str) -> tuple[Path, ...]:
        """Where the files of instance ``name`` may be: its folder, the storage backends and
        the block devices they list."""
        return (self.real_root / "instances" / name, self.real_root / "storage",
                *(Path(d) for d in self.block_devices()))

    def read_bases(self, name: str) -> tuple[Path, ...]:
        """Where what is read for instance ``name`` may be: its own places and, for
        point-in-time copies, the cloud's scratch folder."""
        return (*self._disk_bases(name), self.real_root / ".coriolis")

    def disk_path(self, name: str, disk: dict[str, Any]) -> Path:
        """The resolved path of a disk entry of instance ``name``; ``InvalidInput`` naming the
        instance and the file if it is absolute or resolves out of the instance folder and the
        storage backends."""
        file = disk["file"]
        if isinstance(file, str) and os.path.isabs(file) and self.device_backend(file):
            return real_path(file)  # one of this cloud's block devices
        if not file or os.path.isabs(file) or "\0" in file:
            raise exceptions.InvalidInput(
                f"instance '{name}': disk file {file} leads out of the instance folder (an "
                "absolute path; it must be relative to the instance folder)")
        path = self.instance_dir(name) / file
        if not is_inside(path, *self._disk_bases(name)):
            raise exceptions.InvalidInput(
                f"instance '{name}': disk file {file} leads out of the instance folder")
        return real_path(path)

    def image_info(self, name: str, disk: dict[str, Any], path: Path | None = None,
                   fmt: str | None = None) -> dict[str, Any]:
        """``qemu-img info`` of a disk of instance ``name`` (or of ``path``, one of its
        backing files, in ``fmt``; None probes); an image qemu-img cannot read is an
        ``InvalidInput`` naming the instance, the disk and qemu-img's reason."""
        declared = disk.get("format", "raw")
        file = str(path or self.disk_path(name, disk))
        try:
            return checked_image_info(file, declared if path is None else fmt)
        except exceptions.ProviderError as exc:
            raise exceptions.InvalidInput(
                f"instance '{name}': disk file {disk['file']} is not a readable {declared} "
                f"image: {exc}") from None

    def disk_files(self, name: str, disk: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        """``disk_path`` and the image's ``qemu-img info``, after checking every file qemu
        would open for it (backing files, external data files, VMDK extents) the same way;
        ``InvalidInput`` naming the instance, the disk and the reason."""
        path = self.disk_path(name, disk)
        top = self.image_info(name, disk)
        bases = self._disk_bases(name)
        current, info = path, top
        for _ in range(MAX_BACKING_CHAIN):
            if info.get("format") == "raw":
                return path, top
            data = (info.get("format-specific") or {}).get("data") or {}
            backing = info.get("full-backing-filename") or info.get("backing-filename")
            named = [e.get("filename") for e in data.get("extents") or []]
            for file in [*named, data.get("data-file"), backing]:
                if not file or file == info.get("filename"):
                    continue
                if _PROTOCOL.match(file):
                    raise exceptions.InvalidInput(
                        f"instance '{name}': disk file {disk['file']} refers to {file[:40]!r}; "
                        "only files of the instance can be read")
                if not is_inside(current.parent / file, *bases):
                    raise exceptions.InvalidInput(
                        f"instance '{name}': disk file {disk['file']} refers to {file}, which "
                        "leads out of the instance folder")
            if not backing:
                return path, top
            current = real_path(current.parent / backing)
            info = self.image_info(name, disk, current, info.get("backing-filename-format"))
        raise exceptions.InvalidInput(
            f"instance '{name}': disk file {disk['file']} has more than {MAX_BACKING_CHAIN} "
            "backing files")

    def save_instance(self, name: str, desc: dict[str, Any], *, pending: bool = False) -> Path:
        folder = self.instance_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (PENDING_FILE if pending else INSTANCE_FILE)
        write_json_atomic(target, desc)
        return target

    # --- storage ----------------------------------------------------------------------------
    def _own_dir(self, *parts: str) -> Path:
        """``DIR/<parts>``, created, refused if it (or a folder on the way) leads elsewhere."""
        if any(not p or "/" in p or p in (".", "..") for p in parts):
            raise exceptions.InvalidInput(f"invalid folder name {'/'.join(parts)!r} in "
                                          f"{self.root}")
        for depth in range(1, len(parts) + 1):  # each folder checked before making the next
            path = self.root.joinpath(*parts[:depth])
            path.mkdir(exist_ok=True)
            if real_path(path) != self.real_root.joinpath(*parts[:depth]):
                raise exceptions.InvalidInput(f"{path} leads out of {self.root} (a symlink)")
        return path

    def storage_dir(self, backend: str) -> Path:
        return self._own_dir("storage", backend)

    def scratch_dir(self) -> Path:
        return self._own_dir(".coriolis")
