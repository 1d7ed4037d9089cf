"""The server's log files as named log streams: what the ``coriolis-logger`` service serves.

Every process of a deployment that shares a data directory writes ``DATA_DIR/<name>.log``
(``coriolis.log`` for the all-in-one server, ``api.log``, ``conductor.log``,
``scheduler.log``, ``worker-<host>.log``) in the format of ``coriolis.cmd.server``:
``<YYYY-MM-DD HH:MM:SS,mmm> <LEVEL> <logger>: <message>``, local time, with continuation
lines (tracebacks) after a record's first line.

Log names: ``coriolis`` for ``coriolis.log``, ``coriolis-<stem>`` for the others
(``coriolis-api``, ``coriolis-worker-w1``), as upstream names its services' logs.
Severities are syslog's (0 emergency ... 7 debug), as upstream's logger takes them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from coriolis import exceptions

RECORD_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
# Python level name -> syslog severity.
SEVERITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}
SEVERITY_NAMES = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO",
                  "DEBUG")


def log_files(data_dir: Path) -> dict[str, Path]:
    """``{log name: file}`` for every ``*.log`` directly in ``data_dir``, by file name."""
    found = {}
    for path in sorted(data_dir.glob("*.log")):
        if path.is_file():
            found[path.stem if path.stem == "coriolis" else f"coriolis-{path.stem}"] = path
    return found


def log_file(data_dir: Path, name: str) -> Path:
    """The file of log ``name``; NotFound (404) naming it when there is none."""
    path = log_files(data_dir).get(name)
    if path is None:
        raise exceptions.NotFound(f"Log {name} could not be found")
    return path


def parse_severity(value: str | None) -> int:
    """A syslog severity 0-7 (a number or its name), default 6 (info); InvalidInput naming
    ``severity`` otherwise."""
    if value is None or value == "":
        return 6
    if value.isdigit() and int(value) <= 7:
        return int(value)
    if value.upper() in SEVERITY_NAMES:
        return SEVERITY_NAMES.index(value.upper())
    raise exceptions.InvalidInput(
        f"severity: must be 0-7 or one of {', '.join(SEVERITY_NAMES)}")


def _stamp(header: str) -> float:
    return dt.datetime.strptime(header, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@dataclass
class Record:
    """One log record: its first line's time (unix seconds), syslog severity and text
    (continuation lines included, newline-terminated)."""

    timestamp: float
    severity: int
    text: str


def records(lines: Iterator[str]) -> Iterator[Record]:
    """The records of a log's lines; lines before the first record count as info."""
    current: Record | None = None
    for line in lines:
        match = RECORD_RE.match(line)
        if match is None and current is not None:
            current.text += line
            continue
        if current is not None:
            yield current
        if match is None:
            current = Record(0.0, 6, line)
        else:
            current = Record(_stamp(match.group(1)), SEVERITY[match.group(2)], line)
    if current is not None:
        yield current


def read_range(path: Path, start: float | None, end: float | None) -> Iterator[bytes]:
    """The records of ``path`` whose time is within [start, end] (unix seconds; each
    bound optional), as UTF-8 text chunks."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for record in records(iter(f)):
            if start is not None and record.timestamp < start:
                continue
            if end is not None and record.timestamp > end:
                break
            yield record.text.encode()


@dataclass
class Follower:
    """New complete lines of the selected logs, from the moment it was made. ``poll()``
    returns them as ``(log name, severity, line)``; lines without a record header take the
    severity of the record they continue. Logs that appear later are followed from their
    start when no name was chosen. ``close()`` closes every file it opened."""

    data_dir: Path
    name: str | None = None
    _files: dict[str, BinaryIO] = field(default_factory=dict)
    _partial: dict[str, bytes] = field(default_factory=dict)
    _last_severity: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name is not None:
            self._open(self.name, log_file(self.data_dir, self.name), at_end=True)
        else:
            for name, path in log_files(self.data_dir).items():
                self._open(name, path, at_end=True)

    def _open(self, name: str, path: Path, at_end: bool) -> None:
        f = open(path, "rb")  # noqa: SIM115 - held until close()
        if at_end:
            f.seek(0, 2)
        self._files[name] = f

    def poll(self) -> list[tuple[str, int, str]]:
        if self.name is None:
            for name, path in log_files(self.data_dir).items():
                if name not in self._files:
                    self._open(name, path, at_end=False)
        out = []
        for name, f in self._files.items():
            if os.fstat(f.fileno()).st_size < f.tell():  # truncated: read it from the start
                f.seek(0)
                self._partial.pop(name, None)
            data = self._partial.pop(name, b"") + f.read()
            *complete, rest = data.split(b"\n")
            if rest:
                self._partial[name] = rest
            for raw in complete:
                line = raw.decode("utf-8", errors="replace")
                match = RECORD_RE.match(line)
                severity = (SEVERITY[match.group(2)] if match
                            else self._last_severity.get(name, 6))
                self._last_severity[name] = severity
                out.append((name, severity, line))
        return out

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
