"""The ``coriolis-logger`` service, as upstream's logger serves it to python-coriolisclient
(shared/reference/coriolis-v1-api.md §9.1), fed by this server's log files
(``coriolis.api.logs``). Mounted at ``/logger``; its catalog URL is
``http://HOST:PORT/logger/api/v1``.

- ``GET /logger`` (and ``/logger/api``): version discovery, ``{"versions": [...]}`` with
  ``self`` links; ``GET /logger/api/v1``: ``{"version": {...}}``. Unauthenticated, as
  keystoneauth's discovery calls are.
- ``GET /logger/api/v1/logs/``: ``{"logs": [{"log_name": str}]}``.
- ``GET /logger/api/v1/logs/{name}/?start_date=&end_date=`` (unix seconds, each optional):
  the log's records in that range, ``text/plain``; 404 naming an unknown log.
- WebSocket ``/logger/api/v1/ws?app_name=&severity=`` (``X-Auth-Token`` header): one JSON
  text message per new line, ``{"app_name", "message", "severity"}``, for the lines of
  ``app_name`` (every log when absent) at ``severity`` (syslog 0-7, default 6) or more
  urgent. A refused connection gets the HTTP error (401, 403, 404, 400) instead of the
  upgrade. The stream's files are closed as soon as the client goes away.

Every route but discovery needs a token and the policy rules ``logs:list``, ``logs:show``,
``logs:stream`` (admin by default: logs are the whole server's, every project's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse

from coriolis import exceptions
from coriolis.api import logs
from coriolis.api.errors import error_response
from coriolis.context import RequestContext
from coriolis.identity.policy import Policy
from coriolis.identity.validation import TokenValidator
from coriolis.service import Services

PREFIX = "/logger"
API = PREFIX + "/api/v1"
POLL_SECONDS = 0.2


def catalog_url(base: str) -> str:
    """The ``coriolis-logger`` catalog URL for a server at ``base`` (no trailing slash)."""
    return base + API


def _version(base: str) -> dict[str, Any]:
    return {"id": "v1", "status": "CURRENT",
            "links": [{"rel": "self", "href": catalog_url(base) + "/"}]}


def _base(url: Any) -> str:
    return f"{url.scheme}://{url.netloc}"


def _time(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise exceptions.InvalidInput(f"{name}: must be unix seconds") from None


def build_router(services: Services, validator: TokenValidator) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    policy = Policy(services.settings.policy)
    data_dir = services.settings.data_dir

    def authorize(token: str | None, rule: str) -> RequestContext:
        data = validator.validate(token)
        ctx = RequestContext(user_id=data.user_id, project_id=data.project_id,
                             roles=data.roles, user_name=data.user_name)
        policy.enforce(ctx, rule)
        return ctx

    @router.get(PREFIX)
    @router.get(PREFIX + "/")
    @router.get(PREFIX + "/api")
    @router.get(PREFIX + "/api/")
    def versions(request: Request) -> dict[str, Any]:
        return {"versions": [_version(_base(request.url))]}

    @router.get(API)
    @router.get(API + "/")
    def version(request: Request) -> dict[str, Any]:
        return {"version": _version(_base(request.url))}

    @router.get(API + "/logs")
    @router.get(API + "/logs/")
    def list_logs(request: Request) -> dict[str, Any]:
        authorize(request.headers.get("X-Auth-Token"), "logs:list")
        return {"logs": [{"log_name": name} for name in logs.log_files(data_dir)]}

    @router.get(API + "/logs/{name}")
    @router.get(API + "/logs/{name}/")
    def show_log(name: str, request: Request, start_date: str | None = None,
                 end_date: str | None = None) -> StreamingResponse:
        authorize(request.headers.get("X-Auth-Token"), "logs:show")
        start, end = _time(start_date, "start_date"), _time(end_date, "end_date")
        path = logs.log_file(data_dir, name)
        return StreamingResponse(logs.read_range(path, start, end),
                                 media_type="text/plain; charset=utf-8")

    @router.websocket(API + "/ws")
    async def stream(websocket: WebSocket) -> None:
        try:
            authorize(websocket.headers.get("X-Auth-Token"), "logs:stream")
            app_name = websocket.query_params.get("app_name") or None
            severity = logs.parse_severity(websocket.query_params.get("severity"))
            follower = logs.Follower(data_dir, app_name)
        except exceptions.CoriolisError as exc:
            await _refuse(websocket, error_response(exc.code, str(exc)))
            return
        try:
            await websocket.accept()
            await _pump(websocket, follower, severity)
        finally:
            follower.close()

    return router


async def _refuse(websocket: WebSocket, response: JSONResponse) -> None:
    """Answer the upgrade request with ``response`` (an HTTP error), or close the socket
    with 4000 + its status where the server cannot send one."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=4000 + response.status_code)


async def _pump(websocket: WebSocket, follower: logs.Follower, severity: int) -> None:
    """Send the follower's lines until the client goes away."""
    closed = asyncio.ensure_future(websocket.receive())
    try:
        while True:
            done, _ = await asyncio.wait({closed}, timeout=POLL_SECONDS)
            if done:
                message = closed.result()
                if message["type"] == "websocket.disconnect":
                    return
                closed = asyncio.ensure_future(websocket.receive())  # ignore client text
            for name, level, line in follower.poll():
                if level <= severity:
                    await websocket.send_text(json.dumps(
                        {"app_name": name, "message": line, "severity": level}))
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        closed.cancel()
        with contextlib.suppress(BaseException):
            await closed
