"""Shared fixtures: real embedded services on a temporary SQLite database, and local clouds
with real disk images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis import constants as c
from coriolis.cmd.local_cloud import add_instance, init_cloud
from coriolis.config import Settings
from coriolis.context import RequestContext
from coriolis.db import models
from coriolis.service import Services, build_all_in_one

PROJECT = "11111111-1111-1111-1111-111111111111"
FINAL = {c.EXECUTION_STATUS_COMPLETED, c.EXECUTION_STATUS_ERROR, c.EXECUTION_STATUS_CANCELED,
         c.EXECUTION_STATUS_DEADLOCKED}


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_all_in_one(Settings(data_dir=tmp_path / "data"))
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u1", project_id=PROJECT, roles=("member",))


def cloud_root(tmp_path: Path, project: str = PROJECT) -> Path:
    """Where the ``services`` fixture's server lets ``project`` keep its local clouds (the
    all-in-one default, DATA_DIR/clouds/PROJECT)."""
    return tmp_path / "data" / "clouds" / project


@pytest.fixture
def clouds(tmp_path: Path) -> dict[str, Path]:
    src = init_cloud(cloud_root(tmp_path) / "src", ["lan"])
    dst = init_cloud(cloud_root(tmp_path) / "dst", ["prod"], [("bulk", "raw"), ("fast", "qcow2")])
    add_instance(src, "vm1", disk_size="40M", network="lan", seed=1)
    add_instance(src, "vm2", disk_size="33M", disk_format="qcow2", disks=2, network="lan",
                 seed=2)
    return {"src": src, "dst": dst}


def add_endpoint(services: Services, project: str, name: str, path: Path) -> str:
    with services.db.session() as session:
        endpoint = models.Endpoint(project_id=project, name=name, type="local",
                                   connection_info_encrypted=services.box.encrypt_json(
                                       {"path": str(path)}))
        session.add(endpoint)
        session.flush()
        return endpoint.id


@pytest.fixture
def endpoints(services: Services, clouds: dict[str, Path]) -> dict[str, str]:
    return {name: add_endpoint(services, PROJECT, name, path) for name, path in clouds.items()}
