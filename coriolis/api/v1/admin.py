"""Providers, regions, worker services, diagnostics and minion pools."""

from __future__ import annotations

import platform
import socket
from importlib.metadata import distributions
from typing import Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from coriolis import constants as c
from coriolis import exceptions
from coriolis.api import views
from coriolis.api.schemas.resources import (
    MinionPoolAction,
    MinionPoolRequest,
    MinionPoolUpdateRequest,
    RegionRequest,
    RegionUpdate,
    RegionUpdateRequest,
    ServiceRequest,
    ServiceUpdateRequest,
)
from coriolis.api.v1.common import mapped_regions
from coriolis.context import RequestContext
from coriolis.db import models
from coriolis.identity.policy import Policy
from coriolis.providers import registry
from coriolis.providers.base import (
    BaseProvider,
    ExportProvider,
    ImportProvider,
    MinionPoolProvider,
    require,
)
from coriolis.service import Services
from coriolis.transfer.options import with_transfer_options


def _bits(mask: int) -> list[int]:
    return [1 << i for i in range(mask.bit_length()) if mask & (1 << i)]


def _schema(provider: BaseProvider, key: str) -> dict[str, Any]:
    """The schema ``key`` (``constants.SCHEMA_KEY_BY_PROVIDER_TYPE``) of a provider that has
    the capability giving it."""
    if key == "source_environment_schema":
        return require(provider, ExportProvider).source_environment_schema()
    if key == "destination_environment_schema":
        return with_transfer_options(
            require(provider, ImportProvider).destination_environment_schema())
    if key.endswith("minion_pool_environment_schema"):
        return require(provider, MinionPoolProvider).minion_pool_environment_schema()
    return provider.connection_info_schema()


def _get(session: Session, model: type, row_id: str, kind: str) -> Any:
    row = session.get(model, row_id)
    if row is None:
        raise exceptions.NotFound(f"{kind} {row_id} could not be found")
    return row


