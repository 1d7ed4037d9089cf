"""A DiskWriter that sends chunks to a writer agent over HTTPS (see ``transfer.agent``), and
a DiskReader of a disk an agent serves read-only (``RemoteDiskReader``, ``transfer.agent_reads``).

The agent's certificate is pinned by its SHA-256 fingerprint: urllib3 checks it right after the
TLS handshake, before a request (and the token in it) leaves this host. Every chunk carries its
xxh3; a chunk the agent finds corrupted (422) is sent again, a dropped connection or a
restarting agent is retried until ``retry_seconds`` pass. Chunks the agent acknowledged as
durable in an earlier attempt of the same transfer id are listed by ``durable_ranges``, which
the copy pipeline skips: an interrupted transfer resumes where it was.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import urllib3
import xxhash
import zstandard

from coriolis import exceptions
from coriolis.transfer.base import Data, Extent
from coriolis.transfer.tls import normalise_fingerprint
from coriolis.transfer.wire import (
    AGENT_KEY_HEADER,
    HASH_HEADER,
    CompressionPolicy,
    RangeSet,
    RateLimiter,
)

LOG = logging.getLogger(__name__)
CHECKSUM_ATTEMPTS = 5


@dataclass(frozen=True)
class AgentAddress:
    """Where a writer agent listens, the fingerprint of its certificate and its agent key."""

    url: str
    fingerprint: str
    key: str

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> AgentAddress:
        return cls(value["url"].rstrip("/"), normalise_fingerprint(value["fingerprint"]),
                   value["key"])


@dataclass
class WireStats:
    bytes_in: int = 0  # chunk bytes handed to the writer
    bytes_on_wire: int = 0  # request bodies as sent (compressed or not)
    chunks_compressed: int = 0
    chunks_resent: int = 0


class AgentError(exceptions.ProviderError):
    pass


def is_this_host(url: str) -> bool:
    """Whether ``url`` points at this host (a loopback address or one of its own)."""
    host = urllib3.util.parse_url(url).host or ""
    host = host.strip("[]")
    if host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        own = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return False
    return any(ipaddress.ip_address(a).is_loopback or a in own for a in addresses)


class _AgentClient:
    """HTTPS to one agent: the pinned certificate, retries while it cannot be reached."""

    def __init__(self, agent: AgentAddress, connections: int, retry_seconds: float,
                 timeout: float) -> None:
        self.agent, self.retry_seconds = agent, retry_seconds
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # the pinned fingerprint identifies the agent
        context.verify_mode = ssl.CERT_NONE
        self.pool = urllib3.PoolManager(
            num_pools=1, maxsize=connections, block=True, ssl_context=context,
            assert_hostname=False, assert_fingerprint=agent.fingerprint.replace(":", ""),
            timeout=urllib3.Timeout(connect=10, read=timeout), retries=False)

    def request(self, method: str, url: str, body: Data | None = None,
                headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        """One request, retried while the agent cannot be reached; HTTP errors other than
        503 are returned to the caller."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.1
        while True:
            try:
                # urllib3 sends any bytes-like body; its annotation only names bytes
                response = self.pool.request(method, url, body=cast(bytes | None, body),
                                             headers=headers, preload_content=True)
                if response.status != 503:
                    return response
                problem = "agent busy (503)"
            except urllib3.exceptions.SSLError as exc:
                if "fingerprint" in str(exc).lower():
                    raise AgentError(
                        f"the writer agent at {self.agent.url} presented a certificate whose "
                        f"fingerprint is not the pinned one; refusing to send anything") from exc
                problem = str(exc)
            except urllib3.exceptions.HTTPError as exc:
                problem = str(exc)
            if time.monotonic() > deadline:
                raise AgentError(f"writer agent at {self.agent.url} unreachable for "
                                 f"{self.retry_seconds:.0f}s: {problem}")
            LOG.info("writer agent %s: %s; retrying", self.agent.url, problem)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _raise_for(response: urllib3.BaseHTTPResponse, what: str) -> None:
    if response.status < 300:
        return
    try:
        detail = json.loads(response.data)["detail"]
    except (ValueError, KeyError, TypeError):
        detail = response.data[:200].decode(errors="replace")
    raise AgentError(f"writer agent refused to {what} ({response.status}): {detail}")


def key_from_ref(connection_info: dict[str, Any], key_ref: str,
                 side: str = "destination") -> str:
    """The agent key found at ``key_ref``, a dotted path into ``connection_info`` (e.g.
    ``"writer.key"``) of the ``side`` endpoint; ``ProviderError`` naming ``key_ref`` (never
    a value) otherwise."""
    value: Any = connection_info
    for part in key_ref.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, str) or not value:
        raise exceptions.ProviderError(
            f"the {side} endpoint's connection info has no agent key at '{key_ref}'")
    return value


