"""Cinder answering 500 to a volume or snapshot creation (a transient fault: the test
cloud's SQLite said "database is locked" once in a kit run; a MySQL deadlock does the same on
a real cloud) is tried again, and a volume the failed call made anyway (found by its name)
is used rather than made twice. A 5xx cannot be produced on demand on the real cloud of
tests/openstack_cloud.py, so Cinder's answers are stood in for here by a stub of the
openstacksdk calls ``volumes.create_volume`` makes; everything else of the provider is
tested against the real cloud (tests/integration/openstack)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from openstack import exceptions as os_exc

from coriolis import exceptions
from coriolis.providers.openstack import volumes


@dataclass
class Volume:
    id: str
    name: str
    status: str = "available"


@dataclass
class BlockStorage:
    """Fails the first ``failures`` creations with a 500; ``made_anyway``: the failed call
    still made its volume (the 500 came after the insert)."""

    failures: int
    made_anyway: bool = False
    made: list[Volume] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    calls: int = 0

    def create_volume(self, **attrs: Any) -> Volume:
        self.calls += 1
        volume = Volume(f"v{self.calls}", attrs["name"])
        if self.calls <= self.failures:
            if self.made_anyway:
                self.made.append(volume)
            raise os_exc.HttpException(message="database is locked", http_status=500)
        self.made.append(volume)
        return volume

    def volumes(self, details: bool = True, name: str = "") -> list[Volume]:
        return [v for v in self.made if v.name == name]

    def wait_for_status(self, res: Volume, **kwargs: Any) -> Volume:
        return res


@dataclass
class Conn:
    block_storage: BlockStorage


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(volumes.time, "sleep", lambda s: None)


def test_a_500_is_tried_again() -> None:
    conn = Conn(BlockStorage(failures=1))
    made = volumes.create_volume(conn, {}, "disk d0", name="coriolis-x", size=1)
    assert (made.id, conn.block_storage.calls) == ("v2", 2)


def test_a_volume_the_failed_call_made_is_used_not_made_twice() -> None:
    conn = Conn(BlockStorage(failures=1, made_anyway=True))
    made = volumes.create_volume(conn, {}, "disk d0", name="coriolis-x", size=1)
    assert (made.id, conn.block_storage.calls) == ("v1", 1)


def test_every_attempt_failing_names_the_disk() -> None:
    conn = Conn(BlockStorage(failures=volumes.SERVER_ERROR_ATTEMPTS))
    with pytest.raises(exceptions.ProviderError) as err:
        volumes.create_volume(conn, {}, "disk d0", name="coriolis-x", size=1)
    assert "cannot create the Cinder volume of disk d0" in str(err.value)
    assert conn.block_storage.calls == volumes.SERVER_ERROR_ATTEMPTS
