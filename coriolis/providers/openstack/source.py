"""The openstack provider's source side: Nova servers, their volumes read through Cinder
snapshots.

- Instances are Nova servers, found by id or name. ``export_info`` per
  ``coriolis.providers.base``: vCPUs and memory of the flavor, ``power_state`` the server's
  status, one disk per attached Cinder volume (``id``: the volume id, ``volume_id``,
  ``device`` as Nova reports it, ``size_bytes`` the volume's, ``storage_backend`` its
  volume type), sorted by device (the boot volume first), one NIC per Neutron port
  (``network_name`` the network's name).
- Exports (``deploy_source_resources``): per volume a Cinder snapshot, then a temporary
  volume from it, both named ``coriolis-export-<key>`` (key: ``volumes.transfer_key`` of
  the transfer, server and disk), opened as a file of this host's NFS mount (a ``path``
  location confined to the share folder). ``delete_source_resources`` closes and deletes
  them, also finding those of a call that died before reporting (by name).
  A stopped (SHUTOFF) server's volumes are read in place, with no snapshot (an event says
  so): nothing writes them while the server is off, and Cinder's NFS driver would snapshot
  an in-use volume through Nova's assisted snapshots, which not every compute driver has
  (Nova's fake driver here has not). Starting the server during the copy is the user's
  risk, as with any cold migration.
- Servers booted from a Glance image (no root volume) have an ``image`` disk (``image_id``
  the image it booted from, ``size_bytes`` the flavor's root disk, or the image's size for a
  flavor without one). Its export: Nova ``createImage`` makes a Glance image of the
  instance named ``coriolis-export-<key>`` (the compute host uploads the root disk), waited
  for until ``active``; Cinder then makes the temporary volume from it (downloading and
  converting it to raw), read as a file as above. The image goes with the volume, also
  those of a call that died (by name). An image Nova removed (a failed snapshot) or one
  still without data after the endpoint's timeout is a ``ProviderError`` naming the
  instance and the image.
- No changed-block tracking: the NFS Cinder backend has none, so each replica execution
  reads every allocated block and the worker's block manifests send only what changed. A
  Ceph RBD backend would give it (``rbd diff --from-snap`` between two Cinder snapshots);
  an event says so when a replica asks.

Sources: Nova API (servers, ``os-extended-volumes:volumes_attached``, ``os-stop``,
``createImage``), Glance v2 images, Neutron ports (``device_id``), Cinder snapshots and
``snapshot_id``/``imageRef`` volume creation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from coriolis import exceptions
from coriolis.providers.base import InstancesProvider, ReplicaExportProvider
from coriolis.providers.openstack import images, volumes
from coriolis.providers.openstack.connection import JSON, connect, http_error, timeout_of
from coriolis.transfer import locations
from coriolis.worker.faults import crash_point

GiB = volumes.GiB
NO_CBT = ("no changed-block tracking on this Cinder backend: every allocated block is read "
          "and the block manifests send only what changed (a Ceph RBD backend would give "
          "diffs between snapshots)")

SOURCE_ENV_SCHEMA: JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
    "properties": {"shutdown_timeout": {"type": "number", "minimum": 0, "default": 300}},
    "additionalProperties": False,
}


def _flavor(conn: Any, server: Any) -> tuple[str | None, int, int, int]:
    """(name, vCPUs, memory MiB, root disk GiB) of the server's flavor."""
    flavor = server.flavor
    name = getattr(flavor, "original_name", None) or getattr(flavor, "name", None)
    cpus, ram = getattr(flavor, "vcpus", None), getattr(flavor, "ram", None)
    disk = getattr(flavor, "disk", None)
    if not cpus or not ram or disk is None:
        found = conn.compute.find_flavor(getattr(flavor, "id", None) or name or "",
                                         ignore_missing=True)
        if found is not None:
            name, cpus, ram, disk = found.name, found.vcpus, found.ram, found.disk
    return name, int(cpus or 1), int(ram or 512), int(disk or 0)


