"""Live replica of a RUNNING libvirt domain: how much execution 2 reads, and how fast.

A running domain (qemu TCG, no OS: its firmware waits, which is all a live backup needs) has
a 2 GiB qcow2 disk, allocated in full; it is replicated to a `local` cloud through a real
all-in-one server and the CLI (execution 1: a checkpoint and a full pull-mode backup). Then
1 % of its 64 KiB blocks are rewritten through qemu-io over the monitor (as its guest
would) and execution 2 runs (an incremental backup since the checkpoint). Printed: bytes
read by execution 2 ÷ bytes changed (goal ≤ 1.05) and execution 2 ÷ execution 1 time
(server-side durations; goal ≤ 0.1).

    .venv/bin/python benchmarks/libvirt_live_replica.py [--runs 1] [--size 2G]
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coriolis.cmd.local_cloud import parse_size  # noqa: E402
from coriolis.harness import (  # noqa: E402
    RunningServer,
    bench_parser,
    local_cloud,
    start_server,
    stop_server,
)
from tests.libvirt_host import LibvirtHost  # noqa: E402

BLOCK = 64 * 1024
CHUNK = 64 * 1024 * 1024


def execute(server: RunningServer, replica: str, instance: str) -> tuple[float, dict]:
    ex = server.cli("replica", "execute", replica, "-f", "json").json()
    done = server.wait_for(["replica", "execution", "show", replica, ex["id"]],
                           lambda e: e["status"] in {"COMPLETED", "ERROR", "CANCELED"},
                           timeout=1800)
    if done["status"] != "COMPLETED":
        raise SystemExit(f"execution ended {done['status']}")
    elapsed = (dt.datetime.fromisoformat(done["last_updated"])
               - dt.datetime.fromisoformat(done["created"])).total_seconds()
    shown = server.cli("replica", "show", replica, "--show-instances-data", "-f", "json").json()
    return elapsed, shown["instances-data"][instance]["volumes_info"][0]


def one_run(work: Path, size: int, seed: int) -> dict[str, float]:
    host = LibvirtHost(work / "libvirt")
    server = None
    try:
        image = host.root / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(size)],
                       check=True)
        writes = [a for i in range(size // CHUNK)
                  for a in ("-c", f"write -P {i % 250 + 1} {i * CHUNK} {CHUNK}")]
        subprocess.run(["qemu-io", "-f", "qcow2", *writes, str(image)], check=True,
                       capture_output=True)
        net = host.add_network("lan")
        dom = host.define_domain("vm", [(image, "qcow2")], net.name(), running=True)
        dst = work / "clouds" / "dst"
        local_cloud("init", str(dst), "--network", "lan")
        server = start_server(work / "server", {"CORIOLIS_LOCAL_ROOT": str(work / "clouds")})
        server.cli("endpoint", "create", "--name", "a", "--provider", "libvirt",
                   "--skip-validation", "--connection", json.dumps(host.connection_info()))
        server.cli("endpoint", "create", "--name", "b", "--provider", "local",
                   "--connection", json.dumps({"path": str(dst)}))
        replica = server.cli(
            "replica", "create", "--origin-endpoint", "a", "--destination-endpoint", "b",
            "--instance", dom.name(), "--source-environment", '{"shutdown_timeout": 5}',
            "--destination-environment", '{"storage_backend": "default"}',
            "--network-map", json.dumps({net.name(): "lan"}), "-f", "value", "-c", "id"
        ).stdout.strip()
        t1, _ = execute(server, replica, dom.name())
        rng = random.Random(seed)
        blocks = rng.sample(range(size // BLOCK), size // BLOCK // 100)
        host.guest_write(dom, [(rng.randrange(1, 255), b * BLOCK, BLOCK) for b in blocks])
        t2, volume = execute(server, replica, dom.name())
    finally:
        if server is not None:
            stop_server(server)
        host.close()
    return {"exec1_s": t1, "exec2_s": t2, "changed": len(blocks) * BLOCK,
            "read": volume["bytes_scanned"], "sent": volume["bytes_sent"]}


def main() -> None:
    parser = bench_parser(__doc__, runs=1, size="2G")
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="coriolis-bench-lv-"))
        try:
            results.append(one_run(work, parse_size(args.size), seed=run + 1))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        r = results[-1]
        print(f"run {run + 1}: exec1 {r['exec1_s']:.2f}s exec2 {r['exec2_s']:.2f}s "
              f"changed {r['changed'] / 2**20:.1f} MiB read {r['read'] / 2**20:.1f} MiB "
              f"sent {r['sent'] / 2**20:.1f} MiB", flush=True)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    print(f"\nmedians over {len(results)} run(s) ({args.size} qcow2 disk of a running domain, "
          "1 % of 64 KiB blocks changed):")
    print(f"  bytes read by execution 2 / bytes changed: "
          f"{statistics.median(r['read'] / r['changed'] for r in results):.3f}  (goal <= 1.05)")
    print(f"  execution 2 time / execution 1 time:       "
          f"{median('exec2_s') / median('exec1_s'):.3f}  (goal <= 0.1)")


if __name__ == "__main__":
    main()
