"""The ``local`` provider's backend: a directory made as ``coriolis-server local-cloud init``
makes one, with a writer agent (``coriolis-server writer``) in its connection info so that
the kit has a secret (the agent key) to look for in errors."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import ClassVar

from coriolis.cmd.local_cloud import init_cloud
from coriolis.harness import RunningWriter, start_writer, stop_server
from coriolis.providers.local.cloud import write_json_atomic
from tests.providers.backends import JSON, Disk, Instance
from tests.providers.backends import Backend as BaseBackend


def write_disk(path: Path, disk: Disk) -> None:
    """``disk`` as an image file at ``path``: raw with holes (data and written zeroes
    only where ``disk`` says), or converted from such a raw file."""
    raw = path if disk.format == "raw" else Path(tempfile.mkdtemp(dir=path.parent)) / "d.raw"
    with open(raw, "wb") as f:
        f.truncate(disk.size)
        for offset, length in disk.zeros:
            f.seek(offset)
            f.write(bytes(length))
        for offset, piece in disk.data:
            f.seek(offset)
            f.write(piece)
    if raw != path:
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", disk.format, str(raw),
                        str(path)], check=True)
        raw.unlink()
        raw.parent.rmdir()


class Backend(BaseBackend):
    """A local cloud in ``root/cloud``: networks ``lan`` and ``prod``, storage backends
    ``bulk`` (raw) and ``fast`` (qcow2); the storage choice ``bulk via agent`` writes to
    ``bulk`` through the writer agent (``writer_agent: always``)."""

    platform = "local"
    formats = ("raw", "qcow2")
    storage = ("bulk", "fast", "bulk via agent")
    _agent: ClassVar[RunningWriter | None] = None

    @classmethod
    def start_session(cls, root: Path) -> dict[str, str]:
        """One writer agent serving ``root``; the API server lets projects use clouds under
        ``root`` (``CORIOLIS_LOCAL_ROOT``)."""
        cls._agent = start_writer(root.parent / f"{root.name}-writer", [root])
        return {"CORIOLIS_LOCAL_ROOT": str(root)}

    @classmethod
    def stop_session(cls) -> None:
        if cls._agent is not None:
            stop_server(cls._agent)
            cls._agent = None

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.cloud = init_cloud(root / "cloud", ["lan", "prod"], [("bulk", "raw"),
                                                                  ("fast", "qcow2")])

    def connection_info(self) -> JSON:
        info: JSON = {"path": str(self.cloud)}
        if self._agent is not None:
            details = self._agent.details
            info["writer"] = {"url": details["url"], "fingerprint": details["fingerprint"],
                              "key": details["key"]}
        return info

    def secrets(self) -> list[str]:
        return [self._agent.details["key"]] if self._agent is not None else []

    def create_instance(self, instance: Instance) -> str:
        folder = self.cloud / "instances" / instance.name
        folder.mkdir(parents=True)
        entries = []
        for i, disk in enumerate(instance.disks):
            file = f"disk{i}.{disk.format}"
            write_disk(folder / file, disk)
            entries.append({"file": file, "format": disk.format, "bus": "virtio"})
        write_json_atomic(folder / "instance.json", {
            "name": instance.name, "cpus": 2, "memory_mb": 1024, "os_type": "linux",
            "firmware": "bios", "power_state": "running",
            "nics": [{"network": instance.network, "mac": "52:54:00:12:34:56"}],
            "disks": entries})
        return instance.name

    def create_malformed_instance(self, name: str) -> str:
        folder = self.cloud / "instances" / name
        folder.mkdir(parents=True)
        (folder / "instance.json").write_text('{"name": "' + name + '", "cpus": ')
        return name

    def source_env(self) -> JSON:
        return {"snapshot": True}  # so that source resources leave something to delete

    def destination_env(self, storage: str | None = None) -> JSON:
        backend, _, agent = (storage or "bulk").partition(" via ")
        env: JSON = {"network_map": {"lan": "prod"},
                     "storage_mappings": {"default": backend, "backend_mappings": [],
                                          "disk_mappings": []}}
        if agent:
            env["writer_agent"] = "always"
        return env

    def inventory(self) -> set[str]:
        """Every file of the cloud, and every folder but the cloud's own (``instances``,
        ``storage/<backend>``, ``.coriolis``), which may stay once made."""
        own = {"instances", "storage", ".coriolis", *(f"storage/{s}" for s in self.storage)}
        found = set()
        for folder, dirs, files in os.walk(self.cloud):
            rel = os.path.relpath(folder, self.cloud)
            found.update(os.path.normpath(os.path.join(rel, f)) for f in files)
            found.update(os.path.normpath(os.path.join(rel, d)) + "/" for d in dirs
                         if os.path.normpath(os.path.join(rel, d)) not in own)
        return found
