"""The steps every Linux morpher takes; families override how (their files and tools).

Every change is reported through ``log`` (task events), so an operator sees what was done.
"""

from __future__ import annotations

import contextlib
import re
import shlex

from coriolis.osmorphing import fstab, network
from coriolis.osmorphing.guest import EventLog, Guest, MorphingFailed, appliance_device
from coriolis.osmorphing.profile import DestinationProfile

DEFAULT_GRUB = "/etc/default/grub"
CLOUD_INIT_CFG = "/etc/cloud/cloud.cfg"
CLOUD_INIT_DATASOURCE = "/etc/cloud/cloud.cfg.d/99-coriolis-datasource.cfg"
_FSTAB_SPEC = re.compile(r"^(\s*)(\S+)")


def serial_console_args(profile: DestinationProfile) -> list[str]:
    if not profile.serial_console:
        return []
    return ["console=tty0", f"console={profile.serial_console},115200n8"]


def set_shell_var(text: str, key: str, value: str) -> str:
    """Set ``KEY="value"`` in a shell-variable file (replacing it, or appending it)."""
    line = f'{key}="{value}"'
    pattern = re.compile(rf"^\s*{re.escape(key)}=.*$", re.M)
    if pattern.search(text):
        return pattern.sub(line.replace("\\", "\\\\"), text, count=1)
    return text.rstrip("\n") + f"\n{line}\n"


def get_shell_var(text: str, key: str) -> str | None:
    match = re.search(rf"^\s*{re.escape(key)}=(.*)$", text, re.M)
    return match.group(1).strip().strip("'\"") if match else None


