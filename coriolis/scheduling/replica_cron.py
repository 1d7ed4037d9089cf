"""Replica schedules: run a replica execution when a schedule's fields match the UTC time.

Semantics as upstream: each field (minute, hour, dom, month, dow) is an exact value or absent
(any), or cron syntax (``*/5``, ``1-5``, ``0,30``: ``coriolis.scheduling.cron``); ``dow`` 0 is
Monday. A schedule fires at most once per matching minute, never when
disabled or expired, and never while the replica already has an execution running.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from coriolis import exceptions
from coriolis.context import RequestContext
from coriolis.db import models
from coriolis.db.session import Database
from coriolis.periodic import Periodic
from coriolis.scheduling import cron

LOG = logging.getLogger(__name__)


def matches(schedule: dict[str, Any], now: dt.datetime) -> bool:
    """Whether the minute ``now`` (UTC) matches; fields in cron syntax (``cron``). A
    schedule stored before that syntax, or otherwise invalid, never matches."""
    try:
        return cron.matches(schedule, now)
    except cron.CronError:
        LOG.warning("schedule %s is not valid; it never runs", schedule)
        return False


class ReplicaCron:
    def __init__(self, db: Database, conductor: Any,
                 clock: Callable[[], dt.datetime] = models.utcnow,
                 interval: float = 10.0) -> None:
        self.db = db
        self.conductor = conductor
        self.clock = clock
        self.interval = interval
        self._periodic = Periodic("replica-cron", interval, self.tick)

    def tick(self, now: dt.datetime | None = None) -> list[str]:
        """Start the executions due at ``now`` (UTC, naive); returns their ids."""
        minute = (now or self.clock()).replace(second=0, microsecond=0)
        due = []
        with self.db.session() as session:
            for row in session.scalars(select(models.ReplicaSchedule).where(
                    models.ReplicaSchedule.enabled.is_(True)).with_for_update(skip_locked=True)):
                if row.expiration_date is not None and row.expiration_date <= minute:
                    continue
                if not matches(row.schedule or {}, minute):
                    continue
                if row.last_run_at is not None and row.last_run_at >= minute:
                    continue
                row.last_run_at = minute
                due.append((row.id, row.replica_id, row.project_id, row.shutdown_instance,
                            row.auto_deploy))
        started = []
        for schedule_id, replica_id, project_id, shutdown, auto_deploy in due:
            ctx = RequestContext.admin_for(project_id)
            try:
                started.append(self.conductor.execute_replica(ctx, replica_id, shutdown,
                                                             auto_deploy=auto_deploy))
                LOG.info("schedule %s started an execution of replica %s", schedule_id,
                         replica_id)
            except (exceptions.InvalidState, exceptions.NotFound) as exc:
                LOG.info("schedule %s skipped: %s", schedule_id, exc)
        return started

    def start(self) -> None:
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()
