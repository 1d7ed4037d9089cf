"""Endpoints and what can be listed through them (instances, networks, storage, options)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
from fastapi import APIRouter, Depends, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from coriolis import exceptions
from coriolis.api import views
from coriolis.api.schemas.resources import (
    EndpointAction,
    EndpointRequest,
    EndpointUpdateRequest,
)
from coriolis.api.v1.common import (
    b64_json,
    b64_text,
    env_object,
    mapped_regions,
)
from coriolis.context import RequestContext
from coriolis.db import models, transfers
from coriolis.engine import validation
from coriolis.providers import registry
from coriolis.providers.base import MinionPoolProvider
from coriolis.secrets import store as secret_store
from coriolis.service import Services


def _check_connection_info(session: Session, services: Services, ctx: RequestContext,
                           platform: str, value: Any) -> dict[str, Any]:
    """Validate connection info (or the secret a ``secret_ref`` names, which must exist in
    the caller's project) against the provider's schema; returns what is stored."""
    if "secret_ref" in value and (set(value) != {"secret_ref"}
                                  or not isinstance(value["secret_ref"], str)):
        raise exceptions.InvalidInput("connection_info.secret_ref must be a string alone")
    if "secret_ref" in value and services.barbican is not None:
        value, resolved = services.barbican.prepare(ctx, value["secret_ref"])
    else:
        resolved = secret_store.connection_info(session, services.box, ctx.project_id, value)
    provider = registry.get_provider(platform)
    exc = jsonschema.exceptions.best_match(
        validation.validator(provider.connection_info_schema()).iter_errors(resolved))
    if exc is not None:
        path = [str(p) for p in exc.absolute_path]
        if exc.validator == "required" and isinstance(exc.instance, dict):
            # The field that is missing, not the object that lacks it.
            path += [next(str(r) for r in exc.validator_value if r not in exc.instance)]
        where = ".".join(path)
        # The message names the field, never the values (they may be secrets).
        raise exceptions.InvalidInput(
            f"connection_info{'.' + where if where else ''} is invalid: {exc.validator} "
            f"check failed for the {platform} connection schema") from None
    provider.check_location(resolved, ctx.project_id, services.settings)
    return value


def pool_options(endpoint: models.Endpoint, platform: str,
                 names: list[str] | None) -> list[dict[str, Any]]:
    """The choices of a provider's minion pool environment options (booleans and enums of
    its ``minion_pool_environment_schema``, with their defaults); none when the provider makes
    no ``platform`` (source/destination) pools."""
    provider = registry.get_provider(endpoint.type)
    if not isinstance(provider, MinionPoolProvider) \
            or platform not in provider.minion_pool_platforms:
        return []
    options = []
    props = provider.minion_pool_environment_schema().get("properties") or {}
    for name, prop in props.items():
        if names and name not in names:
            continue
        values = prop.get("enum") or ([True, False] if prop.get("type") == "boolean" else None)
        if values is None:
            continue
        option: dict[str, Any] = {"name": name, "values": list(values)}
        if "default" in prop:
            option["config_default"] = prop["default"]
        options.append(option)
    return options


def _check_unique_name(session: Session, project_id: str, name: str | None,
                       own_id: str | None = None) -> None:
    """Endpoint names are unique per project (the CLI resolves names to ids): a 409
    naming the endpoint that has ``name`` already."""
    if name is None:
        return
    other = session.scalar(select(models.Endpoint.id).where(
        models.Endpoint.project_id == project_id, models.Endpoint.name == name,
        models.Endpoint.id != (own_id or "")))
    if other is not None:
        raise exceptions.Conflict(f"name: an endpoint named '{name}' exists already ({other})")


def build_router(services: Services, context: Any) -> APIRouter:
    router = APIRouter()
    db, box, conductor = services.db, services.box, services.conductor

    def show(session: Session, row: models.Endpoint) -> dict[str, Any]:
        stored = box.decrypt_json(row.connection_info_encrypted)
        # A real Barbican's trust id is the server's business, not the user's.
        return {"endpoint": views.endpoint(row, {k: v for k, v in stored.items()
                                                 if k != "trust_id"})}

    @router.get("/endpoints")
    def list_endpoints(ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.reader() as session:
            rows = session.scalars(select(models.Endpoint).where(
                models.Endpoint.project_id == ctx.project_id).order_by(
                models.Endpoint.created_at).options(selectinload(models.Endpoint.regions)))
            return {"endpoints": [views.endpoint(r, None) for r in rows]}

    @router.get("/endpoints/{endpoint_id}")
    def get_endpoint(endpoint_id: str, ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.reader() as session:
            return show(session, transfers.get_endpoint(session, ctx.project_id, endpoint_id))

    @router.post("/endpoints")
    def create_endpoint(body: EndpointRequest,
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        data = body.endpoint
        with db.session() as session:
            conn = _check_connection_info(session, services, ctx, data.type,
                                          data.connection_info)
            _check_unique_name(session, ctx.project_id, data.name)  # bad input first (400)
            row = models.Endpoint(project_id=ctx.project_id, user_id=ctx.user_id,
                                  name=data.name, type=data.type,
                                  description=data.description,
                                  connection_info_encrypted=box.encrypt_json(conn),
                                  regions=mapped_regions(session, data.mapped_regions))
            session.add(row)
            session.flush()
            return show(session, row)

    @router.put("/endpoints/{endpoint_id}")
    def update_endpoint(endpoint_id: str, body: EndpointUpdateRequest,
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        data = body.endpoint
        given = data.model_fields_set
        with db.session() as session:
            row = transfers.get_endpoint(session, ctx.project_id, endpoint_id)
            if "name" in given:
                _check_unique_name(session, ctx.project_id, data.name, row.id)
                row.name = data.name
            if "description" in given:
                row.description = data.description
            if "connection_info" in given:
                row.connection_info_encrypted = box.encrypt_json(_check_connection_info(
                    session, services, ctx, row.type, data.connection_info))
            if "mapped_regions" in given:
                row.regions = mapped_regions(session, data.mapped_regions)
            row.updated_at = models.utcnow()
            session.flush()
            return show(session, row)

    @router.delete("/endpoints/{endpoint_id}", status_code=204)
    def delete_endpoint(endpoint_id: str, ctx: RequestContext = Depends(context)) -> Response:
        with db.session() as session:
            row = transfers.get_endpoint(session, ctx.project_id, endpoint_id)
            users = session.scalars(select(models.TransferAction).where(
                (models.TransferAction.origin_endpoint_id == endpoint_id)
                | (models.TransferAction.destination_endpoint_id == endpoint_id))).all()
            live = [a for a in users if not a.deleted]
            pools = session.scalars(select(models.MinionPool.id).where(
                models.MinionPool.endpoint_id == endpoint_id)).all()
            if live or pools:
                names = [f"{a.type} {a.id}" for a in live] + [f"minion pool {p}" for p in pools]
                raise exceptions.Conflict(
                    f"Endpoint {endpoint_id} is used by {', '.join(names)}; delete "
                    f"{'it' if len(names) == 1 else 'them'} first")
            # Deleted (hidden) migrations and replicas of this endpoint go with it: they
            # still reference it (a 500 from the foreign key, found by schemathesis).
            for action in users:
                session.delete(action)
            session.flush()
            stored = box.decrypt_json(row.connection_info_encrypted)
            session.delete(row)
        if services.barbican is not None and isinstance(stored, dict):
            services.barbican.release(ctx, stored)
        return Response(status_code=204)

    @router.post("/endpoints/{endpoint_id}/actions")
    def endpoint_action(endpoint_id: str, body: EndpointAction,
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        try:
            reached = conductor.endpoint_call(ctx, endpoint_id, "validate_connection")
        except exceptions.LocationNotAllowed:
            raise  # a 400: the endpoint must be changed, whatever the cloud's state
        except exceptions.ConnectionValidationFailed as exc:
            return {"validate-connection": {"valid": False, "message": str(exc)}}
        except exceptions.InvalidInput as exc:
            return {"validate-connection": {"valid": False, "message": str(exc)}}
        # What the provider says it reached (libvirt: the hypervisor and its version).
        message = reached if isinstance(reached, str) else None
        return {"validate-connection": {"valid": True, "message": message}}

    @router.get("/endpoints/{endpoint_id}/instances")
    def list_instances(endpoint_id: str, env: str | None = None, marker: str | None = None,
                       limit: int | None = None, name: str | None = None,
                       ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        instances = conductor.endpoint_call(ctx, endpoint_id, "list_instances",
                                            env_object(env))
        if name:
            try:
                pattern = re.compile(name)
            except re.error:
                raise exceptions.InvalidInput(f"'name' is not a valid pattern: {name}") from None
            instances = [i for i in instances if pattern.search(i["name"])]
        if marker:
            ids = [i["id"] for i in instances]
            instances = instances[ids.index(marker) + 1:] if marker in ids else []
        if limit is not None:
            instances = instances[:max(limit, 0)]
        return {"instances": instances}

    @router.get("/endpoints/{endpoint_id}/instances/{instance_b64}")
    def get_instance(endpoint_id: str, instance_b64: str, env: str | None = None,
                     ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        instance = b64_text(instance_b64, "instance")
        try:
            info = conductor.endpoint_call(ctx, endpoint_id, "get_instance", env_object(env),
                                           instance=instance)
        except exceptions.InvalidInput as exc:
            raise exceptions.NotFound(str(exc)) from None
        return {"instance": info}

    @router.get("/endpoints/{endpoint_id}/networks")
    def list_networks(endpoint_id: str, env: str | None = None,
                      ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        return {"networks": conductor.endpoint_call(ctx, endpoint_id, "list_networks",
                                                    env_object(env))}

    @router.get("/endpoints/{endpoint_id}/storage")
    def list_storage(endpoint_id: str, env: str | None = None,
                     ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        return {"storage": conductor.endpoint_call(ctx, endpoint_id, "list_storage",
                                                   env_object(env))}

    def options_route(path: str, key: str, operation: str | None) -> None:
        @router.get(f"/endpoints/{{endpoint_id}}/{path}", name=key)
        def list_options(endpoint_id: str, env: str | None = None, options: str | None = None,
                         ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            names = b64_json(options, "options")
            if names is not None and not isinstance(names, list):
                raise exceptions.InvalidInput("query parameter 'options' must encode a list")
            if operation is None:  # minion pool options: from the provider's pool schema
                with db.reader() as session:
                    endpoint = transfers.get_endpoint(session, ctx.project_id, endpoint_id)
                return {key: pool_options(endpoint, key.split("_")[0], names)}
            return {key: conductor.endpoint_call(ctx, endpoint_id, operation, env_object(env),
                                                 option_names=names)}

    options_route("destination-options", "destination_options", "list_destination_options")
    options_route("source-options", "source_options", "list_source_options")
    options_route("destination-minion-pool-options", "destination_minion_pool_options", None)
    options_route("source-minion-pool-options", "source_minion_pool_options", None)
    return router
