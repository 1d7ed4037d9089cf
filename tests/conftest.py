"""For every failed test, the end of each server, worker or writer log written since its
module began: CI keeps only the test report, and pytest recycles its temporary folders."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from coriolis import harness
from tests import plugin_providers as plugins
from tests.openstack_cloud import openstack_cloud  # noqa: F401  (a session fixture)

_MODULE_STARTED: dict[str, float] = {}


@pytest.fixture(scope="session", autouse=True)
def _token_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tokens the CLI keeps between commands go to a folder of this run, not to the
    user's ~/.cache/coriolis/tokens (coriolisclient.token_cache)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CORIOLIS_TOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tokens")))
    yield
    mp.undo()


def pytest_runtest_setup(item: pytest.Item) -> None:
    _MODULE_STARTED.setdefault(item.nodeid.split("::")[0], time.time())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    since = _MODULE_STARTED.get(item.nodeid.split("::")[0], call.start) - 1
    for path in dict.fromkeys(harness.SPAWNED_LOGS):
        try:
            written = path.stat().st_mtime >= since
        except OSError:
            continue
        if written:
            report.sections.append((f"end of {path}", harness.tail(path, 30)))


@pytest.fixture
def plugin_providers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test provider plugins (``tests/plugin_providers.py``) are installed."""
    plugins.install(monkeypatch)
    yield
    plugins.uninstall()
