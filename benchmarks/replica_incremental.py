"""Replica executions: how much the second execution sends, and how fast, against rsync.

A 2 GiB raw disk with 512 MiB allocated is replicated (execution 1) through a real all-in-one
server and the CLI; then 1 % of its 64 KiB blocks are changed at random and execution 2 runs.
Printed: bytes sent by execution 2 ÷ bytes changed (from the execution's own counters and this
script's independent count), execution 2 time ÷ execution 1 time (server-side durations),
and the time of `rsync --inplace --no-whole-file` applying the same change to a copy of the
old disk ÷ execution 2 time.

    .venv/bin/python benchmarks/replica_incremental.py [--runs 3] [--size 2G] [--format qcow2]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from coriolis.cmd.local_cloud import parse_size
from coriolis.harness import RunningServer, bench_parser, local_cloud, start_server, stop_server

BLOCK = 64 * 1024
TASK_SPANS = False


def execute(server: RunningServer, replica: str) -> tuple[float, dict]:
    ex = server.cli("replica", "execute", replica, "-f", "json").json()
    done = server.wait_for(["replica", "execution", "show", replica, ex["id"]],
                           lambda e: e["status"] in {"COMPLETED", "ERROR", "CANCELED"},
                           timeout=1800)
    if done["status"] != "COMPLETED":
        raise SystemExit(f"execution ended {done['status']}")
    # The execution's own duration, from the server's timestamps (the CLI's polling would
    # add up to a second of noise).
    elapsed = (dt.datetime.fromisoformat(done["last_updated"])
               - dt.datetime.fromisoformat(done["created"])).total_seconds()
    if TASK_SPANS:  # --tasks: each task's span after the execution began (server's DB)
        import sqlite3

        with sqlite3.connect(server.data_dir / "coriolis.db") as db:
            rows = db.execute("SELECT task_type, created_at, updated_at FROM tasks WHERE "
                              "execution_id = ? ORDER BY created_at", (ex["id"],)).fetchall()
        began = min(dt.datetime.fromisoformat(r[1]) for r in rows)
        for task_type, created, updated in rows:
            first = (dt.datetime.fromisoformat(created) - began).total_seconds()
            last = (dt.datetime.fromisoformat(updated or created) - began).total_seconds()
            print(f"    {task_type:45s} {first:6.2f} -> {last:6.2f}", flush=True)
    shown = server.cli("replica", "show", replica, "--show-instances-data", "-f", "json").json()
    return elapsed, shown["instances-data"]["vm"]["volumes_info"][0]


def change_blocks(disk: Path, fmt: str, size: int, fraction: float, seed: int) -> int:
    """Rewrite ``fraction`` of the 64 KiB blocks; qcow2 through qemu-io, as a guest would
    (so its dirty bitmap sees the writes)."""
    rng = random.Random(seed)
    chosen = rng.sample(range(size // BLOCK), int(size // BLOCK * fraction))
    if fmt == "qcow2":
        commands = [arg for block in chosen for arg in
                    ("-c", f"write -P {rng.randrange(1, 255)} {block * BLOCK} {BLOCK}")]
        subprocess.run(["qemu-io", "-f", "qcow2", *commands, str(disk)], check=True,
                       capture_output=True)
    else:
        with open(disk, "r+b") as f:
            for block in chosen:
                f.seek(block * BLOCK)
                f.write(os.urandom(BLOCK))
    return len(chosen) * BLOCK


def one_run(work: Path, size: str, fmt: str, seed: int) -> dict[str, float]:
    src, dst = work / "clouds" / "src", work / "clouds" / "dst"
    local_cloud("init", str(src))
    local_cloud("add-instance", str(src), "vm", "--disk-size", size, "--disk-format", fmt,
                "--allocated", str(512 * 2**20 / parse_size(size)), "--seed", str(seed))
    local_cloud("init", str(dst))
    disk = src / "instances" / "vm" / f"disk0.{fmt}"
    server = start_server(work / "server", {"CORIOLIS_LOCAL_ROOT": str(work / "clouds")})
    try:
        for name, path in (("a", src), ("b", dst)):
            server.cli("endpoint", "create", "--name", name, "--provider", "local",
                       "--connection", json.dumps({"path": str(path)}))
        replica = server.cli(
            "replica", "create", "--origin-endpoint", "a", "--destination-endpoint", "b",
            "--instance", "vm", "--source-environment", '{"snapshot": false}',
            "--destination-environment", '{"storage_backend": "default"}',
            "--network-map", '{"default": "default"}', "-f", "value", "-c", "id"
        ).stdout.strip()
        t1, _ = execute(server, replica)
        old = work / "rsync-target.raw"
        subprocess.run(["cp", "--sparse=always", str(disk), str(old)], check=True)
        changed = change_blocks(disk, fmt, parse_size(size), 0.01, seed)
        t2, volume = execute(server, replica)
        started = time.monotonic()
        # --ignore-times: the copy and the change may fall in the same second of mtime
        subprocess.run(["rsync", "--inplace", "--no-whole-file", "--ignore-times", str(disk),
                        str(old)],
                       check=True)
        t_rsync = time.monotonic() - started
    finally:
        stop_server(server)
    return {"exec1_s": t1, "exec2_s": t2, "rsync_s": t_rsync, "changed": changed,
            "sent": volume["bytes_sent"], "reported_changed": volume["bytes_changed"],
            "scanned": volume["bytes_scanned"]}


def main() -> None:
    parser = bench_parser(__doc__, runs=3, size="2G")
    parser.add_argument("--format", default="raw", choices=("raw", "qcow2"),
                        help="source disk format (qcow2: native change tracking)")
    parser.add_argument("--tasks", action="store_true",
                        help="print each execution's task spans (server timestamps)")
    args = parser.parse_args()
    global TASK_SPANS
    TASK_SPANS = args.tasks
    results = []
    for run in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="coriolis-bench-"))
        try:
            results.append(one_run(work, args.size, args.format, seed=run + 1))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        r = results[-1]
        print(f"run {run + 1}: exec1 {r['exec1_s']:.2f}s exec2 {r['exec2_s']:.2f}s "
              f"rsync {r['rsync_s']:.2f}s changed {r['changed'] / 2**20:.1f} MiB "
              f"sent {r['sent'] / 2**20:.1f} MiB", flush=True)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    print(f"\nmedians over {len(results)} runs ({args.size} {args.format} disk, 512 MiB "
          f"allocated, 1 % of 64 KiB blocks changed):")
    print(f"  bytes sent by execution 2 / bytes changed: "
          f"{statistics.median(r['sent'] / r['changed'] for r in results):.3f}  (goal <= 1.1)")
    print(f"  execution 2 time / execution 1 time:       "
          f"{median('exec2_s') / median('exec1_s'):.3f}  (goal <= 0.1 with dirty bitmaps)")
    print(f"  bytes read by execution 2:                 "
          f"{statistics.median(r['scanned'] for r in results) / 2**20:.1f} MiB")
    print(f"  rsync time / execution 2 time:             "
          f"{median('rsync_s') / median('exec2_s'):.2f}x  (goal >= 3)")


if __name__ == "__main__":
    main()
