"""A libvirt domain as ``export_info`` (``coriolis.providers.base``): its XML parsed, disk
sizes asked of libvirt.

Disks (``device='disk'``; cdroms, floppies and other devices are skipped)::

    {"id": "vda" (target dev), "path": str (file or block device on the host),
     "format": "qcow2"|"raw"|... (the driver type; raw by default), "bus": "virtio"|...,
     "size_bytes": int (virtual size), "pool": str|None, "volume": str|None,
     "storage_backend": str|None (the pool's name), "source_type": "file"|"volume"|"block"}

NICs::

    {"id": str (the MAC), "mac_address": str, "network_name": "<network>"|"bridge:<br>",
     "model": str|None}

A disk whose file is missing, or whose source libvirt cannot read (a network disk, a missing
pool volume), makes the domain malformed: ``InvalidInput`` naming the domain, the disk and
the file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from coriolis import exceptions
from coriolis.providers.libvirt import metadata

JSON = dict[str, Any]
LIBOSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"

# virDomainState values (libvirt's enum; fixed by its ABI).
POWER_STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown",
                5: "shutoff", 6: "crashed", 7: "pmsuspended"}
RUNNING_STATES = {"running", "blocked", "paused", "pmsuspended"}


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def is_pending(root: ET.Element) -> bool:
    return metadata.is_pending(root)


def os_type(root: ET.Element) -> str:
    """``windows`` when libosinfo metadata names a Microsoft OS, else ``linux``."""
    os_el = root.find(f"./metadata/{{{LIBOSINFO_NS}}}libosinfo/{{{LIBOSINFO_NS}}}os")
    os_id = (os_el.get("id") or "") if os_el is not None else ""
    return "windows" if "microsoft.com/win" in os_id else "linux"


def firmware_type(root: ET.Element) -> str:
    """``EFI`` for ``<os firmware='efi'>`` or a pflash loader, else ``BIOS``."""
    os_el = root.find("./os")
    if os_el is None:
        return "BIOS"
    if os_el.get("firmware") == "efi":
        return "EFI"
    loader = os_el.find("./loader")
    if loader is not None and loader.get("type") == "pflash":
        return "EFI"
    return "BIOS"


def _memory_mb(root: ET.Element) -> int:
    mem = root.find("./memory")
    if mem is None or not (mem.text or "").strip():
        return 0
    factor = {"b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 10**6,
              "m": 2**20, "mib": 2**20, "gb": 10**9, "g": 2**30, "gib": 2**30,
              "tb": 10**12, "t": 2**40, "tib": 2**40}.get((mem.get("unit") or "KiB").lower(),
                                                         1024)
    return int(mem.text or 0) * factor // 2**20


def nics(root: ET.Element) -> list[JSON]:
    found = []
    for iface in root.findall("./devices/interface"):
        source = iface.find("./source")
        kind = iface.get("type")
        mac_el = iface.find("./mac")
        mac = (mac_el.get("address") or "") if mac_el is not None else ""
        if kind == "network" and source is not None:
            network = source.get("network") or ""
        elif kind == "bridge" and source is not None:
            network = f"bridge:{source.get('bridge') or ''}"
        else:
            network = kind or ""
        model = iface.find("./model")
        found.append({"id": mac, "mac_address": mac, "network_name": network,
                      "model": model.get("type") if model is not None else None})
    return found


def disk_elements(root: ET.Element) -> list[ET.Element]:
    return [d for d in root.findall("./devices/disk") if d.get("device", "disk") == "disk"]


def _disk(conn: Any, dom: Any, libvirt: Any, name: str, disk: ET.Element) -> JSON:
    target = disk.find("./target")
    dev = target.get("dev") if target is not None else None
    if not dev:
        raise exceptions.InvalidInput(f"domain '{name}': a disk has no target dev")
    driver = disk.find("./driver")
    fmt = (driver.get("type") if driver is not None else None) or "raw"
    source = disk.find("./source")
    kind = disk.get("type", "file")
    info: JSON = {"id": dev, "format": fmt, "bus": target.get("bus") if target is not None
                  else None, "pool": None, "volume": None, "storage_backend": None,
                  "source_type": kind}
    if source is None:
        raise exceptions.InvalidInput(f"domain '{name}': disk {dev} has no source")
    if kind == "volume":
        pool_name, vol_name = source.get("pool") or "", source.get("volume") or ""
        try:
            vol = conn.storagePoolLookupByName(pool_name).storageVolLookupByName(vol_name)
            _type, capacity, _alloc = vol.info()
            path = vol.path()
        except libvirt.libvirtError as exc:
            raise exceptions.InvalidInput(
                f"domain '{name}': disk {dev}: volume '{vol_name}' of pool '{pool_name}' "
                f"cannot be read: {exc.get_error_message()}") from None
        info.update(pool=pool_name, volume=vol_name, storage_backend=pool_name, path=path,
                    size_bytes=int(capacity))
        return info
    if kind not in ("file", "block"):
        raise exceptions.InvalidInput(
            f"domain '{name}': disk {dev} is a '{kind}' disk; only files, block devices and "
            "pool volumes can be exported")
    path = source.get("file" if kind == "file" else "dev") or ""
    try:
        capacity = dom.blockInfo(path)[0]
    except libvirt.libvirtError as exc:
        raise exceptions.InvalidInput(
            f"domain '{name}': disk {dev}: {kind} {path} is missing or unreadable: "
            f"{exc.get_error_message()}") from None
    info.update(path=path, size_bytes=int(capacity))
    return info


def summary(dom: Any, root: ET.Element) -> JSON:
    """The domain's fields but its devices (what a listing shows)."""
    name = dom.name()
    vcpu = root.find("./vcpu")
    return {
        "id": dom.UUIDString(), "name": name, "instance_name": name,
        "num_cpu": int((vcpu.text or "1") if vcpu is not None else 1),
        "memory_mb": _memory_mb(root), "os_type": os_type(root),
        "firmware_type": firmware_type(root), "flavor_name": None,
        "power_state": POWER_STATES.get(dom.state()[0], "unknown"),
    }


def export_info(conn: Any, dom: Any, libvirt: Any, root: ET.Element | None = None) -> JSON:
    """The domain's ``export_info``; ``InvalidInput`` naming a malformed disk."""
    if root is None:
        root = parse(dom.XMLDesc(0))
    name = dom.name()
    return {**summary(dom, root),
            "devices": {"disks": [_disk(conn, dom, libvirt, name, d)
                                  for d in disk_elements(root)],
                        "nics": nics(root), "controllers": [], "cdroms": [], "floppies": [],
                        "serial_ports": []}}
