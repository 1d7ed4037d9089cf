"""Which worker may run a task: the seed's region rules, plus liveness and providers.

A worker is eligible when it is enabled, has heart-beaten within ``down_after`` seconds (or
is the all-in-one server's in-process worker, ``local_host``: it is up as long as the process
that asks is, so its liveness never depends on its heartbeat having won a database write),
carries the providers of the task's endpoints, and, for every endpoint that has regions, is
in at least one of that endpoint's regions (an endpoint without regions accepts any worker).
Among the eligible, the one with the fewest active tasks gets the task.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coriolis import constants as c
from coriolis import exceptions
from coriolis.db import models
from coriolis.task_types import Side, sides


def is_alive(service: models.Service, now: dt.datetime, down_after: float) -> bool:
    beat = service.last_heartbeat
    return (service.status != c.SERVICE_STATUS_DOWN and beat is not None
            and (now - beat).total_seconds() <= down_after)


def live_workers(session: Session, down_after: float,
                 local_host: str | None = None) -> list[models.Service]:
    """The worker rows that are up: heart-beaten lately, or this process's own worker
    (``local_host``, None in the scale-out mode)."""
    now = models.utcnow()
    rows = session.scalars(select(models.Service).where(
        models.Service.binary == c.WORKER_BINARY))
    return [s for s in rows if s.host == local_host or is_alive(s, now, down_after)]


def _satisfies(service: models.Service, endpoint: models.Endpoint) -> bool:
    if endpoint.type not in (service.providers or {}):
        return False
    wanted = {r.id for r in endpoint.regions}
    return not wanted or bool(wanted & {r.id for r in service.regions})


def _describe(endpoints: Iterable[models.Endpoint]) -> str:
    parts = []
    for e in endpoints:
        regions = ", ".join(sorted(r.name for r in e.regions))
        parts.append(f"endpoint '{e.name}' ({e.type}) "
                     + (f"in regions [{regions}]" if regions else "with no region"))
    return " and ".join(parts)


def task_endpoints(task_type: str, origin: models.Endpoint, destination: models.Endpoint
                   ) -> list[models.Endpoint]:
    """The endpoints a task of ``task_type`` talks to: its side's in ``task_types``."""
    by_side = {Side.SOURCE: origin, Side.DESTINATION: destination}
    return [by_side[side] for side in sides(task_type)]


def choose_worker(session: Session, endpoints: Sequence[models.Endpoint],
                  down_after: float, local_host: str | None = None) -> str:
    """The host of the least busy eligible worker (``local_host``: as in ``live_workers``);
    ``NoEligibleWorker`` naming the endpoints and their regions when there is none."""
    live = live_workers(session, down_after, local_host)
    eligible = [s for s in live if s.enabled and all(_satisfies(s, e) for e in endpoints)]
    if not eligible:
        enabled = [s for s in live if s.enabled]
        known = "; ".join(
            f"{s.host} [{', '.join(sorted(r.name for r in s.regions)) or 'no region'}]"
            for s in enabled) or "none"
        raise exceptions.NoEligibleWorker(
            f"No enabled worker can run a task for {_describe(endpoints)}; "
            f"enabled workers that are up: {known}")
    if len(eligible) == 1:  # the all-in-one server's own worker, say: nothing to compare
        return eligible[0].host
    load = dict(session.execute(
        select(models.Task.host, func.count()).where(
            models.Task.status.in_(c.ACTIVE_TASK_STATUSES),
            models.Task.host.in_([s.host for s in eligible])).group_by(models.Task.host)).all())
    return min(eligible, key=lambda s: (load.get(s.host, 0), s.host)).host
