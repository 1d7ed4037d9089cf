"""Linux layouts that used to pass OS morphing and then not boot (issue 21), on small guest
disks built by tests/small_guests.py and morphed the way a task does (a child process, the real
libguestfs appliance: inspection, mounting, files written in the guest's file systems, its own
/bin/sh running commands), then read back from the closed disks.

The distribution tools in these guests are recording stubs (see tests/small_guests.py): the
tests prove what the morpher writes and which tools it runs with which arguments, not what
update-initramfs, dracut or grub2-mkconfig would write, and nothing here boots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from coriolis.osmorphing.appliance import GuestDisk
from coriolis.osmorphing.guest import MorphingFailed
from coriolis.osmorphing.isolated import MorphRequest, morph_in_child
from tests import small_guests as sg
from tests.small_guests import Partition

pytestmark = pytest.mark.timeout(900)

DEST_MACS = ["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"]
SOURCE_MACS = ["00:50:56:9a:11:22", "00:50:56:9a:11:23"]
U = "3a1c0c6e-5b0d-4f43-9a2e-0000000000"  # + two digits: the guests' file-system UUIDs
SERIAL, OTHER = "scsi-36000c29a1b2c3d4e5f60718293a4b5c6", "scsi-36000c29ffeeddccbbaa0099887766"
DPKG_STATUS = ("Package: netplan.io\nStatus: install ok installed\nVersion: 0.106\n"
               "Architecture: amd64\n\n")


def morph(disks: list[Path], profile: dict[str, object], **extra: Any) -> list[str]:
    events: list[str] = []
    request = MorphRequest(disks=[GuestDisk(str(d), "raw", f"disk{i}")
                                  for i, d in enumerate(disks)],
                           profile={"platform": "local", **profile}, instance="vm1", **extra)
    morph_in_child(request, events.append, lambda: False)
    return events


def test_fstab_by_disk_id_and_path_and_netplan_match(tmp_path: Path) -> None:
    """Ubuntu-like, two disks: root, /boot, swap and /data by /dev/disk/by-id and by-path
    names (libguestfs resolves none of /boot, /data: two disks), netplan matching ``en*``."""
    files, stubs = sg.userland(["/usr/sbin/update-initramfs", "/usr/sbin/update-grub",
                                "/usr/bin/dpkg"])
    files |= {
        "/etc/os-release": 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="22.04"\n'
                           'PRETTY_NAME="Ubuntu 22.04.4 LTS"\n',
        "/etc/lsb-release": "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\n",
        "/etc/debian_version": "bookworm/sid\n", "/etc/hostname": "source-vm\n",
        "/var/lib/dpkg/status": DPKG_STATUS, "/etc/default/grub": 'GRUB_CMDLINE_LINUX=""\n',
        "/etc/initramfs-tools/modules": "# modules\n",
        "/etc/initramfs-tools/conf.d/resume": f"RESUME=/dev/disk/by-id/{SERIAL}-part3\n",
        "/boot/.mountpoint": "", "/data/.mountpoint": "", "/root/.keep": "",
        "/etc/fstab": f"/dev/disk/by-id/{SERIAL}-part2 / ext4 errors=remount-ro 0 1\n"
                      "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part1 /boot ext4 "
                      "defaults 0 2\n"
                      f"/dev/disk/by-id/{SERIAL}-part3 none swap sw 0 0\n"
                      f"/dev/disk/by-id/{OTHER}-part1 /data ext4 defaults 0 2\n",
        "/etc/netplan/00-installer-config.yaml": yaml.safe_dump({"network": {
            "version": 2, "ethernets": {"all-en": {"match": {"name": "en*"}, "dhcp4": True}}}}),
    }
    disk0 = [Partition("ext4", 8, U + "01", {"/vmlinuz": ""}, last_mounted="/boot"),
             Partition("ext4", 16, U + "02", files, stubs, last_mounted="/"),
             Partition("swap", 2, U + "03")]
    disk1 = [Partition("ext4", 8, U + "11", {"/app.db": ""}, last_mounted="/data")]
    img0 = sg.build(tmp_path / "disk0.raw", disk0, root_index=1)
    img1 = sg.build(tmp_path / "disk1.raw", disk1, root_index=-1)

    script = "echo seen > /boot/written-while-morphing; echo seen > /data/written-while-morphing"
    events = morph([img0, img1], {"nics": [{"mac": DEST_MACS[0]}]},
                   user_scripts={"global": {"linux": script}})

    assert sg.read(img0, disk0, 2, "/etc/fstab") == (
        f"UUID={U}02 / ext4 errors=remount-ro 0 1\nUUID={U}01 /boot ext4 defaults 0 2\n"
        f"UUID={U}03 none swap sw 0 0\nUUID={U}11 /data ext4 defaults 0 2\n")
    assert f"fstab: /dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part1 → UUID={U}01 " \
           "(/boot)" in events
    # /boot and /data were mounted while the guest was morphed: the script wrote into them.
    assert sg.read(img0, disk0, 1, "/written-while-morphing") == "seen\n"
    assert sg.read(img1, disk1, 1, "/written-while-morphing") == "seen\n"
    assert sg.read(img0, disk0, 2, "/boot/written-while-morphing") is None
    assert sg.read(img0, disk0, 2, "/etc/initramfs-tools/conf.d/resume") == \
        f"RESUME=UUID={U}03\n"
    assert sg.read(img0, disk0, 2, sg.CALLS) == \
        "update-initramfs -u -k all\nupdate-grub \n"

    # netplan: all-en is an id, not a name; the NIC is matched by its MAC and keeps the
    # guest's own name (no .link file renaming it).
    new = yaml.safe_load(sg.read(img0, disk0, 2, "/etc/netplan/50-coriolis.yaml") or "")
    assert new["network"]["ethernets"] == {
        "coriolis-525400aabb01": {"match": {"macaddress": DEST_MACS[0]}, "dhcp4": True}}
    assert sg.read(img0, disk0, 2, "/etc/systemd/network/10-coriolis-all-en.link") is None
    assert f"network: the source configuration names no interface for the NIC with MAC " \
           f"{DEST_MACS[0]}; the guest names it" in events


EL7_GRUB_CFG = """### BEGIN /etc/grub.d/10_linux ###
menuentry 'CentOS Linux (3.10.0-1160.el7.x86_64) 7 (Core)' --class centos {
\tsearch --no-floppy --fs-uuid --set=root %s
\tlinuxefi /boot/vmlinuz-3.10.0-1160.el7.x86_64 root=/dev/sda2 ro crashkernel=auto rhgb quiet
\tinitrdefi /boot/initramfs-3.10.0-1160.el7.x86_64.img
}
### END /etc/grub.d/10_linux ###
"""


def test_uefi_centos7_bond_and_vlan(tmp_path: Path) -> None:
    """A UEFI CentOS 7 layout: its only grub.cfg on the EFI system partition with
    root=/dev/sda2; ifcfg files with a bond of two NICs and a VLAN on it."""
    scripts = "/etc/sysconfig/network-scripts"
    files, stubs = sg.userland(["/usr/sbin/dracut", "/usr/sbin/grub2-mkconfig", "/usr/bin/rpm"])
    release = "CentOS Linux release 7.9.2009 (Core)\n"
    files |= {
        "/etc/centos-release": release, "/etc/redhat-release": release,
        "/etc/os-release": 'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\n'
                           'VERSION_ID="7"\nPRETTY_NAME="CentOS Linux 7 (Core)"\n',
        "/etc/fstab": "/dev/sda2 / ext4 defaults 1 1\n"
                      "UUID=1A2B-3C4D /boot/efi vfat umask=0077,shortname=winnt 0 0\n",
        "/etc/default/grub": 'GRUB_CMDLINE_LINUX="crashkernel=auto rhgb quiet"\n',
        "/boot/efi/.mountpoint": "", "/boot/vmlinuz-3.10.0-1160.el7.x86_64": "",
        f"{scripts}/ifcfg-ens192": f"DEVICE=ens192\nTYPE=Ethernet\nMASTER=bond0\nSLAVE=yes\n"
                                   f"ONBOOT=yes\nHWADDR={SOURCE_MACS[0]}\n",
        f"{scripts}/ifcfg-ens224": f"DEVICE=ens224\nTYPE=Ethernet\nMASTER=bond0\nSLAVE=yes\n"
                                   f"ONBOOT=yes\nHWADDR={SOURCE_MACS[1]}\n",
        f"{scripts}/ifcfg-bond0": 'DEVICE=bond0\nTYPE=Bond\nBONDING_MASTER=yes\n'
                                  'BONDING_OPTS="mode=active-backup miimon=100"\n'
                                  "BOOTPROTO=none\nIPADDR=10.20.30.40\nPREFIX=24\nONBOOT=yes\n",
        f"{scripts}/ifcfg-bond0.100": "DEVICE=bond0.100\nVLAN=yes\nBOOTPROTO=none\n"
                                      "IPADDR=10.99.0.5\nPREFIX=24\nONBOOT=yes\n",
        f"{scripts}/ifcfg-lo": "DEVICE=lo\n",
    }
    esp = {"/EFI/centos/grub.cfg": EL7_GRUB_CFG % (U + "02"), "/EFI/centos/shimx64.efi": "",
           "/EFI/centos/grubx64.efi": "", "/EFI/BOOT/BOOTX64.EFI": ""}
    disk = [Partition("vfat", 34, "1A2B-3C4D", esp),
            Partition("ext4", 16, U + "02", files, stubs)]
    img = sg.build(tmp_path / "disk0.raw", disk, root_index=1)

    events = morph([img], {"nics": [{"mac": m} for m in DEST_MACS]}, source_macs=SOURCE_MACS)

    cfg = sg.read(img, disk, 1, "/EFI/centos/grub.cfg") or ""
    assert f"root=UUID={U}02 ro crashkernel=auto" in cfg and "root=/dev/sda2" not in cfg
    assert sg.read(img, disk, 2, sg.CALLS) == (
        "dracut -f --regenerate-all\ngrub2-mkconfig -o /boot/efi/EFI/centos/grub.cfg\n")
    # The image has no rpm database (no rpm here to make one): said, and the morphing goes on.
    assert any(e.startswith("agents: none removed: the package database of") for e in events)
    assert "boot: the guest boots by UEFI from /boot/efi/EFI/centos/grub.cfg: start the " \
           "destination instance with UEFI firmware" in events
    assert (sg.read(img, disk, 2, "/etc/fstab") or "").startswith(f"UUID={U}02 / ext4")

    bond = sg.read(img, disk, 2, f"{scripts}/ifcfg-bond0") or ""
    assert 'BONDING_OPTS="mode=active-backup miimon=100"' in bond
    assert "BOOTPROTO=dhcp" in bond and "IPADDR" not in bond
    for name, mac in zip(("ens192", "ens224"), DEST_MACS, strict=True):
        port = sg.read(img, disk, 2, f"{scripts}/ifcfg-{name}") or ""
        assert "MASTER=bond0\nSLAVE=yes" in port and f"HWADDR={mac}" in port
        assert "BOOTPROTO" not in port
        assert sg.read(img, disk, 2, f"/etc/systemd/network/10-coriolis-{name}.link") == \
            f"[Match]\nMACAddress={mac}\n\n[Link]\nName={name}\n"
    assert sg.read(img, disk, 2, f"{scripts}/ifcfg-bond0.100") is None
    assert "IPADDR=10.99.0.5" in (
        sg.read(img, disk, 2, f"{scripts}/coriolis-disabled.ifcfg-bond0.100") or "")
    assert any(e.startswith("network: dropped VLAN bond0.100 (VLAN 100 on bond0; none "
                            "10.99.0.5 24;") and e.endswith("(profile tagged_vlans)")
               for e in events), events


def test_an_ambiguous_disk_id_is_refused_before_anything_changes(tmp_path: Path) -> None:
    """/data by a disk id whose partition 1 could be either disk's (both ext4, neither says
    where it was last mounted): refused by name, the guest as it was."""
    files, stubs = sg.userland(["/usr/sbin/update-initramfs"])
    fstab = (f"UUID={U}02 / ext4 defaults 0 1\n"
             f"/dev/disk/by-id/{OTHER}-part1 /data ext4 defaults 0 2\n")
    files |= {"/etc/os-release": 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian 12"\n',
              "/etc/debian_version": "12.5\n", "/var/lib/dpkg/status": DPKG_STATUS,
              "/etc/fstab": fstab, "/data/.mountpoint": ""}
    disk0 = [Partition("ext4", 8, U + "01"), Partition("ext4", 16, U + "02", files, stubs)]
    disk1 = [Partition("ext4", 8, U + "11")]
    img0 = sg.build(tmp_path / "disk0.raw", disk0, root_index=1)
    img1 = sg.build(tmp_path / "disk1.raw", disk1, root_index=-1)
    with pytest.raises(MorphingFailed) as refused:
        morph([img0, img1], {"nics": []})
    assert f"/etc/fstab mounts /data from /dev/disk/by-id/{OTHER}-part1" in str(refused.value)
    assert "2 fit (/dev/sda1, /dev/sdb1)" in str(refused.value)
    assert sg.read(img0, disk0, 2, "/etc/fstab") == fstab
    assert sg.read(img0, disk0, 2, sg.CALLS) == ""
