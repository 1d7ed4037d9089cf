"""Minion pools of the libvirt provider (destination pools): a minion is a helper domain
booted from the small Debian image of ``minion_image`` and running the writer agent; the
volumes of a transfer are hot-plugged into it (virtio-scsi) and its agent writes them.

Names (``name_prefix`` from the pool's environment, default ``coriolis-mn``), ``B`` being
``<prefix>-<first 8 characters of the pool id>``:

- shared resources: network ``B-net`` (NAT, DHCP from .100 to .200 of a free 10.x.y.0/24;
  the host is .1, so the worker reaches minions on the bridge), volumes ``B-vmlinuz``,
  ``B-initrd``, ``B-rootfs.qcow2`` in the storage pool ``storage_pool`` (the image, shared
  read-only by every minion);
- per minion: domain ``B-<first 8 of the machine id>`` (TCG, ``<domain type='qemu'>``,
  direct kernel boot, root file system read-only) and its config disk volume
  ``B-<machine>-config.tar``: a tar on a raw read-only virtio disk holding the agent's
  certificate, private key and agent key (made at each boot, mode 0600 on the host, never
  in the domain XML, an event, a log or the API: only its path is) and the coriolis code.
  The serial console is logged to ``/var/log/libvirt/qemu/<domain>-serial.log``: the
  agent logs every request it serves there.

Powering a minion off destroys its domain (nothing in it is written: /run is a tmpfs);
powering it on boots it with a new certificate and keys. Only a host this worker runs on
(``qemu:///system``) is supported, as for the rest of the destination side.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import secrets
import shutil
import socket
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from coriolis import exceptions
from coriolis.providers.base import require_linux_destination_pool
from coriolis.providers.libvirt import minion_image, overlays, volumes
from coriolis.providers.libvirt.connection import (
    connect,
    load_libvirt,
    lookup_domain,
    require_local,
)
from coriolis.transfer import locations
from coriolis.transfer.locations import AgentLocation
from coriolis.transfer.remote import AgentAddress, probe_agent
from coriolis.transfer.tls import ensure_certificate

JSON = dict[str, Any]
NAMESPACE = "https://cloudbase.it/coriolis/minion/1"
SERIAL_LOG_DIR = "/var/log/libvirt/qemu"
DISK_BY_ID = "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_"
DETACH_SECONDS = 60.0

ENV_SCHEMA: JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "storage_pool": {"type": "string", "minLength": 1, "default": "default",
                         "description": "Storage pool (dir) of the minion image and the "
                                        "minions' config disks"},
        "name_prefix": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,19}$",
                        "default": "coriolis-mn",
                        "description": "Prefix of the domains, volumes and network"},
        "memory_mb": {"type": "integer", "minimum": 192, "maximum": 4096, "default": 384,
                      "description": "Memory of each minion (MiB)"},
        "vcpus": {"type": "integer", "minimum": 1, "maximum": 8, "default": 1},
        "start_timeout": {"type": "number", "minimum": 10, "maximum": 1800, "default": 300,
                          "description": "Seconds a minion may take from boot to its agent "
                                         "answering"},
    },
    "additionalProperties": False,
}


def _base(env: JSON, pool_id: str) -> str:
    return f"{env.get('name_prefix') or 'coriolis-mn'}-{volumes.safe_name(pool_id)[:8]}"


def _machine(env: JSON, pool_id: str, machine_id: str) -> str:
    return f"{_base(env, pool_id)}-{volumes.safe_name(machine_id)[:8]}"


def _serial_log(name: str) -> Path:
    return Path(SERIAL_LOG_DIR) / f"{name}-serial.log"


def _remove_logs(name: str) -> None:
    """The domain's serial console log and libvirt's qemu log of it."""
    _serial_log(name).unlink(missing_ok=True)
    (Path(SERIAL_LOG_DIR) / f"{name}.log").unlink(missing_ok=True)


def _port_open(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=2).close()
        return True
    except OSError:
        return False


def _remove_domain(conn: Any, name: str) -> None:
    libvirt = load_libvirt()
    dom = lookup_domain(conn, name)
    if dom is None:
        return
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def _remove_volume(pool: Any, name: str) -> None:
    libvirt = load_libvirt()
    with contextlib.suppress(libvirt.libvirtError):
        volumes.refresh(pool)
    try:
        vol = pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return
    with contextlib.suppress(libvirt.libvirtError):
        vol.delete(0)


def _put_file(pool: Any, name: str, data: bytes | Path, mode: int = 0o644) -> str:
    """A file ``name`` in dir pool ``pool`` (replaced atomically), as a volume; its path."""
    folder = Path(volumes.pool_folder(pool))
    path = folder / name
    tmp = folder / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        if isinstance(data, Path):
            with open(data, "rb") as src:
                shutil.copyfileobj(src, out, 4 * 2**20)
        else:
            out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    volumes.refresh(pool)
    return str(path)


def _new_network(conn: Any, name: str, bridge: str) -> tuple[Any, str]:
    """A running NAT network ``name`` on a /24 of 10.0.0.0/8 no other network uses."""
    libvirt = load_libvirt()
    used = set()
    for net in conn.listAllNetworks(0):
        ip = ET.fromstring(net.XMLDesc(0)).find("./ip")
        if ip is not None:
            used.add(str(ip.get("address", "")).rsplit(".", 1)[0])
    last: Exception | None = None
    for _attempt in range(10):
        subnet = f"10.{random.randint(1, 254)}.{random.randint(0, 255)}"
        if subnet in used:
            continue
        xml = (f"<network><name>{escape(name)}</name><forward mode='nat'/>"
               f"<bridge name='{bridge}' stp='off'/>"
               f"<ip address='{subnet}.1' netmask='255.255.255.0'><dhcp>"
               f"<range start='{subnet}.100' end='{subnet}.200'/></dhcp></ip></network>")
        net = conn.networkDefineXML(xml)
        try:
            net.create()
            net.setAutostart(False)
            return net, subnet
        except libvirt.libvirtError as exc:
            last = exc
            with contextlib.suppress(libvirt.libvirtError):
                net.undefine()
    raise exceptions.ProviderError(f"cannot start the minion network {name}: {last}")


def _domain_xml(name: str, pool_id: str, machine_id: str, env: JSON, shared: JSON,
                config_path: str) -> str:
    log = _serial_log(name)
    return (
        f"<domain type='qemu'><name>{escape(name)}</name>"
        f"<memory unit='MiB'>{int(env.get('memory_mb') or 384)}</memory>"
        f"<vcpu>{int(env.get('vcpus') or 1)}</vcpu>"
        f"<metadata><coriolis:minion xmlns:coriolis='{NAMESPACE}' pool={quoteattr(pool_id)} "
        f"machine={quoteattr(machine_id)}/></metadata>"
        "<os><type arch='x86_64' machine='pc'>hvm</type>"
        f"<kernel>{escape(shared['kernel'])}</kernel><initrd>{escape(shared['initrd'])}</initrd>"
        f"<cmdline>{escape(minion_image.CMDLINE)}</cmdline></os>"
        "<features><acpi/></features>"
        "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
        "<on_crash>destroy</on_crash><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file={quoteattr(shared['rootfs'])}/><target dev='vda' bus='virtio'/>"
        "<readonly/></disk>"
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file={quoteattr(config_path)}/><target dev='vdb' bus='virtio'/>"
        f"<serial>{minion_image.CONFIG_SERIAL}</serial><readonly/></disk>"
        "<controller type='scsi' index='0' model='virtio-scsi'/>"
        f"<interface type='network'><source network={quoteattr(shared['network'])}/>"
        "<model type='virtio'/></interface>"
        f"<serial type='pty'><log file={quoteattr(str(log))} append='on'/>"
        "<target port='0'/></serial><console type='pty'><target type='serial' port='0'/>"
        "</console><rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
        "<memballoon model='none'/></devices></domain>")


def _new_secrets() -> tuple[dict[str, bytes], str, str]:
    """A certificate, its key and an agent key for one boot: (config files, fingerprint,
    agent key). Made in a private temporary folder, removed at once."""
    with tempfile.TemporaryDirectory(prefix="coriolis-minion-") as tmp:
        cert = ensure_certificate(Path(tmp), ["coriolis-minion"])
        agent_key = secrets.token_urlsafe(32)
        files = {cert.cert_file.name: cert.cert_file.read_bytes(),
                 cert.key_file.name: cert.key_file.read_bytes(),
                 "writer-agent-key": agent_key.encode()}
        return files, cert.fingerprint, agent_key


def _lease_ip(dom: Any) -> str | None:
    libvirt = load_libvirt()
    try:
        found = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
    except libvirt.libvirtError:
        return None
    for iface in (found or {}).values():
        for addr in iface.get("addrs") or []:
            if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                return str(addr["addr"])
    return None


def _log_tail(name: str, lines: int = 15) -> str:
    try:
        text = _serial_log(name).read_text(errors="replace")
    except OSError:
        return "(no serial log)"
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def _boot(conn: Any, env: JSON, pool_id: str, machine_id: str, shared: JSON) -> JSON:
    """(Re)define and start the minion's domain with a new config disk; wait until its agent
    answers. ``{"provider_properties", "connection_info"}``."""
    name = _machine(env, pool_id, machine_id)
    pool = volumes.lookup_pool(conn, shared["storage_pool"])
    _remove_domain(conn, name)
    files, fingerprint, agent_key = _new_secrets()
    config = minion_image.config_disk(files, minion_image.code_archive())
    config_path = _put_file(pool, f"{name}-config.tar", config, 0o600)
    started = time.monotonic()
    try:
        dom = conn.defineXML(_domain_xml(name, pool_id, machine_id, env, shared, config_path))
        dom.create()
        deadline = started + float(env.get("start_timeout") or 300)
        ip = None
        while ip is None:
            if not dom.isActive():
                raise exceptions.ProviderError(
                    f"minion domain {name} stopped while booting: {_log_tail(name)}")
            if time.monotonic() > deadline:
                raise exceptions.ProviderError(
                    f"minion domain {name} got no DHCP lease in time: {_log_tail(name)}")
            ip = _lease_ip(dom)
            if ip is None:
                time.sleep(1)
        url = f"https://{ip}:{minion_image.AGENT_PORT}"
        address = AgentAddress(url, fingerprint, agent_key)
        while not _port_open(ip, minion_image.AGENT_PORT):
            if time.monotonic() > deadline or not dom.isActive():
                raise exceptions.ProviderError(
                    f"the agent of minion domain {name} ({url}) did not start in time: "
                    f"{_log_tail(name)}")
            time.sleep(1)
        while True:
            try:
                probe_agent(address, retry_seconds=2.0)
                break
            except exceptions.CoriolisError as exc:
                if time.monotonic() > deadline or not dom.isActive():
                    raise exceptions.ProviderError(
                        f"the agent of minion domain {name} ({url}) did not answer in time "
                        f"({exc}): {_log_tail(name)}") from None
                time.sleep(2)
    except BaseException:
        _remove_domain(conn, name)
        raise
    return {"provider_properties": {"domain": name, "ip": ip, "url": url,
                                    "config_disk": config_path,
                                    "serial_log": str(_serial_log(name)),
                                    "boot_seconds": round(time.monotonic() - started, 1)},
            "connection_info": {"url": url, "fingerprint": fingerprint, "key": agent_key}}


def _domain_of_machine(conn: Any, machine_id: str) -> Any | None:
    """The minion domain whose coriolis metadata names ``machine_id``."""
    libvirt = load_libvirt()
    for dom in conn.listAllDomains(0):
        try:
            meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
        except libvirt.libvirtError:
            continue
        if ET.fromstring(meta).get("machine") == machine_id:
            return dom
    return None


def _hotplugged(dom: Any) -> list[tuple[str, str]]:
    """(target dev, serial) of the SCSI disks attached to a minion for transfers."""
    found = []
    for disk in ET.fromstring(dom.XMLDesc(0)).findall("./devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("bus") == "scsi":
            found.append((str(target.get("dev")), disk.findtext("serial") or ""))
    return found


def _disk_xml(path: str, fmt: str, dev: str, serial: str) -> str:
    return (f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}' cache='none'/>"
            f"<source file={quoteattr(path)}/><target dev='{dev}' bus='scsi'/>"
            f"<serial>{serial}</serial></disk>")


def _scsi_disks(dom: Any) -> list[ET.Element]:
    return [disk for disk in ET.fromstring(dom.XMLDesc(0)).findall("./devices/disk")
            if disk.find("target[@bus='scsi']") is not None]


def _source_file(disk: ET.Element) -> str:
    source = disk.find("source")
    return os.path.realpath(str(source.get("file"))) if source is not None else ""


def _detach(dom: Any, disks: list[ET.Element], timeout: float = DETACH_SECONDS) -> None:
    """Hot-unplug ``disks`` and wait until the domain's live XML has none of them (libvirt
    returns after 5 s without the guest's acknowledgement; only then has qemu closed the
    files). One another caller detached meanwhile is no error."""
    libvirt = load_libvirt()
    serials = {disk.findtext("serial") or "" for disk in disks}
    for disk in disks:
        try:
            dom.detachDeviceFlags(ET.tostring(disk, encoding="unicode"),
                                  libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            if not dom.isActive():
                return
            if any((d.findtext("serial") or "") == (disk.findtext("serial") or "")
                   for d in _scsi_disks(dom)):
                raise exceptions.ProviderError(
                    f"cannot detach disk {disk.findtext('serial')} from minion {dom.name()}: "
                    f"{exc.get_error_message()}") from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = [d.findtext("serial") for d in _scsi_disks(dom)
                    if (d.findtext("serial") or "") in serials]
        except libvirt.libvirtError:  # the domain went away
            return
        if not left:
            return
        if time.monotonic() > deadline or not dom.isActive():
            raise exceptions.ProviderError(
                f"minion {dom.name()} did not release disks {', '.join(map(str, left))} "
                f"within {timeout:g} s")
        time.sleep(0.2)


def detach_disks(conn: Any, dom: Any, serials: set[str] | None = None) -> list[str]:
    """Hot-unplug the transfer disks (those of ``serials``, or all) from a minion domain;
    the serials detached."""
    disks = [disk for disk in _scsi_disks(dom)
             if serials is None or (disk.findtext("serial") or "") in serials]
    _detach(dom, disks)
    return [disk.findtext("serial") or "" for disk in disks]


def detach_paths(conn: Any, paths: list[str]) -> list[str]:
    """Detach the files ``paths`` from every minion domain that has them attached (what a
    transfer interrupted before its cleanup left); the domains that held one."""
    libvirt = load_libvirt()
    wanted = {os.path.realpath(p) for p in paths}
    held = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
            disks = _scsi_disks(dom)
        except libvirt.libvirtError:
            continue  # not a minion, or gone
        mine = [d for d in disks if _source_file(d) in wanted]
        if mine:
            _detach(dom, mine)
            held.append(dom.name())
    return held


class LibvirtMinionPools:
    """The libvirt provider's ``MinionPoolProvider`` methods (mixed into
    ``LibvirtProvider``): destination pools of Linux minions."""

    minion_pool_platforms = frozenset({"destination"})

    def minion_pool_environment_schema(self) -> JSON:
        return ENV_SCHEMA

    def validate_minion_pool_options(self, connection_info: JSON, env: JSON,
                                     pool_platform: str, os_type: str) -> None:
        require_linux_destination_pool("libvirt", "libvirt minions write destination disks",
                                       pool_platform, os_type)
        require_local(connection_info, "minion pools")
        with connect(connection_info) as conn:
            pool = volumes.lookup_pool(conn, env.get("storage_pool") or "default")
            volumes.pool_folder(pool)

    def set_up_pool_shared_resources(self, connection_info: JSON, env: JSON,
                                     pool_id: str) -> JSON:
        """Build (or take from the cache) the minion image, copy it into the storage pool,
        start the pool's network. ``{"storage_pool", "network", "subnet", "kernel",
        "initrd", "rootfs"}``."""
        require_local(connection_info, "minion pools")
        image = minion_image.build(log=False)
        base = _base(env, pool_id)
        with connect(connection_info) as conn:
            self._tear_down(conn, env, pool_id)
            pool = volumes.lookup_pool(conn, env.get("storage_pool") or "default")
            shared: JSON = {"storage_pool": pool.name()}
            try:
                for key, suffix in (("kernel", "vmlinuz"), ("initrd", "initrd"),
                                    ("rootfs", "rootfs.qcow2")):
                    shared[key] = _put_file(pool, f"{base}-{suffix}", image.files[key])
                bridge = "cmn" + hashlib.sha256(pool_id.encode()).hexdigest()[:10]
                _net, subnet = _new_network(conn, f"{base}-net", bridge)
                shared.update(network=f"{base}-net", subnet=f"{subnet}.0/24")
            except BaseException:
                self._tear_down(conn, env, pool_id)
                raise
        return shared

    @staticmethod
    def _tear_down(conn: Any, env: JSON, pool_id: str) -> None:
        libvirt = load_libvirt()
        base = _base(env, pool_id)
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(base + "-"):
                _remove_domain(conn, dom.name())
                _remove_logs(dom.name())
        with contextlib.suppress(libvirt.libvirtError):
            net = conn.networkLookupByName(f"{base}-net")
            if net.isActive():
                net.destroy()
            net.undefine()
        try:
            pool = conn.storagePoolLookupByName(env.get("storage_pool") or "default")
        except libvirt.libvirtError:
            return
        if pool.isActive():
            volumes.refresh(pool)
            for vol in pool.listAllVolumes(0):
                if vol.name().startswith(base + "-"):
                    with contextlib.suppress(libvirt.libvirtError):
                        vol.delete(0)

    def tear_down_pool_shared_resources(self, connection_info: JSON, env: JSON, pool_id: str,
                                        shared_resources: JSON | None) -> None:
        """Remove every domain, volume and the network of the pool's names."""
        with connect(connection_info) as conn:
            self._tear_down(conn, env, pool_id)

    def create_minion(self, connection_info: JSON, env: JSON, pool_id: str, machine_id: str,
                      shared_resources: JSON | None) -> JSON:
        if not shared_resources:
            raise exceptions.ProviderError("the pool's shared resources are missing")
        with connect(connection_info) as conn:
            result = _boot(conn, env, pool_id, machine_id, shared_resources)
        result["provider_properties"]["shared"] = shared_resources
        return result

    def delete_minion(self, connection_info: JSON, env: JSON, pool_id: str, machine_id: str,
                      provider_properties: JSON) -> None:
        name = _machine(env, pool_id, machine_id)
        with connect(connection_info) as conn:
            _remove_domain(conn, name)
            libvirt = load_libvirt()
            with contextlib.suppress(libvirt.libvirtError, exceptions.CoriolisError):
                pool = volumes.lookup_pool(conn, env.get("storage_pool") or "default")
                _remove_volume(pool, f"{name}-config.tar")
        _remove_logs(name)

    def power_off_minion(self, connection_info: JSON, env: JSON, pool_id: str,
                         machine_id: str, provider_properties: JSON) -> JSON:
        """The domain is shut off (destroyed: its root file system is read-only)."""
        libvirt = load_libvirt()
        with connect(connection_info) as conn:
            dom = lookup_domain(conn, _machine(env, pool_id, machine_id))
            if dom is not None and dom.isActive():
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
        return {**provider_properties, "ip": None, "url": None}

    def power_on_minion(self, connection_info: JSON, env: JSON, pool_id: str,
                        machine_id: str, provider_properties: JSON) -> JSON:
        shared = provider_properties.get("shared")
        if not shared:
            raise exceptions.ProviderError(f"minion {machine_id}: its shared resources are "
                                           "unknown; delete it")
        with connect(connection_info) as conn:
            result = _boot(conn, env, pool_id, machine_id, shared)
        result["provider_properties"]["shared"] = shared
        return result

    def healthcheck_minion(self, connection_info: JSON, env: JSON, pool_id: str,
                           machine_id: str, provider_properties: JSON,
                           minion_connection_info: JSON) -> None:
        name = _machine(env, pool_id, machine_id)
        with connect(connection_info) as conn:
            dom = lookup_domain(conn, name)
            if dom is None:
                raise exceptions.ProviderError(f"minion {machine_id}: domain {name} is gone")
            if not dom.isActive():
                raise exceptions.ProviderError(
                    f"minion {machine_id}: domain {name} is not running")
        probe_agent(AgentAddress.from_json(minion_connection_info), retry_seconds=5.0)

    def minion_target_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                volumes_info: list[JSON], minion_connection_info: JSON,
                                key_ref: str) -> JSON:
        """Hot-plug each volume into the minion's domain (virtio-scsi, serial
        ``cv<hash of the volume key>``; what an earlier transfer left attached is detached
        first) and point an agent location at its ``/dev/disk/by-id`` name in the guest. A
        replica volume (one with a ``snapshot``) is not attached itself: its qcow2 overlay
        is (``overlays``; an existing one, this execution's so far, is kept), so the volume
        stays in its committed state until the commit merges the overlay on the host.
        ``target_resources["minion_disks"]`` says what ``delete_target_resources``
        detaches."""
        machine_id = minion_connection_info["machine_id"]
        disks: JSON = {}
        attached: list[str] = []
        with connect(connection_info) as conn:
            dom = _domain_of_machine(conn, machine_id)
            if dom is None or not dom.isActive():
                raise exceptions.ProviderError(f"minion {machine_id}: its domain is not "
                                               "running")
            detach_disks(conn, dom)
            libvirt = load_libvirt()
            try:
                for index, volume in enumerate(volumes_info or []):
                    what = f"destination disk {volume['disk_id']} (through minion {dom.name()})"
                    vol = volumes.find(conn, volume)
                    if vol is None:
                        raise exceptions.ProviderError(f"{what}: its volume is missing")
                    path, fmt = vol.path(), volume["format"]
                    if volume.get("snapshot"):
                        # A replica volume: the minion writes its overlay (overlays.py).
                        path, fmt = overlays.ensure({**volume, "path": path}), "qcow2"
                    serial = "cv" + hashlib.sha256(
                        str(volume["volume_id"]).encode()).hexdigest()[:16]
                    dom.attachDeviceFlags(
                        _disk_xml(path, fmt, f"sd{chr(97 + index)}", serial),
                        libvirt.VIR_DOMAIN_AFFECT_LIVE)
                    attached.append(serial)
                    disks[volume["disk_id"]] = locations.to_json(AgentLocation(
                        url=minion_connection_info["url"],
                        fingerprint=minion_connection_info["fingerprint"], key_ref=key_ref,
                        path=DISK_BY_ID + serial, format="raw", mode="always", journal=None,
                        what=what))
            except libvirt.libvirtError as exc:
                detach_disks(conn, dom, set(attached))
                raise exceptions.ProviderError(
                    f"cannot attach the volumes to minion {dom.name()}: "
                    f"{exc.get_error_message()}") from None
            except BaseException:
                detach_disks(conn, dom, set(attached))
                raise
        # udev in the guest names the new disks a moment later: the agent waits for a /dev
        # path to appear when the transfer opens.
        return {"disks": disks, "minion_disks": {"machine_id": machine_id,
                                                 "serials": attached}}


def detach_minion_disks(connection_info: JSON, target_resources: JSON) -> None:
    """What ``minion_target_resources`` attached, detached (a gone domain is no error)."""
    held = (target_resources or {}).get("minion_disks")
    if not held:
        return
    with connect(connection_info) as conn:
        dom = _domain_of_machine(conn, held["machine_id"])
        if dom is not None and dom.isActive():
            detach_disks(conn, dom, set(held.get("serials") or []))
