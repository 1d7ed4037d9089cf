"""RHEL family (RHEL, CentOS, Rocky, Alma, Oracle Linux, Fedora): dracut, grub2-mkconfig or
grubby, rpm; ifcfg or NetworkManager keyfiles; SELinux relabelling on the next boot."""

from __future__ import annotations

from coriolis.osmorphing import network
from coriolis.osmorphing.base import LinuxMorpher, quote_all, serial_console_args
from coriolis.osmorphing.guest import MorphingFailed

DRACUT_CONF = "/etc/dracut.conf.d/90-coriolis-virtio.conf"
SELINUX_CONFIG = "/etc/selinux/config"
GRUB2_CONFIGS = ("/boot/grub2/grub.cfg", "/boot/efi/EFI/redhat/grub.cfg")


class DracutMorpher(LinuxMorpher):
    """What dracut-based families share."""

    def remove_packages_command(self, packages: list[str]) -> str:
        return f"rpm -e {quote_all(packages)} 2>&1"

    def rebuild_initramfs(self) -> None:
        modules = self.profile.modules
        if modules:
            self.guest.mkdir_p("/etc/dracut.conf.d")
            self.guest.write_text(DRACUT_CONF, "# Written by Coriolis OS morphing\n"
                                               f'add_drivers+=" {" ".join(modules)} "\n')
            self.log(f"initramfs: {DRACUT_CONF}: add_drivers {' '.join(modules)}")
        self.guest.run("dracut -f --regenerate-all 2>&1")
        self.log("initramfs: dracut regenerated the images of every installed kernel")

    def grub_config_file(self) -> str | None:
        return next((f for f in GRUB2_CONFIGS if self.guest.exists(f)), None)

    def regenerate_boot_config(self) -> None:
        config = self.grub_config_file()
        if config is None:
            self.log("boot: no grub2 configuration found; boot configuration left alone")
            return
        self.guest.run(f"grub2-mkconfig -o {config} 2>&1")
        self.log(f"boot: grub2-mkconfig regenerated {config}")


class RedHatMorpher(DracutMorpher):
    family = "RHEL"
    network_tools = [network.NetworkManagerKeyfile, network.Ifcfg]
    min_major = {"rhel": 7, "centos": 7, "rocky": 8, "almalinux": 8, "oraclelinux": 7}

    def default_network_tool(self) -> type[network.NetworkTool]:
        # RHEL 9 dropped ifcfg files in favour of keyfiles.
        return network.NetworkManagerKeyfile if self.guest.os.major >= 9 else network.Ifcfg

    def extra_steps(self) -> None:
        if not self.guest.exists(SELINUX_CONFIG):
            return
        text = self.guest.read_text(SELINUX_CONFIG)
        mode = next((line.split("=", 1)[1].strip() for line in text.splitlines()
                     if line.startswith("SELINUX=")), "disabled")
        if mode in ("enforcing", "permissive"):
            self.guest.write_text("/.autorelabel", "")
            self.log(f"selinux: {mode}; the file systems are relabelled on the next boot "
                     "(/.autorelabel)")

    def regenerate_boot_config(self) -> None:
        """RHEL 8 and later keep kernel arguments in BLS entries: grubby sets them there."""
        if self.guest.exists("/usr/sbin/grubby") and self.guest.is_dir("/boot/loader/entries"):
            args = serial_console_args(self.profile)
            if args:
                self.guest.run(f"grubby --update-kernel=ALL --args={quote_all([' '.join(args)])}"
                               " 2>&1")
                self.log(f"boot: grubby added {' '.join(args)} to every kernel entry")
        try:
            super().regenerate_boot_config()
        except MorphingFailed:
            if not self.guest.is_dir("/boot/loader/entries"):
                raise
            self.log("boot: grub2-mkconfig failed; the BLS entries carry the arguments")
