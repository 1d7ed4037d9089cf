"""What a Windows guest is, from libguestfs inspection and its hives.

libguestfs (``inspect_get_*``) gives the product name, variant (``Server``/``Client``),
version, architecture, system root and current control set; the build number comes from the
SOFTWARE hive (``Microsoft\\Windows NT\\CurrentVersion\\CurrentBuildNumber``) and the control
sets from the SYSTEM hive's root (``ControlSet001``, ``ControlSet002``, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from coriolis.osmorphing.windows.registry import open_hive

_CONTROL_SET = re.compile(r"^ControlSet\d{3}$", re.I)
# inspection's architecture → the folder name in virtio-win's layout
VIRTIO_ARCH = {"x86_64": "amd64", "i386": "x86", "aarch64": "ARM64"}


@dataclass
class WindowsInfo:
    product: str
    variant: str  # "Server" or "Client" (InstallationType)
    major: int
    minor: int
    build: int
    arch: str  # x86_64, i386, aarch64
    systemroot: str  # the guest path, e.g. /Windows
    current_control_set: str  # ControlSet001
    control_sets: list[str] = field(default_factory=list)
    system_hive: str = ""
    software_hive: str = ""

    @property
    def server(self) -> bool:
        return self.variant.lower() == "server"

    def virtio_os_dir(self) -> str:
        """The folder of this Windows' drivers in virtio-win (``2k19``, ``w10``, ...);
        ``ValueError`` for a Windows virtio-win has no drivers for."""
        version = (self.major, self.minor)
        if version == (10, 0):
            if self.server:
                return "2k22" if self.build >= 20348 else "2k19" if self.build >= 17763 \
                    else "2k16"
            return "w11" if self.build >= 22000 else "w10"
        older = {(6, 3): ("2k12R2", "w8.1"), (6, 2): ("2k12", "w8"), (6, 1): ("2k8R2", "w7")}
        if version not in older:
            raise ValueError(f"{self.product} ({self.major}.{self.minor}) is not a Windows "
                             "that virtio-win has drivers for")
        server, client = older[version]
        return server if self.server else client

    def virtio_arch(self) -> str:
        return VIRTIO_ARCH.get(self.arch, self.arch)

    def describe(self) -> str:
        return (f"{self.product} ({self.variant}, {self.major}.{self.minor} build {self.build}, "
                f"{self.arch}, {self.current_control_set})")


def inspect_windows(g: Any, root: str) -> WindowsInfo:
    """Inspect the Windows guest at ``root`` of a launched handle whose file systems are
    mounted."""
    system, software = (g.inspect_get_windows_system_hive(root),
                        g.inspect_get_windows_software_hive(root))
    with open_hive(g, software) as hive:
        key = "Microsoft\\Windows NT\\CurrentVersion"
        build = str(hive.get(key, "CurrentBuildNumber") or hive.get(key, "CurrentBuild") or 0)
        variant = hive.get(key, "InstallationType") or g.inspect_get_product_variant(root)
    with open_hive(g, system) as hive:
        control_sets = sorted(k for k in hive.subkeys("") if _CONTROL_SET.match(k))
    return WindowsInfo(
        product=g.inspect_get_product_name(root), variant=str(variant),
        major=g.inspect_get_major_version(root), minor=g.inspect_get_minor_version(root),
        build=int(build) if build.isdigit() else 0, arch=g.inspect_get_arch(root),
        systemroot=g.inspect_get_windows_systemroot(root),
        current_control_set=g.inspect_get_windows_current_control_set(root),
        control_sets=control_sets, system_hive=system, software_hive=software)
