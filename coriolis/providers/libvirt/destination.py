"""The libvirt provider's destination side: pool volumes, the new domain, replica disks, OS
morphing.

- Disks are volumes of a storage pool (dir pools at least): ``env["storage_backend"]`` or the
  storage mappings name the pool; the format is ``env["disk_format"]`` or the pool's default
  (raw). ``volumes_info`` entries have ``volume_id`` (the volume's key), ``pool``, ``volume``
  (its name), ``path``, ``format``, ``size_bytes``, ``storage_backend`` (the pool).
- Target locations are ``path`` locations of the volumes' files (confined to the pool's
  folder): the worker runs on the host. A remote URI (``qemu+ssh://``/``qemu+tls://`` to
  another host) is refused by ``validate_destination_inputs``, naming the host, until a
  writer agent serves such hosts.
- Domain type ``kvm`` when the host's capabilities offer it, unless ``env["domain_type"]``
  says ``qemu`` (TCG); the serial console is a pty logged to
  ``/var/log/libvirt/qemu/<name>-serial.log`` (``transfer_result["serial_log"]``).
- Replica disks are pool volumes with the snapshot / commit / roll-back of
  ``coriolis.providers.local.replica_disks`` on their files; a deploy clones them (new
  volumes) or uses them. Written through a libvirt minion, a replica volume gets a qcow2
  overlay instead, merged into it through its undo journal at the commit (``overlays``).
- The domain is defined (never started before ``finalize_instance``) under a pending name
  with coriolis metadata (``<metadata><coriolis:transfer>``), virtio disks and NICs on the
  ``network_map``'s networks, the source's CPUs/memory/firmware unless the destination
  environment overrides them; ``finalize_instance`` renames it to its final name and starts
  it when ``start_instance``; ``cleanup_failed_instance`` undefines it (NVRAM too), then
  deletes its volumes.
- OS morphing: the volumes' paths, opened by the worker's appliance; the profile says virtio.
"""

from __future__ import annotations

import os
import uuid
import xml.etree.ElementTree as ET
from typing import Any

from coriolis import exceptions
from coriolis.providers import mappings
from coriolis.providers.base import (
    DestinationOptionsProvider,
    OSMorphingProvider,
    ReplicaImportProvider,
)
from coriolis.providers.libvirt import define_xml, metadata, minions, overlays, volumes
from coriolis.providers.libvirt.connection import (
    connect,
    load_libvirt,
    lookup_domain,
    require_local,
)
from coriolis.providers.local import replica_disks
from coriolis.transfer import locations
from coriolis.transfer.locations import PathLocation
from coriolis.worker.faults import crash_point

JSON = dict[str, Any]
PENDING_SUFFIX = ".coriolis-pending"
SERIAL_LOG_DIR = "/var/log/libvirt/qemu"

DESTINATION_ENV_SCHEMA: JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "storage_backend": {"type": "string", "minLength": 1,
                            "description": "The storage pool of the disks"},
        "disk_format": {"type": "string", "enum": list(volumes.FORMATS),
                        "description": "Format of the new volumes (default raw)"},
        "instance_name": {"type": "string", "minLength": 1,
                          "description": "Name of the new domain (default: the source's)"},
        "num_cpu": {"type": "integer", "minimum": 1,
                    "description": "vCPUs (default: the source's)"},
        "memory_mb": {"type": "integer", "minimum": 16,
                      "description": "Memory in MiB (default: the source's)"},
        "firmware_type": {"type": "string", "enum": ["BIOS", "EFI"],
                          "description": "Firmware (default: the source's)"},
        "machine_type": {"type": "string", "minLength": 1,
                         "description": "QEMU machine type (default: libvirt's)"},
        "domain_type": {"type": "string", "enum": ["kvm", "qemu"],
                        "description": "kvm when the host offers it, else qemu (TCG)"},
        "start_instance": {"type": "boolean", "default": False,
                           "description": "Start the domain once deployed"},
        "network_map": {"type": "object"},
        "storage_mappings": {"type": "object"},
    },
    "additionalProperties": False,
}
"""The libvirt destination's own keys; the API adds the transfer options."""


def _target_name(env: JSON, export_info: JSON) -> str:
    return str(env.get("instance_name") or export_info["name"])


_domain = lookup_domain


