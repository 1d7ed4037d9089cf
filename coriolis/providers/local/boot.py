"""Boot an instance of a local cloud with qemu, as its hypervisor would: the disk bus and NIC
model of its instance.json, user-mode networking (DHCP from qemu, no host network needed),
the serial console captured to a file.

Acceleration: ``CORIOLIS_QEMU_ACCEL`` (default ``tcg``, software emulation, which works
everywhere; ``kvm`` where KVM works).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from coriolis import exceptions
from coriolis.providers.local.cloud import LocalCloud

NIC_DEVICES = {"virtio": "virtio-net-pci", "e1000": "e1000", "rtl8139": "rtl8139"}


def qemu_argv(cloud: LocalCloud, name: str, serial_log: Path) -> list[str]:
    desc = cloud.load_instance(name)
    if desc["firmware"] == "uefi":
        raise exceptions.InvalidInput(f"instance '{name}': UEFI boot is not supported here")
    argv = ["qemu-system-x86_64", "-accel", os.environ.get("CORIOLIS_QEMU_ACCEL", "tcg"),
            "-m", str(desc["memory_mb"]), "-smp", str(desc["cpus"]), "-display", "none",
            "-monitor", "none", "-serial", f"file:{serial_log}", "-no-reboot"]
    buses = {d.get("bus", "virtio") for d in desc["disks"]}
    if "sata" in buses:
        argv += ["-device", "ahci,id=ahci"]
    if "scsi" in buses:
        argv += ["-device", "virtio-scsi-pci,id=scsi"]
    for i, disk in enumerate(desc["disks"]):
        path, fmt, bus = cloud.disk_path(name, disk), disk.get("format", "raw"), disk.get("bus")
        drive = f"file={path},format={fmt},id=d{i}"
        if bus in (None, "virtio"):
            argv += ["-drive", f"{drive},if=virtio"]
        elif bus == "ide":
            argv += ["-drive", f"{drive},if=ide"]
        else:
            device = f"ide-hd,drive=d{i},bus=ahci.{i}" if bus == "sata" \
                else f"scsi-hd,drive=d{i},bus=scsi.0"
            argv += ["-drive", f"{drive},if=none", "-device", device]
    for nic in desc["nics"]:
        model = NIC_DEVICES[nic.get("model", "virtio")]
        argv += ["-nic", f"user,model={model}" + (f",mac={nic['mac']}" if nic.get("mac") else "")]
    return argv


@dataclass
class BootResult:
    serial: str
    reason: str  # "marker", "failure", "exited" or "timeout"
    seconds: float


def boot(cloud: LocalCloud, name: str, serial_log: Path, *, timeout: float,
         until: tuple[str, ...] = (), fail_on: tuple[str, ...] = ()) -> BootResult:
    """Run the instance until its serial console shows one of ``until`` (and the guest powers
    off, or 30 s more), one of ``fail_on``, qemu exits, or ``timeout``; then stop it."""
    argv = qemu_argv(cloud, name, serial_log)
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reason, deadline = "timeout", start + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                reason = "exited"
                break
            text = serial_log.read_text(errors="replace") if serial_log.exists() else ""
            if reason != "marker" and any(m in text for m in until):
                reason, deadline = "marker", min(deadline, time.monotonic() + 30)
            elif any(m in text for m in fail_on):
                reason = "failure"
                break
            time.sleep(0.5)
        if reason == "exited" and proc.returncode != 0:
            raise exceptions.ProviderError(
                f"qemu failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}"
                if proc.stderr else f"qemu failed ({proc.returncode})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    serial = serial_log.read_text(errors="replace") if serial_log.exists() else ""
    if reason == "exited" and any(m in serial for m in until):
        reason = "marker"
    return BootResult(serial, reason, time.monotonic() - start)
