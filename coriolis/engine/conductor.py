"""The conductor: the only writer of execution state.

API calls arrive through the ``ConductorAPI`` methods; workers report through the
``TaskEventSink`` methods. Every transition is one DB transaction under one lock (and, on
PostgreSQL, under a row lock of the execution, since in the scale-out mode the API and
conductor processes both run this code); tasks are dispatched only after the transaction that
made them PENDING has committed, each to a worker chosen by ``scheduling.placement``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coriolis import constants as c
from coriolis import exceptions, task_types
from coriolis.bus.base import EndpointRef, TaskBus, TaskMessage
from coriolis.context import RequestContext
from coriolis.db import models, transfers
from coriolis.db.session import Database
from coriolis.engine import graphs, state, validation
from coriolis.minions.manager import PoolManager
from coriolis.minions.transfers import (
    KEY_REFS,
    SOURCE_ROLES,
    check_transfer_pools,
    minion_needs,
)
from coriolis.providers import registry
from coriolis.providers.base import (
    OPERATION_CAPABILITY,
    POOL_OPERATIONS,
    ExportProvider,
    ImportProvider,
    missing_capability,
    require,
)
from coriolis.scheduling import placement
from coriolis.secrets import store as secret_store
from coriolis.secrets.barbican import BarbicanSecrets
from coriolis.secrets.box import SecretBox
from coriolis.transfer.options import with_transfer_options

LOG = logging.getLogger(__name__)

# What the API may ask of an endpoint (validate_destination_inputs is the conductor's own).
ENDPOINT_OPERATIONS = (frozenset(OPERATION_CAPABILITY) - {"validate_destination_inputs"}
                       - POOL_OPERATIONS)
# Keys of the per-instance task_info that API views may show (never connection info).
_REPLICA_INFO_KEYS = ("export_info", "volumes_info")


class Conductor:
    def __init__(self, db: Database, box: SecretBox, bus: TaskBus, *,
                 worker_down_after: float = 30.0, local_host: str | None = None,
                 barbican: BarbicanSecrets | None = None) -> None:
        """``local_host``: the in-process worker of the all-in-one mode, whose tasks die with
        this process; None in the scale-out mode, where workers outlive the conductor."""
        self.db = db
        self.box = box
        self.bus = bus
        self.worker_down_after = worker_down_after
        self.local_host = local_host
        self.barbican = barbican
        self._lock = threading.RLock()
        # Tasks force-cancelled: late events from their still-stopping worker are ignored.
        self._ignored_tasks: set[str] = set()
        # In-process tasks found not held by the bus at the last check (_take_over_unheld).
        self._unheld: set[str] = set()
        self.pools = PoolManager(db, box, bus, self)
        self._pools_changed = False  # machines were released: waiting executions may run

    # ============================================================================ life cycle
    def start(self) -> None:
        """Take over what a previous process left: tasks of the in-process worker (gone with
        that process) and of workers that are not up; tasks of live workers go on, and their
        reports arrive as before. Tasks never sent are simply sent."""
        with self._lock, self.db.session() as session:
            live = {s.host for s in placement.live_workers(session, self.worker_down_after)}
            orphans = [t for t in transfers.active_tasks(session)
                       if t.status != c.TASK_STATUS_PENDING
                       and (t.host is None or t.host == self.local_host or t.host not in live)]
            self._take_over(session, orphans, "The server stopped while this task was running")
            stale = session.scalars(select(models.Execution).where(
                models.Execution.status.in_(c.ACTIVE_EXECUTION_STATUSES)))
            for execution in stale:
                self._advance(session, execution)
        self._dispatch_pending()
        self.pools.start()

    def check_workers(self) -> list[str]:
        """Mark DOWN the workers silent for ``worker_down_after`` seconds and take over their
        tasks; take over the in-process worker's tasks it no longer runs (their end report
        was lost); send whatever is PENDING. Returns the hosts marked down."""
        with self._lock, self.db.session() as session:
            # The in-process worker lives as long as this process does.
            live = {s.id for s in placement.live_workers(session, self.worker_down_after,
                                                         self.local_host)}
            lost = list(session.scalars(select(models.Service).where(
                models.Service.binary == c.WORKER_BINARY,
                models.Service.status == c.SERVICE_STATUS_UP,
                models.Service.id.not_in(live)).with_for_update(skip_locked=True)))
            for service in lost:
                LOG.warning("worker %s stopped heart-beating; taking over its tasks",
                            service.host)
                service.status = c.SERVICE_STATUS_DOWN
                tasks = [t for t in transfers.active_tasks(session)
                         if t.host == service.host and t.status != c.TASK_STATUS_PENDING]
                self._take_over(session, tasks,
                                f"Worker {service.host} stopped heart-beating")
            self._take_over_unheld(session)
            hosts = [s.host for s in lost]
        self._dispatch_pending()
        return hosts

    def _take_over_unheld(self, session: Session) -> None:
        """Tasks of the in-process worker that its bus no longer holds (their end report
        never got through) at two checks in a row (one check could fall between a task's
        dispatch being committed and the bus taking it)."""
        held = getattr(self.bus, "running_tasks", None)
        if self.local_host is None or held is None:
            return
        running = held()
        unheld = {t.id: t for t in transfers.active_tasks(session)
                  if t.host == self.local_host and t.status != c.TASK_STATUS_PENDING
                  and t.id not in running}
        orphans = [t for task_id, t in unheld.items() if task_id in self._unheld]
        self._unheld = set(unheld) - {t.id for t in orphans}
        if orphans:
            LOG.warning("tasks %s are no longer run by this process; taking them over",
                        ", ".join(t.id for t in orphans))
            self._take_over(session, orphans, "The end of this task was never recorded")

    def _take_over(self, session: Session, tasks: list[models.Task], reason: str) -> None:
        """Tasks whose process is gone run again under the same id when their type is safe
        to re-run (``task_types.TASK_TYPES``' ``rerun``: a disk copy resumes from what the
        destination holds), cleanups and rollbacks included, so that a cancel goes on and
        ends; but in an execution being cancelled, only cleanups and the types that make what
        a cleanup removes (``finish_when_cancelled``) run again, the others are cancelled. A
        type not safe to re-run fails, and its execution cleans up."""
        for task in tasks:
            self._lock_execution(session, task.execution_id)
            finish = (task.on_error or task.on_error_only
                      or task.task_type in task_types.FINISH_WHEN_CANCELLED_TASK_TYPES)
            cancelling = (task.status == c.TASK_STATUS_CANCELLING
                          or task.execution.status == c.EXECUTION_STATUS_CANCELLING)
            if cancelling and not finish:
                self._set_task(session, task, c.TASK_STATUS_CANCELED,
                               f"{reason}; cancelled by the user")
            elif task.task_type in task_types.RERUNNABLE_TASK_TYPES:
                task.status, task.host = c.TASK_STATUS_PENDING, None
                session.add(models.TaskEvent(
                    task_id=task.id, index=len(task.events), level="WARNING",
                    message=f"{reason}; it runs again and resumes what it can"))
            else:
                self._set_task(session, task, c.TASK_STATUS_ERROR, reason)
        for execution in {t.execution for t in tasks}:
            self._advance(session, execution)

    @staticmethod
    def _lock_execution(session: Session, execution_id: str) -> None:
        """Serialise transitions of one execution across processes (a no-op on SQLite, where
        one process owns the database)."""
        session.execute(select(models.Execution.id).where(
            models.Execution.id == execution_id).with_for_update())

    def stop(self) -> None:
        pass

    # ============================================================================ helpers
    def _endpoint_ref(self, endpoint: models.Endpoint, env: dict[str, Any]) -> EndpointRef:
        stored = self.box.decrypt_json(endpoint.connection_info_encrypted)
        if isinstance(stored, dict) and "trust_id" in stored and self.barbican is not None:
            stored = self.barbican.resolve(stored)
        elif isinstance(stored, dict) and "secret_ref" in stored:
            with self.db.reader() as session:
                stored = secret_store.connection_info(session, self.box, endpoint.project_id,
                                                      stored)
        return EndpointRef(platform=endpoint.type, connection_info=stored, environment=env,
                           project_id=endpoint.project_id)

    @staticmethod
    def _destination_env(action: models.TransferAction) -> dict[str, Any]:
        """Upstream copies network_map and storage_mappings into the destination env."""
        return {**(action.destination_environment or {}), "network_map": action.network_map or {},
                "storage_mappings": action.storage_mappings or {}}

    def _choose_worker(self, session: Session, endpoints: list[models.Endpoint]) -> str:
        """The host of a worker that may reach ``endpoints`` (this process's own worker is
        up as long as this process runs, whatever its heartbeat row says)."""
        return placement.choose_worker(session, endpoints, self.worker_down_after,
                                       local_host=self.local_host)

    def _dispatch_after_commit(self) -> None:
        """Send what a committed create or start made PENDING. The request has succeeded
        by then: a failure here is logged and the worker monitor sends the tasks later."""
        try:
            self._dispatch_pending()
        except Exception:
            LOG.exception("sending the new tasks failed; the worker monitor sends them later")

    def _transfer_endpoints(self, session: Session, ctx: RequestContext,
                            body: dict[str, Any], kind: str
                            ) -> tuple[models.Endpoint, models.Endpoint]:
        origin_id = validation.require(body, "origin_endpoint_id", kind)
        destination_id = validation.require(body, "destination_endpoint_id", kind)
        if origin_id == destination_id:
            raise exceptions.InvalidInput(
                "origin_endpoint_id and destination_endpoint_id must differ")
        return (transfers.get_endpoint(session, ctx.project_id, origin_id),
                transfers.get_endpoint(session, ctx.project_id, destination_id))

    def _check_environments(self, origin: models.Endpoint, destination: models.Endpoint,
                            source_env: dict[str, Any], dest_env: dict[str, Any]) -> None:
        """The environments against the providers' schemas (the destination's with the
        transfer options, ``transfer.options``); ``InvalidInput`` naming the field."""
        src_provider = require(registry.get_provider(origin.type), ExportProvider)
        dst_provider = require(registry.get_provider(destination.type), ImportProvider)
        validation.against_schema(source_env, src_provider.source_environment_schema(),
                                  "source_environment")
        validation.against_schema(
            dest_env, with_transfer_options(dst_provider.destination_environment_schema()),
            "destination_environment")

    @staticmethod
    def _check_capabilities(origin: models.Endpoint, destination: models.Endpoint,
                            specs: Iterable[graphs.TaskSpec]) -> None:
        """``InvalidInput`` naming the endpoint, its provider and the capability when the
        provider of a side lacks one that a task of ``specs`` needs (``task_types``)."""
        needed = task_types.needed_capabilities(spec.task_type for spec in specs)
        for side, endpoint in ((task_types.Side.SOURCE, origin),
                               (task_types.Side.DESTINATION, destination)):
            provider = registry.get_provider(endpoint.type)
            for capability, task_type in needed[side].items():
                missing = missing_capability(provider, capability)
                if missing:
                    raise exceptions.InvalidInput(
                        f"{side} endpoint '{endpoint.name}': {missing}, which task "
                        f"{task_type} needs")

    def _check_instances(self, origin: tuple[EndpointRef, str],
                         destination: tuple[EndpointRef, str], instances: list[str],
                         check_name_clash: bool = True) -> dict[str, dict[str, Any]]:
        """Synchronously, on a worker, outside any transaction: the instances exist and the
        destination accepts them. ``origin``/``destination``: (endpoint ref, worker host).
        Returns each instance's export info."""
        infos = {}
        for name in instances:
            try:
                export_info = self.bus.call("get_instance", origin[0], host=origin[1],
                                            instance=name)
            except exceptions.NotFound as exc:
                raise exceptions.InvalidInput(f"instances: {exc}") from None
            self.bus.call("validate_destination_inputs", destination[0], host=destination[1],
                          export_info=export_info, check_name_clash=check_name_clash)
            infos[name] = export_info
        return infos

    def _new_transfer(self, ctx: RequestContext, body: dict[str, Any],
                      action_type: str, check_name_clash: bool,
                      specs: Iterable[graphs.TaskSpec]) -> models.TransferAction:
        """Validate the fields migrations and replicas share (the endpoints' providers have
        the capabilities the tasks of ``specs`` need; then synchronously asking the
        platforms, with no transaction open, before anything is stored) and build the
        unsaved row; the caller stores it in one short transaction (``_store_transfer``)."""
        instances = validation.instances(validation.require(body, "instances", action_type))
        source_env = validation.json_object(body, "source_environment")
        network_map = validation.json_object(body, "network_map")
        storage_mappings = validation.storage_mappings(body)
        dest_env = validation.json_object(body, "destination_environment")
        full_dest_env = {**dest_env, "network_map": network_map,
                         "storage_mappings": storage_mappings}
        pool_mappings = validation.pool_mappings(body, instances)
        with self.db.reader() as session:
            origin, destination = self._transfer_endpoints(session, ctx, body, action_type)
            self._check_capabilities(origin, destination, specs)
            self._check_environments(origin, destination, source_env, full_dest_env)
            check_transfer_pools(session, ctx.project_id, origin, destination, instances,
                                 body.get("origin_minion_pool_id"),
                                 body.get("destination_minion_pool_id"), pool_mappings)
            origin_call = (self._endpoint_ref(origin, source_env),
                           self._choose_worker(session, [origin]))
            dest_call = (self._endpoint_ref(destination, full_dest_env),
                         self._choose_worker(session, [destination]))
        self._check_instances(origin_call, dest_call, instances, check_name_clash)
        return models.TransferAction(
            type=action_type, project_id=ctx.project_id, user_id=ctx.user_id,
            origin_endpoint_id=origin.id, destination_endpoint_id=destination.id,
            instances=instances, source_environment=source_env,
            destination_environment=dest_env, network_map=network_map,
            storage_mappings=storage_mappings,
            user_scripts=validation.user_scripts(body, instances), notes=body.get("notes"),
            origin_minion_pool_id=body.get("origin_minion_pool_id"),
            destination_minion_pool_id=body.get("destination_minion_pool_id"),
            instance_osmorphing_minion_pool_mappings=pool_mappings,
            info={name: {} for name in instances},
        )

    def _store_transfer(self, session: Session, ctx: RequestContext, body: dict[str, Any],
                        action: models.TransferAction) -> None:
        """Add a row ``_new_transfer`` built, in the caller's write transaction, once its
        endpoints are checked again (one may have been deleted while the platforms were
        asked: 404, nothing stored)."""
        self._transfer_endpoints(session, ctx, body, action.type)
        session.add(action)
        session.flush()

    # ============================================================================ migrations
    def create_migration(self, ctx: RequestContext, body: dict[str, Any]) -> str:
        shutdown = validation.boolean(body, "shutdown_instances", False)
        count = validation.replication_count(body, 2)
        skip = validation.boolean(body, "skip_os_morphing", False)
        specs = graphs.migration_graph(count, shutdown, skip)
        action = self._new_transfer(ctx, body, c.ACTION_TYPE_MIGRATION, check_name_clash=True,
                                    specs=specs)
        action.shutdown_instances, action.replication_count = shutdown, count
        action.skip_os_morphing = skip
        # The conductor's lock before the write session, as everywhere (no lock inversion).
        with self._lock, self.db.session() as session:
            self._store_transfer(session, ctx, body, action)
            self._start_execution(session, action, c.EXECUTION_TYPE_MIGRATION,
                                  {name: specs for name in action.instances})
            action_id = action.id
        self._dispatch_after_commit()
        return action_id

    def deploy_replica(self, ctx: RequestContext, body: dict[str, Any]) -> str:
        with self._lock, self.db.session() as session:
            replica = transfers.get_action(session, ctx.project_id,
                                           validation.require(body, "replica_id", "migration"),
                                           c.ACTION_TYPE_REPLICA)
            migration_id = self._deploy(session, ctx.project_id, ctx.user_id, replica, body)
        self._dispatch_after_commit()
        return migration_id

    def _deploy(self, session: Session, project_id: str, user_id: str | None,
                replica: models.TransferAction, body: dict[str, Any]) -> str:
        """Store a deployment (migration) of ``replica`` and start its execution, in the
        caller's write transaction; returns its id. InvalidState/InvalidInput/NotFound
        when the replica cannot be deployed now."""
        clone_disks = validation.boolean(body, "clone_disks", replica.clone_disks)
        skip = validation.boolean(body, "skip_os_morphing", replica.skip_os_morphing)
        specs = graphs.replica_deploy_graph(clone_disks, skip)
        self._check_capabilities(
            transfers.get_endpoint(session, project_id, replica.origin_endpoint_id),
            transfers.get_endpoint(session, project_id,
                                   replica.destination_endpoint_id), specs)
        self._refuse_if_active(session, replica)
        _refuse_if_uncommitted(replica)
        origin_ep = transfers.get_endpoint(session, project_id,
                                           replica.origin_endpoint_id)
        # The replica's OS-morphing pools, with those the deploy names instead.
        morph_pools = {**(replica.instance_osmorphing_minion_pool_mappings or {}),
                       **validation.pool_mappings(body, replica.instances)}
        check_transfer_pools(session, project_id, origin_ep,
                             transfers.get_endpoint(session, project_id,
                                                    replica.destination_endpoint_id),
                             replica.instances, None, None, morph_pools)
        force = validation.boolean(body, "force", False)
        completed = any(e.type == c.EXECUTION_TYPE_REPLICA_EXECUTION
                        and e.status == c.EXECUTION_STATUS_COMPLETED
                        for e in replica.executions)
        if not completed and not force:
            raise exceptions.InvalidState(
                f"Replica {replica.id} has no completed execution to deploy from "
                "(use force to deploy anyway)")
        missing = [i for i in replica.instances
                   if not (replica.info.get(i) or {}).get("volumes_info")]
        if missing:
            raise exceptions.InvalidState(
                f"Replica {replica.id} has no disks for: {', '.join(missing)}")
        migration = models.TransferAction(
            type=c.ACTION_TYPE_MIGRATION, project_id=project_id, user_id=user_id,
            origin_endpoint_id=replica.origin_endpoint_id,
            destination_endpoint_id=replica.destination_endpoint_id,
            instances=list(replica.instances),
            source_environment=replica.source_environment,
            destination_environment=replica.destination_environment,
            network_map=replica.network_map, storage_mappings=replica.storage_mappings,
            user_scripts=validation.user_scripts(body, replica.instances)
            if body.get("user_scripts") else replica.user_scripts,
            notes=replica.notes, replica_id=replica.id, clone_disks=clone_disks,
            origin_minion_pool_id=body.get("origin_minion_pool_id"),
            destination_minion_pool_id=body.get("destination_minion_pool_id"),
            skip_os_morphing=skip,
            instance_osmorphing_minion_pool_mappings=morph_pools,
            info={i: {k: copy.deepcopy(v) for k, v in (replica.info.get(i) or {}).items()
                      if k in _REPLICA_INFO_KEYS} for i in replica.instances},
        )
        session.add(migration)
        session.flush()
        self._start_execution(session, migration, c.EXECUTION_TYPE_REPLICA_DEPLOY,
                              {name: specs for name in migration.instances})
        return migration.id

    # ============================================================================ replicas
    def create_replica(self, ctx: RequestContext, body: dict[str, Any]) -> str:
        scenario = body.get("scenario") or "replica"
        if scenario not in ("replica", "live_migration"):
            raise exceptions.InvalidInput("'scenario' must be 'replica' or 'live_migration'")
        # The destination instance is created at deploy time, which checks the name then.
        # Its deploys' graphs are checked when deployed (OS morphing may be skipped then).
        specs = [*graphs.replica_execution_graph(shutdown_instances=True),
                 *graphs.replica_disks_delete_graph(), *graphs.replica_update_graph()]
        replica = self._new_transfer(ctx, body, c.ACTION_TYPE_REPLICA, check_name_clash=False,
                                     specs=specs)
        replica.scenario = scenario
        # Defaults of its deployments (the newer API generation's transfer fields).
        replica.clone_disks = validation.boolean(body, "clone_disks", True)
        replica.skip_os_morphing = validation.boolean(body, "skip_os_morphing", False)
        with self.db.session() as session:
            self._store_transfer(session, ctx, body, replica)
            return replica.id

    def _refuse_if_active(self, session: Session, action: models.TransferAction) -> None:
        if any(e.status in c.ACTIVE_EXECUTION_STATUSES for e in action.executions):
            raise exceptions.InvalidState(
                f"{action.type.capitalize()} {action.id} has an execution in progress")
        if action.type == c.ACTION_TYPE_REPLICA:
            deploys = session.scalars(select(models.TransferAction).where(
                models.TransferAction.replica_id == action.id,
                models.TransferAction.last_execution_status.in_(c.ACTIVE_EXECUTION_STATUSES)))
            if list(deploys):
                raise exceptions.InvalidState(
                    f"Replica {action.id} is being deployed by a running migration")

    def _replica_execution(self, ctx: RequestContext, replica_id: str, execution_type: str,
                           specs: list[graphs.TaskSpec], instances: Iterable[str] | None = None,
                           prepare: Any = None, auto_deploy: bool = False) -> str:
        with self._lock, self.db.session() as session:
            replica = transfers.get_action(session, ctx.project_id, replica_id,
                                           c.ACTION_TYPE_REPLICA)
            self._refuse_if_active(session, replica)
            if prepare is not None:
                prepare(session, replica)
            names = list(instances if instances is not None else replica.instances)
            execution = self._start_execution(session, replica, execution_type,
                                              {name: specs for name in names},
                                              auto_deploy=auto_deploy)
            execution_id = execution.id
        self._dispatch_after_commit()
        return execution_id

    def execute_replica(self, ctx: RequestContext, replica_id: str,
                        shutdown_instances: bool, auto_deploy: bool = False) -> str:
        """Start a replica execution; returns its id. With ``auto_deploy``, the transaction
        that completes it also stores and starts a deployment of the replica with its
        stored ``clone_disks``/``skip_os_morphing`` (once: a crash before that commit
        leaves neither; nothing is deployed if the execution does not complete)."""
        return self._replica_execution(ctx, replica_id, c.EXECUTION_TYPE_REPLICA_EXECUTION,
                                       graphs.replica_execution_graph(shutdown_instances),
                                       auto_deploy=auto_deploy)

    def delete_replica_disks(self, ctx: RequestContext, replica_id: str) -> str:
        with self.db.session() as session:
            replica = transfers.get_action(session, ctx.project_id, replica_id,
                                           c.ACTION_TYPE_REPLICA)
            with_disks = [i for i in replica.instances
                          if (replica.info.get(i) or {}).get("volumes_info")]
        if not with_disks:
            raise exceptions.InvalidState(f"Replica {replica_id} has no disks to delete")
        return self._replica_execution(ctx, replica_id, c.EXECUTION_TYPE_REPLICA_DISKS_DELETE,
                                       graphs.replica_disks_delete_graph(), with_disks)

    def update_replica(self, ctx: RequestContext, replica_id: str, body: dict[str, Any]) -> str:
        """Apply the new values, then run a ``replica_update`` execution that checks them
        against both platforms."""
        for key in ("origin_endpoint_id", "destination_endpoint_id", "instances"):
            if key in body:
                raise exceptions.InvalidInput(f"'{key}' of a replica cannot be changed")

        def apply(session: Session, replica: models.TransferAction) -> None:
            if "source_environment" in body:
                replica.source_environment = {
                    **replica.source_environment,
                    **validation.json_object(body, "source_environment")}
            if "destination_environment" in body:
                replica.destination_environment = {
                    **replica.destination_environment,
                    **validation.json_object(body, "destination_environment")}
            if "network_map" in body:
                replica.network_map = {**replica.network_map,
                                       **validation.json_object(body, "network_map")}
            if "storage_mappings" in body:
                replica.storage_mappings = _merge_storage_mappings(
                    replica.storage_mappings, validation.storage_mappings(body))
            if "notes" in body:
                replica.notes = body["notes"]
            if "user_scripts" in body:
                new = validation.user_scripts(body, replica.instances)
                old = replica.user_scripts or {"global": {}, "instances": {}}
                replica.user_scripts = {
                    part: {k: v for k, v in {**(old.get(part) or {}), **new[part]}.items()
                           if v is not None} for part in ("global", "instances")}
            for key in ("origin_minion_pool_id", "destination_minion_pool_id"):
                if key in body:
                    setattr(replica, key, body[key] or None)
            if "instance_osmorphing_minion_pool_mappings" in body:
                replica.instance_osmorphing_minion_pool_mappings = validation.pool_mappings(
                    body, replica.instances)
            # The defaults of its deployments (the newer API generation's transfer fields).
            replica.clone_disks = validation.boolean(body, "clone_disks", replica.clone_disks)
            replica.skip_os_morphing = validation.boolean(body, "skip_os_morphing",
                                                          replica.skip_os_morphing)
            origin = transfers.get_endpoint(session, ctx.project_id, replica.origin_endpoint_id)
            dest = transfers.get_endpoint(session, ctx.project_id,
                                          replica.destination_endpoint_id)
            self._check_environments(origin, dest, replica.source_environment,
                                     self._destination_env(replica))
            if any(k in body for k in ("origin_minion_pool_id", "destination_minion_pool_id",
                                       "instance_osmorphing_minion_pool_mappings")):
                check_transfer_pools(session, ctx.project_id, origin, dest, replica.instances,
                                     replica.origin_minion_pool_id,
                                     replica.destination_minion_pool_id,
                                     replica.instance_osmorphing_minion_pool_mappings or {})

        return self._replica_execution(ctx, replica_id, c.EXECUTION_TYPE_REPLICA_UPDATE,
                                       graphs.replica_update_graph(), prepare=apply)

    # ============================================================================ shared
    def cancel_execution(self, ctx: RequestContext, execution_id: str, force: bool) -> None:
        with self._lock, self.db.session() as session:
            self._lock_execution(session, execution_id)
            execution = transfers.get_execution(session, ctx.project_id, execution_id)
            if execution.status not in c.ACTIVE_EXECUTION_STATUSES:
                raise exceptions.InvalidState(
                    f"Execution {execution_id} is {execution.status}; only running executions "
                    "can be cancelled")
            if execution.status == c.EXECUTION_STATUS_CANCELLING and not force:
                return
            self._set_execution(session, execution, c.EXECUTION_STATUS_CANCELLING)
            for task in execution.tasks:
                if task.on_error or task.on_error_only:
                    continue  # cleanups always run
                if task.status == c.TASK_STATUS_PENDING:
                    # Not sent yet (unless another process is sending it right now: its row
                    # lock says). A CANCELLING one would never be sent: nothing to stop.
                    session.refresh(task, with_for_update=True)
                if task.status == c.TASK_STATUS_PENDING and task.process_id is not None \
                        and task.task_type in task_types.FINISH_WHEN_CANCELLED_TASK_TYPES:
                    continue  # taken over half-done: it finishes, so its cleanup knows all
                if task.status == c.TASK_STATUS_PENDING:
                    self._set_task(session, task, c.TASK_STATUS_CANCELED,
                                   "Cancelled by the user")
                elif task.status in c.ACTIVE_TASK_STATUSES:
                    self.bus.cancel(task.id, force)
                    if force:
                        self._ignored_tasks.add(task.id)
                        self._set_task(session, task, c.TASK_STATUS_FORCE_CANCELED,
                                       "Force-cancelled by the user")
                    else:
                        self._set_task(session, task, c.TASK_STATUS_CANCELLING)
            self._advance(session, execution)
        self._dispatch_pending()

    def delete_action(self, ctx: RequestContext, action_id: str) -> None:
        with self.db.session() as session:
            action = transfers.get_action(session, ctx.project_id, action_id)
            self._refuse_if_active(session, action)
            action.deleted = True
            action.deleted_at = models.utcnow()

    def delete_execution(self, ctx: RequestContext, execution_id: str) -> None:
        with self.db.session() as session:
            execution = transfers.get_execution(session, ctx.project_id, execution_id)
            if execution.status in c.ACTIVE_EXECUTION_STATUSES:
                raise exceptions.InvalidState(
                    f"Execution {execution_id} is still running; cancel it first")
            session.delete(execution)

    def endpoint_call(self, ctx: RequestContext, endpoint_id: str, operation: str,
                      env: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run ``operation`` (``ENDPOINT_OPERATIONS``) of the endpoint's provider on a worker;
        ``InvalidInput`` naming the endpoint, provider and capability if it lacks it."""
        if operation not in ENDPOINT_OPERATIONS:
            raise exceptions.InvalidInput(f"unknown endpoint operation '{operation}'")
        with self.db.reader() as session:  # no transaction open across the worker call
            endpoint = transfers.get_endpoint(session, ctx.project_id, endpoint_id)
            missing = missing_capability(registry.get_provider(endpoint.type),
                                         OPERATION_CAPABILITY[operation])
            if missing:
                raise exceptions.InvalidInput(
                    f"endpoint '{endpoint.name}': {missing} ({operation})")
            ref = self._endpoint_ref(endpoint, env or {})
            host = self._choose_worker(session, [endpoint])
        return self.bus.call(operation, ref, host=host, **kwargs)

    # ============================================================================ state machine
    def _start_execution(self, session: Session, action: models.TransferAction,
                         execution_type: str,
                         graph: dict[str, list[graphs.TaskSpec]],
                         auto_deploy: bool = False) -> models.Execution:
        number = max((e.number for e in action.executions), default=0) + 1
        execution = models.Execution(action=action, number=number, type=execution_type,
                                     status=c.EXECUTION_STATUS_RUNNING,
                                     auto_deploy=auto_deploy)
        session.add(execution)
        index = 0
        for instance, specs in graph.items():
            graphs.check_graph(specs)
            ids = {spec.key: models.new_id() for spec in specs}
            for spec in specs:
                session.add(models.Task(
                    id=ids[spec.key], execution=execution, index=index, instance=instance,
                    task_type=spec.task_type, depends_on=[ids[d] for d in spec.depends_on],
                    on_error=spec.on_error, on_error_only=spec.on_error_only,
                    status=(c.TASK_STATUS_ON_ERROR_ONLY if spec.on_error_only
                            else c.TASK_STATUS_SCHEDULED)))
                index += 1
        action.last_execution_status = c.EXECUTION_STATUS_RUNNING
        session.flush()
        if minion_needs(action, execution_type, list(graph)):
            # Nothing runs before a minion per instance is reserved (dispatch_awaiting).
            self._set_execution(session, execution,
                                c.EXECUTION_STATUS_AWAITING_MINION_ALLOCATIONS)
            self._reserve_minions(session, execution)
            return execution
        self._advance(session, execution)
        return execution

    def _reserve_minions(self, session: Session, execution: models.Execution) -> bool:
        """An execution AWAITING_MINION_ALLOCATIONS takes a minion per instance if its pool
        has them free, and runs."""
        action = execution.action
        instances = sorted({t.instance for t in execution.tasks})
        reserved = self.pools.reserve(session, action, execution.type, instances)
        pools = ", ".join(sorted(minion_needs(action, execution.type, instances)))
        if reserved is None:
            LOG.warning("execution %s: its minion pool(s) %s can give no minions",
                        execution.id, pools)
            for task in execution.tasks:
                if task.status in (c.TASK_STATUS_SCHEDULED, c.TASK_STATUS_ON_ERROR_ONLY):
                    self._set_task(session, task, c.TASK_STATUS_UNSCHEDULED,
                                   f"minion pool(s) {pools}: one is no longer ALLOCATED")
            self._set_execution(session, execution, c.EXECUTION_STATUS_ERROR_ALLOCATING_MINIONS)
            return False
        if not reserved:
            return False
        LOG.info("execution %s of %s %s got its minions", execution.id, action.type,
                 action.id)
        self._set_execution(session, execution, c.EXECUTION_STATUS_RUNNING)
        self._advance(session, execution)
        return True

    def dispatch_after_pool_change(self) -> None:
        """A pool has new or released machines: waiting executions may take them."""
        try:
            self._dispatch_pending()
        except Exception:
            LOG.exception("dispatching after a pool change failed; the monitor retries")

    def _set_task(self, session: Session, task: models.Task, status: str,
                  details: str | None = None) -> None:
        task.status = status
        if details is not None:
            task.exception_details = details

    def _set_execution(self, session: Session, execution: models.Execution, status: str) -> None:
        execution.status = status
        execution.action.last_execution_status = status

    def _advance(self, session: Session, execution: models.Execution) -> None:
        if execution.status == c.EXECUTION_STATUS_AWAITING_MINION_ALLOCATIONS:
            return  # its tasks wait for minions (_reserve_minions)
        cancelling = execution.status == c.EXECUTION_STATUS_CANCELLING
        tasks = {t.id: t for t in execution.tasks}
        step = state.advance([state.TaskState(t.id, t.status, list(t.depends_on or []),
                                              t.on_error, t.on_error_only)
                              for t in tasks.values()], cancelling)
        for task_id, status in step.changes.items():
            tasks[task_id].status = status
        status = state.execution_status([t.status for t in tasks.values()], cancelling)
        if status != execution.status:
            self._set_execution(session, execution, status)
            if status not in c.ACTIVE_EXECUTION_STATUSES:
                self._on_execution_finished(session, execution)

    def _on_execution_finished(self, session: Session, execution: models.Execution) -> None:
        action = execution.action
        LOG.info("execution %s of %s %s finished: %s", execution.id, action.type, action.id,
                 execution.status)
        if self.pools.release(session, action):
            self._pools_changed = True
        if execution.status != c.EXECUTION_STATUS_COMPLETED:
            return
        if execution.type in (c.EXECUTION_TYPE_MIGRATION, c.EXECUTION_TYPE_REPLICA_DEPLOY):
            action.transfer_result = {name: (action.info.get(name) or {}).get("transfer_result")
                                      for name in action.instances}
        if execution.type == c.EXECUTION_TYPE_REPLICA_EXECUTION and execution.auto_deploy:
            self._auto_deploy(session, execution)
        if execution.type == c.EXECUTION_TYPE_REPLICA_DEPLOY and not action.clone_disks:
            # The deployed instance now owns the replica's disks.
            replica = session.get(models.TransferAction, action.replica_id)
            if replica is not None:
                replica.info = {name: {k: v for k, v in (info or {}).items()
                                       if k != "volumes_info"}
                                for name, info in replica.info.items()}

    def _auto_deploy(self, session: Session, execution: models.Execution) -> None:
        """Deploy the replica of a COMPLETED auto_deploy execution with its stored defaults,
        in the transaction that completes the execution (so exactly once, even across a
        crash). A deployment that cannot be made now is logged and skipped; the execution
        stays COMPLETED."""
        replica = execution.action
        try:
            with session.begin_nested():
                deployment_id = self._deploy(session, replica.project_id, replica.user_id,
                                             replica, {})
        except exceptions.CoriolisError as exc:
            LOG.warning("execution %s of replica %s: auto-deploy refused: %s", execution.id,
                        replica.id, exc)
            return
        LOG.info("execution %s of replica %s completed: auto-deployed as %s", execution.id,
                 replica.id, deployment_id)

    def _dispatch_pending(self, within: Session | None = None
                          ) -> list[tuple[str, TaskMessage]]:
        """Send every PENDING task (ready, not yet sent) once the transaction that made it
        PENDING has committed; sent tasks become STARTING until a worker picks them up.
        ``within``: the caller's transaction, which made them PENDING; they are marked in it
        and the messages returned, for ``_send`` once it has committed (one transaction per
        finished task instead of two)."""
        messages: list[tuple[str, TaskMessage]] = []
        with self._lock, (contextlib.nullcontext(within) if within is not None
                          else self.db.session()) as session:
            waiting = session.scalars(select(models.Execution).where(
                models.Execution.status == c.EXECUTION_STATUS_AWAITING_MINION_ALLOCATIONS
            ).order_by(models.Execution.created_at).with_for_update(skip_locked=True))
            for execution in list(waiting):
                self._reserve_minions(session, execution)
            session.flush()
            # Another process may be sending the same tasks: each takes the rows it locked.
            tasks = session.scalars(select(models.Task).where(
                models.Task.status == c.TASK_STATUS_PENDING).with_for_update(skip_locked=True))
            for task in tasks:
                action = task.execution.action
                origin = session.get(models.Endpoint, action.origin_endpoint_id)
                dest = session.get(models.Endpoint, action.destination_endpoint_id)
                try:
                    if origin is None or dest is None:
                        raise exceptions.NoEligibleWorker(
                            "An endpoint of this transfer was deleted")
                    host = self._choose_worker(
                        session, placement.task_endpoints(task.task_type, origin, dest))
                except exceptions.NoEligibleWorker as exc:
                    LOG.warning("task %s (%s) cannot be scheduled: %s", task.id,
                                task.task_type, exc)
                    self._set_task(session, task, c.TASK_STATUS_FAILED_TO_SCHEDULE, str(exc))
                    self._advance(session, task.execution)
                    continue
                task.status, task.host = c.TASK_STATUS_STARTING, host  # handed to the bus
                task_info = copy.deepcopy(action.info.get(task.instance) or {})
                task_info.update({
                    "action_id": action.id, "replica_id": action.replica_id,
                    "clone_disks": action.clone_disks,
                    "user_scripts": action.user_scripts or {},
                })
                dest_ref = self._endpoint_ref(dest, self._destination_env(action))
                origin_ref = self._endpoint_ref(origin, action.source_environment or {})
                self._with_minion(session, task_info, origin_ref, dest_ref)
                messages.append((host, TaskMessage(
                    task_id=task.id, execution_id=task.execution_id, task_type=task.task_type,
                    instance=task.instance, origin=origin_ref,
                    destination=dest_ref, task_info=task_info)))
        if within is None:
            self._send(messages)
        return messages

    def _send(self, messages: list[tuple[str, TaskMessage]]) -> None:
        """Hand tasks ``_dispatch_pending`` marked STARTING, once committed, to the bus."""
        if self._pools_changed:
            self._pools_changed = False
            self._dispatch_pending()
        for host, message in messages:
            try:
                self.bus.dispatch(message, host)
            except Exception:
                # Not handed over: PENDING again (a copy the broker did deliver is refused by
                # the worker, whose host no longer matches), sent by the next dispatch.
                LOG.exception("sending task %s to %s failed; it is sent again later",
                              message.task_id, host)
                with self._lock, self.db.session() as session:
                    unsent = session.get(models.Task, message.task_id)
                    if unsent is not None and unsent.status == c.TASK_STATUS_STARTING \
                            and unsent.host == host:
                        unsent.status, unsent.host = c.TASK_STATUS_PENDING, None

    def _with_minion(self, session: Session, task_info: dict[str, Any],
                     origin_ref: EndpointRef, dest_ref: EndpointRef) -> None:
        """A task of an instance holding minions gets each one's address in
        ``task_info[role]`` (``source_minion``, ``destination_minion``, ``osmorphing_minion``)
        and its agent key in the connection info of its side (the source's for the
        ``SOURCE_ROLES``) at the role's ``minions.transfers.KEY_REFS`` (sent, never
        stored)."""
        for role, key_ref in KEY_REFS.items():
            held = task_info.get(role)
            if not held:
                continue
            secrets = self.pools.minion_secrets(session, held["machine_id"])
            if not secrets:
                task_info.pop(role, None)
                continue
            task_info[role] = {**held, "url": secrets["url"],
                               "fingerprint": secrets["fingerprint"]}
            ref = origin_ref if role in SOURCE_ROLES else dest_ref
            ref.connection_info = {**ref.connection_info,
                                   key_ref.split(".")[0]: {"key": secrets["key"]}}

    # ============================================================================ worker events
    def _task_event(self, task_id: str, apply: Any, transition: bool = False) -> None:
        """Apply one worker report in its own transaction; after a transition (the task
        ended), dispatch whatever became ready."""
        if task_id in self._ignored_tasks:
            return
        messages: list[tuple[str, TaskMessage]] = []
        with self._lock:
            with self.db.session() as session:
                execution_id = session.scalar(select(models.Task.execution_id).where(
                    models.Task.id == task_id))
                if execution_id is None:
                    return
                self._lock_execution(session, execution_id)
                task = session.get(models.Task, task_id)
                if task is None:
                    return
                if transition and task.status in c.FINAL_TASK_STATUSES:
                    # e.g. force-cancelled (perhaps by another process), or taken over
                    # after its worker was marked down: the late report changes nothing.
                    LOG.info("ignoring a late report for task %s (%s)", task_id, task.status)
                    return
                apply(session, task)
                if transition:
                    messages = self._dispatch_within(session)
            if transition:
                self._send(messages)

    def _dispatch_within(self, session: Session) -> list[tuple[str, TaskMessage]]:
        """``_dispatch_pending`` in ``session`` (a worker's report), in a savepoint: if it
        fails, the report still commits and the tasks stay PENDING for the worker monitor."""
        try:
            with session.begin_nested():
                return self._dispatch_pending(within=session)
        except Exception:
            LOG.exception("choosing workers for the next tasks failed; the worker monitor "
                          "sends them later")
            return []

    def task_started(self, task_id: str, host: str, process_id: int) -> None:
        def apply(session: Session, task: models.Task) -> None:
            if task.host not in (None, host):
                LOG.warning("task %s started on %s but belongs to %s; ignored", task_id,
                            host, task.host)
                return
            if task.status in (c.TASK_STATUS_PENDING, c.TASK_STATUS_STARTING):
                task.status = c.TASK_STATUS_RUNNING
            task.host, task.process_id = host, process_id
            # Every phase reports from its first second: an event when it starts (in this
            # transaction rather than a report of its own).
            session.add(models.TaskEvent(task_id=task.id, index=len(task.events),
                                         level=c.TASK_EVENT_INFO,
                                         message=f"{task.task_type} started on {host}"))
        self._task_event(task_id, apply)

    def task_progress(self, task_id: str, current_step: int, total_steps: int | None,
                      message: str) -> None:
        def apply(session: Session, task: models.Task) -> None:
            updates = task.progress_updates
            last = updates[-1] if updates else None
            if (last is not None and last.total_steps == total_steps
                    and (last.message or "").split(":")[0] == message.split(":")[0]):
                last.current_step, last.message = current_step, message
                last.updated_at = models.utcnow()
            else:
                session.add(models.TaskProgressUpdate(
                    task_id=task.id, index=len(updates), current_step=current_step,
                    total_steps=total_steps, message=message))
        self._task_event(task_id, apply)

    def task_event(self, task_id: str, level: str, message: str) -> None:
        def apply(session: Session, task: models.Task) -> None:
            session.add(models.TaskEvent(task_id=task.id, index=len(task.events), level=level,
                                         message=message))
        self._task_event(task_id, apply)

    def task_completed(self, task_id: str, result: dict[str, Any]) -> None:
        def apply(session: Session, task: models.Task) -> None:
            action = task.execution.action
            info = dict(action.info or {})
            info[task.instance] = {**(info.get(task.instance) or {}), **(result or {})}
            action.info = info
            # A task that finished while being cancelled still completed: cleanups need its
            # result; the execution being CANCELLING skips what would have followed.
            self._set_task(session, task, c.TASK_STATUS_COMPLETED)
            self._advance(session, task.execution)
        self._task_event(task_id, apply, transition=True)

    def task_failed(self, task_id: str, error: str) -> None:
        def apply(session: Session, task: models.Task) -> None:
            LOG.warning("task %s (%s, %s) failed: %s", task.id, task.task_type, task.instance,
                        error)
            self._set_task(session, task, c.TASK_STATUS_ERROR, error)
            self._advance(session, task.execution)
        self._task_event(task_id, apply, transition=True)

    def task_canceled(self, task_id: str, forced: bool) -> None:
        def apply(session: Session, task: models.Task) -> None:
            self._set_task(session, task, c.TASK_STATUS_FORCE_CANCELED if forced
                           else c.TASK_STATUS_CANCELED, "Cancelled by the user")
            self._advance(session, task.execution)
        self._task_event(task_id, apply, transition=True)


def _refuse_if_uncommitted(replica: models.TransferAction) -> None:
    """A replica whose disks hold writes that were neither committed nor rolled back (an
    execution that ended before its commit or roll-back completed) is not deployed (409)."""
    uncommitted = [name for name in replica.instances
                   if any(v.get("snapshot") or v.get("pending")
                          for v in (replica.info.get(name) or {}).get("volumes_info") or [])]
    if not uncommitted:
        return
    last = max((e for e in replica.executions if e.type == c.EXECUTION_TYPE_REPLICA_EXECUTION),
               key=lambda e: e.number, default=None)
    which = f"execution {last.number} ({last.id}, {last.status})" if last else "an execution"
    raise exceptions.Conflict(
        f"Replica {replica.id} cannot be deployed: the disks of {', '.join(uncommitted)} hold "
        f"writes of {which} that were neither committed nor rolled back; execute the replica "
        "again (it first rolls them back) and deploy once an execution completes")


def _merge_storage_mappings(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old or {})
    if new.get("default"):
        merged["default"] = new["default"]
    for key, ident in (("backend_mappings", "source"), ("disk_mappings", "disk_id")):
        items = {m[ident]: m for m in merged.get(key) or []}
        items.update({m[ident]: m for m in new.get(key) or []})
        if items:
            merged[key] = list(items.values())
    return merged
