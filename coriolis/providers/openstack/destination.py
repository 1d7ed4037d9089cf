"""The openstack provider's destination side: Cinder volumes, replica snapshots, the Nova
server, OS morphing.

- Disks are Cinder volumes (whole GiB), one per source disk, of the volume type the storage
  mappings give (else ``env["volume_type"]``, else the project's default type), named
  ``coriolis-<key>-<instance>-<disk>`` (key: ``volumes.transfer_key``). ``volumes_info``
  entries: ``disk_id``, ``volume_id`` (the Cinder id), ``volume_name``, ``size_bytes`` (the
  volume's), ``storage_backend`` (the type), ``format`` (raw).
- Target locations are ``path`` locations of the volumes' files on the NFS share this
  worker's host mounts (``volumes.open_file``), confined to the share's folder; the worker
  must run on a host that mounts Cinder's NFS shares at ``nfs_mount_point_base``.
- Replica disks: ``snapshot_disks`` takes a Cinder snapshot per volume (metadata
  ``coriolis_execution``); the commit is recorded atomically as the metadata
  ``coriolis_committed`` of the first volume, then the snapshots are deleted (the NFS
  driver merges them); the roll-back reverts each volume to its snapshot (Cinder's
  ``revert``, microversion 3.40) and deletes it.
- The instance: ``deploy_instance`` resolves the flavor (``flavor_name``, else the smallest
  flavor with the source's vCPUs and memory), the networks of ``network_map`` (a name or id,
  or ``{"id", "security_groups"}``), security groups and key pair, clones the volumes when
  ``clone_disks`` and makes one Neutron port per source NIC (the source's MAC when
  ``preserve_mac_addresses``), named ``coriolis-<key>-nic<N>``. Nothing is listed yet:
  The root volume (the first disk) is marked bootable.
  ``finalize_instance`` boots the Nova server from the volumes (block_device_mapping_v2,
  boot_index 0 the first disk) on those ports, with metadata ``coriolis_transfer``, and waits
  for ACTIVE. ``cleanup_failed_instance`` deletes the server, then the ports and clones.
- OS morphing runs on the volumes' files before the server exists (profile: virtio disks and
  NICs, ttyS0, cloud-init datasources ConfigDrive and OpenStack).

Sources: Nova API (docs.openstack.org/api-ref/compute, Create Server, block_device_mapping_v2),
Neutron ports API, Cinder API v3 (snapshots, volume actions ``revert``,
``os-initialize_connection``).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from coriolis import exceptions
from coriolis.providers import mappings
from coriolis.providers.base import OSMorphingProvider, ReplicaImportProvider
from coriolis.providers.openstack import volumes
from coriolis.providers.openstack.connection import JSON, connect, http_error, timeout_of
from coriolis.providers.openstack.endpoint import default_volume_type
from coriolis.transfer import locations
from coriolis.worker.faults import crash_point

GiB = volumes.GiB
TRANSFER_META = "coriolis_transfer"
EXECUTION_META = "coriolis_execution"
COMMITTED_META = "coriolis_committed"

DESTINATION_ENV_SCHEMA: JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "flavor_name": {"type": "string", "minLength": 1,
                        "description": "Nova flavor (default: the smallest that fits)"},
        "instance_name": {"type": "string", "minLength": 1,
                          "description": "Name of the new server (default: the source's)"},
        "volume_type": {"type": "string", "minLength": 1,
                        "description": "Cinder volume type when storage_mappings give none"},
        "availability_zone": {"type": "string", "minLength": 1},
        "security_groups": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "key_name": {"type": "string", "minLength": 1},
        "preserve_mac_addresses": {"type": "boolean", "default": False,
                                   "description": "Ports keep the source NICs' MACs"},
        "network_map": {"type": "object"},
        "storage_mappings": {"type": "object"},
    },
    "additionalProperties": False,
}


def _sdk_errors() -> tuple[type[BaseException], ...]:
    return volumes.sdk_errors()


def target_name(env: JSON, export_info: JSON) -> str:
    return str(env.get("instance_name") or export_info["name"])


def _instance_key(owner: str, name: str) -> str:
    return hashlib.sha256(f"{owner}|{name}".encode()).hexdigest()[:16]


def resolve_flavor(conn: Any, env: JSON, export_info: JSON) -> Any:
    """``env["flavor_name"]`` (unknown: ``InvalidInput`` naming it), else the smallest flavor
    with at least the source's vCPUs and memory (none: ``InvalidInput``)."""
    if env.get("flavor_name"):
        flavor = conn.compute.find_flavor(env["flavor_name"], ignore_missing=True)
        if flavor is None:
            raise exceptions.InvalidInput(f"unknown flavor '{env['flavor_name']}'")
        return flavor
    cpus = int(export_info.get("num_cpu") or 1)
    ram = int(export_info.get("memory_mb") or 512)
    fits = [f for f in conn.compute.flavors(details=True)
            if f.vcpus >= cpus and f.ram >= ram and not getattr(f, "is_disabled", False)]
    if not fits:
        raise exceptions.InvalidInput(
            f"no flavor has {cpus} vCPUs and {ram} MiB of memory for instance "
            f"'{export_info['name']}': set flavor_name")
    return min(fits, key=lambda f: (f.vcpus, f.ram, f.disk, f.name))


