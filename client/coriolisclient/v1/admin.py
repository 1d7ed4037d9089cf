"""Providers, regions, worker services, minion pools and diagnostics."""

from __future__ import annotations

from typing import Any

from coriolisclient import base
from coriolisclient.v1 import waiter

# Managers define a method named `list`, which shadows the builtin in annotations.
Resources = list[base.Resource]

SCHEMA_TYPES = {"connection": 16, "destination": 4, "source": 8,
                "source_minion_pool": 524288, "destination_minion_pool": 1048576}


class ProvidersManager(base.Manager):
    def list(self) -> base.Resource:
        data = self._json("GET", "/providers")["providers"]
        return base.Resource(self, {"providers_list": [
            {"name": name, "types": value.get("types", [])} for name, value in data.items()]},
            loaded=True)

    def schemas_list(self, provider_name: str, provider_type: int) -> base.Resource:
        data = self._json("GET", f"/providers/{provider_name}/schemas/{provider_type}")
        return base.Resource(self, {"provider_schemas": [
            {"type": key, "schema": value} for key, value in data["schemas"].items()]},
            loaded=True)


class _CrudManager(base.Manager):
    collection = ""
    key = ""

    def list(self) -> Resources:
        return self._list(f"/{self.collection}", self.collection)

    def get(self, obj: Any) -> base.Resource:
        return self._get(f"/{self.collection}/{base.getid(obj)}", self.key)

    def update(self, obj: Any, updated_values: dict[str, Any]) -> base.Resource | None:
        return self._put(f"/{self.collection}/{base.getid(obj)}", {self.key: updated_values},
                         self.key)

    def delete(self, obj: Any) -> None:
        self._delete(f"/{self.collection}/{base.getid(obj)}")


class RegionManager(_CrudManager):
    collection, key = "regions", "region"

    def create(self, name: str, description: str = "", enabled: bool | None = True
               ) -> base.Resource:
        body: dict[str, Any] = {"name": name, "description": description}
        if enabled is not None:
            body["enabled"] = enabled
        return self._post("/regions", {"region": body}, "region")


class ServiceManager(_CrudManager):
    collection, key = "services", "service"

    def create(self, host: str, binary: str, topic: str, regions: list[str] | None = None,
               enabled: bool | None = True) -> base.Resource:
        body: dict[str, Any] = {"host": host, "binary": binary, "topic": topic,
                                "mapped_regions": regions or []}
        if enabled is not None:
            body["enabled"] = enabled
        return self._post("/services", {"service": body}, "service")


class MinionPoolManager(_CrudManager):
    collection, key = "minion_pools", "minion_pool"

    def create(self, name: str, endpoint: Any, platform: str, os_type: str,
               environment_options: dict[str, Any], minimum_minions: int | None = None,
               maximum_minions: int | None = None, minion_max_idle_time: int | None = None,
               minion_retention_strategy: str | None = None, notes: str | None = None,
               skip_allocation: bool = False) -> base.Resource:
        body: dict[str, Any] = {"name": name, "endpoint_id": base.getid(endpoint),
                                "platform": platform, "os_type": os_type,
                                "environment_options": environment_options,
                                "skip_allocation": skip_allocation}
        for key, value in (("minimum_minions", minimum_minions),
                           ("maximum_minions", maximum_minions),
                           ("minion_max_idle_time", minion_max_idle_time),
                           ("minion_retention_strategy", minion_retention_strategy)):
            if value is not None:
                body[key] = value
        if notes:
            body["notes"] = notes
        return self._post("/minion_pools", {"minion_pool": body}, "minion_pool")

    def _action(self, pool: Any, body: dict[str, Any]) -> base.Resource:
        data = self._post(f"/minion_pools/{base.getid(pool)}/actions", body, None)
        return base.Resource(self, data["minion_pool"], loaded=True)

    def allocate_minion_pool(self, pool: Any) -> base.Resource:
        return self._action(pool, {"allocate": None})

    def refresh_minion_pool(self, pool: Any) -> base.Resource:
        return self._action(pool, {"refresh": None})

    def deallocate_minion_pool(self, pool: Any, force: bool = False) -> base.Resource:
        return self._action(pool, {"deallocate": {"force": force}})

    def wait(self, pool: Any, interval: float = 2.0, timeout: float | None = None,
             on_update: Any = None) -> base.Resource:
        """Poll until the pool settles (ALLOCATED or DEALLOCATED) and return it; raises
        ``waiter.OperationFailed`` on ERROR (with the pool's last error event) or
        ``waiter.WaitTimeout`` after ``timeout`` seconds."""
        return waiter.wait(lambda: self.get(pool), lambda p: p.status,
                           f"minion pool {base.getid(pool)}", waiter.POOL_FINAL,
                           waiter.POOL_SUCCESS, interval, timeout, on_update,
                           waiter.pool_reason)


class DiagnosticsManager(base.Manager):
    def get(self, obj_id: Any = None) -> Resources:  # type: ignore[override]
        return self._list("/diagnostics", "diagnostics")
