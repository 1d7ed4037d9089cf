"""Rows to the JSON shapes the upstream API returns (field names as the client reads them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from coriolis import constants as c
from coriolis.db import models
from coriolis.scheduling import cron


def ts(value: dt.datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS.ffffff`` (UTC, no offset: the stored times are naive UTC)."""
    if not value:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds")


def _base(row: Any) -> dict[str, Any]:
    return {"id": row.id, "created_at": ts(row.created_at), "updated_at": ts(row.updated_at)}


def endpoint(row: models.Endpoint, connection_info: dict[str, Any] | None) -> dict[str, Any]:
    view = {**_base(row), "name": row.name, "type": row.type, "description": row.description,
            "project_id": row.project_id, "user_id": row.user_id,
            "mapped_regions": [r.id for r in row.regions]}
    if connection_info is not None:
        view["connection_info"] = connection_info
    return view


def region(row: models.Region) -> dict[str, Any]:
    return {**_base(row), "name": row.name, "description": row.description,
            "enabled": row.enabled, "mapped_endpoints": [e.id for e in row.endpoints],
            "mapped_services": [s.id for s in row.services]}


def service(row: models.Service) -> dict[str, Any]:
    return {**_base(row), "host": row.host, "binary": row.binary, "topic": row.topic,
            "enabled": row.enabled, "status": row.status, "providers": row.providers,
            "specs": row.specs, "mapped_regions": [r.id for r in row.regions]}


def progress_update(row: models.TaskProgressUpdate) -> dict[str, Any]:
    return {**_base(row), "index": row.index, "current_step": row.current_step,
            "total_steps": row.total_steps, "message": row.message}


def task(row: models.Task) -> dict[str, Any]:
    return {**_base(row), "execution_id": row.execution_id, "index": row.index,
            "instance": row.instance, "task_type": row.task_type, "status": row.status,
            "depends_on": row.depends_on, "on_error": row.on_error, "host": row.host,
            "process_id": row.process_id, "exception_details": row.exception_details,
            "progress_updates": [progress_update(p) for p in row.progress_updates],
            "events": [{**_base(e), "index": e.index, "level": e.level, "message": e.message}
                       for e in row.events]}


def visible_tasks(execution: models.Execution) -> list[dict[str, Any]]:
    """Cleanups that were never needed (EXECUTE_ON_ERROR_ONLY) are hidden, as upstream."""
    return [task(t) for t in execution.tasks if t.status != c.TASK_STATUS_ON_ERROR_ONLY]


def execution(row: models.Execution, with_tasks: bool = True) -> dict[str, Any]:
    view = {**_base(row), "action_id": row.action_id, "number": row.number, "type": row.type,
            "status": row.status}
    if with_tasks:
        view["tasks"] = visible_tasks(row)
    return view


def _transfer(row: Any, with_info: bool = True) -> dict[str, Any]:
    """The fields migrations and replicas share; ``row`` is a ``TransferAction`` or a
    summary row of ``db.transfers.list_summaries`` (every column but ``info``, which
    ``with_info`` false leaves out)."""
    view = {
        **_base(row), "type": row.type, "project_id": row.project_id, "user_id": row.user_id,
        "origin_endpoint_id": row.origin_endpoint_id,
        "destination_endpoint_id": row.destination_endpoint_id,
        "origin_minion_pool_id": row.origin_minion_pool_id,
        "destination_minion_pool_id": row.destination_minion_pool_id,
        "instance_osmorphing_minion_pool_mappings": row.instance_osmorphing_minion_pool_mappings,
        "instances": row.instances, "source_environment": row.source_environment,
        "destination_environment": row.destination_environment,
        "network_map": row.network_map, "storage_mappings": row.storage_mappings,
        "user_scripts": row.user_scripts, "notes": row.notes,
        "last_execution_status": row.last_execution_status,
        "reservation_id": row.reservation_id,
        "deleted": row.deleted, "deleted_at": ts(row.deleted_at),
    }
    if with_info:
        view["info"] = row.info
    return view


def migration(row: Any, replica_scenario: str | None = None,
              detail: bool = True) -> dict[str, Any]:
    """Upstream flattens the single execution's tasks into ``tasks``. Lists (``detail``
    false) carry neither tasks nor the per-instance info, as upstream's default, and read
    neither (``row`` may then be a summary row, see ``_transfer``)."""
    view = {**_transfer(row, with_info=detail), "replica_id": row.replica_id,
            "replica_scenario_type": replica_scenario,
            # The newer generation's names of the same two (a deployment's transfer).
            "transfer_id": row.replica_id, "transfer_scenario_type": replica_scenario,
            "shutdown_instances": row.shutdown_instances,
            "replication_count": row.replication_count,
            "skip_os_morphing": row.skip_os_morphing, "clone_disks": row.clone_disks,
            "transfer_result": row.transfer_result}
    if detail:
        view["tasks"] = visible_tasks(row.executions[-1]) if row.executions else []
    return view


