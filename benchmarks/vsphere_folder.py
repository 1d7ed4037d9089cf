"""P-vsphere: reading a VM's flat VMDK from vcsim's datastore HTTP interface (/folder,
loopback HTTPS) through the provider's platform reader and the copy pipeline into a raw file,
against `curl` downloading the same flat VMDK into a file. vcsim is built and started by
``coriolis.vcsim``; the VM's disk (SIZE of random data) is PUT through /folder first.
Printed: median wall times, MiB/s, and our throughput ÷ curl's (goal ≥ 0.8).

With ``--layout sparse`` the disk is a monolithicSparse VMDK of the same (fully allocated)
data, read through qemu's vmdk driver over the nbdkit curl mounts (``vmdk_chain``); curl
downloads that VMDK file.

    .venv/bin/python -m benchmarks.vsphere_folder [--runs 3] [--size 512M] [--layout sparse]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from coriolis import vcsim
from coriolis.cmd.local_cloud import parse_size
from coriolis.harness import bench_parser
from coriolis.providers.vmware_vsphere import connection as conn
from coriolis.providers.vmware_vsphere.provider import VSphereProvider
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.files import RawFileWriter
from coriolis.transfer.locations import from_json
from tests.vcsim_host import create_vm, put, session, write_disk


def main() -> None:
    parser = bench_parser(__doc__ or "", runs=3, size="512M")
    parser.add_argument("--layout", choices=("flat", "sparse"), default="flat")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="vs-bench-") as tmp:
        work = Path(tmp)
        server = vcsim.start(work)
        try:
            source = work / "source.raw"
            with open(source, "wb") as f:
                for _ in range(size // (16 << 20)):
                    f.write(os.urandom(16 << 20))
            with session(server) as si:
                create_vm(si, "vs-bench", [size])
                write_disk(server, si, "vs-bench", 0, source)
                if args.layout == "sparse":
                    sparse = work / "vs-bench_0.vmdk"
                    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                                    "subformat=monolithicSparse", str(source), str(sparse)],
                                   check=True)
                    put(server, si, "vs-bench/vs-bench_0.vmdk", sparse)
            provider, ci = VSphereProvider(), server.connection_info()
            info = provider.get_instance(ci, {}, "vs-bench")
            resources = provider.deploy_source_resources(ci, {}, info, transfer_id="bench")
            loc = from_json(resources["disks"]["scsi0-0"])
            target = work / "copy.raw"

            def ours() -> None:
                with open(target, "wb") as f:
                    f.truncate(size)
                reader = provider.open_platform_reader(ci, {}, loc)  # type: ignore[arg-type]
                writer = RawFileWriter(str(target))
                try:
                    copy_disk(reader, writer)
                finally:
                    reader.close()
                    writer.close()

            with session(server) as si:
                cookie = conn.session_cookie(si)
                params = loc.params  # type: ignore[attr-defined]
                file = params["chain"]["top"] if args.layout == "sparse" else params["path"]
                url = conn.folder_url(ci, "DC0", "LocalDS_0", file)
                curl_out = work / "curl.raw"

                def curl() -> None:
                    subprocess.run(["curl", "-sSfk", "-o", str(curl_out), "-H",
                                    f"Cookie: {cookie}", url], check=True)

                times: dict[str, list[float]] = {"ours": [], "curl": []}
                for _ in range(args.runs):
                    for name, run in (("ours", ours), ("curl", curl)):
                        subprocess.run(["sync"], check=True)
                        started = time.monotonic()
                        run()
                        times[name].append(time.monotonic() - started)
            assert target.read_bytes() == source.read_bytes(), "our copy differs"
            provider.delete_source_resources(ci, {}, {**resources, "transfer_id": "bench"})
        finally:
            server.stop()
    mib = size / (1 << 20)
    ours_t, curl_t = statistics.median(times["ours"]), statistics.median(times["curl"])
    print(f"size {mib:.0f} MiB, layout {args.layout}, runs {args.runs}")
    print(f"ours  {ours_t:.2f} s  {mib / ours_t:.0f} MiB/s")
    print(f"curl  {curl_t:.2f} s  {mib / curl_t:.0f} MiB/s")
    print(f"ratio (ours throughput / curl's) {curl_t / ours_t:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
