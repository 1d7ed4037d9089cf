"""Providers with some capabilities only (the test plugins of tests/fixtures/plugins, found
through their entry points): a transfer whose endpoints' providers lack a capability its
tasks need is refused before anything is stored, naming the endpoint, the provider and the
capability; an endpoint operation without its capability is refused too; and a source-only
or destination-only provider moves real disks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis import constants as c
from coriolis import exceptions
from coriolis.bus.base import EndpointRef
from coriolis.config import Settings
from coriolis.context import RequestContext
from coriolis.db import models
from coriolis.service import Services, build_all_in_one
from tests.integration.engine.test_conductor import disks, same, wait_execution


@pytest.fixture
def services(plugin_providers: None, tmp_path: Path) -> Iterator[Services]:
    """The all-in-one services, started once the plugins are installed (the in-process
    worker records the providers it carries when it starts)."""
    svc = build_all_in_one(Settings(data_dir=tmp_path / "data"))
    try:
        yield svc
    finally:
        svc.close()


def endpoint(services: Services, project: str, name: str, platform: str, path: Path) -> str:
    with services.db.session() as session:
        row = models.Endpoint(project_id=project, name=name, type=platform,
                              connection_info_encrypted=services.box.encrypt_json(
                                  {"path": str(path)}))
        session.add(row)
        session.flush()
        return row.id


def transfer(ctx: RequestContext, services: Services, clouds: dict[str, Path],
             origin: str, destination: str, **extra: object) -> dict[str, object]:
    return {"origin_endpoint_id": endpoint(services, ctx.project_id, "src", origin,
                                           clouds["src"]),
            "destination_endpoint_id": endpoint(services, ctx.project_id, "dst", destination,
                                                clouds["dst"]),
            "instances": ["vm1"], "source_environment": {},
            "destination_environment": {"storage_backend": "bulk"},
            "network_map": {"lan": "prod"}, "skip_os_morphing": True, **extra}


def stored(services: Services) -> tuple[int, int]:
    with services.db.session() as session:
        return (session.query(models.TransferAction).count(),
                session.query(models.Execution).count())


@pytest.mark.parametrize("origin, destination, options", [
    ("srconly", "local", {"transfer_compression": "none"}),
    ("local", "dstonly", {"transfer_bandwidth_limit_mib": 500}),
])
def test_a_source_only_and_a_destination_only_provider_migrate(
        services, ctx, clouds, origin, destination, options) -> None:
    """The transfer options are part of every import provider's destination environment."""
    mid = services.conductor.create_migration(ctx, transfer(
        ctx, services, clouds, origin, destination,
        destination_environment={"storage_backend": "bulk", **options}))
    execution = wait_execution(services, mid)
    assert execution.status == c.EXECUTION_STATUS_COMPLETED, [
        (t.task_type, t.status, t.exception_details) for t in execution.tasks]
    for a, b in zip(disks(clouds["src"], "vm1"), disks(clouds["dst"], "vm1"), strict=True):
        assert same(a, b)


@pytest.mark.parametrize("kind, origin, destination, extra, needle", [
    ("replica", "srconly", "local", {},
     "source endpoint 'src': provider 'srconly' lacks the 'replica_export' capability, which "
     "task VALIDATE_REPLICA_SOURCE_INPUTS needs"),
    ("migration", "dstonly", "local", {},
     "source endpoint 'src': provider 'dstonly' lacks the 'instances' capability, which task "
     "GET_INSTANCE_INFO needs"),
    ("migration", "local", "srconly", {},
     "destination endpoint 'dst': provider 'srconly' lacks the 'import' capability"),
    ("replica", "local", "dstonly", {},
     "destination endpoint 'dst': provider 'dstonly' lacks the 'replica_import' capability"),
    ("migration", "local", "nomorph", {"skip_os_morphing": False},
     "destination endpoint 'dst': provider 'nomorph' lacks the 'os_morphing' capability, "
     "which task DEPLOY_OS_MORPHING_RESOURCES needs"),
])
def test_a_missing_capability_is_refused_before_anything_is_stored(
        services, ctx, clouds, kind, origin, destination, extra, needle) -> None:
    create = {"migration": services.conductor.create_migration,
              "replica": services.conductor.create_replica}[kind]
    with pytest.raises(exceptions.InvalidInput) as err:
        create(ctx, transfer(ctx, services, clouds, origin, destination, **extra))
    assert needle in str(err.value)
    assert stored(services) == (0, 0)


def test_a_replica_deploy_needing_os_morphing_is_refused(services, ctx, clouds) -> None:
    replica_id = services.conductor.create_replica(
        ctx, transfer(ctx, services, clouds, "local", "nomorph"))
    assert stored(services) == (1, 0)
    with pytest.raises(exceptions.InvalidInput,
                       match="destination endpoint 'dst': provider 'nomorph' lacks the "
                             "'os_morphing' capability"):
        # (the replica's stored default is to skip it: the body in transfer() says so)
        services.conductor.deploy_replica(ctx, {"replica_id": replica_id, "force": True,
                                                "skip_os_morphing": False})
    assert stored(services) == (1, 0)
    # Without OS morphing it gets past the capability check (to the missing disks).
    with pytest.raises(exceptions.InvalidState, match="no disks"):
        services.conductor.deploy_replica(ctx, {"replica_id": replica_id, "force": True,
                                                "skip_os_morphing": True})


@pytest.mark.parametrize("platform, operation, capability", [
    ("dstonly", "list_instances", "instances"),
    ("dstonly", "get_instance", "instances"),
    ("srconly", "list_storage", "storage"),
    ("srconly", "list_destination_options", "destination_options"),
    ("dstonly", "list_source_options", "source_options"),
])
def test_an_endpoint_operation_without_its_capability_is_a_400(
        services, ctx, clouds, platform, operation, capability) -> None:
    eid = endpoint(services, ctx.project_id, "ep", platform, clouds["src"])
    with pytest.raises(exceptions.InvalidInput,
                       match=f"endpoint 'ep': provider '{platform}' lacks the '{capability}' "
                             f"capability \\({operation}\\)"):
        services.conductor.endpoint_call(ctx, eid, operation, {})
    # The worker refuses it too (what the conductor asks of it directly).
    ref = EndpointRef(platform=platform, connection_info={"path": str(clouds["src"])},
                      environment={}, project_id=ctx.project_id)
    with pytest.raises(exceptions.InvalidInput, match=f"lacks the '{capability}'"):
        services.conductor.bus.call(operation, ref, host=services.conductor.local_host)
