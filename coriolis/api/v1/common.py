"""Helpers shared by the v1 routers: query decoding, region lists."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import orjson
from fastapi import Response
from sqlalchemy.orm import Session

from coriolis import exceptions
from coriolis.db import models


def list_response(collection: str, items: list[dict[str, Any]]) -> Response:
    """``{collection: items}`` as JSON, for items of JSON types and ``orjson.Fragment``s
    (``views.listed_migrations``): serialised at once by orjson, without FastAPI's per-value
    conversion (``jsonable_encoder``), which took most of a 10 000-item list's time."""
    return Response(orjson.dumps({collection: items}), media_type="application/json")


def b64_json(value: str | None, name: str) -> Any:
    """Decode a urlsafe-base64 JSON query parameter (``env``, ``options``)."""
    if not value:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(value.encode() + b"=" * (-len(value) % 4)))
    except (binascii.Error, ValueError):
        raise exceptions.InvalidInput(f"query parameter '{name}' is not base64url-encoded JSON"
                                      ) from None


def b64_text(value: str, name: str) -> str:
    try:
        return base64.urlsafe_b64decode(value.encode() + b"=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise exceptions.InvalidInput(f"'{name}' is not base64url-encoded") from None


def env_object(value: str | None) -> dict[str, Any]:
    env = b64_json(value, "env")
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise exceptions.InvalidInput("query parameter 'env' must encode a JSON object")
    return env


def mapped_regions(session: Session, ids: list[str] | None) -> list[models.Region]:
    """The regions named by a ``mapped_regions`` list (400 naming an unknown one)."""
    if ids is None:
        return []
    regions = []
    for region_id in ids:
        region = session.get(models.Region, region_id)
        if region is None:
            raise exceptions.InvalidInput(f"mapped_regions: region {region_id} does not exist")
        regions.append(region)
    return regions
