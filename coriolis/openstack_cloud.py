"""A real OpenStack cloud (from PyPI) on loopback, for tests."""

from __future__ import annotations

from pathlib import Path

from coriolis import openstack_services as ops

CONSTRAINTS = Path(__file__).with_name("openstack-upper-constraints.txt")
CLOUD_PACKAGES = ("keystone==30.0.0", "glance==33.0.0", "cinder==29.0.0", "nova==33.0.2",
                  "openstack-placement==16.0.0", "neutron==29.0.0", "uwsgi==2.0.31")


def cloud_venv() -> Path:
    return ops.venv("cloud", CLOUD_PACKAGES, CONSTRAINTS)