def _image_disk_bytes(conn: Any, image_id: str, root_gib: int) -> int:
    """The root disk of an image-backed server: the flavor's, else (a flavor without one)
    the image's virtual size, in whole GiB."""
    if root_gib:
        return root_gib * GiB
    image = conn.image.find_image(image_id, ignore_missing=True)
    size = (getattr(image, "virtual_size", None) or getattr(image, "size", None) or 0) \
        if image is not None else 0
    return volumes.gib(size) * GiB


def _is_stopped(conn: Any, instance: str) -> bool:
    """Whether the server ``instance`` exists and is SHUTOFF (False for volumes described
    without a server)."""
    try:
        return bool(_find_server(conn, instance).status == "SHUTOFF")
    except exceptions.InstanceNotFound:
        return False


def _find_server(conn: Any, instance: str) -> Any:
    from openstack import exceptions as os_exc
    try:
        server = conn.compute.find_server(instance, ignore_missing=True)
    except os_exc.DuplicateResource:
        raise exceptions.InvalidInput(
            f"more than one server is named '{instance}': give its id") from None
    if server is None:
        raise exceptions.InstanceNotFound(f"instance '{instance}' not found")
    return conn.compute.get_server(server.id)


def describe_server(conn: Any, server: Any, full: bool = True) -> JSON:
    flavor_name, cpus, ram, root_gib = _flavor(conn, server)
    image = server.image if isinstance(server.image, dict) else {}
    out: JSON = {"id": server.id, "name": server.name, "instance_name": server.name,
                 "num_cpu": cpus, "memory_mb": ram, "os_type": "linux",
                 "firmware_type": "BIOS", "flavor_name": flavor_name}
    if not full:
        return out
    disks = []
    for attached in server.attached_volumes or []:
        vol = conn.block_storage.get_volume(attached["id"])
        device = next((a.get("device") for a in vol.attachments or []
                       if a.get("server_id") == server.id), None)
        disks.append({"id": vol.id, "volume_id": vol.id, "device": device,
                      "size_bytes": int(vol.size) * GiB, "format": "raw", "bus": "virtio",
                      "storage_backend": vol.volume_type})
    disks.sort(key=lambda d: (d["device"] is None, d["device"] or "", d["id"]))
    if image.get("id") and not any(d["device"] in (server.root_device_name, "/dev/vda")
                                   for d in disks):
        disks.insert(0, {"id": "image", "image_id": image["id"],
                         "device": server.root_device_name or "/dev/vda",
                         "size_bytes": _image_disk_bytes(conn, image["id"], root_gib),
                         "format": "raw", "bus": "virtio", "storage_backend": None})
    nics = []
    for port in conn.network.ports(device_id=server.id):
        net = conn.network.get_network(port.network_id)
        nics.append({"id": port.id, "mac_address": port.mac_address,
                     "network_name": net.name, "network_id": net.id,
                     "ip_addresses": [ip.get("ip_address") for ip in port.fixed_ips or []]})
    out.update({"power_state": server.status, "devices": {
        "disks": disks, "nics": nics, "controllers": [], "cdroms": [], "floppies": [],
        "serial_ports": []}})
    return out


