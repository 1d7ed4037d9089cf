"""Writing to a writer agent through its TLS NBD export with libnbd, and the choice of path.

``open_agent_writer`` asks the agent for an NBD export of the transfer's disk
(``transfer.nbd_export``) and writes with libnbd over several connections, one per copy
thread, each with TLS and the transfer's own pre-shared key: the bytes move in native code
(libnbd, gnutls, qemu-nbd), not through Python HTTP on either side. A chunk is durable, and
``write`` returns, once an NBD flush covering it finished on every connection; then
the agent logs its range as acknowledged (``POST .../durable``, sent in the background after
the flush): the same resume semantics as the HTTPS path (an interrupted transfer skips
exactly the acknowledged ranges, all of them flushed). Writers waiting at once share one
flush (group commit).

It is chosen by the transfer option ``writer_agent_transport`` ``nbd`` (the default,
``https``, sends chunks over HTTPS: measured faster on this project's machines, see the
README). Even with ``nbd`` the HTTPS path (``RemoteDiskWriter``) is used, automatically, when:

- the target keeps an undo journal (a replica volume: only the HTTPS path journals),
- ``transfer_compression`` is ``zstd`` (NBD carries no compression; ``auto`` takes NBD),
- a bandwidth limit is set (only the HTTPS path paces itself),
- this worker lacks libnbd, the agent offers no export (an older agent, or no qemu-nbd on
  its host), or the export's port cannot be reached (a firewall letting only the agent's
  port through).

The key is written for libnbd to a 0600 file in a 0700 folder that is removed once the
connections are up; it is never logged nor put in an error.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3

from coriolis import exceptions
from coriolis.transfer.base import Data, DiskWriter
from coriolis.transfer.nbd_uri import load_libnbd
from coriolis.transfer.remote import (
    AgentAddress,
    AgentError,
    RemoteDiskWriter,
    WireStats,
    _AgentClient,
    _raise_for,
)
from coriolis.transfer.wire import AGENT_KEY_HEADER, RangeSet

LOG = logging.getLogger(__name__)
MiB = 1024 * 1024
MAX_REQUEST = 32 * MiB  # qemu-nbd's largest request
MAX_ZERO = 1 << 30
CONNECTIONS = 4


class _GroupCommit:
    """Callers of ``wait(ranges)`` return once a ``commit`` that includes their ranges has
    finished. No thread of its own: a caller that finds no commit running runs the next one
    for everybody waiting. After a failed commit every wait raises (what was written is not
    known to be durable)."""

    def __init__(self, commit: Callable[[list[tuple[int, int]]], None]) -> None:
        self._commit = commit
        self._cond = threading.Condition()
        self._pending: list[tuple[int, int]] = []
        self._started = self._finished = 0
        self._running = False
        self._error: str | None = None

    def wait(self, ranges: list[tuple[int, int]]) -> None:
        with self._cond:
            self._pending.extend(ranges)
            target = self._started + 1  # the next commit to start takes these ranges
            while self._finished < target and self._error is None:
                if self._running:
                    self._cond.wait()
                    continue
                batch, self._pending = self._pending, []
                self._started += 1
                self._running = True
                self._cond.release()
                error = None
                try:
                    self._commit(batch)
                except Exception as exc:  # noqa: BLE001 - reported to every waiter
                    error = str(exc)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._finished = self._started
                    self._error = self._error or error
                    self._cond.notify_all()
            if self._error is not None:
                raise AgentError(f"cannot make the data durable on the writer agent: "
                                 f"{self._error}")


class NbdAgentWriter:
    """A DiskWriter into the TLS NBD export a writer agent opened for ``transfer_id``
    (``opened`` is its open reply); use ``open_agent_writer``."""

    transport = "nbd"
    copy_workers = 8  # chunks written at once by ``copy_disk``: more of them share a flush

    def __init__(self, client: _AgentClient, base: str, opened: dict[str, Any],
                 connections: int = CONNECTIONS) -> None:
        self._client, self._base = client, base
        self._token = opened["token"]
        self._size = int(opened["size"])
        self._durable = RangeSet([(s, e) for s, e in opened["durable"]])
        self._nbd = load_libnbd()
        self.stats = WireStats()
        self._stats_lock = threading.Lock()
        self._handles = self._connect(opened["nbd"], connections)
        self._multi_conn = all(h.can_multi_conn() for h in self._handles)
        self._assign = itertools.count()
        self._local = threading.local()
        self._commit = _GroupCommit(self._make_durable)
        self._flusher = ThreadPoolExecutor(max_workers=connections,
                                           thread_name_prefix="nbd-flush")
        self._acker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbd-ack")
        self._ack_lock = threading.Lock()
        self._unacked: list[tuple[int, int]] = []
        self._ack_error: str | None = None
        self._clean = False

    def _connect(self, export: dict[str, Any], connections: int) -> list[Any]:
        host = urllib3.util.parse_url(self._client.agent.url).host or ""
        host = host.strip("[]")
        folder = tempfile.mkdtemp(prefix="coriolis-nbd-psk-")  # 0700
        handles: list[Any] = []
        try:
            psk_file = os.path.join(folder, "keys.psk")
            fd = os.open(psk_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{export['identity']}:{export['psk']}\n")
            for _ in range(connections):
                h = self._nbd.NBD()
                handles.append(h)
                h.set_tls(self._nbd.TLS_REQUIRE)
                h.set_tls_psk_file(psk_file)
                h.set_tls_username(export["identity"])
                h.set_export_name(export["export"])
                h.connect_tcp(host, str(export["port"]))
        except self._nbd.Error as exc:
            handles.clear()  # libnbd closes a handle when it is dropped
            raise AgentError(f"cannot connect to the NBD export of the writer agent at "
                             f"{host}:{export['port']}: {exc}") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return handles

    def _handle(self) -> Any:
        """This thread's connection: copy threads spread over the connections."""
        h = getattr(self._local, "h", None)
        if h is None:
            h = self._local.h = self._handles[next(self._assign) % len(self._handles)]
        return h

    def _nbd_call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except self._nbd.Error as exc:
            raise AgentError(f"NBD {what} on the writer agent failed: {exc}") from None

    def _make_durable(self, ranges: list[tuple[int, int]]) -> None:
        """Flush through NBD (every connection, unless the export says one covers all);
        the agent then logs the ranges as acknowledged, off the writers' path: a range
        logged late is at worst sent again by a resumed transfer, never skipped unflushed."""
        handles = self._handles[:1] if self._multi_conn else self._handles
        if len(handles) == 1:
            self._nbd_call("flush", handles[0].flush)
        else:  # at once: the first does the work, the others find little left
            list(self._flusher.map(lambda h: self._nbd_call("flush", h.flush), handles))
        if ranges:
            with self._ack_lock:
                self._unacked.extend(ranges)
            self._acker.submit(self._send_acks)

    def _send_acks(self) -> None:
        """Log every flushed range not yet logged on the agent, in one request (runs on
        the single ``_acker`` thread, so in order)."""
        with self._ack_lock:
            ranges, self._unacked = self._unacked, []
        if not ranges or self._ack_error:
            return
        try:
            response = self._client.request(
                "POST", f"{self._base}/durable",
                json.dumps({"ranges": RangeSet(ranges).as_list()}).encode(),
                {**self._auth(), "Content-Type": "application/json"})
            _raise_for(response, "acknowledge the flushed ranges")
        except AgentError as exc:
            self._ack_error = str(exc)

    def _wait_acks(self) -> None:
        self._acker.submit(self._send_acks).result()
        if self._ack_error:
            raise AgentError(self._ack_error)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    # --- DiskWriter -----------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    def durable_ranges(self) -> RangeSet:
        """What earlier attempts of this transfer made durable on the agent."""
        return self._durable

    def wire_summary(self) -> str:
        return f"{self.stats.bytes_on_wire / MiB:.1f} MiB over NBD with TLS"

    def write(self, offset: int, data: Data) -> None:
        self._clean = False
        h = self._handle()
        view = memoryview(data)
        for start in range(0, len(view), MAX_REQUEST):
            piece = view[start:start + MAX_REQUEST]
            self._nbd_call(f"write at offset {offset + start}",
                           functools.partial(h.pwrite, piece, offset + start))
        with self._stats_lock:
            self.stats.bytes_in += len(data)
            self.stats.bytes_on_wire += len(data)
        self._commit.wait([(offset, offset + len(data))])

    def zero(self, offset: int, length: int) -> None:
        self._clean = False
        h = self._handle()
        for start in range(offset, offset + length, MAX_ZERO):
            count = min(MAX_ZERO, offset + length - start)
            self._nbd_call(f"zero at offset {start}", functools.partial(h.zero, count, start))
        self._commit.wait([(offset, offset + length)])

    def read(self, offset: int, length: int) -> Data:
        h = self._handle()
        buf = bytearray()
        while len(buf) < length:
            count, at = min(MAX_REQUEST, length - len(buf)), offset + len(buf)
            buf += self._nbd_call(f"read at offset {at}", functools.partial(h.pread, count, at))
        return buf

    def flush(self) -> None:
        self._commit.wait([])
        self._wait_acks()
        self._clean = True

    def close(self) -> None:
        """Disconnect; after a successful final flush the agent forgets the transfer,
        otherwise it stops the export and keeps the acknowledgement log for a resume."""
        for h in self._handles:
            try:
                h.shutdown()
            except self._nbd.Error:
                pass
        self._flusher.shutdown()
        self._acker.shutdown()  # the flushed ranges are logged before the transfer is released
        self._handles = []  # libnbd closes a handle when it is dropped
        self._local = threading.local()
        try:
            if self._clean:
                response = self._client.request("DELETE", self._base, headers=self._auth())
                _raise_for(response, "close the transfer")
            else:
                response = self._client.request("POST", f"{self._base}/release",
                                                headers=self._auth())
                _raise_for(response, "release the transfer")
        finally:
            self._client.pool.clear()


