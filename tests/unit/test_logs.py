"""The log files the coriolis-logger service serves: names, records, ranges, following."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from coriolis import exceptions
from coriolis.api import logs
from coriolisclient.cli.shell import identity_version


def line(when: dt.datetime, level: str, text: str) -> str:
    return f"{when.strftime('%Y-%m-%d %H:%M:%S')},123 {level} coriolis.x: {text}\n"


T0 = dt.datetime(2030, 1, 2, 3, 4, 5)


def test_log_names_and_unknown_names(tmp_path: Path) -> None:
    for name in ("coriolis.log", "api.log", "worker-w1.log", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "dir.log").mkdir()
    assert list(logs.log_files(tmp_path)) == ["coriolis-api", "coriolis", "coriolis-worker-w1"]
    with pytest.raises(exceptions.NotFound, match="Log coriolis-nope could not be found"):
        logs.log_file(tmp_path, "coriolis-nope")


def test_records_keep_continuation_lines_and_ranges_use_their_time(tmp_path: Path) -> None:
    path = tmp_path / "coriolis.log"
    path.write_text(line(T0, "INFO", "one") + line(T0 + dt.timedelta(minutes=1), "ERROR", "two")
                    + "Traceback (most recent call last):\n  boom\n"
                    + line(T0 + dt.timedelta(minutes=2), "DEBUG", "three"))
    found = list(logs.records(iter(path.read_text().splitlines(keepends=True))))
    assert [(r.severity, r.text.count("\n")) for r in found] == [(6, 1), (3, 3), (7, 1)]
    start = (T0 + dt.timedelta(seconds=30)).timestamp()
    end = (T0 + dt.timedelta(seconds=90)).timestamp()
    text = b"".join(logs.read_range(path, start, end)).decode()
    assert text.startswith(line(T0 + dt.timedelta(minutes=1), "ERROR", "two"))
    assert "boom" in text and "one" not in text and "three" not in text
    assert b"".join(logs.read_range(path, None, None)) == path.read_bytes()


def test_follower_sends_only_new_complete_lines_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "coriolis.log"
    path.write_text(line(T0, "INFO", "old"))
    follower = logs.Follower(tmp_path, "coriolis")
    assert follower.poll() == []
    with open(path, "a") as f:
        f.write(line(T0, "WARNING", "new") + "  continued\n" + "2030-01-02 03:04")
    polled = follower.poll()
    assert [(n, s) for n, s, _ in polled] == [("coriolis", 4), ("coriolis", 4)]
    assert polled[1][2] == "  continued"
    with open(path, "a") as f:  # the partial line completes
        f.write(":05,000 DEBUG coriolis.x: late\n")
    assert [(s, text.endswith("late")) for _, s, text in follower.poll()] == [(7, True)]
    path.write_text(line(T0, "ERROR", "after truncation"))  # truncated (a new log)
    assert [text.endswith("after truncation") for _, _, text in follower.poll()] == [True]
    # Following every log picks up a log that appears later, from its start.
    every = logs.Follower(tmp_path)
    (tmp_path / "worker-w2.log").write_text(line(T0, "ERROR", "worker"))
    assert [(n, s) for n, s, _ in every.poll()] == [("coriolis-worker-w2", 3)]
    for f in (follower, every):
        files = list(f._files.values())
        f.close()
        assert all(handle.closed for handle in files)


def test_severity_names_and_numbers() -> None:
    assert [logs.parse_severity(v) for v in (None, "", "3", "warning", "DEBUG")] == [
        6, 6, 3, 4, 7]
    for bad in ("8", "loud", "-1"):
        with pytest.raises(exceptions.InvalidInput, match="severity"):
            logs.parse_severity(bad)


@pytest.mark.parametrize(("explicit", "url", "expected"), [
    (None, "http://h:5000/v2.0", "2"), (None, "http://h:5000/v2.0/", "2"),
    (None, "http://h/identity/v3", "3"), (None, "http://h:5000", "3"),
    ("3", "http://h:5000/v2.0", "3"), ("2", "http://h/identity/v3", "2"),
    ("2.0", "http://h:5000", "2"),
])
def test_identity_version_from_the_auth_url(explicit: str | None, url: str,
                                            expected: str) -> None:
    assert identity_version(explicit, url) == expected