class AgentSession:
    """JSON requests with the agent key to one agent: the pinned certificate, retries while
    it cannot be reached (``retry_seconds``), ``AgentError`` with the agent's reason for a
    refusal. A context manager."""

    def __init__(self, agent: AgentAddress, retry_seconds: float = 120.0,
                 timeout: float = 60.0) -> None:
        self.agent = agent
        self._client = _AgentClient(agent, 1, retry_seconds, timeout)

    def call(self, method: str, path: str, what: str, payload: Any = None) -> Any:
        """``method`` on ``path`` (from ``/v1/``) with ``payload`` as JSON; the reply's JSON,
        None for an empty one. ``what`` says what was asked in the error of a refusal."""
        headers = {AGENT_KEY_HEADER: self.agent.key}
        body = None
        if payload is not None:
            body, headers["Content-Type"] = json.dumps(payload).encode(), "application/json"
        response = self._client.request(method, f"{self.agent.url}{path}", body, headers)
        _raise_for(response, what)
        return json.loads(response.data) if response.data else None

    def close(self) -> None:
        self._client.pool.clear()

    def __enter__(self) -> AgentSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_agent(agent: AgentAddress, retry_seconds: float = 5.0) -> list[str]:
    """Check that the agent answers with the pinned certificate and accepts the agent key;
    return the directories it serves."""
    with AgentSession(agent, retry_seconds, 10.0) as session:
        return list(session.call("GET", "/v1/agent", "describe itself")["roots"])


class RemoteDiskWriter:
    def __init__(self, agent: AgentAddress, transfer_id: str, path: str, fmt: str, *,
                 journal: str | None = None, compression: str = "auto",
                 bandwidth_limit: float | None = None, connections: int = 8,
                 retry_seconds: float = 120.0, timeout: float = 300.0) -> None:
        self.agent, self.transfer_id = agent, transfer_id
        self.policy = CompressionPolicy(compression)
        self.limiter = RateLimiter(bandwidth_limit)
        self.stats = WireStats()
        self._stats_lock = threading.Lock()
        self._zstd = threading.local()
        # A test seam: called on each chunk body after its checksum was taken, to prove that a
        # corrupted chunk is refused and sent again.
        self.tamper: Callable[[Data], Data] | None = None
        self._client = _AgentClient(agent, connections, retry_seconds, timeout)
        self._base = f"{agent.url}/v1/transfers/{transfer_id}"
        opened = self._json("PUT", self._base, {"path": path, "format": fmt, "journal": journal},
                            headers={AGENT_KEY_HEADER: agent.key})
        self._token = opened["token"]
        self._size = int(opened["size"])
        self._durable = RangeSet([(s, e) for s, e in opened["durable"]])
        self._clean = False  # a successful flush happened after the last write

    # --- HTTP ---------------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def _json(self, method: str, url: str, payload: dict[str, Any],
              headers: dict[str, str]) -> Any:
        response = self._client.request(method, url, json.dumps(payload).encode(),
                                 {**headers, "Content-Type": "application/json"})
        _raise_for(response, "open the transfer")
        return json.loads(response.data)

    def _compress(self, data: Data) -> bytes:
        cctx = getattr(self._zstd, "cctx", None)
        if cctx is None:
            cctx = self._zstd.cctx = zstandard.ZstdCompressor(level=1)
        return cctx.compress(data)

    # --- DiskWriter -----------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    def wire_summary(self) -> str:
        """What went over the wire, for a copy's summary (the optional ``DiskWriter`` method
        a worker reports after a copy)."""
        return f"{self.stats.bytes_on_wire / (1024 * 1024):.1f} MiB on the wire"

    def durable_ranges(self) -> RangeSet:
        """What earlier attempts of this transfer already made durable on the agent."""
        return self._durable

    def write(self, offset: int, data: Data) -> None:
        self._clean = False
        digest = xxhash.xxh3_64_hexdigest(data)
        body, headers = data, {HASH_HEADER: digest, **self._auth()}
        if self.policy.should_compress():
            began = time.perf_counter()
            packed = self._compress(data)
            self.policy.record_compression(len(data), len(packed), time.perf_counter() - began)
            if len(packed) < len(data):
                body, headers["Content-Encoding"] = packed, "zstd"
        url = f"{self._base}/data/{offset}"
        for attempt in range(1, CHECKSUM_ATTEMPTS + 1):
            sent = self.tamper(body) if self.tamper else body
            began = time.perf_counter()
            self.limiter.consume(len(sent))
            response = self._client.request("PUT", url, sent, headers)
            elapsed = time.perf_counter() - began
            with self._stats_lock:
                self.stats.bytes_on_wire += len(sent)
                self.stats.chunks_resent += attempt > 1
            if response.status == 422 and attempt < CHECKSUM_ATTEMPTS:
                LOG.warning("chunk at %d arrived corrupted; sending it again", offset)
                continue
            _raise_for(response, f"write the chunk at offset {offset}")
            commit = float(response.headers.get("X-Coriolis-Commit-Seconds") or 0)
            self.policy.record_send(len(sent), max(elapsed - commit, 1e-6))
            break
        with self._stats_lock:
            self.stats.bytes_in += len(data)
            self.stats.chunks_compressed += "Content-Encoding" in headers

    def zero(self, offset: int, length: int) -> None:
        self._clean = False
        response = self._client.request("PUT", f"{self._base}/zero/{offset}/{length}",
                                 headers=self._auth())
        _raise_for(response, f"zero {length} bytes at offset {offset}")

    def read(self, offset: int, length: int) -> Data:
        response = self._client.request("GET", f"{self._base}/data/{offset}/{length}",
                                 headers=self._auth())
        _raise_for(response, f"read {length} bytes at offset {offset}")
        return bytes(response.data)

    def flush(self) -> None:
        response = self._client.request("POST", f"{self._base}/flush", headers=self._auth())
        _raise_for(response, "flush")
        self._clean = True

    def close(self) -> None:
        """After a successful final flush the agent forgets the transfer; otherwise it keeps
        its acknowledgement log, so that a new attempt resumes."""
        try:
            if self._clean:
                response = self._client.request("DELETE", self._base, headers=self._auth())
                _raise_for(response, "close the transfer")
        finally:
            self._client.pool.clear()


