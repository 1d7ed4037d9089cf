"""The reader side of the agent: disks under its roots served read-only to a worker (a source
minion reads the source disks attached to it or kept on its host).

A worker opens a *read session* (``PUT /v1/reads/<id>``, with the agent key; body:
``path``, ``format``, ``since``, ``confine``) and gets a per-session bearer token; with it,
it asks the disk's extents (``GET .../extents?since=T``: the allocated ones, or only what
changed since the change-tracking token ``T``) and its data (``GET .../data/<offset>/
<length>``, each reply with the xxh3 of its bytes), then closes it (``DELETE``). The disk
is opened as a ``path`` source location confined to the agent's roots (or to ``confine``,
inside them; ``transfer.locations``: SEEK_DATA/SEEK_HOLE for raw files, one data extent for
block devices, qemu-nbd block status and persistent dirty bitmaps for the other formats);
it is opened read-only (``O_RDONLY``, ``qemu-nbd --read-only``) and a write to a read
session is refused (405). Sessions live in memory: an agent that restarted answers 404, and
the worker's reader opens a new one.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable

from pydantic import BaseModel, Field

from coriolis import exceptions
from coriolis.transfer.agent import (
    DEVICE_WAIT_SECONDS,
    IDLE_SECONDS,
    RequestError,
    WriterAgent,
    _digest,
)
from coriolis.transfer.base import DiskReader, Extent
from coriolis.transfer.locations import PathLocation, open_reader

LOG = logging.getLogger(__name__)


class ReadRequest(BaseModel):
    path: str = Field(min_length=1, description="The disk, under one of the roots")
    format: str = Field(default="raw", pattern=r"^[a-z0-9]+$")
    since: str | None = Field(default=None, max_length=256,
                              description="Change-tracking token (a qcow2 persistent dirty "
                                          "bitmap) whose changes extents(since) lists")
    confine: list[str] = Field(default_factory=list, max_length=64,
                               description="Folders (inside the roots) every file opened "
                                           "for the disk must be in; none: the roots")


class ReadSession:
    """One disk being read, and the digest of its token."""

    def __init__(self, session_id: str, reader: DiskReader, token: str,
                 request: ReadRequest) -> None:
        self.id, self.reader, self.request = session_id, reader, request
        self._token_sha256 = _digest(token)
        self.last_used = time.monotonic()

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(_digest(token), self._token_sha256)

    def extents(self, since: str | None) -> list[Extent]:
        return list(self.reader.extents(since))


class ReadSessions:
    """The read sessions of one agent (``agent``: its roots and key)."""

    def __init__(self, agent: WriterAgent,
                 opener: Callable[..., DiskReader] = open_reader) -> None:
        self.agent, self._opener = agent, opener
        self._open: dict[str, ReadSession] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._close_idle, daemon=True, name="idle-reads").start()

    def _close_idle(self) -> None:
        while not self._stop.wait(min(IDLE_SECONDS / 4, 30)):
            now = time.monotonic()
            with self._lock:
                idle = [s for s in self._open.values() if now - s.last_used > IDLE_SECONDS]
                for session in idle:
                    del self._open[session.id]
            for session in idle:
                LOG.info("read session %s idle; closed", session.id)
                session.reader.close()

    def open(self, session_id: str, request: ReadRequest) -> tuple[ReadSession, str]:
        """Open ``request.path`` for reading (``since``: a change-tracking token its extents
        may be asked for); a session id already open is closed first. 400 for a path outside
        the roots, missing or that leads out of them (a backing file elsewhere)."""
        self.agent._check_id(session_id, "read session")
        if request.path.startswith("/dev/"):
            # A disk just hot-plugged into this machine (a minion) gets its /dev name from
            # udev a moment later.
            deadline = time.monotonic() + DEVICE_WAIT_SECONDS
            while not os.path.exists(request.path) and time.monotonic() < deadline:
                time.sleep(0.1)
        # Resolved (a /dev/disk/by-id name is read as the device it leads to); the reader
        # checks again what it actually opened.
        path = self.agent._inside_roots("path", request.path)
        if not os.path.exists(path):
            raise RequestError(400, f"path {request.path!r} does not exist")
        roots = tuple(self.agent._inside_roots(f"confine.{i}", folder)
                      for i, folder in enumerate(request.confine)) \
            or tuple(str(r) for r in self.agent.config.roots)
        try:
            reader = self._opener(PathLocation(path, request.format, confine=roots,
                                               what=f"disk {request.path}"),
                                  since=request.since)
        except exceptions.CoriolisError as exc:
            raise RequestError(400, str(exc)) from None
        token = secrets.token_urlsafe(32)
        session = ReadSession(session_id, reader, token, request)
        with self._lock:
            old = self._open.pop(session_id, None)
            self._open[session_id] = session
        if old is not None:
            old.reader.close()
        LOG.info("read session %s: %s (%s) opened read-only%s", session_id, path,
                 request.format, f", changes since {request.since}" if request.since else "")
        return session, token

    def get(self, session_id: str, authorization: str | None) -> ReadSession:
        self.agent._check_id(session_id, "read session")
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self._lock:
            session = self._open.get(session_id)
        if session is None:
            raise RequestError(404, f"no read session {session_id}")
        if not token or not session.token_matches(token):
            raise RequestError(401, "invalid read session token")
        session.last_used = time.monotonic()
        return session

    def close_session(self, session: ReadSession) -> None:
        with self._lock:
            if self._open.get(session.id) is session:
                del self._open[session.id]
        session.reader.close()
        LOG.info("read session %s closed", session.id)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            sessions = list(self._open.values())
            self._open.clear()
        for session in sessions:
            session.reader.close()
