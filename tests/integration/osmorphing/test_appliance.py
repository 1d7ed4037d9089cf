"""libguestfs on a real Debian guest disk (the cached image of coriolis.guest_image, through
a qcow2 overlay so the image stays as built): inspection, and commands run in the guest."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from coriolis import guest_image
from coriolis.osmorphing.appliance import GuestDisk, open_guest
from coriolis.osmorphing.guest import MorphingFailed

pytestmark = pytest.mark.timeout(1200)


def test_inspection_and_commands_in_the_guest(tmp_path: Path) -> None:
    image = guest_image.build()
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F",
                    "qcow2", str(overlay)], check=True)
    with open_guest([GuestDisk(str(overlay), "qcow2", "disk0")]) as guest:
        assert (guest.os.type, guest.os.distro, guest.os.major) == ("linux", "debian", 12)
        assert guest.os.mountpoints == {"/": "/dev/sda1"}
        assert guest.os.describe().startswith("Debian 12.")
        assert "open-vm-tools" in guest.installed_packages()
        assert "/dev/sda1 / ext4" in guest.read_text("/etc/fstab")
        assert guest.run("cat /etc/hostname; echo to-stderr >&2") == "source-vm\nto-stderr\n"
        with pytest.raises(MorphingFailed) as failed:
            guest.run("echo step one; echo it broke >&2; exit 3")
        assert "exited with status 3" in str(failed.value)
        assert "step one\nit broke" in str(failed.value)
        guest.write_text("/etc/coriolis-test", "written\n")
    assert image.stat().st_size > 0
    with open_guest([GuestDisk(str(overlay), "qcow2", "disk0")]) as guest:
        assert guest.read_text("/etc/coriolis-test") == "written\n"  # synced and unmounted
