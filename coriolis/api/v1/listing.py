"""The newer API generation's list parameters (``/transfers``, ``/deployments``), as
upstream's server reads them: ``status`` (the items' ``last_execution_status``), ``sort_key``
and ``sort_dir`` (each may repeat), ``marker`` (the id after which the page starts, in that
order) and ``limit`` (at most that many items). Bad values are ``InvalidInput`` (400) naming
the parameter."""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from starlette.datastructures import QueryParams

from coriolis import constants as c
from coriolis import exceptions

EXECUTION_STATUSES = frozenset(
    value for name, value in vars(c).items() if name.startswith("EXECUTION_STATUS_"))
SORT_DIRS = ("asc", "desc")
# The scalar fields of both list views one may sort on.
SORT_KEYS = frozenset({
    "id", "created_at", "updated_at", "last_execution_status", "type", "notes", "user_id",
    "project_id", "origin_endpoint_id", "destination_endpoint_id", "origin_minion_pool_id",
    "destination_minion_pool_id", "scenario", "transfer_id", "replica_id"})


def _sort(items: list[dict[str, Any]], keys: list[str], dirs: list[str]) -> list[dict[str, Any]]:
    result = list(items)
    # Stable sorts from the last key to the first: the first key orders most.
    for key, direction in reversed(list(zip(keys, dirs, strict=True))):
        present = [i for i in result if i.get(key) is not None]
        absent = [i for i in result if i.get(key) is None]
        present.sort(key=itemgetter(key), reverse=direction == "desc")
        # As SQL's default: NULLs first ascending, last descending.
        result = present + absent if direction == "desc" else absent + present
    return result


def page(items: list[dict[str, Any]], query: QueryParams) -> list[dict[str, Any]]:
    """``items`` (list views, each with ``id`` and ``last_execution_status``) filtered,
    sorted and paged by ``query``; without sort parameters they keep their order."""
    status = query.get("status")
    if status is not None:
        if status not in EXECUTION_STATUSES:
            raise exceptions.InvalidInput(
                f"status: unknown execution status '{status}' (one of "
                f"{', '.join(sorted(EXECUTION_STATUSES))})")
        items = [i for i in items if i.get("last_execution_status") == status]
    keys = [k.strip() for k in query.getlist("sort_key")]
    dirs = [d.strip().lower() for d in query.getlist("sort_dir")]
    for direction in dirs:
        if direction not in SORT_DIRS:
            raise exceptions.InvalidInput(f"sort_dir: '{direction}' is not asc or desc")
    for key in keys:
        if key not in SORT_KEYS:
            raise exceptions.InvalidInput(
                f"sort_key: '{key}' is not one of {', '.join(sorted(SORT_KEYS))}")
    if keys or dirs:
        keys = keys or ["created_at", "id"]
        if len(dirs) > len(keys):
            raise exceptions.InvalidInput("sort_dir: more directions than sort keys")
        dirs = dirs + [dirs[-1] if dirs else "desc"] * (len(keys) - len(dirs))
        items = _sort(items, keys, dirs)
    marker = query.get("marker")
    if marker is not None:
        ids = [i["id"] for i in items]
        if marker not in ids:
            raise exceptions.InvalidInput(f"marker: no item {marker} in this list")
        items = items[ids.index(marker) + 1:]
    limit = query.get("limit")
    if limit is not None:
        try:
            count = int(limit)
        except ValueError:
            count = -1
        if count < 0:
            raise exceptions.InvalidInput(f"limit: '{limit}' is not a non-negative integer")
        items = items[:count]
    return items
