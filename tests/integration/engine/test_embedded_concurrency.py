"""The embedded server's database use under concurrency (issue 12, item 1), on real SQLite
files and the real in-process worker and `local` provider."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from coriolis import constants as c
from coriolis.config import Settings
from coriolis.db import models
from coriolis.db.session import Database
from coriolis.service import Services, build_all_in_one
from tests.integration.engine.test_conductor import body, wait_execution


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'test.db'}", threads=4)
    with database.engine.begin() as conn:
        conn.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER)"))
        conn.execute(text("INSERT INTO counter VALUES (1, 0)"))
    yield database
    database.dispose()


def test_read_then_write_units_in_many_threads_neither_fail_nor_lose_updates(
        db: Database) -> None:
    """Each unit reads the counter then writes it + 1: the reader-turned-writer case where
    SQLite answers "database is locked" (or, without a transaction, an update is lost)."""
    threads, rounds = 16, 15
    errors: list[BaseException] = []

    def work() -> None:
        for _ in range(rounds):
            try:
                with db.session() as session:
                    value = session.execute(text("SELECT value FROM counter")).scalar_one()
                    session.execute(text("UPDATE counter SET value = :v"), {"v": value + 1})
            except Exception as exc:  # collected: the assertion shows them
                errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert not errors, errors[:3]
    with db.reader() as session:
        assert session.execute(text("SELECT value FROM counter")).scalar_one() == \
            threads * rounds


def test_a_reader_never_writes_and_never_waits_for_a_writer(db: Database) -> None:
    with pytest.raises(OperationalError, match="readonly"):
        with db.reader() as session:
            session.execute(text("UPDATE counter SET value = 7"))
    with db.session() as writing:  # the write lock is held, a transaction is open
        writing.execute(text("UPDATE counter SET value = 5"))
        with db.reader() as session:  # the last committed state, at once
            assert session.execute(text("SELECT value FROM counter")).scalar_one() == 0
    with db.reader() as session:
        assert session.execute(text("SELECT value FROM counter")).scalar_one() == 5


def test_a_write_unit_inside_another_in_one_thread_is_refused(db: Database) -> None:
    with db.session(), pytest.raises(RuntimeError, match="wait for itself"):
        with db.session():
            pass


@pytest.fixture
def quiet_services(tmp_path: Path) -> Iterator[Services]:
    """The all-in-one services with a heartbeat that does not come within the test."""
    svc = build_all_in_one(Settings(data_dir=tmp_path / "data", heartbeat_interval=3600,
                                    worker_down_after=30))
    try:
        yield svc
    finally:
        svc.close()


def test_the_in_process_worker_runs_tasks_whatever_its_heartbeat_row_says(
        quiet_services: Services, ctx, endpoints) -> None:
    """Its heartbeat lost a database write (or was marked DOWN): it is still up, since it
    lives in this very process."""
    services = quiet_services
    with services.db.session() as session:
        row = session.scalar(select(models.Service).where(
            models.Service.binary == c.WORKER_BINARY))
        row.last_heartbeat = models.utcnow() - dt.timedelta(hours=1)
        row.status = c.SERVICE_STATUS_DOWN
    mid = services.conductor.create_migration(ctx, body(endpoints, "vm1",
                                                        replication_count=1))
    execution = wait_execution(services, mid)
    assert execution.status == c.EXECUTION_STATUS_COMPLETED, [
        (t.task_type, t.status, t.exception_details) for t in execution.tasks]


def test_no_connection_is_held_while_a_create_asks_the_worker(
        quiet_services: Services, ctx, endpoints) -> None:
    services = quiet_services
    pool = services.db.engine.pool
    seen: list[tuple[str, int]] = []
    real_call = services.conductor.bus.call

    def call(operation: str, *args: Any, **kwargs: Any) -> Any:
        seen.append((operation, pool.checkedout()))  # type: ignore[attr-defined]
        return real_call(operation, *args, **kwargs)

    services.conductor.bus.call = call  # type: ignore[method-assign]
    mid = services.conductor.create_migration(ctx, body(endpoints, "vm1",
                                                        replication_count=1))
    assert [op for op, _ in seen] == ["get_instance", "validate_destination_inputs"]
    assert seen == [(op, 0) for op, _ in seen]
    assert wait_execution(services, mid).status == c.EXECUTION_STATUS_COMPLETED


def test_an_accepted_create_survives_a_failed_dispatch(quiet_services: Services, ctx,
                                                       endpoints) -> None:
    """Sending the new tasks fails once, after the migration was stored (injected: on the
    old main it was SQLite's "database is locked", which no longer happens). The create
    still answers the id (the API's 201, not a 500 with the row left behind), the tasks stay
    PENDING and the worker monitor sends them."""
    services = quiet_services
    conductor = services.conductor
    real_dispatch = conductor._dispatch_pending
    failures: list[str] = []

    def dispatch_pending() -> None:
        if not failures:
            failures.append("once")
            raise OperationalError("BEGIN", {}, Exception("database is locked"))
        real_dispatch()

    conductor._dispatch_pending = dispatch_pending  # type: ignore[method-assign]
    mid = conductor.create_migration(ctx, body(endpoints, "vm1", replication_count=1))
    assert failures
    with services.db.reader() as session:
        assert [a.id for a in session.scalars(select(models.TransferAction))] == [mid]
        assert session.scalars(select(models.Task).where(
            models.Task.status == c.TASK_STATUS_PENDING)).all()
    conductor.check_workers()  # what the worker monitor runs every heartbeat interval
    assert wait_execution(services, mid).status == c.EXECUTION_STATUS_COMPLETED


def test_a_task_the_bus_failed_to_take_is_sent_again(quiet_services: Services, ctx,
                                                      endpoints) -> None:
    """The bus refuses one task after the transaction that marked it STARTING committed
    (a broker that is down; injected here, the in-process bus cannot fail): the task is
    PENDING again, never STARTING on a worker that never got it, and the worker monitor
    sends it, so the migration completes."""
    services = quiet_services
    bus = services.conductor.bus
    real_dispatch = bus.dispatch
    refused: list[str] = []

    def dispatch(message: Any, host: str) -> None:
        if not refused:
            refused.append(message.task_id)
            raise ConnectionError("broker unreachable")
        real_dispatch(message, host)

    bus.dispatch = dispatch  # type: ignore[method-assign]
    mid = services.conductor.create_migration(ctx, body(endpoints, "vm1", replication_count=1))
    with services.db.reader() as session:
        task = session.get(models.Task, refused[0])
        assert task is not None
        assert (task.status, task.host) == (c.TASK_STATUS_PENDING, None)
    services.conductor.check_workers()  # what the worker monitor runs every heartbeat
    assert wait_execution(services, mid).status == c.EXECUTION_STATUS_COMPLETED
