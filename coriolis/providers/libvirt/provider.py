"""The ``libvirt`` provider (entry point ``libvirt``): the endpoint, source and destination
sides of ``endpoint``, ``source`` and ``destination`` in one class."""

from __future__ import annotations

from coriolis.providers.libvirt.destination import LibvirtDestination
from coriolis.providers.libvirt.endpoint import LibvirtEndpoint
from coriolis.providers.libvirt.source import LibvirtSource


class LibvirtProvider(LibvirtEndpoint, LibvirtSource, LibvirtDestination):
    """KVM/QEMU hosts managed by libvirt (``qemu:///system``, ``qemu+ssh://``,
    ``qemu+tls://``)."""
