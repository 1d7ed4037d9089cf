"""The Windows morpher: boot drivers for the destination's disk bus, virtio drivers, the
source platform's tools, first-boot actions, static IPs; every change an event.

Offline registry changes follow what Windows' own setup writes for a boot-start storage
miniport (a ``Services\\NAME`` key: ``Type`` 1 kernel driver, ``Start`` 0 boot, ``ErrorControl``
1, ``Group`` "SCSI miniport", ``ImagePath`` ``system32\\drivers\\NAME.sys``) and a
``Control\\CriticalDeviceDatabase\\<hardware id>`` key (``Service``, ``ClassGUID``) for each
PCI id of its devices, in every control set, so that the disk controller gets its driver at the
first boot before Plug and Play runs (INF AddService directive:
https://learn.microsoft.com/windows-hardware/drivers/install/inf-addservice-directive).
Every driver found is also copied to ``C:\\Windows\\Drivers\\VirtIO\\NAME`` and that folder added
to ``DevicePath`` (SOFTWARE ``Microsoft\\Windows\\CurrentVersion``), where Plug and Play looks for
drivers of new devices; the first boot also runs ``pnputil /add-driver ... /install`` on them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coriolis.osmorphing.guest import EventLog, MorphingFailed
from coriolis.osmorphing.profile import DestinationProfile
from coriolis.osmorphing.windows import firstboot, virtio
from coriolis.osmorphing.windows.inspect import WindowsInfo, inspect_windows
from coriolis.osmorphing.windows.registry import Hive, open_hive

SCSI_ADAPTER_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
NET_CLASS = "{4D36E972-E325-11CE-BFC1-08002BE10318}"
DRIVER_STORE = "/Windows/Drivers/VirtIO"
CLOUDBASE_INIT_SETTING = "CORIOLIS_CLOUDBASE_INIT_MSI"
# Installed programs (Uninstall DisplayName, a regular expression) of the platforms guests come
# from, by platform (the keys of profile.FOREIGN_AGENTS).
FOREIGN_TOOLS: dict[str, str] = {
    "vmware": r"^VMware Tools",
    "hyperv": r"^(Hyper-V Integration|Microsoft Hyper-V Integration)",
    "xen": r"^(Citrix XenServer|XenServer|Citrix Hypervisor|XCP-ng).*(Tools|PV|Agent)|^Xen PV",
    "aws": r"^(AWS PV Drivers|Amazon SSM Agent|EC2ConfigService|Amazon EC2Launch|"
           r"AWS NVMe|Amazon Elastic Network Adapter)",
    "azure": r"^Windows Azure (VM|Guest) Agent",
    "gce": r"^Google (Compute Engine|Cloud) .*(Tools|Agent)",
}


def _windows_path(path: str) -> str:
    return "C:" + path.replace("/", "\\")


class WindowsMorpher:
    family = "Windows"

    def __init__(self, guest: Any, profile: DestinationProfile, log: EventLog,
                 source_macs: list[str | None] | None = None,
                 user_scripts: Sequence[tuple[str, str]] = ()) -> None:
        self.guest, self.g = guest, guest.g
        self.profile = profile
        self.log = log
        self.source_macs = source_macs or []
        self.user_scripts = list(user_scripts)
        self.firstboot = firstboot.FirstbootActions()
        self.info: WindowsInfo | None = None

    def morph(self) -> None:
        info = self.info = inspect_windows(self.g, self.guest.os.root)
        self.log(f"Windows morpher for {info.describe()}, control sets "
                 f"{', '.join(info.control_sets)}; destination {self.profile.platform} (disks "
                 f"on {self.profile.disk_bus}, NICs {self.profile.nic_model})")
        # Everything that can refuse is decided before the first change.
        needed = virtio.needed_drivers(self.profile.disk_bus, self.profile.nic_model)
        setting = virtio.virtio_win_root()
        with virtio.opened(setting if needed else None, info) as root:
            self._morph(info, needed, setting, root)

    def _morph(self, info: WindowsInfo, needed: list[str], setting: Path | None,
               root: Path | None) -> None:
        drivers, others = virtio.resolve(info, needed, root, setting)
        cloudbase = self._cloudbase_init_msi()
        self.guest.make_writable()
        if needed:
            self.log(f"virtio-win {setting}: found {', '.join(d.name for d in drivers)} "
                     f"(needed) for {info.virtio_os_dir()}/{info.virtio_arch()}"
                     + (f"; also {', '.join(d.name for d in others)}" if others else ""))
        else:
            self.log(f"drivers: disks on {self.profile.disk_bus} and NICs "
                     f"{self.profile.nic_model} use Windows' own drivers; no virtio driver "
                     "needed")
        storage = [d for d in drivers if d.name in ("viostor", "vioscsi")]
        self.copy_drivers(drivers + others, storage)
        with open_hive(self.g, info.system_hive, write=True) as system:
            for driver in storage:
                self.boot_start(system, driver.name)
            self.inbox_storage(system)
            firstboot.register_service(system, info.control_sets, self.log)
            static = self.static_ips(system) if self.profile.keep_static_ips else []
        with open_hive(self.g, info.software_hive, write=True) as software:
            self.add_device_path(software, [d.name for d in drivers + others])
        if drivers or others:
            self.firstboot.add("install-virtio-drivers", self._pnputil_script(),
                               "installs the copied virtio drivers (pnputil)")
        self.remove_tools()
        self.cloudbase_init(cloudbase)
        if static:
            self.firstboot.add("static-ips", _static_ip_script(static),
                               "sets the source's static IPs on the new NICs by MAC",
                               powershell=True)
        for name, text in self.user_scripts:
            ps1 = text.lstrip().lower().startswith("#ps1")
            self.firstboot.add(re.sub(r"[^A-Za-z0-9]+", "-", f"user {name}").strip("-"),
                               text, f"user script ({name})", powershell=ps1)
        self.firstboot.install(self.g, self._resolve_new, self.log)

    def _resolve_new(self, path: str) -> str:
        """The guest's spelling of ``path``, which may not exist yet: each existing folder on
        the way as the guest spells it, the rest as given."""
        resolved = ""
        for part in [p for p in path.split("/") if p]:
            here = resolved or "/"
            names = self.g.ls(here) if self.g.is_dir(here) else []
            resolved += "/" + next((n for n in names if n.lower() == part.lower()), part)
        return resolved or "/"

    # --- drivers ------------------------------------------------------------------------------
    def copy_drivers(self, drivers: list[virtio.Driver], storage: list[virtio.Driver]) -> None:
        assert self.info
        for driver in drivers:
            target = self._resolve_new(f"{DRIVER_STORE}/{driver.name}")
            self.g.mkdir_p(target)
            for file in driver.files():
                self.g.upload(str(file), f"{target}/{file.name}")
            self.log(f"drivers: {driver.name}: {', '.join(f.name for f in driver.files())} "
                     f"→ {_windows_path(DRIVER_STORE)}\\{driver.name}")
        for driver in storage:
            sys_file = next(f for f in driver.files() if f.name.lower() == f"{driver.name}.sys")
            folder = self._resolve_new(f"{self.info.systemroot}/System32/drivers")
            target = f"{folder}/{driver.name}.sys"
            self.g.upload(str(sys_file), target)
            self.log(f"drivers: {sys_file.name} → C:\\Windows\\System32\\drivers\\"
                     f"{driver.name}.sys (boot-start)")

    def boot_start(self, system: Hive, name: str) -> None:
        """The storage driver ``name`` starts at boot and drives its PCI devices, in every
        control set."""
        assert self.info
        _, what, hardware_ids = virtio.DRIVERS[name]
        for cs in self.info.control_sets:
            key = f"{cs}\\Services\\{name}"
            system.set_dword(key, "Type", 1)
            system.set_dword(key, "Start", 0)
            system.set_dword(key, "ErrorControl", 1)
            system.set_sz(key, "Group", "SCSI miniport")
            system.set_sz(key, "ImagePath", f"system32\\drivers\\{name}.sys", expand=True)
            for hardware_id in hardware_ids:
                device = f"{cs}\\Control\\CriticalDeviceDatabase\\" + \
                    hardware_id.lower().replace("\\", "#")
                system.set_sz(device, "Service", name)
                system.set_sz(device, "ClassGUID", SCSI_ADAPTER_CLASS)
        self.log(f"boot: {name} ({what}) is a boot-start driver (Services\\{name} Start=0, "
                 f"CriticalDeviceDatabase for {', '.join(hardware_ids)}) in "
                 f"{', '.join(self.info.control_sets)}")

    def inbox_storage(self, system: Hive) -> None:
        """SATA and IDE disks: Windows' own controller drivers start at boot."""
        assert self.info
        for name in virtio.INBOX_STORAGE.get(self.profile.disk_bus, ()):
            present = [cs for cs in self.info.control_sets
                       if system.node(f"{cs}\\Services\\{name}") is not None]
            for cs in present:
                system.set_dword(f"{cs}\\Services\\{name}", "Start", 0)
            if present:
                self.log(f"boot: Windows' {name} driver starts at boot in {', '.join(present)}")
            else:
                self.log(f"boot: Windows' {name} driver is not in this guest's registry; the "
                         f"{self.profile.disk_bus} disks may not be found at boot")

    def add_device_path(self, software: Hive, names: list[str]) -> None:
        if not names:
            return
        key = "Microsoft\\Windows\\CurrentVersion"
        current = software.get(key, "DevicePath") or "%SystemRoot%\\inf"
        entries = [e for e in current.split(";") if e]
        new = [f"%SystemRoot%\\Drivers\\VirtIO\\{n}" for n in names]
        value = ";".join(entries + [e for e in new if e.lower() not in
                                    {x.lower() for x in entries}])
        software.set_sz(key, "DevicePath", value, expand=True)
        self.log(f"drivers: DevicePath = {value}")

    @staticmethod
    def _pnputil_script() -> str:
        """pnputil's Windows 10/2016 syntax, else the older one (Windows 7 to 8.1)."""
        store = "%SystemRoot%\\Drivers\\VirtIO"
        return (f'pnputil.exe /add-driver "{store}\\*.inf" /subdirs /install || '
                f'for /r "{store}" %%I in (*.inf) do pnputil.exe -i -a "%%I"\r\nexit /b 0\r\n')

    # --- the source platform's tools ---------------------------------------------------------
    def remove_tools(self) -> None:
        """Installed tools of other platforms are uninstalled at the first boot: their
        uninstallers run inside Windows (MSI custom actions, driver removal)."""
        assert self.info
        keep = set(self.profile.keep_agents_of)
        apps = self.g.inspect_list_applications2(self.guest.os.root)
        found = False
        for platform, pattern in FOREIGN_TOOLS.items():
            if platform in keep:
                continue
            for app in apps:
                display = app.get("app2_display_name") or app["app2_name"]
                if not re.search(pattern, display, re.I):
                    continue
                found = True
                command = self._uninstall_command(app)
                if command is None:
                    self.log(f"agents: {display} ({platform}) has no uninstall command in the "
                             "registry; remove it by hand after the first boot")
                    continue
                self.firstboot.add(f"remove-{platform}", command + "\r\nexit /b 0\r\n",
                                   f"uninstalls {display} {app.get('app2_version', '')}"
                                   .strip())
                self.log(f"agents: {display} ({platform}) will be uninstalled at the first "
                         f"boot ({command}): its uninstaller runs only inside Windows")
        if "hyperv" not in keep and (self.info.major, self.info.minor) >= (6, 2):
            self.log("agents: Hyper-V integration services are part of "
                     f"{self.info.product}; nothing to remove (they stay idle elsewhere)")
        if not found:
            self.log("agents: no tools of another platform installed")

    @staticmethod
    def _uninstall_command(app: dict[str, Any]) -> str | None:
        code = app["app2_name"]
        if re.fullmatch(r"\{[0-9A-Fa-f-]{36}\}", code):
            return f"msiexec.exe /x {code} /qn /norestart"
        uninstall = app.get("app2_uninstall", "")
        return uninstall or None

    # --- first-boot agents --------------------------------------------------------------------
    def _cloudbase_init_msi(self) -> str | None:
        value = os.environ.get(CLOUDBASE_INIT_SETTING, "").strip()
        if value and not os.path.isfile(value):
            raise MorphingFailed(f"{CLOUDBASE_INIT_SETTING}={value} is not a file; it must be "
                                 "the cloudbase-init installer (CloudbaseInitSetup_x64.msi)")
        return value or None

    def cloudbase_init(self, msi: str | None) -> None:
        if not self.profile.cloud_init_datasources:
            return
        if msi is None:
            self.log(f"cloudbase-init: not given ({CLOUDBASE_INIT_SETTING} is not set); the "
                     "destination's metadata will not configure the guest")
            return
        target = self._resolve_new(f"{firstboot.FOLDER}/{os.path.basename(msi)}")
        self.g.mkdir_p(target.rsplit("/", 1)[0])
        self.g.upload(msi, target)
        name = os.path.basename(msi)
        self.firstboot.add(
            "cloudbase-init",
            f'msiexec.exe /i "{firstboot.WINDOWS_FOLDER}\\{name}" /qn /norestart '
            f'/l*v "{firstboot.WINDOWS_FOLDER}\\cloudbase-init-install.log" '
            "LOGGINGSERIALPORTNAME=COM1 RUN_SERVICE_AS_LOCAL_SYSTEM=1\r\nexit /b 0\r\n",
            f"installs cloudbase-init from {name}")
        self.log(f"cloudbase-init: {name} copied; installed at the first boot")

    # --- static IPs ---------------------------------------------------------------------------
    def static_ips(self, system: Hive) -> list[dict[str, Any]]:
        """The source's static IPv4 settings paired with the destination NICs: the source's
        physical adapters (``Control\\Class\\{net}``, in their install order) are matched with
        the source NICs (in the instance's order) when the counts agree."""
        assert self.info
        cs = self.info.current_control_set
        adapters = []
        class_key = f"{cs}\\Control\\Class\\{NET_CLASS}"
        for sub in sorted(system.subkeys(class_key)):
            guid = system.get(f"{class_key}\\{sub}", "NetCfgInstanceId")
            chars = system.get(f"{class_key}\\{sub}", "Characteristics") or 0
            if guid and chars & 0x4:  # NCF_PHYSICAL
                adapters.append(guid)
        pairs = [(s, d.mac) for s, d in zip(self.source_macs, self.profile.nics, strict=False)
                 if s and d.mac]
        if len(adapters) != len(self.source_macs) or len(pairs) != len(adapters):
            self.log(f"network: static IPs not kept: the guest has {len(adapters)} network "
                     f"adapter(s) and the source instance {len(self.source_macs)} NIC(s) with "
                     f"{len(pairs)} destination MAC(s); they cannot be paired")
            return []
        found = []
        for guid, (old, new) in zip(adapters, pairs, strict=True):
            key = f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces\\{guid}"
            if system.get(key, "EnableDHCP") != 0 or not system.get(key, "IPAddress"):
                continue
            addresses = system.get(key, "IPAddress")
            if not all(_is_ip(a) for a in [*addresses, *(system.get(key, "DefaultGateway")
                                                         or [])]):
                self.log(f"network: adapter {guid} has addresses that are not IPs "
                         f"({addresses}); not kept")
                continue
            entry = {"old_mac": old, "new_mac": new, "addresses": addresses,
                     "masks": system.get(key, "SubnetMask") or [],
                     "gateways": system.get(key, "DefaultGateway") or [],
                     "dns": [s for s in re.split(r"[ ,]", system.get(key, "NameServer") or "")
                             if s]}
            found.append(entry)
            self.log(f"network: {old} (adapter {guid}) static {', '.join(entry['addresses'])} "
                     f"→ the NIC with MAC {new} at the first boot")
        if not found:
            self.log("network: the source's adapters use DHCP; nothing to keep")
        return found


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _prefix(mask: str) -> int:
    return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen


def _static_ip_script(entries: list[dict[str, Any]]) -> str:
    lines = ["# Written by Coriolis OS morphing: the source's static IPs, by new MAC.",
             "$ErrorActionPreference = 'Continue'"]
    for e in entries:
        mac = e["new_mac"].replace(":", "-").upper()
        lines.append(f"# source NIC {e['old_mac']}")
        lines.append(f"$nic = Get-NetAdapter | Where-Object MacAddress -eq '{mac}'")
        lines.append("if ($nic) {")
        lines.append("  Set-NetIPInterface -InterfaceIndex $nic.ifIndex -Dhcp Disabled")
        for i, address in enumerate(e["addresses"]):
            mask = e["masks"][i] if i < len(e["masks"]) else "255.255.255.0"
            gateway = e["gateways"][0] if i == 0 and e["gateways"] else ""
            lines.append(f"  New-NetIPAddress -InterfaceIndex $nic.ifIndex -IPAddress "
                         f"{address} -PrefixLength {_prefix(mask)}"
                         + (f" -DefaultGateway {gateway}" if gateway else ""))
        if e["dns"]:
            servers = ",".join(f"'{s}'" for s in e["dns"])
            lines.append(f"  Set-DnsClientServerAddress -InterfaceIndex $nic.ifIndex "
                         f"-ServerAddresses {servers}")
        lines.append(f"}} else {{ Write-Output 'no NIC with MAC {mac}' }}")
    return "\n".join(lines) + "\n"