def http_reason(journal: str | None, compression: str,
                bandwidth_limit: float | None) -> str | None:
    """Why a transfer with these options must go over HTTPS, or None when NBD may be used."""
    if journal:
        return "the target keeps an undo journal"
    if compression == "zstd":
        return "transfer_compression is zstd"
    if bandwidth_limit:
        return "a bandwidth limit is set"
    try:
        load_libnbd()
    except exceptions.ProviderError:
        return "libnbd is not installed on this worker"
    return None


def open_agent_writer(agent: AgentAddress, transfer_id: str, path: str, fmt: str, *,
                      journal: str | None = None, compression: str = "auto",
                      bandwidth_limit: float | None = None, transport: str = "https",
                      strict: bool = False, connections: int = CONNECTIONS,
                      retry_seconds: float = 120.0, timeout: float = 300.0) -> DiskWriter:
    """A writer of ``path`` on the agent: with ``transport`` ``nbd``, an ``NbdAgentWriter``
    where the NBD path can be used, else (and with ``https``) a ``RemoteDiskWriter``.
    ``strict``: raise ``AgentError`` instead of falling back (tests, benchmarks)."""
    reason = "transport https" if transport != "nbd" else http_reason(journal, compression,
                                                                      bandwidth_limit)
    if reason is None:
        client = _AgentClient(agent, connections, retry_seconds, timeout)
        base = f"{agent.url}/v1/transfers/{transfer_id}"
        body = {"path": path, "format": fmt, "journal": journal, "export": "nbd"}
        try:
            response = client.request("PUT", base, json.dumps(body).encode(),
                                      {AGENT_KEY_HEADER: agent.key,
                                       "Content-Type": "application/json"})
            _raise_for(response, "open the transfer")
            opened = json.loads(response.data)
            if "nbd" not in opened:
                reason = "the agent offers no NBD export (an older agent, or no qemu-nbd there)"
            else:
                try:
                    return NbdAgentWriter(client, base, opened, connections)
                except AgentError as exc:
                    reason = str(exc)
                    client.request("POST", f"{base}/release",
                                   headers={"Authorization": f"Bearer {opened['token']}"})
        except BaseException:
            client.pool.clear()
            raise
        client.pool.clear()
    if strict:
        raise AgentError(f"the NBD path to the writer agent cannot be used: {reason}")
    if transport == "nbd":
        LOG.warning("transfer %s goes over HTTPS: %s", transfer_id, reason)
    return RemoteDiskWriter(agent, transfer_id, path, fmt, journal=journal,
                            compression=compression, bandwidth_limit=bandwidth_limit,
                            retry_seconds=retry_seconds, timeout=timeout)
