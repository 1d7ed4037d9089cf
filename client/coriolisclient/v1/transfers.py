"""Migrations, deployments, replicas, replica executions and schedules."""

from __future__ import annotations

from typing import Any

from coriolisclient import base
from coriolisclient.v1 import waiter

# Managers define a method named `list`, which shadows the builtin in annotations.
Resources = list[base.Resource]


def _transfer_body(origin_endpoint_id: str, destination_endpoint_id: str,
                   source_environment: dict[str, Any] | None,
                   destination_environment: dict[str, Any], instances: list[str],
                   network_map: dict[str, Any] | None, notes: str | None,
                   storage_mappings: dict[str, Any] | None,
                   user_scripts: dict[str, Any] | None) -> dict[str, Any]:
    """Fields common to new migrations and replicas; like upstream, an empty network map or
    storage mappings fall back to the destination environment's."""
    return {
        "origin_endpoint_id": origin_endpoint_id,
        "destination_endpoint_id": destination_endpoint_id,
        "destination_environment": destination_environment, "instances": instances,
        "network_map": network_map or destination_environment.get("network_map") or {},
        "notes": notes,
        "storage_mappings": (storage_mappings
                             or destination_environment.get("storage_mappings") or {}),
        "user_scripts": user_scripts or {"global": {}, "instances": {}},
        **({"source_environment": source_environment} if source_environment else {}),
    }


