"""The subset of the Keystone v3 and v2.0 APIs that keystoneauth1 needs, so OS_AUTH_URL,
OS_USERNAME, ... work unchanged against the embedded server."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from coriolis import exceptions
from coriolis.api.errors import describe
from coriolis.api.logger import catalog_url as logger_url
from coriolis.api.schemas.identity import V2AuthRequest, V3AuthRequest, V3Project
from coriolis.identity import users
from coriolis.identity.tokens import TokenData, TokenIssuer
from coriolis.identity.validation import EmbeddedValidator

DOMAIN = {"id": "default", "name": "Default"}


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _catalog_url(request: Request, project_id: str) -> str:
    return f"{_base(request)}/v1/{project_id}"


def _services(request: Request, migration_url: str) -> tuple[tuple[str, str, str], ...]:
    """The catalog: (service type, name, URL) of every service this server provides."""
    return (("migration", "coriolis", migration_url),
            ("key-manager", "barbican", _base(request) + "/key-manager"),
            ("coriolis-logger", "coriolis-logger", logger_url(_base(request))))


def _v3_body(request: Request, data: TokenData, methods: list[str]) -> dict[str, Any]:
    url = _catalog_url(request, data.project_id)
    return {"token": {
        "methods": methods, "expires_at": _iso(data.expires_at), "issued_at": _iso(data.issued_at),
        "user": {"id": data.user_id, "name": data.user_name, "domain": DOMAIN},
        "project": {"id": data.project_id, "name": data.project_name, "domain": DOMAIN},
        "roles": [{"id": r, "name": r} for r in data.roles],
        "catalog": [{"type": kind, "name": name, "id": name,
                     "endpoints": [{"id": f"{name}-{i}", "interface": i, "region": "RegionOne",
                                    "region_id": "RegionOne", "url": service_url}
                                   for i in ("public", "internal", "admin")]}
                    for kind, name, service_url in _services(request, url)],
    }}


def _bad(message: str) -> exceptions.InvalidInput:
    return exceptions.InvalidInput(message)


_Model = TypeVar("_Model", bound=BaseModel)


def _parse(model: type[_Model], body: bytes) -> _Model:
    """The typed body, or a 400 naming the field at fault (never its value)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _bad(describe(exc.errors())) from None


def issue(db: Any, issuer: TokenIssuer, validator: EmbeddedValidator, *,
          user_name: str | None = None, user_id: str | None = None,
          password: str | None = None, token: str | None = None,
          project_id: str | None = None, project_name: str | None = None
          ) -> tuple[str, TokenData]:
    """A project-scoped token of the embedded identity, from a password (the user by name or
    id) or from a still valid token: ``(token, data)``. ``InvalidInput`` (400) without a
    password or project; ``Unauthorized`` (401) for wrong credentials, an unknown project, or
    a user without a role on it."""
    with db.reader() as session:
        if token is not None:
            previous = validator.validate(token)
            user = session.get(users.models.User, previous.user_id)
            if user is None:
                raise exceptions.Unauthorized("The token's user no longer exists")
        else:
            if password is None:
                raise _bad("auth: a password is required")
            user = users.authenticate(session, password=password, name=user_name,
                                      user_id=user_id)
        if not (project_id or project_name):
            raise _bad("auth.scope: a project scope is required")
        try:
            project = users.find_project(session, project_id=project_id, name=project_name)
        except exceptions.NotFound as exc:
            raise exceptions.Unauthorized(str(exc)) from None
        roles = users.roles_in(session, user, project)
        if not roles:
            raise exceptions.Unauthorized(
                f"User {user.name} has no role on project {project.name}")
        return issuer.issue(user.id, user.name, project.id, project.name, roles)


