"""The copy pipeline: only allocated ranges are read, zero chunks become holes, several chunks
are in flight at once.

Checksums: a writer agent verifies the xxh3 of every chunk it receives (see ``transfer.remote``);
``verify=True`` also reads every written chunk back and compares its xxh3, which costs about a
fifth of a local copy's time and catches a destination that stores something else than it was
given.

With a ``BlockManifest`` the copy is incremental: a block whose hash equals what the destination
already holds (per the manifest) is neither written nor sent. A writer with ``durable_ranges``
(a resumed transfer) is not sent again what it already made durable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import xxhash

from coriolis import exceptions
from coriolis.transfer.base import Data, DiskReader, DiskWriter, Extent
from coriolis.transfer.extents import split
from coriolis.transfer.manifest import UNKNOWN, ZERO, BlockManifest, block_hash

DEFAULT_CHUNK = 4 * 1024 * 1024
VERIFY_ATTEMPTS = 3
PROGRESS_INTERVAL = 1.0
_ZEROS = bytes(DEFAULT_CHUNK)


def _runs(changed: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
    """Group consecutive block indexes, splitting where zero and data blocks alternate."""
    run: list[tuple[int, int]] = []
    for item in changed:
        if run and (item[0] != run[-1][0] + 1 or (item[1] == ZERO) != (run[-1][1] == ZERO)):
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def is_zero(data: Data) -> bool:
    if len(data) <= len(_ZEROS):
        return data == _ZEROS[: len(data)]
    return data == bytes(len(data))


@dataclass
class CopyStats:
    bytes_total: int = 0
    bytes_scanned: int = 0
    bytes_written: int = 0
    bytes_zeroed: int = 0
    bytes_skipped_unchanged: int = 0
    bytes_resumed: int = 0  # durable on the destination from an earlier, interrupted attempt
    chunks: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass(frozen=True)
class _Job:
    offset: int
    length: int
    zero: bool  # nothing to read: the whole range is a hole / zero extent

    @property
    def end(self) -> int:
        return self.offset + self.length


ProgressCallback = Callable[[int, int, float], None]


class _Progress:
    """Calls ``callback(done, total, bytes_per_second)`` at most once a second, and once at
    the end; the rate is the average since the copy began."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self._callback, self.total, self.done = callback, total, 0
        self._started = self._last = time.monotonic()
        self._lock = threading.Lock()

    def _rate(self, now: float) -> float:
        return self.done / max(now - self._started, 1e-6)

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if self._callback and now - self._last >= PROGRESS_INTERVAL:
                self._last = now
                self._callback(self.done, self.total, self._rate(now))

    def finish(self) -> None:
        if self._callback:
            self.done = self.total
            self._callback(self.total, self.total, self._rate(time.monotonic()))


