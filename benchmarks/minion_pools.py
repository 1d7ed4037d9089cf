"""Time to first byte of a migration: with a warm minion pool, with a minion made for the
transfer (a cold pool: allocated, then used), and with no minion at all (the local cloud's
disks written in place by the worker).

Time to first byte: from the create request to the disk copy task (REPLICATE_DISKS) running,
polled through the Python bindings every 20 ms, for a 32 MiB instance on an all-in-one
server of this machine. Printed: the median of each over --runs, and warm ÷ cold.

    .venv/bin/python benchmarks/minion_pools.py [--runs 5]

With ``--source``: the same for a SOURCE pool of the local source cloud (its minion, a
writer agent serving the cloud's folder, reads the source disk: ``--origin-minion-pool-id``).

With ``--libvirt``: the same figures for a local → libvirt migration (the system libvirtd,
TCG) whose destination pool makes libvirt minions (helper domains booted from the minion
image, built once into the cache), a warm pool against a pool allocated for the transfer
(one minion booted to agent-ready), and no pool (the worker writes the volumes itself).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from coriolis.harness import bench_parser, local_cloud, start_server, stop_server

POLL = 0.02
FINAL = {"COMPLETED", "ERROR", "CANCELED", "ERROR_ALLOCATING_MINIONS"}


def copy_running(tasks: list[Any]) -> bool:
    return any((t["task_type"] if isinstance(t, dict) else t.task_type) == "REPLICATE_DISKS"
               and (t["status"] if isinstance(t, dict) else t.status)
               in ("RUNNING", "COMPLETED") for t in tasks)


def migrate(client: Any, src: str, dst: str, pool: str | None,
            target: dict[str, Any] | None = None, side: str = "destination") -> tuple[float, str]:
    """Seconds from the create request to the copy running; the migration's id."""
    target = target or {"env": {"storage_backend": "bulk"}, "network": "lan"}
    started = time.monotonic()
    migration = client.migrations.create(
        src, dst, {"snapshot": False},
        {**target["env"], "instance_name": f"{target.get('prefix', 'vm')}-"
                                           f"{uuid.uuid4().hex[:6]}"},
        ["vm"], network_map={"lan": target["network"]}, skip_os_morphing=True,
        replication_count=1, **{("origin" if side == "source" else "destination")
                                + "_minion_pool_id": pool})
    first = None
    while True:
        m = client.migrations.get(migration.id)
        if first is None and copy_running(m.tasks or []):
            first = time.monotonic() - started
        if m.last_execution_status in FINAL:
            assert m.last_execution_status == "COMPLETED", m.last_execution_status
            return first or time.monotonic() - started, migration.id
        time.sleep(POLL)


def wait_pool(client: Any, pool_id: str, status: str) -> None:
    while client.minion_pools.get(pool_id).status != status:
        time.sleep(POLL)


def report(results: dict[str, list[float]], runs: int) -> None:
    medians = {k: statistics.median(v) for k, v in results.items()}
    print(json.dumps({k: round(v, 3) for k, v in medians.items()}))
    for name, value in medians.items():
        print(f"time to first byte, {name}: {value:.3f} s (median of {runs})")
    print(f"warm ÷ cold: {medians['warm pool'] / medians['cold pool']:.2f}")


