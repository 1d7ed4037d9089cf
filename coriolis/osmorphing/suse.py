"""SUSE (SLES, openSUSE): dracut, grub2-mkconfig, rpm; wicked or NetworkManager."""

from __future__ import annotations

from coriolis.osmorphing import network
from coriolis.osmorphing.redhat import DracutMorpher


class SuseMorpher(DracutMorpher):
    family = "SUSE"
    network_tools = [network.NetworkManagerKeyfile, network.Wicked]
    min_major = {"sles": 12, "opensuse": 15, "opensuse-leap": 15}

    def default_network_tool(self) -> type[network.NetworkTool]:
        installed = self.guest.installed_packages()
        if "wicked" not in installed and "NetworkManager" in installed:
            return network.NetworkManagerKeyfile
        return network.Wicked
