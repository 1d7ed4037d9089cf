"""One builder at a time for a cached artefact (a guest image, a virtualenv, a simulator).

Two processes that need the same cache entry at once (two pytest workers, say) would
otherwise both build it and race on the rename at the end. The lock is an advisory
``fcntl.flock`` on a ``.lock`` file beside the entry; it is released when the holder exits,
even when it is killed, so a crash never leaves the cache locked.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def building(entry: Path) -> Iterator[None]:
    """Hold the build lock of the cache entry ``entry`` (a file or a folder path).

    Callers check again, inside the block, whether the entry exists: another process may
    have built it while this one waited.
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    lock = entry.parent / f".{entry.name}.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
