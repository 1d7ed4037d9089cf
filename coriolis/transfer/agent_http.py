"""The writer agent's HTTPS server: a threaded, blocking server from the standard library.

Measured on loopback with TLS (2 cores, 4 MiB chunks), uvicorn's asyncio TLS received about
400 MiB/s while a blocking TLS socket per connection thread moves well over 1 GiB/s, so the
data path uses ``http.server`` with one thread per connection; there are only a few routes.

Routes: ``/v1/agent`` (describe), ``/v1/transfers/<id>...`` (a disk being written; with
``"export": "nbd"`` in the open request, through a TLS NBD export instead, whose flushed
ranges the worker reports with ``POST .../durable`` and which ``POST .../release`` stops
while keeping the transfer for a resume: see ``transfer.nbd_export``), and the
OS morphing jobs of this host as a helper machine, each with the agent key:
``PUT /v1/morphs/<id>`` (body: ``MorphRequest`` JSON; 202 and the job's view),
``GET /v1/morphs/<id>?after=N&wait=S`` (the events from N on, waiting up to S seconds, at
most 10, for one; see ``osmorphing.jobs``) and ``DELETE /v1/morphs/<id>`` (stop its appliance
and forget it; 204, also when there is no such job). The reader side, ``/v1/reads/<id>...``
(a disk served read-only), is described in ``transfer.agent_reads``.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import xxhash

from coriolis import exceptions
from coriolis.transfer.agent import (
    MAX_CHUNK,
    DurableRequest,
    OpenRequest,
    RequestError,
    Transfer,
    WriterAgent,
    parse_body,
)
from coriolis.transfer.agent_reads import ReadRequest, ReadSession, ReadSessions
from coriolis.transfer.base import Data
from coriolis.transfer.wire import AGENT_KEY_HEADER, HASH_HEADER

LOG = logging.getLogger(__name__)
_TRANSFER = r"/v1/transfers/(?P<tid>[^/]+)"
_MORPH = r"/v1/morphs/(?P<jid>[^/]+)"
_READ = r"/v1/reads/(?P<rid>[^/]+)"
_INT = r"(-?\d+)"
MAX_POLL_WAIT = 10.0


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sock: socket.socket, agent: WriterAgent, cert_file: Path,
                 key_file: Path) -> None:
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.agent = agent
        self.reads = ReadSessions(agent)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls.load_cert_chain(str(cert_file), str(key_file))

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the connection's own thread, so a slow client blocks nobody."""
        try:
            request = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            LOG.info("TLS handshake with %s failed: %s", client_address[0], exc)
            return
        super().finish_request(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        self.reads.close()  # their qemu-nbd processes end with them


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AgentServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        LOG.debug("%s %s", self.address_string(), format % args)

    # --- plumbing -------------------------------------------------------------------------
    def _reply(self, status: int, payload: Data = b"", content_type: str = "application/json",
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _json(self, status: int, value: Any) -> None:
        self._reply(status, json.dumps(value).encode())

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_CHUNK:
            self.close_connection = True  # the body is not read
            raise RequestError(413, f"a request body is at most {MAX_CHUNK} bytes")
        return self.rfile.read(length) if length else b""

    def _transfer(self, tid: str) -> Transfer:
        return self.server.agent.get(tid, self.headers.get("Authorization"))

    def _dispatch(self, routes: list[tuple[str, Callable[..., None]]]) -> None:
        path = self.path.split("?", 1)[0]
        try:
            for pattern, handler in routes:
                match = re.fullmatch(pattern, path)
                if match:
                    handler(*match.groups())
                    return
            self._body()
            raise RequestError(404, f"no route {self.command} {path}")
        except RequestError as exc:
            self._json(exc.status, {"detail": str(exc)})
        except exceptions.CoriolisError as exc:
            self._json(500, {"detail": str(exc)})
        except Exception as exc:  # a bug or an OS error: an answer, not a dropped connection
            LOG.exception("%s %s failed", self.command, path)
            self._json(500, {"detail": f"internal error in the writer agent: "
                                       f"{type(exc).__name__}: {exc}"})

    # --- routes ---------------------------------------------------------------------------
    def do_PUT(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch([(_MORPH, self._start_morph), (_TRANSFER, self._open),
                        (_TRANSFER + "/data/" + _INT, self._write),
                        (_TRANSFER + "/zero/" + _INT + "/" + _INT, self._zero),
                        (_READ, self._open_read), (_READ + "/.+", self._refuse_write)])

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch([("/v1/agent", self._describe), (_MORPH, self._poll_morph),
                        (_TRANSFER, self._show),
                        (_TRANSFER + "/data/" + _INT + "/" + _INT, self._read),
                        (_READ + "/extents", self._read_extents),
                        (_READ + "/data/" + _INT + "/" + _INT, self._read_data)])

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch([(_TRANSFER + "/flush", self._flush),
                        (_TRANSFER + "/durable", self._durable),
                        (_TRANSFER + "/release", self._release),
                        (_READ + "/.+", self._refuse_write)])

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch([(_MORPH, self._stop_morph), (_TRANSFER, self._delete),
                        (_READ, self._close_read)])

    def _describe(self) -> None:
        """What a worker checks when an endpoint is validated: the key works, and which
        directories the agent serves."""
        self.server.agent.check_agent_key(self.headers.get(AGENT_KEY_HEADER))
        self._json(200, {"roots": [str(r) for r in self.server.agent.config.roots]})

    def _open(self, tid: str) -> None:
        body = self._body()
        self.server.agent.check_agent_key(self.headers.get(AGENT_KEY_HEADER))
        request = parse_body(OpenRequest, body, "transfer request")
        transfer, token = self.server.agent.open(tid, request)
        self._json(200, {"id": transfer.id, "token": token, "size": transfer.size,
                         "durable": transfer.durable.as_list(), **transfer.open_reply()})

    def _show(self, tid: str) -> None:
        transfer = self._transfer(tid)
        self._json(200, {"id": transfer.id, "size": transfer.size,
                         "durable": transfer.durable.as_list()})

    def _write(self, tid: str, offset: str) -> None:
        body = self._body()
        transfer = self._transfer(tid)
        began = time.monotonic()
        self.server.agent.write_chunk(transfer, int(offset), body,
                                      self.headers.get("Content-Encoding", "identity"),
                                      self.headers.get(HASH_HEADER))
        self._committed(began)

    def _committed(self, began: float) -> None:
        self._reply(204, headers={"X-Coriolis-Commit-Seconds":
                                  f"{time.monotonic() - began:.6f}"})

    def _zero(self, tid: str, offset: str, length: str) -> None:
        self._body()
        transfer = self._transfer(tid)
        start, size = int(offset), int(length)
        self.server.agent.check_range(transfer, start, size, transfer.size)
        began = time.monotonic()
        transfer.writer.zero(start, size)
        transfer.wait_durable(start, start + size)
        self._committed(began)

    def _read(self, tid: str, offset: str, length: str) -> None:
        transfer = self._transfer(tid)
        start, size = int(offset), int(length)
        self.server.agent.check_range(transfer, start, size, MAX_CHUNK)
        self._reply(200, transfer.writer.read(start, size), "application/octet-stream")

    def _flush(self, tid: str) -> None:
        self._body()
        transfer = self._transfer(tid)
        began = time.monotonic()
        transfer.wait_durable(0, 0)
        self._committed(began)

    def _durable(self, tid: str) -> None:
        """Ranges a worker wrote and flushed through the transfer's NBD export: logged as
        acknowledged, as chunks sent here are (``transfer.nbd_export``)."""
        body = self._body()
        transfer = self._transfer(tid)
        ranges = parse_body(DurableRequest, body, "durable ranges").ranges
        for start, end in ranges:
            self.server.agent.check_range(transfer, start, end - start, transfer.size)
        began = time.monotonic()
        transfer.wait_durable_ranges(ranges)
        self._committed(began)

    def _release(self, tid: str) -> None:
        """Close the transfer's disk and NBD export, keeping its state for a resume."""
        self._body()
        self.server.agent.release(self._transfer(tid))
        self._reply(204)

    def _delete(self, tid: str) -> None:
        self.server.agent.delete(self._transfer(tid))
        self._reply(204)

    # --- OS morphing jobs -----------------------------------------------------------------
    def _morph_key(self) -> None:
        self.server.agent.check_agent_key(self.headers.get(AGENT_KEY_HEADER),
                                          "run OS morphing on this host")

    def _start_morph(self, jid: str) -> None:
        body = self._body()
        self._morph_key()
        self._json(202, self.server.agent.start_morph(jid, body).view(0, 0))

    def _poll_morph(self, jid: str) -> None:
        self._morph_key()
        query = parse_qs(self.path.partition("?")[2])
        try:
            after = int(query.get("after", ["0"])[0])
            wait = min(float(query.get("wait", ["0"])[0]), MAX_POLL_WAIT)
        except ValueError:
            raise RequestError(400, "after (an event number) and wait (seconds) must be "
                                    "numbers") from None
        self._json(200, self.server.agent.morph_job(jid).view(max(after, 0), wait))

    def _stop_morph(self, jid: str) -> None:
        self._morph_key()
        self.server.agent.stop_morph(jid)
        self._reply(204)

    # --- read sessions (transfer.agent_reads) ---------------------------------------------
    def _read_session(self, rid: str) -> ReadSession:
        return self.server.reads.get(rid, self.headers.get("Authorization"))

    def _open_read(self, rid: str) -> None:
        body = self._body()
        self.server.agent.check_agent_key(self.headers.get(AGENT_KEY_HEADER),
                                          "open a disk for reading")
        request = parse_body(ReadRequest, body, "read request")
        session, token = self.server.reads.open(rid, request)
        self._json(200, {"id": session.id, "token": token, "size": session.reader.size})

    def _read_extents(self, rid: str) -> None:
        session = self._read_session(rid)
        since = parse_qs(self.path.partition("?")[2]).get("since", [None])[0]
        self._json(200, {"extents": [[e.offset, e.length, int(e.zero)]
                                     for e in session.extents(since)]})

    def _read_data(self, rid: str, offset: str, length: str) -> None:
        session = self._read_session(rid)
        start, size = int(offset), int(length)
        if start < 0 or size <= 0 or size > MAX_CHUNK or start + size > session.reader.size:
            raise RequestError(400, f"range {start}+{size} is outside the disk or too long")
        data = session.reader.read(start, size)
        self._reply(200, data, "application/octet-stream",
                    {HASH_HEADER: xxhash.xxh3_64_hexdigest(data)})

    def _close_read(self, rid: str) -> None:
        self.server.reads.close_session(self._read_session(rid))
        self._reply(204)

    def _refuse_write(self, rid: str) -> None:
        self._body()
        raise RequestError(405, f"read session {rid} is read-only: nothing is written "
                                "through it")
