"""Endpoints and what is listed through them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from coriolisclient import base, exceptions

# Managers define a method named `list`, which shadows the builtin in annotations.
Resources = list[base.Resource]


def _env_query(env: dict[str, Any] | None, options: list[str] | None = None) -> str:
    parts = []
    if env:
        parts.append(f"env={base.b64url_json(env)}")
    if options:
        parts.append(f"options={base.b64url_json(options)}")
    return ("?" + "&".join(parts)) if parts else ""


class EndpointManager(base.Manager):
    def list(self) -> Resources:
        return self._list("/endpoints", "endpoints")

    def get(self, endpoint: Any) -> base.Resource:
        return self._get(f"/endpoints/{base.getid(endpoint)}", "endpoint")

    def create(self, name: str, endpoint_type: str, connection_info: dict[str, Any],
               description: str | None = None, regions: Sequence[str] | None = None
               ) -> base.Resource:
        return self._post("/endpoints", {"endpoint": {
            "name": name, "type": endpoint_type, "description": description,
            "connection_info": connection_info, "mapped_regions": list(regions or [])}}, "endpoint")

    def update(self, endpoint: Any, updated_values: dict[str, Any]) -> base.Resource | None:
        return self._put(f"/endpoints/{base.getid(endpoint)}", {"endpoint": updated_values},
                         "endpoint")

    def delete(self, endpoint: Any) -> None:
        self._delete(f"/endpoints/{base.getid(endpoint)}")

    def validate_connection(self, endpoint: Any) -> tuple[bool, str | None]:
        data = self._post(f"/endpoints/{base.getid(endpoint)}/actions",
                          {"validate-connection": None}, None)["validate-connection"]
        return data["valid"], data.get("message")

    def get_endpoint_id_for_name(self, endpoint: str) -> str:
        """A UUID is used as is; a name is looked up (exactly one match)."""
        try:
            uuid.UUID(str(endpoint))
            return str(endpoint)
        except ValueError:
            pass
        matches = [e.id for e in self.list() if e.name == endpoint]
        if not matches:
            raise exceptions.EndpointIDNotFound(f"No endpoint found with name '{endpoint}'")
        if len(matches) > 1:
            raise exceptions.NoUniqueEndpointNameMatch(
                f"More than one endpoint is named '{endpoint}': {', '.join(matches)}; "
                "use its ID")
        return matches[0]


class EndpointInstanceManager(base.Manager):
    def list(self, endpoint: Any, env: dict[str, Any] | None = None, marker: str | None = None,
             limit: int | None = None, name: str | None = None) -> Resources:
        query = {k: v for k, v in (("marker", marker), ("limit", limit), ("name", name))
                 if v is not None}
        if env is not None:
            query["env"] = base.b64url_json(env)
        url = f"/endpoints/{base.getid(endpoint)}/instances"
        return self._list(url + ("?" + urlencode(query) if query else ""), "instances")

    def get(self, endpoint: Any, instance_id: str | None = None,
            env: dict[str, Any] | None = None) -> base.Resource:
        return self._get(f"/endpoints/{base.getid(endpoint)}/instances/"
                         f"{base.b64url(instance_id or '')}{_env_query(env)}", "instance")


class EndpointNetworkManager(base.Manager):
    def list(self, endpoint: Any, environment: dict[str, Any] | None = None
             ) -> Resources:
        return self._list(f"/endpoints/{base.getid(endpoint)}/networks"
                          f"{_env_query(environment)}", "networks")


class EndpointStorageManager(base.Manager):
    def list(self, endpoint: Any, environment: dict[str, Any] | None = None
             ) -> Resources:
        return self._list(f"/endpoints/{base.getid(endpoint)}/storage"
                          f"{_env_query(environment)}", "storage", "storage_backends")

    def get_default(self, endpoint: Any, environment: dict[str, Any] | None = None
                    ) -> str | None:
        data = self._json("GET", f"/endpoints/{base.getid(endpoint)}/storage"
                                 f"{_env_query(environment)}")
        return data["storage"].get("config_default")


class EndpointOptionsManager(base.Manager):
    path = ""
    key = ""

    def list(self, endpoint: Any, environment: dict[str, Any] | None = None,
             option_names: list[str] | None = None) -> Resources:
        return self._list(f"/endpoints/{base.getid(endpoint)}/{self.path}"
                          f"{_env_query(environment, option_names)}", self.key)


def options_manager(api: Any, path: str, key: str) -> EndpointOptionsManager:
    manager = EndpointOptionsManager(api)
    manager.path, manager.key = path, key
    return manager