def build_router(db: Any, issuer: TokenIssuer, validator: EmbeddedValidator) -> APIRouter:
    router = APIRouter(prefix="/identity", include_in_schema=False)

    @router.get("")
    @router.get("/")
    def versions(request: Request) -> JSONResponse:
        base = str(request.base_url).rstrip("/") + "/identity"
        return JSONResponse({"versions": {"values": [
            {"id": "v3.14", "status": "stable", "links": [{"rel": "self", "href": base + "/v3/"}],
             "media-types": [{"base": "application/json",
                              "type": "application/vnd.openstack.identity-v3+json"}]},
            {"id": "v2.0", "status": "deprecated",
             "links": [{"rel": "self", "href": base + "/v2.0/"}]}]}}, status_code=300)

    @router.get("/v3")
    @router.get("/v3/")
    def v3_version(request: Request) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/") + "/identity/v3/"
        return {"version": {"id": "v3.14", "status": "stable",
                            "links": [{"rel": "self", "href": base}]}}

    @router.post("/v3/auth/tokens")
    async def v3_issue(request: Request) -> JSONResponse:
        auth = _parse(V3AuthRequest, await request.body()).auth
        identity, methods = auth.identity, auth.identity.methods
        user_name = user_id = password = token = None
        if "password" in methods:
            if identity.password is None:
                raise _bad("auth.identity.password: required by the password method")
            user = identity.password.user
            user_name, user_id, password = user.name, user.id, user.password
        elif "token" in methods:
            if identity.token is None:
                raise _bad("auth.identity.token: required by the token method")
            token = identity.token.id
        else:
            raise _bad("auth.identity.methods: only password and token are supported")
        project = auth.scope.project if auth.scope and auth.scope.project else V3Project()
        token_id, data = issue(db, issuer, validator, user_name=user_name, user_id=user_id,
                               password=password, token=token, project_id=project.id,
                               project_name=project.name)
        return JSONResponse(_v3_body(request, data, methods), status_code=201,
                            headers={"X-Subject-Token": token_id})

    @router.get("/v3/auth/tokens")
    def v3_validate(request: Request) -> JSONResponse:
        validator.validate(request.headers.get("X-Auth-Token"))
        subject = request.headers.get("X-Subject-Token")
        try:
            data = validator.validate(subject)
        except exceptions.Unauthorized as exc:
            raise exceptions.NotFound(f"Could not find token: {exc}") from None
        return JSONResponse(_v3_body(request, data, ["token"]),
                            headers={"X-Subject-Token": subject or ""})

    @router.delete("/v3/auth/tokens", status_code=204)
    def v3_revoke(request: Request) -> Response:
        """Revoke a token: one's own, or any as an admin."""
        caller = validator.validate(request.headers.get("X-Auth-Token"))
        subject = request.headers.get("X-Subject-Token")
        try:
            target = validator.validate(subject)
        except exceptions.Unauthorized as exc:
            raise exceptions.NotFound(f"Could not find token: {exc}") from None
        if target.user_id != caller.user_id and "admin" not in caller.roles:
            raise exceptions.Forbidden("Only an admin may revoke another user's token")
        assert subject is not None
        validator.revoke(subject)
        return Response(status_code=204)

    @router.post("/v2.0/tokens")
    async def v2_issue(request: Request) -> dict[str, Any]:
        auth = _parse(V2AuthRequest, await request.body()).auth
        creds = auth.passwordCredentials
        token_id, data = issue(db, issuer, validator,
                               user_name=creds.username if creds else None,
                               user_id=creds.userId if creds else None,
                               password=creds.password if creds else None,
                               token=auth.token.id if auth.token else None,
                               project_id=auth.tenantId, project_name=auth.tenantName)
        url = _catalog_url(request, data.project_id)
        return {"access": {
            "token": {"id": token_id, "expires": _iso(data.expires_at),
                      "issued_at": _iso(data.issued_at),
                      "tenant": {"id": data.project_id, "name": data.project_name,
                                 "enabled": True}},
            "serviceCatalog": [
                {"type": kind, "name": name, "endpoints": [
                    {"region": "RegionOne", "publicURL": service_url,
                     "internalURL": service_url, "adminURL": service_url}]}
                for kind, name, service_url in _services(request, url)],
            "user": {"id": data.user_id, "name": data.user_name, "username": data.user_name,
                     "roles": [{"name": r} for r in data.roles]},
            "metadata": {"is_admin": 0, "roles": list(data.roles)},
        }}

    return router
