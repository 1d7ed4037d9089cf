"""A writer agent (a real `coriolis-server writer` process on loopback) serving one root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.harness import RunningWriter, start_writer, stop_server


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[RunningWriter]:
    root = tmp_path / "root"
    root.mkdir()
    agent = start_writer(tmp_path / "agent", [root])
    yield agent
    if agent.process.poll() is None:
        stop_server(agent)