def _network_target(env: JSON, network_name: str) -> tuple[str | None, list[str]]:
    value = (env.get("network_map") or {}).get(network_name)
    if isinstance(value, dict):
        return value.get("id") or value.get("name"), list(value.get("security_groups") or [])
    return value, []


def resolve_networks(conn: Any, env: JSON, export_info: JSON) -> list[JSON]:
    """Per source NIC: ``{"nic", "mac", "network_id", "network", "security_groups"}``;
    an unmapped or unknown network is ``InvalidInput`` naming it."""
    out = []
    for nic in export_info["devices"].get("nics") or []:
        source = nic.get("network_name")
        target, groups = _network_target(env, source)
        if target is None:
            raise exceptions.InvalidInput(
                f"network '{source}' of NIC {nic.get('id')} is not in network_map")
        net = conn.network.find_network(target, ignore_missing=True)
        if net is None:
            raise exceptions.InvalidInput(
                f"unknown network '{target}' (network_map of '{source}')")
        out.append({"nic": nic.get("id"), "mac": nic.get("mac_address"),
                    "network_id": net.id, "network": net.name,
                    "security_groups": groups or list(env.get("security_groups") or [])})
    return out


def resolve_security_groups(conn: Any, names: list[str]) -> list[str]:
    ids = []
    for name in names:
        group = conn.network.find_security_group(name, ignore_missing=True)
        if group is None:
            raise exceptions.InvalidInput(f"unknown security group '{name}'")
        ids.append(group.id)
    return ids


def disk_volume_types(conn: Any, env: JSON, export_info: JSON) -> dict[str, str | None]:
    """Each disk's volume type (mappings, ``volume_type``, the project's default); an unknown
    one is ``InvalidInput`` naming it and the disk."""
    default = env.get("volume_type") or default_volume_type(conn)
    known: dict[str, bool] = {}
    result: dict[str, str | None] = {}
    for disk in export_info["devices"]["disks"]:
        name = mappings.storage_backend_for_disk(disk, env, default)
        if name is not None and name not in known:
            known[name] = conn.block_storage.find_type(name, ignore_missing=True) is not None
        if name is not None and not known[name]:
            raise exceptions.InvalidInput(
                f"unknown volume type '{name}' for disk {disk['id']}")
        result[disk["id"]] = name
    return result


def find_server(conn: Any, name: str) -> list[Any]:
    return [s for s in conn.compute.servers(details=True, name=f"^{name}$") if s.name == name]


