"""P3: a copy through the writer agent (HTTPS on loopback) against the same copy on one host,
and what zstd saves on the wire against `zstd -1`.

For a raw and a qcow2 source of SIZE with 512 MiB of random data in scattered regions, each run
copies into a fresh raw file durably, once directly and once through a `coriolis-server writer`
started for the benchmark (TLS, pinned certificate, chunks acknowledged once durable). Runs
alternate, each after a `sync`. Printed: median throughput of each (allocated bytes per
second) and agent ÷ local (goal ≥ 0.8). Then a file of half text (no runs of zeroes) and half
random bytes goes through the agent with `transfer_compression` zstd and auto: bytes on the
wire ÷ the size of `zstd -1` of the same file.

Both ends share this machine's cores, so on a small machine the agent's TLS and the sender's
compete with each other; on two hosts each has its own.

    .venv/bin/python benchmarks/writer_agent.py [--runs 5] [--size 2G]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from coriolis.cmd.local_cloud import parse_size
from coriolis.harness import RunningWriter, bench_parser, source_disks, start_writer, stop_server
from coriolis.transfer.base import DiskWriter
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.files import RawFileWriter
from coriolis.transfer.images import open_image_reader
from coriolis.transfer.remote import AgentAddress, RemoteDiskWriter

MiB = 1024 * 1024


def blank(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def copy(src: Path, fmt: str, writer: DiskWriter) -> float:
    reader = open_image_reader(str(src), fmt)
    os.sync()
    started = time.monotonic()
    try:
        copy_disk(reader, writer)
    finally:
        reader.close()
        writer.close()
    return time.monotonic() - started


def remote(agent: RunningWriter, dst: Path, compression: str) -> RemoteDiskWriter:
    return RemoteDiskWriter(AgentAddress.from_json(agent.details), uuid.uuid4().hex, str(dst),
                            "raw", compression=compression)


def text_and_random(path: Path, size: int) -> None:
    line = b"%08d the quick brown fox jumps over the lazy dog; disk block %d of %d\n"
    with open(path, "wb") as f:
        written, i = 0, 0
        while written < size // 2:
            written += f.write(line % (i, i, size))
            i += 1
        f.write(os.urandom(size - written))


def main() -> None:
    parser = bench_parser(__doc__, runs=5, size="2G")
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="coriolis-agent-bench-"))
    agent = start_writer(work / "agent", [work])
    try:
        dst = work / "dst.raw"
        for fmt, src, allocated in source_disks(work, size):
            local, via_agent = [], []
            for _ in range(args.runs):
                blank(dst, size)
                local.append(copy(src, fmt, RawFileWriter(str(dst))))
                blank(dst, size)
                via_agent.append(copy(src, fmt, remote(agent, dst, "none")))
            local_rate = allocated / statistics.median(local) / MiB
            agent_rate = allocated / statistics.median(via_agent) / MiB
            print(f"{fmt} source ({args.size}, {allocated / MiB:.0f} MiB allocated), medians of "
                  f"{args.runs}:\n  local copy          {local_rate:7.0f} MiB/s\n"
                  f"  through the agent   {agent_rate:7.0f} MiB/s (TLS, durable acks)\n"
                  f"  agent / local       {agent_rate / local_rate:7.2f}")

        mixed = work / "mixed.raw"
        text_and_random(mixed, 256 * MiB)
        zstd_size = len(subprocess.run(["zstd", "-1", "-c", str(mixed)], check=True,
                                       capture_output=True).stdout)
        print(f"half text, half random ({256} MiB): zstd -1 gives {zstd_size / MiB:.1f} MiB")
        for compression in ("zstd", "auto"):
            blank(dst, 256 * MiB)
            writer = remote(agent, dst, compression)
            seconds = copy(mixed, "raw", writer)
            wire = writer.stats.bytes_on_wire
            print(f"  {compression:4s}: {wire / MiB:6.1f} MiB on the wire, wire / zstd -1 = "
                  f"{wire / zstd_size:.3f}, {256 / seconds:.0f} MiB/s, "
                  f"{writer.stats.chunks_compressed} chunks compressed")
    finally:
        stop_server(agent)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
