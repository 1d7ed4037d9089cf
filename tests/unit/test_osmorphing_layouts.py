"""Issue 21's Linux layouts on directory trees (real file formats and edits; commands inside
the guest are recorded by ``DirectoryGuest``, not run): every EL vendor folder of the EFI
system partition, fstab names by disk id or path, netplan ids that are not names, and bonds
and VLANs in each network tool. tests/integration/osmorphing/test_linux_layouts.py morphs two
such layouts in the real appliance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from coriolis.exceptions import InvalidInput
from coriolis.osmorphing import network
from coriolis.osmorphing.fstab import parse, resolve_hardware_names
from coriolis.osmorphing.guest import DirectoryGuest, MorphingFailed, OsInfo
from coriolis.osmorphing.profile import DestinationNic, DestinationProfile
from coriolis.osmorphing.redhat import EL_EFI_VENDORS, RedHatMorpher
from coriolis.providers.local.cloud import LocalCloud

ROOT_UUID = "11111111-aaaa-4bbb-8ccc-000000000002"
MACS = ["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"]


def tree(tmp_path: Path, files: dict[str, str], distro: str = "centos",
         major: int = 7) -> DirectoryGuest:
    for rel, text in files.items():
        path = tmp_path / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return DirectoryGuest(tmp_path, OsInfo("linux", distro, major, 0, distro, "/dev/sda2"),
                          uuids={"/dev/sda2": ROOT_UUID})


# --- fstab by disk id or path -------------------------------------------------------------
FS = {"/dev/sda1": "ext4", "/dev/sda2": "ext4", "/dev/sdb1": "ext4", "/dev/sdb2": "swap",
      "/dev/sdc": "xfs"}


def test_disk_id_and_path_names_resolved_by_partition_type_and_last_mount() -> None:
    entries = parse("/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:1:0-part1 /boot ext4 d 0 2\n"
                    "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4-part2 none swap sw 0 0\n"
                    "/dev/disk/by-id/scsi-36000c29aabbccdd /srv xfs defaults 0 0\n"
                    "/dev/disk/by-id/ata-VBOX_HARDDISK_VB1-part1 /data ext4 defaults 0 0\n")
    resolved = resolve_hardware_names(
        entries, FS, {"/": "/dev/sda2"},
        lambda d: {"/dev/sda1": "/boot", "/dev/sdb1": "/data"}.get(d, ""))
    assert resolved == {
        "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:1:0-part1": "/dev/sda1",
        "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4-part2": "/dev/sdb2",
        "/dev/disk/by-id/scsi-36000c29aabbccdd": "/dev/sdc",
        "/dev/disk/by-id/ata-VBOX_HARDDISK_VB1-part1": "/dev/sdb1"}


def test_an_ambiguous_disk_id_is_refused_by_name_unless_nofail() -> None:
    spec = "/dev/disk/by-id/scsi-36000c29aabbccdd-part1"
    with pytest.raises(MorphingFailed) as refused:
        resolve_hardware_names(parse(f"{spec} /data ext4 defaults 0 2\n"), FS,
                               {"/": "/dev/sda2"})
    message = str(refused.value)
    assert f"/etc/fstab mounts /data from {spec}" in message
    assert "2 fit (/dev/sda1, /dev/sdb1)" in message and "UUID=" in message
    assert resolve_hardware_names(parse(f"{spec} /data ext4 defaults,nofail 0 2\n"), FS,
                                  {"/": "/dev/sda2"}) == {}
    with pytest.raises(MorphingFailed, match="none fits"):
        resolve_hardware_names(parse("/dev/disk/by-id/x-part7 /data ext4 defaults 0 2\n"), FS,
                               {})


def test_fstab_rewritten_from_the_resolved_names(tmp_path: Path) -> None:
    spec = "/dev/disk/by-id/scsi-36000c29aabbccdd-part2"
    g = tree(tmp_path, {"/etc/fstab": f"{spec} / ext4 defaults 0 1\n"
                                      "/dev/disk/by-id/gone-part5 /x ext4 nofail 0 0\n"})
    g.os.fstab_devices = {spec: "/dev/sda2"}
    events: list[str] = []
    RedHatMorpher(g, DestinationProfile("local"), events.append).fix_fstab()
    assert g.read_text("/etc/fstab") == (f"UUID={ROOT_UUID} / ext4 defaults 0 1\n"
                                         "/dev/disk/by-id/gone-part5 /x ext4 nofail 0 0\n")
    assert "fstab: /dev/disk/by-id/gone-part5 (/x) fits no single file system of this " \
           "instance's disks; left as it is (nofail or noauto: the guest boots without it)" \
        in events


# --- UEFI EL guests ---------------------------------------------------------------------
@pytest.mark.parametrize("vendor", EL_EFI_VENDORS)
def test_every_el_vendor_efi_config_is_the_one_regenerated(tmp_path: Path,
                                                           vendor: str) -> None:
    cfg = f"/boot/efi/EFI/{vendor}/grub.cfg"
    g = tree(tmp_path, {cfg: "menuentry 'x' {\n\tlinuxefi /vmlinuz root=/dev/sda2 ro\n}\n",
                        f"/boot/efi/EFI/{vendor}/grubenv": "# GRUB Environment Block\n"
                        "kernelopts=root=/dev/sda2 ro\n".ljust(1024, "#")})
    events: list[str] = []
    RedHatMorpher(g, DestinationProfile("local"), events.append).regenerate_boot_config()
    assert g.scripts == [f"grub2-mkconfig -o {cfg} 2>&1"]
    assert f"root=UUID={ROOT_UUID} ro" in g.read_text(cfg)
    env = g.read_text(f"/boot/efi/EFI/{vendor}/grubenv")
    assert f"kernelopts=root=UUID={ROOT_UUID} ro\n" in env and len(env) == 1024
    assert f"boot: the guest boots by UEFI from {cfg}: start the destination instance with " \
           "UEFI firmware" in events


def test_an_efi_wrapper_regenerates_the_boot_partition_config(tmp_path: Path) -> None:
    """EL 9 / Fedora 34+: EFI/<vendor>/grub.cfg only loads /boot/grub2/grub.cfg."""
    wrapper = ("search --no-floppy --root-dev-only --fs-uuid --set=dev 0b1d\n"
               "set prefix=($dev)/grub2\nexport $prefix\nconfigfile $prefix/grub.cfg\n")
    g = tree(tmp_path, {"/boot/efi/EFI/rocky/grub.cfg": wrapper,
                        "/boot/grub2/grub.cfg": "### blscfg\nblscfg\n"}, "rocky", 9)
    RedHatMorpher(g, DestinationProfile("local"), lambda _m: None).regenerate_boot_config()
    assert g.scripts == ["grub2-mkconfig -o /boot/grub2/grub.cfg 2>&1"]
    assert g.read_text("/boot/efi/EFI/rocky/grub.cfg") == wrapper


# --- netplan ids and bonds/VLANs per tool -------------------------------------------------
def configure(g: DirectoryGuest, tool: type[network.NetworkTool], nics: int = 2,
              source_macs: list[str | None] | None = None, tagged: bool = False) \
        -> tuple[list[str | None], list[str]]:
    events: list[str] = []
    names = network.configure_network(g, events.append,
                                      [DestinationNic(m) for m in MACS[:nics]],
                                      source_macs or [], tool(g, events.append),
                                      tagged_vlans=tagged)
    return names, events


def netplan(g: DirectoryGuest) -> dict:
    return yaml.safe_load(g.read_text("/etc/netplan/50-coriolis.yaml"))["network"]


def test_netplan_match_ids_are_not_names(tmp_path: Path) -> None:
    g = tree(tmp_path, {"/etc/netplan/01.yaml": yaml.safe_dump({"network": {"ethernets": {
        "lan": {"match": {"name": "ens192"}, "dhcp4": True},
        "all-en": {"match": {"name": "en*"}, "dhcp4": True}}}})}, "ubuntu", 22)
    names, _ = configure(g, network.Netplan)
    assert names == ["ens192", None]
    assert netplan(g)["ethernets"] == {
        "ens192": {"match": {"macaddress": MACS[0]}, "set-name": "ens192", "dhcp4": True},
        "coriolis-525400aabb02": {"match": {"macaddress": MACS[1]}, "dhcp4": True}}


def test_netplan_bond_and_vlan_rebuilt_when_tagged_frames_pass(tmp_path: Path) -> None:
    g = tree(tmp_path, {"/etc/netplan/01.yaml": yaml.safe_dump({"network": {
        "ethernets": {"nic-a": {"match": {"macaddress": "00:50:56:9a:00:01"},
                                "set-name": "ens192"}, "ens224": {}},
        "bonds": {"bond0": {"interfaces": ["nic-a", "ens224"], "addresses": ["10.0.0.5/24"],
                            "parameters": {"mode": "active-backup", "primary": "ens192"}}},
        "vlans": {"vlan100": {"id": 100, "link": "bond0", "addresses": ["10.9.0.5/24"]}}}})},
        "ubuntu", 22)
    names, events = configure(g, network.Netplan, source_macs=["00:50:56:9a:00:01"],
                              tagged=True)
    assert names == ["ens192", "ens224"]
    net = netplan(g)
    assert net["ethernets"] == {n: {"match": {"macaddress": m}, "set-name": n}
                                for n, m in zip(names, MACS, strict=True)}
    assert net["bonds"] == {"bond0": {"interfaces": ["ens192", "ens224"], "parameters": {
        "mode": "active-backup", "primary": "ens192"}, "dhcp4": True}}
    assert net["vlans"] == {"vlan100": {"id": 100, "link": "bond0", "dhcp4": True}}
    assert any(e.startswith("network: bond bond0 (bond over ens192, ens224; 10.0.0.5/24;")
               for e in events)
    assert g.exists("/etc/netplan/01.yaml.coriolis-disabled")


IFUPDOWN = """auto lo
iface lo inet loopback

