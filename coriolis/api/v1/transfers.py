"""Migrations (and their target-era name, deployments), replicas, executions, schedules."""

# No ``from __future__ import annotations``: FastAPI must see the body model of the
# route-making closure (``request_model``), not its name.
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from sqlalchemy import select

from coriolis import constants as c
from coriolis import exceptions
from coriolis.api import views
from coriolis.api.schemas.transfers import (
    CancelAction,
    DeploymentRequest,
    ExecutionRequest,
    MigrationRequest,
    ReplicaAction,
    ReplicaDeploy,
    ReplicaRequest,
    ReplicaUpdateRequest,
    ScheduleCreate,
    ScheduleUpdate,
    TransferExecutionRequest,
    TransferRequest,
    TransferUpdateRequest,
)
from coriolis.api.v1 import listing
from coriolis.api.v1.common import list_response
from coriolis.context import RequestContext
from coriolis.db import models, transfers
from coriolis.service import Services

NO_EXECUTION_OPTIONS = ExecutionRequest()  # an execution without a body (upstream's default)


def _dump(model: BaseModel) -> dict[str, Any]:
    """A validated body as the engine takes it: the keys the caller gave, by their wire
    names."""
    return model.model_dump(by_alias=True, exclude_unset=True)


def _cancel_force(body: CancelAction) -> bool:
    return body.cancel.force if body.cancel is not None else False


def _schedule_fields(body: ScheduleUpdate, row: models.ReplicaSchedule) -> None:
    given = body.model_fields_set
    if body.schedule is not None:
        row.schedule = body.schedule.model_dump(exclude_none=True)
    for key in ("enabled", "shutdown_instance", "expiration_date", "auto_deploy"):
        if key in given:
            setattr(row, key, getattr(body, key))


