"""Replica schedules fire on time, with an injected clock instead of waiting for minutes."""

from __future__ import annotations

import datetime as dt

from coriolis.db import models
from coriolis.scheduling.replica_cron import ReplicaCron, matches
from tests.integration.conftest import PROJECT

MONDAY_0305 = dt.datetime(2030, 1, 7, 3, 5, 42)  # 2030-01-07 is a Monday


def test_matches_uses_utc_fields_with_monday_zero() -> None:
    assert matches({"minute": 5, "hour": 3, "dow": 0}, MONDAY_0305)
    assert matches({}, MONDAY_0305)
    assert not matches({"minute": 6}, MONDAY_0305)
    assert not matches({"dow": 6}, MONDAY_0305)
    assert matches({"dom": 7, "month": 1}, MONDAY_0305)


def make_replica(services, ctx, endpoints) -> str:  # type: ignore[no-untyped-def]
    return services.conductor.create_replica(ctx, {
        "origin_endpoint_id": endpoints["src"], "destination_endpoint_id": endpoints["dst"],
        "instances": ["vm1"], "destination_environment": {"storage_backend": "bulk"},
        "network_map": {"lan": "prod"}})


def add_schedule(services, replica_id: str, **fields) -> str:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        values = {"schedule": {"minute": 5, "hour": 3}, "enabled": True,
                  "shutdown_instance": False, **fields}
        row = models.ReplicaSchedule(replica_id=replica_id, project_id=PROJECT, **values)
        session.add(row)
        session.flush()
        return row.id


def executions(services, replica_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    with services.db.session() as session:
        return [e.status for e in session.get(models.TransferAction, replica_id).executions]


def test_fires_once_per_matching_minute(services, ctx, endpoints) -> None:
    replica_id = make_replica(services, ctx, endpoints)
    add_schedule(services, replica_id)
    cron = ReplicaCron(services.db, services.conductor)
    assert cron.tick(MONDAY_0305 - dt.timedelta(minutes=1)) == []
    assert len(cron.tick(MONDAY_0305)) == 1
    assert cron.tick(MONDAY_0305 + dt.timedelta(seconds=10)) == []  # same minute
    assert len(executions(services, replica_id)) == 1


def test_disabled_expired_and_busy_schedules_do_not_fire(services, ctx, endpoints) -> None:
    replica_id = make_replica(services, ctx, endpoints)
    add_schedule(services, replica_id, enabled=False)
    add_schedule(services, replica_id, expiration_date=MONDAY_0305 - dt.timedelta(days=1))
    cron = ReplicaCron(services.db, services.conductor)
    assert cron.tick(MONDAY_0305) == []
    with services.db.session() as session:  # an execution still running
        replica = session.get(models.TransferAction, replica_id)
        session.add(models.Execution(action=replica, number=1, type="replica_execution",
                                     status="RUNNING"))
    add_schedule(services, replica_id)
    assert cron.tick(MONDAY_0305) == []
    assert executions(services, replica_id) == ["RUNNING"]