class RemoteDiskReader:
    """A ``DiskReader`` of a disk an agent serves read-only (its read session, see
    ``transfer.agent_reads``): ``path`` and ``fmt`` as the agent sees them, ``since`` the
    change-tracking token ``extents(since)`` may be asked for, ``confine`` the folders
    (inside the agent's roots) every file opened for it must be in. Every reply's bytes are
    checked against the xxh3 the agent sent (a mismatch is read again); a session the agent
    lost (it restarted) is opened again. ``AgentError`` naming the agent and what was asked
    when it refuses."""

    def __init__(self, agent: AgentAddress, path: str, fmt: str, *, since: str | None = None,
                 confine: tuple[str, ...] = (), connections: int = 8,
                 retry_seconds: float = 120.0, timeout: float = 300.0) -> None:
        self.agent = agent
        self._client = _AgentClient(agent, connections, retry_seconds, timeout)
        self._base = f"{agent.url}/v1/reads/{secrets.token_hex(12)}"
        self._request = {"path": path, "format": fmt, "since": since,
                         "confine": list(confine)}
        self._reopen = threading.Lock()
        self._token = ""
        self._size = 0
        self._open()

    def _open(self) -> None:
        response = self._client.request(
            "PUT", self._base, json.dumps(self._request).encode(),
            {AGENT_KEY_HEADER: self.agent.key, "Content-Type": "application/json"})
        _raise_for(response, "open the disk for reading")
        opened = json.loads(response.data)
        self._token, self._size = opened["token"], int(opened["size"])

    def _get(self, path: str, what: str) -> urllib3.BaseHTTPResponse:
        token = self._token
        response = self._client.request("GET", f"{self._base}{path}",
                                        headers={"Authorization": f"Bearer {token}"})
        if response.status in (401, 404):  # the agent restarted: its sessions are gone
            with self._reopen:
                if self._token == token:
                    LOG.info("agent %s lost the read session; opening it again",
                             self.agent.url)
                    self._open()
            response = self._client.request(
                "GET", f"{self._base}{path}",
                headers={"Authorization": f"Bearer {self._token}"})
        _raise_for(response, what)
        return response

    @property
    def size(self) -> int:
        return self._size

    def extents(self, since: str | None = None) -> Iterator[Extent]:
        query = f"?since={quote(since, safe='')}" if since else ""
        listed = json.loads(self._get(f"/extents{query}", "list the disk's extents").data)
        return iter([Extent(int(o), int(n), bool(z)) for o, n, z in listed["extents"]])

    def read(self, offset: int, length: int) -> Data:
        what = f"read {length} bytes at offset {offset}"
        for attempt in range(1, CHECKSUM_ATTEMPTS + 1):
            response = self._get(f"/data/{offset}/{length}", what)
            data = response.data
            expected = (response.headers.get(HASH_HEADER) or "").lower()
            if len(data) == length and xxhash.xxh3_64_hexdigest(data) == expected:
                return data
            LOG.warning("agent %s: %d bytes at %d arrived corrupted (attempt %d)",
                        self.agent.url, length, offset, attempt)
        raise AgentError(f"agent at {self.agent.url}: {length} bytes at offset {offset} "
                         f"never arrived intact ({CHECKSUM_ATTEMPTS} attempts)")

    def change_token(self) -> str | None:
        return None

    def close(self) -> None:
        self._client.retry_seconds = min(self._client.retry_seconds, 5.0)
        try:
            self._client.request("DELETE", self._base,
                                 headers={"Authorization": f"Bearer {self._token}"})
        except AgentError:
            LOG.info("agent %s unreachable while closing a read session; it closes it "
                     "when idle", self.agent.url)
        finally:
            self._client.pool.clear()
