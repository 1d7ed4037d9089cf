"""What one small API request costs the server: CPU time and latency of `GET /` (no token),
`GET /v1/{project}/endpoints` (two endpoints) and `GET /v1/{project}/endpoints/{id}`
against an idle all-in-one server (SQLite), one keep-alive connection, one token.

CPU time is the server process's (all threads, from /proc) divided by the requests sent: it
changes little with the machine's load, unlike the wall time, which is printed too.

    .venv/bin/python benchmarks/api_requests.py [--runs 3] [--requests 300]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import requests

from benchmarks.list_migrations import process_cpu
from coriolis.harness import start_server, stop_server


def series(session: requests.Session, url: str, pid: int, count: int) -> tuple[float, float,
                                                                                float]:
    """(server CPU ms per request, p50 ms, p99 ms) of ``count`` requests of ``url``."""
    for _ in range(10):  # warm
        session.get(url, timeout=30).raise_for_status()
    walls = []
    cpu_before = process_cpu(pid)
    for _ in range(count):
        started = time.perf_counter()
        session.get(url, timeout=30).raise_for_status()
        walls.append(time.perf_counter() - started)
    cpu = (process_cpu(pid) - cpu_before) / count
    walls.sort()
    return cpu * 1000, statistics.median(walls) * 1000, walls[int(len(walls) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="coriolis-api-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        clouds = work / "clouds"
        for cloud in ("src", "dst"):
            (clouds / cloud / "instances").mkdir(parents=True)
            (clouds / cloud / "cloud.json").write_text(
                '{"networks": ["lan"], "storage": [{"name": "default", "format": "raw"}]}')
        server = start_server(work / "data", {"CORIOLIS_LOCAL_ROOT": str(clouds)})
        cleanup.callback(stop_server, server)
        api = server.bindings()
        src = api.endpoints.create("src", "local", {"path": str(clouds / "src")}, "").id
        api.endpoints.create("dst", "local", {"path": str(clouds / "dst")}, "")
        session = requests.Session()
        session.headers["X-Auth-Token"] = api.session.get_token()
        base = f"{server.url}/v1/{server.project_id}"
        report({"GET /": f"{server.url}/", "GET /endpoints": f"{base}/endpoints",
                "GET /endpoints/{id}": f"{base}/endpoints/{src}"},
               session, server.process.pid, args.runs, args.requests)


def report(paths: dict[str, str], session: requests.Session, pid: int, runs: int,
           count: int) -> None:
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in paths}
    for run in range(runs):
        for name, url in paths.items():
            results[name].append(series(session, url, pid, count))
        print(f"run {run + 1} (load average {os.getloadavg()[0]:.1f}): " + "; ".join(
            f"{name} {r[-1][0]:.2f} ms CPU, p50 {r[-1][1]:.1f} ms"
            for name, r in results.items()), flush=True)
    print(f"\nmedians of {runs} series of {count} requests:")
    for name, rows in results.items():
        cpu, p50, p99 = (statistics.median(r[i] for r in rows) for i in range(3))
        print(f"  {name:22s} server CPU {cpu:.2f} ms/request, wall p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
