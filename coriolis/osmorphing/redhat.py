"""RHEL family (RHEL, CentOS, Rocky, Alma, Oracle Linux, Fedora): dracut, grub2-mkconfig or
grubby, rpm; ifcfg or NetworkManager keyfiles; SELinux relabelling on the next boot."""

from __future__ import annotations

import re

from coriolis.osmorphing import network
from coriolis.osmorphing.base import LinuxMorpher, quote_all, serial_console_args
from coriolis.osmorphing.guest import MorphingFailed

DRACUT_CONF = "/etc/dracut.conf.d/90-coriolis-virtio.conf"
SELINUX_CONFIG = "/etc/selinux/config"
BIOS_GRUB2 = "/boot/grub2/grub.cfg"
EFI_DIR = "/boot/efi/EFI"
# The folders of the EFI system partition that EL distributions install grub into.
EL_EFI_VENDORS = ("centos", "redhat", "rocky", "almalinux", "ol", "fedora")
_ROOT_BY_DEVICE = re.compile(
    r"\broot=(/dev/(?:(?:[shv]|xv)d[a-z]+\d*|nvme\d+n\d+(?:p\d+)?|disk/by-(?:id|path)/\S+))")


class DracutMorpher(LinuxMorpher):
    """What dracut-based families share."""

    efi_vendors: tuple[str, ...] = ()

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

    def grub_config_files(self) -> list[str]:
        """The grub2 configurations the guest boots from: each ``EFI/<vendor>/grub.cfg`` on
        the EFI system partition that is a whole configuration (UEFI guests up to EL 8); for a
        wrapper that only loads ``/boot/grub2/grub.cfg`` (EL 9, Fedora 34 and later, SUSE),
        that one; without either, ``/boot/grub2/grub.cfg`` (BIOS). Source: the RHEL 7, 8 and
        9 "Managing, monitoring and updating the kernel" guides (grub2-mkconfig -o paths)."""
        found: list[str] = []
        for vendor in self.efi_vendors:
            config = f"{EFI_DIR}/{vendor}/grub.cfg"
            if self.guest.exists(config):
                wrapper = _is_wrapper(self.guest.read_text(config))
                found.append(BIOS_GRUB2 if wrapper else config)
                if not wrapper:
                    self.log(f"boot: the guest boots by UEFI from {config}: start the "
                             "destination instance with UEFI firmware")
        if not found and self.guest.exists(BIOS_GRUB2):
            found.append(BIOS_GRUB2)
        return list(dict.fromkeys(found))

    def regenerate_boot_config(self) -> None:
        configs = self.grub_config_files()
        if not configs:
            self.log("boot: no grub2 configuration found (neither /boot/grub2/grub.cfg nor "
                     f"{EFI_DIR}/<{'|'.join(self.efi_vendors) or 'vendor'}>/grub.cfg); boot "
                     "configuration left alone")
            return
        for config in configs:
            self.guest.run(f"grub2-mkconfig -o {config} 2>&1")
            self.log(f"boot: grub2-mkconfig regenerated {config}")
        for config in configs:
            self.root_by_uuid(config)

    def root_by_uuid(self, path: str) -> None:
        """``root=`` of a disk device name, id or path (which grub2-mkconfig keeps when the
        guest disables UUIDs, and an older configuration has) → ``root=UUID=``."""
        if not self.guest.exists(path):
            return
        text = original = self.guest.read_text(path)
        for name in sorted(set(_ROOT_BY_DEVICE.findall(text))):
            uuid = self.uuid_of(name)
            if uuid:
                text = re.sub(rf"\broot={re.escape(name)}(?=\s|$)", f"root=UUID={uuid}", text,
                              flags=re.M)
                self.log(f"boot: {path}: root={name} → root=UUID={uuid}")
        if text != original and path.endswith("/grubenv"):
            # A grub environment block keeps its size (1024 bytes): the '#' padding gives way.
            grown = len(text) - len(original)
            if grown > 0 and not text.endswith("#" * grown):
                self.log(f"boot: {path} has no room for root=UUID=; left as it was")
                return
            text = text[:len(original)] if grown > 0 else text + "#" * -grown
        if text != original:
            self.guest.write_text(path, text)


def _is_wrapper(text: str) -> bool:
    """A grub.cfg that only finds /boot and loads the configuration there."""
    return "configfile" in text and "menuentry" not in text and "blscfg" not in text


class RedHatMorpher(DracutMorpher):
    family = "RHEL"
    efi_vendors = EL_EFI_VENDORS
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
        # BLS entries carry root= themselves (EL 9), or take it from grubenv (EL 8).
        entries = "/boot/loader/entries"
        bls = [f"{entries}/{n}" for n in self.guest.listdir(entries) if n.endswith(".conf")] \
            if self.guest.is_dir(entries) else []
        grubenvs = ["/boot/grub2/grubenv"] + [f"{EFI_DIR}/{v}/grubenv" for v in self.efi_vendors]
        for path in bls + grubenvs:
            self.root_by_uuid(path)
