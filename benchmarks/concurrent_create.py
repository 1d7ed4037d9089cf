"""Concurrent creates on the embedded all-in-one server (SQLite, the in-process worker):
COUNT small migrations (4 MiB disks, `--skip-os-morphing`, one sync) requested at once, one
thread each, through the Python bindings the CLI uses.

Printed: how many creates were accepted, the create latency (p50, p99, max) and the time from
the first request until every migration is final, with how many completed.

    .venv/bin/python benchmarks/concurrent_create.py [--count 50] [--runs 1]
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from coriolis.cmd.local_cloud import add_instance, init_cloud
from coriolis.harness import bench_parser, start_server, stop_server

FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def run(count: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="coriolis-concurrent-"))
    server = None
    try:
        clouds = work / "clouds"  # the server's local cloud root
        for cloud in ("src", "dst"):
            init_cloud(clouds / cloud, networks=["lan"])
        for i in range(count):
            add_instance(clouds / "src", f"vm{i}", disk_size="4M", network="lan", seed=i)
        server = start_server(work / "data", {"CORIOLIS_LOCAL_ROOT": str(clouds)})
        api = server.bindings()
        src = api.endpoints.create("src", "local", {"path": str(clouds / "src")}, "").id
        dst = api.endpoints.create("dst", "local", {"path": str(clouds / "dst")}, "").id

        def create(i: int) -> tuple[float, str | None, str | None]:
            started = time.monotonic()
            try:
                migration: Any = api.migrations.create(
                    src, dst, {"snapshot": False}, {"storage_backend": "default"}, [f"vm{i}"],
                    network_map={"lan": "lan"}, skip_os_morphing=True, replication_count=1)
                return time.monotonic() - started, str(migration.id), None
            except Exception as exc:  # counted and shown below
                return time.monotonic() - started, None, str(exc)[:200]

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=count) as pool:
            results = list(pool.map(create, range(count)))
        ids = [r[1] for r in results if r[1]]
        errors = [r[2] for r in results if r[2]]
        statuses: dict[str, str] = {}
        while len(statuses) < len(ids) and time.monotonic() - started < 1800:
            for migration in api.migrations.list():
                if migration.last_execution_status in FINAL:
                    statuses[migration.id] = migration.last_execution_status
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        latencies = [r[0] for r in results]
        completed = sum(1 for s in statuses.values() if s == "COMPLETED")
        listed = len(api.migrations.list())
        print(f"{count} concurrent creates: {len(ids)} accepted, {len(errors)} refused; "
              f"create latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms")
        print(f"all final {elapsed:.1f} s after the first request: {completed} COMPLETED, "
              f"{len(statuses) - completed} otherwise, {len(ids) - len(statuses)} not final; "
              f"{listed} migrations listed")
        for error in errors[:3]:
            print(f"  refused: {error}")
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = bench_parser(__doc__ or "", runs=1)
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args()
    for _ in range(args.runs):
        run(args.count)


if __name__ == "__main__":
    main()