def libvirt_figures(runs: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.libvirt_host
    from tests.libvirt_host import libvirt_host

    with tempfile.TemporaryDirectory() as tmp, libvirt_host() as host:
        host.prefix = f"mn-{host.prefix[2:]}"
        host.add_pool("pool")
        host.add_network("net")
        server = start_server(Path(tmp) / "data", {"CORIOLIS_LIBVIRT_ALLOW_LOCAL": "1"})
        try:
            client = server.bindings()
            src = server.cloud_dir("b-src")
            local_cloud("init", str(src), "--network", "lan")
            local_cloud("add-instance", str(src), "vm", "--disk-size", "32M", "--network",
                        "lan", "--seed", "7")
            src_id = server.local_endpoint("b-src", src)
            dst_id = str(server.cli(
                "endpoint", "create", "--name", "b-lv", "--provider", "libvirt",
                "--connection", json.dumps(host.connection_info(scratch=False)), "-f",
                "json").json()["id"])
            target = {"env": {"storage_backend": host.name("pool"), "domain_type": "qemu"},
                      "network": host.name("net"), "prefix": host.name("vm")}
            env = {"storage_pool": host.name("pool"), "name_prefix": host.prefix}
            started = time.monotonic()
            warm = client.minion_pools.create("warm", dst_id, "destination", "linux", env,
                                              minion_max_idle_time=3600)
            wait_pool(client, warm.id, "ALLOCATED")
            print(f"warm pool (1 libvirt minion) allocated in "
                  f"{time.monotonic() - started:.1f} s (the image cached)")
            results: dict[str, list[float]] = {"warm pool": [], "cold pool": [],
                                               "no pool": []}
            for _ in range(runs):
                results["no pool"].append(migrate(client, src_id, dst_id, None, target)[0])
                results["warm pool"].append(migrate(client, src_id, dst_id, warm.id,
                                                    target)[0])
                started = time.monotonic()
                cold = client.minion_pools.create("cold", dst_id, "destination", "linux", env)
                wait_pool(client, cold.id, "ALLOCATED")
                made = time.monotonic() - started
                results["cold pool"].append(
                    made + migrate(client, src_id, dst_id, cold.id, target)[0])
                client.minion_pools.deallocate_minion_pool(cold.id, False)
                wait_pool(client, cold.id, "DEALLOCATED")
                client.minion_pools.delete(cold.id)
            client.minion_pools.deallocate_minion_pool(warm.id, False)
            wait_pool(client, warm.id, "DEALLOCATED")
            report(results, runs)
        finally:
            stop_server(server)


def main() -> None:
    parser = bench_parser(__doc__ or "", runs=5)
    parser.add_argument("--libvirt", action="store_true",
                        help="a libvirt destination with libvirt minions")
    parser.add_argument("--source", action="store_true",
                        help="source pools (the source disks read through a minion)")
    args = parser.parse_args()
    side = "source" if args.source else "destination"
    if args.libvirt:
        libvirt_figures(args.runs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data")
        try:
            client = server.bindings()
            src, dst = server.cloud_dir("b-src"), server.cloud_dir("b-dst")
            local_cloud("init", str(src), "--network", "lan")
            local_cloud("add-instance", str(src), "vm", "--disk-size", "32M", "--network",
                        "lan", "--seed", "7")
            local_cloud("init", str(dst), "--network", "lan", "--storage", "bulk:raw")
            src_id, dst_id = server.local_endpoint("b-src", src), \
                server.local_endpoint("b-dst", dst)
            env = {"verbose": False}
            pool_endpoint = src_id if args.source else dst_id
            warm = client.minion_pools.create("warm", pool_endpoint, side, "linux", env,
                                              minion_max_idle_time=3600)
            wait_pool(client, warm.id, "ALLOCATED")
            results: dict[str, list[float]] = {"warm pool": [], "cold pool": [],
                                               "no pool": []}
            for _ in range(args.runs):
                results["no pool"].append(migrate(client, src_id, dst_id, None)[0])
                results["warm pool"].append(migrate(client, src_id, dst_id, warm.id,
                                                    side=side)[0])
                started = time.monotonic()
                cold = client.minion_pools.create("cold", pool_endpoint, side, "linux", env)
                wait_pool(client, cold.id, "ALLOCATED")
                made = time.monotonic() - started
                results["cold pool"].append(made + migrate(client, src_id, dst_id, cold.id,
                                                           side=side)[0])
                client.minion_pools.deallocate_minion_pool(cold.id, False)
                wait_pool(client, cold.id, "DEALLOCATED")
                client.minion_pools.delete(cold.id)
            # Its minion is an agent process of its own session: stopped with the pool.
            client.minion_pools.deallocate_minion_pool(warm.id, False)
            wait_pool(client, warm.id, "DEALLOCATED")
            report(results, args.runs)
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
