"""Fixtures: a real all-in-one server on a free port, driven through the real CLI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.harness import RunningServer, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    if not shutil.which("qemu-img"):
        pytest.fail("qemu-img is required (./dev setup installs qemu-utils)")
    data_dir = tmp_path_factory.mktemp("server") / "data"
    # The libvirt tests use this host's own daemon, which a server refuses by default.
    srv = start_server(data_dir, {"CORIOLIS_LIBVIRT_ALLOW_LOCAL": "1"})
    try:
        yield srv
    finally:
        stop_server(srv)


def server_with_faults(base: Path) -> Iterator[RunningServer]:
    """A server under ``base`` whose tasks can be made to fail, hold or crash on demand: write
    ``TASK_TYPE:PHASE`` items to ``server.faults`` (``coriolis/worker/faults.py``)."""
    faults = base / "faults"
    faults.write_text("")
    srv = start_server(base / "data", env={"CORIOLIS_TEST_CRASH_AT": f"@{faults}"})
    srv.faults = faults  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        stop_server(srv)
