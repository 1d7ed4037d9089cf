"""A real Debian guest disk, configured like a VM of another platform, for tests and demos.

Built from Debian's packages with debootstrap, then put on a partitioned disk and made
bootable (grub in the MBR) inside a libguestfs appliance, so that no loop device is needed.
It looks like a VMware guest: root by device name (``/dev/sda1``, and ``root=/dev/sda1`` on
the kernel command line), an initramfs that holds only the SATA/SCSI drivers, a static IP on
``ens192``, open-vm-tools installed. A probe service reports over the serial console what a
test needs to know once the guest reached multi-user, then powers the guest off.

Images are cached (``CORIOLIS_GUEST_CACHE``, default ``~/.cache/coriolis/guests``) under a
name that changes whenever what goes into them does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from coriolis import cache_lock
from coriolis.osmorphing.appliance import new_handle, run_script
from coriolis.osmorphing.guest import MorphingFailed

SUITE = "bookworm"
MIRROR = os.environ.get("CORIOLIS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("linux-image-amd64", "grub-pc", "systemd-sysv", "udev", "ifupdown",
            "isc-dhcp-client", "iproute2", "open-vm-tools", "initramfs-tools", "kmod")
DISK_SIZE = 3 * 1024**3
SOURCE_NIC = "ens192"
PROBE_BEGIN, PROBE_END = "CORIOLIS-PROBE-BEGIN", "CORIOLIS-PROBE-END"

PROBE_SCRIPT = f"""#!/bin/sh
exec > /dev/ttyS0 2>&1
echo {PROBE_BEGIN}
echo "root-source: $(findmnt -no SOURCE /)"
echo "cmdline: $(cat /proc/cmdline)"
echo "fstab-root: $(awk '$2 == "/" {{print $1}}' /etc/fstab)"
echo "multi-user: $(systemctl is-active multi-user.target)"
for nic in $(ls /sys/class/net); do
    [ "$nic" = lo ] && continue
    echo "nic: $nic $(cat /sys/class/net/$nic/address) \\
$(ip -4 -o addr show dev $nic scope global | awk '{{print $4}}')"
done
echo "open-vm-tools: $(dpkg-query -W -f='${{Status}}' open-vm-tools 2>/dev/null || echo absent)"
echo {PROBE_END}
systemctl poweroff
"""

PROBE_UNIT = """[Unit]
Description=Report the boot state on the serial console (Coriolis tests)
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/coriolis-probe

[Install]
WantedBy=multi-user.target
"""

FILES = {
    "etc/hostname": "source-vm\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 source-vm\n",
    "etc/fstab": "# <file system> <mount point> <type> <options> <dump> <pass>\n"
                 "/dev/sda1 / ext4 errors=remount-ro 0 1\n",
    "etc/network/interfaces": "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet "
                              f"loopback\n\nauto {SOURCE_NIC}\niface {SOURCE_NIC} inet static\n"
                              "    address 192.168.50.10/24\n    gateway 192.168.50.1\n",
    "etc/default/grub": 'GRUB_DEFAULT=0\nGRUB_TIMEOUT=0\nGRUB_DISTRIBUTOR="Debian"\n'
                        'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
                        'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8"\n'
                        "GRUB_DISABLE_LINUX_UUID=true\nGRUB_DISABLE_OS_PROBER=true\n",
    "etc/initramfs-tools/modules": "ahci\nsd_mod\nata_piix\next4\n",
    "usr/local/sbin/coriolis-probe": PROBE_SCRIPT,
    "etc/systemd/system/coriolis-probe.service": PROBE_UNIT,
}
LINKS = {
    "etc/systemd/system/multi-user.target.wants/coriolis-probe.service":
        "/etc/systemd/system/coriolis-probe.service",
    "etc/systemd/system/apt-daily.timer": "/dev/null",
    "etc/systemd/system/apt-daily-upgrade.timer": "/dev/null",
    "etc/systemd/system/e2scrub_reap.service": "/dev/null",
}
PRUNE = ("var/cache/apt/archives", "usr/share/doc", "usr/share/man", "usr/share/locale",
         "var/lib/apt/lists")


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "coriolis" / "guests"
    return Path(os.environ.get("CORIOLIS_GUEST_CACHE", default))


# Bump when the build steps (_make_disk) change; the other inputs are hashed as they are.
BUILD_STEPS = 1


def image_path() -> Path:
    """The cached image's path, named after everything that goes into it."""
    inputs = json.dumps([BUILD_STEPS, SUITE, PACKAGES, DISK_SIZE, FILES, LINKS, PRUNE])
    digest = hashlib.sha256(inputs.encode()).hexdigest()[:12]
    return cache_dir() / f"debian12-vmware-like-{digest}.qcow2"


def _configure_tree(root: Path) -> None:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "usr/local/sbin/coriolis-probe").chmod(0o755)
    conf = root / "etc/initramfs-tools/initramfs.conf"
    conf.write_text(conf.read_text().replace("MODULES=most", "MODULES=list"))
    for rel, target in LINKS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.symlink_to(target)
    for rel in PRUNE:
        shutil.rmtree(root / rel, ignore_errors=True)
        (root / rel).mkdir(parents=True, exist_ok=True)


def _make_disk(tree_tar: Path, raw: Path) -> None:
    g = new_handle()
    try:
        g.disk_create(str(raw), "raw", DISK_SIZE)
        g.add_drive_opts(str(raw), format="raw", readonly=False)
        g.launch()
        g.part_disk("/dev/sda", "mbr")
        g.part_set_bootable("/dev/sda", 1, True)
        g.mkfs("ext4", "/dev/sda1")
        g.mount("/dev/sda1", "/")
        g.tar_in(str(tree_tar), "/")
        # In the guest's own chroot, as a VM installer would: the appliance calls this disk
        # /dev/sda, as the source platform's SATA controller does.
        for step in ("grub-install --target=i386-pc /dev/sda", "update-initramfs -u -k all",
                     "update-grub"):
            run_script(g, step)
        g.sync()
        g.umount_all()
        g.shutdown()
    finally:
        g.close()


def _make_disk_with_one_retry(tree_tar: Path, raw: Path) -> None:
    """Once in many builds, `grub-install` failed in the appliance with no output (before its
    output was kept); the next build passed. A second try, saying why, costs a minute and
    keeps a test run from failing on it."""
    try:
        _make_disk(tree_tar, raw)
    except MorphingFailed as exc:
        print(f"building the guest disk failed, trying once more: {exc}", file=sys.stderr)
        raw.unlink(missing_ok=True)
        _make_disk(tree_tar, raw)


def build(target: Path | None = None, log: bool = True) -> Path:
    """Build the image (about 3 minutes here) unless the cache has it; returns its path."""
    target = target or image_path()
    if target.exists():
        return target
    if os.geteuid() != 0:
        raise RuntimeError("building the Debian guest image needs root (debootstrap)")
    with cache_lock.building(target):
        if target.exists():
            return target
        _build(target, log)
    return target


def _build(target: Path, log: bool) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        root = Path(tmp) / "root"
        out = None if log else subprocess.DEVNULL
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        SUITE, str(root), MIRROR], check=True, stdout=out)
        _configure_tree(root)
        tree_tar = Path(tmp) / "root.tar"
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tree_tar), "."],
                       check=True)
        shutil.rmtree(root)
        raw = Path(tmp) / "disk.raw"
        _make_disk_with_one_retry(tree_tar, raw)
        partial = Path(tmp) / "disk.qcow2"
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
                        str(partial)], check=True)
        os.replace(partial, target)


if __name__ == "__main__":
    print(build())
