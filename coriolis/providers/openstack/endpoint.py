"""The openstack provider's endpoint side: connection check, networks, storage, options.

- ``validate_connection`` authenticates with Keystone, requires compute, block-storage
  (volumev3), network and image in the catalog of the region and interface, and returns
  "Keystone at URL: user U, project P; compute, block-storage, network, image in region R".
- Networks: Neutron networks (``id``, ``name``, ``shared``, ``external``, ``status``).
- Storage: Cinder volume types (``id``/``name``: the type's name; its backend name) with
  the availability zones in ``additional_provider_properties``; ``config_default`` is the
  project's default volume type when Cinder says it (microversion 3.62), else None.
- Destination options: ``flavor_name``, ``network``, ``security_groups``, ``key_name``,
  ``volume_type``, ``image``, ``availability_zone``.

Source: openstacksdk proxies ``compute``, ``network``, ``block_storage``, ``image``
(docs.openstack.org/openstacksdk/latest/user/proxies).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coriolis import exceptions
from coriolis.providers.base import (
    BaseProvider,
    DestinationOptionsProvider,
    NetworksProvider,
    StorageProvider,
)
from coriolis.providers.local.cloud import is_inside
from coriolis.providers.openstack.connection import (
    CONNECTION_SCHEMA,
    JSON,
    SERVICES,
    connect,
    describe,
    http_error,
    scrub,
)

if TYPE_CHECKING:
    from coriolis.config import Settings


def _sdk_errors() -> tuple[type[BaseException], ...]:
    from openstack import exceptions as os_exc
    return (os_exc.SDKException,)


def default_volume_type(conn: Any) -> str | None:
    """The project's default volume type's name (GET /types/default), or None."""
    try:
        resp = conn.block_storage.get("/types/default")
        if resp.status_code == 200:
            return resp.json().get("volume_type", {}).get("name")
    except Exception:  # noqa: BLE001 - an old Cinder or a policy: no default then
        return None
    return None


class OpenStackEndpoint(BaseProvider, NetworksProvider, StorageProvider,
                        DestinationOptionsProvider):
    platform = "openstack"

    def connection_info_schema(self) -> JSON:
        return CONNECTION_SCHEMA

    def check_location(self, connection_info: JSON, project_id: str,
                       settings: Settings) -> None:
        """``nfs_mount_point_base`` is a folder of this server's hosts whose files the worker
        opens: it must be absolute and inside one of the folders the server allows
        (``$CORIOLIS_OPENSTACK_MOUNT_ROOTS``, ``[openstack] mount_roots``), or inside the
        project's local roots. ``LocationNotAllowed`` naming the field."""
        base = connection_info.get("nfs_mount_point_base")
        if base is None:
            return
        roots = [Path(os.path.realpath(r)) for r in settings.openstack_mount_roots]
        roots += settings.local_roots_for(project_id)
        if not isinstance(base, str) or not os.path.isabs(base) or not is_inside(
                base, *roots):
            raise exceptions.LocationNotAllowed(
                f"connection_info.nfs_mount_point_base {base} must be an absolute path in "
                + " or ".join(str(r) for r in roots))

    def validate_connection(self, connection_info: JSON) -> str:
        """Authenticate and check the catalog; returns what was reached.
        ``ConnectionValidationFailed`` naming the user and URL (credentials refused, Keystone
        unreachable) or the missing services; never a secret."""
        from keystoneauth1 import exceptions as ks_exc

        with connect(connection_info) as conn:
            sess = conn.session
            try:
                access = sess.auth.get_access(sess)
            except ks_exc.Unauthorized:
                raise exceptions.ConnectionValidationFailed(
                    f"Keystone refused the credentials of {describe(connection_info)}"
                ) from None
            except ks_exc.ClientException as exc:
                raise exceptions.ConnectionValidationFailed(
                    f"cannot authenticate {describe(connection_info)}: "
                    f"{scrub(exc, connection_info)}") from None
            region = connection_info.get("region_name") or None
            interface = connection_info.get("interface") or "public"
            missing = []
            for service_type, label in SERVICES:
                try:
                    url = sess.get_endpoint(service_type=service_type, interface=interface,
                                            region_name=region)
                except ks_exc.EndpointNotFound:
                    url = None
                if not url:
                    missing.append(label)
            if missing:
                raise exceptions.ConnectionValidationFailed(
                    f"the catalog of {describe(connection_info)} has no {interface} endpoint "
                    f"for {', '.join(missing)}"
                    + (f" in region {region}" if region else ""))
            project = access.project_name or access.project_id
            return (f"Keystone at {connection_info['auth_url']}: user {access.username}, "
                    f"project {project}; compute, block-storage, network, image "
                    + (f"in region {region}" if region else "in the catalog"))

    def list_networks(self, connection_info: JSON, env: JSON) -> list[JSON]:
        """``[{"id", "name", "shared", "external", "status"}]`` sorted by name."""
        with connect(connection_info) as conn:
            try:
                nets = [{"id": n.id, "name": n.name, "shared": bool(n.is_shared),
                         "external": bool(n.is_router_external), "status": n.status}
                        for n in conn.network.networks()]
            except _sdk_errors() as exc:
                raise http_error(exc, "cannot list Neutron networks", connection_info) from None
        return sorted(nets, key=lambda n: (n["name"] or "", n["id"]))

    def list_storage(self, connection_info: JSON, env: JSON) -> JSON:
        """``{"storage_backends": [{"id", "name", "additional_provider_properties":
        {"volume_type_id", "volume_backend_name", "availability_zones"}}],
        "config_default": str|None}``."""
        with connect(connection_info) as conn:
            try:
                zones = sorted(z.name for z in conn.block_storage.availability_zones()
                               if (z.state or {}).get("available", True))
                types = list(conn.block_storage.types())
            except _sdk_errors() as exc:
                raise http_error(exc, "cannot list Cinder volume types",
                                 connection_info) from None
            default = default_volume_type(conn)
        backends = [{"id": t.name, "name": t.name, "additional_provider_properties": {
            "volume_type_id": t.id,
            "volume_backend_name": (t.extra_specs or {}).get("volume_backend_name"),
            "availability_zones": zones}} for t in types]
        backends.sort(key=lambda b: b["name"])
        return {"storage_backends": backends, "config_default": default}

    def list_destination_options(self, connection_info: JSON, env: JSON,
                                 option_names: list[str] | None) -> list[JSON]:
        """``flavor_name`` (names, with vCPUs / RAM MiB / disk GiB), ``network``,
        ``security_groups``, ``key_name``, ``volume_type``, ``image``,
        ``availability_zone``: ``[{"name", "values", "config_default"}]``."""
        wanted = set(option_names or ())
        out: list[JSON] = []

        def want(name: str) -> bool:
            return not wanted or name in wanted

        with connect(connection_info) as conn:
            try:
                if want("flavor_name"):
                    flavors = sorted(conn.compute.flavors(details=True),
                                     key=lambda f: (f.vcpus, f.ram, f.disk, f.name))
                    out.append({"name": "flavor_name", "config_default": None, "values": [
                        {"name": f.name, "id": f.id, "vcpus": f.vcpus, "ram_mb": f.ram,
                         "disk_gb": f.disk} for f in flavors]})
                if want("network"):
                    out.append({"name": "network", "config_default": None, "values": sorted(
                        n.name for n in conn.network.networks())})
                if want("security_groups"):
                    out.append({"name": "security_groups", "config_default": None,
                                "values": sorted({g.name for g in
                                                  conn.network.security_groups()})})
                if want("key_name"):
                    out.append({"name": "key_name", "config_default": None,
                                "values": sorted(k.name for k in conn.compute.keypairs())})
                if want("volume_type"):
                    out.append({"name": "volume_type",
                                "config_default": default_volume_type(conn),
                                "values": sorted(t.name for t in conn.block_storage.types())})
                if want("image"):
                    out.append({"name": "image", "config_default": None, "values": sorted(
                        {i.name for i in conn.image.images() if i.name})})
                if want("availability_zone"):
                    out.append({"name": "availability_zone", "config_default": None,
                                "values": sorted(z.name for z in
                                                 conn.compute.availability_zones())})
            except _sdk_errors() as exc:
                raise http_error(exc, "cannot list destination options",
                                 connection_info) from None
        return out