def build_router(services: Services, context: Any) -> APIRouter:
    router = APIRouter()
    db = services.db
    policy = Policy(services.settings.policy)

    def allowed(rule: str) -> Any:
        def check(ctx: RequestContext = Depends(context)) -> RequestContext:
            policy.enforce(ctx, rule)
            return ctx
        return Depends(check)

    # may[rule]: the caller's context if the policy grants the rule (403 otherwise), checked
    # as a dependency, so before the body is.
    may = {rule: allowed(rule) for rule in policy.rules}

    # --- providers ---------------------------------------------------------------------------
    @router.get("/providers")
    def list_providers(ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        return {"providers": {name: {"types": _bits(mask)}
                              for name, mask in services.providers().items()}}

    @router.get("/providers/{platform_name}/schemas/{provider_type}")
    def provider_schemas(platform_name: str, provider_type: int,
                         ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        """The schema of one type bit, for a provider with the capability that has that schema
        (the environment schemas are the same for migrations and replicas, so a migration-
        only provider answers the replica bits the upstream client asks with); the
        destination environment's includes the transfer options."""
        provider = registry.get_provider(platform_name)
        key = c.SCHEMA_KEY_BY_PROVIDER_TYPE.get(provider_type)
        if key is None:
            raise exceptions.InvalidInput(
                f"provider '{platform_name}' has no schema for type {provider_type}")
        return {"schemas": {key: _schema(provider, key)}}

    # --- regions -----------------------------------------------------------------------------
    @router.get("/regions")
    def list_regions(ctx: RequestContext = may["regions:list"]) -> dict[str, Any]:
        with db.reader() as session:
            rows = session.scalars(select(models.Region).order_by(models.Region.created_at))
            return {"regions": [views.region(r) for r in rows]}

    @router.get("/regions/{region_id}")
    def show_region(region_id: str, ctx: RequestContext = may["regions:show"]) -> dict[str, Any]:
        with db.reader() as session:
            return {"region": views.region(_get(session, models.Region, region_id, "Region"))}

    def apply_region(row: models.Region, data: RegionUpdate) -> None:
        given = data.model_fields_set
        if "name" in given:
            row.name = data.name
        if "description" in given:
            row.description = data.description or ""
        if "enabled" in given:
            row.enabled = data.enabled

    @router.post("/regions")
    def create_region(body: RegionRequest,
                      ctx: RequestContext = may["regions:create"]) -> dict[str, Any]:
        with db.session() as session:
            row = models.Region(name="", description="", enabled=True)
            apply_region(row, body.region)
            session.add(row)
            session.flush()
            return {"region": views.region(row)}

    @router.put("/regions/{region_id}")
    def update_region(region_id: str, body: RegionUpdateRequest,
                      ctx: RequestContext = may["regions:update"]) -> dict[str, Any]:
        with db.session() as session:
            row = _get(session, models.Region, region_id, "Region")
            apply_region(row, body.region)
            row.updated_at = models.utcnow()
            session.flush()
            return {"region": views.region(row)}

    @router.delete("/regions/{region_id}", status_code=204)
    def delete_region(region_id: str, ctx: RequestContext = may["regions:delete"]) -> Response:
        with db.session() as session:
            session.delete(_get(session, models.Region, region_id, "Region"))
        return Response(status_code=204)

    # --- services ----------------------------------------------------------------------------
    @router.get("/services")
    def list_services(ctx: RequestContext = may["services:list"]) -> dict[str, Any]:
        with db.reader() as session:
            rows = session.scalars(select(models.Service).order_by(models.Service.created_at))
            return {"services": [views.service(r) for r in rows]}

    @router.get("/services/{service_id}")
    def show_service(service_id: str, ctx: RequestContext = may["services:show"]) -> dict[str, Any]:
        with db.reader() as session:
            return {"service": views.service(_get(session, models.Service, service_id,
                                                  "Service"))}

    @router.post("/services")
    def create_service(body: ServiceRequest,
                       ctx: RequestContext = may["services:create"]) -> dict[str, Any]:
        data = body.service
        with db.session() as session:
            clash = session.scalar(select(models.Service).where(
                models.Service.host == data.host, models.Service.binary == data.binary))
            if clash is not None:
                raise exceptions.Conflict(
                    f"A {data.binary} service is already registered for host {data.host}")
            row = models.Service(host=data.host, binary=data.binary, topic=data.topic,
                                 enabled=data.enabled if data.enabled is not None else True,
                                 regions=mapped_regions(session, data.mapped_regions))
            session.add(row)
            session.flush()
            return {"service": views.service(row)}

    @router.put("/services/{service_id}")
    def update_service(service_id: str, body: ServiceUpdateRequest,
                       ctx: RequestContext = may["services:update"]) -> dict[str, Any]:
        data = body.service
        with db.session() as session:
            row = _get(session, models.Service, service_id, "Service")
            if "enabled" in data.model_fields_set:
                row.enabled = data.enabled
            if "mapped_regions" in data.model_fields_set:
                row.regions = mapped_regions(session, data.mapped_regions)
            row.updated_at = models.utcnow()
            session.flush()
            return {"service": views.service(row)}

    @router.delete("/services/{service_id}", status_code=204)
    def delete_service(service_id: str, ctx: RequestContext = may["services:delete"]) -> Response:
        with db.session() as session:
            session.delete(_get(session, models.Service, service_id, "Service"))
        return Response(status_code=204)

    # --- diagnostics -------------------------------------------------------------------------
    @router.get("/diagnostics")
    def diagnostics(ctx: RequestContext = may["diagnostics:get"]) -> dict[str, Any]:
        host = socket.gethostname()
        try:
            addresses = sorted({a[4][0] for a in socket.getaddrinfo(host, None)})
        except OSError:
            addresses = []
        packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions())
        os_info = {"system": platform.system(), "release": platform.release(),
                   "python": platform.python_version()}
        return {"diagnostics": [{"application": app, "hostname": host,
                                 "ip_addresses": addresses, "packages": packages,
                                 "os_info": os_info}
                                for app in ("coriolis-api", "coriolis-conductor",
                                            "coriolis-worker")]}

    # --- minion pools (coriolis.minions.manager) -----------------------------------------
    pools = services.pools

    def pool_view(ctx: RequestContext, pool_id: str) -> dict[str, Any]:
        with db.reader() as session:
            return {"minion_pool": views.minion_pool(pools.get(session, ctx.project_id,
                                                               pool_id))}

    @router.get("/minion_pools")
    def list_pools(ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.reader() as session:
            rows = session.scalars(select(models.MinionPool).where(
                models.MinionPool.project_id == ctx.project_id).order_by(
                models.MinionPool.created_at))
            return {"minion_pools": [views.minion_pool(r) for r in rows]}

    @router.get("/minion_pools/{pool_id}")
    def show_pool(pool_id: str, ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        return pool_view(ctx, pool_id)

    @router.post("/minion_pools")
    def create_pool(body: MinionPoolRequest,
                    ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        pool_id = pools.create(ctx, body.minion_pool.model_dump())
        return pool_view(ctx, pool_id)

    @router.put("/minion_pools/{pool_id}")
    def update_pool(pool_id: str, body: MinionPoolUpdateRequest,
                    ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        pools.update(ctx, pool_id, body.minion_pool.model_dump(
            include=body.minion_pool.model_fields_set))
        return pool_view(ctx, pool_id)

    @router.delete("/minion_pools/{pool_id}", status_code=204)
    def delete_pool(pool_id: str, ctx: RequestContext = Depends(context)) -> Response:
        pools.delete(ctx, pool_id)
        return Response(status_code=204)

    @router.post("/minion_pools/{pool_id}/actions")
    def pool_action(pool_id: str, body: MinionPoolAction,
                    ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        given = body.model_fields_set
        if len(given) != 1:
            raise exceptions.InvalidInput(
                "the action body must have exactly one key: allocate, refresh or deallocate")
        if "allocate" in given:
            pools.allocate(ctx, pool_id)
        elif "refresh" in given:
            pools.refresh(ctx, pool_id)
        else:
            pools.deallocate(ctx, pool_id,
                             body.deallocate is not None and body.deallocate.force)
        return pool_view(ctx, pool_id)

    return router
