"""The pool manager: the only writer of minion pool and machine state.

Pool statuses (server-contract §6.1) and their transitions, each recorded as a pool event:

- create → DEALLOCATED, then (unless ``skip_allocation``) allocate;
- allocate (from DEALLOCATED) → VALIDATING_INPUTS → ALLOCATING_SHARED_RESOURCES →
  ALLOCATING_MACHINES (``minimum_minions`` machines) → ALLOCATED; any failure → ERROR;
- deallocate (from ALLOCATED or ERROR; any status with ``force``) → DEALLOCATING_MACHINES →
  DEALLOCATING_SHARED_RESOURCES → DEALLOCATED; without ``force`` refused (409) while a
  transfer holds a machine, with ``force`` those transfers are cancelled first;
- update only while DEALLOCATED, delete only while DEALLOCATED or ERROR (an ERROR pool's
  leftovers are removed first, then the row).

Provider work (validation, shared resources, machines) runs through the bus on a worker
that may reach the pool's endpoint (``scheduling.placement``, the endpoint's regions), never in
the API. A pool's running operation is stored (``MinionPool.operation``), so that a restarted
server (``start``) runs it again: every step is safe to repeat (machines are named by their id,
a machine found half-made is deleted and made again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from coriolis import constants as c
from coriolis import exceptions
from coriolis.context import RequestContext
from coriolis.db import models, transfers
from coriolis.db.session import Database
from coriolis.engine import validation
from coriolis.minions.steps import STEP_OF_OPERATION
from coriolis.providers import registry
from coriolis.providers.base import Capability, MinionPoolProvider, missing_capability
from coriolis.scheduling import placement, pool_upkeep
from coriolis.secrets.box import SecretBox

if TYPE_CHECKING:
    from coriolis.bus.base import TaskBus
    from coriolis.engine.conductor import Conductor

LOG = logging.getLogger(__name__)

OP_ALLOCATE, OP_REFRESH, OP_DEALLOCATE, OP_FORCE_DEALLOCATE, OP_DELETE = (
    "allocate", "refresh", "deallocate", "force_deallocate", "delete")
# Statuses a crash may leave a machine in while the upkeep held it (``_claim``).
CLAIMED_STATUSES = (c.MINION_STATUS_HEALTHCHECKING, c.MINION_STATUS_POWERING_OFF)
# Machines that count towards the pool's size (not being removed or broken).
LIVE_MACHINE_STATUSES = frozenset({c.MINION_STATUS_ALLOCATING, c.MINION_STATUS_AVAILABLE,
                                   c.MINION_STATUS_IN_USE, c.MINION_STATUS_HEALTHCHECKING,
                                   c.MINION_STATUS_POWERING_OFF})
CREATE_PARALLELISM = 4


SLOW_OPERATIONS = frozenset({"set_up_pool_shared_resources", "create_minion",
                             "power_on_minion"})
"""Provider calls that may build an image or boot a machine (a libvirt minion under TCG)."""
SLOW_CALL_TIMEOUT = 1800.0
WORKER_WATCH_INTERVAL = 2.0
"""Seconds between two looks at the heart-beat of the worker running a pool step."""


def serving(pool: models.MinionPool) -> bool:
    """Whether transfers may take the pool's machines: ALLOCATED, or being refreshed."""
    return (pool.status, pool.operation) in ((c.POOL_STATUS_ALLOCATED, None),
                                             (c.POOL_STATUS_MAINTENANCE, OP_REFRESH))


class _Superseded(Exception):
    """The pool's operation changed (a forced deallocation) while a step ran."""


