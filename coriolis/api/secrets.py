"""The Barbican v1 secrets subset (`barbican secret store|get|list|delete`), per project."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import select

from coriolis.api.schemas.resources import SecretCreate
from coriolis.api.views import ts
from coriolis.context import RequestContext
from coriolis.db import models
from coriolis.secrets import store
from coriolis.service import Services


def _view(request: Request, secret: models.Secret) -> dict[str, Any]:
    return {"secret_ref": f"{str(request.base_url).rstrip('/')}/key-manager/v1/secrets/"
                          f"{secret.id}",
            "name": secret.name, "status": "ACTIVE", "secret_type": "opaque",
            "content_types": {"default": secret.content_type},
            "created": ts(secret.created_at), "updated": ts(secret.updated_at or
                                                            secret.created_at),
            "expiration": None, "algorithm": None, "bit_length": None, "mode": None}


def build_router(services: Services, context: Any) -> APIRouter:
    router = APIRouter(prefix="/key-manager", tags=["key-manager"])
    db, box = services.db, services.box

    def v1(request: Request) -> dict[str, Any]:
        href = str(request.base_url).rstrip("/") + "/key-manager/v1/"
        return {"id": "v1", "status": "stable", "min_version": "1.0", "max_version": "1.1",
                "links": [{"rel": "self", "href": href}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.key-manager-v1+json"}]}

    # Version discovery, as Barbican answers it: python-barbicanclient (keystoneauth1) finds
    # /v1 from the catalog's root URL, then reads the v1 document for microversions.
    @router.get("", include_in_schema=False)
    @router.get("/", include_in_schema=False)
    def versions(request: Request) -> JSONResponse:
        return JSONResponse({"versions": {"values": [v1(request)]}}, status_code=300)

    @router.get("/v1", include_in_schema=False)
    @router.get("/v1/", include_in_schema=False)
    def version(request: Request) -> dict[str, Any]:
        return {"version": v1(request)}

    @router.post("/v1/secrets", status_code=201)
    def create(request: Request, body: SecretCreate,
               ctx: RequestContext = Depends(context)) -> JSONResponse:
        content_type = body.payload_content_type or "text/plain"
        with db.session() as session:
            secret = store.store(session, box, ctx.project_id, body.payload, content_type,
                                 body.name)
            return JSONResponse({"secret_ref": _view(request, secret)["secret_ref"]},
                                status_code=201)

    @router.get("/v1/secrets")
    def list_secrets(request: Request,
                     ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.reader() as session:
            rows = session.scalars(select(models.Secret).where(
                models.Secret.project_id == ctx.project_id).order_by(models.Secret.created_at))
            secrets = [_view(request, s) for s in rows]
        return {"secrets": secrets, "total": len(secrets)}

    @router.get("/v1/secrets/{secret_id}")
    def show(request: Request, secret_id: str,
             ctx: RequestContext = Depends(context)) -> Any:
        with db.reader() as session:
            secret = store.get(session, ctx.project_id, secret_id)
            if "application/json" not in request.headers.get("accept", "application/json") \
                    and request.headers.get("accept") not in (None, "*/*"):
                return PlainTextResponse(store.payload(box, secret))
            return _view(request, secret)

    @router.get("/v1/secrets/{secret_id}/payload")
    def get_payload(secret_id: str, ctx: RequestContext = Depends(context)) -> Response:
        with db.reader() as session:
            secret = store.get(session, ctx.project_id, secret_id)
            return Response(store.payload(box, secret), media_type=secret.content_type)

    @router.delete("/v1/secrets/{secret_id}", status_code=204)
    def delete(secret_id: str, ctx: RequestContext = Depends(context)) -> Response:
        with db.session() as session:
            session.delete(store.get(session, ctx.project_id, secret_id))
        return Response(status_code=204)

    return router


