"""Resources (JSON objects with attribute access) and the generic manager every resource
manager builds on."""

from __future__ import annotations

import base64
import json
from typing import Any

from keystoneauth1 import adapter
from keystoneauth1 import exceptions as ks_exceptions

from coriolisclient import exceptions


def b64url(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return base64.urlsafe_b64encode(data).decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value))


def getid(obj: Any) -> Any:
    return getattr(obj, "id", obj)


class Resource:
    """A server object. Attributes are its JSON keys. An object built from a create/update
    answer is not "loaded": reading a key it lacks fetches it once with ``manager.get``."""

    def __init__(self, manager: Manager | None, info: dict[str, Any],
                 loaded: bool = False) -> None:
        self.manager = manager
        self._info = dict(info)
        self._loaded = loaded

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "manager":
            raise AttributeError(name)
        if name in self._info:
            return self._info[name]
        if not self._loaded and self.manager is not None and "id" in self._info:
            self._loaded = True
            fresh = self.manager.get(self._info["id"])
            if fresh is not None:
                self._info.update(fresh._info)
            if name in self._info:
                return self._info[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._info)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._info.get('id', '')}>"


class Manager:
    """GET/POST/PUT/DELETE helpers over a keystoneauth1 adapter."""

    resource_class: type[Resource] = Resource

    def __init__(self, api: adapter.Adapter) -> None:
        self.api = api

    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            return self.api.request(url, method, raise_exc=True, **kwargs)
        except ks_exceptions.Unauthorized as exc:
            raise exceptions.HTTPAuthError(
                f"Failed to authorize Keystone session: {exc}") from exc

    def _json(self, method: str, url: str, body: Any = None) -> Any:
        kwargs = {"json": body} if body is not None else {}
        resp = self._request(method, url, **kwargs)
        return resp.json() if resp.content else None

    def _get(self, url: str, key: str) -> Resource:
        return self.resource_class(self, self._json("GET", url)[key], loaded=True)

    def _list(self, url: str, key: str, values_key: str | None = None) -> list[Resource]:
        data = self._json("GET", url)[key]
        if values_key and isinstance(data, dict):
            data = data.get(values_key, [])
        return [self.resource_class(self, item, loaded=True) for item in data or [] if item]

    def _post(self, url: str, body: Any, key: str | None) -> Any:
        data = self._json("POST", url, body)
        if key is None:
            return data
        return self.resource_class(self, data[key]) if data and data.get(key) else None

    def _put(self, url: str, body: Any, key: str) -> Resource | None:
        data = self._json("PUT", url, body)
        return self.resource_class(self, data[key]) if data and data.get(key) else None

    def _delete(self, url: str) -> None:
        self._request("DELETE", url)

    def get(self, obj_id: Any) -> Resource | None:  # overridden where lazy loading applies
        return None


def catalog_url(session: Any, service_type: str, error: type[Exception]) -> str:
    """The public URL of ``service_type`` in the session's catalog, or ``error``."""
    try:
        url = session.get_endpoint(service_type=service_type, interface="public")
    except Exception as exc:  # keystoneauth raises several catalog errors
        raise error(f"No '{service_type}' service in the catalog: {exc}") from None
    if not url:
        raise error(f"No '{service_type}' service in the catalog")
    return url.rstrip("/")
