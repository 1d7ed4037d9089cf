"""Engine and session factory.

Two kinds of unit of work:

- ``Database.session()``: may write. On SQLite every one of them is serialised through one
  process-wide lock and opens its transaction with ``BEGIN IMMEDIATE``, so SQLite never
  answers "database is locked" to a reader upgrading to writer (the upgrade of a deferred
  transaction fails at once, whatever the busy timeout, when another connection committed
  since its snapshot); another process (an admin command) is waited for up to the busy
  timeout. A write session must not open another one in the same thread (that would wait for
  itself): doing so raises ``RuntimeError``.
- ``Database.reader()``: reads only, never waits for writers (SQLite WAL snapshot,
  ``PRAGMA query_only`` so that a stray write fails loudly instead of upgrading).

On PostgreSQL both are ordinary transactions (row locks do the serialising there).

The connection pool is sized from the number of threads that use the database (``threads``):
on SQLite without any limit (a connection is a file handle), on PostgreSQL with as many
connections again in overflow, since a thread may hold a reader inside a write session.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from coriolis import exceptions
from coriolis.db import models

BUSY_TIMEOUT_S = 30.0
_READER = "coriolis_reader"


class DatabaseBusy(exceptions.CoriolisError):
    """The write lock was not free within the busy timeout."""

    code = 503


def json_loads(text: str | bytes) -> Any:
    """The JSON columns' decoder: orjson (several times faster than ``json``; a list of
    10 000 migrations decodes 70 000 columns), ``json`` for what orjson refuses (NaN,
    integers beyond 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # pysqlite must not issue its own BEGIN: _sqlite_begin does (SQLAlchemy's documented
    # recipe for SQLite transactions, "Serializable isolation / Savepoints / Transactional DDL")
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(_READER):
        conn.exec_driver_sql("PRAGMA query_only=ON")
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("PRAGMA query_only=OFF")
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One per process. ``session()`` is a unit of work that may write, ``reader()`` one that
    only reads: commit on success, rollback on error.

    ``threads``: how many threads may use the database at once (API request threads, task
    and call threads of an in-process worker, periodic threads); sizes the connection pool.
    """

    def __init__(self, url: str, threads: int = 8) -> None:
        self.url = url
        self.threads = threads
        self.sqlite = url.startswith("sqlite")
        kwargs: dict = {"json_deserializer": json_loads}
        if self.sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}
            if ":memory:" not in url and url.rstrip("/") != "sqlite:":  # a file: shareable
                kwargs.update(poolclass=QueuePool, pool_size=threads, max_overflow=-1)
        else:
            kwargs.update(pool_size=threads, max_overflow=threads, pool_pre_ping=True)
        self.engine: Engine = create_engine(url, **kwargs)
        if self.sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._read_factory = sessionmaker(self.engine.execution_options(**{_READER: True}),
                                          expire_on_commit=False)
        self._write_lock = threading.Lock()
        self._writing = threading.local()

    def create_schema(self) -> None:
        """Bring the schema to the newest revision (Alembic when available)."""
        from coriolis.db import migration

        migration.upgrade(self)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work that may write; on SQLite, the only one running in this process
        while it lasts. Raises ``DatabaseBusy`` (503) when the write lock stays taken for the
        busy timeout."""
        if not self.sqlite:
            with self._unit(self._factory) as session:
                yield session
            return
        if getattr(self._writing, "active", False):
            raise RuntimeError("a write session was opened inside another one in the same "
                               "thread: it would wait for itself")
        if not self._write_lock.acquire(timeout=BUSY_TIMEOUT_S):
            raise DatabaseBusy(f"The database stayed busy for {BUSY_TIMEOUT_S:g} s")
        self._writing.active = True
        try:
            with self._unit(self._factory) as session:
                yield session
        finally:
            self._writing.active = False
            self._write_lock.release()

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A unit of work that only reads (a consistent snapshot); never waits for writers.
        On SQLite a write in it raises ``OperationalError`` (query_only)."""
        with self._unit(self._read_factory) as session:
            yield session

    @staticmethod
    @contextmanager
    def _unit(factory: sessionmaker[Session]) -> Iterator[Session]:
        session = factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


__all__ = ["Database", "DatabaseBusy", "models"]
