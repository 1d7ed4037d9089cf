"""Debian and Ubuntu: initramfs-tools, update-grub, dpkg; ifupdown, netplan or NetworkManager."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from coriolis.osmorphing import network
from coriolis.osmorphing.base import LinuxMorpher, quote_all

INITRAMFS_MODULES = "/etc/initramfs-tools/modules"
RESUME = "/etc/initramfs-tools/conf.d/resume"
POLICY_RC = "/usr/sbin/policy-rc.d"


class DebianMorpher(LinuxMorpher):
    family = "Debian"
    network_tools = [network.Netplan, network.NetworkManagerKeyfile, network.Ifupdown]
    min_major = {"debian": 9, "ubuntu": 16}

    def default_network_tool(self) -> type[network.NetworkTool]:
        installed = self.guest.installed_packages()
        if "netplan.io" in installed:
            return network.Netplan
        if "ifupdown" not in installed and "network-manager" in installed:
            return network.NetworkManagerKeyfile
        return network.Ifupdown

    @contextlib.contextmanager
    def package_scripts_quiet(self) -> Iterator[None]:
        if self.guest.exists(POLICY_RC):
            yield
            return
        self.guest.write_text(POLICY_RC, "#!/bin/sh\nexit 101\n")
        self.guest.run(f"chmod 755 {POLICY_RC}")
        try:
            yield
        finally:
            self.guest.remove(POLICY_RC)

    def remove_packages_command(self, packages: list[str]) -> str:
        return f"DEBIAN_FRONTEND=noninteractive dpkg --purge {quote_all(packages)} 2>&1"

    def extra_steps(self) -> None:
        """The hibernation resume device, when the guest names it by device."""
        if not self.guest.exists(RESUME):
            return
        text = self.guest.read_text(RESUME)
        for line in text.splitlines():
            if line.startswith("RESUME=/dev/"):
                uuid = self.uuid_of(line.split("=", 1)[1].strip())
                if uuid:
                    self.guest.write_text(RESUME, text.replace(line, f"RESUME=UUID={uuid}"))
                    self.log(f"initramfs: resume {line.split('=', 1)[1]} → UUID={uuid}")

    def rebuild_initramfs(self) -> None:
        modules = self.profile.modules
        if modules:
            text = self.guest.read_text(INITRAMFS_MODULES) \
                if self.guest.exists(INITRAMFS_MODULES) else ""
            present = {line.split()[0] for line in text.splitlines()
                       if line.strip() and not line.lstrip().startswith("#")}
            missing = [m for m in modules if m not in present]
            if missing:
                self.guest.write_text(INITRAMFS_MODULES, text.rstrip("\n") + "\n"
                                      + "\n".join(missing) + "\n")
                self.log(f"initramfs: added {' '.join(missing)} to {INITRAMFS_MODULES}")
        output = self.guest.run("update-initramfs -u -k all 2>&1")
        images = [line.split()[-1] for line in output.splitlines() if "Generating" in line]
        self.log(f"initramfs: update-initramfs regenerated {', '.join(images) or 'the images'}")

    def regenerate_boot_config(self) -> None:
        if not self.guest.exists("/usr/sbin/update-grub"):
            self.log("boot: the guest has no update-grub; boot configuration left alone")
            return
        self.guest.run("update-grub 2>&1")
        self.log("boot: update-grub regenerated /boot/grub/grub.cfg")
