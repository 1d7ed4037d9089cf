"""For every failed test, the end of each server, worker or writer log written since its
module began: CI keeps only the test report, and pytest recycles its temporary folders.

Under pytest-xdist (``./dev test`` runs two workers, ``--dist loadgroup``), each test module
runs whole on one worker (its module fixtures start once), and the modules that share a
machine-wide resource run on the same worker one after another: the host's libvirtd (tests
there check that nothing is left in libvirt and in ``/run/coriolis-libvirt``) and the
OpenStack cloud of the session.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis import harness
from tests import plugin_providers as plugins
from tests.openstack_cloud import openstack_cloud  # noqa: F401  (a session fixture)

_MODULE_STARTED: dict[str, float] = {}

# A module whose path or source names one of these runs in that resource's group (the
# provider contract kit runs every backend, libvirt's among them, from its session fixtures).
SHARED_RESOURCES = {
    "libvirt": ("libvirt", "tests/providers/"),
    "openstack": ("openstack_cloud",),
    "loop-devices": ("loop_devices",),
}


def _group(path: Path, cache: dict[Path, str]) -> str:
    if path not in cache:
        name = str(path.relative_to(Path(__file__).parent.parent))
        text = name + "\n" + path.read_text(errors="replace")
        cache[path] = next((group for group, words in SHARED_RESOURCES.items()
                            if any(word in text for word in words)), name)
    return cache[path]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cache: dict[Path, str] = {}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(Path(item.fspath), cache)))


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
