"""The `local` provider: export from and import into a directory-backed cloud."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coriolis import exceptions
from coriolis.providers import mappings
from coriolis.providers.base import (
    JSON,
    BaseProvider,
    DestinationOptionsProvider,
    InstancesProvider,
    MinionOsMorphingProvider,
    MinionPoolProvider,
    NetworksProvider,
    OSMorphingProvider,
    ReplicaExportProvider,
    ReplicaImportProvider,
    SourceOptionsProvider,
    StorageProvider,
)
from coriolis.providers.local import devices, replica_disks, source_snapshot
from coriolis.providers.local.cloud import (
    INSTANCE_FILE,
    PENDING_FILE,
    LocalCloud,
    StorageBackend,
    fsync_dir,
    is_inside,
    write_json_atomic,
)
from coriolis.providers.local.minions import LocalMinionPools
from coriolis.transfer import locations
from coriolis.transfer.extents import qcow2_bitmaps
from coriolis.transfer.locations import AgentLocation, PathLocation
from coriolis.transfer.remote import AgentAddress, is_this_host, probe_agent
from coriolis.worker.faults import crash_point

if TYPE_CHECKING:
    from coriolis.config import Settings

MiB = 1024 * 1024

WRITER_SCHEMA: JSON = {
    "type": "object",
    "description": "Writer agent on the cloud's host (coriolis-server writer; its writer.json)",
    "properties": {
        "url": {"type": "string", "pattern": "^https://"},
        "fingerprint": {"type": "string", "description": "SHA-256 of the agent certificate"},
        "key": {"type": "string", "minLength": 1, "description": "The agent key"},
        "mode": {"type": "string", "enum": ["auto", "always"], "default": "auto",
                 "description": "auto: only when the agent is on another host"},
    },
    "required": ["url", "fingerprint", "key"],
    "additionalProperties": False,
}
CONNECTION_SCHEMA: JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {"path": {"type": "string", "minLength": 1,
                            "description": "Directory that holds the cloud"},
                   "writer": WRITER_SCHEMA},
    "required": ["path"],
    "additionalProperties": False,
}
SOURCE_ENV_SCHEMA: JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {"snapshot": {
        "type": "boolean", "default": False,
        "description": "Read a point-in-time copy of the disks (reflink where possible)"}},
    "additionalProperties": False,
}
DESTINATION_ENV_SCHEMA: JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "storage_backend": {"type": "string", "description": "Default backend for the disks"},
        "instance_name": {"type": "string", "description": "Name of the destination instance"},
        "network_map": {"type": "object"},
        "storage_mappings": {"type": "object"},
    },
    "additionalProperties": False,
}
"""The local provider's own keys; the API adds the transfer options (``transfer.options``)."""


_reflink_copy = source_snapshot.reflink_copy


def _transfer_key(transfer_id: str | None, *parts: str) -> str:
    """A short name part that is the same each time the same transfer (and instance, disk...)
    asks, so that a call repeated after a crash finds what the interrupted one made; random
    without a ``transfer_id``."""
    if not transfer_id:
        return uuid.uuid4().hex[:10]
    return hashlib.sha256("|".join((transfer_id, *parts)).encode()).hexdigest()[:10]


def _snapshot_folder(cloud: LocalCloud, transfer_id: str | None, export_info: JSON) -> Path:
    """Where the source snapshot of one instance of one transfer lives."""
    return cloud.scratch_dir() / f"snapshot-{_transfer_key(transfer_id, export_info['name'])}"


CBT_PREFIX = "coriolis-cbt-"


def _qemu_img(*args: str) -> None:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise exceptions.ProviderError(f"qemu-img {args[0]} failed: {proc.stderr.strip()}")


def _remove_stale_bitmaps(image: str, prefix: str, keep: set[str]) -> None:
    """Remove the bitmaps of ``prefix`` (one replica's) but those in ``keep``: the tracking
    points of executions that died or were rolled back."""
    if not os.path.exists(image):
        return
    for name in qcow2_bitmaps(image):
        if name.startswith(prefix) and name not in keep:
            _qemu_img("bitmap", "--remove", image, name)


# The key of the transfer that owns a pending instance definition (removed by finalize).
OWNER_KEY = "coriolis_transfer"