def replica(row: Any, detail: bool = True) -> dict[str, Any]:
    """A replica; a list's (``detail`` false) has no info and ``executions: []``, as
    upstream's default, and ``row`` may then be a summary row (see ``_transfer``)."""
    return {**_transfer(row, with_info=detail), "scenario": row.scenario or "replica",
            "clone_disks": row.clone_disks, "skip_os_morphing": row.skip_os_morphing,
            "executions": [execution(e) for e in row.executions] if detail else []}


# --- list items from summary rows ----------------------------------------------------------------
# A list of 10 000 migrations is built from ``db.transfers.list_summaries`` rows (every column
# but ``info``, JSON columns unparsed) by copying each row at once rather than field by field
# as above: the same items as ``migration(row, scenario, detail=False)`` and ``replica(row,
# detail=False)`` once serialised (tests/integration/api/test_list_views.py holds them equal),
# for a fraction of the time. Only ``orjson.dumps`` can write these items out.
_MIGRATION_ONLY = ("replica_id", "shutdown_instances", "replication_count", "transfer_result")


def _listed(rows: list[Any], drop: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    if not rows:
        return
    fields = rows[0]._fields
    for row in rows:
        view = dict(zip(fields, row, strict=True))
        for key in drop:
            del view[key]
        view["created_at"] = ts(view["created_at"])
        if view["updated_at"] is not None:
            view["updated_at"] = ts(view["updated_at"])
        if view["deleted_at"] is not None:
            view["deleted_at"] = ts(view["deleted_at"])
        yield view


def replica_scenario(replica_id: str | None, scenarios: dict[str, str | None]) -> str | None:
    """A deployment's transfer scenario (``replica`` unless its transfer says otherwise)
    from ``{replica id: scenario}``; None for a plain migration."""
    if not replica_id:
        return None
    return scenarios.get(replica_id) or "replica"


def listed_migrations(rows: list[Any], scenarios: dict[str, str | None]) -> list[dict[str, Any]]:
    """Migration list items from summary rows; ``scenarios``: the deployments' transfers'
    (``db.transfers.replica_scenarios``)."""
    items = []
    for view in _listed(rows, ("scenario",)):
        view["transfer_id"] = view["replica_id"]
        view["replica_scenario_type"] = view["transfer_scenario_type"] = replica_scenario(
            view["replica_id"], scenarios)
        items.append(view)
    return items


def listed_replicas(rows: list[Any]) -> list[dict[str, Any]]:
    """Replica list items from summary rows."""
    items = []
    for view in _listed(rows, _MIGRATION_ONLY):
        view["scenario"] = view["scenario"] or "replica"
        view["executions"] = []
        items.append(view)
    return items


def schedule(row: models.ReplicaSchedule) -> dict[str, Any]:
    return {**_base(row), "replica_id": row.replica_id, "transfer_id": row.replica_id,
            "schedule": row.schedule,
            "enabled": row.enabled, "expiration_date": ts(row.expiration_date),
            "shutdown_instance": row.shutdown_instance, "auto_deploy": row.auto_deploy,
            "trust_id": row.trust_id,
            "last_run_at": ts(row.last_run_at), "next_run_at": _next_run(row)}


def _next_run(row: models.ReplicaSchedule) -> str | None:
    """When the schedule runs next (UTC), or None: disabled, expired by then, or never."""
    if not row.enabled:
        return None
    try:
        when = cron.next_run(row.schedule or {}, models.utcnow())
    except cron.CronError:
        return None
    if when is None or (row.expiration_date is not None and when >= row.expiration_date):
        return None
    return ts(when)


MASK = "***"


def minion_machine(row: models.MinionMachine) -> dict[str, Any]:
    """A machine; its connection info (agent keys, credentials) is always masked."""
    secret = MASK if row.secrets_encrypted else None
    return {**_base(row), "pool_id": row.pool_id, "allocation_status": row.allocation_status,
            "power_status": row.power_status, "connection_info": secret,
            "backup_writer_connection_info": secret,
            "provider_properties": row.provider_properties,
            "allocated_action": row.allocated_action, "last_used_at": ts(row.last_used_at),
            "deleted": False, "deleted_at": None}


def minion_pool(row: models.MinionPool) -> dict[str, Any]:
    return {**_base(row), "name": row.name, "endpoint_id": row.endpoint_id,
            "project_id": row.project_id, "user_id": row.user_id,
            "platform": row.platform, "os_type": row.os_type, "status": row.status,
            "notes": row.notes, "environment_options": row.environment_options,
            "minimum_minions": row.minimum_minions, "maximum_minions": row.maximum_minions,
            "minion_max_idle_time": row.minion_max_idle_time,
            "minion_retention_strategy": row.minion_retention_strategy,
            "shared_resources": row.shared_resources, "maintenance_trust_id": None,
            "deleted": False, "deleted_at": None,
            "events": [{**_base(e), "index": e.index, "level": e.level, "message": e.message}
                       for e in row.events],
            "progress_updates": [],
            "minion_machines": [minion_machine(m) for m in row.machines]}