class LinuxMorpher:
    family = "Linux"
    # Tools looked for in the guest's configuration, in this order.
    network_tools: list[type[network.NetworkTool]] = []
    min_major: dict[str, int] = {}

    def __init__(self, guest: Guest, profile: DestinationProfile, log: EventLog,
                 source_macs: list[str | None] | None = None) -> None:
        self.guest = guest
        self.profile = profile
        self.log = log
        self.source_macs = source_macs or []

    def check_supported(self) -> None:
        os_info = self.guest.os
        minimum = self.min_major.get(os_info.distro)
        if minimum is not None and os_info.major < minimum:
            raise MorphingFailed(
                f"{os_info.product} is not supported: OS morphing handles {os_info.distro} "
                f"{minimum} and later")

    def morph(self) -> None:
        self.check_supported()
        self.log(f"{self.family} morpher for {self.guest.os.describe()}, destination "
                 f"{self.profile.platform} (disks on {self.profile.disk_bus}, NICs "
                 f"{self.profile.nic_model})")
        with self.package_scripts_quiet():
            self.fix_fstab()
            self.configure_network()
            self.remove_agents()
            self.check_required_packages()
            self.configure_cloud_init()
            self.configure_boot_loader_defaults()
            self.extra_steps()
            self.rebuild_initramfs()
            self.regenerate_boot_config()

    # --- steps ------------------------------------------------------------------------------
    def fix_fstab(self) -> None:
        """Mount by file-system UUID what the guest mounts by a device name, since device
        names follow the source's disk bus (sda on SATA/SCSI, xvda on Xen, vda on virtio), and
        what it mounts by the source disk's id or path (``/dev/disk/by-id/...``,
        ``/dev/disk/by-path/...``), which no destination disk has."""
        if not self.guest.exists("/etc/fstab"):
            self.log("fstab: the guest has no /etc/fstab")
            return
        out, changed = [], 0
        for line in self.guest.read_text("/etc/fstab").splitlines():
            fields = line.split()
            if len(fields) < 2 or fields[0].startswith("#") or not fields[0].startswith("/dev/"):
                out.append(line)
                continue
            uuid = self.uuid_of(fields[0])
            if not uuid:
                if fstab.names_hardware(fields[0]):
                    self.log(f"fstab: {fields[0]} ({fields[1]}) fits no single file system of "
                             "this instance's disks; left as it is (nofail or noauto: the "
                             "guest boots without it)")
                elif appliance_device(fields[0], self.guest.disk_count()) is not None \
                        or re.match(r"^/dev/([shv]|xv)d", fields[0]):
                    self.log(f"fstab: {fields[0]} ({fields[1]}) has no file system UUID on this "
                             "instance's disks; left as it is")
                out.append(line)
                continue
            out.append(_FSTAB_SPEC.sub(rf"\g<1>UUID={uuid}", line, count=1))
            self.log(f"fstab: {fields[0]} → UUID={uuid} ({fields[1]})")
            changed += 1
        if changed:
            self.guest.write_text("/etc/fstab", "\n".join(out) + "\n")
        else:
            self.log("fstab: nothing mounted by device name, disk id or disk path")

    def uuid_of(self, spec: str) -> str:
        """The file-system UUID behind a guest device name (``/dev/sda1``, ``/dev/xvdb``,
        ``/dev/disk/by-id/...-part2``); "" when it is none of this instance's file systems."""
        device = self.guest.os.fstab_devices.get(spec) \
            or appliance_device(spec, self.guest.disk_count())
        return self.guest.filesystem_uuid(device) if device else ""

    def configure_network(self) -> None:
        if not self.profile.nics:
            self.log("network: the destination instance has no NIC")
            return
        tool = network.choose_tool(self.guest, self.log, self.network_tools,
                                   self.default_network_tool())
        self.log(f"network: the guest uses {tool.name}")
        network.configure_network(self.guest, self.log, self.profile.nics, self.source_macs,
                                  tool, tagged_vlans=self.profile.tagged_vlans)

    def remove_agents(self) -> None:
        try:
            installed = self.guest.installed_packages()
        except MorphingFailed as exc:
            self.log(f"agents: none removed: {exc}")
            return
        found = [p for p in self.profile.agents_to_remove() if p in installed]
        if not found:
            self.log("agents: no agent of another platform installed")
            return
        try:
            self.guest.run(self.remove_packages_command(found))
        except MorphingFailed as exc:
            self.log(f"agents: could not remove {', '.join(found)}: {exc}")
            return
        self.log(f"agents: removed {', '.join(found)}")

    def check_required_packages(self) -> None:
        if not self.profile.required_packages:
            return
        missing = sorted(set(self.profile.required_packages) - self.guest.installed_packages())
        if missing:
            self.log(f"packages: the destination wants {', '.join(missing)}, which the guest "
                     "does not have; install them after the first boot (the morphing "
                     "appliance has no network)")

    def configure_cloud_init(self) -> None:
        if not self.profile.cloud_init_datasources:
            return
        if not self.guest.exists(CLOUD_INIT_CFG):
            self.log("cloud-init: not installed in the guest; datasource left alone")
            return
        sources = ", ".join(self.profile.cloud_init_datasources)
        self.guest.mkdir_p(CLOUD_INIT_DATASOURCE.rsplit("/", 1)[0])
        self.guest.write_text(CLOUD_INIT_DATASOURCE, "# Written by Coriolis OS morphing\n"
                                                     f"datasource_list: [ {sources} ]\n")
        self.log(f"cloud-init: {CLOUD_INIT_DATASOURCE}: datasource_list [{sources}]")

    def configure_boot_loader_defaults(self) -> None:
        """/etc/default/grub: root by UUID, serial console on the kernel command line."""
        if not self.guest.exists(DEFAULT_GRUB):
            self.log(f"boot: the guest has no {DEFAULT_GRUB}; boot loader left alone")
            return
        text = original = self.guest.read_text(DEFAULT_GRUB)
        if (get_shell_var(text, "GRUB_DISABLE_LINUX_UUID") or "").lower() == "true":
            text = set_shell_var(text, "GRUB_DISABLE_LINUX_UUID", "false")
            self.log("boot: GRUB_DISABLE_LINUX_UUID=true → false (root= by UUID)")
        consoles = serial_console_args(self.profile)
        ours = {a.split("=", 1)[1].split(",")[0] for a in consoles}
        for key in ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"):
            if key == "GRUB_CMDLINE_LINUX_DEFAULT" and get_shell_var(text, key) is None:
                continue
            cmdline = (get_shell_var(text, key) or "").split()
            # root= comes from grub (by UUID); the serial console goes last, so that it is
            # /dev/console.
            new = [self._by_uuid(a) for a in cmdline if not a.startswith("root=/dev/") and not (
                a.startswith("console=") and a.split("=", 1)[1].split(",")[0] in ours)]
            if key == "GRUB_CMDLINE_LINUX":
                new += consoles
            if new != cmdline:
                text = set_shell_var(text, key, " ".join(new))
                self.log(f"boot: {key} \"{' '.join(cmdline)}\" → \"{' '.join(new)}\"")
        if self.profile.serial_console and get_shell_var(text, "GRUB_TERMINAL") is None:
            text = set_shell_var(text, "GRUB_TERMINAL", "console serial")
            self.log('boot: GRUB_TERMINAL="console serial"')
        if text != original:
            self.guest.write_text(DEFAULT_GRUB, text)

    def _by_uuid(self, arg: str) -> str:
        """``resume=/dev/sda1`` → ``resume=UUID=...`` (other arguments as they are)."""
        key, _, value = arg.partition("=")
        if key != "resume" or not value.startswith("/dev/"):
            return arg
        uuid = self.uuid_of(value)
        return f"resume=UUID={uuid}" if uuid else arg

    def extra_steps(self) -> None:
        """Family-specific steps before the initramfs and boot configuration are rebuilt."""

    # --- family specifics -------------------------------------------------------------------
    def default_network_tool(self) -> type[network.NetworkTool]:
        """The tool to configure when the guest configures no interface at all."""
        raise NotImplementedError

    def remove_packages_command(self, packages: list[str]) -> str:
        raise NotImplementedError

    def rebuild_initramfs(self) -> None:
        raise NotImplementedError

    def regenerate_boot_config(self) -> None:
        raise NotImplementedError

    def package_scripts_quiet(self) -> contextlib.AbstractContextManager[None]:
        """Keeps package scripts from starting or stopping services while packages are
        removed in the guest."""
        return contextlib.nullcontext()


def quote_all(items: list[str]) -> str:
    return " ".join(shlex.quote(i) for i in items)
