"""Issue 20, goal 6: the migration and replica lists are built from summary rows
(``db.transfers.list_summaries``: no ORM objects, JSON columns passed through unparsed) and
must say exactly what the field-by-field views (``views.migration``/``views.replica`` with
``detail=False``) say, on SQLite and on PostgreSQL (the server on this machine, as the
scale-out tests use it)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from coriolis import constants as c
from coriolis.api import views
from coriolis.api.v1.common import list_response
from coriolis.db import models, transfers
from coriolis.db.session import Database
from coriolis.harness import scratch_database

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
PROJECT, OTHER = "p-list", "p-other"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'list.db'}")
        database.create_schema()
        yield database
        database.dispose()
        return
    with scratch_database(POSTGRES, "coriolis_test") as url:
        database = Database(url)
        try:
            database.create_schema()
            yield database
        finally:
            database.dispose()


def action(kind: str, at: int, project: str = PROJECT, **fields: Any) -> models.TransferAction:
    base = dt.datetime(2026, 3, 1, 12, 0, 0, 123456) + dt.timedelta(minutes=at)
    return models.TransferAction(type=kind, project_id=project, origin_endpoint_id="e-src",
                                 destination_endpoint_id="e-dst", instances=[f"vm{at}"],
                                 created_at=base, **fields)


@pytest.fixture
def stored(db: Database) -> None:
    with db.session() as session:
        for eid in ("e-src", "e-dst"):
            session.add(models.Endpoint(id=eid, name=eid, type="local", project_id=PROJECT,
                                        connection_info_encrypted=b"-"))
        session.flush()
        live = action(c.ACTION_TYPE_REPLICA, 0, scenario="live_migration",
                      info={"vm0": {"volumes_info": [{"disk_id": "d0"}]}})
        plain = action(c.ACTION_TYPE_REPLICA, 1, notes="ünïcode \"quoted\"\n")
        session.add_all([live, plain])
        session.flush()
        session.add_all([
            action(c.ACTION_TYPE_MIGRATION, 2, replica_id=live.id, clone_disks=False),
            action(c.ACTION_TYPE_MIGRATION, 3, replica_id=plain.id,
                   updated_at=dt.datetime(2026, 3, 2)),
            action(c.ACTION_TYPE_MIGRATION, 4, source_environment={"snapshot": True},
                   destination_environment={"storage_backend": "fast", "n": 1.5},
                   network_map={"lan": "prod"},
                   storage_mappings={"default": "bulk", "disk_mappings": [
                       {"disk_id": "disk0", "destination": "fast"}]},
                   user_scripts={"global": {"linux": "#!/bin/sh\necho hi"}},
                   instance_osmorphing_minion_pool_mappings={"vm4": "pool-1"},
                   origin_minion_pool_id="pool-1", reservation_id="r-1",
                   last_execution_status=c.EXECUTION_STATUS_ERROR, replication_count=3,
                   shutdown_instances=True, skip_os_morphing=True,
                   transfer_result={"vm4": {"instance_name": "vm4", "disks": [1, 2]}},
                   info={"vm4": {"export_info": {"num_cpu": 2}}}),
            # Listed by nobody: deleted, or another project's.
            action(c.ACTION_TYPE_MIGRATION, 5, deleted=True,
                   deleted_at=dt.datetime(2026, 3, 3)),
            action(c.ACTION_TYPE_MIGRATION, 6, project=OTHER),
        ])


def detailed_views(db: Database, kind: str) -> list[Any]:
    """What the field-by-field views say, through JSON as the API sends it."""
    with db.reader() as session:
        rows = transfers.list_actions(session, PROJECT, kind)
        if kind == c.ACTION_TYPE_REPLICA:
            found = [views.replica(r, detail=False) for r in rows]
        else:
            scenarios = dict(session.execute(select(
                models.TransferAction.id, models.TransferAction.scenario)).all())
            found = [views.migration(r, views.replica_scenario(r.replica_id, scenarios),
                                     detail=False) for r in rows]
    return json.loads(json.dumps(found))


@pytest.mark.usefixtures("stored")
def test_listed_migrations_are_the_detailed_views(db: Database) -> None:
    with db.reader() as session:
        rows = transfers.list_summaries(session, PROJECT, c.ACTION_TYPE_MIGRATION)
        scenarios = transfers.replica_scenarios(session, (r.replica_id for r in rows))
    listed = orjson.loads(list_response("migrations",
                                        views.listed_migrations(rows, scenarios)).body)
    expected = detailed_views(db, c.ACTION_TYPE_MIGRATION)
    assert [m["instances"] for m in listed["migrations"]] == [["vm2"], ["vm3"], ["vm4"]]
    assert listed == {"migrations": expected}
    first, second, third = listed["migrations"]
    assert first["replica_scenario_type"] == first["transfer_scenario_type"] == "live_migration"
    assert second["replica_scenario_type"] == "replica"
    assert third["replica_scenario_type"] is None and "info" not in third
    assert third["created_at"] == "2026-03-01T12:04:00.123456"


@pytest.mark.usefixtures("stored")
def test_listed_replicas_are_the_detailed_views(db: Database) -> None:
    with db.reader() as session:
        rows = transfers.list_summaries(session, PROJECT, c.ACTION_TYPE_REPLICA)
    listed = orjson.loads(list_response("replicas", views.listed_replicas(rows)).body)
    assert listed == {"replicas": detailed_views(db, c.ACTION_TYPE_REPLICA)}
    assert [r["scenario"] for r in listed["replicas"]] == ["live_migration", "replica"]
    assert all(r["executions"] == [] and "info" not in r for r in listed["replicas"])
