"""Reading and writing the on-disk layout of a local cloud.

    DIR/cloud.json                      networks and storage backends (optional)
    DIR/instances/<name>/instance.json  one instance, disks referenced by relative path
    DIR/storage/<backend>/              disks imported into a storage backend
    DIR/.coriolis/                      snapshots and other temporary files
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coriolis import exceptions

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
}


@dataclass(frozen=True)
class StorageBackend:
    name: str
    format: str


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

    # --- cloud.json -------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        file = self.root / "cloud.json"
        if not file.exists():
            return {}
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
                    "cloud.json: storage must be a list of {name, format: raw|qcow2}")
            backends.append(StorageBackend(item["name"], item.get("format", "raw")))
        return backends

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
        if not name or "/" in name or name in (".", ".."):
            raise exceptions.InvalidInput(f"invalid instance name '{name}'")
        return self.instances_dir / name

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
        file = self.instance_dir(name) / INSTANCE_FILE
        if not file.is_file():
            raise exceptions.InstanceNotFound(f"instance '{name}' not found in {self.root}")
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
            if not path.is_file():
                raise exceptions.InvalidInput(
                    f"instance '{name}': disk file {disk['file']} is missing")
        return desc

    def disk_path(self, name: str, disk: dict[str, Any]) -> Path:
        return (self.instance_dir(name) / disk["file"]).resolve()

    def save_instance(self, name: str, desc: dict[str, Any], *, pending: bool = False) -> Path:
        folder = self.instance_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (PENDING_FILE if pending else INSTANCE_FILE)
        write_json_atomic(target, desc)
        return target

    # --- storage ----------------------------------------------------------------------------
    def storage_dir(self, backend: str) -> Path:
        path = self.root / "storage" / backend
        path.mkdir(parents=True, exist_ok=True)
        return path

    def scratch_dir(self) -> Path:
        path = self.root / ".coriolis"
        path.mkdir(parents=True, exist_ok=True)
        return path
