"""P3: a copy through the writer agent (HTTPS on loopback) against the same copy on one host,
and what zstd saves on the wire against `zstd -1`.

For a raw and a qcow2 source of SIZE with 512 MiB of random data in scattered regions, each run
copies into a fresh raw file durably, once directly, once through a `coriolis-server writer`
started for the benchmark over HTTPS (TLS, pinned certificate, chunks acknowledged once
durable) and once through the same agent's TLS NBD export with libnbd
(`writer_agent_transport` nbd: flushed through NBD, then acknowledged). Runs alternate, each
after a `sync`. Printed: median throughput of each (allocated bytes per second), the CPU
seconds both ends used (this process and its children; the agent and its qemu-nbd) and each
path ÷ local (goal ≥ 0.8). Then a file of half text (no runs of zeroes) and half
random bytes goes through the agent with `transfer_compression` zstd and auto: bytes on the
wire ÷ the size of `zstd -1` of the same file.

Both ends share this machine's cores, so on a small machine the agent's TLS and the sender's
compete with each other; on two hosts each has its own.

    .venv/bin/python benchmarks/writer_agent.py [--runs 5] [--size 2G]
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from coriolis.cmd.local_cloud import parse_size
from coriolis.harness import RunningWriter, bench_parser, source_disks, start_writer, stop_server
from coriolis.transfer.base import DiskWriter
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.files import RawFileWriter
from coriolis.transfer.images import open_image_reader
from coriolis.transfer.nbd_writer import open_agent_writer
from coriolis.transfer.remote import AgentAddress, RemoteDiskWriter

MiB = 1024 * 1024


def blank(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def cpu_seconds(agent: RunningWriter | None = None) -> float:
    """CPU time of this process and its reaped children, or of the agent and its reaped
    children (qemu-nbd)."""
    if agent is None:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    fields = Path(f"/proc/{agent.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def copy(src: Path, fmt: str, writer: Callable[[], DiskWriter],
         agent: RunningWriter | None = None, cpu: list[float] | None = None) -> float:
    reader = open_image_reader(str(src), fmt)
    os.sync()
    began_cpu = cpu_seconds() + (cpu_seconds(agent) if agent else 0.0)
    started = time.monotonic()
    opened = writer()
    try:
        copy_disk(reader, opened)
    finally:
        reader.close()
        opened.close()
    seconds = time.monotonic() - started
    if cpu is not None:
        cpu.append(cpu_seconds() + (cpu_seconds(agent) if agent else 0.0) - began_cpu)
    return seconds


def remote(agent: RunningWriter, dst: Path, compression: str) -> RemoteDiskWriter:
    return RemoteDiskWriter(AgentAddress.from_json(agent.details), uuid.uuid4().hex, str(dst),
                            "raw", compression=compression)


def nbd(agent: RunningWriter, dst: Path) -> DiskWriter:
    return open_agent_writer(AgentAddress.from_json(agent.details), uuid.uuid4().hex, str(dst),
                             "raw", transport="nbd", strict=True)


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
            times: dict[str, list[float]] = {"local": [], "https": [], "nbd": []}
            cpus: dict[str, list[float]] = {"local": [], "https": [], "nbd": []}
            for _ in range(args.runs):
                for path, make in (("local", lambda: RawFileWriter(str(dst))),
                                   ("https", lambda: remote(agent, dst, "none")),
                                   ("nbd", lambda: nbd(agent, dst))):
                    blank(dst, size)
                    times[path].append(copy(src, fmt, make, None if path == "local" else agent,
                                            cpus[path]))
            rates = {k: allocated / statistics.median(v) / MiB for k, v in times.items()}
            print(f"{fmt} source ({args.size}, {allocated / MiB:.0f} MiB allocated), medians of "
                  f"{args.runs} (runs in seconds; CPU seconds of both ends):")
            for path, label in (("local", "local copy"), ("https", "agent over HTTPS"),
                                ("nbd", "agent over TLS NBD")):
                runs = "/".join(f"{t:.2f}" for t in times[path])
                print(f"  {label:19s} {rates[path]:7.0f} MiB/s  ÷ local "
                      f"{rates[path] / rates['local']:5.2f}  CPU "
                      f"{statistics.median(cpus[path]):5.2f} s  runs {runs}")

        mixed = work / "mixed.raw"
        text_and_random(mixed, 256 * MiB)
        zstd_size = len(subprocess.run(["zstd", "-1", "-c", str(mixed)], check=True,
                                       capture_output=True).stdout)
        print(f"half text, half random ({256} MiB): zstd -1 gives {zstd_size / MiB:.1f} MiB")
        for compression in ("zstd", "auto"):
            blank(dst, 256 * MiB)
            opened: list[RemoteDiskWriter] = []

            def sender(compression: str = compression,
                       opened: list[RemoteDiskWriter] = opened) -> DiskWriter:
                opened.append(remote(agent, dst, compression))
                return opened[-1]

            seconds = copy(mixed, "raw", sender)
            writer = opened[0]
            wire = writer.stats.bytes_on_wire
            print(f"  {compression:4s}: {wire / MiB:6.1f} MiB on the wire, wire / zstd -1 = "
                  f"{wire / zstd_size:.3f}, {256 / seconds:.0f} MiB/s, "
                  f"{writer.stats.chunks_compressed} chunks compressed")
    finally:
        stop_server(agent)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
