"""Errors are ``CoriolisError``s that name the thing at fault and contain no secret of the
connection info."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from coriolis import exceptions
from coriolis.providers.base import BaseProvider, Capability
from tests.providers.backends import Backend, Instance
from tests.providers.conftest import need
from tests.providers.kit import assert_no_secret
from tests.providers.test_writer import Volumes, export_info_for


def assert_error_names(call: Callable[[], Any], backend: Backend, *names: str) -> None:
    """``call`` raises a ``CoriolisError`` whose message names one of ``names``."""
    with pytest.raises(exceptions.CoriolisError) as caught:
        call()
    message = str(caught.value)
    assert any(name in message for name in names), f"the error names none of {names}: " \
                                                   f"{message}"
    assert_no_secret(message, backend.secrets(), "the error")


def test_missing_source_instance(provider: BaseProvider, backend: Backend) -> None:
    need(provider, Capability.EXPORT)
    p: Any = provider
    assert_error_names(lambda: p.validate_source_inputs(
        backend.connection_info(), backend.source_env(), "kit-absent"), backend, "kit-absent")


def test_bad_source_disk(provider: BaseProvider, backend: Backend, transfer_id: str) -> None:
    """An export_info whose disk no longer matches the backend (its provider keys point at
    nothing): deploying the source resources fails naming the instance or the disk."""
    need(provider, Capability.EXPORT)
    p: Any = provider
    info, env = backend.connection_info(), backend.source_env()
    instance = backend.create_instance(
        Instance("kit-baddisk", (backend.source_disk("raw", 50),)))
    with_instance = backend.inventory()
    export_info = p.get_instance(info, env, instance)
    disk = export_info["devices"]["disks"][0]
    changed = [key for key, value in disk.items()
               if isinstance(value, str) and key not in ("id", "format", "bus")]
    if not changed:
        pytest.skip(f"the {provider.platform} disks carry no key that locates them")
    for key in changed:
        disk[key] += "-kit-missing"

    def deploy() -> None:
        resources = p.deploy_source_resources(info, env, export_info, transfer_id=transfer_id)
        p.delete_source_resources(info, env, resources)

    assert_error_names(deploy, backend, instance, disk["id"],
                       *(disk[key] for key in changed))
    assert backend.inventory() == with_instance, "a failed deploy left something behind"


@pytest.mark.parametrize("case", ["unmapped network", "unknown mapped network",
                                  "unknown storage"])
def test_bad_destination_inputs(provider: BaseProvider, backend: Backend, case: str) -> None:
    need(provider, Capability.IMPORT)
    p: Any = provider
    env = backend.destination_env()
    export_info = export_info_for("kit-dst", (backend.sample_disk("raw", 51),))
    if case == "unmapped network":
        export_info["devices"]["nics"][0]["network_name"] = name = "kit-no-such-lan"
    elif case == "unknown mapped network":
        env["network_map"] = {"lan": (name := "kit-no-such-net")}
    else:
        env["storage_mappings"] = {"default": (name := "kit-no-such-storage"),
                                   "backend_mappings": [], "disk_mappings": []}
    assert_error_names(lambda: p.validate_destination_inputs(
        backend.connection_info(), env, export_info), backend, name)


def test_missing_target_volume(provider: BaseProvider, backend: Backend,
                               transfer_id: str) -> None:
    """Target resources of volumes that were deleted: an error naming the volume."""
    need(provider, Capability.IMPORT)
    volumes = Volumes(provider, backend, backend.destination_env(),
                      (backend.sample_disk("raw", 52),),
                      transfer_id)
    volumes.delete()
    volume = volumes.volumes[0]
    names = [volume["disk_id"], str(volume.get("volume_id"))]

    def deploy() -> None:
        volumes.undeploy(volumes.deploy())

    assert_error_names(deploy, backend, *names)
