"""What the worker and the writer agent agree on: chunk headers, compression choice, the
bandwidth limit, and the set of byte ranges a transfer has made durable."""

from __future__ import annotations

import bisect
import threading
import time

HASH_HEADER = "X-Coriolis-Xxh3"  # xxh3-64 (hex) of the chunk as written, before compression
AGENT_KEY_HEADER = "X-Coriolis-Agent-Key"
COMPRESSIONS = ("auto", "zstd", "none")


class RangeSet:
    """Disjoint, sorted byte ranges ``[start, end)``; adding merges neighbours."""

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges or []:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_left(self._ends, start)  # first range that ends at/after start
        j = bisect.bisect_right(self._starts, end)  # ranges before j start at/before end
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def covers(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def as_list(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self._starts, self._ends, strict=True)]


class RateLimiter:
    """A token bucket shared by the threads of one transfer (bytes per second on the wire)."""

    def __init__(self, bytes_per_second: float | None) -> None:
        self.rate = bytes_per_second
        self._lock = threading.Lock()
        self._next_free = time.monotonic()

    def consume(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:  # a chunk leaves once the link has had time for it at the rate
            now = time.monotonic()
            self._next_free = max(now, self._next_free) + n / self.rate
            wait = self._next_free - now
        if wait > 0:
            time.sleep(wait)


class CompressionPolicy:
    """Decides per chunk whether zstd pays: compress when compressing and sending the smaller
    result is expected to take less time than sending the chunk as it is.

    It keeps moving averages of the link's throughput (wire bytes per second of sending),
    zstd's speed and its ratio on this disk's data; while it is not compressing it still
    samples one chunk in ``SAMPLE_EVERY`` so that it notices when the data or the link change.
    """

    SAMPLE_EVERY = 16
    _ALPHA = 0.3

    def __init__(self, mode: str = "auto") -> None:
        if mode not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}")
        self.mode = mode
        self._lock = threading.Lock()
        self.link_rate: float | None = None  # bytes per second
        self.zstd_rate: float | None = None  # input bytes per second
        self.ratio: float | None = None  # output / input
        self._since_sample = 0

    @staticmethod
    def _blend(old: float | None, new: float) -> float:
        return new if old is None else old + CompressionPolicy._ALPHA * (new - old)

    def should_compress(self) -> bool:
        if self.mode != "auto":
            return self.mode == "zstd"
        with self._lock:
            if self.link_rate is None or self.zstd_rate is None or self.ratio is None:
                return True  # learn zstd's figures on the first chunks
            self._since_sample += 1
            if self._since_sample >= self.SAMPLE_EVERY:
                self._since_sample = 0
                return True
            per_byte_plain = 1 / self.link_rate
            per_byte_zstd = 1 / self.zstd_rate + self.ratio / self.link_rate
            return per_byte_zstd < per_byte_plain

    def record_compression(self, size_in: int, size_out: int, seconds: float) -> None:
        with self._lock:
            self.zstd_rate = self._blend(self.zstd_rate, size_in / max(seconds, 1e-6))
            self.ratio = self._blend(self.ratio, size_out / max(size_in, 1))

    def record_send(self, wire_bytes: int, seconds: float) -> None:
        if wire_bytes < 65536:
            return  # too small to say anything about the link
        with self._lock:
            self.link_rate = self._blend(self.link_rate, wire_bytes / max(seconds, 1e-6))
