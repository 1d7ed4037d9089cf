"""Listing many migrations: ``GET /v1/{project}/migrations`` (what `coriolis migration list`
asks) against an all-in-one server holding COUNT finished migrations, on SQLite (the data
directory's, as the server makes it) or on PostgreSQL (``--postgresql``: a fresh database,
dropped after).

The migrations are written straight into the server's database (its schema, its models),
each as a finished migration looks: one instance with its task info (export and volume
info, about 2 KiB of JSON), one COMPLETED execution of TASKS tasks, each with two progress
updates and two events. The requests go through one keep-alive HTTP connection with one
token, so what is timed is the server's answer, not a login.

Printed: the median, min and max of ``--runs`` requests (wall time seen by the client, and
the server's own time from its access log), the server process's CPU time per request (what
the machine's load does not change much), the size of the answer, and the load average.

    .venv/bin/python benchmarks/list_migrations.py [--count 10000] [--runs 7] [--postgresql]
        [--database-admin-url postgresql+psycopg://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import insert, text

from coriolis import constants as c
from coriolis.db import models
from coriolis.db.session import Database
from coriolis.harness import RunningServer, scratch_database, start_server, stop_server

TASK_TYPES = ("GET_INSTANCE_INFO", "DEPLOY_REPLICA_DISKS", "DEPLOY_REPLICA_SOURCE_RESOURCES",
              "DEPLOY_REPLICA_TARGET_RESOURCES", "REPLICATE_DISKS",
              "DELETE_REPLICA_SOURCE_RESOURCES", "DELETE_REPLICA_TARGET_RESOURCES",
              "DEPLOY_INSTANCE_RESOURCES", "FINALIZE_INSTANCE_DEPLOYMENT",
              "CLEANUP_FAILED_INSTANCE_DEPLOYMENT")


def task_info(name: str) -> dict[str, Any]:
    disks = [{"id": f"disk{d}", "size_bytes": 8 << 30, "format": "raw",
              "path": f"/srv/cloud-a/instances/{name}/disk{d}.raw",
              "storage_backend_identifier": "default"} for d in range(2)]
    return {name: {
        "export_info": {"id": name, "name": name, "num_cpu": 2, "memory_mb": 2048,
                        "os_type": "linux", "firmware_type": "BIOS",
                        "devices": {"disks": disks, "nics": [
                            {"id": "nic0", "mac_address": "52:54:00:12:34:56",
                             "network_name": "lan"}]}},
        "volumes_info": [{"disk_id": f"disk{d}", "volume_id": uuid.uuid4().hex,
                          "path": f"/srv/cloud-b/storage/default/{name}-disk{d}.raw",
                          "replicated_bytes": 3 << 30} for d in range(2)],
        "instance_deployment_info": {"id": name, "name": name}}}


def populate(url: str, project_id: str, src: str, dst: str, count: int, tasks: int) -> None:
    """Write ``count`` finished migrations of ``project_id`` in batches of 500."""
    db = Database(url)
    base = dt.datetime(2026, 1, 1)
    try:
        for start in range(0, count, 500):
            actions, executions, task_rows, updates, events = [], [], [], [], []
            for i in range(start, min(count, start + 500)):
                at = base + dt.timedelta(seconds=i)
                action_id, execution_id, name = str(uuid.uuid4()), str(uuid.uuid4()), f"vm{i}"
                actions.append({
                    "id": action_id, "type": c.ACTION_TYPE_MIGRATION, "project_id": project_id,
                    "user_id": None, "origin_endpoint_id": src, "destination_endpoint_id": dst,
                    "instance_osmorphing_minion_pool_mappings": {}, "instances": [name],
                    "source_environment": {"snapshot": True},
                    "destination_environment": {"storage_backend": "default"},
                    "network_map": {"lan": "lan"}, "storage_mappings": {},
                    "user_scripts": {}, "notes": f"benchmark {i}", "info": task_info(name),
                    "last_execution_status": c.EXECUTION_STATUS_COMPLETED,
                    "shutdown_instances": False, "replication_count": 2,
                    "skip_os_morphing": True, "clone_disks": True, "deleted": False,
                    "created_at": at, "updated_at": at})
                executions.append({"id": execution_id, "action_id": action_id, "number": 1,
                                   "type": "migration",
                                   "status": c.EXECUTION_STATUS_COMPLETED,
                                   "auto_deploy": False, "created_at": at, "updated_at": at})
                for t in range(tasks):
                    task_id = str(uuid.uuid4())
                    task_rows.append({
                        "id": task_id, "execution_id": execution_id, "index": t,
                        "instance": name, "task_type": TASK_TYPES[t % len(TASK_TYPES)],
                        "status": c.TASK_STATUS_COMPLETED, "depends_on": [],
                        "on_error": False, "on_error_only": False, "host": "worker-a",
                        "process_id": 1234, "exception_details": None,
                        "created_at": at, "updated_at": at})
                    for n in range(2):
                        updates.append({"id": str(uuid.uuid4()), "task_id": task_id,
                                        "index": n, "current_step": n + 1, "total_steps": 2,
                                        "message": f"Disk disk0: {n * 512} of 1024 MiB",
                                        "created_at": at, "updated_at": at})
                        events.append({"id": str(uuid.uuid4()), "task_id": task_id,
                                       "index": n, "level": "INFO",
                                       "message": f"step {n} done", "created_at": at,
                                       "updated_at": at})
            with db.session() as session:
                for model, rows in ((models.TransferAction, actions),
                                    (models.Execution, executions), (models.Task, task_rows),
                                    (models.TaskProgressUpdate, updates),
                                    (models.TaskEvent, events)):
                    session.execute(insert(model), rows)
        if not db.sqlite:
            with db.engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
    finally:
        db.dispose()


ACCESS_RE = re.compile(r"\] GET (\S+)/migrations 200 ([\d.]+) ms")


def measure(server: RunningServer, runs: int) -> None:
    session = requests.Session()
    session.headers["X-Auth-Token"] = server.bindings().session.get_token()
    url = f"{server.url}/v1/{server.project_id}/migrations"
    walls, sizes = [], []
    session.get(url, timeout=300).raise_for_status()  # warm: first request, caches
    offset = server.log_path.stat().st_size
    cpu_before = process_cpu(server.process.pid)
    for _ in range(runs):
        started = time.perf_counter()
        response = session.get(url, timeout=300)
        walls.append(time.perf_counter() - started)
        response.raise_for_status()
        sizes.append(len(response.content))
        count = len(response.json()["migrations"])
    cpu = (process_cpu(server.process.pid) - cpu_before) / runs
    time.sleep(0.2)
    with open(server.log_path, "rb") as f:
        f.seek(offset)
        server_times = [float(m.group(2)) / 1000
                        for m in ACCESS_RE.finditer(f.read().decode(errors="replace"))]
    print(f"GET /migrations ({count} migrations, {sizes[-1] / 1e6:.1f} MB of JSON, "
          f"load average {os.getloadavg()[0]:.2f}): median {statistics.median(walls):.3f} s "
          f"(min {min(walls):.3f}, max {max(walls):.3f}, n={runs}); in the server: median "
          f"{statistics.median(server_times):.3f} s, {cpu:.3f} CPU-s per request")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--tasks", type=int, default=10, help="tasks per migration")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--postgresql", action="store_true")
    parser.add_argument("--database-admin-url",
                        default="postgresql+psycopg://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if args.postgresql:
            env["CORIOLIS_DATABASE_URL"] = stack.enter_context(
                scratch_database(args.database_admin_url, "coriolis_list"))
        run(env, args.count, args.tasks, args.runs)


def run(env: dict[str, str], count: int, tasks: int, runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="coriolis-list-"))
    server = None
    try:
        clouds = work / "clouds"
        env["CORIOLIS_LOCAL_ROOT"] = str(clouds)
        for cloud in ("src", "dst"):
            (clouds / cloud / "instances").mkdir(parents=True)
            (clouds / cloud / "cloud.json").write_text(
                '{"networks": ["lan"], "storage": [{"name": "default", "format": "raw"}]}')
        server = start_server(work / "data", env)
        api = server.bindings()
        src = api.endpoints.create("src", "local", {"path": str(clouds / "src")}, "").id
        dst = api.endpoints.create("dst", "local", {"path": str(clouds / "dst")}, "").id
        url = env.get("CORIOLIS_DATABASE_URL") or f"sqlite:///{work / 'data' / 'coriolis.db'}"
        started = time.monotonic()
        populate(url, server.project_id, src, dst, count, tasks)
        print(f"{count} migrations written in {time.monotonic() - started:.0f} s "
              f"({'SQLite' if url.startswith('sqlite') else 'PostgreSQL'})")
        measure(server, runs)
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