def create_image(path: Path, fmt: str, size: int) -> None:
    if fmt == "raw":
        with open(path, "xb") as f:
            f.truncate(size)
        return
    proc = subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise exceptions.ProviderError(f"cannot create {path.name}: {proc.stderr.strip()}")


def _check_writer_agent(writer: JSON, cloud_path: str) -> None:
    """The agent answers with the pinned certificate, takes the key and serves the cloud."""
    try:
        address = AgentAddress.from_json(writer)
    except ValueError as exc:
        raise exceptions.ConnectionValidationFailed(f"writer.fingerprint: {exc}") from None
    try:
        roots = probe_agent(address)
    except exceptions.ProviderError as exc:
        raise exceptions.ConnectionValidationFailed(str(exc)) from None
    real = os.path.realpath(cloud_path)
    if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
        raise exceptions.ConnectionValidationFailed(
            f"the writer agent at {address.url} does not serve {cloud_path} (it serves "
            f"{', '.join(roots)}); start it with --root {cloud_path}")


class LocalProvider(LocalMinionPools, BaseProvider, InstancesProvider, NetworksProvider,
                    StorageProvider, SourceOptionsProvider, DestinationOptionsProvider,
                    ReplicaExportProvider, ReplicaImportProvider, OSMorphingProvider,
                    MinionPoolProvider, MinionOsMorphingProvider):
    platform = "local"

    # --- schemas --------------------------------------------------------------------------
    def connection_info_schema(self) -> JSON:
        return CONNECTION_SCHEMA

    def source_environment_schema(self) -> JSON:
        return SOURCE_ENV_SCHEMA

    def destination_environment_schema(self) -> JSON:
        return DESTINATION_ENV_SCHEMA

    # --- endpoint -------------------------------------------------------------------------
    def check_location(self, connection_info: JSON, project_id: str,
                       settings: Settings) -> None:
        """``path`` must be an absolute path that resolves (symlinks and ``..`` followed) to
        one of the project's local cloud roots or under one (``Settings.local_roots``)."""
        path = connection_info.get("path") if isinstance(connection_info, dict) else None
        roots = settings.local_roots_for(project_id)
        allowed = " or ".join(str(r) for r in roots)
        if not isinstance(path, str) or not os.path.isabs(path):
            raise exceptions.LocationNotAllowed(
                f"connection_info.path must be an absolute path in {allowed}")
        if not is_inside(path, *roots):
            raise exceptions.LocationNotAllowed(
                f"connection_info.path {path} is outside the local clouds of this project: "
                f"it must be in {allowed}")

    def validate_connection(self, connection_info: JSON) -> None:
        LocalCloud(connection_info).validate()
        if connection_info.get("writer"):
            _check_writer_agent(connection_info["writer"], connection_info["path"])

    def list_instances(self, connection_info: JSON, env: JSON) -> list[JSON]:
        cloud = LocalCloud(connection_info)
        result = []
        for name in cloud.instance_names():
            try:
                desc = cloud.load_instance(name)
            except exceptions.CoriolisError as exc:
                # A broken instance is reported by name, never breaks the listing.
                result.append({"id": name, "name": name, "instance_name": name, "num_cpu": 0,
                               "memory_mb": 0, "os_type": "unknown", "firmware_type": None,
                               "flavor_name": None, "error": str(exc)})
                continue
            result.append(self._summary(desc))
        return result

    @staticmethod
    def _summary(desc: JSON) -> JSON:
        return {
            "id": desc["name"], "name": desc["name"], "instance_name": desc["name"],
            "num_cpu": desc["cpus"], "memory_mb": desc["memory_mb"], "os_type": desc["os_type"],
            "firmware_type": "EFI" if desc["firmware"] == "uefi" else "BIOS",
            "flavor_name": None,
        }

    def get_instance(self, connection_info: JSON, env: JSON, instance: str) -> JSON:
        cloud = LocalCloud(connection_info)
        desc = cloud.load_instance(instance)
        disks = []
        for i, disk in enumerate(desc["disks"]):
            path, info = cloud.disk_files(instance, disk)
            fmt = disk.get("format", "raw")
            on_device = cloud.device_backend(path) if path.is_block_device() else None
            backend = (on_device.name if on_device else path.parent.name
                       if path.parent.parent == cloud.real_root / "storage" else None)
            disks.append({"id": f"disk{i}", "size_bytes": int(info["virtual-size"]),
                          "format": fmt, "bus": disk.get("bus", "virtio"), "file": disk["file"],
                          "storage_backend": backend})
        nics = [{"id": f"nic{i}", "mac_address": nic.get("mac"), "network_name": nic["network"]}
                for i, nic in enumerate(desc["nics"])]
        return {**self._summary(desc), "power_state": desc["power_state"],
                "devices": {"disks": disks, "nics": nics, "controllers": [], "cdroms": [],
                            "floppies": [], "serial_ports": []}}

    def list_networks(self, connection_info: JSON, env: JSON) -> list[JSON]:
        return [{"id": n, "name": n} for n in LocalCloud(connection_info).networks()]

    def list_storage(self, connection_info: JSON, env: JSON) -> JSON:
        backends = LocalCloud(connection_info).storage_backends()
        return {"storage_backends": [{"id": b.name, "name": b.name,
                                      "additional_provider_properties": {
                                          "format": b.format,
                                          **({"block_devices": list(b.block_devices)}
                                             if b.block_devices else {})}}
                                     for b in backends],
                "config_default": backends[0].name if backends else None}

    @staticmethod
    def _filter(options: list[JSON], names: list[str] | None) -> list[JSON]:
        return [o for o in options if not names or o["name"] in names]

    def list_destination_options(self, connection_info: JSON, env: JSON,
                                 option_names: list[str] | None) -> list[JSON]:
        backends = [b.name for b in LocalCloud(connection_info).storage_backends()]
        return self._filter([{"name": "storage_backend", "values": backends,
                              "config_default": backends[0] if backends else None}],
                            option_names)

    def list_source_options(self, connection_info: JSON, env: JSON,
                            option_names: list[str] | None) -> list[JSON]:
        return self._filter([{"name": "snapshot", "values": [True, False],
                              "config_default": False}], option_names)

    # --- export ---------------------------------------------------------------------------
    def validate_source_inputs(self, connection_info: JSON, env: JSON, instance: str) -> None:
        cloud = LocalCloud(connection_info)
        desc = cloud.load_instance(instance)
        for disk in desc["disks"]:
            path = cloud.disk_path(instance, disk)
            if not os.access(path, os.R_OK):
                raise exceptions.InvalidInput(
                    f"instance '{instance}': disk file {disk['file']} is not readable")

    def deploy_source_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                tracking_id: str | None = None,
                                transfer_id: str | None = None,
                                keep_tokens: Iterable[str] = ()) -> JSON:
        """Change tracking: qcow2 disks get a persistent dirty bitmap (added before any
        snapshot is taken, so no write falls between the two); the replica's other bitmaps
        but ``keep_tokens`` (the tracking point in force) are left by executions that died or
        were rolled back, and go. With ``snapshot``, reads stay on a point-in-time copy of
        every file of every disk (backing chains, vmdk extents: ``source_snapshot``), in
        ``.coriolis/snapshot-<key of the transfer and instance>``, which a repeated call
        replaces and a failed one removes."""
        cloud = LocalCloud(connection_info)
        name = export_info["name"]
        files = {disk["id"]: str(cloud.disk_files(name, disk)[0])  # checked again now
                 for disk in export_info["devices"]["disks"]}
        resources: JSON = {}
        if tracking_id:
            prefix = f"{CBT_PREFIX}{tracking_id[:8]}-"
            for disk in export_info["devices"]["disks"]:
                if disk["format"] == "qcow2":
                    image = str(cloud.disk_path(export_info["name"], disk))
                    _remove_stale_bitmaps(image, prefix, set(keep_tokens))
                    token = f"{prefix}{uuid.uuid4().hex[:8]}"
                    _qemu_img("bitmap", "--add", image, token)
                    resources.setdefault("cbt", {})[disk["id"]] = {
                        "token": token, "image": image, "prefix": prefix}
        if env.get("snapshot"):
            folder = _snapshot_folder(cloud, transfer_id or tracking_id, export_info)
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            snapshots = {}
            try:
                for disk in export_info["devices"]["disks"]:
                    src = cloud.disk_path(export_info["name"], disk)
                    top = source_snapshot.snapshot_image(
                        src, disk["format"], folder / disk["id"],
                        cloud.read_bases(export_info["name"]))
                    snapshots[disk["id"]] = str(top)
                    crash_point()
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            resources.update({"snapshot_dir": str(folder), "snapshots": snapshots,
                              "point_in_time": True})
            files.update(snapshots)
        bases = tuple(str(b) for b in cloud.read_bases(name))
        resources["disks"] = {
            disk["id"]: locations.to_json(PathLocation(
                files[disk["id"]], disk["format"], confine=bases,
                what=f"instance '{name}': disk file {disk['file']}"))
            for disk in export_info["devices"]["disks"]}
        crash_point()
        return resources

    def delete_source_resources(self, connection_info: JSON, env: JSON,
                                source_resources: JSON) -> None:
        """Remove the snapshot folder and the replica's bitmaps but ``keep_tokens``; with
        ``export_info`` and ``transfer_id``/``tracking_id`` in ``source_resources`` (what
        ``deploy_source_resources`` was given), also those of a call that died before it
        reported them."""
        resources = source_resources or {}
        if resources.get("snapshot_dir"):
            folder = Path(resources["snapshot_dir"])
            # Whatever an interrupted call left of the folder goes too.
            for file in sorted(f for f in folder.rglob("*") if not f.is_dir()):
                file.unlink(missing_ok=True)
                crash_point()
            shutil.rmtree(folder, ignore_errors=True)
        crash_point()
        keep = set(resources.get("keep_tokens") or [])
        images = {t["image"]: t["prefix"] for t in (resources.get("cbt") or {}).values()}
        export_info, tracking_id = resources.get("export_info"), resources.get("tracking_id")
        owner = resources.get("transfer_id") or tracking_id
        if export_info and owner and env.get("snapshot"):
            shutil.rmtree(_snapshot_folder(LocalCloud(connection_info), owner, export_info),
                          ignore_errors=True)
        if export_info and tracking_id:
            cloud = LocalCloud(connection_info)
            for disk in export_info["devices"]["disks"]:
                if disk["format"] == "qcow2":
                    images[str(cloud.disk_path(export_info["name"], disk))] = \
                        f"{CBT_PREFIX}{tracking_id[:8]}-"
        for image, prefix in images.items():
            _remove_stale_bitmaps(image, prefix, keep)

    def shutdown_instance(self, connection_info: JSON, env: JSON, export_info: JSON) -> None:
        cloud = LocalCloud(connection_info)
        desc = cloud.load_instance(export_info["name"])
        desc["power_state"] = "stopped"
        cloud.save_instance(export_info["name"], desc)

    # --- import ---------------------------------------------------------------------------
    @staticmethod
    def _target_name(env: JSON, export_info: JSON) -> str:
        return env.get("instance_name") or export_info["name"]

    def _disk_backends(self, cloud: LocalCloud, env: JSON, export_info: JSON) -> dict[str, Any]:
        default = cloud.storage_backends()[0].name if cloud.storage_backends() else None
        result = {}
        for disk in export_info["devices"]["disks"]:
            name = mappings.storage_backend_for_disk(disk, env, default)
            if name is None:
                raise exceptions.InvalidInput("no storage backend for disk " + disk["id"])
            result[disk["id"]] = cloud.backend(name)
        return result

    def validate_destination_inputs(self, connection_info: JSON, env: JSON,
                                    export_info: JSON, check_name_clash: bool = True) -> None:
        cloud = LocalCloud(connection_info)
        name = self._target_name(env, export_info)
        if check_name_clash and cloud.exists(name):
            raise exceptions.InvalidInput(
                f"an instance named '{name}' already exists on the destination")
        self._check_devices(cloud, export_info, self._disk_backends(cloud, env, export_info))
        networks = cloud.networks()
        for nic in export_info["devices"]["nics"]:
            target = mappings.destination_network(nic["network_name"], env, networks)
            if target is None:
                raise exceptions.InvalidInput(
                    f"network '{nic['network_name']}' of instance '{export_info['name']}' is not "
                    f"mapped in network_map and does not exist on the destination")
            if target not in networks:
                raise exceptions.InvalidInput(
                    f"network_map maps '{nic['network_name']}' to '{target}', which does not "
                    f"exist on the destination (available: {', '.join(networks)})")

    @staticmethod
    def _check_devices(cloud: LocalCloud, export_info: JSON,
                       backends: dict[str, StorageBackend]) -> None:
        """Disks on block-device backends: every device listed is usable and the disks fit
        on distinct devices (largest disks first), claimed or not (a replica's own volumes
        claim some; whether enough are free is known when create_disks claims them);
        ``InvalidInput`` naming the backend and the devices otherwise."""
        pools: dict[str, list[tuple[int, str]]] = {}
        for disk in sorted(export_info["devices"]["disks"], key=lambda d: -d["size_bytes"]):
            backend = backends[disk["id"]]
            if not backend.block_devices:
                continue
            pool = pools.setdefault(backend.name, sorted(
                (s, d) for d, s in devices.usable_devices(backend)))
            fitting = [(s, d) for s, d in pool if s >= disk["size_bytes"]]
            if not fitting:
                listed = ", ".join(f"{d} ({s} bytes)" for s, d in pool) or "none left"
                raise exceptions.InvalidInput(
                    f"storage backend '{backend.name}' has no block device of at least "
                    f"{disk['size_bytes']} bytes for disk {disk['id']} of instance "
                    f"'{export_info['name']}' (its devices: {listed})")
            pool.remove(fitting[0])

    @staticmethod
    def _volume_exists(cloud: LocalCloud, volume: JSON) -> bool:
        if not devices.is_device_volume(volume):
            return os.path.exists(volume["path"])
        backend = cloud.backend(volume["storage_backend"])
        return devices.owned_claim(cloud, backend, volume["volume_id"]) is not None

    def create_disks(self, connection_info: JSON, env: JSON, export_info: JSON,
                     volumes_info: list[JSON], transfer_id: str | None = None) -> list[JSON]:
        """Disk files are named ``<instance>-<disk>-<key of the transfer>``: one an
        interrupted call left half-made is made again; on an error, those made here go.
        On a block-device backend a volume is a whole device, claimed and zeroed
        (``devices.claim``; the volume records ``block_device: true``, its ``volume_id`` and
        ``state_base``, where its replica side files go)."""
        cloud = LocalCloud(connection_info)
        backends = self._disk_backends(cloud, env, export_info)
        existing = {v["disk_id"]: v for v in volumes_info or []
                    if self._volume_exists(cloud, v)}
        name = self._target_name(env, export_info)
        result: list[JSON] = []
        made: list[Path] = []
        claimed: list[JSON] = []
        try:
            for disk in export_info["devices"]["disks"]:
                if disk["id"] in existing:
                    result.append(existing[disk["id"]])
                    continue
                backend = backends[disk["id"]]
                key = _transfer_key(transfer_id, export_info["name"], disk["id"])
                volume_id = f"{name}-{disk['id']}-{key}"
                if backend.block_devices:
                    volume = {"disk_id": disk["id"], "size_bytes": disk["size_bytes"],
                              "storage_backend": backend.name, "format": "raw",
                              "block_device": True, "volume_id": volume_id,
                              "state_base": devices.state_base(cloud, backend, volume_id)}
                    claimed.append(volume)
                    volume["path"] = devices.claim(cloud, backend, volume_id,
                                                   disk["size_bytes"])
                    result.append(volume)
                    crash_point()
                    continue
                path = (cloud.storage_dir(backend.name)
                        / f"{name}-{disk['id']}-{key}.{backend.format}")
                path.unlink(missing_ok=True)
                create_image(path, backend.format, disk["size_bytes"])
                made.append(path)
                result.append({"disk_id": disk["id"], "volume_id": uuid.uuid4().hex,
                               "size_bytes": disk["size_bytes"],
                               "storage_backend": backend.name, "format": backend.format,
                               "path": str(path)})
                crash_point()
        except BaseException:
            for path in made:
                path.unlink(missing_ok=True)
            for volume in claimed:
                devices.release(cloud, cloud.backend(volume["storage_backend"]),
                                volume["volume_id"], zero=False)
            raise
        crash_point()
        return result

    def deploy_target_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                volumes_info: list[JSON],
                                transfer_id: str | None = None) -> JSON:
        """Per volume a ``path`` location of its file, or, when the cloud has a writer agent
        (``connection_info.writer``), an ``agent`` location (key by ``key_ref``
        ``writer.key``, ``mode`` from ``writer.mode``); a raw replica volume's undo journal
        (``replica_disks.journal_of``) goes with it. Nothing is made, so nothing is left
        behind; a volume whose file is missing is a ``ProviderError`` naming its disk (with
        an agent on another host, the agent checks it when the copy opens it)."""
        agent = connection_info.get("writer")
        disks: JSON = {}
        for volume in volumes_info or []:
            what = f"destination disk {volume['disk_id']}"
            journal = replica_disks.journal_of(volume)
            location: PathLocation | AgentLocation
            if agent:
                location = AgentLocation(
                    url=agent["url"], fingerprint=agent["fingerprint"], key_ref="writer.key",
                    path=volume["path"], format=volume["format"],
                    mode=agent.get("mode") or "auto", journal=journal, what=what)
            else:
                location = PathLocation(volume["path"], volume["format"], what=what,
                                        journal=journal)
            if (not agent or is_this_host(agent["url"])) and not self._volume_exists(
                    LocalCloud(connection_info), volume):
                raise exceptions.ProviderError(
                    f"{what} is missing" + (f" (block device {volume['path']} is no longer "
                                            "claimed by it)" if volume.get("block_device")
                                            else ""))
            disks[volume["disk_id"]] = locations.to_json(location)
        return {"disks": disks}

    def delete_target_resources(self, connection_info: JSON, env: JSON,
                                target_resources: JSON) -> None:
        """Nothing to undo: the locations are the volumes' own files."""
        return None

    def delete_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON]) -> None:
        """Remove the disk files; a block-device volume's device is zeroed and released
        (``devices.release``: only while this volume still claims it)."""
        for volume in volumes_info or []:
            if devices.is_device_volume(volume):
                cloud = LocalCloud(connection_info)
                devices.release(cloud, cloud.backend(volume["storage_backend"]),
                                volume["volume_id"])
            else:
                Path(volume["path"]).unlink(missing_ok=True)
            crash_point()
        replica_disks.forget(volumes_info or [])
        crash_point()

    # Raw volumes are "snapshotted" by an undo journal beside them that the writer fills with
    # the old contents of what it overwrites, or for a deploy on them by a point-in-time copy
    # beside them (a reflink where the file system has them); qcow2 volumes by an internal
    # qcow2 snapshot; one commit record per instance says which snapshot is committed
    # (replica_disks.py).
    def snapshot_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON],
                       snapshot_id: str, for_deploy: bool = False) -> JSON:
        return replica_disks.take(volumes_info or [], snapshot_id, for_deploy=for_deploy)

    def restore_disk_snapshots(self, connection_info: JSON, env: JSON,
                               volumes_info: list[JSON]) -> JSON:
        return replica_disks.settle(volumes_info or [])

    def delete_disk_snapshots(self, connection_info: JSON, env: JSON,
                              volumes_info: list[JSON]) -> JSON:
        return replica_disks.commit(volumes_info or [])

    def deploy_instance(self, connection_info: JSON, env: JSON, export_info: JSON,
                        volumes_info: list[JSON], clone_disks: bool = False,
                        transfer_id: str | None = None) -> JSON:
        """Write the instance's definition as ``instance.json.coriolis-pending`` (not listed;
        ``finalize_instance`` makes it ``instance.json``), over clones of the disks when
        ``clone_disks``. Clones are named after the transfer and the pending definition
        names its transfer, so a repeated call replaces what an interrupted one left; a
        pending definition of another transfer is a name clash; on an error, what this call
        made goes."""
        cloud = LocalCloud(connection_info)
        name = self._target_name(env, export_info)
        folder = cloud.instance_dir(name)
        owner = _transfer_key(transfer_id, export_info["name"])
        if (folder / INSTANCE_FILE).exists() or self._pending_owner(folder) not in (None,
                                                                                     owner):
            raise exceptions.InvalidInput(
                f"an instance named '{name}' already exists on the destination")
        created_folder = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        disks, cloned = [], []
        guest = cloud.guest_profile()
        try:
            for volume in volumes_info:
                path = Path(volume["path"])
                if clone_disks:
                    key = _transfer_key(transfer_id, export_info["name"], volume["disk_id"])
                    clone = self._clone_path(cloud, volume, path).with_name(
                        f"{name}-{volume['disk_id']}-clone-{key}"
                        f"{'.raw' if devices.is_device_volume(volume) else path.suffix}")
                    cloned.append(str(clone))
                    _reflink_copy(path, clone)
                    path = clone
                on_device = devices.is_device_volume(volume) and not clone_disks
                disks.append({"file": str(path) if on_device else os.path.relpath(path, folder),
                              "format": volume["format"], "bus": guest["disk_bus"]})
            crash_point()
            networks = cloud.networks()
            nics = [{"network": mappings.destination_network(n["network_name"], env, networks),
                     "mac": n["mac_address"], "model": guest["nic_model"]}
                    for n in export_info["devices"]["nics"]]
            desc = {"name": name, "cpus": export_info["num_cpu"],
                    "memory_mb": export_info["memory_mb"], "os_type": export_info["os_type"],
                    "firmware": "uefi" if export_info.get("firmware_type") == "EFI" else "bios",
                    "power_state": "stopped", "nics": nics, "disks": disks, OWNER_KEY: owner}
            pending = cloud.save_instance(name, desc, pending=True)
        except BaseException:
            self._remove_instance(folder, cloned, created_folder)
            raise
        return {"instance_name": name, "pending_file": str(pending), "cloned_disks": cloned,
                "disks": [str((folder / d["file"]).resolve()) for d in disks]}

    @staticmethod
    def _clone_path(cloud: LocalCloud, volume: JSON, path: Path) -> Path:
        """Where a clone of ``volume`` goes: beside its file; for a block device, a sparse raw
        file in its backend's storage folder (a copy of the device's contents)."""
        if devices.is_device_volume(volume):
            return cloud.storage_dir(volume["storage_backend"]) / path.name
        return path

    @staticmethod
    def _pending_owner(folder: Path) -> str | None:
        """The transfer key a pending definition names (``""`` for one unreadable or of an
        older version), None without one."""
        try:
            desc = json.loads((folder / PENDING_FILE).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return ""
        return str(desc.get(OWNER_KEY, "")) if isinstance(desc, dict) else ""

    @staticmethod
    def _remove_instance(folder: Path, cloned: list[str], remove_folder: bool = True) -> None:
        """The definition first (so a half-removed instance is never listed), then the pending
        one and leftovers of atomic writes, the clones, and the folder once empty."""
        for file in (INSTANCE_FILE, PENDING_FILE):
            (folder / file).unlink(missing_ok=True)
            (folder / f"{file}.tmp").unlink(missing_ok=True)
            fsync_dir(folder)
            crash_point()
        for path in cloned:
            Path(path).unlink(missing_ok=True)
        if remove_folder and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    def finalize_instance(self, connection_info: JSON, env: JSON,
                          instance_deployment_info: JSON) -> JSON:
        """``instance.json`` from the pending definition (written to a temporary file,
        fsynced, renamed), then the pending one removed; done already is done."""
        cloud = LocalCloud(connection_info)
        name = instance_deployment_info["instance_name"]
        folder = cloud.instance_dir(name)
        pending = folder / PENDING_FILE
        if pending.exists():
            desc = json.loads(pending.read_text())
            desc.pop(OWNER_KEY, None)
            write_json_atomic(folder / INSTANCE_FILE, desc)
            pending.unlink()
            fsync_dir(folder)
        elif not (folder / INSTANCE_FILE).exists():
            raise exceptions.ProviderError(f"instance '{name}' is not being deployed")
        return {"instance_name": name, "path": str(folder),
                "disks": instance_deployment_info["disks"]}

    # --- OS morphing ----------------------------------------------------------------------
    @staticmethod
    def _deployed(cloud: LocalCloud, instance_deployment_info: JSON) -> JSON:
        pending = Path(instance_deployment_info["pending_file"])
        if not pending.exists():
            raise exceptions.ProviderError(
                f"instance '{instance_deployment_info['instance_name']}' is not being deployed")
        return dict(json.loads(pending.read_text()))

    def os_morphing_profile(self, connection_info: JSON, env: JSON, export_info: JSON,
                            instance_deployment_info: JSON) -> JSON:
        cloud = LocalCloud(connection_info)
        desc = self._deployed(cloud, instance_deployment_info)
        return {"platform": self.platform, **cloud.guest_profile(),
                "nics": [{"mac": n.get("mac"), "network": n.get("network")}
                         for n in desc["nics"]]}

    def minion_os_morphing_resources(self, connection_info: JSON, env: JSON,
                                     instance_deployment_info: JSON,
                                     minion_connection_info: JSON, key_ref: str) -> JSON:
        """The disks where they are, the minion's agent (a writer agent of this host serving
        the cloud's folder) as the helper that morphs them."""
        return self.deploy_os_morphing_resources(
            {**connection_info, "writer": {"url": minion_connection_info["url"],
                                           "fingerprint": minion_connection_info["fingerprint"],
                                           "mode": "always", "key_ref": key_ref}},
            env, instance_deployment_info)

    def minion_source_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                minion_connection_info: JSON, key_ref: str, *,
                                tracking_id: str | None = None,
                                transfer_id: str | None = None,
                                keep_tokens: Iterable[str] = ()) -> JSON:
        """What ``deploy_source_resources`` makes (change-tracking bitmaps, the snapshot with
        ``snapshot``), each disk read through the source minion (a writer agent of this host
        serving the cloud's folder) instead of opened by the worker: an ``agent`` location
        of the same file, confined to the instance's own places. A disk outside the cloud's
        folder (a block device elsewhere) cannot be served: ``ProviderError`` naming it."""
        cloud = LocalCloud(connection_info)
        name = export_info["name"]
        root = cloud.real_root
        for disk in export_info["devices"]["disks"]:
            if not cloud.disk_path(name, disk).is_relative_to(root):
                raise exceptions.ProviderError(
                    f"instance '{name}': disk file {disk['file']} is outside the cloud's "
                    f"folder, which is all a source minion serves")
        resources = self.deploy_source_resources(
            connection_info, env, export_info, tracking_id=tracking_id,
            transfer_id=transfer_id, keep_tokens=keep_tokens)
        bases = tuple(str(b) for b in cloud.read_bases(name) if b.is_relative_to(root))
        machine = minion_connection_info.get("machine_id", "")
        for disk_id, value in resources["disks"].items():
            at = locations.from_json(value)
            if not isinstance(at, PathLocation):  # deploy_source_resources makes paths only
                raise exceptions.ProviderError(f"disk {disk_id}: not a file of the cloud")
            resources["disks"][disk_id] = locations.to_json(AgentLocation(
                url=minion_connection_info["url"],
                fingerprint=minion_connection_info["fingerprint"], key_ref=key_ref,
                path=at.path, format=at.format, mode="always", confine=bases,
                what=f"{at.what} (through minion {machine})"))
        return resources

    def deploy_os_morphing_resources(self, connection_info: JSON, env: JSON,
                                     instance_deployment_info: JSON) -> JSON:
        """The disks are files of this cloud. Without a writer agent the worker opens them
        where they are; with one (``writer``) the agent's host is the cloud's helper machine
        and the appliance runs there when the agent is on another host or the endpoint's
        writer ``mode`` is ``always`` (every disk access of the cloud through its agent)."""
        agent = connection_info.get("writer")
        helper = None
        if agent and (agent.get("mode") == "always" or not is_this_host(agent["url"])):
            helper = {"url": agent["url"], "fingerprint": agent["fingerprint"],
                      "key_ref": agent.get("key_ref") or "writer.key"}
        cloud = LocalCloud(connection_info)
        desc = self._deployed(cloud, instance_deployment_info)
        folder = cloud.instance_dir(instance_deployment_info["instance_name"])
        disks = []
        for i, disk in enumerate(desc["disks"]):
            path = (folder / disk["file"]).resolve()
            if helper is None and not path.exists():  # the helper checks its own
                raise exceptions.ProviderError(f"disk {disk['file']} of the instance is missing")
            disks.append({"path": str(path), "format": disk["format"], "name": f"disk{i}"})
        return {"disks": disks, "helper": helper}

    def cleanup_failed_instance(self, connection_info: JSON, env: JSON,
                                instance_deployment_info: JSON) -> None:
        if not instance_deployment_info:
            return
        cloud = LocalCloud(connection_info)
        self._remove_instance(cloud.instance_dir(instance_deployment_info["instance_name"]),
                              instance_deployment_info.get("cloned_disks", []))
