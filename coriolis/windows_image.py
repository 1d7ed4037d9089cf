"""Windows test disks and virtio-win driver trees, made by the project (for tests and demos).

No Windows image can be downloaded or booted here, so a test disk holds what libguestfs
inspection and the Windows morpher read, and nothing else: an MBR disk with one NTFS partition
(mkntfs in a libguestfs appliance) holding ``Windows/System32/config/SYSTEM`` and ``SOFTWARE``
hives grown with hivex from an empty hive (``registry.empty_hive``), and a 512-byte PE32+
x86-64 ``Windows/System32/cmd.exe`` (the file libguestfs reads the architecture from). The
hives carry the values inspection reads (``Microsoft\\Windows NT\\CurrentVersion``:
ProductName, CurrentVersion, CurrentMajor/MinorVersionNumber, CurrentBuildNumber,
InstallationType; ``Select\\Current``; ``MountedDevices``; the computer name), two control sets,
a static IPv4 configuration on one network adapter, VMware Tools as an installed MSI product
and its service, as a VMware guest would.

Two variants (``VARIANTS``): Windows Server 2019 (10.0 build 17763, "Server") and Windows 10
(10.0 build 19045, "Client"). Disks are cached (``CORIOLIS_WINDOWS_CACHE``, default
``~/.cache/coriolis/windows``) under a name that changes with this module; one build is one
appliance start (about 30 s under TCG), guarded by ``cache_lock``.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from coriolis import cache_lock
from coriolis.osmorphing.appliance import new_handle
from coriolis.osmorphing.windows import registry, virtio
from coriolis.osmorphing.windows.registry import open_hive

DISK_SIZE = 256 * 1024**2
PARTITION_OFFSET = 1024**2  # where Windows starts its first partition
DISK_SIGNATURE = 0x1C0D1A25
VMWARE_TOOLS_CODE = "{6A3D1E5F-0C1B-4F5A-9E2D-7B3C4A5D6E7F}"
SOURCE_MAC = "00:50:56:8a:11:22"
NIC_GUID = "{5B2E6C1A-3D4F-4A8B-9C0D-1E2F3A4B5C6D}"
NET_CLASS = "{4D36E972-E325-11CE-BFC1-08002BE10318}"
STATIC_IP: dict[str, list[str] | str] = {
    "IPAddress": ["192.168.50.10"], "SubnetMask": ["255.255.255.0"],
    "DefaultGateway": ["192.168.50.1"], "NameServer": "192.168.50.2,192.168.50.3"}
CONTROL_SETS = ("ControlSet001", "ControlSet002")


@dataclass(frozen=True)
class Variant:
    name: str
    product: str
    build: str
    installation_type: str
    edition: str
    virtio_dir: str  # the folder of its drivers in virtio-win's layout


VARIANTS = {
    "win2k19": Variant("win2k19", "Windows Server 2019 Standard", "17763", "Server",
                       "ServerStandard", "2k19"),
    "win10": Variant("win10", "Windows 10 Pro", "19045", "Client", "Professional", "w10"),
}


def pe_header() -> bytes:
    """The first 512 bytes of a PE32+ x86-64 console program (``file``: "PE32+ executable
    (console) x86-64, for MS Windows"); enough for inspection, not a runnable program."""
    data = bytearray(512)
    data[0:2] = b"MZ"
    struct.pack_into("<I", data, 0x3C, 0x80)
    data[0x80:0x84] = b"PE\0\0"
    # COFF header: machine AMD64, no sections, optional header size, executable|large address.
    struct.pack_into("<HHIIIHH", data, 0x84, 0x8664, 0, 0, 0, 0, 0xF0, 0x22)
    optional = 0x84 + 20
    struct.pack_into("<H", data, optional, 0x20B)  # PE32+
    struct.pack_into("<H", data, optional + 68, 3)  # subsystem: Windows console
    return bytes(data)


def _fill_system(hive: registry.Hive, variant: Variant) -> None:
    hive.set_dword("Select", "Current", 1)
    hive.set_dword("Select", "Default", 1)
    hive.set_dword("Select", "LastKnownGood", 2)
    hive.set_dword("Select", "Failed", 0)
    mounted = struct.pack("<IQ", DISK_SIGNATURE, PARTITION_OFFSET)
    hive.set("MountedDevices", "\\DosDevices\\C:", registry.REG_BINARY, mounted)
    for cs in CONTROL_SETS:
        hive.set_sz(f"{cs}\\Control\\ComputerName\\ComputerName", "ComputerName",
                    f"{variant.name.upper()}-SRC")
        hive.set_dword(f"{cs}\\Services\\pvscsi", "Start", 0)
        hive.set_dword(f"{cs}\\Services\\pvscsi", "Type", 1)
        hive.set_dword(f"{cs}\\Services\\VMTools", "Start", 2)
        hive.set_dword(f"{cs}\\Services\\VMTools", "Type", 0x10)
        hive.set_sz(f"{cs}\\Services\\VMTools", "ImagePath",
                    '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe"', expand=True)
        interface = f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces\\{NIC_GUID}"
        hive.set_dword(interface, "EnableDHCP", 0)
        for name, value in STATIC_IP.items():
            if isinstance(value, list):
                hive.set_multi_sz(interface, name, value)
            else:
                hive.set_sz(interface, name, value)
        adapter = f"{cs}\\Control\\Class\\{NET_CLASS}\\0001"
        hive.set_sz(adapter, "NetCfgInstanceId", NIC_GUID)
        hive.set_sz(adapter, "DriverDesc", "vmxnet3 Ethernet Adapter")
        hive.set_dword(adapter, "Characteristics", 0x84)  # NCF_PHYSICAL | NCF_HAS_UI


def _fill_software(hive: registry.Hive, variant: Variant) -> None:
    key = "Microsoft\\Windows NT\\CurrentVersion"
    hive.set_sz(key, "ProductName", variant.product)
    hive.set_sz(key, "CurrentVersion", "6.3")
    hive.set_dword(key, "CurrentMajorVersionNumber", 10)
    hive.set_dword(key, "CurrentMinorVersionNumber", 0)
    hive.set_sz(key, "CurrentBuildNumber", variant.build)
    hive.set_sz(key, "CurrentBuild", variant.build)
    hive.set_sz(key, "InstallationType", variant.installation_type)
    hive.set_sz(key, "EditionID", variant.edition)
    hive.set_sz(key, "SystemRoot", "C:\\Windows")
    current = "Microsoft\\Windows\\CurrentVersion"
    hive.set_sz(current, "DevicePath", "%SystemRoot%\\inf", expand=True)
    hive.set_sz(current, "ProgramFilesDir", "C:\\Program Files")
    tools = f"{current}\\Uninstall\\{VMWARE_TOOLS_CODE}"
    hive.set_sz(tools, "DisplayName", "VMware Tools")
    hive.set_sz(tools, "Publisher", "VMware, Inc.")
    hive.set_sz(tools, "DisplayVersion", "12.1.5.20735119")
    hive.set_sz(tools, "UninstallString", f"MsiExec.exe /X{VMWARE_TOOLS_CODE}", expand=True)
    hive.set_dword(tools, "WindowsInstaller", 1)


def _make_disk(raw: Path, variant: Variant) -> None:
    with open(raw, "wb") as f:
        f.truncate(DISK_SIZE)
    g = new_handle()
    try:
        g.add_drive_opts(str(raw), format="raw", readonly=False)
        g.launch()
        g.part_init("/dev/sda", "mbr")
        g.part_add("/dev/sda", "p", PARTITION_OFFSET // 512, -1)
        g.part_set_mbr_id("/dev/sda", 1, 0x07)
        g.part_set_bootable("/dev/sda", 1, True)
        g.pwrite_device("/dev/sda", struct.pack("<I", DISK_SIGNATURE), 440)
        g.mkfs("ntfs", "/dev/sda1")
        g.mount("/dev/sda1", "/")
        for folder in ("/Windows/System32/config", "/Windows/System32/drivers",
                       "/Windows/inf", "/Program Files/VMware/VMware Tools"):
            g.mkdir_p(folder)
        g.write("/Windows/System32/cmd.exe", pe_header())
        g.write("/Program Files/VMware/VMware Tools/vmtoolsd.exe", pe_header())
        for name, fill in (("SYSTEM", _fill_system), ("SOFTWARE", _fill_software)):
            path = f"/Windows/System32/config/{name}"
            g.write(path, registry.empty_hive(f"CMI-CreateHive-{name}"))
            with open_hive(g, path, write=True) as hive:
                fill(hive, variant)
        g.sync()
        g.umount_all()
        g.shutdown()
    finally:
        g.close()


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "coriolis" / "windows"
    return Path(os.environ.get("CORIOLIS_WINDOWS_CACHE", default))


def image_path(variant: str) -> Path:
    digest = hashlib.sha256(Path(__file__).read_bytes()
                            + Path(registry.__file__).read_bytes()).hexdigest()[:12]
    return cache_dir() / f"{variant}-{digest}.raw"


def build(variant: str) -> Path:
    """The cached raw test disk of ``variant`` (a key of ``VARIANTS``), built if missing.
    Tests open it through an overlay or a copy, so that the cached disk stays as built."""
    target = image_path(variant)
    if target.exists():
        return target
    with cache_lock.building(target):
        if not target.exists():
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                raw = Path(tmp) / "disk.raw"
                _make_disk(raw, VARIANTS[variant])
                os.replace(raw, target)
    return target


# --- virtio-win trees -----------------------------------------------------------------------
VIRTIO_DRIVERS = {"viostor": "viostor", "vioscsi": "vioscsi", "NetKVM": "netkvm",
                  "Balloon": "balloon"}
# PCI hardware ids each driver's INF matches: the morpher's, and the balloon's.
VIRTIO_HARDWARE_IDS = {name: ids for name, (_, _, ids) in virtio.DRIVERS.items()}
VIRTIO_HARDWARE_IDS["balloon"] = ("PCI\\VEN_1AF4&DEV_1002&SUBSYS_00051AF4&REV_00",)


def driver_sys(name: str, os_dir: str, arch: str) -> bytes:
    """The test stand-in of a driver binary: a PE header and a line naming it."""
    return pe_header() + f"coriolis test driver {name} {os_dir} {arch}\n".encode()


def make_virtio_win_tree(root: Path, os_dirs: tuple[str, ...] = ("2k19", "w10"),
                         arch: str = "amd64",
                         drivers: tuple[str, ...] = tuple(VIRTIO_DRIVERS)) -> Path:
    """A virtio-win tree in the ISO's layout, ``DRIVER/OSDIR/ARCH/name.{inf,sys,cat}``
    (``viostor/2k19/amd64/viostor.sys``, ``NetKVM/w10/amd64/netkvm.inf``), with files made
    here (not Red Hat's drivers); returns ``root``."""
    for folder in drivers:
        name = VIRTIO_DRIVERS[folder]
        for os_dir in os_dirs:
            target = root / folder / os_dir / arch
            target.mkdir(parents=True, exist_ok=True)
            ids = "\n".join(f"%{name}.DeviceDesc% = {name}_Inst, {hw}"
                            for hw in VIRTIO_HARDWARE_IDS[name])
            (target / f"{name}.inf").write_text(
                f"; coriolis test INF for {name} ({os_dir} {arch})\n[Version]\n"
                f'Signature = "$WINDOWS NT$"\nProvider = %VENDOR%\nCatalogFile = {name}.cat\n'
                f"[Standard.NTamd64]\n{ids}\n")
            (target / f"{name}.sys").write_bytes(driver_sys(name, os_dir, arch))
            (target / f"{name}.cat").write_bytes(f"test catalog {name}\n".encode())
    return root


# --- disks that OS morphing must refuse (made from copies of a built disk) -------------------
def mark_bitlocker(raw: Path) -> None:
    """Give the partition a BitLocker boot sector signature (``-FVE-FS-`` at offset 3), as
    an encrypted volume has (its NTFS is then unreadable, as it would be)."""
    with open(raw, "r+b") as f:
        f.seek(PARTITION_OFFSET + 3)
        f.write(b"-FVE-FS-")


def mark_dynamic(raw: Path) -> None:
    """Make the disk a dynamic disk's MBR: partition 1 of type 0x42 (LDM)."""
    with open(raw, "r+b") as f:
        f.seek(446 + 4)
        f.write(bytes([0x42]))


def mark_ntfs_dirty(raw: Path) -> None:
    """Set the NTFS volume's dirty flag (``VOLUME_IS_DIRTY`` in ``$Volume``'s
    ``$VOLUME_INFORMATION``, MFT record 3), as a Windows that did not shut down cleanly
    leaves it."""
    with open(raw, "r+b") as f:
        f.seek(PARTITION_OFFSET)
        boot = f.read(512)
        sector, cluster_sectors = struct.unpack_from("<HB", boot, 0x0B)
        mft_lcn = struct.unpack_from("<Q", boot, 0x30)[0]
        per_record = struct.unpack_from("<b", boot, 0x40)[0]
        cluster = sector * cluster_sectors
        record_size = cluster * per_record if per_record > 0 else 1 << -per_record
        record = PARTITION_OFFSET + mft_lcn * cluster + 3 * record_size
        f.seek(record)
        data = f.read(record_size)
        offset = struct.unpack_from("<H", data, 0x14)[0]
        while offset < record_size:
            kind, length = struct.unpack_from("<II", data, offset)
            if kind == 0xFFFFFFFF:
                break
            if kind == 0x70:  # $VOLUME_INFORMATION, resident
                content = offset + struct.unpack_from("<H", data, offset + 0x14)[0]
                flags = struct.unpack_from("<H", data, content + 0x0A)[0]
                f.seek(record + content + 0x0A)
                f.write(struct.pack("<H", flags | 0x0001))
                return
            offset += length
    raise ValueError(f"{raw}: no $VOLUME_INFORMATION found in $Volume")


def mark_hibernated(raw: Path) -> None:
    """Write a ``hiberfil.sys`` whose header says Windows is hibernated (``HIBR``), as fast
    startup leaves it (one appliance start)."""
    g = new_handle()
    try:
        g.add_drive_opts(str(raw), format="raw", readonly=False)
        g.launch()
        g.mount("/dev/sda1", "/")
        g.write("/hiberfil.sys", b"HIBR" + b"\0" * (64 * 1024 - 4))
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
