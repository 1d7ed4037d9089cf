"""The copy pipeline: only allocated ranges are read, zero chunks become holes, every chunk is
checksummed (xxh3) and verified after writing, several chunks are in flight at once.

With a ``BlockManifest`` the copy is incremental: a block whose hash equals what the destination
already holds (per the manifest) is neither written nor sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import xxhash

from coriolis import exceptions
from coriolis.transfer.base import DiskReader, DiskWriter, Extent
from coriolis.transfer.extents import split
from coriolis.transfer.manifest import ZERO, BlockManifest, block_hash

DEFAULT_CHUNK = 4 * 1024 * 1024
VERIFY_ATTEMPTS = 3
PROGRESS_INTERVAL = 1.0
_ZEROS = bytes(DEFAULT_CHUNK)


def is_zero(data: bytes) -> bool:
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
    zero: bool
    block: int | None = None  # manifest block index


class _Progress:
    """Calls ``callback(done, total)`` at most once a second, and once at the end."""

    def __init__(self, callback: Callable[[int, int], None] | None, total: int) -> None:
        self._callback, self.total, self.done = callback, total, 0
        self._last = 0.0
        self._lock = threading.Lock()

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if self._callback and now - self._last >= PROGRESS_INTERVAL:
                self._last = now
                self._callback(self.done, self.total)

    def finish(self) -> None:
        if self._callback:
            self._callback(self.total, self.total)


def _manifest_jobs(extents: list[Extent], block_size: int, size: int) -> Iterator[_Job]:
    """Block-aligned jobs: a block is data if any data extent overlaps it."""
    data_blocks: set[int] = set()
    for ext in extents:
        if not ext.zero:
            data_blocks.update(range(ext.offset // block_size, (ext.end - 1) // block_size + 1))
    for index in range((size + block_size - 1) // block_size):
        offset = index * block_size
        yield _Job(offset, min(block_size, size - offset), index not in data_blocks, index)


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
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    dest_is_blank: bool = True,
    verify: bool = True,
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
        jobs = _manifest_jobs(extents, manifest.block_size, size)
        to_scan = sum(j.length for j in _manifest_jobs(extents, manifest.block_size, size)
                      if not j.zero)
    else:
        jobs = _plain_jobs(extents, chunk_size)
        to_scan = sum(e.length for e in extents if not e.zero)
    tracker = _Progress(progress, to_scan)

    def cancelled() -> bool:
        return bool(cancel and cancel())

    def write_verified(job: _Job, data: bytes) -> None:
        expected = xxhash.xxh3_64_intdigest(data)
        for _attempt in range(VERIFY_ATTEMPTS):
            writer.write(job.offset, data)
            if not verify or xxhash.xxh3_64_intdigest(
                    writer.read(job.offset, job.length)) == expected:
                return
        raise exceptions.ProviderError(
            f"chunk at offset {job.offset} failed its checksum {VERIFY_ATTEMPTS} times")

    def run(job: _Job) -> None:
        if cancelled():
            raise exceptions.TaskCanceled("copy cancelled")
        if job.zero:
            data = None
            desired = ZERO
        else:
            data = reader.read(job.offset, job.length)
            stats.add(bytes_scanned=job.length)
            zero = is_zero(data)
            desired = ZERO if zero else block_hash(data)
            if zero:
                data = None
        if manifest is not None and job.block is not None:
            if manifest.get(job.block) == desired:
                stats.add(bytes_skipped_unchanged=job.length, chunks=1)
                tracker.advance(0 if job.zero else job.length)
                return
        if data is None:
            if not dest_is_blank or manifest is not None:
                writer.zero(job.offset, job.length)
                stats.add(bytes_zeroed=job.length)
        else:
            write_verified(job, data)
            stats.add(bytes_written=job.length)
        if manifest is not None and job.block is not None:
            manifest.set(job.block, desired)
        stats.add(chunks=1)
        tracker.advance(0 if job.zero else job.length)

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