class PoolManager:
    def __init__(self, db: Database, box: SecretBox, bus: TaskBus, conductor: Conductor,
                 clock: Callable[[], Any] = models.utcnow, call_timeout: float = 120.0) -> None:
        """``clock``: naive-UTC ``datetime`` now (injectable for the idle-time tests)."""
        self.db, self.box, self.bus, self.conductor = db, box, bus, conductor
        self.clock = clock
        self.call_timeout = call_timeout
        self._lock = threading.RLock()
        self._threads: dict[str, threading.Thread] = {}
        self._machine_locks: dict[str, threading.Lock] = {}
        self._growing: set[str] = set()
        self._grow_lock = threading.Lock()
        # The bus calls of pool steps, each watched for its worker's death (``_call``).
        self._calls = ThreadPoolExecutor(16, thread_name_prefix="pool-call")

    # ============================================================================ life cycle
    def start(self) -> None:
        """Run again the operations a previous process left unfinished; machines it was
        checking or powering off are AVAILABLE again (the next upkeep retires them again)."""
        with self._lock, self.db.session() as session:
            session.execute(update(models.MinionMachine).where(
                models.MinionMachine.allocation_status.in_(CLAIMED_STATUSES)
            ).values(allocation_status=c.MINION_STATUS_AVAILABLE))
        with self.db.reader() as session:
            ids = list(session.scalars(select(models.MinionPool.id).where(
                models.MinionPool.operation.is_not(None))))
        for pool_id in ids:
            self._spawn(pool_id)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for the running pool operations (tests, shutdown)."""
        for thread in list(self._threads.values()):
            thread.join(timeout)

    # ============================================================================ helpers
    @staticmethod
    def get(session: Session, project_id: str, pool_id: str) -> models.MinionPool:
        pool = session.get(models.MinionPool, pool_id)
        if pool is None or pool.project_id != project_id:
            raise exceptions.NotFound(f"Minion pool {pool_id} could not be found")
        return pool

    @staticmethod
    def event(session: Session, pool: models.MinionPool, message: str,
              level: str = "INFO") -> None:
        session.add(models.MinionPoolEvent(pool_id=pool.id, index=len(pool.events),
                                           level=level, message=message))
        session.flush()
        session.refresh(pool, ["events"])

    def _set_status(self, session: Session, pool: models.MinionPool, status: str,
                    detail: str = "") -> None:
        if pool.status == status and not detail:
            return
        old, pool.status = pool.status, status
        level = "ERROR" if status == c.POOL_STATUS_ERROR else "INFO"
        self.event(session, pool, f"Pool status {old} -> {status}"
                   + (f": {detail}" if detail else ""), level)

    def _call(self, which: str, operation: str, /, **kwargs: Any) -> Any:
        """Provider ``operation`` (a step of ``minions.steps``) for pool ``which``'s
        endpoint, on a worker that may reach it (its regions). A worker that stops
        heart-beating while it runs the step (its process died) is given up: the step, safe
        to repeat, is sent to another eligible worker."""
        timeout = self.call_timeout
        if operation in SLOW_OPERATIONS:
            timeout = max(timeout, SLOW_CALL_TIMEOUT)
        deadline = time.monotonic() + timeout
        while True:
            with self.db.reader() as session:
                pool = session.get(models.MinionPool, which)
                if pool is None:
                    raise exceptions.NotFound(f"Minion pool {which} could not be found")
                endpoint = session.get(models.Endpoint, pool.endpoint_id)
                if endpoint is None:
                    raise exceptions.InvalidState(f"the endpoint of minion pool {which} is "
                                                  "gone")
                ref = self.conductor._endpoint_ref(endpoint,
                                                   dict(pool.environment_options or {}))
                host = self.conductor._choose_worker(session, [endpoint])
            left = max(1.0, deadline - time.monotonic())
            future = self._calls.submit(self.bus.call, operation, ref, timeout=left, host=host,
                                        **kwargs)
            while True:
                try:
                    return future.result(WORKER_WATCH_INTERVAL)
                except FutureTimeout:
                    pass
                if not self._worker_alive(host):
                    break
            LOG.warning("minion pool %s: worker %s stopped heart-beating during %s; sending it "
                        "to another worker", which, host, STEP_OF_OPERATION.get(operation))
            if time.monotonic() > deadline:
                raise exceptions.ProviderError(
                    f"{STEP_OF_OPERATION.get(operation, operation)}: no worker finished it "
                    f"within {timeout:g} s")

    def _worker_alive(self, host: str) -> bool:
        with self.db.reader() as session:
            return host in {s.host for s in placement.live_workers(
                session, self.conductor.worker_down_after, self.conductor.local_host)}

    # ============================================================================ API
    def _check_definition(self, session: Session, project_id: str,
                          values: dict[str, Any]) -> tuple[models.Endpoint, MinionPoolProvider]:
        """The fields of a new or updated pool; ``InvalidInput`` naming the field."""
        try:
            endpoint = transfers.get_endpoint(session, project_id, values["endpoint_id"])
        except exceptions.NotFound as exc:
            raise exceptions.InvalidInput(f"minion_pool.endpoint_id: {exc}") from None
        provider = registry.get_provider(endpoint.type)
        missing = missing_capability(provider, Capability.MINION_POOL)
        if missing:
            raise exceptions.InvalidInput(
                f"minion_pool.endpoint_id: endpoint '{endpoint.name}': {missing}; it has no "
                "minion pools")
        assert isinstance(provider, MinionPoolProvider)
        if values["platform"] == "source" and values["os_type"] != "linux":
            raise exceptions.InvalidInput(
                "minion_pool.os_type: a source pool must be 'linux' (its minions export the "
                "disks)")
        if values["platform"] not in provider.minion_pool_platforms:
            raise exceptions.InvalidInput(
                f"minion_pool.platform: provider '{endpoint.type}' makes no "
                f"{values['platform']} pools (only "
                f"{', '.join(sorted(provider.minion_pool_platforms))})")
        if values["minimum_minions"] > values["maximum_minions"]:
            raise exceptions.InvalidInput(
                f"minion_pool.minimum_minions ({values['minimum_minions']}) is greater than "
                f"maximum_minions ({values['maximum_minions']})")
        validation.against_schema(values["environment_options"],
                                  provider.minion_pool_environment_schema(),
                                  "minion_pool.environment_options")
        return endpoint, provider

    def _validate_on_worker(self, session: Session, endpoint: models.Endpoint,
                            values: dict[str, Any]) -> None:
        ref = self.conductor._endpoint_ref(endpoint, dict(values["environment_options"]))
        host = self.conductor._choose_worker(session, [endpoint])
        try:
            self.bus.call("validate_minion_pool_options", ref, timeout=self.call_timeout,
                          host=host, pool_platform=values["platform"],
                          os_type=values["os_type"])
        except exceptions.InvalidInput as exc:
            raise exceptions.InvalidInput(f"minion_pool: {exc}") from None

    def create(self, ctx: RequestContext, body: dict[str, Any]) -> str:
        """Body: ``MinionPoolCreate``; returns the new pool's id (its allocation runs in
        the background unless ``skip_allocation``)."""
        minimum = body.get("minimum_minions") or 1
        values = {
            "name": body["name"], "endpoint_id": body["endpoint_id"],
            "platform": body["platform"], "os_type": body["os_type"],
            "environment_options": body.get("environment_options") or {},
            "minimum_minions": minimum,
            "maximum_minions": body.get("maximum_minions") or minimum,
            "minion_max_idle_time": body.get("minion_max_idle_time") or 1,
            "minion_retention_strategy": body.get("minion_retention_strategy") or "delete",
            "notes": body.get("notes"),
        }
        with self.db.reader() as session:
            endpoint, _ = self._check_definition(session, ctx.project_id, values)
            self._validate_on_worker(session, endpoint, values)
        with self._lock, self.db.session() as session:
            pool = models.MinionPool(project_id=ctx.project_id, user_id=ctx.user_id,
                                     status=c.POOL_STATUS_DEALLOCATED, **values)
            session.add(pool)
            session.flush()
            self.event(session, pool, f"Pool created ({pool.status})")
            pool_id = pool.id
        if not body.get("skip_allocation"):
            self.allocate(ctx, pool_id)
        return pool_id

    def update(self, ctx: RequestContext, pool_id: str, body: dict[str, Any]) -> None:
        """Only while DEALLOCATED (409 otherwise); ``endpoint_id``/``platform`` are not in
        the update body (``MinionPoolUpdate`` refuses them)."""
        with self._lock:
            with self.db.reader() as session:
                pool = self.get(session, ctx.project_id, pool_id)
                self._refuse_unless(pool, {c.POOL_STATUS_DEALLOCATED}, "updated",
                                    "deallocate it first")
                values = {k: getattr(pool, k) for k in (
                    "name", "endpoint_id", "platform", "os_type", "environment_options",
                    "minimum_minions", "maximum_minions", "minion_max_idle_time",
                    "minion_retention_strategy", "notes")}
                values.update(body)
                endpoint, _ = self._check_definition(session, ctx.project_id, values)
                self._validate_on_worker(session, endpoint, values)
            with self.db.session() as session:
                pool = self.get(session, ctx.project_id, pool_id)
                self._refuse_unless(pool, {c.POOL_STATUS_DEALLOCATED}, "updated",
                                    "deallocate it first")
                for key, value in body.items():
                    setattr(pool, key, value)
                pool.updated_at = models.utcnow()
                self.event(session, pool, f"Pool updated: {', '.join(sorted(body)) or '-'}")

    @staticmethod
    def _refuse_unless(pool: models.MinionPool, statuses: set[str], verb: str,
                       hint: str) -> None:
        if pool.status not in statuses or pool.operation is not None:
            what = pool.operation or pool.status
            raise exceptions.Conflict(
                f"Minion pool {pool.id} is {what}; it can be {verb} only when "
                f"{' or '.join(sorted(statuses))} ({hint})")

    @staticmethod
    def _users(pool: models.MinionPool) -> list[str]:
        return sorted({m.allocated_action for m in pool.machines
                       if m.allocation_status == c.MINION_STATUS_IN_USE and m.allocated_action})

    def delete(self, ctx: RequestContext, pool_id: str) -> None:
        """Only DEALLOCATED or ERROR (409 otherwise, or while a transfer holds a machine);
        an ERROR pool's machines and shared resources are removed first, in the
        background, then the pool."""
        with self._lock, self.db.session() as session:
            pool = self.get(session, ctx.project_id, pool_id)
            self._refuse_unless(pool, {c.POOL_STATUS_DEALLOCATED, c.POOL_STATUS_ERROR},
                                "deleted", "deallocate it first")
            users = self._users(pool)
            if users:
                raise exceptions.Conflict(
                    f"Minion pool {pool_id} is in use by transfer(s) {', '.join(users)}")
            if pool.machines or pool.shared_resources:
                pool.operation = OP_DELETE
                self.event(session, pool, "Pool deletion requested: removing its leftovers")
            else:
                session.delete(pool)
                return
        self._spawn(pool_id)

    def allocate(self, ctx: RequestContext, pool_id: str) -> None:
        with self._lock, self.db.session() as session:
            pool = self.get(session, ctx.project_id, pool_id)
            self._refuse_unless(pool, {c.POOL_STATUS_DEALLOCATED}, "allocated",
                                "deallocate it first")
            pool.operation = OP_ALLOCATE
            self.event(session, pool, "Allocation requested")
        self._spawn(pool_id)

    def deallocate(self, ctx: RequestContext, pool_id: str, force: bool) -> None:
        """From ALLOCATED or ERROR; with ``force`` from any status but DEALLOCATED (an
        allocation running stops at its next step), and the transfers holding machines are
        cancelled; without it, 409 while one does."""
        with self._lock, self.db.session() as session:
            pool = self.get(session, ctx.project_id, pool_id)
            if pool.status == c.POOL_STATUS_DEALLOCATED and pool.operation is None:
                raise exceptions.Conflict(f"Minion pool {pool_id} is already DEALLOCATED")
            if not force:
                self._refuse_unless(pool, {c.POOL_STATUS_ALLOCATED, c.POOL_STATUS_ERROR},
                                    "deallocated", "or use --force")
                users = self._users(pool)
                if users:
                    raise exceptions.Conflict(
                        f"Minion pool {pool_id} is in use by transfer(s) {', '.join(users)}; "
                        "deallocating it needs --force, which cancels them")
            users = self._users(pool)
            pool.operation = OP_FORCE_DEALLOCATE if force else OP_DEALLOCATE
            self.event(session, pool, "Deallocation requested" + (" (forced)" if force else ""))
        for action_id in users:
            self._cancel_transfer(pool.project_id, action_id)
        self._spawn(pool_id)

    def _cancel_transfer(self, project_id: str, action_id: str) -> None:
        with self.db.reader() as session:
            ids = list(session.scalars(select(models.Execution.id).where(
                models.Execution.action_id == action_id,
                models.Execution.status.in_(c.ACTIVE_EXECUTION_STATUSES))))
        ctx = RequestContext(user_id=None, project_id=project_id, roles=("admin",))
        for execution_id in ids:
            try:
                self.conductor.cancel_execution(ctx, execution_id, False)
            except exceptions.CoriolisError:
                LOG.exception("cancelling execution %s failed", execution_id)

    def refresh(self, ctx: RequestContext, pool_id: str) -> None:
        """Only while ALLOCATED (409 otherwise): in the background, as the pool's stored
        operation (run again after a restart), ALLOCATED → IN_MAINTENANCE: health-check the
        machines, replace the dead, apply the retention strategy, refill to the minimum →
        ALLOCATED. Transfers keep taking the machines not being checked meanwhile."""
        with self._lock, self.db.session() as session:
            pool = self.get(session, ctx.project_id, pool_id)
            self._refuse_unless(pool, {c.POOL_STATUS_ALLOCATED}, "refreshed",
                                "allocate it first")
            pool.operation = OP_REFRESH
            self.event(session, pool, "Refresh requested")
            self._set_status(session, pool, c.POOL_STATUS_MAINTENANCE)
        self._spawn(pool_id)

    def _refresh(self, pool_id: str) -> None:
        self.upkeep_pool(pool_id, healthcheck=True, op=OP_REFRESH)
        self._finish(pool_id, OP_REFRESH)

    # ============================================================================ flows
    def _finish(self, pool_id: str, op: str) -> None:
        """Operation ``op`` (allocate, refresh) ended: ALLOCATED, unless superseded."""
        with self._lock, self.db.session() as session:
            pool = session.get(models.MinionPool, pool_id)
            if pool is None or pool.operation != op:
                raise _Superseded()
            pool.operation = None
            self._set_status(session, pool, c.POOL_STATUS_ALLOCATED)

    def _spawn(self, pool_id: str) -> None:
        with self._lock:
            thread = self._threads.get(pool_id)
            if thread is not None and thread.is_alive():
                return  # the running loop picks the new operation up
            thread = threading.Thread(target=self._run, args=(pool_id,),
                                      name=f"pool-{pool_id[:8]}", daemon=True)
            self._threads[pool_id] = thread
            thread.start()

    def _operation(self, pool_id: str) -> str | None:
        with self.db.reader() as session:
            pool = session.get(models.MinionPool, pool_id)
            return None if pool is None else pool.operation

    def _run(self, pool_id: str) -> None:
        """Run the pool's operation until none is left (a forced deallocation may replace
        an allocation midway)."""
        while True:
            op = self._operation(pool_id)
            if op is None:
                with self._lock:
                    if self._operation(pool_id) is None:
                        self._threads.pop(pool_id, None)
                        return
                continue
            try:
                if op == OP_ALLOCATE:
                    self._allocate(pool_id)
                elif op == OP_REFRESH:
                    self._refresh(pool_id)
                else:
                    self._deallocate(pool_id, op)
            except _Superseded:
                continue
            except Exception as exc:
                LOG.exception("minion pool %s: %s failed", pool_id, op)
                with self._lock, self.db.session() as session:
                    pool = session.get(models.MinionPool, pool_id)
                    if pool is None:
                        return
                    if pool.operation != op:
                        continue
                    pool.operation = None
                    self._set_status(session, pool, c.POOL_STATUS_ERROR,
                                     f"{op} failed: {_reason(exc)}")

    def _step(self, pool_id: str, op: str, status: str) -> models.MinionPool | None:
        with self._lock, self.db.session() as session:
            pool = session.get(models.MinionPool, pool_id)
            if pool is None or pool.operation != op:
                raise _Superseded()
            self._set_status(session, pool, status)
            return None

    def _allocate(self, pool_id: str) -> None:
        op = OP_ALLOCATE
        self._step(pool_id, op, c.POOL_STATUS_VALIDATING_INPUTS)
        with self.db.reader() as session:
            pool = session.get(models.MinionPool, pool_id)
            assert pool is not None
            platform, os_type = pool.platform, pool.os_type
        self._call(pool_id, "validate_minion_pool_options", pool_platform=platform,
                   os_type=os_type)
        self._step(pool_id, op, c.POOL_STATUS_ALLOCATING_SHARED_RESOURCES)
        shared = self._call(pool_id, "set_up_pool_shared_resources", pool_id=pool_id)
        with self._lock, self.db.session() as session:
            pool = session.get(models.MinionPool, pool_id)
            assert pool is not None
            pool.shared_resources = shared
        self._step(pool_id, op, c.POOL_STATUS_ALLOCATING_MACHINES)
        self._fill(pool_id, op)
        self._finish(pool_id, op)

    def _fill(self, pool_id: str, op: str | None, target: int | None = None) -> int:
        """Make machines until the pool has ``target`` (its minimum) live ones; a machine
        left ALLOCATING by an interrupted run is removed and made again. Returns how many
        were made; raises the first failure once all attempts ended."""
        with self._lock, self.db.session() as session:
            pool = session.get(models.MinionPool, pool_id)
            assert pool is not None
            stale = [m.id for m in pool.machines
                     if m.allocation_status == c.MINION_STATUS_ALLOCATING
                     and m.id not in self._machine_locks]
            live = [m for m in pool.machines if m.allocation_status in LIVE_MACHINE_STATUSES
                    and m.id not in stale]
            count = max(0, (target or pool.minimum_minions) - len(live))
            count = min(count, pool.maximum_minions - len(live))
            new = []
            for _ in range(count):
                machine = models.MinionMachine(pool_id=pool_id,
                                               allocation_status=c.MINION_STATUS_ALLOCATING)
                session.add(machine)
                session.flush()
                new.append(machine.id)
                self._machine_locks[machine.id] = threading.Lock()
        for machine_id in stale:
            self._delete_machine(pool_id, machine_id, force=True)
        if not new:
            return 0
        errors: list[Exception] = []
        with ThreadPoolExecutor(min(CREATE_PARALLELISM, len(new))) as pool_exec:
            for result in pool_exec.map(lambda m: self._create_machine(pool_id, m), new):
                if result is not None:
                    errors.append(result)
        if errors:
            raise errors[0]
        return len(new)

    def _create_machine(self, pool_id: str, machine_id: str) -> Exception | None:
        try:
            with self.db.reader() as session:
                pool = session.get(models.MinionPool, pool_id)
                assert pool is not None
                shared = pool.shared_resources
            made = self._call(pool_id, "create_minion", pool_id=pool_id,
                              machine_id=machine_id, shared_resources=shared)
        except Exception as exc:
            LOG.exception("minion %s of pool %s could not be made", machine_id, pool_id)
            with self._lock, self.db.session() as session:
                machine = session.get(models.MinionMachine, machine_id)
                if machine is not None:
                    machine.allocation_status = c.MINION_STATUS_ERROR_DEPLOYING
                    self.event(session, machine.pool,
                               f"Minion {machine_id} could not be made: {_reason(exc)}",
                               "ERROR")
            return exc
        finally:
            self._machine_locks.pop(machine_id, None)
        with self._lock, self.db.session() as session:
            machine = session.get(models.MinionMachine, machine_id)
            if machine is None:
                return None
            machine.provider_properties = made.get("provider_properties") or {}
            machine.secrets_encrypted = self.box.encrypt_json(made.get("connection_info") or {})
            machine.allocation_status = c.MINION_STATUS_AVAILABLE
            machine.power_status = c.MINION_POWER_ON
            machine.last_used_at = self.clock()
            self.event(session, machine.pool, f"Minion {machine_id} is up")
        return None

    def _delete_machine(self, pool_id: str, machine_id: str, force: bool) -> None:
        with self.db.reader() as session:
            machine = session.get(models.MinionMachine, machine_id)
            if machine is None:
                return
            props = dict(machine.provider_properties or {})
        try:
            self._call(pool_id, "delete_minion", pool_id=pool_id, machine_id=machine_id,
                       provider_properties=props)
        except Exception as exc:
            if not force:
                raise
            with self._lock, self.db.session() as session:
                pool = session.get(models.MinionPool, pool_id)
                if pool is not None:
                    self.event(session, pool, f"Minion {machine_id} could not be removed "
                               f"(ignored): {_reason(exc)}", "WARNING")
        with self._lock, self.db.session() as session:
            machine = session.get(models.MinionMachine, machine_id)
            if machine is not None:
                pool = machine.pool
                session.delete(machine)
                session.flush()
                session.refresh(pool, ["machines"])
                self.event(session, pool, f"Minion {machine_id} removed")

    def _deallocate(self, pool_id: str, op: str) -> None:
        force = op in (OP_FORCE_DEALLOCATE, OP_DELETE)
        self._step(pool_id, op, c.POOL_STATUS_DEALLOCATING_MACHINES)
        self._wait_released(pool_id)
        with self.db.reader() as session:
            pool = session.get(models.MinionPool, pool_id)
            assert pool is not None
            machines = [m.id for m in pool.machines]
        errors = []
        for machine_id in machines:
            try:
                self._delete_machine(pool_id, machine_id, force)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        self._step(pool_id, op, c.POOL_STATUS_DEALLOCATING_SHARED_RESOURCES)
        with self.db.reader() as session:
            pool = session.get(models.MinionPool, pool_id)
            assert pool is not None
            shared = pool.shared_resources
        try:
            self._call(pool_id, "tear_down_pool_shared_resources", pool_id=pool_id,
                       shared_resources=shared)
        except Exception:
            if not force:
                raise
            LOG.exception("minion pool %s: tearing down shared resources failed", pool_id)
        with self._lock, self.db.session() as session:
            pool = session.get(models.MinionPool, pool_id)
            if pool is None or pool.operation != op:
                raise _Superseded()
            pool.shared_resources = None
            pool.operation = None
            self._set_status(session, pool, c.POOL_STATUS_DEALLOCATED)
            if op == OP_DELETE:
                session.delete(pool)

    # ============================================================================ transfers
    def reserve(self, session: Session, action: models.TransferAction, execution_type: str,
                instances: list[str]) -> bool | None:
        """In the caller's (the conductor's) transaction: the minions an execution of
        ``execution_type`` needs (``minions.transfers.minion_needs``: one AVAILABLE,
        powered-on machine of each pool per instance it serves there), all or none. On
        success the machines are IN_USE by the action and each instance's info names its
        machine per role (``source_minion``, ``destination_minion``, ``osmorphing_minion``:
        machine and pool ids, no secret); otherwise nothing changes and the pools short of
        machines grow (or wake powered-off ones) in the background. None when a pool can no
        longer give any (gone, or no longer ALLOCATED)."""
        from coriolis.minions.transfers import minion_needs

        plan = []
        short = False
        for pool_id, wanted in sorted(minion_needs(action, execution_type, instances).items()):
            pool = session.get(models.MinionPool, pool_id)
            if pool is None or not serving(pool):
                return None
            # Locked until the caller commits (PostgreSQL): the upkeep's conditional updates
            # (``_claim``) wait for them and then see them taken.
            machines = list(session.scalars(select(models.MinionMachine).where(
                models.MinionMachine.pool_id == pool.id).order_by(models.MinionMachine.id)
                .with_for_update()))
            free = [m for m in machines if m.allocation_status == c.MINION_STATUS_AVAILABLE
                    and m.power_status == c.MINION_POWER_ON
                    and m.id not in self._machine_locks]
            if len(free) < len(wanted):
                self._grow_for(pool, machines, len(wanted) - len(free))
                short = True
                continue
            plan.append((pool, list(zip(sorted(wanted.items()), free, strict=False))))
        if short:
            return False
        info = dict(action.info or {})
        now = self.clock()
        for pool, pairs in plan:
            for (instance, roles), machine in pairs:
                machine.allocation_status = c.MINION_STATUS_IN_USE
                machine.allocated_action, machine.allocated_instance = action.id, instance
                machine.last_used_at = now
                held = {"machine_id": machine.id, "pool_id": pool.id}
                info[instance] = {**(info.get(instance) or {}),
                                  **{role: held for role in roles}}
                session.add(models.MinionPoolEvent(
                    pool_id=pool.id, index=len(pool.events), level="INFO",
                    message=f"Minion {machine.id} reserved for {action.type} {action.id} "
                            f"({instance}: {', '.join(r.split('_')[0] for r in roles)})"))
                session.flush()
                session.refresh(pool, ["events"])
        action.info = info
        return True

    def _grow_for(self, pool: models.MinionPool, machines: list[models.MinionMachine],
                  missing: int) -> None:
        """``missing`` more free machines wanted of ``pool``: wake powered-off ones, make
        new ones up to its maximum (in the background)."""
        live = sum(1 for m in machines if m.allocation_status in LIVE_MACHINE_STATUSES)
        # Being made, or being health-checked (free again in a moment).
        busy = sum(1 for m in machines if m.allocation_status in (
            c.MINION_STATUS_ALLOCATING, c.MINION_STATUS_HEALTHCHECKING))
        asleep = [m.id for m in machines if m.allocation_status == c.MINION_STATUS_AVAILABLE
                  and m.power_status == c.MINION_POWER_OFF]
        missing -= busy
        wake = asleep[:max(0, missing)]
        target = min(pool.maximum_minions, live + missing - len(wake))
        if wake or target > live:
            self._grow(pool.id, target, wake)

    def release(self, session: Session, action: models.TransferAction) -> int:
        """In the caller's transaction: the action's machines become AVAILABLE again (their
        idle time starts now); returns how many were released."""
        machines = list(session.scalars(select(models.MinionMachine).where(
            models.MinionMachine.allocated_action == action.id)))
        now = self.clock()
        for machine in machines:
            if machine.allocation_status == c.MINION_STATUS_IN_USE:
                machine.allocation_status = c.MINION_STATUS_AVAILABLE
            machine.allocated_action = machine.allocated_instance = None
            machine.last_used_at = now
            pool = machine.pool
            session.add(models.MinionPoolEvent(
                pool_id=pool.id, index=len(pool.events), level="INFO",
                message=f"Minion {machine.id} released by {action.type} {action.id}"))
            session.flush()
            session.refresh(pool, ["events"])
        from coriolis.minions.transfers import KEY_REFS

        action.info = {name: {k: v for k, v in (info or {}).items() if k not in KEY_REFS}
                       for name, info in (action.info or {}).items()}
        return len(machines)

    def minion_secrets(self, session: Session, machine_id: str) -> dict[str, Any] | None:
        machine = session.get(models.MinionMachine, machine_id)
        if machine is None or not machine.secrets_encrypted:
            return None
        secrets = self.box.decrypt_json(machine.secrets_encrypted)
        return secrets if isinstance(secrets, dict) else None

    def _grow(self, pool_id: str, target: int, wake: list[str]) -> None:
        """In the background: power on the ``wake`` machines and make machines up to
        ``target``, then let waiting executions take them
        (``Conductor.dispatch_after_pool_change``)."""
        # Called in the conductor's transaction: never wait here for the manager's lock,
        # which its threads hold while they wait for the database (a deadlock).
        with self._grow_lock:
            if pool_id in self._growing:
                return
            self._growing.add(pool_id)

        def run() -> None:
            try:
                for machine_id in wake:
                    self._power_on(pool_id, machine_id)
                self._fill(pool_id, None, target)
            except Exception:
                LOG.exception("growing minion pool %s failed", pool_id)
            finally:
                with self._grow_lock:
                    self._growing.discard(pool_id)
            self.conductor.dispatch_after_pool_change()

        threading.Thread(target=run, name=f"pool-grow-{pool_id[:8]}", daemon=True).start()

    def _wait_released(self, pool_id: str, timeout: float = 120.0) -> None:
        """Until the transfers cancelled by a forced deallocation released their machines
        (their cleanups ran), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db.reader() as session:
                pool = session.get(models.MinionPool, pool_id)
                if pool is None or not self._users(pool):
                    return
            time.sleep(0.2)

    # ============================================================================ upkeep
    def upkeep_pool(self, pool_id: str, healthcheck: bool, op: str | None = None) -> None:
        """One pool's upkeep (``scheduling.pool_upkeep``): health-check the available
        machines and replace the dead ones, apply the retention strategy to those idle
        longer than ``minion_max_idle_time``, refill to the minimum. Only ALLOCATED pools
        with no operation running (``op``: that of the caller, a refresh)."""
        with self.db.reader() as session:
            pool = session.get(models.MinionPool, pool_id)
            if pool is None or pool.operation != op or pool.status not in (
                    c.POOL_STATUS_ALLOCATED, c.POOL_STATUS_MAINTENANCE):
                return
            idle_limit = pool.minion_max_idle_time
            strategy = pool.minion_retention_strategy
            minimum = pool.minimum_minions
            available = [(m.id, m.last_used_at, m.power_status, dict(m.provider_properties),
                          m.secrets_encrypted) for m in pool.machines
                         if m.allocation_status == c.MINION_STATUS_AVAILABLE]
            live = [m for m in pool.machines if m.allocation_status in LIVE_MACHINE_STATUSES]
        now = self.clock()
        dead, checked = [], []
        if healthcheck:
            for machine_id, _, power, props, secret in available:
                # Out of circulation while checked: no transfer takes it meanwhile (nor
                # does the check then mark dead, and delete, a machine a transfer holds).
                if power != c.MINION_POWER_ON or not self._claim(
                        machine_id, c.MINION_STATUS_HEALTHCHECKING):
                    continue
                try:
                    self._call(pool_id, "healthcheck_minion", pool_id=pool_id,
                               machine_id=machine_id, provider_properties=props,
                               minion_connection_info=self.box.decrypt_json(secret)
                               if secret else {})
                except Exception as exc:
                    dead.append(machine_id)
                    self._mark(pool_id, machine_id, c.MINION_STATUS_ERROR,
                               f"Minion {machine_id} failed its health check: {_reason(exc)}",
                               expect=c.MINION_STATUS_HEALTHCHECKING)
                    continue
                checked.append(machine_id)
                self._mark(pool_id, machine_id, c.MINION_STATUS_AVAILABLE, None,
                           expect=c.MINION_STATUS_HEALTHCHECKING)
        for machine_id in dead:
            self._delete_machine(pool_id, machine_id, force=True)
        idle = [(m, used) for m, used, power, _, _ in available
                if m not in dead and power == c.MINION_POWER_ON]
        for machine_id, action in pool_upkeep.retention(
                idle, now, idle_limit, strategy, len(live) - len(dead) - minimum):
            if action == "delete":
                if not self._claim(machine_id, c.MINION_STATUS_DEALLOCATING):
                    continue  # a transfer took it since
                self._mark(pool_id, machine_id, c.MINION_STATUS_DEALLOCATING,
                           f"Minion {machine_id} idle for over {idle_limit} s: deleted")
                self._delete_machine(pool_id, machine_id, force=True)
            elif self._claim(machine_id, c.MINION_STATUS_POWERING_OFF):
                self._power_off(pool_id, machine_id, idle_limit)
                checked.append(machine_id)  # asleep now: a waiting transfer may wake it
        if self._fill(pool_id, None) or dead or checked:
            self.conductor.dispatch_after_pool_change()

    def _claim(self, machine_id: str, status: str) -> bool:
        """Take an AVAILABLE, powered-on machine out of circulation (``status``:
        HEALTHCHECKING, POWERING_OFF or DEALLOCATING) in one conditional update, so that a
        transfer's reservation (``reserve``, which locks the rows it takes) and the upkeep
        never both act on it. False when it is no longer AVAILABLE (a transfer took it)."""
        with self._lock, self.db.session() as session:
            result = session.execute(update(models.MinionMachine).where(
                models.MinionMachine.id == machine_id,
                models.MinionMachine.allocation_status == c.MINION_STATUS_AVAILABLE,
                models.MinionMachine.power_status == c.MINION_POWER_ON,
            ).values(allocation_status=status))
            return bool(getattr(result, "rowcount", 0) == 1)

    def _mark(self, pool_id: str, machine_id: str, status: str, message: str | None,
              expect: str | None = None) -> None:
        """Set a machine's allocation status (only if it is ``expect``, when given), with
        ``message`` as a pool event."""
        with self._lock, self.db.session() as session:
            machine = session.get(models.MinionMachine, machine_id)
            if machine is None or (expect is not None and machine.allocation_status != expect):
                return
            machine.allocation_status = status
            if message:
                self.event(session, machine.pool, message,
                           "WARNING" if status == c.MINION_STATUS_ERROR else "INFO")

    def _power_off(self, pool_id: str, machine_id: str, idle_limit: int) -> None:
        with self.db.reader() as session:
            machine = session.get(models.MinionMachine, machine_id)
            if machine is None:
                return
            props = dict(machine.provider_properties)
        try:
            props = self._call(pool_id, "power_off_minion", pool_id=pool_id,
                               machine_id=machine_id, provider_properties=props)
            status, power = c.MINION_STATUS_AVAILABLE, c.MINION_POWER_OFF
            message = f"Minion {machine_id} idle for over {idle_limit} s: powered off"
        except Exception as exc:
            status, power = c.MINION_STATUS_POWER_ERROR, c.MINION_POWER_UNKNOWN
            message = f"Minion {machine_id} could not be powered off: {_reason(exc)}"
        with self._lock, self.db.session() as session:
            machine = session.get(models.MinionMachine, machine_id)
            if machine is None or machine.allocation_status != c.MINION_STATUS_POWERING_OFF:
                return
            machine.provider_properties, machine.power_status = props, power
            machine.allocation_status = status
            self.event(session, machine.pool, message)

    def _power_on(self, pool_id: str, machine_id: str) -> None:
        with self.db.reader() as session:
            machine = session.get(models.MinionMachine, machine_id)
            if machine is None:
                return
            props = dict(machine.provider_properties)
        try:
            made = self._call(pool_id, "power_on_minion", pool_id=pool_id,
                              machine_id=machine_id, provider_properties=props)
        except Exception as exc:
            self._mark(pool_id, machine_id, c.MINION_STATUS_POWER_ERROR,
                       f"Minion {machine_id} could not be powered on: {_reason(exc)}")
            return
        with self._lock, self.db.session() as session:
            machine = session.get(models.MinionMachine, machine_id)
            if machine is None:
                return
            machine.provider_properties = made.get("provider_properties") or {}
            machine.secrets_encrypted = self.box.encrypt_json(made.get("connection_info") or {})
            machine.power_status = c.MINION_POWER_ON
            machine.last_used_at = self.clock()
            self.event(session, machine.pool, f"Minion {machine_id} powered on")

    def upkeep(self) -> None:
        """Every ALLOCATED pool's upkeep (the scheduler calls this periodically)."""
        with self.db.reader() as session:
            ids = list(session.scalars(select(models.MinionPool.id).where(
                models.MinionPool.status == c.POOL_STATUS_ALLOCATED,
                models.MinionPool.operation.is_(None))))
        for pool_id in ids:
            try:
                self.upkeep_pool(pool_id, healthcheck=True)
            except Exception:
                LOG.exception("upkeep of minion pool %s failed", pool_id)


def _reason(exc: BaseException) -> str:
    """An error's message for an event (provider errors name things, never secrets)."""
    if isinstance(exc, exceptions.CoriolisError):
        return str(exc)
    return type(exc).__name__

