"""Schemas: valid JSON Schema with a declared draft, the fixture's values valid against them,
and the API refusing a bad value with a 400 that names the field."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import requests

from coriolis.harness import RunningServer
from coriolis.providers.base import BaseProvider, Capability
from coriolis.transfer.options import with_transfer_options
from tests.providers.backends import JSON, Backend
from tests.providers.conftest import need
from tests.providers.kit import assert_no_secret

# A value of another JSON type for each type a property may declare.
WRONG = {"string": 12345, "integer": "x", "number": "x", "boolean": "x", "object": "x",
         "array": "x", "null": "x"}


def schemas(provider: BaseProvider) -> dict[str, JSON]:
    """Each schema method the provider's capabilities give, by name."""
    found = {"connection_info_schema": provider.connection_info_schema()}
    for method in ("source_environment_schema", "destination_environment_schema",
                   "minion_pool_environment_schema"):
        if hasattr(provider, method):
            found[method] = getattr(provider, method)()
    return found


def test_schemas_are_json_schema_with_a_draft(provider: BaseProvider) -> None:
    for name, schema in schemas(provider).items():
        assert isinstance(schema.get("$schema"), str), f"{name} declares no $schema draft"
        cls = jsonschema.validators.validator_for(schema, default=None)
        assert cls is not None, f"{name}: unknown draft {schema['$schema']}"
        cls.check_schema(schema)
        assert schema.get("type") == "object", f"{name} is not an object schema"


def _validate(value: JSON, schema: JSON) -> None:
    jsonschema.validators.validator_for(schema)(schema).validate(value)


def test_the_backend_values_are_valid(provider: BaseProvider, backend: Backend) -> None:
    _validate(backend.connection_info(), provider.connection_info_schema())
    if hasattr(provider, "source_environment_schema"):
        _validate(backend.source_env(), provider.source_environment_schema())
    if hasattr(provider, "destination_environment_schema"):
        for storage in backend.storage:
            _validate(backend.destination_env(storage),
                      with_transfer_options(provider.destination_environment_schema()))


def test_validate_connection(provider: BaseProvider, backend: Backend) -> None:
    provider.validate_connection(backend.connection_info())


def bad_values(schema: JSON, valid: JSON, skip: tuple[str, ...] = ()) -> list[tuple[str, JSON]]:
    """(field, value): ``valid`` with one required property left out, or one property of a
    declared type given another type; each must be refused naming that field."""
    found: list[tuple[str, JSON]] = []
    for name in schema.get("required", []):
        found.append((name, {k: v for k, v in valid.items() if k != name}))
    for name, prop in (schema.get("properties") or {}).items():
        if name in skip:
            continue
        types = prop.get("type")
        types = [types] if isinstance(types, str) else types or []
        wrong = next((WRONG[t] for t in types if not _fits(WRONG[t], types)), None)
        if wrong is not None:
            found.append((name, {**valid, name: wrong}))
    return found


def _fits(value: Any, types: list[str]) -> bool:
    kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
             "object": dict, "array": list}
    return any(isinstance(value, kinds[t]) for t in types if t in kinds)


class Api:
    """Plain HTTP against the kit's server, as the admin."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": server.env["OS_USERNAME"], "password": server.env["OS_PASSWORD"],
            "domain": {"name": "Default"}}}}, "scope": {"project": {
                "name": server.env["OS_PROJECT_NAME"], "domain": {"name": "Default"}}}}}
        answer = requests.post(f"{server.env['OS_AUTH_URL']}/auth/tokens", json=body,
                               timeout=30)
        self.token = answer.headers["X-Subject-Token"]
        self.url = f"{server.url}/v1/{answer.json()['token']['project']['id']}"

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        return requests.request(method, self.url + path, json=body, timeout=60,
                                headers={"X-Auth-Token": self.token})

    def endpoint(self, platform: str, connection_info: JSON, name: str) -> requests.Response:
        return self.call("POST", "/endpoints", {"endpoint": {
            "name": name, "type": platform, "connection_info": connection_info}})


@pytest.fixture(scope="module")
def api(api_server: RunningServer) -> Api:
    return Api(api_server)


def assert_400_naming(answer: requests.Response, field: str, secrets: list[str]) -> None:
    assert answer.status_code == 400, (field, answer.status_code, answer.text)
    message = answer.json()["error"]["message"]
    assert field in message, f"the 400 does not name {field}: {message}"
    assert_no_secret(answer.text, secrets, f"the 400 for {field}")


def test_api_refuses_bad_connection_info(provider: BaseProvider, backend: Backend,
                                         api: Api, platform: str) -> None:
    valid = backend.connection_info()
    cases = bad_values(provider.connection_info_schema(), valid)
    assert cases, "the connection schema has neither required nor typed properties"
    for field, value in cases:
        answer = api.endpoint(platform, value, f"kit-bad-{field}")
        assert_400_naming(answer, f"connection_info.{field}", backend.secrets())
    answer = api.endpoint(platform, valid, "kit-good")
    assert answer.status_code == 200, answer.text  # (its owner sees the connection info)
    api.call("DELETE", f"/endpoints/{answer.json()['endpoint']['id']}")


@pytest.mark.parametrize("side", ["source", "destination"])
def test_api_refuses_bad_environments(provider: BaseProvider, backend: Backend, api: Api,
                                      platform: str, side: str) -> None:
    """A migration between two endpoints of the provider whose source or destination
    environment has a property of the wrong type: a 400 naming it, nothing stored."""
    need(provider, Capability.EXPORT, Capability.IMPORT)
    ids = []
    for role in ("src", "dst"):
        answer = api.endpoint(platform, backend.connection_info(), f"kit-env-{role}-{side}")
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["endpoint"]["id"])
    try:
        schema = getattr(provider, f"{side}_environment_schema")()
        good = backend.source_env() if side == "source" else {
            k: v for k, v in backend.destination_env().items()
            if k not in ("network_map", "storage_mappings")}
        # network_map and storage_mappings are the request's own fields (the API puts them in)
        cases = bad_values(schema, good, skip=("network_map", "storage_mappings"))
        if not cases:
            pytest.skip(f"the {side} environment schema has no typed property")
        before = api.call("GET", "/migrations").json()["migrations"]
        for field, env in cases:
            body = {"origin_endpoint_id": ids[0], "destination_endpoint_id": ids[1],
                    "instances": ["kit-none"], f"{side}_environment": env}
            answer = api.call("POST", "/migrations", {"migration": body})
            assert_400_naming(answer, f"{side}_environment.{field}", backend.secrets())
        assert api.call("GET", "/migrations").json()["migrations"] == before
    finally:
        for endpoint_id in ids:
            api.call("DELETE", f"/endpoints/{endpoint_id}")


def test_schemas_are_json(provider: BaseProvider) -> None:
    for name, schema in schemas(provider).items():
        assert json.loads(json.dumps(schema)) == schema, f"{name} is not plain JSON"
