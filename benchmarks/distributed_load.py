"""Load on the scale-out mode: COUNT small migrations at once through api, conductor,
scheduler and WORKERS worker processes (PostgreSQL, RabbitMQ), all on this machine.

Printed: the time from the first request until every migration is final, how many completed,
and the latency of `GET /migrations/{id}` and `GET /endpoints`, alternately, requested at
RATE per second (an open loop: a request starts every 1/RATE s whether the previous ones
answered or not) all along (p50, p99, max, and the rate achieved). Uses a fresh database and
its own broker namespace, removed after.

    .venv/bin/python benchmarks/distributed_load.py [--count 100] [--workers 3]
        [--max-tasks 8] [--rate 100]
        [--database-admin-url postgresql+psycopg://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import requests.adapters
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from coriolis.cmd.local_cloud import add_instance, init_cloud
from coriolis.harness import scratch_database, start_cluster
from coriolisclient import client

POOL = 32  # threads (and HTTP connections) of the request sampler
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--max-tasks", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="API requests per second while the migrations run")
    parser.add_argument("--database-admin-url",
                        default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--transport-url", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args()

    with scratch_database(args.database_admin_url, "coriolis_load") as database_url:
        run(args, database_url)


def run(args: argparse.Namespace, database_url: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="coriolis-load-"))
    cluster = None
    try:
        clouds = work / "clouds"  # the local cloud root of every project of this cluster
        for cloud in ("src", "dst"):
            init_cloud(clouds / cloud, networks=["lan"])
        for i in range(args.count):
            add_instance(clouds / "src", f"vm{i}", disk_size="4M", network="lan", seed=i)
        cluster = start_cluster(
            work / "data", database_url, args.transport_url,
            f"load-{uuid.uuid4().hex[:6]}", [f"w{i}" for i in range(args.workers)],
            {"CORIOLIS_HEARTBEAT_INTERVAL": "2", "CORIOLIS_LOCAL_ROOT": str(clouds)},
            max_tasks=args.max_tasks)
        assert cluster.api is not None
        env = cluster.api.env
        auth = v3.Password(auth_url=env["OS_AUTH_URL"], username=env["OS_USERNAME"],
                           password=env["OS_PASSWORD"], project_name=env["OS_PROJECT_NAME"],
                           user_domain_name="Default", project_domain_name="Default")
        http = requests.Session()  # a connection per sampling thread, kept
        http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=POOL))
        api = client.Client(session=ks_session.Session(auth=auth, session=http))
        src = api.endpoints.create("src", "local", {"path": str(clouds / "src")}, "").id
        dst = api.endpoints.create("dst", "local", {"path": str(clouds / "dst")}, "").id

        latencies: list[float] = []
        stop = threading.Event()
        ids: list[str] = []

        calls = (lambda: api.endpoints.list(), lambda: ids and api.migrations.get(ids[-1]))

        def timed(call: Any) -> None:
            started = time.monotonic()
            call()
            latencies.append(time.monotonic() - started)

        sampled: list[float] = []

        def sample() -> None:
            interval, due, n = 1 / args.rate, time.monotonic(), 0
            sampled.append(due)
            pool = ThreadPoolExecutor(max_workers=POOL)
            while not stop.is_set():
                pool.submit(timed, calls[n % len(calls)])
                n += 1
                due += interval
                stop.wait(max(0.0, due - time.monotonic()))
            sampled.append(time.monotonic())
            # Requests still queued when the migrations are done (the API fell behind the
            # rate) are dropped, not sent after the measured window.
            pool.shutdown(wait=True, cancel_futures=True)

        def create(i: int) -> str:
            return str(api.migrations.create(
                src, dst, {"snapshot": False}, {"storage_backend": "default"}, [f"vm{i}"],
                network_map={"lan": "lan"}, skip_os_morphing=True, replication_count=1).id)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            ids.extend(pool.map(create, range(args.count)))
        created = time.monotonic() - started
        statuses: dict[str, str] = {}
        while len(statuses) < len(ids):
            for migration in api.migrations.list():
                if migration.last_execution_status in FINAL:
                    statuses[migration.id] = migration.last_execution_status
            time.sleep(1)
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
        latencies.sort()
        completed = sum(1 for s in statuses.values() if s == "COMPLETED")
        print(f"{args.count} migrations, {args.workers} workers x {args.max_tasks} tasks: "
              f"all created in {created:.1f} s, all final in {elapsed:.1f} s; "
              f"{completed} COMPLETED")
        print(f"API latency while loaded ({len(latencies)} requests, "
              f"{len(latencies) / (sampled[1] - sampled[0]):.0f} per second): "
              f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.0f} ms, "
              f"max {latencies[-1] * 1000:.0f} ms")
    except BaseException:
        for log in sorted(work.glob("*.out")):
            print(f"--- last lines of {log.name}:\n" + "\n".join(
                log.read_text(errors="replace").splitlines()[-15:]))
        raise
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
