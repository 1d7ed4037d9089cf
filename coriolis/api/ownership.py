"""Every resource id in a route's path must belong to the caller's project. The check runs
with authentication, before a handler reads the body, so another project's resource is a 404
on every route whatever the request holds, and a new route with these parameter names is
covered without doing anything."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from coriolis import constants as c
from coriolis import exceptions
from coriolis.db import models, transfers
from coriolis.db.session import Database
from coriolis.secrets import store


def _schedule(session: Session, project_id: str, schedule_id: str) -> None:
    row = session.get(models.ReplicaSchedule, schedule_id)
    if row is None:
        raise exceptions.NotFound(f"Schedule {schedule_id} could not be found")
    try:
        transfers.get_action(session, project_id, row.replica_id, c.ACTION_TYPE_REPLICA)
    except exceptions.NotFound:
        raise exceptions.NotFound(f"Schedule {schedule_id} could not be found") from None


def _pool(session: Session, project_id: str, pool_id: str) -> None:
    row = session.get(models.MinionPool, pool_id)
    if row is None or row.project_id != project_id:
        raise exceptions.NotFound(f"Minion pool {pool_id} could not be found")


OWNED_PATH_PARAMS: dict[str, Callable[[Session, str, str], Any]] = {
    "endpoint_id": transfers.get_endpoint,
    "action_id": transfers.get_action,
    "replica_id": lambda s, p, v: transfers.get_action(s, p, v, c.ACTION_TYPE_REPLICA),
    "execution_id": transfers.get_execution,
    "schedule_id": _schedule,
    "secret_id": store.get,
    "pool_id": _pool,
}


def check_owned(db: Database, project_id: str, path_params: Mapping[str, str]) -> None:
    owned = [(name, value) for name, value in path_params.items()
             if name in OWNED_PATH_PARAMS]
    if not owned:
        return
    with db.reader() as session:
        for name, value in owned:
            OWNED_PATH_PARAMS[name](session, project_id, value)