def _pools(origin: str | None, destination: str | None,
           mappings: dict[str, str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if origin is not None:
        body["origin_minion_pool_id"] = origin
    if destination is not None:
        body["destination_minion_pool_id"] = destination
    if mappings:
        body["instance_osmorphing_minion_pool_mappings"] = mappings
    return body


def _deploy_options(clone_disks: bool, force: bool, skip_os_morphing: bool,
                    user_scripts: dict[str, Any] | None, origin: str | None,
                    destination: str | None,
                    mappings: dict[str, str] | None) -> dict[str, Any]:
    """The body of a deploy (of a replica or a transfer) but the id of what it deploys; the
    pool ids only when given, the OS-morphing mappings whenever not None (even empty, as
    upstream's client sends them)."""
    body = {"clone_disks": clone_disks, "force": force, "skip_os_morphing": skip_os_morphing,
            "user_scripts": user_scripts, **_pools(origin, destination, None)}
    if mappings is not None:
        body["instance_osmorphing_minion_pool_mappings"] = mappings
    return body


class _ActionManager(base.Manager):
    collection = ""
    key = ""

    def list(self, detail: bool = False) -> Resources:
        return self._list(f"/{self.collection}{'/detail' if detail else ''}", self.collection)

    def get(self, obj: Any) -> base.Resource:
        return self._get(f"/{self.collection}/{base.getid(obj)}", self.key)

    def delete(self, obj: Any) -> None:
        self._delete(f"/{self.collection}/{base.getid(obj)}")

    def cancel(self, obj: Any, force: bool = False) -> None:
        self._post(f"/{self.collection}/{base.getid(obj)}/actions",
                   {"cancel": {"force": force}}, None)

    def wait(self, obj: Any, interval: float = 2.0, timeout: float | None = None,
             on_update: Any = None) -> base.Resource:
        """Poll until the migration (deployment) is COMPLETED and return it; raises
        ``waiter.OperationFailed`` (ERROR, CANCELED...: the failing task's reason) or
        ``waiter.WaitTimeout`` after ``timeout`` seconds. ``on_update(resource)`` sees each
        poll (every ``interval`` seconds)."""
        return waiter.wait(lambda: self.get(obj), lambda r: r.last_execution_status,
                           f"{self.key} {base.getid(obj)}", interval=interval,
                           timeout=timeout, on_update=on_update)

    def create_from_replica(self, replica_id: str, clone_disks: bool = True,
                            force: bool = False, skip_os_morphing: bool = False,
                            user_scripts: dict[str, Any] | None = None,
                            instance_osmorphing_minion_pool_mappings: dict[str, str] | None = None,
                            origin_minion_pool_id: str | None = None,
                            destination_minion_pool_id: str | None = None) -> base.Resource:
        """Deploy a replica. The pool ids are sent (as ``origin_minion_pool_id`` and
        ``destination_minion_pool_id``, upstream's keys) only when given."""
        body = {"replica_id": replica_id, **_deploy_options(
            clone_disks, force, skip_os_morphing, user_scripts, origin_minion_pool_id,
            destination_minion_pool_id, instance_osmorphing_minion_pool_mappings)}
        return self._post(f"/{self.collection}", {self.key: body}, self.key)


class MigrationManager(_ActionManager):
    collection, key = "migrations", "migration"

    def create(self, origin_endpoint_id: str, destination_endpoint_id: str,
               source_environment: dict[str, Any] | None,
               destination_environment: dict[str, Any], instances: list[str],
               network_map: dict[str, Any] | None = None, notes: str | None = None,
               storage_mappings: dict[str, Any] | None = None, skip_os_morphing: bool = False,
               replication_count: int | None = None, shutdown_instances: bool | None = None,
               user_scripts: dict[str, Any] | None = None,
               origin_minion_pool_id: str | None = None,
               destination_minion_pool_id: str | None = None,
               instance_osmorphing_minion_pool_mappings: dict[str, str] | None = None
               ) -> base.Resource:
        body = _transfer_body(origin_endpoint_id, destination_endpoint_id, source_environment,
                              destination_environment, instances, network_map, notes,
                              storage_mappings, user_scripts)
        body["skip_os_morphing"] = skip_os_morphing
        if shutdown_instances is not None:
            body["shutdown_instances"] = shutdown_instances
        if replication_count is not None:
            body["replication_count"] = replication_count
        body.update(_pools(origin_minion_pool_id, destination_minion_pool_id,
                           instance_osmorphing_minion_pool_mappings))
        return self._post("/migrations", {"migration": body}, "migration")


class DeploymentManager(_ActionManager):
    collection, key = "deployments", "deployment"

    def create_from_transfer(self, transfer_id: str, clone_disks: bool = True,
                             force: bool = False, skip_os_morphing: bool = False,
                             user_scripts: dict[str, Any] | None = None,
                             instance_osmorphing_minion_pool_mappings: dict[str, str] | None
                             = None, origin_minion_pool_id: str | None = None,
                             destination_minion_pool_id: str | None = None) -> base.Resource:
        """Deploy a transfer (the newer generation's body: ``transfer_id``); the pool ids
        are sent only when given."""
        body = {"transfer_id": transfer_id, **_deploy_options(
            clone_disks, force, skip_os_morphing, user_scripts, origin_minion_pool_id,
            destination_minion_pool_id, instance_osmorphing_minion_pool_mappings)}
        return self._post("/deployments", {"deployment": body}, "deployment")


class ReplicaManager(_ActionManager):
    collection, key = "replicas", "replica"

    def create(self, origin_endpoint_id: str, destination_endpoint_id: str,
               source_environment: dict[str, Any] | None,
               destination_environment: dict[str, Any], instances: list[str],
               replica_scenario: str = "replica", network_map: dict[str, Any] | None = None,
               notes: str | None = None, storage_mappings: dict[str, Any] | None = None,
               origin_minion_pool_id: str | None = None,
               destination_minion_pool_id: str | None = None,
               instance_osmorphing_minion_pool_mappings: dict[str, str] | None = None,
               user_scripts: dict[str, Any] | None = None) -> base.Resource:
        body = _transfer_body(origin_endpoint_id, destination_endpoint_id, source_environment,
                              destination_environment, instances, network_map, notes,
                              storage_mappings, user_scripts)
        body["scenario"] = replica_scenario
        body.update(_pools(origin_minion_pool_id, destination_minion_pool_id,
                           instance_osmorphing_minion_pool_mappings))
        return self._post(f"/{self.collection}", {self.key: body}, self.key)

    def update(self, replica: Any, updated_values: dict[str, Any]) -> base.Resource | None:
        data = self._json("PUT", f"/{self.collection}/{base.getid(replica)}",
                          {self.key: updated_values})
        return base.Resource(None, data["execution"], loaded=True)

    def delete_disks(self, replica: Any) -> base.Resource:
        data = self._post(f"/{self.collection}/{base.getid(replica)}/actions",
                          {"delete-disks": None}, None)
        return base.Resource(None, data["execution"], loaded=True)


class ReplicaExecutionManager(base.Manager):
    collection = "replicas"

    def list(self, replica: Any) -> Resources:
        return self._list(f"/{self.collection}/{base.getid(replica)}/executions", "executions")

    def get(self, replica: Any, execution: Any = None) -> base.Resource:  # type: ignore[override]
        return self._get(f"/{self.collection}/{base.getid(replica)}/executions/"
                         f"{base.getid(execution)}", "execution")

    def create(self, replica: Any, shutdown_instances: bool = False) -> base.Resource:
        data = self._post(f"/{self.collection}/{base.getid(replica)}/executions",
                          {"execution": self._execution_body(shutdown_instances)}, None)
        return base.Resource(None, data["execution"], loaded=True)

    def wait(self, replica: Any, execution: Any, interval: float = 2.0,
             timeout: float | None = None, on_update: Any = None) -> base.Resource:
        """Poll until the execution is COMPLETED and return it; raises
        ``waiter.OperationFailed`` with the failing task's reason, or ``waiter.WaitTimeout``
        after ``timeout`` seconds."""
        return waiter.wait(lambda: self.get(replica, execution), lambda r: r.status,
                           f"execution {base.getid(execution)}", interval=interval,
                           timeout=timeout, on_update=on_update)

    def _execution_body(self, shutdown_instances: bool) -> dict[str, Any]:
        return {"shutdown_instances": shutdown_instances}

    def cancel(self, replica: Any, execution: Any, force: bool = False) -> None:
        self._post(f"/{self.collection}/{base.getid(replica)}/executions/{base.getid(execution)}"
                   "/actions", {"cancel": {"force": force}}, None)

    def delete(self, replica: Any, execution: Any) -> None:
        self._delete(f"/{self.collection}/{base.getid(replica)}/executions/{base.getid(execution)}")


class ReplicaScheduleManager(base.Manager):
    collection = "replicas"

    def list(self, replica: Any, hide_expired: bool = False) -> Resources:
        query = "?show_expired=False" if hide_expired else ""
        return self._list(f"/{self.collection}/{base.getid(replica)}/schedules{query}", "schedules")

    def get(self, replica: Any, schedule: Any = None) -> base.Resource:  # type: ignore[override]
        return self._get(f"/{self.collection}/{base.getid(replica)}/schedules/"
                         f"{base.getid(schedule)}", "schedule")

    def create(self, replica: Any, schedule: dict[str, int], enabled: bool,
               expiration_date: Any, shutdown_instance: bool) -> base.Resource:
        body: dict[str, Any] = {"schedule": schedule, "enabled": enabled,
                                "shutdown_instance": shutdown_instance}
        if expiration_date:
            body["expiration_date"] = _iso(expiration_date)
        data = self._post(f"/{self.collection}/{base.getid(replica)}/schedules", body, None)
        return base.Resource(None, data["schedule"], loaded=True)

    def update(self, replica_id: Any, schedule_id: Any, updated_values: dict[str, Any]
               ) -> base.Resource:
        values = dict(updated_values)
        if values.get("expiration_date"):
            values["expiration_date"] = _iso(values["expiration_date"])
        data = self._json("PUT", f"/{self.collection}/{base.getid(replica_id)}/schedules/"
                                 f"{base.getid(schedule_id)}", values)
        return base.Resource(None, data["schedule"], loaded=True)

    def delete(self, replica: Any, schedule: Any) -> None:
        self._delete(f"/{self.collection}/{base.getid(replica)}/schedules/{base.getid(schedule)}")


def _iso(value: Any) -> str:
    """A datetime (naive = UTC) as ``YYYY-MM-DDTHH:MM:SSZ``; strings pass through."""
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the newer API generation: transfers (replicas) and their deployments ------------------
class TransferManager(ReplicaManager):
    """``/transfers``: the replicas, by the newer generation's name (key ``transfer``)."""

    collection, key = "transfers", "transfer"

    def create(self, origin_endpoint_id: str, destination_endpoint_id: str,  # type: ignore[override]
               source_environment: dict[str, Any] | None,
               destination_environment: dict[str, Any], instances: list[str],
               transfer_scenario: str = "replica", network_map: dict[str, Any] | None = None,
               notes: str | None = None, storage_mappings: dict[str, Any] | None = None,
               origin_minion_pool_id: str | None = None,
               destination_minion_pool_id: str | None = None,
               instance_osmorphing_minion_pool_mappings: dict[str, str] | None = None,
               user_scripts: dict[str, Any] | None = None, clone_disks: bool = True,
               skip_os_morphing: bool = False) -> base.Resource:
        """``scenario`` is ``replica`` or ``live_migration``; ``clone_disks`` and
        ``skip_os_morphing`` are the defaults of the transfer's deployments."""
        body = _transfer_body(origin_endpoint_id, destination_endpoint_id, source_environment,
                              destination_environment, instances, network_map, notes,
                              storage_mappings, user_scripts)
        body.update({"scenario": transfer_scenario, "clone_disks": clone_disks,
                     "skip_os_morphing": skip_os_morphing})
        body.update(_pools(origin_minion_pool_id, destination_minion_pool_id,
                           instance_osmorphing_minion_pool_mappings))
        return self._post("/transfers", {"transfer": body}, "transfer")


class TransferExecutionManager(ReplicaExecutionManager):
    collection = "transfers"

    def create(self, replica: Any, shutdown_instances: bool = False,  # type: ignore[override]
               auto_deploy: bool = False) -> base.Resource:
        """``auto_deploy``: once the execution completes, the server deploys the transfer
        with its stored ``clone_disks``/``skip_os_morphing``."""
        data = self._post(f"/{self.collection}/{base.getid(replica)}/executions",
                          {"execution": {"shutdown_instances": shutdown_instances,
                                         "auto_deploy": auto_deploy}}, None)
        return base.Resource(None, data["execution"], loaded=True)


class TransferScheduleManager(ReplicaScheduleManager):
    collection = "transfers"

    def create(self, replica: Any, schedule: dict[str, int], enabled: bool,
               expiration_date: Any, shutdown_instance: bool,
               auto_deploy: bool = False) -> base.Resource:
        """As a replica's, plus ``auto_deploy`` (each scheduled execution deploys the
        transfer once it completes)."""
        body: dict[str, Any] = {"schedule": schedule, "enabled": enabled,
                                "shutdown_instance": shutdown_instance,
                                "auto_deploy": auto_deploy}
        if expiration_date:
            body["expiration_date"] = _iso(expiration_date)
        data = self._post(f"/{self.collection}/{base.getid(replica)}/schedules", body, None)
        return base.Resource(None, data["schedule"], loaded=True)