class OpenStackDestination(ReplicaImportProvider, OSMorphingProvider):
    platform = "openstack"

    def destination_environment_schema(self) -> JSON:
        return DESTINATION_ENV_SCHEMA

    def validate_destination_inputs(self, connection_info: JSON, env: JSON, export_info: JSON,
                                    check_name_clash: bool = True) -> None:
        """Unknown flavor, network, security group, key pair or volume type, or a server of
        the same name (unless ``check_name_clash`` is false): ``InvalidInput`` naming it."""
        with connect(connection_info) as conn:
            try:
                resolve_flavor(conn, env, export_info)
                nets = resolve_networks(conn, env, export_info)
                resolve_security_groups(conn, sorted({g for n in nets
                                                      for g in n["security_groups"]}))
                if env.get("key_name") and conn.compute.find_keypair(
                        env["key_name"], ignore_missing=True) is None:
                    raise exceptions.InvalidInput(f"unknown key pair '{env['key_name']}'")
                disk_volume_types(conn, env, export_info)
                name = target_name(env, export_info)
                if check_name_clash and find_server(conn, name):
                    raise exceptions.InvalidInput(
                        f"a server named '{name}' already exists on the destination")
            except _sdk_errors() as exc:
                raise http_error(exc, "cannot check the destination", connection_info) from None

    # --- disks ------------------------------------------------------------------------------
    def create_disks(self, connection_info: JSON, env: JSON, export_info: JSON,
                     volumes_info: list[JSON], transfer_id: str | None = None) -> list[JSON]:
        """A volume per disk that ``volumes_info`` does not hold already; a volume of the
        same name (an interrupted call's) is deleted and made again; on an error, those made
        here go. Quota, unknown type: ``InvalidInput``; a volume in ``error``:
        ``ProviderError``, naming the disk."""
        name = target_name(env, export_info)
        result: list[JSON] = []
        made: list[str] = []
        with connect(connection_info) as conn:
            try:
                types = disk_volume_types(conn, env, export_info)
                existing = {}
                for v in volumes_info or []:
                    found = self._volume(conn, v.get("volume_id"))
                    if found is not None and found.status in ("available", "in-use"):
                        existing[v["disk_id"]] = v
                for disk in export_info["devices"]["disks"]:
                    if disk["id"] in existing:
                        result.append(existing[disk["id"]])
                        continue
                    key = volumes.transfer_key(transfer_id, export_info["name"], disk["id"])
                    vname = f"{volumes.PREFIX}{key}-{volumes.safe(name)}-{volumes.safe(disk['id'])}"
                    for old in volumes.find_named(conn, vname):
                        volumes.delete_volume(conn, connection_info, old.id)
                    what = f"disk {disk['id']} of instance '{export_info['name']}'"
                    attrs: JSON = {"name": vname, "size": volumes.gib(disk["size_bytes"]),
                                   "metadata": {"coriolis_key": key,
                                                "coriolis_disk": str(disk["id"])[:255]}}
                    if types[disk["id"]]:
                        attrs["volume_type"] = types[disk["id"]]
                    if env.get("availability_zone"):
                        attrs["availability_zone"] = env["availability_zone"]
                    volume = volumes.create_volume(conn, connection_info, what, **attrs)
                    made.append(volume.id)
                    result.append({"disk_id": disk["id"], "volume_id": volume.id,
                                   "volume_name": vname, "size_bytes": int(volume.size) * GiB,
                                   "storage_backend": volume.volume_type or types[disk["id"]],
                                   "format": "raw"})
                    crash_point()
            except BaseException:
                for vid in made:
                    volumes.delete_volume(conn, connection_info, vid)
                raise
        return result

    @staticmethod
    def _volume(conn: Any, volume_id: str | None) -> Any | None:
        from openstack import exceptions as os_exc
        if not volume_id:
            return None
        try:
            return conn.block_storage.get_volume(volume_id)
        except os_exc.NotFoundException:
            return None

    def delete_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON]) -> None:
        """Delete the volumes with their snapshots; gone ones are skipped."""
        with connect(connection_info) as conn:
            for volume in volumes_info or []:
                for snap in self._snapshots_of(conn, volume["volume_id"]):
                    volumes.delete_snapshot(conn, connection_info, snap.id)
                volumes.delete_volume(conn, connection_info, volume.get("volume_id"))
                crash_point()

    def deploy_target_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                volumes_info: list[JSON],
                                transfer_id: str | None = None) -> JSON:
        """Per volume a ``path`` location of its file on this host's NFS mount (the active
        file: a qcow2 overlay while a replica snapshot exists), confined to the share's
        folder. A missing volume is a ``ProviderError`` naming its disk."""
        disks: JSON = {}
        opened: list[str] = []
        with connect(connection_info) as conn:
            try:
                for volume in volumes_info or []:
                    what = (f"destination disk {volume['disk_id']} (Cinder volume "
                            f"{volume['volume_id']})")
                    found = self._volume(conn, volume["volume_id"])
                    if found is None:
                        raise exceptions.ProviderError(f"{what} is missing")
                    if found.status == "error":
                        raise exceptions.ProviderError(f"{what} is in status 'error'")
                    loc = volumes.location(conn, connection_info, volume["volume_id"], what)
                    opened.append(volume["volume_id"])
                    disks[volume["disk_id"]] = locations.to_json(loc)
            except BaseException:
                for vid in opened:
                    volumes.close_file(conn, connection_info, vid)
                raise
        return {"disks": disks, "volume_ids": opened}

    def delete_target_resources(self, connection_info: JSON, env: JSON,
                                target_resources: JSON) -> None:
        """``os-terminate_connection`` of each volume opened; the volumes stay."""
        ids = (target_resources or {}).get("volume_ids") or []
        if not ids:
            return
        with connect(connection_info) as conn:
            for vid in ids:
                volumes.close_file(conn, connection_info, vid)

    # --- replica snapshots -----------------------------------------------------------------
    @staticmethod
    def _snapshots_of(conn: Any, volume_id: str) -> list[Any]:
        return [s for s in conn.block_storage.snapshots(details=True, volume_id=volume_id)
                if (s.metadata or {}).get(EXECUTION_META)]

    def _committed(self, conn: Any, volumes_info: list[JSON]) -> str | None:
        anchor = self._volume(conn, volumes_info[0]["volume_id"]) if volumes_info else None
        return (anchor.metadata or {}).get(COMMITTED_META) if anchor is not None else None

    def _settle(self, conn: Any, ci: JSON, volumes_info: list[JSON]) -> JSON:
        """Finish an interrupted commit (its snapshots dropped) or roll back an uncommitted
        snapshot (revert, then drop)."""
        committed = self._committed(conn, volumes_info)
        rolled_back = None
        finished = False
        restored = 0
        for volume in volumes_info:
            for snap in self._snapshots_of(conn, volume["volume_id"]):
                execution = snap.metadata[EXECUTION_META]
                if execution != committed:
                    self._revert(conn, ci, volume, snap)
                    rolled_back = execution
                    restored += int(volume.get("size_bytes") or 0)
                else:
                    finished = True
                volumes.delete_snapshot(conn, ci, snap.id)
                crash_point()
        info = [{k: v for k, v in vol.items() if k not in ("snapshot", "snapshot_id")}
                for vol in volumes_info]
        return {"volumes_info": info, "committed": committed, "rolled_back": rolled_back,
                "bytes_restored": restored, "finished_commit": finished}

    @staticmethod
    def _revert(conn: Any, ci: JSON, volume: JSON, snap: Any) -> None:
        what = f"roll-back of disk {volume['disk_id']} (Cinder volume {volume['volume_id']})"
        resp = conn.block_storage.post(
            f"/volumes/{volume['volume_id']}/action",
            json={"revert": {"snapshot_id": snap.id}}, microversion="3.40")
        if resp.status_code >= 400:
            raise exceptions.ProviderError(
                f"{what}: Cinder refused to revert to snapshot {snap.id} "
                f"(HTTP {resp.status_code}: {resp.text[:300]})")
        vol = conn.block_storage.get_volume(volume["volume_id"])
        volumes.wait_volume(conn, ci, vol, what)

    def snapshot_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON],
                       snapshot_id: str, for_deploy: bool = False) -> JSON:
        """Settle, then a Cinder snapshot of every volume for ``snapshot_id`` (``snapshot``:
        the Cinder snapshot's id, ``snapshot_id``). Cinder snapshots hold every write made
        after them, so ``for_deploy`` needs nothing more."""
        with connect(connection_info) as conn:
            outcome = self._settle(conn, connection_info, volumes_info or [])
            info = []
            for volume in outcome["volumes_info"]:
                what = f"replica disk {volume['disk_id']}"
                snap = volumes.create_snapshot(
                    conn, connection_info, volume["volume_id"],
                    f"coriolis-{snapshot_id}-{volumes.safe(volume['disk_id'])}", what,
                    metadata={EXECUTION_META: snapshot_id})
                info.append({**volume, "snapshot": snap.id, "snapshot_id": snapshot_id})
                crash_point()
            outcome["volumes_info"] = info
            return outcome

    def restore_disk_snapshots(self, connection_info: JSON, env: JSON,
                               volumes_info: list[JSON]) -> JSON:
        with connect(connection_info) as conn:
            return self._settle(conn, connection_info, volumes_info or [])

    def delete_disk_snapshots(self, connection_info: JSON, env: JSON,
                              volumes_info: list[JSON]) -> JSON:
        """Record the commit (one metadata write on the first volume), then drop the
        snapshots."""
        vols = volumes_info or []
        with connect(connection_info) as conn:
            pending = {s.metadata[EXECUTION_META] for v in vols
                       for s in self._snapshots_of(conn, v["volume_id"])}
            execution = next((v.get("snapshot_id") for v in vols if v.get("snapshot_id")),
                             None) or (pending.pop() if len(pending) == 1 else None)
            if execution and vols:
                conn.block_storage.set_volume_metadata(vols[0]["volume_id"],
                                                       **{COMMITTED_META: execution})
                crash_point()
            return self._settle(conn, connection_info, vols)

    # --- the server -------------------------------------------------------------------------
    def deploy_instance(self, connection_info: JSON, env: JSON, export_info: JSON,
                        volumes_info: list[JSON], clone_disks: bool = False,
                        transfer_id: str | None = None) -> JSON:
        """Resolve flavor, networks, security groups and key pair; clone the volumes when
        ``clone_disks``; make a port per NIC. What an interrupted call of the same transfer
        left (ports, clones of the same names) is replaced; what this call made goes on an
        error. The server itself is made by ``finalize_instance``."""
        name = target_name(env, export_info)
        owner = transfer_id or uuid.uuid4().hex
        key = _instance_key(owner, name)
        ci = connection_info
        ports: list[str] = []
        clones: list[str] = []
        with connect(ci) as conn:
            try:
                clash = [s for s in find_server(conn, name)
                         if (s.metadata or {}).get(TRANSFER_META) != owner]
                if clash:
                    raise exceptions.InvalidInput(
                        f"a server named '{name}' already exists on the destination")
                flavor = resolve_flavor(conn, env, export_info)
                nets = resolve_networks(conn, env, export_info)
                if env.get("key_name") and conn.compute.find_keypair(
                        env["key_name"], ignore_missing=True) is None:
                    raise exceptions.InvalidInput(f"unknown key pair '{env['key_name']}'")
                self._remove_leftovers(conn, ci, key, len(nets), volumes_info)
                disks: list[JSON] = []
                for volume in volumes_info:
                    vid = volume["volume_id"]
                    if clone_disks:
                        what = f"clone of disk {volume['disk_id']} for server '{name}'"
                        clone = volumes.create_volume(
                            conn, ci, what, name=f"coriolis-{key}-clone-"
                            f"{volumes.safe(volume['disk_id'])}", source_volume_id=vid,
                            size=max(1, int(volume["size_bytes"]) // GiB),
                            metadata={"coriolis_key": key})
                        clones.append(clone.id)
                        vid = clone.id
                        crash_point()
                    elif self._volume(conn, vid) is None:
                        raise exceptions.ProviderError(
                            f"Cinder volume {vid} of disk {volume['disk_id']} is missing")
                    if not disks:  # the root volume: Nova boots only a bootable one
                        conn.block_storage.set_volume_bootable_status(vid, True)
                    disks.append({"disk_id": volume["disk_id"], "volume_id": vid})
                port_info = []
                for i, net in enumerate(nets):
                    attrs: JSON = {"network_id": net["network_id"],
                                   "name": f"coriolis-{key}-nic{i}",
                                   "description": f"coriolis transfer {owner}"}
                    if env.get("preserve_mac_addresses") and net["mac"]:
                        attrs["mac_address"] = net["mac"]
                    if net["security_groups"]:
                        attrs["security_group_ids"] = resolve_security_groups(
                            conn, net["security_groups"])
                    try:
                        port = conn.network.create_port(**attrs)
                    except _sdk_errors() as exc:
                        raise http_error(exc, f"cannot create the port of NIC {net['nic']} on "
                                         f"network '{net['network']}'", ci) from None
                    ports.append(port.id)
                    port_info.append({"id": port.id, "mac": port.mac_address,
                                      "network": net["network"], "nic": net["nic"]})
                    crash_point()
            except BaseException:
                self._delete_ports(conn, ci, ports)
                for vid in clones:
                    volumes.delete_volume(conn, ci, vid)
                raise
        return {"instance_name": name, "transfer_id": owner, "key": key,
                "flavor_id": flavor.id, "flavor_name": flavor.name, "ports": port_info,
                "disks": disks, "cloned_volumes": clones, "key_name": env.get("key_name"),
                "availability_zone": env.get("availability_zone")}

    def _remove_leftovers(self, conn: Any, ci: JSON, key: str, nics: int,
                          volumes_info: list[JSON]) -> None:
        for port in conn.network.ports():
            if (port.name or "").startswith(f"coriolis-{key}-nic"):
                self._delete_ports(conn, ci, [port.id])
        for volume in volumes_info:
            for old in volumes.find_named(
                    conn, f"coriolis-{key}-clone-{volumes.safe(volume['disk_id'])}"):
                volumes.delete_volume(conn, ci, old.id)

    @staticmethod
    def _delete_ports(conn: Any, ci: JSON, port_ids: list[str]) -> None:
        for pid in port_ids:
            try:
                conn.network.delete_port(pid, ignore_missing=True)
            except _sdk_errors() as exc:
                raise http_error(exc, f"cannot delete Neutron port {pid}", ci) from None

    def _our_servers(self, conn: Any, info: JSON) -> list[Any]:
        return [s for s in find_server(conn, info["instance_name"])
                if (s.metadata or {}).get(TRANSFER_META) == info.get("transfer_id")]

    def finalize_instance(self, connection_info: JSON, env: JSON,
                          instance_deployment_info: JSON) -> JSON:
        """Boot the Nova server from the volumes on the ports and wait for ACTIVE; a server
        of this transfer already there is the result (one in ERROR is replaced). A failed
        boot is a ``ProviderError`` with Nova's fault."""
        from openstack import exceptions as os_exc
        info = instance_deployment_info
        name = info["instance_name"]
        ci = connection_info
        with connect(ci) as conn:
            server = None
            for old in self._our_servers(conn, info):
                if old.status == "ERROR" or server is not None:
                    self._delete_server(conn, ci, old)
                else:
                    server = old
            if server is None:
                if find_server(conn, name):
                    raise exceptions.InvalidInput(
                        f"a server named '{name}' already exists on the destination")
                bdm = [{"boot_index": i, "uuid": d["volume_id"], "source_type": "volume",
                        "destination_type": "volume", "delete_on_termination": False}
                       for i, d in enumerate(info["disks"])]
                attrs: JSON = {"name": name, "flavor_id": info["flavor_id"],
                               "block_device_mapping_v2": bdm,
                               "networks": [{"port": p["id"]} for p in info["ports"]]
                               or "none",
                               "metadata": {TRANSFER_META: info["transfer_id"]}}
                if info.get("key_name"):
                    attrs["key_name"] = info["key_name"]
                if info.get("availability_zone"):
                    attrs["availability_zone"] = info["availability_zone"]
                try:
                    server = conn.compute.create_server(**attrs)
                except _sdk_errors() as exc:
                    raise http_error(exc, f"cannot create server '{name}'", ci) from None
                crash_point()
            try:
                server = conn.compute.wait_for_server(server, status="ACTIVE",
                                                      failures=["ERROR"], interval=1,
                                                      wait=timeout_of(ci))
            except os_exc.ResourceFailure:
                fault = (conn.compute.get_server(server.id).fault or {}).get("message")
                raise exceptions.ProviderError(
                    f"server '{name}' failed to boot: {fault or 'status ERROR'}") from None
            except os_exc.ResourceTimeout:
                raise exceptions.ProviderError(
                    f"server '{name}' is not ACTIVE after {timeout_of(ci)} s") from None
            return {"instance_name": name, "id": server.id, "status": server.status,
                    "flavor_name": info["flavor_name"],
                    "networks": [p["network"] for p in info["ports"]],
                    "ports": [p["id"] for p in info["ports"]],
                    "volumes": [d["volume_id"] for d in info["disks"]]}

    @staticmethod
    def _delete_server(conn: Any, ci: JSON, server: Any) -> None:
        from openstack import exceptions as os_exc
        try:
            conn.compute.delete_server(server, ignore_missing=True)
            conn.compute.wait_for_delete(server, interval=1, wait=timeout_of(ci))
        except os_exc.ResourceTimeout:
            raise exceptions.ProviderError(
                f"server '{server.name}' is still there {timeout_of(ci)} s after its "
                "deletion") from None

    def cleanup_failed_instance(self, connection_info: JSON, env: JSON,
                                instance_deployment_info: JSON) -> None:
        """Delete the transfer's server, then its ports and the clones it made (never the
        replica's own volumes); what is gone is skipped."""
        info = instance_deployment_info or {}
        if not info.get("instance_name"):
            return
        ci = connection_info
        with connect(ci) as conn:
            for server in self._our_servers(conn, info):
                self._delete_server(conn, ci, server)
                crash_point()
            self._delete_ports(conn, ci, [p["id"] for p in info.get("ports") or []])
            if info.get("key"):
                self._remove_leftovers(conn, ci, info["key"], 0, [])
            for vid in info.get("cloned_volumes") or []:
                found = self._volume(conn, vid)
                if found is not None and found.status in ("in-use", "detaching"):
                    volumes.wait_volume(conn, ci, found, f"clone {vid}")
                volumes.delete_volume(conn, ci, vid)

    # --- OS morphing ------------------------------------------------------------------------
    def os_morphing_profile(self, connection_info: JSON, env: JSON, export_info: JSON,
                            instance_deployment_info: JSON) -> JSON:
        """virtio disks and NICs, ttyS0, cloud-init's ConfigDrive and OpenStack datasources;
        the ports' MACs in the source NICs' order."""
        return {"platform": "openstack", "disk_bus": "virtio", "nic_model": "virtio",
                "serial_console": "ttyS0",
                "cloud_init_datasources": ["ConfigDrive", "OpenStack", "None"],
                "keep_agents_of": ["openstack"], "required_packages": [],
                "nics": [{"mac": p["mac"], "network": p["network"]}
                         for p in instance_deployment_info.get("ports") or []]}

    def deploy_os_morphing_resources(self, connection_info: JSON, env: JSON,
                                     instance_deployment_info: JSON) -> JSON:
        """The new server's volumes as files of this host's NFS mount."""
        disks = []
        opened: list[str] = []
        with connect(connection_info) as conn:
            try:
                for i, d in enumerate(instance_deployment_info.get("disks") or []):
                    what = f"disk {d['disk_id']} of the new server (Cinder volume {d['volume_id']})"
                    path, fmt, _folder = volumes.open_file(conn, connection_info,
                                                           d["volume_id"], what)
                    opened.append(d["volume_id"])
                    disks.append({"path": path, "format": fmt, "name": f"vd{chr(97 + i)}"})
            except BaseException:
                for vid in opened:
                    volumes.close_file(conn, connection_info, vid)
                raise
        return {"disks": disks, "helper": None, "volume_ids": opened}

    def delete_os_morphing_resources(self, connection_info: JSON, env: JSON,
                                     os_morphing_resources: JSON) -> None:
        ids = (os_morphing_resources or {}).get("volume_ids") or []
        if ids:
            with connect(connection_info) as conn:
                for vid in ids:
                    volumes.close_file(conn, connection_info, vid)
