"""The ``openstack_cloud`` fixture: one real OpenStack (Keystone, Glance, Cinder on NFS over a
bind mount, Neutron ML2 without agents, Placement, Nova with a fake compute driver) per test
session, from ``coriolis.openstack_cloud``. Needs root (bind mount), RabbitMQ on
127.0.0.1:5672 (``./dev test`` starts it) and the cached virtualenv (built on first use).

The cloud is started on first use (``session_cloud``), by this fixture or by the provider
contract kit's backend (``tests/providers/backends/openstack.py``), and the one cloud serves
both; it is made inside ``cloud_base()``, known before it starts, so a server can be told to
allow its NFS mount."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis import harness
from coriolis.openstack_cloud import OpenStackCloud, start_cloud

_base: Path | None = None
_cloud: OpenStackCloud | None = None
_failed: BaseException | None = None


def cloud_base() -> Path:
    """The folder this process's cloud is (or will be) made in."""
    global _base
    if _base is None:
        _base = Path(tempfile.mkdtemp(prefix="coriolis-os-"))
    return _base


def session_cloud() -> OpenStackCloud:
    """The running, provisioned cloud of this test process, started on the first call (a
    failed start is raised again to every later caller, not retried)."""
    global _cloud, _failed
    if _failed is not None:
        raise RuntimeError(f"the OpenStack test cloud failed to start: {_failed}")
    if _cloud is None:
        try:
            _cloud = start_cloud(cloud_base())
        except BaseException as exc:
            _failed = exc
            raise
        # A failed test shows the end of every service's log (tests/conftest.py).
        harness.SPAWNED_LOGS.extend(sorted((_cloud.work / "logs").glob("*.log")))
    return _cloud


def stop_session_cloud() -> list[str]:
    """Stop the cloud if it runs; what of it is left (empty unless teardown failed)."""
    global _cloud, _base
    left: list[str] = []
    if _cloud is not None:
        cloud, _cloud = _cloud, None
        cloud.stop()
        left = cloud.leftovers()
    if _base is not None and not left:
        with contextlib.suppress(OSError):
            _base.rmdir()
        _base = None
    return left


@pytest.fixture(scope="session")
def openstack_cloud() -> Iterator[OpenStackCloud]:
    """A running, provisioned cloud; ``openstack_cloud.connect()`` is an admin
    ``openstack.connection.Connection``, ``openstack_cloud.auth`` its keyword set."""
    try:
        yield session_cloud()
    finally:
        # Teardown leaves nothing: checked on every run (an error of the last test otherwise).
        assert stop_session_cloud() == []
