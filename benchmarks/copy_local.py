"""P1: a local disk copy by the data path against `qemu-img convert` and `nbdcopy`.

For a raw and a qcow2 source of SIZE with 512 MiB of random data in scattered 1 MiB regions,
each tool copies into a fresh raw file, durably (ours fsyncs; `qemu-img convert` is followed by
`sync FILE`; `nbdcopy --flush`); runs alternate between tools, each after a `sync`. Printed:
median wall times, our time ÷ each tool's (goals: ≤ 1.1 against qemu-img, ≤ 1.0 against
nbdcopy), and our bytes read ÷ allocated bytes (goal ≤ 1.01).

    .venv/bin/python benchmarks/copy_local.py [--runs 5] [--size 2G]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from coriolis.cmd.local_cloud import parse_size
from coriolis.harness import bench_parser, source_disks
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.files import RawFileWriter
from coriolis.transfer.images import open_image_reader


def blank(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def ours(src: Path, fmt: str, dst: Path, size: int) -> int:
    reader, writer = open_image_reader(str(src), fmt), RawFileWriter(str(dst))
    try:
        return copy_disk(reader, writer).bytes_scanned
    finally:
        reader.close()
        writer.close()


def qemu_img(src: Path, fmt: str, dst: Path, size: int) -> int:
    subprocess.run(["qemu-img", "convert", "-W", "-m", "8", "-f", fmt, "-O", "raw", str(src),
                    str(dst)], check=True)
    subprocess.run(["sync", str(dst)], check=True)  # durable, as ours is
    return 0


def nbdcopy(src: Path, fmt: str, dst: Path, size: int) -> int:
    source = str(src) if fmt == "raw" else f"[ qemu-nbd -r -f {fmt} {src} ]"
    cmd = ["nbdcopy", "--flush", "--", *source.split(), str(dst)] if fmt != "raw" else \
        ["nbdcopy", "--flush", str(src), str(dst)]
    subprocess.run(cmd, check=True)
    return 0


def timed(fn: Callable[..., int], src: Path, fmt: str, dst: Path, size: int,
          ) -> tuple[float, int]:
    """One timed run. Untimed before it: the previous output is deleted, a blank
    destination made (qemu-img convert makes its own), and dirty pages written out, so that
    no tool pays for another's writeback or file deletion."""
    dst.unlink(missing_ok=True)
    if fn is not qemu_img:
        blank(dst, size)
    os.sync()
    time.sleep(0.2)
    started = time.monotonic()
    scanned = fn(src, fmt, dst, size)
    return time.monotonic() - started, scanned


def main() -> None:
    parser = bench_parser(__doc__, runs=5, size="2G")
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="coriolis-copy-bench-"))
    try:
        dst = work / "dst.raw"
        tools = {"ours": ours, "qemu-img convert": qemu_img}  # + sync
        if shutil.which("nbdcopy"):
            tools["nbdcopy"] = nbdcopy
        for fmt, src, allocated in source_disks(work, size):
            times: dict[str, list[float]] = {name: [] for name in tools}
            scanned = 0
            for _ in range(args.runs):
                for name, fn in tools.items():
                    seconds, read = timed(fn, src, fmt, dst, size)
                    times[name].append(seconds)
                    scanned = read or scanned
            med = {name: statistics.median(values) for name, values in times.items()}
            print(f"{fmt} source ({args.size}, {allocated / 2**20:.0f} MiB allocated), "
                  f"medians of {args.runs}:")
            for name, value in med.items():
                runs = " ".join(f"{t:.2f}" for t in times[name])
                print(f"  {name:18s} {value:6.2f}s   (runs: {runs})")
            for name in tools:
                if name != "ours":
                    print(f"  ours / {name:11s} {med['ours'] / med[name]:6.2f}")
            print(f"  bytes read / allocated: {scanned / allocated:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
