"""The newer generation's list parameters (status, sort_key/sort_dir, marker, limit) on
list views, and their 400s."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from coriolis import exceptions
from coriolis.api.v1.listing import page

ITEMS = [
    {"id": "a", "created_at": "2026-01-01T00:00:01", "last_execution_status": "COMPLETED",
     "notes": "x"},
    {"id": "b", "created_at": "2026-01-01T00:00:02", "last_execution_status": "ERROR",
     "notes": None},
    {"id": "c", "created_at": "2026-01-01T00:00:03", "last_execution_status": "COMPLETED",
     "notes": "x"},
]


def ids(query: str) -> list[str]:
    return [i["id"] for i in page(ITEMS, QueryParams(query))]


def test_without_parameters_the_order_is_kept() -> None:
    assert ids("") == ["a", "b", "c"]


def test_status_sort_marker_and_limit() -> None:
    assert ids("status=COMPLETED") == ["a", "c"]
    assert ids("sort_dir=desc") == ["c", "b", "a"]  # created_at, id (upstream's default)
    assert ids("sort_key=created_at&sort_dir=asc") == ["a", "b", "c"]
    # Two keys: notes (NULL first ascending), then id descending.
    assert ids("sort_key=notes&sort_key=id&sort_dir=asc&sort_dir=desc") == ["b", "c", "a"]
    assert ids("sort_key=id&sort_dir=desc&marker=c&limit=1") == ["b"]
    assert ids("limit=0") == []
    assert ids("marker=c") == []


@pytest.mark.parametrize("query, name", [
    ("status=FINE", "status"), ("sort_key=info", "sort_key"), ("sort_dir=up", "sort_dir"),
    ("sort_key=id&sort_dir=asc&sort_dir=desc", "sort_dir"), ("marker=zz", "marker"),
    ("limit=-1", "limit"), ("limit=ten", "limit")])
def test_bad_values_are_invalid_input_naming_the_parameter(query: str, name: str) -> None:
    with pytest.raises(exceptions.InvalidInput, match=f"^{name}:"):
        page(ITEMS, QueryParams(query))
