"""Field types and the base model shared by every request body.

Every string is checked for what no store can keep (a lone UTF-16 surrogate, a NUL) and has a
maximum length; every free-form JSON object is checked the same way, keys and values, at any
depth. Strictness: no coercion (``"yes"`` is not a boolean, ``5`` is not a string)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

NAME_MAX = 255
ID_MAX = 255
TEXT_MAX = 1024  # description, notes
JSON_DEPTH_MAX = 32


def _check_text(value: str) -> str:
    """400 for text a database cannot hold (PostgreSQL refuses NUL; UTF-8 refuses lone
    surrogates, which JSON's ``\\ud800`` escapes can carry). The message never quotes it."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain a lone UTF-16 surrogate") from None
    return value


def _check_json(value: Any, depth: int = 0) -> Any:
    if depth > JSON_DEPTH_MAX:
        raise ValueError(f"is nested deeper than {JSON_DEPTH_MAX} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
    return value


_Checked = AfterValidator(_check_text)
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX), _Checked]
Id = Annotated[str, Field(min_length=1, max_length=ID_MAX), _Checked]
Description = Annotated[str, Field(max_length=TEXT_MAX), _Checked]
LongName = Annotated[str, Field(min_length=1, max_length=TEXT_MAX), _Checked]
# A free-form JSON object (environments, network maps, connection info).
JsonObject = Annotated[dict[str, Any], AfterValidator(_check_json)]
# A script's text, a secret's payload: long but bounded by the request body limit.
Script = Annotated[str, AfterValidator(_check_text)]


def _utc(value: Any) -> dt.datetime:
    """ISO 8601 date-time (or date) → naive UTC; 400 for other types, unparsable text and
    times that leave the calendar when moved to UTC (``9999-12-31T23:59:59-14:00``)."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("is not an ISO 8601 date-time") from None
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError("is out of range once converted to UTC") from None
    return parsed


def _future(value: dt.datetime) -> dt.datetime:
    if value <= dt.datetime.now(dt.UTC).replace(tzinfo=None):
        raise ValueError("must be in the future")
    return value


FutureUtcDateTime = Annotated[dt.datetime, BeforeValidator(_utc), AfterValidator(_future)]


# The default of a field that may be left out but not set to null (an update's ``name``): the
# default is not validated, an explicit null is.
ABSENT: Any = None


class Body(BaseModel):
    """Base of every request body model: unknown keys are refused, nothing is coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)
