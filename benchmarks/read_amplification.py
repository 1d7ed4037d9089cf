"""Issue 20, goal 1: bytes read ÷ allocated bytes of a copy with a 64 KiB block manifest (as
every migration and replica copy has), for each layout of ``coriolis.bench_layouts``, raw
and qcow2 sources, into a fresh raw file. Also printed: progress's final total (it must be
the allocated bytes) and the copy time (medians of --runs).

    .venv/bin/python benchmarks/read_amplification.py [--runs 3] [--size 1G]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from coriolis.bench_layouts import LAYOUTS, write_layout
from coriolis.cmd.local_cloud import parse_size
from coriolis.harness import bench_parser
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.files import RawFileWriter
from coriolis.transfer.images import open_image_reader
from coriolis.transfer.manifest import BlockManifest

BLOCK = 64 * 1024  # worker.tasks.MANIFEST_BLOCK


def one_copy(src: Path, fmt: str, dst: Path, size: int) -> tuple[int, int, int, float]:
    """(bytes read, allocated bytes, progress total, seconds)."""
    with open(dst, "wb") as f:
        f.truncate(size)
    reader, writer = open_image_reader(str(src), fmt), RawFileWriter(str(dst))
    totals: list[int] = []
    try:
        allocated = sum(e.length for e in reader.extents() if not e.zero)
        stats = copy_disk(reader, writer, manifest=BlockManifest(BLOCK, size),
                          progress=lambda _d, total, _r: totals.append(total))
    finally:
        reader.close()
        writer.close()
    return stats.bytes_scanned, allocated, totals[-1], stats.seconds


def main() -> None:
    args = bench_parser(__doc__, runs=3, size="1G").parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="coriolis-reads-bench-"))
    try:
        print(f"{args.size} disk, 64 KiB manifest blocks, medians of {args.runs}:")
        print(f"  {'layout':18s} {'format':6s} {'allocated MiB':>13s} {'read/alloc':>10s} "
              f"{'progress ok':>11s} {'seconds':>8s}")
        for name, layout in LAYOUTS.items():
            raw = work / "src.raw"
            write_layout(raw, size, layout(size))
            qcow2 = work / "src.qcow2"
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                            str(qcow2)], check=True)
            for fmt, src in (("raw", raw), ("qcow2", qcow2)):
                runs = [one_copy(src, fmt, work / "dst.raw", size) for _ in range(args.runs)]
                read, allocated, total, _ = runs[-1]
                seconds = statistics.median(r[3] for r in runs)
                print(f"  {name:18s} {fmt:6s} {allocated / 2**20:13.1f} "
                      f"{read / allocated:10.3f} {str(total == allocated):>11s} "
                      f"{seconds:8.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
