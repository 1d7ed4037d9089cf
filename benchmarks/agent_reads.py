"""The reader side of the agent (a source minion): a copy whose source disk is read through a
`coriolis-server writer`'s read session (HTTPS on loopback, pinned certificate, xxh3 of every
reply checked) against the same copy reading the disk directly, both into a local raw file.

For a raw and a qcow2 source of SIZE with scattered random data (``harness.source_disks``),
runs alternate, each after a `sync`. Printed: median throughput of each (allocated bytes per
second) and agent ÷ direct. Both ends share this machine's cores.

    .venv/bin/python benchmarks/agent_reads.py [--runs 3] [--size 1G]
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from coriolis.cmd.local_cloud import parse_size
from coriolis.harness import bench_parser, source_disks, start_writer, stop_server
from coriolis.transfer.base import DiskReader
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.files import RawFileWriter
from coriolis.transfer.images import open_image_reader
from coriolis.transfer.remote import AgentAddress, RemoteDiskReader

MiB = 1024 * 1024


def copy(reader: DiskReader, dst: Path) -> float:
    """Into a new sparse ``dst`` of the reader's size; seconds."""
    dst.unlink(missing_ok=True)
    with open(dst, "wb") as f:
        f.truncate(reader.size)
    writer = RawFileWriter(str(dst))
    os.sync()
    started = time.monotonic()
    try:
        copy_disk(reader, writer)
    finally:
        reader.close()
        writer.close()
    return time.monotonic() - started


def main() -> None:
    parser = bench_parser(__doc__ or "", runs=3, size="1G")
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="coriolis-reads-bench-"))
    agent = start_writer(work / "agent", [work])
    address = AgentAddress.from_json(agent.details)
    try:
        dst = work / "dst.raw"
        for fmt, src, allocated in source_disks(work, size):
            direct, via_agent = [], []
            for _ in range(args.runs):
                direct.append(copy(open_image_reader(str(src), fmt), dst))
                via_agent.append(copy(RemoteDiskReader(address, str(src), fmt), dst))
            direct_rate = allocated / statistics.median(direct) / MiB
            agent_rate = allocated / statistics.median(via_agent) / MiB
            print(f"{fmt} source ({args.size}, {allocated / MiB:.0f} MiB allocated), medians of "
                  f"{args.runs}:\n  read directly       {direct_rate:7.0f} MiB/s\n"
                  f"  through the agent   {agent_rate:7.0f} MiB/s (TLS, checksummed)\n"
                  f"  agent / direct      {agent_rate / direct_rate:7.2f}")
    finally:
        stop_server(agent)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
