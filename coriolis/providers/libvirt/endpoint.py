"""The libvirt provider's endpoint side: connection schema and check, networks, storage.

- ``validate_connection`` connects and returns what it reached, "QEMU 7.2.22 on libvirt
  9.0.0 at qemu:///system (host vm)": the API answers it as the validate-connection
  ``message`` (upstream answers ``{"valid": true, "message": null}``).
- Networks: libvirt networks (``id``/``name``: the network's name) and the host's bridges
  that no libvirt network owns (``bridge:<name>``), as a ``network_map`` value names them.
- Storage: the storage pools, with their type, target path, state and sizes in bytes;
  ``config_default`` is the pool named ``default`` if there is one.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coriolis import exceptions
from coriolis.providers.base import BaseProvider, NetworksProvider, StorageProvider
from coriolis.providers.libvirt.connection import (
    CONNECTION_SCHEMA,
    DEFAULT_SCRATCH_DIR,
    connect,
    display_uri,
    load_libvirt,
    transport_of,
)
from coriolis.providers.local.cloud import is_inside

if TYPE_CHECKING:
    from coriolis.config import Settings

JSON = dict[str, Any]
BRIDGE_PREFIX = "bridge:"
DEFAULT_POOL = "default"


def version_text(number: int) -> str:
    """libvirt's packed version (major * 1e6 + minor * 1e3 + release) as "M.m.r"."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def describe(conn: Any, connection_info: JSON) -> str:
    """"QEMU 7.2.22 on libvirt 9.0.0 at <uri> (host <hostname>)" for an open connection."""
    libvirt = load_libvirt()
    try:
        hypervisor = f"{conn.getType()} {version_text(conn.getVersion())}"
    except libvirt.libvirtError:
        hypervisor = "a hypervisor of unknown version"
    text = (f"{hypervisor} on libvirt {version_text(conn.getLibVersion())} at "
            f"{display_uri(connection_info)}")
    try:
        return f"{text} (host {conn.getHostname()})"
    except libvirt.libvirtError:
        return text


def _bridges(conn: Any) -> list[str]:
    """Names of the host's bridge interfaces (libvirt's interface driver)."""
    libvirt = load_libvirt()
    try:
        interfaces = conn.listAllInterfaces(0)
    except libvirt.libvirtError:
        return []  # a host without an interface driver: libvirt networks only
    names = []
    for iface in interfaces:
        try:
            root = ET.fromstring(iface.XMLDesc(0))
        except (libvirt.libvirtError, ET.ParseError):
            continue  # gone meanwhile
        if root.get("type") == "bridge" and root.get("name"):
            names.append(str(root.get("name")))
    return sorted(names)


def _pool_entry(pool: Any) -> JSON | None:
    libvirt = load_libvirt()
    try:
        root = ET.fromstring(pool.XMLDesc(0))
        state, capacity, allocation, available = pool.info()
    except (libvirt.libvirtError, ET.ParseError):
        return None  # undefined meanwhile
    active = state == libvirt.VIR_STORAGE_POOL_RUNNING
    return {"id": pool.name(), "name": pool.name(),
            "additional_provider_properties": {
                "type": root.get("type"),
                "path": root.findtext("target/path"),
                "active": active,
                "capacity_bytes": capacity if active else None,
                "allocation_bytes": allocation if active else None,
                "available_bytes": available if active else None}}


class LibvirtEndpoint(BaseProvider, NetworksProvider, StorageProvider):
    platform = "libvirt"

    def connection_info_schema(self) -> JSON:
        return CONNECTION_SCHEMA

    def check_location(self, connection_info: JSON, project_id: str,
                       settings: Settings) -> None:
        """A URI of this host's own daemon (``qemu:///system``, ``qemu+unix://``) controls
        the server's hosts (the worker runs on them): allowed only where the server says so
        (``Settings.libvirt_allow_local``). Its ``scratch_dir`` is a folder of this host that
        workers create and empty: it must be absolute and under the default
        (``/var/lib/libvirt/coriolis``) or one of the project's local roots. Remote URIs reach
        hosts the endpoint's own credentials give. ``LocationNotAllowed`` naming the field."""
        if transport_of(connection_info) not in ("", "unix"):
            return
        if not settings.libvirt_allow_local:
            raise exceptions.LocationNotAllowed(
                f"connection_info.uri {display_uri(connection_info)} is the libvirt daemon of "
                "this server's own hosts, which projects may not use here (the server's "
                "[libvirt] allow_local setting, or CORIOLIS_LIBVIRT_ALLOW_LOCAL)")
        scratch = connection_info.get("scratch_dir")
        if scratch is None:
            return
        roots = [Path(DEFAULT_SCRATCH_DIR), *settings.local_roots_for(project_id)]
        if not isinstance(scratch, str) or not os.path.isabs(scratch) or not is_inside(
                scratch, *(Path(os.path.realpath(r)) for r in roots)):
            raise exceptions.LocationNotAllowed(
                f"connection_info.scratch_dir {scratch} must be an absolute path in "
                + " or ".join(str(r) for r in roots))

    def validate_connection(self, connection_info: JSON) -> str:
        """Connect and return what was reached ("QEMU 7.2.22 on libvirt 9.0.0 at
        qemu:///system (host NAME)"). ``InvalidInput`` naming the field for a bad
        connection info, ``ConnectionValidationFailed`` naming the URI and libvirt's reason
        when the host cannot be reached or refuses the credentials."""
        libvirt = load_libvirt()
        with connect(connection_info) as conn:
            try:
                conn.getLibVersion()
            except libvirt.libvirtError as exc:
                raise exceptions.ConnectionValidationFailed(
                    f"libvirt at {display_uri(connection_info)} does not answer: "
                    f"{exc.get_error_message()}") from None
            return describe(conn, connection_info)

    def list_networks(self, connection_info: JSON, env: JSON) -> list[JSON]:
        """``[{"id", "name", "bridge", "active"}]``: libvirt networks by name, then the host
        bridges no libvirt network owns as ``bridge:<name>``."""
        libvirt = load_libvirt()
        with connect(connection_info) as conn:
            found: list[JSON] = []
            owned: set[str] = set()
            for net in conn.listAllNetworks(0):
                try:
                    name, active = net.name(), bool(net.isActive())
                    try:
                        bridge = net.bridgeName()
                    except libvirt.libvirtError:
                        bridge = None  # a network without a bridge (macvtap, hostdev)
                except libvirt.libvirtError:
                    continue  # undefined meanwhile
                if bridge:
                    owned.add(bridge)
                found.append({"id": name, "name": name, "bridge": bridge, "active": active})
            found.sort(key=lambda n: n["name"])
            for bridge in _bridges(conn):
                if bridge not in owned:
                    found.append({"id": BRIDGE_PREFIX + bridge, "name": BRIDGE_PREFIX + bridge,
                                  "bridge": bridge, "active": True})
            return found

    def list_storage(self, connection_info: JSON, env: JSON) -> JSON:
        """``{"storage_backends": [{"id", "name", "additional_provider_properties":
        {"type", "path", "active", "capacity_bytes", "allocation_bytes",
        "available_bytes"}}], "config_default": "default"|None}``; sizes are None for an
        inactive pool."""
        with connect(connection_info) as conn:
            pools = [e for p in conn.listAllStoragePools(0) if (e := _pool_entry(p))]
        pools.sort(key=lambda p: p["name"])
        default = DEFAULT_POOL if any(p["name"] == DEFAULT_POOL for p in pools) else None
        return {"storage_backends": pools, "config_default": default}
