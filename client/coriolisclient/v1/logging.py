"""The coriolis-logger service (catalog type ``coriolis-logger``), if the deployment has one.

Calls (relative to the catalog URL, with ``X-Auth-Token``): ``GET logs/`` →
``{"logs": [{"log_name"}]}``; ``GET logs/<name>/?start_date&end_date`` (unix seconds) → the
log's text; WebSocket ``ws[s]://.../ws?app_name&severity`` → one JSON message per line,
``{"app_name", "message", ...}``. HTTP errors raise ``exceptions.HTTPError`` with the
server's message and status code.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests

from coriolisclient import base, exceptions

# Upstream's severity names, in syslog order (0 = EMERGENCY ... 7 = DEBUG).
SEVERITIES = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")


def _error(status: int, body: bytes | str, reason: str = "") -> exceptions.HTTPError:
    """The server's ``{"error": {"message"}}`` text (or the reason) with its status."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = reason or f"HTTP {status}"
    return exceptions.HTTPError(f"{message} (HTTP {status})", status)


class LoggingManager:
    def __init__(self, session: Any, verify: Any = True) -> None:
        self.session = session
        self.verify = verify

    def _url(self) -> str:
        return base.catalog_url(self.session, "coriolis-logger", exceptions.LoggingEndpointNotFound)

    def _headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.session.get_token()}

    def _get(self, path: str, params: dict[str, Any] | None = None,
             stream: bool = False) -> requests.Response:
        resp = requests.get(f"{self._url()}/{path}", headers=self._headers(), params=params,
                            verify=self.verify, stream=stream, timeout=60)
        if resp.status_code >= 400:
            raise _error(resp.status_code, resp.content, resp.reason)
        return resp

    def list_logs(self) -> list[dict[str, Any]]:
        """``[{"log_name": str}]``."""
        return self._get("logs/").json()["logs"]

    def read_log(self, app: str, start_time: int | None = None,
                 end_time: int | None = None) -> Iterator[bytes]:
        """The log's text between the two unix times (each optional), in chunks."""
        params = {k: v for k, v in (("start_date", start_time), ("end_date", end_time))
                  if v is not None}
        with self._get(f"logs/{app}/", params, stream=True) as resp:
            yield from resp.iter_content(1 << 16)

    def download_logs(self, app: str, to: str, start_time: int | None = None,
                      end_time: int | None = None) -> None:
        with open(to, "wb") as f:
            for chunk in self.read_log(app, start_time, end_time):
                f.write(chunk)

    def stream(self, app_name: str | None = None, severity: int | None = None,
               open_timeout: float = 30) -> Iterator[dict[str, Any]]:
        """The live lines of one log (every log when ``app_name`` is None) at ``severity``
        (0-7) or more urgent, as ``{"app_name", "message", "severity"}``, until the server
        closes the stream; closing the iterator closes the connection."""
        from websockets.exceptions import ConnectionClosed, InvalidStatus
        from websockets.sync.client import connect

        parts = urlsplit(self._url())
        query = urlencode({k: v for k, v in (("app_name", app_name), ("severity", severity))
                           if v is not None})
        url = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc,
                          parts.path + "/ws", query, ""))
        context = None
        if parts.scheme == "https":
            context = ssl.create_default_context(
                cafile=self.verify if isinstance(self.verify, str) else None)
            if self.verify is False:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        try:
            ws = connect(url, additional_headers=self._headers(), ssl=context,
                         open_timeout=open_timeout)
        except InvalidStatus as exc:
            raise _error(exc.response.status_code, bytes(exc.response.body or b""),
                         exc.response.reason_phrase) from None
        with ws:
            try:
                for message in ws:
                    yield json.loads(message)
            except ConnectionClosed:
                return
