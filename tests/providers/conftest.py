"""The provider contract kit: every check runs once per installed provider (entry point group
``coriolis.providers``) that has a backend fixture (``tests/providers/backends/<name>.py``);
the others are skipped as "no backend fixture". See docs/providers.md."""

from __future__ import annotations

import importlib
import itertools
import uuid
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from coriolis.harness import RunningServer, start_server, stop_server
from coriolis.providers.base import BaseProvider, Capability, capabilities
from coriolis.providers.registry import ENTRY_POINT_GROUP
from tests.providers.backends import Backend

PROVIDERS = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
_serial = itertools.count()


def backend_class(platform: str) -> type[Backend] | None:
    """The ``Backend`` of ``tests/providers/backends/<platform>.py``; None without one."""
    name = f"tests.providers.backends.{platform}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise
    cls: type[Backend] = module.Backend
    return cls


@pytest.fixture(scope="session")
def kit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kit")


@pytest.fixture(scope="session")
def backend_sessions(kit_root: Path) -> Iterator[dict[str, dict[str, str]]]:
    """``start_session`` of every backend fixture (platform → the API server's environment),
    ``stop_session`` at the end."""
    started: dict[str, dict[str, str]] = {}
    classes = {p: cls for p in sorted(PROVIDERS) if (cls := backend_class(p)) is not None}
    (kit_root / "backends").mkdir(exist_ok=True)
    try:
        for platform, cls in classes.items():
            started[platform] = cls.start_session(kit_root / "backends")
        yield started
    finally:
        for platform in started:
            classes[platform].stop_session()


@pytest.fixture(scope="session", params=sorted(PROVIDERS))
def platform(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def backend_cls(platform: str, backend_sessions: dict[str, dict[str, str]]) -> type[Backend]:
    cls = backend_class(platform)
    if cls is None:
        pytest.skip(f"provider '{platform}': no backend fixture "
                    f"(tests/providers/backends/{platform}.py)")
    return cls


@pytest.fixture
def backend(backend_cls: type[Backend], kit_root: Path) -> Iterator[Backend]:
    root = kit_root / "backends" / f"t{next(_serial)}"
    root.mkdir(parents=True)
    made = backend_cls(root)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="session")
def provider(platform: str) -> BaseProvider:
    instance: BaseProvider = PROVIDERS[platform].load()()
    return instance


@pytest.fixture(scope="session")
def caps(provider: BaseProvider) -> frozenset[Capability]:
    return capabilities(provider)


def need(provider: BaseProvider, *wanted: Capability) -> None:
    """Skip, naming the provider and the capability, unless it has them all."""
    have = capabilities(provider)
    for capability in wanted:
        if capability not in have:
            pytest.skip(f"provider '{provider.platform}' lacks the '{capability}' capability")


@pytest.fixture
def transfer_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="session")
def api_server(kit_root: Path, backend_sessions: dict[str, dict[str, str]]
               ) -> Iterator[RunningServer]:
    """One all-in-one server for the session, accepting every backend's connection infos."""
    env: dict[str, Any] = {}
    for values in backend_sessions.values():
        env.update(values)
    (kit_root / "api").mkdir()
    server = start_server(kit_root / "api" / "data", env)
    try:
        yield server
    finally:
        stop_server(server)
