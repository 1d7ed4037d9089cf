"""Checks of transfer request bodies, each error naming the offending field."""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema

from coriolis import constants as c
from coriolis.exceptions import InvalidInput

STORAGE_MAPPINGS_SCHEMA = {
    "type": "object",
    "properties": {
        "default": {"type": ["string", "null"]},
        "backend_mappings": {"type": "array", "items": {
            "type": "object", "properties": {"source": {"type": "string"},
                                             "destination": {"type": "string"}},
            "required": ["source", "destination"], "additionalProperties": False}},
        "disk_mappings": {"type": "array", "items": {
            "type": "object", "properties": {"disk_id": {"type": "string"},
                                             "destination": {"type": "string"}},
            "required": ["disk_id", "destination"], "additionalProperties": False}},
    },
    "additionalProperties": False,
}


def require(body: dict[str, Any], key: str, kind: str) -> Any:
    if key not in body or body[key] is None:
        raise InvalidInput(f"The {kind} body lacks a required attribute: '{key}'")
    return body[key]


def validator(schema: dict[str, Any]) -> Any:
    """The checked (and cached) validator of a JSON schema."""
    return _validator(json.dumps(schema, sort_keys=True))


@functools.lru_cache(maxsize=128)
def _validator(schema_json: str) -> Any:
    """A checked validator per schema: checking a schema against its metaschema costs tens
    of milliseconds, more than the rest of a create (jsonschema.validate does it each call)."""
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def against_schema(value: Any, schema: dict[str, Any], field: str) -> None:
    """``InvalidInput`` naming ``field`` and the path inside it, with the error
    ``jsonschema.validate`` would raise (the best match)."""
    exc = jsonschema.exceptions.best_match(validator(schema).iter_errors(value))
    if exc is not None:
        where = ".".join(str(p) for p in exc.absolute_path)
        raise InvalidInput(f"{field}{'.' + where if where else ''}: {exc.message}")


def instances(value: Any) -> list[str]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(i, str) and i for i in value)):
        raise InvalidInput("'instances' must be a non-empty list of instance names")
    if len(set(value)) != len(value):
        raise InvalidInput("'instances' must not contain duplicates")
    return value


def json_object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"'{key}' must be a JSON object")
    return value


def storage_mappings(body: dict[str, Any]) -> dict[str, Any]:
    value = json_object(body, "storage_mappings")
    against_schema(value, STORAGE_MAPPINGS_SCHEMA, "storage_mappings")
    return value


def user_scripts(body: dict[str, Any], instance_names: list[str]) -> dict[str, Any]:
    value = json_object(body, "user_scripts")
    scripts = {"global": value.get("global") or {}, "instances": value.get("instances") or {}}
    for os_type in scripts["global"]:
        if os_type not in c.VALID_OS_TYPES:
            raise InvalidInput(f"user_scripts.global: unknown OS type '{os_type}' "
                               f"(valid: {', '.join(c.VALID_OS_TYPES)})")
    for name in scripts["instances"]:
        if name not in instance_names:
            raise InvalidInput(f"user_scripts.instances: '{name}' is not one of the instances")
    return scripts


def boolean(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(f"'{key}' must be a boolean")
    return value


def replication_count(body: dict[str, Any], default: int) -> int:
    value = body.get("replication_count")
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10:
        raise InvalidInput("'replication_count' must be an integer from 1 to 10")
    return value


def pool_mappings(body: dict[str, Any], instance_names: list[str]) -> dict[str, Any]:
    value = json_object(body, "instance_osmorphing_minion_pool_mappings")
    for name in value:
        if name not in instance_names:
            raise InvalidInput(f"instance_osmorphing_minion_pool_mappings: '{name}' is not one "
                               "of the instances")
    return value
