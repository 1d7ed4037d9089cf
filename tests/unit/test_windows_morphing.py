"""Windows morphing parts that need no appliance: virtio-win lookup and refusals, the
Windows → virtio-win folder table, the hive writer (read back with Perl's Win::Hivex, the
hivex library's own binding, when it is installed), first-boot scripts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from coriolis import windows_image
from coriolis.osmorphing.guest import MorphingFailed
from coriolis.osmorphing.profile import DestinationProfile
from coriolis.osmorphing.windows import firstboot, registry, virtio
from coriolis.osmorphing.windows.inspect import WindowsInfo
from coriolis.osmorphing.windows.morpher import FOREIGN_TOOLS, WindowsMorpher, _static_ip_script
from coriolis.providers.local.cloud import LocalCloud


def info(product: str = "Windows Server 2019 Standard", variant: str = "Server",
         version: tuple[int, int, int] = (10, 0, 17763), arch: str = "x86_64") -> WindowsInfo:
    return WindowsInfo(product, variant, *version, arch=arch, systemroot="/Windows",
                       current_control_set="ControlSet001")


@pytest.mark.parametrize("variant,version,folder", [
    ("Server", (10, 0, 17763), "2k19"), ("Server", (10, 0, 20348), "2k22"),
    ("Server", (10, 0, 14393), "2k16"), ("Client", (10, 0, 19045), "w10"),
    ("Client", (10, 0, 22631), "w11"), ("Server", (6, 3, 9600), "2k12R2"),
    ("Client", (6, 1, 7601), "w7"),
])
def test_virtio_win_folder_of_each_windows(variant: str, version: tuple[int, int, int],
                                           folder: str) -> None:
    assert info(variant=variant, version=version).virtio_os_dir() == folder


def test_needed_drivers_follow_disk_bus_and_nic_model() -> None:
    assert virtio.needed_drivers("virtio", "virtio") == ["viostor", "netkvm"]
    assert virtio.needed_drivers("scsi", "e1000") == ["vioscsi"]
    assert virtio.needed_drivers("sata", "e1000") == []


def test_found_drivers_and_the_others_of_the_tree(tmp_path: Path) -> None:
    tree = windows_image.make_virtio_win_tree(tmp_path)
    needed, others = virtio.resolve(info(), ["viostor", "netkvm"], tree)
    assert [(d.name, d.folder) for d in needed] == [
        ("viostor", tree / "viostor/2k19/amd64"), ("netkvm", tree / "NetKVM/2k19/amd64")]
    assert [d.name for d in others] == ["balloon", "vioscsi"]
    assert [f.name for f in needed[1].files()] == ["netkvm.cat", "netkvm.inf", "netkvm.sys"]


def test_a_missing_driver_is_refused_by_name(tmp_path: Path) -> None:
    tree = windows_image.make_virtio_win_tree(tmp_path, os_dirs=("2k19",),
                                              drivers=("viostor",))
    (tree / "viostor/2k19/amd64/viostor.cat").unlink()  # incomplete: not found either
    with pytest.raises(MorphingFailed) as failed:
        virtio.resolve(info(), ["viostor", "netkvm"], tree)
    message = str(failed.value)
    assert f"CORIOLIS_VIRTIO_WIN={tree} does not have for Windows Server 2019 Standard " \
        "(2k19, amd64): viostor (virtio-blk disks; looked for viostor/2k19/amd64/viostor.inf, " \
        ".sys and .cat); netkvm (virtio-net NICs; looked for NetKVM/2k19/amd64/netkvm.inf" \
        in message


def test_no_virtio_win_given_is_refused_with_the_setting_to_use() -> None:
    with pytest.raises(MorphingFailed, match="needs the virtio drivers viostor, netkvm for "
                       "Windows Server 2019 Standard, and no virtio-win is given: set "
                       "CORIOLIS_VIRTIO_WIN"):
        virtio.resolve(info(), ["viostor", "netkvm"], None)
    assert virtio.resolve(info(), [], None) == ([], [])  # nothing needed, nothing asked


def iso_of(tree: Path, iso_path: Path) -> Path:
    """An ISO 9660 image with Joliet names of ``tree``, as virtio-win.iso is made."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=4, joliet=3)
    for path in sorted(tree.rglob("*")):
        rel = "/" + path.relative_to(tree).as_posix()
        if path.is_dir():
            iso.add_directory(rel.upper(), joliet_path=rel)
        else:
            iso.add_file(str(path), rel.upper() + ";1", joliet_path=rel)
    iso.write(str(iso_path))
    iso.close()
    return iso_path


def test_drivers_are_read_from_a_virtio_win_iso(tmp_path: Path) -> None:
    tree = windows_image.make_virtio_win_tree(tmp_path / "tree")
    iso = iso_of(tree, tmp_path / "virtio-win.iso")
    with virtio.opened(iso, info(variant="Client", version=(10, 0, 19045))) as root:
        assert root is not None and root != iso
        needed, others = virtio.resolve(info(variant="Client", version=(10, 0, 19045)),
                                        ["vioscsi"], root, iso)
        assert [(d.name, [f.name for f in d.files()]) for d in needed] == [
            ("vioscsi", ["vioscsi.cat", "vioscsi.inf", "vioscsi.sys"])]
        assert needed[0].files()[2].read_bytes() == (
            tree / "vioscsi/w10/amd64/vioscsi.sys").read_bytes()
        assert sorted(p.name for p in root.glob("*/*")) == ["w10"] * 4  # only w10
    assert not root.exists()  # the extracted copy is gone
    (tmp_path / "not.iso").write_text("nope")
    with pytest.raises(MorphingFailed, match="not.iso is not a readable ISO 9660 image"):
        with virtio.opened(tmp_path / "not.iso", info()):
            pass


