"""Third-party provider plugins for tests (``tests/fixtures/plugins``): ``srconly`` (a source
only), ``dstonly`` (a destination only) and ``nomorph`` (no OS morphing), over local clouds,
found through the ``coriolis.providers`` entry-point group as an installed plugin is."""

from __future__ import annotations

from pathlib import Path

import pytest

from coriolis.providers import registry

PLUGINS = Path(__file__).parent / "fixtures" / "plugins"


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process find the plugins (until ``monkeypatch`` is undone and
    ``uninstall``); a server
    subprocess finds them with ``PYTHONPATH=PLUGINS`` (``server_env``)."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    registry._providers.cache_clear()


def uninstall() -> None:
    """Forget the providers found (call before ``monkeypatch`` is undone)."""
    registry._providers.cache_clear()


def server_env() -> dict[str, str]:
    return {"PYTHONPATH": str(PLUGINS)}
