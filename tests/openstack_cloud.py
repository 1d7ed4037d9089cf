"""The ``openstack_cloud`` fixture: one real OpenStack (Keystone, Glance, Cinder on NFS over a
bind mount, Neutron ML2 without agents, Placement, Nova with ``fake.FakeDriver``) per test
session, from ``coriolis.openstack_cloud``. Needs root (bind mount), RabbitMQ on
127.0.0.1:5672 (``./dev test`` starts it) and the cached virtualenv (built on first use)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coriolis import harness
from coriolis.openstack_cloud import OpenStackCloud, start_cloud


@pytest.fixture(scope="session")
def openstack_cloud() -> Iterator[OpenStackCloud]:
    """A running, provisioned cloud; ``openstack_cloud.connect()`` is an admin
    ``openstack.connection.Connection``, ``openstack_cloud.auth`` its keyword set."""
    cloud = start_cloud()
    # A failed test shows the end of every service's log (tests/conftest.py).
    harness.SPAWNED_LOGS.extend(sorted((cloud.work / "logs").glob("*.log")))
    try:
        yield cloud
    finally:
        cloud.stop()
    # Teardown leaves nothing: checked on every run (an error of the last test otherwise).
    assert cloud.leftovers() == []
