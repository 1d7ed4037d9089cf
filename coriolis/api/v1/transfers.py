"""Migrations (and their target-era name, deployments), replicas, executions, schedules."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Body, Depends, Response
from sqlalchemy import select

from coriolis import constants as c
from coriolis import exceptions
from coriolis.api import views
from coriolis.api.v1.common import single_action, unwrap
from coriolis.context import RequestContext
from coriolis.db import models, transfers
from coriolis.engine.validation import against_schema
from coriolis.service import Services

CRON_SCHEMA = {
    "type": "object",
    "properties": {
        "minute": {"type": "integer", "minimum": 0, "maximum": 59},
        "hour": {"type": "integer", "minimum": 0, "maximum": 23},
        "dom": {"type": "integer", "minimum": 1, "maximum": 31},
        "month": {"type": "integer", "minimum": 1, "maximum": 12},
        "dow": {"type": "integer", "minimum": 0, "maximum": 6},
    },
    "additionalProperties": False,
}


def _cancel_force(body: Any) -> bool:
    action, value = single_action(body)
    if action != "cancel":
        raise exceptions.InvalidInput(f"There is no such action: {action}")
    force = (value or {}).get("force", False) if isinstance(value, dict) else False
    if not isinstance(force, bool):
        raise exceptions.InvalidInput("cancel.force must be a boolean")
    return force


def _expiration(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise exceptions.InvalidInput("'expiration_date' must be an ISO 8601 date-time string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise exceptions.InvalidInput(f"'expiration_date' is not an ISO 8601 date: {value}"
                                      ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    if parsed <= models.utcnow():
        raise exceptions.InvalidInput("'expiration_date' must be in the future")
    return parsed


def _schedule_fields(body: Any, row: models.ReplicaSchedule, creating: bool) -> None:
    if not isinstance(body, dict):
        raise exceptions.InvalidInput("The schedule body must be a JSON object")
    if creating or "schedule" in body:
        cron = body.get("schedule")
        if not isinstance(cron, dict) or (creating and not cron):
            raise exceptions.InvalidInput("'schedule' must be an object with at least one of "
                                          "minute, hour, dom, month, dow")
        against_schema(cron, CRON_SCHEMA, "schedule")
        row.schedule = cron
    for key in ("enabled", "shutdown_instance"):
        if key in body:
            if not isinstance(body[key], bool):
                raise exceptions.InvalidInput(f"'{key}' must be a boolean")
            setattr(row, key, body[key])
    if "expiration_date" in body:
        row.expiration_date = _expiration(body["expiration_date"])


def build_router(services: Services, context: Any) -> APIRouter:
    router = APIRouter()
    db, conductor = services.db, services.conductor

    def migration_view(session: Any, row: models.TransferAction,
                       detail: bool = True) -> dict[str, Any]:
        scenario = None
        if row.replica_id:
            replica = session.get(models.TransferAction, row.replica_id)
            scenario = (replica.scenario if replica else None) or "replica"
        return views.migration(row, scenario, detail)

    # --- migrations and deployments (same resource, two names) -------------------------------
    def transfer_routes(collection: str, key: str) -> None:
        @router.get(f"/{collection}", name=f"list_{collection}")
        @router.get(f"/{collection}/detail", name=f"detail_{collection}")
        def list_all(ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            with db.reader() as session:
                rows = transfers.list_actions(
                    session, ctx.project_id, c.ACTION_TYPE_MIGRATION,
                    replica_deploys=True if collection == "deployments" else None)
                return {collection: [migration_view(session, r, detail=False) for r in rows]}

        @router.get(f"/{collection}/{{action_id}}", name=f"show_{key}")
        def show(action_id: str, ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            with db.reader() as session:
                row = transfers.get_action(session, ctx.project_id, action_id,
                                           c.ACTION_TYPE_MIGRATION)
                return {key: migration_view(session, row)}

        @router.post(f"/{collection}", name=f"create_{key}")
        def create(body: Any = Body(None),
                   ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            data = unwrap(body, key)
            if "replica_id" in data or collection == "deployments":
                action_id = conductor.deploy_replica(ctx, data)
            else:
                action_id = conductor.create_migration(ctx, data)
            return show(action_id, ctx)

        @router.post(f"/{collection}/{{action_id}}/actions", status_code=204,
                     name=f"action_{key}")
        def action(action_id: str, body: Any = Body(None),
                   ctx: RequestContext = Depends(context)) -> Response:
            with db.reader() as session:
                row = transfers.get_action(session, ctx.project_id, action_id,
                                           c.ACTION_TYPE_MIGRATION)
                if not row.executions:
                    raise exceptions.InvalidState(f"Migration {action_id} has no execution")
                execution_id = row.executions[-1].id
            force = _cancel_force(body)
            conductor.cancel_execution(ctx, execution_id, force)
            return Response(status_code=204)

        def delete(action_id: str, ctx: RequestContext = Depends(context)) -> Response:
            with db.reader() as session:
                transfers.get_action(session, ctx.project_id, action_id,
                                     c.ACTION_TYPE_MIGRATION)
            conductor.delete_action(ctx, action_id)
            return Response(status_code=204)

        router.delete(f"/{collection}/{{action_id}}", status_code=204,
                      name=f"delete_{key}")(delete)
        if collection == "deployments":  # the target client sends the singular path
            router.delete("/deployment/{action_id}", status_code=204,
                          name="delete_deployment_singular")(delete)

    transfer_routes("migrations", "migration")
    transfer_routes("deployments", "deployment")

    # --- replicas ----------------------------------------------------------------------------
    def replica_row(session: Any, ctx: RequestContext, replica_id: str) -> models.TransferAction:
        return transfers.get_action(session, ctx.project_id, replica_id, c.ACTION_TYPE_REPLICA)

    def execution_view(execution_id: str, ctx: RequestContext) -> dict[str, Any]:
        with db.reader() as session:
            return {"execution": views.execution(
                transfers.get_execution(session, ctx.project_id, execution_id))}

    @router.get("/replicas")
    @router.get("/replicas/detail")
    def list_replicas(ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.reader() as session:
            rows = transfers.list_actions(session, ctx.project_id, c.ACTION_TYPE_REPLICA)
            return {"replicas": [views.replica(r, detail=False) for r in rows]}

    @router.get("/replicas/{replica_id}")
    def show_replica(replica_id: str, ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.reader() as session:
            return {"replica": views.replica(replica_row(session, ctx, replica_id))}

    @router.post("/replicas")
    def create_replica(body: Any = Body(None),
                       ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        replica_id = conductor.create_replica(ctx, unwrap(body, "replica"))
        return show_replica(replica_id, ctx)

    @router.put("/replicas/{replica_id}")
    def update_replica(replica_id: str, body: Any = Body(None),
                       ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        execution_id = conductor.update_replica(ctx, replica_id, unwrap(body, "replica"))
        return execution_view(execution_id, ctx)

    @router.delete("/replicas/{replica_id}", status_code=204)
    def delete_replica(replica_id: str, ctx: RequestContext = Depends(context)) -> Response:
        with db.reader() as session:
            replica_row(session, ctx, replica_id)
        conductor.delete_action(ctx, replica_id)
        return Response(status_code=204)

    @router.post("/replicas/{replica_id}/actions")
    def replica_action(replica_id: str, body: Any = Body(None),
                       ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        action, _ = single_action(body)
        if action != "delete-disks":
            raise exceptions.InvalidInput(f"There is no such action: {action}")
        return execution_view(conductor.delete_replica_disks(ctx, replica_id), ctx)

    @router.get("/replicas/{replica_id}/executions")
    @router.get("/replicas/{replica_id}/executions/detail")
    def list_executions(replica_id: str,
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.reader() as session:
            row = replica_row(session, ctx, replica_id)
            return {"executions": [views.execution(e) for e in row.executions]}

    @router.get("/replicas/{replica_id}/executions/{execution_id}")
    def show_execution(replica_id: str, execution_id: str,
                       ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.reader() as session:
            replica_row(session, ctx, replica_id)
            return {"execution": views.execution(
                transfers.get_execution(session, ctx.project_id, execution_id, replica_id))}

    @router.post("/replicas/{replica_id}/executions")
    def execute(replica_id: str, body: Any = Body(None),
                ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        data = body.get("execution") if isinstance(body, dict) else None
        shutdown = bool((data or {}).get("shutdown_instances", False))
        return execution_view(conductor.execute_replica(ctx, replica_id, shutdown), ctx)

    @router.post("/replicas/{replica_id}/executions/{execution_id}/actions", status_code=204)
    def cancel_execution(replica_id: str, execution_id: str, body: Any = Body(None),
                         ctx: RequestContext = Depends(context)) -> Response:
        with db.reader() as session:
            transfers.get_execution(session, ctx.project_id, execution_id, replica_id)
        force = _cancel_force(body)
        conductor.cancel_execution(ctx, execution_id, force)
        return Response(status_code=204)

    @router.delete("/replicas/{replica_id}/executions/{execution_id}", status_code=204)
    def delete_execution(replica_id: str, execution_id: str,
                         ctx: RequestContext = Depends(context)) -> Response:
        with db.reader() as session:
            transfers.get_execution(session, ctx.project_id, execution_id, replica_id)
        conductor.delete_execution(ctx, execution_id)
        return Response(status_code=204)

    # --- schedules ---------------------------------------------------------------------------
    def schedule_row(session: Any, ctx: RequestContext, replica_id: str,
                     schedule_id: str) -> models.ReplicaSchedule:
        replica_row(session, ctx, replica_id)
        row = session.get(models.ReplicaSchedule, schedule_id)
        if row is None or row.replica_id != replica_id:
            raise exceptions.NotFound(f"Schedule {schedule_id} could not be found")
        return row

    @router.get("/replicas/{replica_id}/schedules")
    def list_schedules(replica_id: str, show_expired: str = "true",
                       ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.reader() as session:
            replica_row(session, ctx, replica_id)
            rows = session.scalars(select(models.ReplicaSchedule).where(
                models.ReplicaSchedule.replica_id == replica_id).order_by(
                models.ReplicaSchedule.created_at)).all()
            if show_expired.lower() == "false":
                now = models.utcnow()
                rows = [r for r in rows if r.expiration_date is None or r.expiration_date > now]
            return {"schedules": [views.schedule(r) for r in rows]}

    @router.get("/replicas/{replica_id}/schedules/{schedule_id}")
    def show_schedule(replica_id: str, schedule_id: str,
                      ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.reader() as session:
            return {"schedule": views.schedule(schedule_row(session, ctx, replica_id,
                                                            schedule_id))}

    @router.post("/replicas/{replica_id}/schedules")
    def create_schedule(replica_id: str, body: Any = Body(None),
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.session() as session:
            replica_row(session, ctx, replica_id)
            row = models.ReplicaSchedule(replica_id=replica_id, project_id=ctx.project_id,
                                         enabled=True, shutdown_instance=False)
            _schedule_fields(body, row, creating=True)
            session.add(row)
            session.flush()
            return {"schedule": views.schedule(row)}

    @router.put("/replicas/{replica_id}/schedules/{schedule_id}")
    def update_schedule(replica_id: str, schedule_id: str, body: Any = Body(None),
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
        with db.session() as session:
            row = schedule_row(session, ctx, replica_id, schedule_id)
            _schedule_fields(body, row, creating=False)
            row.updated_at = models.utcnow()
            session.flush()
            return {"schedule": views.schedule(row)}

    @router.delete("/replicas/{replica_id}/schedules/{schedule_id}", status_code=204)
    def delete_schedule(replica_id: str, schedule_id: str,
                        ctx: RequestContext = Depends(context)) -> Response:
        with db.session() as session:
            session.delete(schedule_row(session, ctx, replica_id, schedule_id))
        return Response(status_code=204)

    return router



