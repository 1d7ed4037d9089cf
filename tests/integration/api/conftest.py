"""A real all-in-one server per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coriolis.harness import RunningServer, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(tmp_path_factory.mktemp("api") / "data")
    try:
        yield srv
    finally:
        stop_server(srv)
