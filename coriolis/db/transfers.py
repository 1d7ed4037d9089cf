"""Queries for transfer actions, executions and tasks, always scoped to a project."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import JSON, Row, Text, TypeDecorator, cast, select
from sqlalchemy.orm import Session, selectinload

from coriolis import exceptions
from coriolis.db import models


def get_endpoint(session: Session, project_id: str, endpoint_id: str) -> models.Endpoint:
    endpoint = session.get(models.Endpoint, endpoint_id)
    if endpoint is None or endpoint.project_id != project_id:
        raise exceptions.NotFound(f"Endpoint {endpoint_id} could not be found")
    return endpoint


def _tasks_loaded() -> Any:
    """Loader options for tasks with their progress updates and events: a query per
    relationship for all tasks at once, instead of two per task as they are read."""
    return selectinload(models.Execution.tasks).options(
        selectinload(models.Task.progress_updates), selectinload(models.Task.events))


def get_action(session: Session, project_id: str, action_id: str,
               action_type: str | None = None, with_tasks: bool = False
               ) -> models.TransferAction:
    """``with_tasks``: for a view of every execution's tasks, loaded in four queries."""
    options = ([selectinload(models.TransferAction.executions).options(_tasks_loaded())]
               if with_tasks else [])
    action = session.get(models.TransferAction, action_id, options=options)
    kind = (action_type or "transfer").capitalize()
    if (action is None or action.deleted or action.project_id != project_id
            or (action_type and action.type != action_type)):
        raise exceptions.NotFound(f"{kind} {action_id} could not be found")
    return action


def list_actions(session: Session, project_id: str, action_type: str,
                 replica_deploys: bool | None = None) -> list[models.TransferAction]:
    query = select(models.TransferAction).where(
        models.TransferAction.project_id == project_id,
        models.TransferAction.type == action_type,
        models.TransferAction.deleted.is_(False),
    )
    if replica_deploys is True:
        query = query.where(models.TransferAction.replica_id.is_not(None))
    return list(session.scalars(query.order_by(models.TransferAction.created_at)))


class RawJSON(TypeDecorator[Any]):
    """A JSON column read as its stored text and handed on as ``orjson.Fragment``: serialised
    again as it is by ``orjson.dumps``, never parsed."""

    impl = Text
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else orjson.Fragment(value)


def list_summaries(session: Session, project_id: str, action_type: str) -> list[Row[Any]]:
    """``list_actions`` for the list views: rows (a tuple with ``_fields``, the column
    names) of every column but ``info`` (each instance's task info, the largest by far), in
    one query, without ORM objects or their relationships, oldest first. JSON columns are
    ``orjson.Fragment`` (see ``RawJSON``): only ``orjson.dumps`` can write them out."""
    table = models.TransferAction.__table__
    columns = [cast(col, RawJSON()).label(col.name) if isinstance(col.type, JSON) else col
               for col in table.c if col.name != "info"]
    query = select(*columns).where(
        table.c.project_id == project_id, table.c.type == action_type,
        table.c.deleted.is_(False)).order_by(table.c.created_at)
    return list(session.execute(query))


def replica_scenarios(session: Session, replica_ids: Iterable[str]) -> dict[str, str | None]:
    """``{replica id: its scenario}`` for the existing ones among ``replica_ids``, in one
    query."""
    ids = set(replica_ids)
    if not ids:
        return {}
    action = models.TransferAction
    return dict(session.execute(  # type: ignore[arg-type]
        select(action.id, action.scenario).where(action.id.in_(ids))).all())


def get_execution(session: Session, project_id: str, execution_id: str,
                  action_id: str | None = None, with_tasks: bool = False) -> models.Execution:
    """``with_tasks``: for a view of its tasks, loaded in three queries."""
    execution = session.get(models.Execution, execution_id,
                            options=[_tasks_loaded()] if with_tasks else [])
    if (execution is None or execution.action.project_id != project_id
            or execution.action.deleted
            or (action_id is not None and execution.action_id != action_id)):
        raise exceptions.NotFound(f"Execution {execution_id} could not be found")
    return execution


def active_tasks(session: Session) -> list[models.Task]:
    from coriolis import constants as c

    return list(session.scalars(select(models.Task).where(
        models.Task.status.in_(c.ACTIVE_TASK_STATUSES))))
