"""The VMs a vSphere test made, destroyed after it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from coriolis import vcsim
from tests.vcsim_host import destroy_vm, session, vcsim_server

__all__ = ["made", "vcsim_server"]


@pytest.fixture
def made(vcsim_server: vcsim.Vcsim) -> Iterator[list[Any]]:
    """A list the test appends its VMs to; each is destroyed after the test."""
    vms: list[Any] = []
    yield vms
    with session(vcsim_server) as si:
        for vm in vms:
            destroy_vm(si, vm)
