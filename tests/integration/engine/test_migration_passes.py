"""Issue 20, goal 2: ``replication_count`` passes copy again only a source that keeps
changing (a running instance read live); a source read from a snapshot, or shut off, is
copied in one pass. Real conductor, worker, SQLite and `local` provider; what each
REPLICATE_DISKS pass read is taken from its progress updates ("Disk D: scanned N MiB")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from coriolis import constants as c
from coriolis.db import models
from tests.integration.engine.test_conductor import body, disks, same, wait_execution


def _passes(services, mid: str) -> list[tuple[float, list[str]]]:  # type: ignore[no-untyped-def]
    """Per REPLICATE_DISKS task, in order: (MiB it scanned, its events)."""
    with services.db.session() as session:
        tasks = [t for t in session.get(models.TransferAction, mid).executions[0].tasks
                 if t.task_type == c.TASK_TYPE_REPLICATE_DISKS]
        tasks.sort(key=lambda t: t.created_at)
        out = []
        for task in tasks:
            scanned = sum(float(m.group(1)) for u in task.progress_updates
                          if (m := re.search(r"scanned ([0-9.]+) MiB,", u.message or "")))
            out.append((scanned, [e.message for e in task.events]))
        return out


def _set_power_state(cloud: Path, name: str, state: str) -> None:
    path = cloud / "instances" / name / "instance.json"
    desc = json.loads(path.read_text())
    desc["power_state"] = state
    path.write_text(json.dumps(desc))


@pytest.mark.parametrize("source, one_pass", [
    ("running, read live", False),
    ("running, snapshot", True),
    ("stopped", True),
])
def test_passes_only_where_the_source_keeps_changing(services, ctx, endpoints, clouds,
                                                     source, one_pass) -> None:
    if source == "stopped":
        _set_power_state(clouds["src"], "vm1", "stopped")
    env = {"snapshot": source.endswith("snapshot")}
    mid = services.conductor.create_migration(
        ctx, body(endpoints, "vm1", source_environment=env, replication_count=2))
    execution = wait_execution(services, mid)
    assert execution.status == c.EXECUTION_STATUS_COMPLETED, [
        (t.task_type, t.status, t.exception_details) for t in execution.tasks]
    (first, _), (second, events) = _passes(services, mid)
    assert first > 0
    if one_pass:
        assert second == 0
        assert any("copies nothing" in e for e in events)
    else:
        assert second == first  # a live source is read again
    for a, b in zip(disks(clouds["src"], "vm1"), disks(clouds["dst"], "vm1"), strict=True):
        assert same(a, b)