def _domain_type(conn: Any, env: JSON) -> str:
    """env ``domain_type``, else kvm when the host's capabilities offer it, else qemu."""
    if env.get("domain_type"):
        return str(env["domain_type"])
    caps = ET.fromstring(conn.getCapabilities())
    for guest in caps.findall("./guest"):
        arch = guest.find("arch")
        if (guest.findtext("os_type") == "hvm" and arch is not None
                and arch.get("name") == "x86_64"
                and arch.find("domain[@type='kvm']") is not None):
            return "kvm"
    return "qemu"


def _networks(conn: Any) -> list[str]:
    return sorted(n.name() for n in conn.listAllNetworks(0))


def _bridge_exists(conn: Any, name: str) -> bool:
    """A host bridge ``name``: libvirt's interface listing says so, or (a local URI) sysfs."""
    libvirt = load_libvirt()
    try:
        iface = conn.interfaceLookupByName(name)
        if ET.fromstring(iface.XMLDesc(0)).get("type") == "bridge":
            return True
    except libvirt.libvirtError:
        pass
    uri = conn.getURI() or ""
    return "://" in uri and uri.split("://", 1)[1].startswith("/") and os.path.isdir(
        f"/sys/class/net/{os.path.basename(name)}/bridge")


def _check_network(conn: Any, target: str) -> bool:
    if target.startswith(define_xml.BRIDGE_PREFIX):
        return _bridge_exists(conn, target[len(define_xml.BRIDGE_PREFIX):])
    return target in _networks(conn)


def _disk_pools(conn: Any, env: JSON, export_info: JSON) -> dict[str, Any]:
    """Each disk's pool (``storage_mappings``, ``storage_backend``, the pool ``default``)."""
    names = {p.name() for p in conn.listAllStoragePools(0)}
    default = "default" if "default" in names else None
    result, pools = {}, {}
    for disk in export_info["devices"]["disks"]:
        name = mappings.storage_backend_for_disk(disk, env, default)
        if name is None:
            raise exceptions.InvalidInput(
                f"no storage pool for disk {disk['id']}: set storage_backend")
        if name not in pools:
            pools[name] = volumes.lookup_pool(conn, name)
        result[disk["id"]] = pools[name]
    return result


def _disk_format(env: JSON) -> str:
    return str(env.get("disk_format") or "raw")


def _nic_targets(conn: Any, env: JSON, export_info: JSON) -> list[tuple[str, str | None]]:
    """(destination network, MAC) per source NIC; ``InvalidInput`` naming a missing one."""
    networks = _networks(conn)
    result = []
    for nic in export_info["devices"]["nics"]:
        target = mappings.destination_network(nic["network_name"], env, networks)
        if target is None:
            raise exceptions.InvalidInput(
                f"network '{nic['network_name']}' of instance '{export_info['name']}' is not "
                "mapped in network_map and does not exist on the destination")
        if not _check_network(conn, target):
            raise exceptions.InvalidInput(
                f"network_map maps '{nic['network_name']}' to '{target}', which does not "
                f"exist on the destination (libvirt networks: {', '.join(networks) or 'none'}; "
                f"host bridges as bridge:<name>)")
        result.append((target, nic.get("mac_address")))
    return result


def _release_overlays(connection_info: JSON, volumes_info: list[JSON]) -> None:
    """Detach the volumes' overlays (and the volumes) from any minion still holding them:
    an execution's commit or roll-back runs beside its transfer cleanup, or after a crash
    that skipped it."""
    paths = [p for v in volumes_info if v.get("path")
             for p in (v["path"], str(overlays.path_of(v)))]
    if not paths or not any(os.path.exists(str(overlays.path_of(v))) for v in volumes_info):
        return
    with connect(connection_info) as conn:
        minions.detach_paths(conn, paths)


def _drop_overlays(connection_info: JSON, volumes_info: list[JSON]) -> None:
    """Detach and drop what minions wrote and no commit merged (or a merged one's leftover)."""
    _release_overlays(connection_info, volumes_info)
    for volume in volumes_info:
        if volume.get("path"):
            overlays.discard(volume)


