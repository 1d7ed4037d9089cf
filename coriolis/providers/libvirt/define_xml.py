"""The XML of a domain the libvirt destination defines, and reading back what it needs.

``DomainSpec`` holds what goes in: virtio disks (files of pool volumes), virtio NICs on a
libvirt network or a host bridge (``bridge:<name>``) with the source's MACs, CPUs, memory,
firmware (``<os firmware='efi'>`` for EFI), the machine type, a serial console (a pty whose
output is logged to ``serial_log``) and the coriolis metadata (``metadata.py``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

from coriolis.providers.libvirt import metadata

JSON = dict[str, Any]
BRIDGE_PREFIX = "bridge:"


@dataclass
class DomainSpec:
    name: str
    domain_type: str
    num_cpu: int
    memory_mb: int
    firmware: str  # "BIOS" | "EFI"
    machine: str | None
    transfer_id: str
    serial_log: str
    disks: list[tuple[str, str]] = field(default_factory=list)  # (path, format)
    nics: list[tuple[str, str | None]] = field(default_factory=list)  # (network, mac)


def _nic(network: str, mac: str | None) -> str:
    if network.startswith(BRIDGE_PREFIX):
        head = (f"<interface type='bridge'><source bridge="
                f"{quoteattr(network[len(BRIDGE_PREFIX):])}/>")
    else:
        head = f"<interface type='network'><source network={quoteattr(network)}/>"
    return (head + (f"<mac address={quoteattr(mac)}/>" if mac else "")
            + "<model type='virtio'/></interface>")


def domain_xml(spec: DomainSpec) -> str:
    """The ``<domain>`` XML of ``spec`` (pending: the coriolis metadata says so)."""
    machine = f" machine={quoteattr(spec.machine)}" if spec.machine else ""
    firmware = " firmware='efi'" if spec.firmware == "EFI" else ""
    disks = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type={quoteattr(fmt)}/>"
        f"<source file={quoteattr(path)}/><target dev='vd{chr(97 + i)}' bus='virtio'/>"
        + ("<boot order='1'/>" if i == 0 else "") + "</disk>"
        for i, (path, fmt) in enumerate(spec.disks))
    nics = "".join(_nic(network, mac) for network, mac in spec.nics)
    serial = (f"<serial type='pty'><log file={quoteattr(spec.serial_log)} append='off'/>"
              "<target port='0'/></serial><console type='pty'><target type='serial' "
              "port='0'/></console>")
    return (f"<domain type={quoteattr(spec.domain_type)}><name>{_text(spec.name)}</name>"
            f"<metadata>{metadata.transfer_element(spec.transfer_id, pending=True)}</metadata>"
            f"<memory unit='MiB'>{int(spec.memory_mb)}</memory>"
            f"<vcpu>{int(spec.num_cpu)}</vcpu>"
            f"<os{firmware}><type arch='x86_64'{machine}>hvm</type></os>"
            "<features><acpi/><apic/></features><clock offset='utc'/>"
            "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
            "<on_crash>destroy</on_crash>"
            f"<devices>{disks}{nics}{serial}</devices></domain>")


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def transfer_of(dom: Any) -> tuple[str | None, bool]:
    """(the coriolis transfer id, pending) a domain's metadata names; (None, False) without."""
    root = ET.fromstring(dom.XMLDesc(0))
    found = root.find(f"./metadata/{metadata.TAG}")
    if found is None:
        return None, False
    return found.get("id"), found.get("pending") == "yes"


def disks_of(dom: Any) -> list[JSON]:
    """The domain's disks in order: ``[{"path", "format", "name": "diskN"}]``."""
    root = ET.fromstring(dom.XMLDesc(0))
    result: list[JSON] = []
    for disk in root.findall("./devices/disk[@device='disk']"):
        source = disk.find("source")
        driver = disk.find("driver")
        path = source.get("file") if source is not None else None
        if path:
            result.append({"path": path, "name": f"disk{len(result)}",
                           "format": (driver.get("type") if driver is not None else None)
                           or "raw"})
    return result


def nics_of(dom: Any) -> list[JSON]:
    """The domain's NICs in order: ``[{"mac", "network", "model"}]`` (network: a libvirt
    network name or ``bridge:<name>``)."""
    root = ET.fromstring(dom.XMLDesc(0))
    result: list[JSON] = []
    for nic in root.findall("./devices/interface"):
        source = nic.find("source")
        mac = nic.find("mac")
        model = nic.find("model")
        network = None
        if source is not None:
            network = (source.get("network") or
                       (BRIDGE_PREFIX + source.get("bridge", "") if source.get("bridge")
                        else None))
        result.append({"mac": mac.get("address") if mac is not None else None,
                       "network": network,
                       "model": model.get("type") if model is not None else None})
    return result


def serial_log_of(dom: Any) -> str | None:
    """The file the domain's serial console is logged to, if any."""
    root = ET.fromstring(dom.XMLDesc(0))
    log = root.find("./devices/serial/log")
    return log.get("file") if log is not None else None
