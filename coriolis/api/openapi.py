"""/v1/openapi.json as the server really behaves: the ``project_id`` path parameter where a
path has one, the token scheme (declared by ``coriolis.api.auth``), and the error responses
the server gives (400, 401, 403, 404, 413: the ``Error`` schema) instead of FastAPI's 422."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "integer"},
                       "message": {"type": "string", "description": "Names the field at fault"},
                       "fault": {"type": "string", "examples": ["badRequest"]}}}},
}
PROJECT_ID = {"name": "project_id", "in": "path", "required": True,
              "schema": {"type": "string"},
              "description": "The project of the token (as the catalog's URL gives it)"}
ERRORS = {
    400: "Malformed request: the message names the field",
    401: "No valid X-Auth-Token",
    403: "The token's project or roles do not allow this",
    404: "A resource of the path does not exist in the token's project",
    413: "The request body is larger than the server's limit",
}


def _error(code: int) -> dict[str, Any]:
    return {"description": ERRORS[code], "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation(path: str, op: dict[str, Any]) -> None:
    params = op.setdefault("parameters", [])
    if "{project_id}" in path and not any(p.get("name") == "project_id" for p in params):
        params.insert(0, PROJECT_ID)
    responses = op["responses"]
    responses.pop("422", None)
    codes = [401, 403]
    if "requestBody" in op or any(p.get("in") in ("query", "path") for p in params):
        codes.append(400)
    if any(p.get("in") == "path" and p.get("name") != "project_id" for p in params):
        codes.append(404)
    if "requestBody" in op:
        codes.append(413)
    for code in codes:
        responses.setdefault(str(code), _error(code))
    if not params:
        del op["parameters"]


def document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description="The Coriolis v1 API (wire-compatible with upstream's).")
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    for path, operations in doc["paths"].items():
        for op in operations.values():
            _operation(path, op)
    return doc


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
