"""The upstream provider type bits (``GET /providers``, ``coriolis provider list``) come from
the capability interfaces a provider class inherits, and plugin providers are found through
the ``coriolis.providers`` entry points."""

from __future__ import annotations

from typing import Any

import pytest

from coriolis import constants as c
from coriolis.providers import base, registry
from coriolis.providers.base import Capability


class Endpoint(base.BaseProvider):
    platform = "e"

    def connection_info_schema(self) -> base.JSON:
        return {}

    def validate_connection(self, connection_info: base.JSON) -> None:
        return None


def bits_of(*interfaces: type) -> int:
    return base.provider_types(type("P", (Endpoint, *interfaces), {}))


@pytest.mark.parametrize("interface, bits", [
    (base.InstancesProvider, c.PROVIDER_TYPE_ENDPOINT_INSTANCES),
    (base.NetworksProvider, c.PROVIDER_TYPE_ENDPOINT_NETWORKS),
    (base.StorageProvider, c.PROVIDER_TYPE_ENDPOINT_STORAGE),
    (base.SourceOptionsProvider, c.PROVIDER_TYPE_SOURCE_ENDPOINT_OPTIONS),
    (base.DestinationOptionsProvider, c.PROVIDER_TYPE_DESTINATION_ENDPOINT_OPTIONS),
    (base.ExportProvider, c.PROVIDER_TYPE_EXPORT | c.PROVIDER_TYPE_VALIDATE_MIGRATION_EXPORT),
    (base.ReplicaExportProvider,  # a replica export is an export too
     c.PROVIDER_TYPE_EXPORT | c.PROVIDER_TYPE_VALIDATE_MIGRATION_EXPORT
     | c.PROVIDER_TYPE_REPLICA_EXPORT | c.PROVIDER_TYPE_VALIDATE_REPLICA_EXPORT
     | c.PROVIDER_TYPE_SOURCE_REPLICA_UPDATE),
    (base.ImportProvider, c.PROVIDER_TYPE_IMPORT | c.PROVIDER_TYPE_VALIDATE_MIGRATION_IMPORT),
    (base.ReplicaImportProvider,
     c.PROVIDER_TYPE_IMPORT | c.PROVIDER_TYPE_VALIDATE_MIGRATION_IMPORT
     | c.PROVIDER_TYPE_REPLICA_IMPORT | c.PROVIDER_TYPE_VALIDATE_REPLICA_IMPORT
     | c.PROVIDER_TYPE_DESTINATION_REPLICA_UPDATE),
    (base.OSMorphingProvider, c.PROVIDER_TYPE_OS_MORPHING),
    (base.MinionPoolProvider, 0),  # pool bits go with a side: below
])
def test_each_interface_gives_its_bits(interface: Any, bits: int) -> None:
    assert bits_of(interface) == c.PROVIDER_TYPE_ENDPOINT | bits
    assert base.capabilities(type("P", (Endpoint, interface), {})) >= {interface.capability}


def test_minion_pool_bits_follow_the_sides() -> None:
    pool = base.MinionPoolProvider
    assert bits_of(pool, base.ExportProvider) & c.PROVIDER_TYPE_SOURCE_MINION_POOL
    assert not bits_of(pool, base.ExportProvider) & c.PROVIDER_TYPE_DESTINATION_MINION_POOL
    assert bits_of(pool, base.ImportProvider) & c.PROVIDER_TYPE_DESTINATION_MINION_POOL
    assert not bits_of(base.ImportProvider) & c.PROVIDER_TYPE_DESTINATION_MINION_POOL


def test_local_bits() -> None:
    """Everything but flavours and library setup (the validation, replica update and OS
    morphing bits are new with the capability interfaces; local minions are writer agents
    that write destination disks or serve source disks: both pool bits)."""
    assert registry.platforms()["local"] == 2095871 == sum(
        bit for name, bit in vars(c).items() if name.startswith("PROVIDER_TYPE_")
        and name not in {"PROVIDER_TYPE_INSTANCE_FLAVOR", "PROVIDER_TYPE_SETUP_LIBS"})


@pytest.mark.usefixtures("plugin_providers")
def test_plugin_providers_are_found_with_their_capabilities() -> None:
    found = registry.platforms()
    assert set(found) == {"local", "libvirt", "vmware_vsphere", "openstack", "srconly",
                          "dstonly", "nomorph"}
    assert base.capabilities(registry.get_provider("vmware_vsphere")) == {
        Capability.ENDPOINT, Capability.INSTANCES, Capability.NETWORKS, Capability.STORAGE,
        Capability.SOURCE_OPTIONS, Capability.EXPORT, Capability.REPLICA_EXPORT}
    assert found["srconly"] & c.PROVIDER_TYPE_EXPORT
    assert not found["srconly"] & (c.PROVIDER_TYPE_IMPORT | c.PROVIDER_TYPE_REPLICA_EXPORT
                                   | c.PROVIDER_TYPE_ENDPOINT_STORAGE)
    assert found["dstonly"] & c.PROVIDER_TYPE_IMPORT
    assert not found["dstonly"] & (c.PROVIDER_TYPE_EXPORT | c.PROVIDER_TYPE_REPLICA_IMPORT
                                   | c.PROVIDER_TYPE_ENDPOINT_INSTANCES)
    assert base.capabilities(registry.get_provider("nomorph")) == set(Capability) - {
        Capability.OS_MORPHING, Capability.MINION_POOL, Capability.SOURCE_OPTIONS}
