"""The embedded all-in-one server under concurrent use: many `coriolis migration create`
at once through the real CLI, against a real server (SQLite, the in-process worker).

Issue 12, item 1: on the old main, 5 creates at once gave 3 × HTTP 500 and 20 at once left 0
of 20 complete (the connection pool ran dry, SQLite answered "database is locked", the
in-process worker was deemed down, a 500 still left a migration behind)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from coriolis.cmd.local_cloud import add_instance, init_cloud
from coriolis.harness import CliResult, RunningServer

pytestmark = pytest.mark.e2e

COUNT = 50
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}


@pytest.fixture(scope="module")
def endpoints(server: RunningServer) -> dict[str, str]:
    base = server.cloud_dir("")
    init_cloud(base / "src", networks=["lan"])
    init_cloud(base / "dst", networks=["lan"])
    for i in range(COUNT):
        add_instance(base / "src", f"vm{i}", disk_size="4M", network="lan", seed=i)
    return {name: server.cli("endpoint", "create", "--name", name, "--provider", "local",
                             "--connection", json.dumps({"path": str(base / name)}),
                             "-f", "value", "-c", "id").stdout.strip()
            for name in ("src", "dst")}


def create(server: RunningServer, i: int) -> CliResult:
    return server.cli("migration", "create", "--origin-endpoint", "src",
                      "--destination-endpoint", "dst", "--instance", f"vm{i}",
                      "--source-environment", json.dumps({"snapshot": False}),
                      "--destination-environment", json.dumps({"storage_backend": "default"}),
                      "--network-map", json.dumps({"lan": "lan"}),
                      "--replication-count", "1", "--skip-os-morphing",
                      "-f", "value", "-c", "id", check=False)


def migrations(server: RunningServer) -> list[dict[str, str]]:
    return server.cli("migration", "list", "-f", "json").json()


def test_fifty_creates_at_once_all_accepted_and_all_complete(
        server: RunningServer, endpoints: dict[str, str], tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=COUNT) as pool:
        results = list(pool.map(lambda i: create(server, i), range(COUNT)))
    failed = [(i, r.returncode, r.stderr.strip()[-300:]) for i, r in enumerate(results)
              if r.returncode != 0]
    assert not failed, f"{len(failed)} of {COUNT} creates failed: {failed[:5]}"
    ids = {r.stdout.strip() for r in results}
    assert len(ids) == COUNT

    deadline = time.monotonic() + 900
    rows = migrations(server)
    while time.monotonic() < deadline and any(r["Status"] not in FINAL for r in rows):
        time.sleep(3)
        rows = migrations(server)
    # Exactly the migrations the API accepted: none created behind an error answer.
    assert {r["ID"] for r in rows} == ids
    statuses = {r["ID"]: r["Status"] for r in rows}
    assert set(statuses.values()) == {"COMPLETED"}, (
        {s: sum(1 for v in statuses.values() if v == s) for s in set(statuses.values())},
        server.log_tail(30))
