"""Cold exports: a read-only ``qemu-nbd`` per disk image on a unix socket.

``qemu-nbd --read-only`` holds qemu's image lock (shared, no writers), so the domain cannot
be started (and the image written) while the export runs: a point-in-time view of a shut-off
domain's disk that never writes the source. Each server writes its pid to ``<name>.pid``
next to its socket ``<name>.sock``; ``stop_all`` ends every server whose socket is in a
folder (by its pid files, and by a scan of the processes for one a crash left without one).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from coriolis import exceptions
from coriolis.providers.libvirt.sockets import make_socket_folder, socket_folder

STOP_TIMEOUT = 10.0


def start(image: str, fmt: str, folder: Path, name: str, what: str) -> str:
    """Export ``image`` (format ``fmt``) read-only on ``<socket folder of folder>/<name>.sock``
    (``sockets``), its pid file in ``folder``; returns the NBD
    URI. ``ProviderError`` naming ``what`` when qemu-nbd refuses (the image is in use by a
    running domain, missing, or not of that format)."""
    sock, pidfile = make_socket_folder(folder) / f"{name}.sock", folder / f"{name}.pid"
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    proc = subprocess.run(
        ["qemu-nbd", "--read-only", "--persistent", "--shared=8", f"--format={fmt}",
         f"--socket={sock}", f"--pid-file={pidfile}", "--fork", image],
        capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise exceptions.ProviderError(
            f"{what}: qemu-nbd cannot export {image}: {proc.stderr.strip()[-400:]}")
    return f"nbd+unix:///?socket={sock}"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _serves(pid: int, folder: Path) -> bool:
    argv = _cmdline(pid)
    prefix = f"--socket={socket_folder(folder)}{os.sep}"
    return bool(argv) and os.path.basename(argv[0]) == "qemu-nbd" and any(
        a.startswith(prefix) for a in argv)


def servers(folder: Path) -> set[int]:
    """Pids of qemu-nbd servers with a socket in ``folder``."""
    found = set()
    for pidfile in folder.glob("*.pid") if folder.is_dir() else ():
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().strip())
            if _serves(pid, folder):
                found.add(pid)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _serves(int(entry), folder):
            found.add(int(entry))
    return found


def stop_all(folder: Path) -> None:
    """End every qemu-nbd serving from ``folder`` (TERM, then KILL after a while) and wait
    until they are gone (their image locks released)."""
    pids = servers(folder)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _serves(p, folder)}
        if pids:
            time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
