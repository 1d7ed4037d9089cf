"""Source minion pools of the libvirt provider: the disks of a SHUT-OFF domain are attached
read-only (``<readonly/>``, virtio-scsi, serial ``cs<hash of the file>``) to a minion domain
of a source pool (the same helper domains as destination pools, ``minions``), whose agent
serves them read-only (``transfer.agent_reads``) at their ``/dev/disk/by-id`` names.

While they are attached, qemu's image lock (a shared read lock) keeps the source domain from
being started, so the read is a point-in-time view. A running domain is refused, naming it
(its disks change under the reader; a live read goes through the pull-mode backup of
``deploy_source_resources`` without an origin pool). ``delete_source_resources`` detaches
the domain's disk files from every minion domain of this host (also what a call that died
before reporting attached), then does what it does for any export.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import quoteattr

from coriolis import exceptions
from coriolis.providers.base import require_linux_pool
from coriolis.providers.libvirt import domain_xml
from coriolis.providers.libvirt.connection import connect, load_libvirt, require_local
from coriolis.providers.libvirt.minions import (
    DISK_BY_ID,
    NAMESPACE,
    LibvirtMinionPools,
    _domain_of_machine,
    detach_disks,
)
from coriolis.providers.libvirt.source import LibvirtSource, _active, _domain_of
from coriolis.transfer import locations
from coriolis.transfer.locations import AgentLocation

JSON = dict[str, Any]


def _serial(path: str) -> str:
    return "cs" + hashlib.sha256(path.encode()).hexdigest()[:16]


def _readonly_disk_xml(path: str, fmt: str, dev: str, serial: str) -> str:
    return (f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
            f"<source file={quoteattr(path)}/><target dev='{dev}' bus='scsi'/>"
            f"<serial>{serial}</serial><readonly/></disk>")


def _minion_domains(conn: Any) -> list[Any]:
    """The running minion domains of this host (those with coriolis minion metadata)."""
    libvirt = load_libvirt()
    found = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
        except libvirt.libvirtError:
            continue
        found.append(dom)
    return found


def detach_source_disks(conn: Any, paths: Iterable[str]) -> None:
    """Detach the disk files ``paths`` from every running minion domain they are attached
    to (by their serial); nothing attached is no error."""
    serials = {_serial(p) for p in paths}
    for dom in _minion_domains(conn):
        attached = {disk.findtext("serial") or ""
                    for disk in ET.fromstring(dom.XMLDesc(0)).findall("./devices/disk")}
        if attached & serials:
            detach_disks(conn, dom, attached & serials)


class LibvirtSourceMinions(LibvirtMinionPools):
    """Source pools on top of ``LibvirtMinionPools`` (mixed into ``LibvirtProvider`` before
    it and ``LibvirtSource``)."""

    minion_pool_platforms = frozenset({"source", "destination"})

    def validate_minion_pool_options(self, connection_info: JSON, env: JSON,
                                     pool_platform: str, os_type: str) -> None:
        require_linux_pool("libvirt", self.minion_pool_platforms, pool_platform, os_type)
        # The rest (a local host, the storage pool) is the same for both platforms.
        super().validate_minion_pool_options(connection_info, env, "destination", os_type)

    def minion_source_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                minion_connection_info: JSON, key_ref: str, *,
                                tracking_id: str | None = None,
                                transfer_id: str | None = None,
                                keep_tokens: Iterable[str] = ()) -> JSON:
        """Attach every disk of the shut-off domain read-only to the minion's domain (what
        an earlier transfer left attached to it is detached first); an ``agent`` location
        per disk at its ``/dev/disk/by-id`` name in the minion. No change tracking: each
        execution reads the disks in full (the worker's block manifests still send only
        what changed). ``ProviderError`` naming the domain when it runs, or the minion
        when its domain does not."""
        require_local(connection_info, "source minion pools")
        libvirt = load_libvirt()
        machine_id = minion_connection_info["machine_id"]
        name = export_info.get("name") or export_info.get("id")
        with connect(connection_info) as conn:
            source = _domain_of(conn, libvirt, export_info)
            if source is None:
                raise exceptions.ProviderError(f"instance '{name}': its domain is gone")
            if _active(source, libvirt):
                raise exceptions.ProviderError(
                    f"instance '{name}': domain {source.name()} is running; a source minion "
                    "reads the disks of a shut-off domain only (shut it down first, or "
                    "migrate it without an origin minion pool)")
            disks = domain_xml.export_info(conn, source, libvirt)["devices"]["disks"]
            minion = _domain_of_machine(conn, machine_id)
            if minion is None or not minion.isActive():
                raise exceptions.ProviderError(
                    f"minion {machine_id}: its domain is not running")
            detach_disks(conn, minion)
            attached: list[str] = []
            located: JSON = {}
            try:
                for index, disk in enumerate(disks):
                    serial = _serial(disk["path"])
                    minion.attachDeviceFlags(
                        _readonly_disk_xml(disk["path"], disk["format"],
                                           f"sd{chr(97 + index)}", serial),
                        libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    attached.append(serial)
                    located[disk["id"]] = locations.to_json(AgentLocation(
                        url=minion_connection_info["url"],
                        fingerprint=minion_connection_info["fingerprint"], key_ref=key_ref,
                        path=DISK_BY_ID + serial, format="raw", mode="always",
                        what=f"instance '{name}': disk {disk['id']} (through minion "
                             f"{minion.name()})"))
            except libvirt.libvirtError as exc:
                detach_disks(conn, minion, set(attached))
                raise exceptions.ProviderError(
                    f"cannot attach the disks of domain {source.name()} to minion "
                    f"{minion.name()}: {exc.get_error_message()}") from None
            except BaseException:
                detach_disks(conn, minion, set(attached))
                raise
        return {"mode": "minion", "domain": export_info.get("id"), "disks": located,
                "minion_disks": {"machine_id": machine_id, "serials": attached,
                                 "paths": [d["path"] for d in disks]}}

    def delete_source_resources(self, connection_info: JSON, env: JSON,
                                source_resources: JSON) -> None:
        """Detach the domain's disks from the minions, then what ``LibvirtSource`` does."""
        resources = source_resources or {}
        paths = list((resources.get("minion_disks") or {}).get("paths") or [])
        export_info = resources.get("export_info")
        if not paths and export_info:  # a call that died before it reported
            paths = [d.get("path") for d in (export_info.get("devices") or {}).get("disks")
                     or [] if d.get("path")]
        if paths:
            with connect(connection_info) as conn:
                detach_source_disks(conn, paths)
        # Idempotent: with nothing of its own made, it finds nothing to remove.
        LibvirtSource.delete_source_resources(
            self, connection_info, env, source_resources)  # type: ignore[arg-type]
