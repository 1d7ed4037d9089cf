"""The ``libvirt`` provider (entry point ``libvirt``): the endpoint, source and destination
sides of ``endpoint``, ``source`` and ``destination``, and the minion pools of ``minions``,
in one class."""

from __future__ import annotations

from coriolis.providers.base import MinionPoolProvider
from coriolis.providers.libvirt.destination import LibvirtDestination
from coriolis.providers.libvirt.endpoint import LibvirtEndpoint
from coriolis.providers.libvirt.minions import LibvirtMinionPools
from coriolis.providers.libvirt.source import LibvirtSource
from coriolis.providers.libvirt.source_minions import LibvirtSourceMinions


class LibvirtProvider(LibvirtSourceMinions, LibvirtMinionPools, LibvirtEndpoint, LibvirtSource,
                      LibvirtDestination, MinionPoolProvider):
    """KVM/QEMU hosts managed by libvirt (``qemu:///system``, ``qemu+ssh://``,
    ``qemu+tls://``)."""
