"""A worker's row in the services table: registered on start, heart-beaten while it runs.

The row is keyed by host name (unique per worker binary). Registering again (a restart) keeps
the row, so its ``enabled`` flag and regions, which operators set, survive restarts.
"""

from __future__ import annotations

from sqlalchemy import select

from coriolis import __version__
from coriolis import constants as c
from coriolis.db import models
from coriolis.db.session import Database


def register(db: Database, host: str, topic: str, providers: dict[str, int],
             max_tasks: int) -> str:
    """Create or refresh this worker's service row; returns its id."""
    with db.session() as session:
        row = session.scalar(select(models.Service).where(
            models.Service.host == host, models.Service.binary == c.WORKER_BINARY))
        if row is None:
            row = models.Service(host=host, binary=c.WORKER_BINARY, topic=topic)
            session.add(row)
        row.topic = topic
        row.status = c.SERVICE_STATUS_UP
        row.providers = {name: {"types": mask} for name, mask in providers.items()}
        row.specs = {"version": __version__, "max_concurrent_tasks": max_tasks}
        row.last_heartbeat = models.utcnow()
        session.flush()
        return row.id


def beat(db: Database, service_id: str) -> None:
    with db.session() as session:
        row = session.get(models.Service, service_id)
        if row is None:  # deleted by an operator: it stays deleted until the next start
            return
        row.last_heartbeat = models.utcnow()
        row.status = c.SERVICE_STATUS_UP
