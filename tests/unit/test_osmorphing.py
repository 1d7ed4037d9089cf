"""Morphers on fixture trees of guests that cannot boot here (RHEL 8 and 9, SLES 15, Ubuntu
22.04), in their real configuration file formats.

These trees are plain directories: file edits are real, but the commands a morpher runs inside
the guest (dracut, grub2-mkconfig, rpm...) are recorded by ``DirectoryGuest`` rather than run,
since those tools exist only in such guests. The Debian morpher runs its commands for real in
the boot test (tests/e2e/test_os_morphing.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from coriolis.osmorphing.guest import DirectoryGuest, MorphingFailed, OsInfo, appliance_device
from coriolis.osmorphing.morph import morph_guest
from coriolis.osmorphing.network import Ifupdown
from coriolis.osmorphing.profile import DestinationProfile

FIXTURES = Path(__file__).parent.parent / "fixtures" / "guests"
DEST_MAC = "52:54:00:aa:bb:01"
UUIDS = {"/dev/sda1": "11111111-aaaa-4bbb-8ccc-000000000001",
         "/dev/sda2": "11111111-aaaa-4bbb-8ccc-000000000002",
         "/dev/sdb1": "22222222-aaaa-4bbb-8ccc-000000000001"}


def guest(tmp_path: Path, tree: str, distro: str, major: int, *, packages: set[str] = frozenset(),
          disks: int = 2) -> DirectoryGuest:
    root = tmp_path / tree
    shutil.copytree(FIXTURES / tree, root, symlinks=True)
    info = OsInfo("linux", distro, major, 0, f"{distro} {major}", "/dev/sda1")
    return DirectoryGuest(root, info, uuids=UUIDS, packages=set(packages), disks=disks)


def profile(**extra: object) -> DestinationProfile:
    return DestinationProfile.from_json({"platform": "local", "nics": [{"mac": DEST_MAC}],
                                         "cloud_init_datasources": ["NoCloud", "None"],
                                         **extra})


def morph(g: DirectoryGuest, source_macs: list[str | None] | None = None,
          **extra: object) -> list[str]:
    events: list[str] = []
    morph_guest(g, profile(**extra), events.append, source_macs=source_macs)
    return events


def read(g: DirectoryGuest, path: str) -> str:
    return g.read_text(path)


@pytest.mark.parametrize("guest_name,count,expected", [
    ("/dev/sda1", 1, "/dev/sda1"), ("/dev/vdb2", 2, "/dev/sdb2"), ("/dev/xvda", 1, "/dev/sda"),
    ("/dev/hdb1", 2, "/dev/sdb1"), ("/dev/nvme1n1p3", 2, "/dev/sdb3"),
    ("/dev/sdc1", 2, None), ("/dev/mapper/vg-root", 1, None), ("/dev/sdaa1", 27, "/dev/sdaa1"),
])
def test_appliance_device_names(guest_name: str, count: int, expected: str | None) -> None:
    assert appliance_device(guest_name, count) == expected


def test_rhel8_ifcfg_selinux_dracut_grubby(tmp_path: Path) -> None:
    g = guest(tmp_path, "rhel8", "rhel", 8, packages={"open-vm-tools", "bash"})
    events = morph(g, source_macs=["00:50:56:9a:11:22"])

    fstab = read(g, "/etc/fstab")
    assert f"UUID={UUIDS['/dev/sda1']}               /boot" in fstab
    assert f"UUID={UUIDS['/dev/sdb1']}               /data" in fstab
    assert "/dev/mapper/rhel-root   /" in fstab  # LVM names are stable: untouched
    assert f"fstab: /dev/sda1 → UUID={UUIDS['/dev/sda1']} (/boot)" in events

    # The source NIC's configuration is kept aside; the destination NIC keeps its name.
    scripts_dir = "/etc/sysconfig/network-scripts"
    assert "IPADDR=10.20.30.40" in read(g, f"{scripts_dir}/coriolis-disabled.ifcfg-ens192")
    new = read(g, f"{scripts_dir}/ifcfg-ens192")
    assert "BOOTPROTO=dhcp" in new and f"HWADDR={DEST_MAC}" in new and "IPADDR" not in new
    assert read(g, "/etc/systemd/network/10-coriolis-ens192.link") == (
        f"[Match]\nMACAddress={DEST_MAC}\n\n[Link]\nName=ens192\n")

    assert g.exists("/.autorelabel")
    assert "virtio_blk" in read(g, "/etc/dracut.conf.d/90-coriolis-virtio.conf")
    assert "datasource_list: [ NoCloud, None ]" in read(
        g, "/etc/cloud/cloud.cfg.d/99-coriolis-datasource.cfg")
    grub = read(g, "/etc/default/grub")
    assert 'rhgb quiet console=tty0 console=ttyS0,115200n8"' in grub
    assert g.scripts == [
        "rpm -e open-vm-tools 2>&1",
        "dracut -f --regenerate-all 2>&1",
        "grubby --update-kernel=ALL --args='console=tty0 console=ttyS0,115200n8' 2>&1",
        "grub2-mkconfig -o /boot/grub2/grub.cfg 2>&1",
    ]
    assert "agents: removed open-vm-tools" in events


def test_rhel9_keyfiles_matched_by_source_mac(tmp_path: Path) -> None:
    """Two source connections; the one whose MAC is the source NIC's names the new NIC."""
    g = guest(tmp_path, "rhel9", "rhel", 9)
    events = morph(g, source_macs=["00:50:56:9A:11:22"])
    nm = "/etc/NetworkManager/system-connections"
    assert sorted(g.listdir(nm)) == ["coriolis-ens192.nmconnection"]
    assert sorted(g.listdir(nm + ".coriolis-disabled")) == ["ens192.nmconnection",
                                                             "ens224.nmconnection"]
    new = read(g, f"{nm}/coriolis-ens192.nmconnection")
    assert f"mac-address={DEST_MAC}" in new and "method=auto" in new
    assert "method=manual" not in new
    assert f"chmod 600 '{nm}/coriolis-ens192.nmconnection'" in g.scripts
    assert any("permissive" in e for e in events) and g.exists("/.autorelabel")
    assert read(g, "/etc/fstab").startswith("UUID=0b1d8a52")  # already by UUID: unchanged


