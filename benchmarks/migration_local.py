"""Issue 20, goals 2 and 7: a whole migration (create -> COMPLETED), local -> local, against
`qemu-img convert -W -m 8` + `sync` (raw) or `nbdcopy --flush` from `qemu-nbd` (qcow2) of
the same disk, alternating in one run.

The source instance (shut off, as a migration's source usually is) has one disk of SIZE
holding DATA in 1 MiB pieces spread evenly (default 8 GiB with 3 GiB: a piece every 2 MiB).
A real all-in-one server and the Python bindings: `migrations.create` (default
replication_count, OS morphing skipped) until the execution is COMPLETED, polled every
0.2 s; the time is the execution's own (server timestamps, created -> last updated), and the
wall time from the create call is printed beside it. The destination is a raw file,
fsynced; the tools write a raw file too, durably. Before each timed run, dirty pages are
written out (`sync`) and the previous output deleted. Printed: medians, ratios, MiB/s of
data, the bytes the copy read ÷ allocated, and the server's peak RSS (VmHWM; the worker
runs in it).

    .venv/bin/python benchmarks/migration_local.py [--runs 3] [--size 8G] [--data 3G]
        [--format raw|qcow2]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from coriolis.bench_layouts import spread, write_layout
from coriolis.cmd.local_cloud import parse_size
from coriolis.harness import RunningServer, bench_parser, local_cloud, start_server, stop_server

MiB = 2**20


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def migrate(server: RunningServer, api: Any, src: str, dst: str, name: str) -> dict[str, Any]:
    started = time.monotonic()
    migration = api.migrations.create(src, dst, {"snapshot": False},
                                      {"storage_backend": "default"}, [name],
                                      network_map={"default": "default"},
                                      skip_os_morphing=True)
    while True:
        shown = api.migrations.get(migration.id)
        if shown.last_execution_status in {"COMPLETED", "ERROR", "CANCELED"}:
            break
        time.sleep(0.2)
    wall = time.monotonic() - started
    if shown.last_execution_status != "COMPLETED":
        raise SystemExit(f"migration ended {shown.last_execution_status}:\n"
                         f"{server.log_tail()}")
    view = shown.to_dict()
    # The migration's own duration (server timestamps: created -> the update that made it
    # COMPLETED); polling adds up to 0.2 s to the wall time.
    elapsed = (dt.datetime.fromisoformat(view["updated_at"])
               - dt.datetime.fromisoformat(view["created_at"])).total_seconds()
    info = view.get("info") or {}
    volume = ((info.get(name) or {}).get("volumes_info") or [{}])[0]
    spans = [(t["task_type"], _span(view["created_at"], t["created_at"]),
              _span(view["created_at"], t["updated_at"])) for t in view.get("tasks") or []]
    return {"seconds": elapsed, "wall": wall, "scanned": volume.get("bytes_scanned", 0),
            "id": migration.id, "tasks": spans}


def _span(start: str, end: str) -> float:
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def tool(src: Path, fmt: str, dst: Path) -> float:
    started = time.monotonic()
    if fmt == "raw":
        subprocess.run(["qemu-img", "convert", "-W", "-m", "8", "-f", fmt, "-O", "raw",
                        str(src), str(dst)], check=True)
        subprocess.run(["sync", str(dst)], check=True)
    else:
        with open(dst, "wb") as f:
            f.truncate(src.stat().st_size if fmt == "raw" else _virtual_size(src, fmt))
        subprocess.run(["nbdcopy", "--flush", "--", "[", "qemu-nbd", "-r", "-f", fmt,
                        str(src), "]", str(dst)], check=True)
    return time.monotonic() - started


def _virtual_size(path: Path, fmt: str) -> int:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-f", fmt, str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(json.loads(out)["virtual-size"])


def settle() -> None:
    os.sync()
    time.sleep(0.5)


def main() -> None:
    parser = bench_parser(__doc__, runs=3, size="8G")
    parser.add_argument("--data", default="3G", help="allocated data, in 1 MiB pieces")
    parser.add_argument("--format", default="raw", choices=("raw", "qcow2"))
    parser.add_argument("--tasks", action="store_true",
                        help="print when each task of each migration was created and last "
                        "updated (seconds after the migration was created)")
    args = parser.parse_args()
    size, data = parse_size(args.size), parse_size(args.data)
    work = Path(tempfile.mkdtemp(prefix="coriolis-migration-bench-"))
    server = None
    try:
        clouds = work / "clouds"
        src_cloud, dst_cloud = clouds / "src", clouds / "dst"
        local_cloud("init", str(src_cloud))
        local_cloud("init", str(dst_cloud))
        raw = work / "layout.raw"
        allocated = write_layout(raw, size, spread(size, data))
        if args.format == "qcow2":
            source = work / "layout.qcow2"
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                            str(source)], check=True)
            raw.unlink()
        else:
            source = raw
        server = start_server(work / "server", {"CORIOLIS_LOCAL_ROOT": str(clouds)})
        api = server.bindings()
        src = api.endpoints.create("src", "local", {"path": str(src_cloud)}, "").id
        dst = api.endpoints.create("dst", "local", {"path": str(dst_cloud)}, "").id
        ours: list[dict[str, Any]] = []
        theirs: list[float] = []
        out = work / "tool-out.raw"
        for run in range(args.runs):
            name = f"vm{run}"
            local_cloud("add-instance", str(src_cloud), name, "--disk-size", "1M",
                        "--disk-format", args.format)
            folder = src_cloud / "instances" / name
            disk = folder / f"disk0.{args.format}"
            os.link(source, disk.with_suffix(".link"))
            os.replace(disk.with_suffix(".link"), disk)
            desc = json.loads((folder / "instance.json").read_text())
            desc["power_state"] = "stopped"
            (folder / "instance.json").write_text(json.dumps(desc))
            if run:  # the previous migration's disk goes before this run
                shutil.rmtree(dst_cloud / "storage", ignore_errors=True)
                shutil.rmtree(dst_cloud / "instances", ignore_errors=True)
            settle()
            ours.append(migrate(server, api, src, dst, name))
            out.unlink(missing_ok=True)
            settle()
            theirs.append(tool(source, args.format, out))
            if args.tasks:
                for task_type, first, last in ours[-1]["tasks"]:
                    print(f"    {task_type:45s} {first:7.2f} -> {last:7.2f}")
            print(f"run {run + 1}: migration {ours[-1]['seconds']:.2f}s "
                  f"(wall {ours[-1]['wall']:.2f}s), tool {theirs[-1]:.2f}s", flush=True)
        med = statistics.median(r["seconds"] for r in ours)
        med_wall = statistics.median(r["wall"] for r in ours)
        med_tool = statistics.median(theirs)
        name = "qemu-img convert -W -m 8 + sync" if args.format == "raw" else \
            "nbdcopy --flush from qemu-nbd"
        print(f"\n{args.format} {args.size} disk, {allocated / MiB:.0f} MiB of data; "
              f"medians of {args.runs} (2-core machine shared with other sessions):")
        print(f"  migration (server-side): {med:7.2f}s  {allocated / MiB / med:7.1f} MiB/s "
              f"(wall from create: {med_wall:.2f}s)")
        print(f"  {name}: {med_tool:7.2f}s  {allocated / MiB / med_tool:7.1f} MiB/s")
        print(f"  migration / tool: {med / med_tool:.2f}  (wall: {med_wall / med_tool:.2f})")
        scanned = statistics.median(r["scanned"] for r in ours)
        print(f"  bytes read / allocated: {scanned / allocated:.3f}")
        print(f"  server peak RSS: {peak_rss_mib(server.process.pid):.0f} MiB")
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
