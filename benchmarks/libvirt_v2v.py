"""Cold migration of the Debian test guest libvirt → libvirt, with OS morphing: ours (a real
all-in-one server and the CLI) against ``virt-v2v -i libvirt -o libvirt`` (Debian's
virt-v2v 2.2) on the same shut-off domain, one after the other, on the same host.

The source is the VMware-like Debian guest of ``coriolis.guest_image`` (root by /dev/sda1,
SATA-only initramfs) as a shut-off domain with a SATA disk in a dir pool; both tools write a
qcow2 volume into a second pool and define a virtio domain. Both run libguestfs under TCG
(``LIBGUESTFS_BACKEND_SETTINGS=force_tcg``). Printed: seconds per run (ours: the
migration's own duration from the server's timestamps; virt-v2v: its wall time), medians
and the ratio ours ÷ virt-v2v.

    .venv/bin/python benchmarks/libvirt_v2v.py [--runs 1]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.libvirt_host

from coriolis import guest_image  # noqa: E402
from coriolis.harness import bench_parser, start_server, stop_server  # noqa: E402
from tests.libvirt_host import LibvirtHost, open_path  # noqa: E402

FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
MAC = "52:54:00:12:34:56"


def source_domain(host: LibvirtHost, disk: Path) -> str:
    """A shut-off domain like a VMware VM: its one disk on SATA."""
    name = host.name("src")
    xml = (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>1024</memory>"
           "<vcpu>2</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
           "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
           f"<source file='{escape(str(disk))}'/><target dev='sda' bus='sata'/></disk>"
           f"<interface type='network'><source network='{host.name('vmnet')}'/>"
           f"<mac address='{MAC}'/><model type='e1000'/></interface></devices></domain>")
    host.conn.defineXML(xml)
    return name


def guestfs_env() -> dict[str, str]:
    return {**os.environ, "LIBGUESTFS_BACKEND": "direct",
            "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}


def run_v2v(host: LibvirtHost, source: str) -> float:
    start = time.monotonic()
    subprocess.run(["virt-v2v", "-q", "-i", "libvirt", "-ic", "qemu:///system", source,
                    "-o", "libvirt", "-oc", "qemu:///system", "-os", host.name("v2v"),
                    "-of", "qcow2", "-on", host.name("by-v2v"),
                    "-n", f"{host.name('vmnet')}:{host.name('kvmnet')}"],
                   check=True, env=guestfs_env(), stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def run_ours(work: Path, host: LibvirtHost, source: str) -> float:
    server = start_server(work / "server", {"CORIOLIS_LIBVIRT_ALLOW_LOCAL": "1"})
    try:
        for name in ("kvm-a", "kvm-b"):  # a transfer's two endpoints must differ
            server.cli("endpoint", "create", "--name", name, "--provider", "libvirt",
                       "--connection", json.dumps(host.connection_info(scratch=False)))
        created = server.cli(
            "migration", "create", "--origin-endpoint", "kvm-a", "--destination-endpoint",
            "kvm-b",
            "--instance", source, "--source-environment", '{"shutdown_timeout": 60}',
            "--network-map", json.dumps({host.name("vmnet"): host.name("kvmnet")}),
            "--destination-environment", json.dumps({
                "storage_backend": host.name("ours"), "disk_format": "qcow2",
                "instance_name": host.name("by-coriolis")}),
            "-f", "json").json()
        done = server.wait_for(["migration", "show", created["id"]],
                               lambda m: m["status"] in FINAL, timeout=3600)
        if done["status"] != "COMPLETED":
            raise SystemExit(f"our migration ended {done['status']}")
        return (dt.datetime.fromisoformat(done["last_updated"])
                - dt.datetime.fromisoformat(done["created"])).total_seconds()
    finally:
        stop_server(server)


def one_run(work: Path) -> dict[str, float]:
    host = LibvirtHost(work / "host")
    try:
        for pool in ("src", "v2v", "ours"):
            host.add_pool(pool)
        for net in ("vmnet", "kvmnet"):
            host.add_network(net)
        disk = work / "host" / "pools" / "src" / "debian.qcow2"
        shutil.copy(guest_image.build(), disk)
        open_path(disk)
        source = source_domain(host, disk)
        v2v = run_v2v(host, source)
        print(f"virt-v2v {v2v:.1f}s", flush=True)
        return {"v2v_s": v2v, "ours_s": run_ours(work, host, source)}
    finally:
        host.close()


def main() -> None:
    args = bench_parser(__doc__, runs=1).parse_args()
    results = []
    for run in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="coriolis-bench-", dir="/var/tmp"))
        try:
            results.append(one_run(work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        r = results[-1]
        print(f"run {run + 1}: ours {r['ours_s']:.1f}s virt-v2v {r['v2v_s']:.1f}s", flush=True)
    ours = statistics.median(r["ours_s"] for r in results)
    v2v = statistics.median(r["v2v_s"] for r in results)
    print(f"median: ours {ours:.1f}s virt-v2v {v2v:.1f}s ratio ours/virt-v2v {ours / v2v:.2f}")


if __name__ == "__main__":
    main()
