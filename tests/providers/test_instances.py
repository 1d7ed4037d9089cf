"""Instances, networks and storage: listings that a malformed instance does not break, the
shape of ``export_info``, ``InstanceNotFound`` naming what is missing."""

from __future__ import annotations

import pytest

from coriolis import exceptions
from coriolis.providers.base import BaseProvider, Capability
from tests.providers.backends import Backend, Instance
from tests.providers.conftest import need
from tests.providers.kit import SUMMARY, assert_no_secret, check_export_info, check_shape


def test_listing_tolerates_a_malformed_instance(provider: BaseProvider,
                                                backend: Backend) -> None:
    need(provider, Capability.INSTANCES)
    good = backend.create_instance(
        Instance("kit-good", (backend.source_disk(backend.formats[0], 1),)))
    bad = backend.create_malformed_instance("kit-broken")
    listed = provider.list_instances(backend.connection_info(), backend.source_env())
    by_id = {i.get("id"): i for i in listed}
    assert good in by_id, f"the good instance is not listed: {listed}"
    check_shape(by_id[good], SUMMARY, "instance summary")
    for summary in listed:
        if summary.get("id") == bad:
            assert summary.get("error"), f"the malformed instance is listed without an error: " \
                                         f"{summary}"
            assert_no_secret(summary, backend.secrets(), "the malformed instance's summary")


def test_get_instance_shape(provider: BaseProvider, backend: Backend) -> None:
    need(provider, Capability.INSTANCES)
    disks = tuple(backend.source_disk(fmt, i) for i, fmt in enumerate(backend.formats))
    instance = backend.create_instance(Instance("kit-shape", disks, network="lan"))
    info = provider.get_instance(backend.connection_info(), backend.source_env(), instance)
    check_export_info(info)
    assert [d["size_bytes"] for d in info["devices"]["disks"]] == [d.size for d in disks]
    assert len({d["id"] for d in info["devices"]["disks"]}) == len(disks), "disk ids repeat"
    assert [n["network_name"] for n in info["devices"]["nics"]] == [backend.network_name("lan")]
    assert_no_secret(info, backend.secrets(), "export_info")


@pytest.mark.parametrize("which", ["missing", "malformed"])
def test_get_instance_not_found(provider: BaseProvider, backend: Backend, which: str) -> None:
    """``InstanceNotFound`` naming a missing instance; a malformed one is that or
    ``InvalidInput`` naming it (``local`` refuses a disk that leads out of its folder so)."""
    need(provider, Capability.INSTANCES)
    name = "kit-nothing-here"
    expected: tuple[type[Exception], ...] = (exceptions.InstanceNotFound,)
    if which == "malformed":
        name = backend.create_malformed_instance("kit-malformed")
        expected = (exceptions.InstanceNotFound, exceptions.InvalidInput)
    with pytest.raises(expected) as caught:
        provider.get_instance(backend.connection_info(), backend.source_env(), name)
    assert name in str(caught.value), f"the error does not name {name}: {caught.value}"
    assert_no_secret(str(caught.value), backend.secrets(), "the error")


def test_networks_and_storage(provider: BaseProvider, backend: Backend,
                              caps: frozenset[Capability]) -> None:
    if Capability.NETWORKS not in caps and Capability.STORAGE not in caps:
        pytest.skip(f"provider '{provider.platform}' lacks the 'networks' and 'storage' "
                    "capabilities")
    info = backend.connection_info()
    if Capability.NETWORKS in caps:
        for network in provider.list_networks(info, {}):  # type: ignore[attr-defined]
            check_shape(network, {"id": str, "name": str}, "network")
    if Capability.STORAGE in caps:
        storage = provider.list_storage(info, {})  # type: ignore[attr-defined]
        assert isinstance(storage.get("storage_backends"), list), storage
        for item in storage["storage_backends"]:
            check_shape(item, {"id": str, "name": str}, "storage backend")

