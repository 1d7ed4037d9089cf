"""Errors as the upstream API shapes them: ``{"error": {"code", "message", "fault"}}``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from coriolis import exceptions
from coriolis.api import requestid
from coriolis.api.schemas.transfers import UNION_TAGS

LOG = logging.getLogger(__name__)
FAULTS = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
          405: "badMethod", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
          501: "notImplemented", 503: "serviceUnavailable"}


def _generic() -> str:
    """The message of an unexpected failure: the request id names its log lines."""
    rid = requestid.current()
    return "The server could not complete the request" + (f" (request id {rid})" if rid else "")


def error_response(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message,
                                   "fault": FAULTS.get(code, "computeFault")}},
                        status_code=code)


def describe(errors: Sequence[Any]) -> str:
    """Pydantic's errors as one message: ``Invalid request: migration.notes: Input should be
    a valid string; ...``, each naming its field by its path in the body (or ``query.limit``,
    ``path.provider_type``). Values are never quoted (they may be secrets)."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "[key]"]
        if loc[:1] == ["body"]:
            loc = loc[1:] or ["body"]
        if loc[:1] == ["migration"] and loc[1:2] and loc[1] in UNION_TAGS:
            del loc[1]  # which kind of migration body pydantic tried: not a field
        if err.get("type") == "json_invalid":
            loc = ["body"]
        msg = str(err.get("msg")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "Invalid request: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(exceptions.CoriolisError)
    async def coriolis_error(request: Request, exc: exceptions.CoriolisError) -> JSONResponse:
        # 503s (no eligible worker, the database busy past its timeout) say what to wait
        # for and carry nothing secret; any other 5xx is logged and answered generically.
        if exc.code >= 500 and exc.code != 503:
            LOG.error("%s %s failed: %s", request.method, request.url.path, exc)
            return error_response(500, _generic())
        return error_response(exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        LOG.exception("%s %s crashed", request.method, request.url.path)
        return error_response(500, _generic())