def build_router(services: Services, context: Any) -> APIRouter:
    router = APIRouter()
    db, conductor = services.db, services.conductor

    def migration_view(session: Any, row: models.TransferAction,
                       detail: bool = True) -> dict[str, Any]:
        scenarios = transfers.replica_scenarios(session, [row.replica_id] if row.replica_id
                                                else [])
        return views.migration(row, views.replica_scenario(row.replica_id, scenarios), detail)

    # --- migrations and deployments (same resource, two names) -------------------------------
    def transfer_routes(collection: str, key: str,
                        request_model: type[MigrationRequest | DeploymentRequest]) -> None:
        @router.get(f"/{collection}", name=f"list_{collection}")
        @router.get(f"/{collection}/detail", name=f"detail_{collection}")
        def list_all(request: Request, ctx: RequestContext = Depends(context)) -> Response:
            with db.reader() as session:
                # Every migration is a deployment too (a plain one without a transfer), as
                # every deployment is a migration: the two names of one resource.
                rows = transfers.list_summaries(session, ctx.project_id,
                                                c.ACTION_TYPE_MIGRATION)
                scenarios = transfers.replica_scenarios(
                    session, (r.replica_id for r in rows if r.replica_id))
            items = views.listed_migrations(rows, scenarios)
            if collection == "deployments":  # the newer generation's list parameters
                items = listing.page(items, request.query_params)
            return list_response(collection, items)

        @router.get(f"/{collection}/{{action_id}}", name=f"show_{key}")
        def show(action_id: str, ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            with db.reader() as session:
                row = transfers.get_action(session, ctx.project_id, action_id,
                                           c.ACTION_TYPE_MIGRATION, with_tasks=True)
                return {key: migration_view(session, row)}

        @router.post(f"/{collection}", name=f"create_{key}")
        def create(body: request_model,  # type: ignore[valid-type]
                   ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            data = getattr(body, key)
            if isinstance(data, ReplicaDeploy):
                payload = _dump(data)
                if "transfer_id" in payload:  # the newer generation's name of the replica
                    payload["replica_id"] = payload.pop("transfer_id")
                action_id = conductor.deploy_replica(ctx, payload)
            else:
                action_id = conductor.create_migration(ctx, _dump(data))
            return show(action_id, ctx)

        @router.post(f"/{collection}/{{action_id}}/actions", status_code=204,
                     name=f"action_{key}")
        def action(action_id: str, body: CancelAction,
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

    transfer_routes("migrations", "migration", MigrationRequest)
    transfer_routes("deployments", "deployment", DeploymentRequest)

    # --- replicas ----------------------------------------------------------------------------
    def replica_row(session: Any, ctx: RequestContext, replica_id: str,
                    with_tasks: bool = False) -> models.TransferAction:
        return transfers.get_action(session, ctx.project_id, replica_id, c.ACTION_TYPE_REPLICA,
                                    with_tasks)

    def execution_view(execution_id: str, ctx: RequestContext) -> dict[str, Any]:
        with db.reader() as session:
            return {"execution": views.execution(
                transfers.get_execution(session, ctx.project_id, execution_id,
                                        with_tasks=True))}

    def replica_routes(collection: str, key: str, request_model: type[BaseModel],
                       update_model: type[BaseModel], execution_model: type[BaseModel]) -> None:
        """Replicas (``/replicas``, key ``replica``) or, the newer generation's name for
        the same rows, transfers (``/transfers``, key ``transfer``), with their executions
        and schedules."""
        @router.get(f"/{collection}")
        @router.get(f"/{collection}/detail")
        def list_replicas(request: Request,
                          ctx: RequestContext = Depends(context)) -> Response:
            with db.reader() as session:
                rows = transfers.list_summaries(session, ctx.project_id,
                                                c.ACTION_TYPE_REPLICA)
            items = views.listed_replicas(rows)
            if collection == "transfers":  # the newer generation's list parameters
                items = listing.page(items, request.query_params)
            return list_response(collection, items)

        @router.get(f"/{collection}/{{replica_id}}")
        def show_replica(replica_id: str, ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            with db.reader() as session:
                return {key: views.replica(replica_row(session, ctx, replica_id, True))}

        @router.post(f"/{collection}")
        def create_replica(body: request_model,  # type: ignore[valid-type]
                           ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            replica_id = conductor.create_replica(ctx, _dump(getattr(body, key)))
            return show_replica(replica_id, ctx)

        @router.put(f"/{collection}/{{replica_id}}")
        def update_replica(replica_id: str, body: update_model,  # type: ignore[valid-type]
                           ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            execution_id = conductor.update_replica(ctx, replica_id,
                                                     _dump(getattr(body, key)))
            return execution_view(execution_id, ctx)

        @router.delete(f"/{collection}/{{replica_id}}", status_code=204)
        def delete_replica(replica_id: str, ctx: RequestContext = Depends(context)) -> Response:
            with db.reader() as session:
                replica_row(session, ctx, replica_id)
            conductor.delete_action(ctx, replica_id)
            return Response(status_code=204)

        @router.post(f"/{collection}/{{replica_id}}/actions")
        def replica_action(replica_id: str, body: ReplicaAction,
                           ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            return execution_view(conductor.delete_replica_disks(ctx, replica_id), ctx)

        @router.get(f"/{collection}/{{replica_id}}/executions")
        @router.get(f"/{collection}/{{replica_id}}/executions/detail")
        def list_executions(replica_id: str,
                            ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            with db.reader() as session:
                row = replica_row(session, ctx, replica_id)
                return {"executions": [views.execution(e) for e in row.executions]}

        @router.get(f"/{collection}/{{replica_id}}/executions/{{execution_id}}")
        def show_execution(replica_id: str, execution_id: str,
                           ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            with db.reader() as session:
                replica_row(session, ctx, replica_id)
                return {"execution": views.execution(
                    transfers.get_execution(session, ctx.project_id, execution_id, replica_id))}

        @router.post(f"/{collection}/{{replica_id}}/executions")
        def execute(replica_id: str,
                    body: execution_model = NO_EXECUTION_OPTIONS,  # type: ignore[valid-type]
                    ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            options = getattr(body, "execution", None)
            shutdown = options is not None and options.shutdown_instances
            auto_deploy = options is not None and getattr(options, "auto_deploy", False)
            return execution_view(conductor.execute_replica(ctx, replica_id, shutdown,
                                                            auto_deploy=auto_deploy), ctx)

        @router.post(f"/{collection}/{{replica_id}}/executions/{{execution_id}}/actions",
                     status_code=204)
        def cancel_execution(replica_id: str, execution_id: str, body: CancelAction,
                             ctx: RequestContext = Depends(context)) -> Response:
            with db.reader() as session:
                transfers.get_execution(session, ctx.project_id, execution_id, replica_id)
            force = _cancel_force(body)
            conductor.cancel_execution(ctx, execution_id, force)
            return Response(status_code=204)

        @router.delete(f"/{collection}/{{replica_id}}/executions/{{execution_id}}", status_code=204)
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

        @router.get(f"/{collection}/{{replica_id}}/schedules")
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

        @router.get(f"/{collection}/{{replica_id}}/schedules/{{schedule_id}}")
        def show_schedule(replica_id: str, schedule_id: str,
                          ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            with db.reader() as session:
                return {"schedule": views.schedule(schedule_row(session, ctx, replica_id,
                                                                schedule_id))}

        @router.post(f"/{collection}/{{replica_id}}/schedules")
        def create_schedule(replica_id: str, body: ScheduleCreate,
                            ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            with db.session() as session:
                replica_row(session, ctx, replica_id)
                row = models.ReplicaSchedule(replica_id=replica_id, project_id=ctx.project_id,
                                             enabled=True, shutdown_instance=False,
                                             auto_deploy=False)
                _schedule_fields(body, row)
                session.add(row)
                session.flush()
                return {"schedule": views.schedule(row)}

        @router.put(f"/{collection}/{{replica_id}}/schedules/{{schedule_id}}")
        def update_schedule(replica_id: str, schedule_id: str, body: ScheduleUpdate,
                            ctx: RequestContext = Depends(context)) -> dict[str, Any]:
            with db.session() as session:
                row = schedule_row(session, ctx, replica_id, schedule_id)
                _schedule_fields(body, row)
                row.updated_at = models.utcnow()
                session.flush()
                return {"schedule": views.schedule(row)}

        @router.delete(f"/{collection}/{{replica_id}}/schedules/{{schedule_id}}", status_code=204)
        def delete_schedule(replica_id: str, schedule_id: str,
                            ctx: RequestContext = Depends(context)) -> Response:
            with db.session() as session:
                session.delete(schedule_row(session, ctx, replica_id, schedule_id))
            return Response(status_code=204)

    replica_routes("replicas", "replica", ReplicaRequest, ReplicaUpdateRequest,
                   ExecutionRequest)
    replica_routes("transfers", "transfer", TransferRequest, TransferUpdateRequest,
                   TransferExecutionRequest)

    return router