auto bond0
iface bond0 inet static
    address 10.0.0.5/24
    bond-slaves ens192 ens224
    bond-mode 802.3ad
    bond-miimon 100

iface ens192 inet manual
iface ens224 inet manual

auto bond0.100
iface bond0.100 inet static
    address 10.9.0.5/24
"""


def test_ifupdown_bond_rebuilt_and_vlan_dropped(tmp_path: Path) -> None:
    g = tree(tmp_path, {"/etc/network/interfaces": IFUPDOWN}, "debian", 12)
    names, events = configure(g, network.Ifupdown)
    assert names == ["ens192", "ens224"]
    text = g.read_text("/etc/network/interfaces")
    assert "# coriolis: iface bond0 inet static" in text
    assert "# coriolis: iface bond0.100 inet static" in text
    assert text.endswith("auto bond0\niface bond0 inet dhcp\n    bond-slaves ens192 ens224\n"
                         "    bond-mode 802.3ad\n    bond-miimon 100\n")
    assert "iface ens192 inet dhcp" not in text and "vlan-raw-device" not in text
    assert "network: dropped VLAN bond0.100 (VLAN 100 on bond0; static 10.9.0.5/24; " \
           "/etc/network/interfaces): the destination's networks are not said to carry " \
           "tagged frames (profile tagged_vlans)" in events


def test_ifupdown_vlan_kept_and_a_bond_without_nics_dropped(tmp_path: Path) -> None:
    g = tree(tmp_path, {"/etc/network/interfaces": IFUPDOWN}, "debian", 12)
    _, events = configure(g, network.Ifupdown, nics=0, tagged=True)
    assert any(e.startswith("network: dropped bond bond0") and
               e.endswith("none of its members has a destination NIC") for e in events)
    assert any(e.startswith("network: dropped VLAN bond0.100") and
               e.endswith("its parent interface is not kept on the destination")
               for e in events)
    g2 = tree(tmp_path / "b", {"/etc/network/interfaces": IFUPDOWN}, "debian", 12)
    configure(g2, network.Ifupdown, tagged=True)
    assert g2.read_text("/etc/network/interfaces").endswith(
        "auto bond0.100\niface bond0.100 inet dhcp\n    vlan-raw-device bond0\n")


def test_networkmanager_bond_by_uuid_and_vlan(tmp_path: Path) -> None:
    nm = "/etc/NetworkManager/system-connections"
    port = "[connection]\nid={0}\ntype=ethernet\ninterface-name={0}\n" \
           "master=5f0e0e0e-1111-4222-8333-444455556666\nslave-type=bond\n"
    g = tree(tmp_path, {
        f"{nm}/bond0.nmconnection": "[connection]\nid=Bond bond0\ntype=bond\n"
        "uuid=5f0e0e0e-1111-4222-8333-444455556666\ninterface-name=bond0\n\n[bond]\n"
        "mode=active-backup\nmiimon=100\n\n[ipv4]\naddress1=10.0.0.5/24\nmethod=manual\n",
        f"{nm}/ens192.nmconnection": port.format("ens192"),
        f"{nm}/ens224.nmconnection": port.format("ens224"),
        f"{nm}/vlan.nmconnection": "[connection]\nid=vlan\ntype=vlan\n"
        "interface-name=bond0.100\n\n[vlan]\nid=100\nparent=bond0\n"}, "rhel", 9)
    names, _ = configure(g, network.NetworkManagerKeyfile, tagged=True)
    assert names == ["ens192", "ens224"]
    assert sorted(g.listdir(nm)) == sorted(f"coriolis-{n}.nmconnection"
                                           for n in ("bond0", "bond0.100", "ens192", "ens224"))
    bond = g.read_text(f"{nm}/coriolis-bond0.nmconnection")
    assert "type=bond" in bond and "mode=active-backup\nmiimon=100" in bond
    assert "method=auto" in bond and "10.0.0.5" not in bond
    member = g.read_text(f"{nm}/coriolis-ens192.nmconnection")
    assert "master=bond0\nslave-type=bond" in member and f"mac-address={MACS[0]}" in member
    assert "[ipv4]" not in member
    assert "[vlan]\nid=100\nparent=bond0" in g.read_text(f"{nm}/coriolis-bond0.100.nmconnection")


def test_wicked_bonds_are_dropped_with_an_event(tmp_path: Path) -> None:
    net = "/etc/sysconfig/network"
    g = tree(tmp_path, {f"{net}/ifcfg-bond0": "BONDING_MASTER='yes'\nBONDING_SLAVE_0='eth0'\n"
                        "BOOTPROTO='static'\nIPADDR='10.0.0.5/24'\n",
                        f"{net}/ifcfg-eth0": "BOOTPROTO='none'\nSTARTMODE='hotplug'\n"},
             "sles", 15)
    names, events = configure(g, network.Wicked, nics=1)
    assert names == ["eth0"]
    assert "BOOTPROTO='dhcp'" in g.read_text(f"{net}/ifcfg-eth0")
    assert not g.exists(f"{net}/ifcfg-bond0")
    assert "network: dropped bond bond0 (bond over eth0; static 10.0.0.5/24; " \
           f"{net}/ifcfg-bond0): this guest's network tool is not rebuilt with bonds by OS " \
           "morphing" in events


def test_a_local_cloud_says_whether_its_networks_carry_vlans(tmp_path: Path) -> None:
    (tmp_path / "cloud.json").write_text(json.dumps({"guest": {"tagged_vlans": True}}))
    profile = DestinationProfile.from_json(LocalCloud({"path": str(tmp_path)}).guest_profile())
    assert profile.tagged_vlans is True
    assert DestinationProfile.from_json({}).tagged_vlans is False
    (tmp_path / "cloud.json").write_text(json.dumps({"guest": {"tagged_vlans": "yes"}}))
    with pytest.raises(InvalidInput, match="guest.tagged_vlans must be true or false"):
        LocalCloud({"path": str(tmp_path)}).guest_profile()
