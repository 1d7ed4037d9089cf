"""The FastAPI application: identity under /identity, the v1 API under /v1."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from coriolis import __version__
from coriolis.api import errors, logger, openapi, requestid, secrets
from coriolis.api.auth import context_dependency
from coriolis.api.limits import BodyLimit
from coriolis.api.v1 import admin, endpoints, transfers
from coriolis.dashboard import login as dashboard_login
from coriolis.dashboard import routes as dashboard
from coriolis.identity.external import KeystoneValidator
from coriolis.identity.keystone import build_router as identity_router
from coriolis.identity.tokens import TokenIssuer
from coriolis.identity.validation import EmbeddedValidator, TokenValidator
from coriolis.service import Services


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="Coriolis", version=__version__, openapi_url="/v1/openapi.json",
                  docs_url=None, redoc_url=None)
    errors.install(app)
    openapi.install(app)
    app.add_middleware(BodyLimit, max_bytes=services.settings.max_request_body_bytes)
    # Added last: the outermost, so that every response (errors too) carries the id.
    app.add_middleware(requestid.RequestIdMiddleware)

    # First: routes are matched in order, and every client's version discovery asks for it.
    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, Any]:
        return {"versions": [{"id": "v1", "status": "CURRENT"}]}

    validator: TokenValidator
    login: dashboard_login.Login
    if services.settings.keystone:
        # A real Keystone is the only authority: no embedded identity routes.
        validator = KeystoneValidator(services.settings.keystone)
        login = dashboard_login.keystone_login(services.settings.keystone["auth_url"])
    else:
        issuer = TokenIssuer(services.settings.token_key_file,
                             services.settings.token_ttl_seconds)
        app.state.token_issuer = issuer
        embedded = EmbeddedValidator(issuer, services.db)
        app.include_router(identity_router(services.db, issuer, embedded))
        validator = embedded
        login = dashboard_login.embedded_login(services.db, issuer, embedded)
    app.state.token_validator = validator
    context = context_dependency(validator, services.db)
    routers = [module.build_router(services, context)
               for module in (endpoints, transfers, admin)]
    # /v1/{project_id}/... as the catalog gives it; /v1/... (project from the token) for the
    # client's --endpoint override, which drops the project id.
    for prefix in ("/v1/{project_id}", "/v1"):
        for router in routers:
            app.include_router(router, prefix=prefix)
    app.include_router(secrets.build_router(services, context))
    app.include_router(logger.build_router(services, validator))
    dashboard.install(app, services, validator, login)

    return app