def test_sles15_wicked_and_persistent_net_rules(tmp_path: Path) -> None:
    g = guest(tmp_path, "sles15", "sles", 15, disks=1)
    events = morph(g, source_macs=["00:50:56:9a:33:44"])
    fstab = read(g, "/etc/fstab")
    assert fstab.count(f"UUID={UUIDS['/dev/sda2']}") == 3
    assert f"UUID={UUIDS['/dev/sda1']}  swap" in fstab
    net = "/etc/sysconfig/network"
    assert read(g, f"{net}/ifcfg-eth0") == "BOOTPROTO='dhcp'\nSTARTMODE='auto'\nNAME=''\n"
    assert "10.20.30.42" in read(g, f"{net}/coriolis-disabled.ifcfg-eth0")
    assert g.exists(f"{net}/ifcfg-lo")  # loopback untouched
    assert not g.exists("/etc/udev/rules.d/70-persistent-net.rules")
    assert "Name=eth0" in read(g, "/etc/systemd/network/10-coriolis-eth0.link")
    grub = read(g, "/etc/default/grub")
    assert f"resume=UUID={UUIDS['/dev/sda1']}" in grub
    assert 'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"' in grub
    assert g.scripts == ["dracut -f --regenerate-all 2>&1",
                         "grub2-mkconfig -o /boot/grub2/grub.cfg 2>&1"]
    assert "cloud-init: not installed in the guest; datasource left alone" in events


