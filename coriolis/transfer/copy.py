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

import functools
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
DEFAULT_WORKERS = 4
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


@functools.cache
def _zero_hash(length: int) -> int:
    """The manifest hash a block of ``length`` zero bytes would have."""
    return block_hash(bytes(length))


def is_zero(data: Data | memoryview) -> bool:
    if isinstance(data, memoryview):  # comparing a memoryview is per item: 100x slower
        data = data.tobytes()
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
    # The data ranges (offset, length) to read, where only part of the job holds data (the
    # rest reads as zeroes); empty: the whole job is read (unless ``zero``).
    pieces: tuple[tuple[int, int], ...] = ()

    @property
    def data_bytes(self) -> int:
        """Bytes this job reads from the source."""
        if self.zero:
            return 0
        return sum(n for _, n in self.pieces) if self.pieces else self.length

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


def _window_jobs(extents: list[Extent], chunk: int, size: int) -> Iterator[_Job]:
    """Chunk-aligned windows over the whole disk (for manifests, whose blocks divide
    ``chunk``). A window holding data lists its data ``pieces``, the only bytes read (the
    rest of the window reads as zeroes); consecutive windows without data make one zero job.
    """
    data = sorted((max(e.offset, 0), min(e.end, size)) for e in extents
                  if not e.zero and max(e.offset, 0) < min(e.end, size))
    i, zero_from, offset = 0, 0, 0
    while offset < size:
        end = min(offset + chunk, size)
        while i < len(data) and data[i][1] <= offset:
            i += 1
        pieces: list[tuple[int, int]] = []
        j = i
        while j < len(data) and data[j][0] < end:
            start, stop = max(data[j][0], offset), min(data[j][1], end)
            if start < stop:
                pieces.append((start, stop - start))
            j += 1
        if pieces:
            if zero_from < offset:
                yield _Job(zero_from, offset - zero_from, True)
            yield _Job(offset, end - offset, False, tuple(pieces))
            zero_from = end
            offset = end
        elif j < len(data):  # jump to the chunk holding the next data
            offset = min(data[j][0] // chunk * chunk, size) if data[j][0] >= end else end
        else:
            offset = size
    if zero_from < size:
        yield _Job(zero_from, size - zero_from, True)


def _hole_blocks(job: _Job, block: int) -> set[int]:
    """Indexes (from the job's first block) of the job's blocks that no data piece
    touches."""
    if not job.pieces:
        return set()
    count = (job.length + block - 1) // block
    touched: set[int] = set()
    for offset, length in job.pieces:
        touched.update(range((offset - job.offset) // block,
                             (offset + length - 1 - job.offset) // block + 1))
    return set(range(count)) - touched


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
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    dest_is_blank: bool = True,
    verify: bool = False,
) -> CopyStats:
    """Copy ``reader`` into ``writer``; see the module docstring. Raises ``TaskCanceled`` when
    ``cancel()`` turns true, ``ProviderError`` when a chunk cannot be written correctly."""
    started = time.monotonic()
    # A writer whose writes wait for a flush (the writer agent's NBD path) asks for more
    # chunks in flight, so that more of them share each flush.
    parallel: int = workers or int(getattr(writer, "copy_workers", DEFAULT_WORKERS))
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
        jobs = list(_window_jobs(extents, chunk, size) if since is None
                    else _changed_jobs(extents, manifest.block_size, chunk, size))
    else:
        jobs = list(_plain_jobs(extents, chunk_size))
    tracker = _Progress(progress, sum(j.data_bytes for j in jobs))
    durable = getattr(writer, "durable_ranges", None)
    resumed = durable() if durable is not None else None

    def already_durable(job: _Job) -> bool:
        return resumed is not None and resumed.covers(job.offset, job.end)

    def cancelled() -> bool:
        return bool(cancel and cancel())

    def write_verified(offset: int, data: Data) -> None:
        if not verify:
            writer.write(offset, data)
            return
        expected = xxhash.xxh3_64_intdigest(data)
        for _attempt in range(VERIFY_ATTEMPTS):
            writer.write(offset, data)
            if xxhash.xxh3_64_intdigest(writer.read(offset, len(data))) == expected:
                return
        raise exceptions.ProviderError(
            f"chunk at offset {offset} failed its checksum {VERIFY_ATTEMPTS} times")

    def read(job: _Job) -> Data | None:
        if cancelled():
            raise exceptions.TaskCanceled("copy cancelled")
        if job.zero:
            return None
        if not job.pieces or job.pieces == ((job.offset, job.length),):
            data = reader.read(job.offset, job.length)
        else:  # read the data ranges only; the rest of the window is zeroes
            buf = bytearray(job.length)
            for offset, length in job.pieces:
                buf[offset - job.offset:offset - job.offset + length] = \
                    reader.read(offset, length)
            data = buf
        stats.add(bytes_scanned=job.data_bytes)
        return data

    def run_plain(job: _Job) -> None:
        if already_durable(job):
            stats.add(bytes_resumed=job.length, chunks=1)
            tracker.advance(job.data_bytes)
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
        tracker.advance(job.data_bytes)

    def run_manifest(job: _Job) -> None:
        """Write only the runs of blocks whose content differs from the manifest's."""
        assert manifest is not None
        data = read(job)
        block = manifest.block_size
        first = job.offset // block
        changed: list[tuple[int, int]] = []  # (block index, desired hash)
        count = (job.length + block - 1) // block
        if data is None:
            known = manifest.hashes[first:first + count]
            if known.count(ZERO) != count:  # else: a hole where the destination has one
                changed = [(first + i, ZERO) for i, h in enumerate(known) if h != ZERO]
        else:
            view = memoryview(data)
            holes = _hole_blocks(job, block)
            for i in range(count):
                if i in holes:  # nothing allocated in this block: it reads as zeroes
                    if manifest.get(first + i) != ZERO:
                        changed.append((first + i, ZERO))
                    continue
                piece = view[i * block:(i + 1) * block]
                desired = block_hash(piece)
                if desired == _zero_hash(len(piece)) and is_zero(piece):
                    desired = ZERO
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
        tracker.advance(job.data_bytes)

    run = run_plain if manifest is None else run_manifest
    in_flight: set[Future[None]] = set()
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="copy") as pool:
        try:
            for job in jobs:
                if cancelled():
                    raise exceptions.TaskCanceled("copy cancelled")
                in_flight.add(pool.submit(run, job))
                if len(in_flight) >= parallel * 2:
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
