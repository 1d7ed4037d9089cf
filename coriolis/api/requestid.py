"""Request ids and the access log.

Every response carries ``x-openstack-request-id: req-<uuid4>`` (as OpenStack services send
it); the server's log lines written while handling that request start with ``[req-...]``
(``RequestIdFilter`` on the log handlers, the id travelling in a context variable, which
anyio copies into the request threads); one access line per request:
``[req-...] GET /v1/<project>/endpoints 200 12.3 ms`` (logger ``coriolis.api.access``).
An exception no handler answered becomes a 500 carrying that id, here, so that the header is
on it too (Starlette's own last-resort handler runs outside every middleware).
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import uuid
from typing import Any

HEADER = "x-openstack-request-id"
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "coriolis_request_id", default=None)
ACCESS = logging.getLogger("coriolis.api.access")
LOG = logging.getLogger(__name__)


def current() -> str | None:
    """The id of the request being handled (None outside a request)."""
    return REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_prefix`` to ``"[req-...] "`` inside a request, else ``""``
    (for a format containing ``%(request_prefix)s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        record.request_prefix = f"[{rid}] " if rid else ""
        return True


class RequestIdMiddleware:
    """Pure ASGI middleware (streams pass through untouched)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = f"req-{uuid.uuid4()}"
        token = REQUEST_ID.set(rid)
        started = time.monotonic()
        state = {"status": 0}

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != HEADER.encode()]
                message = {**message, "headers": [*headers, (HEADER.encode(), rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            LOG.exception("%s %s crashed", scope.get("method"), scope.get("path"))
            if state["status"]:  # the response had started: nothing more can be said
                raise
            body = json.dumps({"error": {
                "code": 500, "fault": "computeFault",
                "message": f"The server could not complete the request (request id {rid})"}
            }).encode()
            await send_with_id({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]})
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            # The id is the line's prefix (RequestIdFilter).
            ACCESS.info("%s %s %s %.1f ms", scope.get("method"), scope.get("path"),
                        state["status"] or "-", (time.monotonic() - started) * 1000)
            REQUEST_ID.reset(token)
