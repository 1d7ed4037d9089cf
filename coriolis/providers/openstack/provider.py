"""The ``openstack`` provider (entry point ``openstack``): Keystone endpoint, Nova servers as
sources and destinations, Cinder volumes as disks, Neutron networks."""

from __future__ import annotations

from coriolis.providers.openstack.destination import OpenStackDestination
from coriolis.providers.openstack.endpoint import OpenStackEndpoint
from coriolis.providers.openstack.source import OpenStackSource


class OpenStackProvider(OpenStackEndpoint, OpenStackSource, OpenStackDestination):
    """An OpenStack cloud through openstacksdk: Keystone v3 password or application
    credential, Nova, Cinder v3 (volumes opened as files of an NFS share this server's hosts
    mount), Neutron, Glance."""
