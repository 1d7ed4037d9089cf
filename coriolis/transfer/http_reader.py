"""Reading a raw disk image over HTTP(S) with ranged GETs (a platform's export URL, an
object store, a web server): the size is given (the location says it), every byte is data
(no extents information), an HTTPS certificate may be pinned by its SHA-256 fingerprint."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator

import urllib3

from coriolis import exceptions
from coriolis.transfer.base import Data, Extent
from coriolis.transfer.tls import normalise_fingerprint

ATTEMPTS = 4


class HttpRangeReader:
    """A DiskReader of ``url`` (``size`` bytes). Reads are ``Range: bytes=a-b`` GETs that
    must be answered 206 with exactly that range; a dropped connection or a 5xx is retried
    ``ATTEMPTS`` times. ``ProviderError`` naming the URL (without its query, which may hold a
    signature) otherwise."""

    def __init__(self, url: str, size: int, fingerprint: str | None = None,
                 connections: int = 4, timeout: float = 60.0, *,
                 headers: dict[str, str] | None = None,
                 ssl_context: ssl.SSLContext | None = None, name: str | None = None) -> None:
        """``headers``: sent with every GET (a platform reader's session cookie: never
        logged, never in an error). ``ssl_context``: how the server is verified when no
        ``fingerprint`` is pinned (default: the system's CAs). ``name``: how errors name
        the disk (default: the URL without its query)."""
        self.url, self._size = url, int(size)
        self._headers = dict(headers or {})
        parsed = urllib3.util.parse_url(url)
        self._name = name or f"{parsed.scheme}://{parsed.netloc}{parsed.path or ''}"
        kwargs: dict = {"ssl_context": ssl_context} if ssl_context is not None else {}
        if fingerprint:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False  # the pinned fingerprint identifies the server
            context.verify_mode = ssl.CERT_NONE
            kwargs = {"ssl_context": context, "assert_hostname": False,
                      "assert_fingerprint": normalise_fingerprint(fingerprint).replace(":", "")}
        self._pool = urllib3.PoolManager(
            num_pools=1, maxsize=connections, block=True, retries=False,
            timeout=urllib3.Timeout(connect=10, read=timeout), **kwargs)

    @property
    def size(self) -> int:
        return self._size

    def extents(self, since: str | None = None) -> Iterator[Extent]:
        return iter([Extent(0, self._size)] if self._size else [])

    def read(self, offset: int, length: int) -> Data:
        if length <= 0:
            return b""
        wanted = f"bytes {offset}-{offset + length - 1}/"
        problem = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(0.2 * 2 ** attempt)
            try:
                response = self._pool.request(
                    "GET", self.url, headers={**self._headers,
                             "Range": f"bytes={offset}-{offset + length - 1}"})
            except urllib3.exceptions.SSLError as exc:
                raise exceptions.ProviderError(
                    f"{self._name}: TLS failed (a pinned fingerprint that does not match?): "
                    f"{exc}") from None
            except urllib3.exceptions.HTTPError as exc:
                problem = str(exc)
                continue
            if response.status >= 500:
                problem = f"HTTP {response.status}"
                continue
            content_range = response.headers.get("Content-Range", "")
            if response.status != 206 or not content_range.startswith(wanted):
                raise exceptions.ProviderError(
                    f"{self._name} did not answer a range request for {length} bytes at "
                    f"{offset} (HTTP {response.status}, Content-Range {content_range!r})")
            if len(response.data) != length:
                problem = f"{len(response.data)} of {length} bytes received"
                continue
            return response.data
        raise exceptions.ProviderError(f"reading {self._name} at {offset} failed: {problem}")

    def change_token(self) -> str | None:
        return None

    def close(self) -> None:
        self._pool.clear()