class LibvirtDestination(DestinationOptionsProvider, ReplicaImportProvider, OSMorphingProvider):
    def destination_environment_schema(self) -> JSON:
        return DESTINATION_ENV_SCHEMA

    def list_destination_options(self, connection_info: JSON, env: JSON,
                                 option_names: list[str] | None) -> list[JSON]:
        """Pools, networks (and bridges the interface listing shows), disk formats, machine
        types and firmware of the host (``getCapabilities``/``getDomainCapabilities``)."""
        libvirt = load_libvirt()
        with connect(connection_info) as conn:
            pools = sorted(p.name() for p in conn.listAllStoragePools(0))
            networks = _networks(conn)
            try:
                networks += sorted(
                    define_xml.BRIDGE_PREFIX + i.name() for i in conn.listAllInterfaces(0)
                    if ET.fromstring(i.XMLDesc(0)).get("type") == "bridge")
            except libvirt.libvirtError:
                pass
            caps = ET.fromstring(conn.getCapabilities())
            machines = sorted({m.text for g in caps.findall("./guest")
                               for m in g.findall("./arch[@name='x86_64']/machine")
                               if m.text})
            domain_type = _domain_type(conn, env)
            firmware = ["BIOS"]
            try:
                dcaps = ET.fromstring(conn.getDomainCapabilities(
                    None, "x86_64", None, domain_type, 0))
                if any(v.text == "efi"
                       for v in dcaps.findall("./os/enum[@name='firmware']/value")):
                    firmware.append("EFI")
            except libvirt.libvirtError:
                pass
            types = [t for t in ("kvm", "qemu") if t == "qemu" or _domain_type(conn, {}) == "kvm"]
        options: list[JSON] = [
            {"name": "storage_backend", "values": pools,
             "config_default": "default" if "default" in pools else None},
            {"name": "network", "values": networks, "config_default": None},
            {"name": "disk_format", "values": list(volumes.FORMATS), "config_default": "raw"},
            {"name": "machine_type", "values": machines, "config_default": None},
            {"name": "firmware_type", "values": firmware, "config_default": None},
            {"name": "domain_type", "values": types, "config_default": domain_type},
            {"name": "start_instance", "values": [True, False], "config_default": False},
        ]
        return [o for o in options if not option_names or o["name"] in option_names]

    def validate_destination_inputs(self, connection_info: JSON, env: JSON, export_info: JSON,
                                    check_name_clash: bool = True) -> None:
        """``InvalidInput`` naming it: a missing pool, a network of the network_map (or an
        unmapped source network) missing, an existing domain of the name (unless
        ``check_name_clash`` is false), a pool without space for the disks (their virtual
        sizes; for a replica, disks whose volumes it has already need none). Makes
        nothing."""
        name = _target_name(env, export_info)
        require_local(connection_info, f"importing instance '{export_info['name']}'")
        with connect(connection_info) as conn:
            if check_name_clash and (_domain(conn, name) is not None
                                     or _domain(conn, name + PENDING_SUFFIX) is not None):
                raise exceptions.InvalidInput(
                    f"a domain named '{name}' already exists on the destination")
            pools = _disk_pools(conn, env, export_info)
            _nic_targets(conn, env, export_info)
            needed: dict[str, int] = {}
            for disk in export_info["devices"]["disks"]:
                pool = pools[disk["id"]]
                if not check_name_clash and self._has_volume(pool, name, disk):
                    continue
                needed[pool.name()] = needed.get(pool.name(), 0) + int(disk["size_bytes"])
            for pool_name, size in needed.items():
                pool = volumes.lookup_pool(conn, pool_name)
                free = volumes.available_bytes(pool)
                if free < size:
                    raise exceptions.InvalidInput(
                        f"storage pool '{pool_name}' has {free} bytes free, too few for the "
                        f"{size} bytes of the disks of instance '{export_info['name']}'")

    @staticmethod
    def _has_volume(pool: Any, name: str, disk: JSON) -> bool:
        prefix = f"{volumes.safe_name(name)}-{volumes.safe_name(disk['id'])}-"
        volumes.refresh(pool)
        return any(v.name().startswith(prefix) and "-clone-" not in v.name()
                   and v.info()[1] >= int(disk["size_bytes"]) for v in pool.listAllVolumes(0))

    # --- disks ------------------------------------------------------------------------------
    def create_disks(self, connection_info: JSON, env: JSON, export_info: JSON,
                     volumes_info: list[JSON], transfer_id: str | None = None) -> list[JSON]:
        """A sparse volume per disk that ``volumes_info`` does not hold already, named
        ``<instance>-<disk>-<key of the transfer and disk>.<format>``: one an interrupted call
        half-made is made again; on an error, those made here go."""
        name = _target_name(env, export_info)
        fmt = _disk_format(env)
        with connect(connection_info) as conn:
            pools = _disk_pools(conn, env, export_info)
            existing = {v["disk_id"]: v for v in volumes_info or []
                        if volumes.find(conn, v) is not None}
            result: list[JSON] = []
            made: list[JSON] = []
            try:
                for disk in export_info["devices"]["disks"]:
                    if disk["id"] in existing:
                        result.append(existing[disk["id"]])
                        continue
                    key = volumes.transfer_key(transfer_id, export_info["name"], disk["id"])
                    volume = volumes.create(pools[disk["id"]],
                                            volumes.volume_name(name, disk["id"], key, fmt),
                                            int(disk["size_bytes"]), fmt, disk["id"])
                    made.append(volume)
                    result.append(volume)
                    crash_point()
            except BaseException:
                for volume in made:
                    volumes.delete(conn, volume)
                raise
        return result

    def delete_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON]) -> None:
        """Delete the volumes (gone ones skipped), then their replica snapshots, minion
        overlays and commit record."""
        _drop_overlays(connection_info, volumes_info or [])
        with connect(connection_info) as conn:
            for volume in volumes_info or []:
                volumes.delete(conn, volume)
                crash_point()
        replica_disks.forget(volumes_info or [])

    def deploy_target_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                volumes_info: list[JSON],
                                transfer_id: str | None = None) -> JSON:
        """Per volume a ``path`` location of its file, confined to its pool's folder, with a
        raw replica volume's undo journal. Makes nothing; a missing volume is a
        ``ProviderError`` naming its disk."""
        disks: JSON = {}
        require_local(connection_info, "writing volumes")
        with connect(connection_info) as conn:
            for volume in volumes_info or []:
                what = (f"destination disk {volume['disk_id']} (volume "
                        f"{volume.get('pool')}/{volume.get('volume')}, key "
                        f"{volume.get('volume_id')})")
                vol = volumes.find(conn, volume)
                if vol is None:
                    raise exceptions.ProviderError(f"{what} is missing")
                folder = volumes.pool_folder(vol.storagePoolLookupByVolume())
                disks[volume["disk_id"]] = locations.to_json(PathLocation(
                    vol.path(), volume["format"], confine=(folder,), what=what,
                    journal=replica_disks.journal_of(volume)))
        return {"disks": disks}

    def delete_target_resources(self, connection_info: JSON, env: JSON,
                                target_resources: JSON) -> None:
        """The volumes a minion had attached for the transfer are detached from it
        (``minions.detach_minion_disks``); otherwise nothing to undo: the locations are the
        volumes' own files."""
        minions.detach_minion_disks(connection_info, target_resources)

    # Replica volumes are files of dir pools: the snapshot / commit / roll-back of the local
    # provider's replica_disks works on them as they are (side files beside the volumes).
    # Written through a minion, a volume has a qcow2 overlay instead (overlays.py): it is
    # detached from the minion, then merged into the volume before the commit point, or
    # dropped by a roll-back or the next settle.
    def snapshot_disks(self, connection_info: JSON, env: JSON, volumes_info: list[JSON],
                       snapshot_id: str, for_deploy: bool = False) -> JSON:
        require_local(connection_info, "snapshots of replica volumes")
        _drop_overlays(connection_info, volumes_info or [])
        return replica_disks.take(volumes_info or [], snapshot_id, for_deploy=for_deploy)

    def restore_disk_snapshots(self, connection_info: JSON, env: JSON,
                               volumes_info: list[JSON]) -> JSON:
        _drop_overlays(connection_info, volumes_info or [])
        return replica_disks.settle(volumes_info or [])

    def delete_disk_snapshots(self, connection_info: JSON, env: JSON,
                              volumes_info: list[JSON]) -> JSON:
        """The commit: a minion's overlays are merged into the volumes first (through their
        undo journals: a merge cut short is rolled back or done again), then the commit
        point, then the overlays go."""
        volumes_info = volumes_info or []
        _release_overlays(connection_info, volumes_info)
        wanted = next((v["snapshot_id"] for v in volumes_info if v.get("snapshot_id")), None)
        if volumes_info and wanted and replica_disks.read_record(volumes_info)["pending"] == wanted:
            for volume in volumes_info:
                overlays.merge(volume)
        outcome = replica_disks.commit(volumes_info)
        for volume in volumes_info:
            overlays.discard(volume)
        return outcome

    # --- the domain -------------------------------------------------------------------------
    def deploy_instance(self, connection_info: JSON, env: JSON, export_info: JSON,
                        volumes_info: list[JSON], clone_disks: bool = False,
                        transfer_id: str | None = None) -> JSON:
        """Define (not start) the domain ``<name>.coriolis-pending`` with the coriolis
        metadata (pending, the transfer's id) over the volumes, or over clones of them
        (``<instance>-<disk>-clone-<key>``) when ``clone_disks``. A pending domain of the same
        transfer (an interrupted call's) is replaced; a domain of the final name, or a
        pending one of another transfer, is a name clash (``InvalidInput``); on an error,
        what this call made goes."""
        name = _target_name(env, export_info)
        pending = name + PENDING_SUFFIX
        owner = transfer_id or uuid.uuid4().hex
        with connect(connection_info) as conn:
            if _domain(conn, name) is not None:
                raise exceptions.InvalidInput(
                    f"a domain named '{name}' already exists on the destination")
            old = _domain(conn, pending)
            if old is not None:
                if define_xml.transfer_of(old)[0] != owner:
                    raise exceptions.InvalidInput(
                        f"a domain named '{name}' is being deployed by another transfer")
                self._undefine(old)
            nics = _nic_targets(conn, env, export_info)
            cloned: list[JSON] = []
            try:
                disks = []
                for volume in volumes_info:
                    if clone_disks:
                        key = volumes.transfer_key(owner, export_info["name"],
                                                   volume["disk_id"])
                        volume = volumes.clone(conn, volume, volumes.volume_name(
                            name, volume["disk_id"], key, volume["format"], clone=True))
                        cloned.append(volume)
                        crash_point()
                    elif volumes.find(conn, volume) is None:
                        raise exceptions.ProviderError(
                            f"volume {volume.get('pool')}/{volume.get('volume')} of disk "
                            f"{volume['disk_id']} is missing")
                    disks.append((volume["path"], volume["format"]))
                firmware = env.get("firmware_type") or export_info.get("firmware_type") or "BIOS"
                spec = define_xml.DomainSpec(
                    name=pending, domain_type=_domain_type(conn, env),
                    num_cpu=int(env.get("num_cpu") or export_info.get("num_cpu") or 1),
                    memory_mb=int(env.get("memory_mb") or export_info.get("memory_mb") or 512),
                    firmware="EFI" if firmware == "EFI" else "BIOS",
                    machine=env.get("machine_type"), transfer_id=owner,
                    serial_log=f"{SERIAL_LOG_DIR}/{volumes.safe_name(name)}-serial.log",
                    disks=disks, nics=nics)
                libvirt = load_libvirt()
                try:
                    dom = conn.defineXML(define_xml.domain_xml(spec))
                except libvirt.libvirtError as exc:
                    raise exceptions.ProviderError(
                        f"cannot define domain '{name}': {exc.get_error_message()}") from None
                crash_point()
            except BaseException:
                for volume in cloned:
                    volumes.delete(conn, volume)
                raise
            return {"instance_name": name, "pending_name": pending, "uuid": dom.UUIDString(),
                    "transfer_id": owner, "cloned_volumes": cloned,
                    "disks": [path for path, _fmt in disks]}

    @staticmethod
    def _undefine(dom: Any) -> None:
        """Stop and undefine a domain with its NVRAM and checkpoint/snapshot metadata."""
        libvirt = load_libvirt()
        if dom.isActive():
            dom.destroy()
        flags = (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                 | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                 | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                 | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        dom.undefineFlags(flags)

    @staticmethod
    def _deployed(conn: Any, info: JSON) -> Any | None:
        """The domain ``deploy_instance`` defined (by UUID), if it still exists and is the
        transfer's."""
        libvirt = load_libvirt()
        try:
            dom = conn.lookupByUUIDString(info["uuid"])
        except (libvirt.libvirtError, KeyError):
            return None
        owner, _pending = define_xml.transfer_of(dom)
        return dom if owner == info.get("transfer_id") else None

    def finalize_instance(self, connection_info: JSON, env: JSON,
                          instance_deployment_info: JSON) -> JSON:
        """Rename the domain to its final name (the atomic step), mark it not pending, start
        it when ``start_instance``; done already is done."""
        info = instance_deployment_info
        name = info["instance_name"]
        libvirt = load_libvirt()
        with connect(connection_info) as conn:
            dom = self._deployed(conn, info)
            if dom is None:
                raise exceptions.ProviderError(f"domain '{name}' is not being deployed")
            if dom.name() != name:
                if _domain(conn, name) is not None:
                    raise exceptions.InvalidInput(
                        f"a domain named '{name}' already exists on the destination")
                try:
                    dom.rename(name, 0)
                except libvirt.libvirtError as exc:
                    raise exceptions.ProviderError(
                        f"cannot rename domain '{dom.name()}' to '{name}': "
                        f"{exc.get_error_message()}") from None
                crash_point()
            if define_xml.transfer_of(dom)[1]:
                # libvirt puts the element in the namespace under the prefix itself.
                element = ET.tostring(ET.Element(metadata.ELEMENT, {
                    "pending": "no", "id": info["transfer_id"]}), encoding="unicode")
                dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, element,
                                metadata.PREFIX, metadata.NAMESPACE,
                                libvirt.VIR_DOMAIN_AFFECT_CONFIG)
                crash_point()
            if env.get("start_instance") and not dom.isActive():
                try:
                    dom.create()
                except libvirt.libvirtError as exc:
                    raise exceptions.ProviderError(
                        f"cannot start domain '{name}': {exc.get_error_message()}") from None
            return {"instance_name": name, "id": dom.UUIDString(),
                    "started": bool(env.get("start_instance")), "disks": info["disks"],
                    "serial_log": define_xml.serial_log_of(dom)}

    def cleanup_failed_instance(self, connection_info: JSON, env: JSON,
                                instance_deployment_info: JSON) -> None:
        """Undefine the transfer's domain (NVRAM too), then delete the clones it made; never
        the replica's own volumes. What is gone already is skipped."""
        info = instance_deployment_info or {}
        if not info:
            return
        with connect(connection_info) as conn:
            dom = self._deployed(conn, info)
            if dom is not None:
                self._undefine(dom)
                crash_point()
            for volume in info.get("cloned_volumes") or []:
                volumes.delete(conn, volume)

    # --- OS morphing ------------------------------------------------------------------------
    def _pending_domain(self, conn: Any, info: JSON) -> Any:
        dom = self._deployed(conn, info)
        if dom is None:
            raise exceptions.ProviderError(
                f"domain '{info.get('instance_name')}' is not being deployed")
        if dom.isActive():
            raise exceptions.ProviderError(
                f"domain '{info.get('instance_name')}' is running: its disks cannot be morphed")
        return dom

    def os_morphing_profile(self, connection_info: JSON, env: JSON, export_info: JSON,
                            instance_deployment_info: JSON) -> JSON:
        """virtio disks and NICs, serial console ttyS0, NoCloud; the NICs' MACs in the
        source's order."""
        with connect(connection_info) as conn:
            nics = define_xml.nics_of(self._pending_domain(conn, instance_deployment_info))
        return {"platform": "libvirt", "disk_bus": "virtio", "nic_model": "virtio",
                "serial_console": "ttyS0", "cloud_init_datasources": ["NoCloud", "None"],
                "keep_agents_of": [], "required_packages": [],
                "nics": [{"mac": n["mac"], "network": n["network"]} for n in nics]}

    def deploy_os_morphing_resources(self, connection_info: JSON, env: JSON,
                                     instance_deployment_info: JSON) -> JSON:
        """The domain's volume files (this worker runs on the host) and their formats."""
        require_local(connection_info, "OS morphing")
        with connect(connection_info) as conn:
            disks = define_xml.disks_of(self._pending_domain(conn, instance_deployment_info))
        for disk in disks:
            if not os.path.exists(disk["path"]):
                raise exceptions.ProviderError(
                    f"{disk['name']} of the new domain ({disk['path']}) is missing")
        return {"disks": disks, "helper": None}