def test_ubuntu_netplan_and_initramfs_tools(tmp_path: Path) -> None:
    g = guest(tmp_path, "ubuntu22", "ubuntu", 22, packages={"netplan.io", "open-vm-tools"},
              disks=1)
    events = morph(g, source_macs=["00:50:56:9a:55:66"])
    assert not g.exists("/etc/netplan/00-installer-config.yaml")
    assert "10.20.30.43" in read(g, "/etc/netplan/00-installer-config.yaml.coriolis-disabled")
    new = read(g, "/etc/netplan/50-coriolis.yaml")
    assert f"macaddress: {DEST_MAC}" in new and "set-name: ens160" in new
    assert "dhcp4: true" in new
    modules = read(g, "/etc/initramfs-tools/modules")
    assert "vmw_pvscsi\nvirtio_pci\nvirtio_blk" in modules
    fstab = read(g, "/etc/fstab")
    assert f"UUID={UUIDS['/dev/sda2']} /boot" in fstab and "/swap.img" in fstab
    assert g.scripts[0].startswith("chmod 755 /usr/sbin/policy-rc.d")
    assert "DEBIAN_FRONTEND=noninteractive dpkg --purge open-vm-tools 2>&1" in g.scripts
    assert g.scripts[-2:] == ["update-initramfs -u -k all 2>&1", "update-grub 2>&1"]
    assert not g.exists("/usr/sbin/policy-rc.d")  # only there while packages are removed
    assert "network: the guest uses netplan" in events


def test_keep_destination_agents(tmp_path: Path) -> None:
    g = guest(tmp_path, "ubuntu22", "ubuntu", 22, packages={"netplan.io", "amazon-ssm-agent",
                                                             "open-vm-tools"}, disks=1)
    morph(g, keep_agents_of=["aws"])
    assert "DEBIAN_FRONTEND=noninteractive dpkg --purge open-vm-tools 2>&1" in g.scripts


def test_ifupdown_stanzas_commented_out(tmp_path: Path) -> None:
    root = tmp_path / "g"
    (root / "etc/network").mkdir(parents=True)
    (root / "etc/network/interfaces").write_text(
        "auto lo ens192\niface lo inet loopback\n\niface ens192 inet static\n"
        "    address 192.168.50.10/24\n    gateway 192.168.50.1\n\nsource /etc/extra\n")
    g = DirectoryGuest(root, OsInfo("linux", "debian", 12, 0, "12", "/dev/sda1"))
    tool = Ifupdown(g, lambda _m: None)
    tool.disable_sources(tool.source_interfaces())
    tool.configure("ens192", None)
    assert g.read_text("/etc/network/interfaces") == (
        "# coriolis: auto lo ens192\nauto lo\niface lo inet loopback\n\n"
        "# coriolis: iface ens192 inet static\n# coriolis:     address 192.168.50.10/24\n"
        "# coriolis:     gateway 192.168.50.1\n\nsource /etc/extra\n\n"
        "# Added by Coriolis OS morphing\nauto ens192\niface ens192 inet dhcp\n")


@pytest.mark.parametrize("distro,major,needle", [
    ("alpinelinux", 3, "unsupported distribution 'alpinelinux'"),
    ("centos", 6, "centos 7 and later"),
])
def test_unsupported_distributions(tmp_path: Path, distro: str, major: int, needle: str) -> None:
    g = guest(tmp_path, "rhel8", distro, major)
    with pytest.raises(MorphingFailed, match=needle):
        morph(g)
    assert g.scripts == []  # nothing was run in the guest
    assert "UUID" not in read(g, "/etc/fstab").split("#")[-1]  # and nothing changed


def test_user_script_output_becomes_events(tmp_path: Path) -> None:
    g = guest(tmp_path, "ubuntu22", "ubuntu", 22, packages={"netplan.io"}, disks=1)
    g.responses["coriolis-user-script"] = "configured the app\nall good\n"
    events: list[str] = []
    morph_guest(g, profile(), events.append, user_scripts=[("global linux", "echo hi")])
    assert events[-2:] == ["user script (global linux): configured the app",
                           "user script (global linux): all good"]
    assert not g.exists("/root/.coriolis-user-script")
