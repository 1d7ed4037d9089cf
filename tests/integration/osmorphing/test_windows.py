"""Windows OS morphing on the project's Windows test disks (coriolis.windows_image: NTFS,
SYSTEM and SOFTWARE hives made with hivex, a PE cmd.exe), through the same child process a
worker uses, with a virtio-win tree the tests make in virtio-win's layout.

Every registry value and file the morpher writes is read back from the morphed disk in a
fresh appliance. What these tests cannot show: that Windows boots with them (no Windows image
or licence here, and the drivers are stand-ins); see the README's Windows section.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coriolis import windows_image
from coriolis.osmorphing.appliance import GuestDisk, new_handle
from coriolis.osmorphing.guest import MorphingFailed
from coriolis.osmorphing.isolated import MorphRequest, morph_in_child
from coriolis.osmorphing.windows import firstboot, registry
from coriolis.osmorphing.windows.inspect import inspect_windows
from coriolis.osmorphing.windows.registry import open_hive

pytestmark = pytest.mark.timeout(1500)
NEW_MAC = "52:54:00:aa:bb:01"
CDDB = "Control\\CriticalDeviceDatabase\\"


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def overlay(base: Path, tmp_path: Path) -> Path:
    path = tmp_path / "dest.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                    str(path)], check=True)
    return path


def morph(disk: Path, profile: dict[str, Any], scripts: dict[str, Any] | None = None,
          source_macs: list[str | None] | None = None) -> list[str]:
    events: list[str] = []
    request = MorphRequest(disks=[GuestDisk(str(disk), "qcow2", "disk0")], profile=profile,
                           instance="vm1", source_macs=source_macs or [],
                           user_scripts=scripts or {})
    try:
        morph_in_child(request, events.append, lambda: False)
    except MorphingFailed as exc:
        events.append(f"FAILED: {exc}")
    return events


@pytest.fixture(scope="module")
def virtio_win(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return windows_image.make_virtio_win_tree(tmp_path_factory.mktemp("virtio-win"))


def test_server_2019_morphed_for_virtio_and_every_change_read_back(
        tmp_path: Path, virtio_win: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = windows_image.build("win2k19")
    before = sha256(base)
    disk = overlay(base, tmp_path)
    monkeypatch.setenv("CORIOLIS_VIRTIO_WIN", str(virtio_win))
    msi = tmp_path / "CloudbaseInitSetup_x64.msi"
    msi.write_bytes(b"stand-in cloudbase-init installer\n")
    monkeypatch.setenv("CORIOLIS_CLOUDBASE_INIT_MSI", str(msi))
    profile = {"platform": "openstack", "disk_bus": "virtio", "nic_model": "virtio",
               "nics": [{"mac": NEW_MAC}], "keep_static_ips": True,
               "cloud_init_datasources": ["OpenStack"]}
    events = morph(disk, profile, {"global": {"windows": "#ps1\nWrite-Output hello\n"}},
                   [windows_image.SOURCE_MAC])
    text = "\n".join(events)
    assert not [e for e in events if e.startswith("FAILED")], text
    assert "Windows Server 2019 Standard (Server, 10.0 build 17763, x86_64, ControlSet001)" \
        in text
    assert f"virtio-win {virtio_win}: found viostor, netkvm (needed) for 2k19/amd64; " \
           "also balloon, vioscsi" in text
    assert "boot: viostor (virtio-blk disks) is a boot-start driver" in text
    assert "VMware Tools (vmware) will be uninstalled at the first boot" in text
    assert f"static 192.168.50.10 → the NIC with MAC {NEW_MAC}" in text
    assert "cloudbase-init: CloudbaseInitSetup_x64.msi copied; installed at the first boot" \
        in text
    assert sha256(base) == before  # the source disk is unchanged

    g = new_handle()
    try:
        g.add_drive_opts(str(disk), format="qcow2", readonly=True)
        g.launch()
        root = g.inspect_os()[0]
        g.mount_ro(root, "/")
        info = inspect_windows(g, root)
        assert (info.product, info.variant, info.build, info.arch, info.control_sets) == (
            "Windows Server 2019 Standard", "Server", 17763, "x86_64",
            ["ControlSet001", "ControlSet002"])
        with open_hive(g, info.system_hive) as system:
            for cs in info.control_sets:
                service = f"{cs}\\Services\\viostor"
                assert [system.get(service, n) for n in (
                    "Type", "Start", "ErrorControl", "Group", "ImagePath")] == [
                    1, 0, 1, "SCSI miniport", "system32\\drivers\\viostor.sys"]
                assert system.values(service)["ImagePath"][0] == registry.REG_EXPAND_SZ
                for device in ("pci#ven_1af4&dev_1001&subsys_00021af4&rev_00",
                               "pci#ven_1af4&dev_1042&subsys_11001af4&rev_01"):
                    assert system.get(f"{cs}\\{CDDB}{device}", "Service") == "viostor"
                    assert system.get(f"{cs}\\{CDDB}{device}", "ClassGUID") == \
                        "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
                assert system.node(f"{cs}\\Services\\netkvm") is None  # PnP installs it
                first = f"{cs}\\Services\\{firstboot.SERVICE}"
                assert [system.get(first, n) for n in (
                    "Type", "Start", "ErrorControl", "ObjectName", "ImagePath")] == [
                    0x10, 2, 0, "LocalSystem", firstboot.image_path()]
                # what the source had stays
                assert system.get(f"{cs}\\Services\\VMTools", "Start") == 2
        with open_hive(g, info.software_hive) as software:
            assert software.get("Microsoft\\Windows\\CurrentVersion", "DevicePath") == (
                "%SystemRoot%\\inf;%SystemRoot%\\Drivers\\VirtIO\\viostor;"
                "%SystemRoot%\\Drivers\\VirtIO\\netkvm;%SystemRoot%\\Drivers\\VirtIO\\balloon;"
                "%SystemRoot%\\Drivers\\VirtIO\\vioscsi")
        drivers = {"viostor": "viostor", "netkvm": "NetKVM", "balloon": "Balloon",
                   "vioscsi": "vioscsi"}
        for name, folder in drivers.items():
            for ext in ("inf", "sys", "cat"):
                written = bytes(g.read_file(f"/Windows/Drivers/VirtIO/{name}/{name}.{ext}"))
                assert written == (virtio_win / folder / "2k19/amd64" / f"{name}.{ext}") \
                    .read_bytes()
        assert bytes(g.read_file("/Windows/System32/drivers/viostor.sys")) == \
            windows_image.driver_sys("viostor", "2k19", "amd64")
        assert not g.exists("/Windows/System32/drivers/netkvm.sys")
        folder = firstboot.FOLDER
        assert bytes(g.read_file(f"{folder}/firstboot.cmd")) == firstboot.crlf(firstboot.RUNNER)
        scripts = {n: bytes(g.read_file(f"{folder}/scripts/{n}")).decode()
                   for n in g.ls(f"{folder}/scripts")}
        assert sorted(scripts) == ["01-install-virtio-drivers.cmd", "02-remove-vmware.cmd",
                                   "03-cloudbase-init.cmd", "04-static-ips.ps1",
                                   "05-user-global-windows.ps1"]
        assert "pnputil.exe /add-driver" in scripts["01-install-virtio-drivers.cmd"]
        assert f"msiexec.exe /x {windows_image.VMWARE_TOOLS_CODE} /qn" in \
            scripts["02-remove-vmware.cmd"]
        assert bytes(g.read_file(f"{folder}/{msi.name}")) == msi.read_bytes()
        assert f'msiexec.exe /i "{firstboot.WINDOWS_FOLDER}\\{msi.name}" /qn' in \
            scripts["03-cloudbase-init.cmd"]
        static = scripts["04-static-ips.ps1"]
        assert "MacAddress -eq '52-54-00-AA-BB-01'" in static
        assert "-IPAddress 192.168.50.10 -PrefixLength 24 -DefaultGateway 192.168.50.1" in static
        assert "-ServerAddresses '192.168.50.2','192.168.50.3'" in static
        assert scripts["05-user-global-windows.ps1"] == "#ps1\r\nWrite-Output hello\r\n"
    finally:
        g.close()


def test_missing_driver_is_refused_by_name_and_nothing_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = windows_image.build("win10")
    tree = windows_image.make_virtio_win_tree(tmp_path / "virtio-win", os_dirs=("w10",),
                                              drivers=("viostor", "NetKVM"))
    monkeypatch.setenv("CORIOLIS_VIRTIO_WIN", str(tree))
    disk = overlay(base, tmp_path)
    profile = {"platform": "libvirt", "disk_bus": "scsi", "nic_model": "virtio"}
    events = morph(disk, profile)
    assert "Windows 10 Pro (Client, 10.0 build 19045, x86_64, ControlSet001)" in events[1]
    failure = events[-1]
    assert failure.startswith("FAILED: the destination needs drivers that "
                              f"CORIOLIS_VIRTIO_WIN={tree} does not have for Windows 10 Pro "
                              "(w10, amd64): vioscsi (virtio-scsi disks; looked for "
                              "vioscsi/w10/amd64/vioscsi.inf"), failure
    assert "netkvm" not in failure.split(":", 2)[2]  # only the missing one is named
    compare = subprocess.run(["qemu-img", "compare", "-q", str(disk), str(base)])
    assert compare.returncode == 0  # nothing written


@pytest.fixture(scope="module")
def unsafe_disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = windows_image.build("win2k19")
    folder = tmp_path_factory.mktemp("unsafe")
    disks = {}
    for kind, mark in (("bitlocker", windows_image.mark_bitlocker),
                       ("dynamic", windows_image.mark_dynamic),
                       ("dirty", windows_image.mark_ntfs_dirty),
                       ("hibernated", windows_image.mark_hibernated)):
        disks[kind] = folder / f"{kind}.raw"
        subprocess.run(["cp", "--sparse=always", str(base), str(disks[kind])], check=True)
        mark(disks[kind])
    return disks


@pytest.mark.parametrize("kind,reason,remedy", [
    ("bitlocker", "partition 1 is a BitLocker-encrypted volume", "manage-bde -off C:"),
    ("dynamic", "is a Windows dynamic disk (partition type 0x42)", "convert basic"),
    ("dirty", "is marked dirty or inconsistent", "chkdsk C: /f"),
    ("hibernated", "is hibernated (Windows was hibernated or shut down with fast startup on)",
     "powercfg /h off"),
])
def test_unsafe_disks_are_refused_before_any_change(
        unsafe_disks: dict[str, Path], tmp_path: Path, kind: str, reason: str,
        remedy: str) -> None:
    disk = tmp_path / "copy.raw"
    subprocess.run(["cp", "--sparse=always", str(unsafe_disks[kind]), str(disk)], check=True)
    before = sha256(disk)
    request = MorphRequest(disks=[GuestDisk(str(disk), "raw", "disk0")],
                           profile={"platform": "libvirt"}, instance="vm1")
    events: list[str] = []
    with pytest.raises(MorphingFailed) as failed:
        morph_in_child(request, events.append, lambda: False)
    assert reason in str(failed.value) and remedy in str(failed.value)
    assert not [e for e in events if "morpher for" in e]
    assert sha256(disk) == before
