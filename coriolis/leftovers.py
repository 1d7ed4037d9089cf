"""Folders a process owns, found and removed after that process died without cleaning up
(a killed worker or test run): its helper processes killed, what is mounted under it
unmounted, the folder deleted.

A folder is claimed by writing ``owner`` into it: ``"<pid> <start time>"``, the start time in
clock ticks since boot (``/proc/PID/stat`` field 22, proc(5)), which names one process even
after its pid is reused. Folders without that file are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

OWNER_FILE = "owner"


def process_token(pid: int | None = None) -> str | None:
    """``"<pid> <start time>"`` of a running process (this one by default); None when no
    such process runs."""
    pid = os.getpid() if pid is None else pid
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{pid} {stat.rsplit(')', 1)[1].split()[19]}"


def claim(folder: Path) -> None:
    """Record this process as ``folder``'s owner."""
    (folder / OWNER_FILE).write_text(f"{process_token()}\n")


def abandoned(folder: Path) -> bool:
    """True when ``folder`` was claimed by a process that no longer runs."""
    try:
        owner = (folder / OWNER_FILE).read_text().strip()
        pid = int(owner.split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return process_token(pid) != owner


def processes_naming(path: Path) -> list[int]:
    """Pids of the processes (other than this one) whose command line or environment names
    ``path``."""
    needle = str(path).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (proc / "cmdline").read_bytes() or \
                    needle in (proc / "environ").read_bytes():
                found.append(int(proc.name))
    return found


def mounts_under(folder: Path) -> list[Path]:
    """Mount points at or under ``folder``, deepest first."""
    prefix = str(folder)
    points = [Path(line.split()[1]) for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1] == prefix or line.split()[1].startswith(prefix + "/")]
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def reap(pattern: str, unmount: Callable[[Path], None], base: Path | None = None,
         also: Callable[[Path], None] | None = None) -> list[Path]:
    """Remove every abandoned folder matching ``pattern`` under ``base`` (default: the
    temporary directory): SIGKILL the processes naming it, ``unmount`` each mount point under
    it (errors ignored), call ``also`` (errors ignored), delete it. Returns those removed."""
    reaped = []
    for folder in sorted(Path(base or tempfile.gettempdir()).glob(pattern)):
        if not abandoned(folder):
            continue
        for pid in processes_naming(folder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for point in mounts_under(folder):
            with contextlib.suppress(Exception):
                unmount(point)
        if also is not None:
            with contextlib.suppress(Exception):
                also(folder)
        shutil.rmtree(folder, ignore_errors=True)
        reaped.append(folder)
    return reaped