@pytest.mark.skipif(not shutil.which("perl"), reason="perl not installed")
def test_empty_hive_opens_and_grows_with_hivex(tmp_path: Path) -> None:
    hive = tmp_path / "SYSTEM"
    hive.write_bytes(registry.empty_hive("CMI-CreateHive-SYSTEM"))
    script = ('use Win::Hivex; my $h = Win::Hivex->open($ARGV[0], write => 1); '
              'my $r = $h->root(); print $h->node_name($r), "\\n"; '
              'my $c = $h->node_add_child($r, "Select"); '
              '$h->node_set_value($c, {key => "Current", t => 4, value => pack("V", 1)}); '
              '$h->commit(undef); my $h2 = Win::Hivex->open($ARGV[0]); '
              'my $s = $h2->node_get_child($h2->root(), "Select"); '
              'print unpack("V", $h2->value_value($h2->node_get_value($s, "Current"))), "\\n";')
    result = subprocess.run(["perl", "-e", script, str(hive)], capture_output=True, text=True)
    if "Can't locate Win/Hivex.pm" in result.stderr:
        pytest.skip("libwin-hivex-perl not installed")
    assert result.stdout == "CMI-CreateHive-SYSTEM\n1\n", result.stderr


def test_registry_values_encode_and_decode() -> None:
    assert registry.decode(registry.REG_SZ, registry.utf16z("viostor")) == "viostor"
    assert registry.decode(registry.REG_DWORD, registry.dword(0x10)) == 0x10
    assert registry.decode(registry.REG_MULTI_SZ, registry.multi_sz(["a", "b"])) == ["a", "b"]


def test_static_ip_script_sets_each_address_on_the_nic_with_the_new_mac() -> None:
    script = _static_ip_script([{
        "old_mac": "00:50:56:8a:11:22", "new_mac": "52:54:00:aa:bb:01",
        "addresses": ["10.0.0.5", "10.0.1.5"], "masks": ["255.255.0.0", "255.255.255.128"],
        "gateways": ["10.0.0.1"], "dns": ["10.0.0.2"]}])
    assert "Where-Object MacAddress -eq '52-54-00-AA-BB-01'" in script
    assert "-IPAddress 10.0.0.5 -PrefixLength 16 -DefaultGateway 10.0.0.1\n" in script
    assert "-IPAddress 10.0.1.5 -PrefixLength 25\n" in script
    assert "-ServerAddresses '10.0.0.2'" in script


def test_first_boot_runner_runs_scripts_in_order_and_removes_its_service() -> None:
    text = firstboot.crlf(firstboot.RUNNER).decode()
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    assert "dir /b /on" in text and f"sc.exe delete {firstboot.SERVICE}" in text
    assert firstboot.image_path() == ('%SystemRoot%\\System32\\cmd.exe /c start "" /b '
                                      '"C:\\Program Files\\Coriolis\\Firstboot\\firstboot.cmd"')


def test_a_local_cloud_asks_for_static_ips_in_its_guest_profile(tmp_path: Path) -> None:
    cloud = LocalCloud({"path": str(tmp_path)})
    assert DestinationProfile.from_json(cloud.guest_profile()).keep_static_ips is False
    (tmp_path / "cloud.json").write_text(json.dumps({"guest": {"keep_static_ips": True}}))
    assert DestinationProfile.from_json(cloud.guest_profile()).keep_static_ips is True


@pytest.mark.parametrize("display,platform", [
    ("VMware Tools", "vmware"), ("Citrix XenServer Windows Management Agent", "xen"),
    ("XenServer PV Tools", "xen"), ("Citrix Hypervisor PV Tools", "xen"),
    ("AWS PV Drivers", "aws"), ("Amazon SSM Agent", "aws"), ("Amazon EC2Launch", "aws"),
    ("Windows Azure VM Agent - 2.7.41491.1102", "azure"), ("Google Compute Engine Tools", "gce"),
    ("XCP-ng Windows PV Tools", "xen"), ("Mozilla Firefox", None), ("VMware Horizon Client", None),
])
def test_tools_of_other_platforms_are_recognised_by_name(display: str,
                                                         platform: str | None) -> None:
    found = [p for p, pattern in FOREIGN_TOOLS.items() if re.search(pattern, display, re.I)]
    assert found == ([platform] if platform else [])


def test_uninstall_commands() -> None:
    msi = {"app2_name": "{6A3D1E5F-0C1B-4F5A-9E2D-7B3C4A5D6E7F}", "app2_uninstall": "x"}
    assert WindowsMorpher._uninstall_command(msi) == \
        "msiexec.exe /x {6A3D1E5F-0C1B-4F5A-9E2D-7B3C4A5D6E7F} /qn /norestart"
    other = {"app2_name": "Amazon SSM Agent", "app2_uninstall": '"C:\\x\\uninst.exe" /S'}
    assert WindowsMorpher._uninstall_command(other) == '"C:\\x\\uninst.exe" /S'
    assert WindowsMorpher._uninstall_command({"app2_name": "none"}) is None


def test_driver_install_script_has_both_pnputil_syntaxes() -> None:
    script = WindowsMorpher._pnputil_script()
    assert 'pnputil.exe /add-driver "%SystemRoot%\\Drivers\\VirtIO\\*.inf" /subdirs /install' \
        in script
    assert 'do pnputil.exe -i -a "%%I"' in script
