"""The ``vmware_vsphere`` provider (entry point ``vmware_vsphere``): vCenter Server or a
standalone ESXi host as a source.

Endpoint: ``connection.CONNECTION_SCHEMA`` (the seed's ``host``, ``port``, ``username``,
``password``, ``allow_untrusted``; or a ``ca_bundle`` / pinned ``thumbprint``);
``validate_connection`` logs in and says what answered (vCenter or ESXi, version).
Listings: ``inventory``. Exports: ``source``.
"""

from __future__ import annotations

from typing import Any

from coriolis.providers.base import (
    BaseProvider,
    InstancesProvider,
    NetworksProvider,
    SourceOptionsProvider,
    StorageProvider,
)
from coriolis.providers.vmware_vsphere import connection as conn
from coriolis.providers.vmware_vsphere import inventory
from coriolis.providers.vmware_vsphere.source import PLATFORM, VSphereSource

JSON = dict[str, Any]


class VSphereProvider(BaseProvider, InstancesProvider, NetworksProvider, StorageProvider,
                      SourceOptionsProvider, VSphereSource):
    """VMware vSphere (vCenter, ESXi) through pyVmomi and the datastore HTTP interface."""

    platform = PLATFORM

    def connection_info_schema(self) -> JSON:
        return conn.CONNECTION_SCHEMA

    def validate_connection(self, connection_info: JSON) -> str | None:
        with conn.connect(connection_info) as si:
            return f"{conn.describe(si)} at {connection_info['host']}"

    def list_instances(self, connection_info: JSON, env: JSON) -> list[JSON]:
        with conn.connect(connection_info) as si:
            return inventory.list_vms(si)

    def get_instance(self, connection_info: JSON, env: JSON, instance: str) -> JSON:
        with conn.connect(connection_info) as si:
            vm = inventory.find_vm(si, instance)
            return inventory.describe_vm(vm, inventory.portgroup_names(si))

    def list_networks(self, connection_info: JSON, env: JSON) -> list[JSON]:
        with conn.connect(connection_info) as si:
            return inventory.list_networks(si)

    def list_storage(self, connection_info: JSON, env: JSON) -> JSON:
        with conn.connect(connection_info) as si:
            return {"storage_backends": inventory.list_datastores(si), "config_default": None}

    def list_source_options(self, connection_info: JSON, env: JSON,
                            option_names: list[str] | None) -> list[JSON]:
        with conn.connect(connection_info) as si:
            options = inventory.source_options(si)
        return [o for o in options if not option_names or o["name"] in option_names]