class OpenStackSource(InstancesProvider, ReplicaExportProvider):
    platform = "openstack"

    def list_instances(self, connection_info: JSON, env: JSON) -> list[JSON]:
        """Summaries of the project's servers (flavor, vCPUs, memory, ``status``); one that
        cannot be described (or whose volume Cinder does not have) is listed with an
        ``error``."""
        out = []
        with connect(connection_info) as conn:
            try:
                servers = list(conn.compute.servers(details=True))
                known = {v.id for v in conn.block_storage.volumes()}
            except volumes.sdk_errors() as exc:
                raise http_error(exc, "cannot list Nova servers", connection_info) from None
            for server in servers:
                try:
                    entry = describe_server(conn, server, full=False)
                    entry["status"] = server.status
                    entry["volumes"] = [v["id"] for v in server.attached_volumes or []]
                    missing = sorted(set(entry["volumes"]) - known)
                    if missing:
                        entry["error"] = (f"server '{server.name}': Cinder has no volume "
                                          f"{', '.join(missing)} that Nova lists as attached")
                except volumes.sdk_errors() as exc:
                    entry = {"id": server.id, "name": server.name,
                             "instance_name": server.name,
                             "error": str(http_error(exc, f"server '{server.name}'",
                                                     connection_info))}
                out.append(entry)
        return sorted(out, key=lambda s: (s["name"] or "", s["id"]))

    def get_instance(self, connection_info: JSON, env: JSON, instance: str) -> JSON:
        with connect(connection_info) as conn:
            try:
                return describe_server(conn, _find_server(conn, instance))
            except volumes.sdk_errors() as exc:
                raise http_error(exc, f"instance '{instance}'", connection_info) from None

    def source_environment_schema(self) -> JSON:
        return SOURCE_ENV_SCHEMA

    def validate_source_inputs(self, connection_info: JSON, env: JSON, instance: str) -> None:
        """The server exists and can be described."""
        self.get_instance(connection_info, env, instance)

    def shutdown_instance(self, connection_info: JSON, env: JSON, export_info: JSON) -> None:
        """``os-stop`` and wait for SHUTOFF; a stopped server stays so."""
        from openstack import exceptions as os_exc
        with connect(connection_info) as conn:
            server = _find_server(conn, export_info["id"])
            if server.status == "SHUTOFF":
                return
            conn.compute.stop_server(server)
            try:
                conn.compute.wait_for_server(
                    server, status="SHUTOFF", failures=["ERROR"], interval=1,
                    wait=int(env.get("shutdown_timeout") or timeout_of(connection_info)))
            except (os_exc.ResourceFailure, os_exc.ResourceTimeout):
                raise exceptions.ProviderError(
                    f"server '{export_info['name']}' did not stop") from None

    # --- exports ----------------------------------------------------------------------------
    @staticmethod
    def _names(export_info: JSON, transfer_id: str | None) -> dict[str, str]:
        return {d["id"]: "coriolis-export-" + volumes.transfer_key(
            transfer_id, export_info["id"], d["id"])
            for d in export_info["devices"]["disks"]}

    def deploy_source_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                tracking_id: str | None = None,
                                transfer_id: str | None = None,
                                keep_tokens: Iterable[str] = ()) -> JSON:
        """Per volume: Cinder snapshot → temporary volume → ``path`` location of its file;
        an image-backed root disk: Glance image of the instance → temporary volume. What an
        interrupted call of the same transfer left is removed first; on an error, what this
        call made goes."""
        ci = connection_info
        names = self._names(export_info, transfer_id)
        # Point in time every way: a Cinder snapshot, a Glance image of the instance, or a
        # stopped server's volume.
        resources: JSON = {"disks": {}, "cbt": {}, "volumes": {}, "snapshots": {},
                           "images": {}, "events": [NO_CBT] if tracking_id else [],
                           "point_in_time": True}
        with connect(ci) as conn:
            self._remove(conn, ci, names.values())
            stopped = _is_stopped(conn, export_info["id"])
            try:
                for disk in export_info["devices"]["disks"]:
                    name = names[disk["id"]]
                    if disk.get("image_id"):
                        temp = self._image_volume(conn, ci, export_info, disk, name, resources)
                        resources["volumes"][disk["id"]] = temp.id
                        crash_point()
                        loc = volumes.location(
                            conn, ci, temp.id,
                            f"source disk {disk['id']} of instance '{export_info['name']}'")
                        resources["disks"][disk["id"]] = locations.to_json(loc)
                        continue
                    what = (f"disk {disk['id']} of instance '{export_info['name']}' "
                            f"(Cinder volume {disk['volume_id']})")
                    if stopped:
                        # Nothing writes to a stopped server's volumes: read them in place.
                        # (Cinder's NFS driver would snapshot an in-use volume through
                        # Nova's assisted snapshots, which not every compute driver has.)
                        loc = volumes.location(conn, ci, disk["volume_id"], f"source {what}")
                        resources["direct"] = [*resources.get("direct", []),
                                               disk["volume_id"]]
                        resources["disks"][disk["id"]] = locations.to_json(loc)
                        resources["events"].append(
                            f"{what}: read from the volume itself (the server is stopped)")
                        continue
                    snap = volumes.create_snapshot(conn, ci, disk["volume_id"], name, what)
                    resources["snapshots"][disk["id"]] = snap.id
                    crash_point()
                    temp = volumes.create_volume(conn, ci, what, name=name,
                                                 snapshot_id=snap.id,
                                                 metadata={"coriolis_export": "1"})
                    resources["volumes"][disk["id"]] = temp.id
                    crash_point()
                    loc = volumes.location(conn, ci, temp.id, f"source {what}")
                    resources["disks"][disk["id"]] = locations.to_json(loc)
            except BaseException:
                for vid in resources.get("direct", []):
                    volumes.close_file(conn, ci, vid)
                self._remove(conn, ci, names.values())
                raise
        return resources

    @staticmethod
    def _image_volume(conn: Any, ci: JSON, export_info: JSON, disk: JSON, name: str,
                      resources: JSON) -> Any:
        """A Glance image of the instance (Nova ``createImage``), then a temporary volume
        made from it; the image's id goes into ``resources["images"]`` as soon as it
        exists."""
        what = f"root disk of instance '{export_info['name']}' (booted from an image)"
        try:
            image = conn.compute.create_server_image(
                export_info["id"], name, metadata={"coriolis_export": "1"})
        except volumes.sdk_errors() as exc:
            raise http_error(exc, f"cannot make a Glance image of the {what}", ci) from None
        resources["images"][disk["id"]] = image.id
        crash_point()
        image = images.wait_active(conn, ci, image, what, export_info["id"])
        size = max(volumes.gib(disk["size_bytes"]), int(image.min_disk or 0),
                   volumes.gib(image.virtual_size or image.size or 0))
        return volumes.create_volume(conn, ci, f"{what}, from Glance image {image.id}",
                                     name=name, imageRef=image.id, size=size,
                                     metadata={"coriolis_export": "1"})

    @staticmethod
    def _remove(conn: Any, ci: JSON, names: Iterable[str]) -> None:
        for name in names:
            for vol in volumes.find_named(conn, name):
                volumes.close_file(conn, ci, vol.id)
                volumes.delete_volume(conn, ci, vol.id)
            for snap in volumes.find_snapshots(conn, name):
                volumes.delete_snapshot(conn, ci, snap.id)
            for image in images.find_named(conn, name):
                images.delete(conn, ci, image.id)

    def delete_source_resources(self, connection_info: JSON, env: JSON,
                                source_resources: JSON) -> None:
        """Close and delete the temporary volumes, then the snapshots and images: those
        recorded and those named after ``export_info`` and ``transfer_id``. Idempotent."""
        res = source_resources or {}
        with connect(connection_info) as conn:
            for vid in res.get("direct") or []:
                volumes.close_file(conn, connection_info, vid)
            for vid in (res.get("volumes") or {}).values():
                volumes.close_file(conn, connection_info, vid)
                volumes.delete_volume(conn, connection_info, vid)
            for sid in (res.get("snapshots") or {}).values():
                volumes.delete_snapshot(conn, connection_info, sid)
            for image_id in (res.get("images") or {}).values():
                images.delete(conn, connection_info, image_id)
            if res.get("export_info"):
                self._remove(conn, connection_info,
                             self._names(res["export_info"], res.get("transfer_id")).values())