def _aligned_jobs(extents: list[Extent], chunk: int, size: int) -> Iterator[_Job]:
    """Chunk-aligned jobs over the whole disk (for manifests, whose blocks divide ``chunk``):
    a job is data if any data extent overlaps it."""
    data_chunks: set[int] = set()
    for ext in extents:
        if not ext.zero:
            data_chunks.update(range(ext.offset // chunk, (ext.end - 1) // chunk + 1))
    for index in range((size + chunk - 1) // chunk):
        offset = index * chunk
        yield _Job(offset, min(chunk, size - offset), index not in data_chunks)


def _changed_jobs(extents: list[Extent], block: int, chunk: int, size: int) -> Iterator[_Job]:
    """Jobs over changed ranges only, widened to whole manifest blocks, at most ``chunk``."""
    ranges: list[list[int]] = []
    for e in sorted(extents, key=lambda e: e.offset):
        if e.zero:
            continue
        start, end = e.offset // block * block, min(-(-e.end // block) * block, size)
        if ranges and start <= ranges[-1][1]:
            ranges[-1][1] = max(ranges[-1][1], end)
        else:
            ranges.append([start, end])
    for piece in split([Extent(start, end - start) for start, end in ranges], chunk):
        yield _Job(piece.offset, piece.length, False)


def _plain_jobs(extents: list[Extent], chunk_size: int) -> Iterator[_Job]:
    for ext in split(extents, chunk_size):
        yield _Job(ext.offset, ext.length, ext.zero)


def copy_disk(
    reader: DiskReader,
    writer: DiskWriter,
    *,
    since: str | None = None,
    manifest: BlockManifest | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    workers: int = 4,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    dest_is_blank: bool = True,
    verify: bool = False,
) -> CopyStats:
    """Copy ``reader`` into ``writer``; see the module docstring. Raises ``TaskCanceled`` when
    ``cancel()`` turns true, ``ProviderError`` when a chunk cannot be written correctly."""
    started = time.monotonic()
    size = reader.size
    if writer.size < size:
        raise exceptions.ProviderError(
            f"destination disk is smaller ({writer.size} bytes) than the source ({size} bytes)")
    extents = list(reader.extents(since))
    stats = CopyStats(bytes_total=size)
    if manifest is not None:
        if manifest.disk_size != size:
            raise exceptions.ProviderError("block manifest does not match the disk size")
        chunk = max(chunk_size // manifest.block_size, 1) * manifest.block_size
        jobs = list(_aligned_jobs(extents, chunk, size) if since is None
                    else _changed_jobs(extents, manifest.block_size, chunk, size))
    else:
        jobs = list(_plain_jobs(extents, chunk_size))
    tracker = _Progress(progress, sum(j.length for j in jobs if not j.zero))
    durable = getattr(writer, "durable_ranges", None)
    resumed = durable() if durable is not None else None

    def already_durable(job: _Job) -> bool:
        return resumed is not None and resumed.covers(job.offset, job.end)

    def cancelled() -> bool:
        return bool(cancel and cancel())

    def write_verified(offset: int, data: Data) -> None:
        expected = xxhash.xxh3_64_intdigest(data)
        for _attempt in range(VERIFY_ATTEMPTS):
            writer.write(offset, data)
            if not verify or xxhash.xxh3_64_intdigest(writer.read(offset, len(data))) == expected:
                return
        raise exceptions.ProviderError(
            f"chunk at offset {offset} failed its checksum {VERIFY_ATTEMPTS} times")

    def read(job: _Job) -> Data | None:
        if cancelled():
            raise exceptions.TaskCanceled("copy cancelled")
        if job.zero:
            return None
        data = reader.read(job.offset, job.length)
        stats.add(bytes_scanned=job.length)
        return data

    def run_plain(job: _Job) -> None:
        if already_durable(job):
            stats.add(bytes_resumed=job.length, chunks=1)
            tracker.advance(0 if job.zero else job.length)
            return
        data = read(job)
        if data is None or is_zero(data):
            if not dest_is_blank:
                writer.zero(job.offset, job.length)
                stats.add(bytes_zeroed=job.length)
        else:
            write_verified(job.offset, data)
            stats.add(bytes_written=job.length)
        stats.add(chunks=1)
        tracker.advance(0 if job.zero else job.length)

    def run_manifest(job: _Job) -> None:
        """Write only the runs of blocks whose content differs from the manifest's."""
        assert manifest is not None
        data = read(job)
        block = manifest.block_size
        first = job.offset // block
        changed: list[tuple[int, int]] = []  # (block index, desired hash)
        for i in range((job.length + block - 1) // block):
            piece = data[i * block:(i + 1) * block] if data is not None else None
            desired = ZERO if piece is None or is_zero(piece) else block_hash(piece)
            if manifest.get(first + i) != desired:
                changed.append((first + i, desired))
        unchanged = job.length - sum(
            min(block, job.offset + job.length - idx * block) for idx, _ in changed)
        stats.add(bytes_skipped_unchanged=unchanged, chunks=1)
        if changed and already_durable(job):  # written by the interrupted attempt
            for idx, desired in changed:
                manifest.set(idx, desired)
            stats.add(bytes_resumed=job.length - unchanged)
            changed = []
        for run in _runs(changed):
            for idx, _ in run:  # a write cut short leaves the block unknown, never stale
                manifest.set(idx, UNKNOWN)
            start = run[0][0] * block
            end = min((run[-1][0] + 1) * block, job.offset + job.length)
            if all(h == ZERO for _, h in run):
                writer.zero(start, end - start)
                stats.add(bytes_zeroed=end - start)
            else:
                assert data is not None
                write_verified(start, data[start - job.offset:end - job.offset])
                stats.add(bytes_written=end - start)
            for idx, desired in run:
                manifest.set(idx, desired)
        tracker.advance(0 if job.zero else job.length)

    run = run_plain if manifest is None else run_manifest
    in_flight: set[Future[None]] = set()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="copy") as pool:
        try:
            for job in jobs:
                if cancelled():
                    raise exceptions.TaskCanceled("copy cancelled")
                in_flight.add(pool.submit(run, job))
                if len(in_flight) >= workers * 2:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        fut.result()
            for fut in in_flight:
                fut.result()
        except BaseException:
            for fut in in_flight:
                fut.cancel()
            raise
    writer.flush()
    tracker.finish()
    stats.seconds = time.monotonic() - started
    return stats
