"""Every cleanup is idempotent and leaves nothing on the backend: called twice, with what an
interrupted call left (the same call repeated with the same ``transfer_id``, a result that
was never recorded), or after a half-made deploy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from coriolis.providers.base import BaseProvider, Capability
from tests.providers.backends import Backend, Instance
from tests.providers.conftest import need
from tests.providers.test_writer import Volumes, storage_choice


def test_source_resources(provider: BaseProvider, backend: Backend, transfer_id: str) -> None:
    """Deployed twice for the same transfer (the first result lost, as after a crash), then
    deleted twice knowing only the export info and the transfer id: nothing stays."""
    need(provider, Capability.EXPORT)
    p: Any = provider
    info, env = backend.connection_info(), backend.source_env()
    instance = backend.create_instance(
        Instance("kit-src", (backend.source_disk(backend.formats[-1], 40),)))
    with_instance = backend.inventory()
    export_info = p.get_instance(info, env, instance)
    p.deploy_source_resources(info, env, export_info, transfer_id=transfer_id)
    resources = p.deploy_source_resources(info, env, export_info, transfer_id=transfer_id)
    lost = {"export_info": export_info, "transfer_id": transfer_id}
    for _ in range(2):
        p.delete_source_resources(info, env, lost)
    assert backend.inventory() == with_instance, "what a lost deploy made was left behind"
    for _ in range(2):
        p.delete_source_resources(info, env, {**resources, **lost})
    p.delete_source_resources(info, env, {})
    assert backend.inventory() == with_instance


@pytest.mark.parametrize("storage", [0, 1, 2])
def test_disks_and_target_resources(provider: BaseProvider, backend: Backend, storage: int,
                                    transfer_id: str) -> None:
    """create_disks repeated for the same transfer (the first result lost) replaces what the
    first made; delete_target_resources and delete_disks twice; nothing stays."""
    need(provider, Capability.IMPORT)
    env = backend.destination_env(storage_choice(backend, storage))
    before = backend.inventory()
    disks = (backend.sample_disk("raw", 41),)
    Volumes(provider, backend, env, disks, transfer_id)  # its volumes_info lost
    volumes = Volumes(provider, backend, env, disks, transfer_id)
    target = volumes.deploy()
    for _ in range(2):
        volumes.undeploy(target)
    volumes.undeploy({})
    for _ in range(2):
        volumes.delete()
    assert backend.inventory() == before, "disks of a repeated create_disks were left behind"


@contextlib.contextmanager
def destination_volumes(provider: BaseProvider, backend: Backend,
                        transfer_id: str) -> Iterator[Volumes]:
    """One volume on the default storage; deleted (twice) after, and then nothing may be
    left on the backend."""
    before = backend.inventory()
    volumes = Volumes(provider, backend, backend.destination_env(),
                      (backend.sample_disk("raw", 42),),
                      transfer_id)
    try:
        yield volumes
    finally:
        for _ in range(2):
            volumes.delete()
    assert backend.inventory() == before, "the instance, its disks or resources were left"


@pytest.mark.parametrize("finalized", [False, True], ids=["half-made", "finalized"])
def test_instance_deployment(provider: BaseProvider, backend: Backend, finalized: bool,
                             transfer_id: str, caps: frozenset[Capability]) -> None:
    """deploy_instance (twice for the same transfer) then, without or after
    finalize_instance (twice), cleanup_failed_instance twice: nothing stays. A deployed
    instance is not listed until finalized."""
    need(provider, Capability.IMPORT)
    p: Any = provider
    with destination_volumes(provider, backend, transfer_id) as volumes:
        info, env = volumes.info, volumes.env
        for clone in (False, True):
            p.deploy_instance(info, env, volumes.export_info, volumes.volumes, clone_disks=clone,
                              transfer_id=transfer_id)
            deployed = p.deploy_instance(info, env, volumes.export_info, volumes.volumes,
                                         clone_disks=clone, transfer_id=transfer_id)
            name = env.get("instance_name") or volumes.export_info["name"]
            if Capability.INSTANCES in caps:
                listed = [i.get("name") for i in p.list_instances(info, {})]
                assert name not in listed, "a deployed instance is listed before finalize"
            if finalized:
                result = p.finalize_instance(info, env, deployed)
                assert p.finalize_instance(info, env, deployed) == result
                if Capability.INSTANCES in caps:
                    assert name in [i.get("name") for i in p.list_instances(info, {})]
            for _ in range(2):
                p.cleanup_failed_instance(info, env, deployed)
            p.cleanup_failed_instance(info, env, {})


def test_os_morphing_resources(provider: BaseProvider, backend: Backend,
                               transfer_id: str) -> None:
    need(provider, Capability.IMPORT, Capability.OS_MORPHING)
    p: Any = provider
    with destination_volumes(provider, backend, transfer_id) as volumes:
        info, env = volumes.info, volumes.env
        deployed = p.deploy_instance(info, env, volumes.export_info, volumes.volumes,
                                     transfer_id=transfer_id)
        resources = p.deploy_os_morphing_resources(info, env, deployed)
        assert len(resources["disks"]) == 1, resources
        for _ in range(2):
            p.delete_os_morphing_resources(info, env, resources)
        p.delete_os_morphing_resources(info, env, {})
        p.cleanup_failed_instance(info, env, deployed)
