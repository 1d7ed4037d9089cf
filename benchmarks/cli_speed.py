"""How long one `coriolis endpoint list` takes, end to end (a new process each time), against
an all-in-one server with two endpoints:

- ``python -c pass``: the interpreter alone, the floor;
- ``login each time``: ``CORIOLIS_TOKEN_CACHE=0``, a password login (``POST
  /identity/v3/auth/tokens``) and the request, as before the token cache;
- ``token reused``: the token kept between commands (``~/.cache/coriolis/tokens``), one
  request;
- the same two while a disk copy runs on the server: migrations of instances with
  ``--size`` disks, ``--data`` of it random data, one after another; a sample counts only when
  a migration was RUNNING both before and after it.

Printed: the median, min and max of ``--runs`` samples of each, in seconds, how much of it
the server spent answering (its access log), the command's own CPU time (user + system: what
the machine's load changes least), and the load average (the machine is shared).

    .venv/bin/python benchmarks/cli_speed.py [--runs 9] [--size 4G] [--data 2G] [--no-copy]
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from coriolis.cmd.local_cloud import add_instance, init_cloud, parse_size
from coriolis.harness import CLI, bench_parser, start_server, stop_server


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command: user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return elapsed, cpu


ACCESS_RE = re.compile(r"\] (GET|POST) (\S+) \d+ ([\d.]+) ms")


class Sampler:
    """Runs a command, timing it; also sums the server's own times (its access log) of the
    requests the command made."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = log.stat().st_size
        self.walls: dict[str, list[float]] = {}
        self.cpus: dict[str, list[float]] = {}
        self.servers: dict[str, list[float]] = {}

    def measure(self, label: str, cmd: list[str], env: dict[str, str]) -> None:
        wall, cpu = timed(cmd, env)
        time.sleep(0.05)  # the access line is written after the answer
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            text = f.read()
        self.offset += len(text)
        server = sum(float(m.group(3)) / 1000
                     for m in ACCESS_RE.finditer(text.decode(errors="replace")))
        self.walls.setdefault(label, []).append(wall)
        self.cpus.setdefault(label, []).append(cpu)
        self.servers.setdefault(label, []).append(server)

    def discard_last(self, label: str) -> None:
        self.walls[label].pop()
        self.cpus[label].pop()
        self.servers[label].pop()

    def report(self, label: str, title: str) -> None:
        walls, servers = self.walls.get(label, []), self.servers.get(label, [])
        if not walls:
            print(f"{title:<34} no sample")
            return
        print(f"{title:<34} median {statistics.median(walls):.3f} s "
              f"(min {min(walls):.3f}, max {max(walls):.3f}, n={len(walls)}); "
              f"of which in the server {statistics.median(servers):.3f} s; "
              f"CPU of the command {statistics.median(self.cpus[label]):.3f} s")


class CopyLoad:
    """Migrations of ``vm0``, ``vm1``... started one after another, so that a copy runs."""

    def __init__(self, api: Any, src: str, dst: str, count: int) -> None:
        self.api, self.src, self.dst = api, src, dst
        self.names = [f"vm{i}" for i in range(count)]
        self.current: str | None = None

    def running(self) -> bool:
        """True when a migration is RUNNING; starts the next one when none is."""
        if self.current is not None:
            status = self.api.migrations.get(self.current).last_execution_status
            if status == "RUNNING":
                return True
        if not self.names:
            return False
        migration = self.api.migrations.create(
            self.src, self.dst, {"snapshot": False}, {"storage_backend": "default"},
            [self.names.pop(0)], network_map={"lan": "lan"}, skip_os_morphing=True,
            replication_count=1)
        self.current = str(migration.id)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.api.migrations.get(self.current).last_execution_status == "RUNNING":
                time.sleep(1.0)  # past the first tasks, into the copy
                return True
            time.sleep(0.2)
        return False


def sample_during(load: CopyLoad, sampler: Sampler, runs: int, label: str,
                  cmd: list[str], env: dict[str, str]) -> None:
    for _ in range(runs * 4):
        if len(sampler.walls.get(label, [])) >= runs or not load.running():
            return
        sampler.measure(label, cmd, env)
        if not load.running():
            sampler.discard_last(label)


def run(runs: int, size: int, data: int, copy: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="coriolis-cli-speed-"))
    server = None
    try:
        clouds = work / "clouds"
        for cloud in ("src", "dst"):
            init_cloud(clouds / cloud, networks=["lan"])
        count = 4 if copy else 0
        for i in range(count):
            add_instance(clouds / "src", f"vm{i}", disk_size=size, network="lan", seed=i,
                         allocated_fraction=data / size)
        server = start_server(work / "data", {"CORIOLIS_LOCAL_ROOT": str(clouds)})
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(server.env)
        env["XDG_CACHE_HOME"] = str(work / "cache")
        cold_env = {**env, "CORIOLIS_TOKEN_CACHE": "0"}
        api = server.bindings()
        src = api.endpoints.create("src", "local", {"path": str(clouds / "src")}, "").id
        dst = api.endpoints.create("dst", "local", {"path": str(clouds / "dst")}, "").id
        cmd = [CLI, "endpoint", "list"]
        timed(cmd, env)  # keeps a token
        sampler = Sampler(server.log_path)
        load_before = os.getloadavg()[0]
        for _ in range(runs):  # interleaved, so that both see the same noise
            sampler.measure("floor", [sys.executable, "-c", "pass"], env)
            sampler.measure("cold", cmd, cold_env)
            sampler.measure("warm", cmd, env)
        print(f"idle server (load average {load_before:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after):")
        sampler.report("floor", "python -c pass")
        sampler.report("cold", "endpoint list, login each time")
        sampler.report("warm", "endpoint list, token reused")
        if copy:
            load = CopyLoad(api, src, dst, count)
            sample_during(load, sampler, runs, "copy-warm", cmd, env)
            sample_during(load, sampler, runs, "copy-cold", cmd, cold_env)
            print(f"during copies of {size >> 20} MiB disks with {data >> 20} MiB of data "
                  f"(load average {os.getloadavg()[0]:.2f}):")
            sampler.report("copy-cold", "endpoint list, login each time")
            sampler.report("copy-warm", "endpoint list, token reused")
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = bench_parser(__doc__ or "", runs=9, size="4G")
    parser.add_argument("--data", default="2G", help="random data in each source disk")
    parser.add_argument("--no-copy", action="store_true", help="skip the measurement under a "
                        "running copy")
    args = parser.parse_args()
    run(args.runs, parse_size(args.size), parse_size(args.data), not args.no_copy)


if __name__ == "__main__":
    main()
