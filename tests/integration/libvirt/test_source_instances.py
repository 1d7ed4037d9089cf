"""The libvirt source's instances: domains as export_info (disks, NICs, firmware)."""

from __future__ import annotations

import pytest

from coriolis import exceptions
from coriolis.providers.libvirt import metadata
from coriolis.providers.libvirt.provider import LibvirtProvider
from tests.integration.libvirt.conftest import make_image
from tests.libvirt_host import LibvirtHost

MiB = 1024 * 1024
MAC = "52:54:00:12:34:56"
WINDOWS = ("<metadata><libosinfo:libosinfo xmlns:libosinfo="
           "'http://libosinfo.org/xmlns/libvirt/domain/1.0'><libosinfo:os "
           "id='http://microsoft.com/win/2k19'/></libosinfo:libosinfo></metadata>")


@pytest.fixture(scope="module")
def domains(host: LibvirtHost) -> dict:
    net = host.add_network("lan")
    pool = host.add_pool("p1")
    vol = pool.createXML(f"<volume><name>{host.name('data')}.raw</name><capacity unit='MiB'>"
                         "24</capacity><target><format type='raw'/></target></volume>", 0)
    qcow = make_image(host.root / "vm-disk.qcow2", "qcow2", "32M", [(0x11, 0, 1 * MiB)])
    vm = host.define_domain("vm", [(qcow, "qcow2")], net.name(), vcpus=2, memory_mib=192,
                            mac=MAC, extra_devices=(
                                "<disk type='volume' device='disk'><driver name='qemu' "
                                f"type='raw'/><source pool='{pool.name()}' "
                                f"volume='{vol.name()}'/><target dev='sdb' bus='sata'/>"
                                "</disk><disk type='file' device='cdrom'><target dev='hdc' "
                                "bus='ide'/><readonly/></disk>"
                                "<interface type='bridge'><source bridge='nobr0'/>"
                                "<model type='e1000'/></interface>"))
    efi = host.conn.defineXML(
        f"<domain type='qemu'><name>{host.name('efi')}</name><memory unit='MiB'>64</memory>"
        f"{WINDOWS}<os><type arch='x86_64' machine='q35'>hvm</type><loader readonly='yes' "
        "type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader></os><features><acpi/></features><devices/>"
        "</domain>")
    missing = host.define_domain("missing", [(host.root / "gone.qcow2", "qcow2")], None)
    pending = host.conn.defineXML(
        f"<domain type='qemu'><name>{host.name('pending')}</name><memory unit='MiB'>64"
        f"</memory><metadata>{metadata.transfer_element('t-1')}</metadata><os><type "
        "arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>")
    return {"vm": vm, "efi": efi, "missing": missing, "pending": pending, "pool": pool,
            "vol": vol, "qcow": qcow, "net": net}


def test_get_instance_shape(host: LibvirtHost, provider: LibvirtProvider,
                            domains: dict) -> None:
    info = provider.get_instance(host.connection_info(), {}, host.name("vm"))
    by_uuid = provider.get_instance(host.connection_info(), {}, domains["vm"].UUIDString())
    assert by_uuid == info
    assert {k: info[k] for k in ("id", "name", "instance_name", "num_cpu", "memory_mb",
                                 "os_type", "firmware_type", "power_state")} == {
        "id": domains["vm"].UUIDString(), "name": host.name("vm"),
        "instance_name": host.name("vm"), "num_cpu": 2, "memory_mb": 192,
        "os_type": "linux", "firmware_type": "BIOS", "power_state": "shutoff"}
    disks = info["devices"]["disks"]
    assert [d["id"] for d in disks] == ["vda", "sdb"]  # the cdrom is skipped
    assert disks[0] == {"id": "vda", "format": "qcow2", "bus": "virtio", "pool": None,
                        "volume": None, "storage_backend": None, "source_type": "file",
                        "path": str(domains["qcow"]), "size_bytes": 32 * MiB}
    assert disks[1] == {"id": "sdb", "format": "raw", "bus": "sata",
                        "pool": domains["pool"].name(), "volume": domains["vol"].name(),
                        "storage_backend": domains["pool"].name(), "source_type": "volume",
                        "path": domains["vol"].path(), "size_bytes": 24 * MiB}
    nics = info["devices"]["nics"]
    assert nics[0] == {"id": MAC, "mac_address": MAC, "network_name": domains["net"].name(),
                       "model": "virtio"}
    assert nics[1]["network_name"] == "bridge:nobr0" and nics[1]["model"] == "e1000"


def test_efi_windows_domain(host: LibvirtHost, provider: LibvirtProvider,
                            domains: dict) -> None:
    info = provider.get_instance(host.connection_info(), {}, host.name("efi"))
    assert info["firmware_type"] == "EFI" and info["os_type"] == "windows"
    assert info["devices"]["disks"] == []


def test_missing_disk_and_pending_domain(host: LibvirtHost, provider: LibvirtProvider,
                                         domains: dict) -> None:
    with pytest.raises(exceptions.InvalidInput, match=r"missing.*vda.*gone\.qcow2"):
        provider.get_instance(host.connection_info(), {}, host.name("missing"))
    with pytest.raises(exceptions.InstanceNotFound):
        provider.get_instance(host.connection_info(), {}, host.name("pending"))
    with pytest.raises(exceptions.InstanceNotFound, match="nope"):
        provider.get_instance(host.connection_info(), {}, host.name("nope"))
    listed = {i["name"]: i for i in provider.list_instances(host.connection_info(), {})
              if i["name"].startswith(host.prefix)}
    assert set(listed) == {host.name(n) for n in ("vm", "efi", "missing")}
    assert "gone.qcow2" in listed[host.name("missing")]["error"]
    assert "error" not in listed[host.name("vm")]
    assert listed[host.name("vm")]["num_cpu"] == 2
