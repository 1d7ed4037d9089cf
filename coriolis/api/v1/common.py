"""Helpers shared by the v1 routers: bodies, query decoding, actions."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sqlalchemy.orm import Session

from coriolis import exceptions
from coriolis.db import models


def unwrap(body: Any, key: str) -> dict[str, Any]:
    """The object inside ``{"<key>": {...}}``, or a 400 naming the key."""
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise exceptions.InvalidInput(f'The request body needs to be encased inside the "{key}" '
                                      "key, as a JSON object")
    return body[key]


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


def single_action(body: Any) -> tuple[str, Any]:
    if not isinstance(body, dict) or len(body) != 1:
        raise exceptions.InvalidInput("An action body must hold exactly one key, the action")
    return next(iter(body.items()))


def env_object(value: str | None) -> dict[str, Any]:
    env = b64_json(value, "env")
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise exceptions.InvalidInput("query parameter 'env' must encode a JSON object")
    return env


def mapped_regions(session: Session, ids: Any) -> list[models.Region]:
    """The regions named by a ``mapped_regions`` list (400 naming an unknown one)."""
    if ids is None:
        return []
    if not isinstance(ids, list):
        raise exceptions.InvalidInput("'mapped_regions' must be a list of region ids")
    regions = []
    for region_id in ids:
        region = session.get(models.Region, region_id)
        if region is None:
            raise exceptions.InvalidInput(f"mapped_regions: region {region_id} does not exist")
        regions.append(region)
    return regions
