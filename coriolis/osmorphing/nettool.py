"""What every guest network configuration tool is to OS morphing (``NetworkTool``): find the
source interfaces, bonds and VLANs; disable them; configure the destination ones. The tools
are in ``network`` (ifupdown, netplan) and ``network_rh`` (NetworkManager keyfiles, ifcfg,
wicked)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from coriolis.osmorphing.bonds import VirtualInterface
from coriolis.osmorphing.guest import EventLog, Guest

DISABLED = ".coriolis-disabled"


@dataclass
class SourceInterface:
    name: str | None  # None: the configuration does not name it (matched by pattern or MAC)
    mac: str | None
    file: str


def norm_mac(mac: str | None) -> str | None:
    return mac.strip().strip("'\"").lower() if mac else None


def kv_file(text: str) -> dict[str, str]:
    """KEY=value lines (ifcfg, wicked), quotes removed."""
    values = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2).strip().strip("'\"")
    return values


class NetworkTool:
    """One guest network configuration tool: how to find the source interfaces, disable
    them and configure the destination ones."""

    name = ""
    matches_by_mac = False  # can configure a NIC by MAC alone, leaving its name to the guest
    rebuilds_virtual = True  # writes bonds and VLANs (configure_bond, configure_vlan)

    def __init__(self, guest: Guest, log: EventLog) -> None:
        self.guest = guest
        self.log = log

    def in_use(self) -> bool:
        return bool(self.source_interfaces() or self.virtual_interfaces())

    def source_interfaces(self) -> list[SourceInterface]:
        """The physical (Ethernet) interfaces the guest configures."""
        raise NotImplementedError

    def virtual_interfaces(self) -> list[VirtualInterface]:
        """The bonds, VLANs and bridges the guest configures."""
        return []

    def disable_sources(self, interfaces: list[SourceInterface],
                        virtuals: Sequence[VirtualInterface] = ()) -> None:
        for file in sorted({i.file for i in interfaces} | {v.file for v in virtuals}):
            self._disable_file(file)

    def configure(self, name: str | None, mac: str | None) -> None:
        """DHCP on one NIC; ``name`` None (only when ``matches_by_mac``): by MAC."""
        raise NotImplementedError

    def configure_bond(self, bond: VirtualInterface, members: list[tuple[str, str | None]]) \
            -> None:
        """The bond with DHCP over ``members`` (name, MAC), which get no addresses."""
        raise NotImplementedError

    def configure_vlan(self, vlan: VirtualInterface) -> None:
        raise NotImplementedError

    def _disable_file(self, path: str) -> None:
        target = self._disabled_name(path)
        self.guest.rename(path, target)
        self.log(f"network: {path} (source interfaces) kept as {target}")

    def _disabled_name(self, path: str) -> str:
        return path + DISABLED

    def _files(self, folder: str, pattern: str) -> list[str]:
        if not self.guest.is_dir(folder):
            return []
        return [f"{folder}/{n}" for n in self.guest.listdir(folder) if re.fullmatch(pattern, n)]
