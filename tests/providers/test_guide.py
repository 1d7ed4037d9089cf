"""The task table of docs/providers.md says what coriolis/task_types.py says."""

from __future__ import annotations

import re
from pathlib import Path

from coriolis.providers.base import INTERFACES
from coriolis.task_types import TASK_TYPES

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


def guide_rows() -> list[list[str]]:
    text = GUIDE.read_text()
    table = text.split("<!-- task-table")[1].split("<!-- end task-table -->")[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in table.splitlines()[1:] if line.startswith("|")]
    return rows[2:]  # the header and its rule


def test_the_guide_lists_every_task_type_as_the_table_does() -> None:
    rows = guide_rows()
    assert [r[0] for r in rows] == list(TASK_TYPES), "task types differ (or their order)"
    for name, side, capability, method in rows:
        task = TASK_TYPES[name]
        assert side == task.side, name
        assert capability == (task.capability or "-"), name
        for called in re.findall(r"`(\w+)`", method):
            interface = next(i for i in INTERFACES if i.capability == task.capability)
            assert hasattr(interface, called), f"{name}: {interface.__name__} has no {called}"
