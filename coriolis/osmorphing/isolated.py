"""OS morphing in a child process of its own, watched by the task that asked for it.

Why a process and not the worker's thread: libguestfs forks qemu from the calling process, and a
worker runs other tasks in threads beside it; and an appliance that never comes up holds the
caller for libguestfs' built-in 20 minutes (a CI run once waited that long on a migration of
two instances at OS_MORPHING). In a child process of its own
session the morphing can be killed, qemu with it, whenever the task is cancelled, when the
appliance has not started within ``CORIOLIS_LIBGUESTFS_LAUNCH_TIMEOUT`` seconds (default 300;
the attempt is then retried once) or when the whole morphing outlasts
``CORIOLIS_OS_MORPHING_TIMEOUT`` seconds (default 3600).

The child reads a request (JSON) on stdin and writes one JSON object per line on stdout:
``{"event": text}``, ``{"launched": true}``, then ``{"failed": text}`` or ``{"done": true}``.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from coriolis import exceptions
from coriolis.osmorphing.appliance import GuestDisk, open_guest
from coriolis.osmorphing.guest import EventLog, MorphingFailed
from coriolis.osmorphing.morph import morph_guest, user_scripts_for
from coriolis.osmorphing.profile import DestinationProfile

ATTEMPTS = 2
_POLL_SECONDS = 0.5
_STDERR_LINES = 20


@dataclass
class MorphRequest:
    disks: list[GuestDisk]
    profile: dict[str, Any]  # DestinationProfile's JSON
    instance: str
    source_macs: list[str | None] = field(default_factory=list)
    user_scripts: dict[str, Any] = field(default_factory=dict)  # the task_info's value

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MorphRequest:
        value = json.loads(text)
        value["disks"] = [GuestDisk(**d) for d in value["disks"]]
        return cls(**value)


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise MorphingFailed(f"{name} must be a number of seconds, not {raw!r}") from None


def morph_in_child(request: MorphRequest, log: EventLog,
                   cancelled: Callable[[], bool]) -> None:
    """Morph the guest on ``request.disks`` in a child process; its events go to ``log``.
    Raises ``MorphingFailed`` with the child's reason, ``TaskCanceled`` once ``cancelled()``."""
    launch_timeout = _seconds("CORIOLIS_LIBGUESTFS_LAUNCH_TIMEOUT", 300)
    timeout = _seconds("CORIOLIS_OS_MORPHING_TIMEOUT", 3600)
    for attempt in range(1, ATTEMPTS + 1):
        if _attempt(request, log, cancelled, launch_timeout, timeout):
            return
        message = (f"the libguestfs appliance did not start within {launch_timeout:g} s "
                   f"(attempt {attempt} of {ATTEMPTS})")
        if attempt == ATTEMPTS:
            raise MorphingFailed(f"{message}; set CORIOLIS_LIBGUESTFS_LAUNCH_TIMEOUT to wait "
                                 "longer on a slow host")
        log(f"{message}; it was stopped, starting another")


class _Child:
    """The child process, its stdout lines as a queue and the tail of its stderr."""

    def __init__(self, request: MorphRequest) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coriolis.osmorphing.isolated"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put, True),
                         daemon=True).start()
        self._stderr_reader = threading.Thread(
            target=self._read, args=(self.proc.stderr, self.stderr.append, False), daemon=True)
        self._stderr_reader.start()
        self.proc.stdin.write(request.to_json())
        self.proc.stdin.close()

    @staticmethod
    def _read(stream: IO[str], put: Callable[[Any], None], mark_end: bool) -> None:
        for line in stream:
            put(line.rstrip("\n"))
        if mark_end:
            put(None)

    def next_line(self) -> str | None:
        """The next line; "" when none came within the poll interval, None at the end."""
        try:
            return self.lines.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            return ""

    def kill(self) -> None:
        """Kill the child's whole session: the child, libguestfs' helpers and qemu."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._stderr_reader.join(timeout=5)  # its last lines may say why the child died


def _attempt(request: MorphRequest, log: EventLog, cancelled: Callable[[], bool],
             launch_timeout: float, timeout: float) -> bool:
    """One child; False when its appliance did not start in time (the child is killed)."""
    child = _Child(request)
    started = time.monotonic()
    launched, outcome = False, None
    try:
        while (line := child.next_line()) is not None:
            if line:
                message = json.loads(line)
                launched = launched or bool(message.get("launched"))
                if "event" in message:
                    log(message["event"])
                outcome = message if {"done", "failed"} & message.keys() else outcome
            if cancelled():
                raise exceptions.TaskCanceled("OS morphing cancelled")
            elapsed = time.monotonic() - started
            if not launched and elapsed > launch_timeout:
                return False
            if elapsed > timeout:
                raise MorphingFailed(f"OS morphing did not finish within {timeout:g} s "
                                     "(CORIOLIS_OS_MORPHING_TIMEOUT); it was stopped")
    finally:
        child.kill()
    if outcome and "failed" in outcome:
        raise MorphingFailed(outcome["failed"])
    if not outcome:
        tail = "\n".join(child.stderr) or "no output"
        raise MorphingFailed(f"the OS morphing process ended with status "
                             f"{child.proc.returncode} before finishing: {tail}")
    return True


def _child_main() -> int:
    request = MorphRequest.from_json(sys.stdin.read())
    # The messages keep stdout to themselves: whatever else writes to file descriptor 1
    # (libguestfs, a library's print) goes to stderr instead.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def emit(**message: Any) -> None:
        channel.write(json.dumps(message) + "\n")

    try:
        with open_guest(request.disks, launched=lambda: emit(launched=True)) as guest:
            morph_guest(guest, DestinationProfile.from_json(request.profile),
                        lambda text: emit(event=text), source_macs=request.source_macs,
                        user_scripts=user_scripts_for(request.user_scripts, request.instance,
                                                      guest.os.type))
    except exceptions.CoriolisError as exc:
        emit(failed=str(exc))
        return 1
    except Exception as exc:  # a bug or an unexpected libguestfs error: keep the message
        emit(failed=f"{type(exc).__name__}: {exc}")
        raise
    emit(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
