"""Loop devices for tests: attached to a file, detached afterwards (only the device the test
attached: never ``losetup -D``, other tests and users have theirs)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def unavailable() -> str | None:
    """Why loop devices cannot be used here, or None."""
    if os.geteuid() != 0:
        return "loop devices need root (losetup attaches them)"
    if shutil.which("losetup") is None:
        return "losetup (util-linux) is not installed"
    return None


def skip_unless_available() -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)


def attach(backing: Path, read_only: bool = False) -> str:
    """Attach ``backing`` to the first free loop device; its path (``/dev/loopN``)."""
    proc = subprocess.run(["losetup", *(["-r"] if read_only else []), "-f", "--show",
                           str(backing)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot attach a loop device: {proc.stderr.strip()}")
    return proc.stdout.strip()


def detach(device: str) -> None:
    subprocess.run(["losetup", "-d", device], capture_output=True)


@contextlib.contextmanager
def loop_device(backing: Path, read_only: bool = False) -> Iterator[str]:
    device = attach(backing, read_only)
    try:
        yield device
    finally:
        detach(device)
