"""The libvirt provider's source side: instances, cold and live exports, change tracking.

Instances are domains (running and shut off), found by name or UUID; ``export_info`` per
``coriolis.providers.base``, each disk with ``id`` (the target dev, ``vda``), ``path`` (its
file on the host), ``format``, ``bus``, ``size_bytes`` and, for pool volumes, ``pool`` and
``volume``. Domains this provider is still deploying (pending metadata, see
``destination``) are not listed.

Exports (``deploy_source_resources``):

- **cold** (domain shut off): each disk is exported read-only by a ``qemu-nbd`` on a unix
  socket; its image lock keeps the domain from being started (so from
  writing) until ``delete_source_resources`` stops it: a point-in-time view; the source is
  never written.
- **live** (domain running): a checkpoint and a pull-mode backup (``backupBegin``), one NBD
  export per disk on one unix socket (its folder owned by ``libvirt-qemu``); the
  location's ``dirty_bitmap`` is ``backup-<dev>``. For a replica (``tracking_id``), the
  checkpoint is ``coriolis-<tracking_id[:8]>-<hex>`` and its name the change-tracking token;
  the backup is incremental from the token in force (``keep_tokens``), with the location's
  ``bitmap_since`` set to it, so the worker reads only the dirty extents. A lost or invalid
  checkpoint falls back to a full backup (``base:allocation``) and says so (an ``events``
  list in the resources, which the worker reports). Checkpoints of the tracking id other than
  ``keep_tokens`` and the new one go. Change tracking needs qcow2 disks (persistent
  bitmaps); other disks are read in full each time (the block manifests still send only
  what changed), and a domain without any qcow2 disk gets a backup without checkpoint and an
  event saying so. A migration (no ``tracking_id``) makes no checkpoint.

Both kinds serve unix sockets on the host, so the worker must run on the libvirt host: an
export from a remote URI is refused with a ProviderError naming the host (a TCP export
reached at ``nbd_host`` is not done yet). The export folder (scratch files, pid files) is
``<scratch_dir>/export-<key>``, the key derived from ``transfer_id`` and the domain's UUID;
its sockets are in a short folder of its own (``sockets``: a socket path has at most 107
bytes).

``source_resources``::

    {"mode": "cold"|"live", "domain": uuid, "folder": str (under scratch_dir),
     "disks": {dev: NbdLocation JSON}, "cbt": {dev: {"token": checkpoint}},
     "checkpoint": str|None, "incremental_from": str|None,
     "events": [str]  # warnings for the task's events (the worker reports and drops them)
    }

``delete_source_resources`` ends the backup job (``abortJob``), stops qemu-nbd, removes the
sockets and scratch files, and drops checkpoints of the tracking id but ``keep_tokens``;
idempotent, and it finds what a call that died before reporting left (by ``transfer_id``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from coriolis import exceptions
from coriolis.providers.base import InstancesProvider, ReplicaExportProvider, SourceOptionsProvider
from coriolis.providers.libvirt import backup, domain_xml, qemu_nbd
from coriolis.providers.libvirt.connection import (
    DEFAULT_SCRATCH_DIR,
    connect,
    load_libvirt,
    remote_host,
    require_local,
)
from coriolis.providers.libvirt.sockets import remove_socket_folder
from coriolis.transfer.locations import NbdLocation, to_json

JSON = dict[str, Any]
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
FOLDER_PREFIX = "export-"
DEFAULT_SHUTDOWN_TIMEOUT = 60
SOURCE_ENV_SCHEMA: JSON = {
    "$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
    "properties": {"shutdown_timeout": {
        "type": "number", "minimum": 0, "default": DEFAULT_SHUTDOWN_TIMEOUT,
        "description": "seconds to wait for a guest to shut down (ACPI) before it is "
                       "powered off"}},
    "additionalProperties": False}


def scratch_dir(connection_info: JSON) -> Path:
    return Path(connection_info.get("scratch_dir") or DEFAULT_SCRATCH_DIR)


def export_folder(connection_info: JSON, transfer_id: str | None, domain_id: str) -> Path:
    """The folder of one export (sockets, pid files, scratch files): the same for the same
    transfer and domain, so a repeated call finds what an interrupted one left; random
    without a ``transfer_id``."""
    key = (hashlib.sha256(f"{transfer_id}|{domain_id}".encode()).hexdigest()[:12]
           if transfer_id else uuid.uuid4().hex[:12])
    return scratch_dir(connection_info) / f"{FOLDER_PREFIX}{key}"


def _find(conn: Any, libvirt: Any, instance: str) -> Any:
    """The domain named ``instance`` or with that UUID; ``InstanceNotFound`` naming it (a
    domain still being deployed by a transfer is not found)."""
    dom = None
    lookups = [conn.lookupByUUIDString, conn.lookupByName] if UUID_RE.match(instance) \
        else [conn.lookupByName]
    for lookup in lookups:
        try:
            dom = lookup(instance)
            break
        except libvirt.libvirtError:
            continue
    if dom is None:
        raise exceptions.InstanceNotFound(f"no domain '{instance}' on this libvirt host")
    try:
        root = domain_xml.parse(dom.XMLDesc(0))
    except libvirt.libvirtError:
        raise exceptions.InstanceNotFound(f"no domain '{instance}' on this libvirt host") \
            from None
    if domain_xml.is_pending(root):
        raise exceptions.InstanceNotFound(
            f"domain '{instance}' is still being deployed by a transfer")
    return dom


def _domain_of(conn: Any, libvirt: Any, export_info: JSON) -> Any:
    """The domain of ``export_info`` (by its UUID), or None when it is gone."""
    try:
        return conn.lookupByUUIDString(export_info["id"])
    except (libvirt.libvirtError, KeyError, TypeError):
        return None


def _active(dom: Any, libvirt: Any) -> bool:
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False


def _cleanup(dom: Any, libvirt: Any, folder: Path) -> None:
    """End our backup job on ``dom`` (if any), stop our qemu-nbd servers, remove
    ``folder``."""
    if dom is not None and _active(dom, libvirt):
        if backup.abort_ours(dom, libvirt, folder):
            deadline = time.monotonic() + 30
            while (backup.running_backup_socket(dom, libvirt) is not None
                   and time.monotonic() < deadline):
                time.sleep(0.05)
    qemu_nbd.stop_all(folder)
    shutil.rmtree(folder, ignore_errors=True)
    remove_socket_folder(folder)


def _local_qcow2_images(connection_info: JSON, conn: Any, dom: Any, libvirt: Any) -> list[str]:
    """The domain's qcow2 disk images when the worker is on the libvirt host (for bitmaps
    libvirt cannot remove itself); none otherwise or when a disk is unreadable."""
    if remote_host(connection_info) is not None:
        return []
    try:
        info = domain_xml.export_info(conn, dom, libvirt)
    except (exceptions.InvalidInput, libvirt.libvirtError):
        return []
    return [d["path"] for d in info["devices"]["disks"] if d["format"] == "qcow2"]


class LibvirtSource(InstancesProvider, SourceOptionsProvider, ReplicaExportProvider):
    def list_instances(self, connection_info: JSON, env: JSON) -> list[JSON]:
        """Summaries of every domain but those being deployed; a malformed one (a missing
        disk file...) is listed with an ``error`` key."""
        libvirt = load_libvirt()
        found = []
        with connect(connection_info) as conn:
            for dom in conn.listAllDomains(0):
                try:
                    root = domain_xml.parse(dom.XMLDesc(0))
                    if domain_xml.is_pending(root):
                        continue
                    item = domain_xml.summary(dom, root)
                except libvirt.libvirtError:
                    continue  # gone while listing
                try:
                    domain_xml.export_info(conn, dom, libvirt, root)
                except exceptions.InvalidInput as exc:
                    item["error"] = str(exc)
                found.append(item)
        return sorted(found, key=lambda i: i["name"])

    def get_instance(self, connection_info: JSON, env: JSON, instance: str) -> JSON:
        libvirt = load_libvirt()
        with connect(connection_info) as conn:
            dom = _find(conn, libvirt, instance)
            try:
                return domain_xml.export_info(conn, dom, libvirt)
            except libvirt.libvirtError:
                raise exceptions.InstanceNotFound(
                    f"domain '{instance}' vanished while it was read") from None

    def list_source_options(self, connection_info: JSON, env: JSON,
                            option_names: list[str] | None) -> list[JSON]:
        return []

    def source_environment_schema(self) -> JSON:
        return SOURCE_ENV_SCHEMA

    def validate_source_inputs(self, connection_info: JSON, env: JSON, instance: str) -> None:
        self.get_instance(connection_info, env, instance)

    # --- exports ----------------------------------------------------------------------------
    def deploy_source_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                tracking_id: str | None = None,
                                transfer_id: str | None = None,
                                keep_tokens: Iterable[str] = ()) -> JSON:
        """Export every disk of the domain (cold or live, see the module docstring).
        ``InstanceNotFound`` when the domain is gone; ``ProviderError`` naming the domain and
        disk when an export cannot start (nothing of it is left then)."""
        libvirt = load_libvirt()
        name = str(export_info.get("name") or export_info.get("id"))
        require_local(connection_info, f"exporting domain '{name}'")
        with connect(connection_info) as conn:
            dom = _domain_of(conn, libvirt, export_info)
            if dom is None:
                raise exceptions.InstanceNotFound(f"domain '{name}' is gone")
            folder = export_folder(connection_info, transfer_id, dom.UUIDString())
            _cleanup(dom, libvirt, folder)
            current = domain_xml.export_info(conn, dom, libvirt)
            wanted = [d["id"] for d in export_info.get("devices", {}).get("disks", [])]
            disks = [d for d in current["devices"]["disks"] if d["id"] in wanted]
            missing = set(wanted) - {d["id"] for d in disks}
            if missing:
                raise exceptions.ProviderError(
                    f"domain '{name}': disk(s) {', '.join(sorted(missing))} are no longer "
                    "attached")
            described = {d["id"]: d.get("path")
                         for d in export_info.get("devices", {}).get("disks", [])}
            for disk in disks:
                if described[disk["id"]] and described[disk["id"]] != disk["path"]:
                    # The domain changed since it was described (a disk swapped, an
                    # external snapshot): export what was described, or nothing.
                    raise exceptions.ProviderError(
                        f"domain '{name}': disk {disk['id']} is {disk['path']} now, not "
                        f"{described[disk['id']]} as when the instance was described")
            resources: JSON = {"domain": dom.UUIDString(), "folder": str(folder),
                               "transfer_id": transfer_id, "tracking_id": tracking_id,
                               "disks": {}, "cbt": {}, "checkpoint": None,
                               "incremental_from": None, "events": []}
            try:
                if not _active(dom, libvirt):
                    try:
                        return self._cold(connection_info, dom, libvirt, name, disks, folder,
                                          resources)
                    except exceptions.ProviderError:
                        if not _active(dom, libvirt):
                            raise
                        _cleanup(dom, libvirt, folder)  # started meanwhile: export it live
                return self._live(dom, libvirt, name, disks, folder, resources, tracking_id,
                                  set(keep_tokens))
            except BaseException:
                _cleanup(dom, libvirt, folder)
                if resources.get("checkpoint"):  # made with a backup that then failed
                    backup.delete_checkpoints(dom, libvirt, resources["checkpoint"], set())
                raise

    def _cold(self, connection_info: JSON, dom: Any, libvirt: Any, name: str,
              disks: list[JSON], folder: Path, resources: JSON) -> JSON:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        for disk in disks:
            uri = qemu_nbd.start(disk["path"], disk["format"], folder, disk["id"],
                                 f"domain '{name}' disk {disk['id']}")
            resources["disks"][disk["id"]] = to_json(NbdLocation(uri))
        resources["mode"] = "cold"
        return resources

    def _live(self, dom: Any, libvirt: Any, name: str, disks: list[JSON], folder: Path,
              resources: JSON, tracking_id: str | None, keep: set[str]) -> JSON:
        backup.prepare_folder(folder)
        ids = [d["id"] for d in disks]
        tracked = [d["id"] for d in disks if d["format"] == "qcow2"] if tracking_id else []
        events: list[str] = resources["events"]
        checkpoint_xml = None
        since = None
        if tracking_id and not tracked:
            events.append(f"domain '{name}' has no qcow2 disk: no changed-block tracking, "
                          "every execution reads all allocated data")
        if tracked:
            assert tracking_id is not None
            prefix = backup.checkpoint_prefix(tracking_id)
            existing = backup.checkpoints(dom, libvirt, prefix)
            ours = sorted(t for t in keep if t.startswith(prefix))
            since = next((t for t in ours if t in existing), None)
            if ours and since is None:
                events.append(f"domain '{name}': checkpoint {ours[0]} of the last execution is "
                              "missing: full read of the disks (only changed blocks are "
                              "sent)")
            backup.delete_checkpoints(dom, libvirt, prefix, keep)
            resources["checkpoint"] = f"{prefix}{secrets.token_hex(4)}"
            checkpoint_xml = backup.checkpoint_xml(
                resources["checkpoint"], tracked, [i for i in ids if i not in tracked])
        if since is not None:
            try:
                dom.backupBegin(backup.backup_xml(folder, ids, since, full=set(ids) - set(
                    tracked)), checkpoint_xml, 0)
            except libvirt.libvirtError as exc:
                events.append(f"domain '{name}': checkpoint {since} cannot be used "
                              f"({exc.get_error_message()}): full read of the disks (only "
                              "changed blocks are sent)")
                since = None
                backup.delete_checkpoints(dom, libvirt, resources["checkpoint"], set())
        if since is None:
            try:
                dom.backupBegin(backup.backup_xml(folder, ids, None), checkpoint_xml, 0)
            except libvirt.libvirtError as exc:
                raise exceptions.ProviderError(
                    f"domain '{name}': the backup cannot start: {exc.get_error_message()}") \
                    from None
        for dev in ids:
            inc = since is not None and dev in tracked
            resources["disks"][dev] = to_json(NbdLocation(
                backup.uri(folder, dev), dirty_bitmap=f"backup-{dev}" if inc else None,
                bitmap_since=since if inc else None))
            if dev in tracked:
                resources["cbt"][dev] = {"token": resources["checkpoint"]}
        resources.update(mode="live", incremental_from=since)
        return resources

    def delete_source_resources(self, connection_info: JSON, env: JSON,
                                source_resources: JSON) -> None:
        """End our backup job, stop our qemu-nbd servers, remove the export folder, and drop
        the tracking id's checkpoints but ``keep_tokens``; a gone domain is skipped."""
        libvirt = load_libvirt()
        res = source_resources or {}
        export_info = res.get("export_info") or {}
        domain_id = res.get("domain") or export_info.get("id")
        keep = set(res.get("keep_tokens") or [])
        tracking_id = res.get("tracking_id")
        folders = set()
        root = scratch_dir(connection_info)
        if res.get("folder"):
            folder = Path(res["folder"])
            if folder.parent != root or not folder.name.startswith(FOLDER_PREFIX):
                raise exceptions.InvalidInput(
                    f"source_resources.folder {folder} is not an export folder of {root}")
            folders.add(folder)
        if res.get("transfer_id") and domain_id:
            folders.add(export_folder(connection_info, res["transfer_id"], domain_id))
        with connect(connection_info) as conn:
            dom = _domain_of(conn, libvirt, {"id": domain_id}) if domain_id else None
            for folder in folders:
                _cleanup(dom, libvirt, folder)
            if dom is not None and tracking_id:
                backup.delete_checkpoints(dom, libvirt, backup.checkpoint_prefix(tracking_id),
                                          keep, _local_qcow2_images(connection_info, conn,
                                                                    dom, libvirt))

    def shutdown_instance(self, connection_info: JSON, env: JSON, export_info: JSON) -> None:
        """ACPI shutdown, then power off after ``env["shutdown_timeout"]`` seconds (60);
        nothing for a shut-off domain; ``InstanceNotFound`` when it is gone."""
        libvirt = load_libvirt()
        timeout = float((env or {}).get("shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT))
        with connect(connection_info) as conn:
            dom = _domain_of(conn, libvirt, export_info)
            if dom is None:
                raise exceptions.InstanceNotFound(
                    f"domain '{export_info.get('name')}' is gone")
            if not _active(dom, libvirt):
                return
            try:
                dom.shutdown()
            except libvirt.libvirtError:
                if not _active(dom, libvirt):
                    return
            deadline = time.monotonic() + timeout
            while _active(dom, libvirt) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _active(dom, libvirt):
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    if _active(dom, libvirt):
                        raise
