"""OS morphing of a Debian 12 guest: our Debian morpher against virt-customize doing the core
of the same work, on the same disk, one after the other.

Each run takes a fresh qcow2 overlay of the cached test guest (coriolis.guest_image) per tool.
Ours: the appliance, inspection, and every built-in step (fstab, network, agents, grub,
initramfs). The reference: `virt-customize` (libguestfs-tools) with the same appliance settings,
rewriting fstab by UUID, adding the virtio modules, purging open-vm-tools, then
`update-initramfs -u -k all` and `update-grub`. Printed: seconds per run, medians, and the
ratio ours ÷ virt-customize.

    .venv/bin/python benchmarks/os_morphing.py [--runs 3]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from coriolis import guest_image
from coriolis.harness import bench_parser
from coriolis.osmorphing.appliance import GuestDisk, open_guest
from coriolis.osmorphing.morph import morph_guest
from coriolis.osmorphing.profile import DestinationProfile

VIRT_CUSTOMIZE_SCRIPT = (
    "sed -i \"s|^/dev/sda1 |UUID=$(blkid -s UUID -o value /dev/sda1) |\" /etc/fstab && "
    "printf 'virtio_pci\\nvirtio_blk\\nvirtio_scsi\\nvirtio_net\\nvirtio_console\\n' "
    ">> /etc/initramfs-tools/modules && "
    "DEBIAN_FRONTEND=noninteractive dpkg --purge open-vm-tools && "
    "sed -i 's/^GRUB_DISABLE_LINUX_UUID=true/GRUB_DISABLE_LINUX_UUID=false/' /etc/default/grub && "
    "update-initramfs -u -k all && update-grub")


def overlay(base: Path, path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(path)], check=True)
    return path


def ours(disk: Path) -> float:
    start = time.monotonic()
    profile = DestinationProfile.from_json({"platform": "local",
                                            "nics": [{"mac": "52:54:00:12:34:56"}]})
    with open_guest([GuestDisk(str(disk), "qcow2", "disk0")]) as guest:
        morph_guest(guest, profile, lambda _m: None, source_macs=["52:54:00:12:34:56"])
    return time.monotonic() - start


def virt_customize(disk: Path) -> float:
    env = {**os.environ, "LIBGUESTFS_BACKEND": os.environ.get("CORIOLIS_LIBGUESTFS_BACKEND",
                                                               "direct"),
           "LIBGUESTFS_BACKEND_SETTINGS": os.environ.get(
               "CORIOLIS_LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")}
    start = time.monotonic()
    subprocess.run(["virt-customize", "-q", "-m", "1024", "--smp", "2", "-a", str(disk),
                    "--run-command", VIRT_CUSTOMIZE_SCRIPT], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0], runs=3)
    args = parser.parse_args()
    base = guest_image.build()
    times: dict[str, list[float]] = {"coriolis": [], "virt-customize": []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for name, tool in (("coriolis", ours), ("virt-customize", virt_customize)):
                seconds = tool(overlay(base, Path(tmp) / f"{name}-{run}.qcow2"))
                times[name].append(seconds)
                print(f"run {run + 1}: {name:15s} {seconds:6.1f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"median {name:15s} {value:6.1f} s")
    print(f"ratio coriolis ÷ virt-customize: {medians['coriolis'] / medians['virt-customize']:.2f}")


if __name__ == "__main__":
    main()
