"""OS morphing in a child process (coriolis.osmorphing.isolated), with the real libguestfs
appliance: the child's failures reach the task by name, and a cancel or an appliance that does
not start in time kills the child and its qemu, leaving no process on the disk."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from coriolis import exceptions
from coriolis.harness import processes_naming
from coriolis.osmorphing.appliance import GuestDisk
from coriolis.osmorphing.guest import MorphingFailed
from coriolis.osmorphing.isolated import MorphRequest, morph_in_child

pytestmark = pytest.mark.timeout(600)


def blank_disk(path: Path) -> Path:
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path), "32M"], check=True)
    return path


def request_for(disk: Path, fmt: str = "raw") -> MorphRequest:
    return MorphRequest(disks=[GuestDisk(str(disk), fmt, "disk0")], profile={},
                        instance="vm1")


def test_the_childs_failure_is_the_tasks(tmp_path: Path) -> None:
    events: list[str] = []
    with pytest.raises(MorphingFailed) as failed:
        morph_in_child(request_for(blank_disk(tmp_path / "blank.raw")), events.append,
                       lambda: False)
    assert "no operating system found on disk0 [raw]; file systems there: /dev/sda ext4" \
        in str(failed.value)
    assert processes_naming(str(tmp_path)) == []


def test_an_unexpected_error_in_the_child_keeps_its_message(tmp_path: Path) -> None:
    missing = tmp_path / "missing.qcow2"
    with pytest.raises(MorphingFailed) as failed:
        morph_in_child(request_for(missing, "qcow2"), lambda _: None, lambda: False)
    assert "RuntimeError" in str(failed.value) and str(missing) in str(failed.value)


def test_a_child_that_dies_without_a_word_is_reported_with_its_stderr() -> None:
    request = MorphRequest(disks=[{"path": "/nowhere"}],  # type: ignore[list-item]
                           profile={}, instance="vm1")  # the child cannot even read it
    with pytest.raises(MorphingFailed) as failed:
        morph_in_child(request, lambda _: None, lambda: False)
    assert "the OS morphing process ended with status 1 before finishing" in str(failed.value)
    assert "TypeError" in str(failed.value)  # the end of the child's traceback


def test_cancel_kills_the_child_and_its_appliance(tmp_path: Path) -> None:
    disk = blank_disk(tmp_path / "blank.raw")
    asked = time.monotonic() + 4
    with pytest.raises(exceptions.TaskCanceled):
        morph_in_child(request_for(disk), lambda _: None, lambda: time.monotonic() > asked)
    assert time.monotonic() - asked < 3  # not after the appliance's start (about 20 s)
    assert processes_naming(str(tmp_path)) == []


def test_an_appliance_that_does_not_start_in_time_is_retried_then_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORIOLIS_LIBGUESTFS_LAUNCH_TIMEOUT", "3")
    disk = blank_disk(tmp_path / "blank.raw")
    events: list[str] = []
    with pytest.raises(MorphingFailed) as failed:
        morph_in_child(request_for(disk), events.append, lambda: False)
    assert "did not start within 3 s (attempt 2 of 2)" in str(failed.value)
    assert "CORIOLIS_LIBGUESTFS_LAUNCH_TIMEOUT" in str(failed.value)
    assert events == ["the libguestfs appliance did not start within 3 s (attempt 1 of 2); "
                      "it was stopped, starting another"]
    assert processes_naming(str(tmp_path)) == []


def test_a_bad_timeout_setting_is_named(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORIOLIS_OS_MORPHING_TIMEOUT", "an hour")
    with pytest.raises(MorphingFailed, match="CORIOLIS_OS_MORPHING_TIMEOUT must be a number"):
        morph_in_child(request_for(tmp_path / "x.raw"), lambda _: None, lambda: False)


def test_threads_loading_guestfs_at_once_all_get_the_whole_module() -> None:
    """Tasks of one worker load the module from their own threads; before the lock, a thread
    could get the module while another was still executing it (no GuestFS attribute)."""
    script = (
        "import threading\n"
        "from coriolis.osmorphing.appliance import load_guestfs\n"
        "seen = []\n"
        "ts = [threading.Thread(target=lambda: seen.append(hasattr(load_guestfs(), 'GuestFS')))"
        " for _ in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(seen)\n")
    for _ in range(5):  # a fresh interpreter each time: the module loads once per process
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True).stdout
        assert out.strip() == "[True, True, True, True]", out
