"""The main job, end to end on the embedded default: start the all-in-one server (SQLite,
in-process worker), build two `local` clouds with real disk images, then through the `coriolis`
CLI run a migration and a replica (two executions and a deploy), and check every destination
disk against its source with `qemu-img compare`.

Run it with `./dev demo` (add `--keep` to leave the server data in ./demo-data)."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from coriolis.harness import RunningServer, local_cloud, start_server, stop_server

FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}


def step(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def disks_of(cloud: Path, instance: str) -> list[Path]:
    folder = cloud / "instances" / instance
    desc = json.loads((folder / "instance.json").read_text())
    return [(folder / d["file"]).resolve() for d in desc["disks"]]


def compare(src: list[Path], dst: list[Path]) -> None:
    for a, b in zip(src, dst, strict=True):
        subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], check=True)
        print(f"    identical: {a.name} -> {b}")


def scribble(disk: Path, count: int = 16) -> None:
    """Change a few random 64 KiB blocks of a raw source disk (as a running guest would)."""
    size = disk.stat().st_size
    with open(disk, "r+b") as f:
        for _ in range(count):
            f.seek(random.randrange(0, size - 65536) // 65536 * 65536)
            f.write(os.urandom(65536))


def wait(server: RunningServer, args: list[str], timeout: float = 600) -> dict:
    data = server.wait_for(args, lambda d: d["status"] in FINAL, timeout=timeout)
    if data["status"] != "COMPLETED":
        sys.exit(f"{' '.join(args)} ended {data['status']}:\n{data.get('tasks', '')}")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="demo-data")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--disk-size", default="512M")
    args = parser.parse_args()

    work = Path(args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    step("Starting coriolis-server all-in-one")
    server = start_server(work / "server")
    print(f"    {server.url}  (credentials in {server.data_dir / 'openrc'})")
    try:
        cli = server.cli
        # The server lets a project keep its local clouds in DATA_DIR/clouds/PROJECT_ID
        src, dst = server.cloud_dir("cloud-a"), server.cloud_dir("cloud-b")
        step(f"Building two local clouds with real disk images (qemu-img) in {src.parent}")
        local_cloud("init", str(src), "--network", "lan")
        local_cloud("add-instance", str(src), "web1", "--disk-size", args.disk_size,
                    "--disk-format", "qcow2", "--allocated", "0.25", "--network", "lan")
        local_cloud("add-instance", str(src), "db1", "--disk-size", args.disk_size,
                    "--disk-format", "raw", "--allocated", "0.25", "--network", "lan")
        local_cloud("init", str(dst), "--network", "prod", "--storage", "ssd:qcow2",
                    "--storage", "hdd:raw")

        step("Registering endpoints")
        for name, path in (("cloud-a", src), ("cloud-b", dst)):
            cli("endpoint", "create", "--name", name, "--provider", "local",
                "--connection", json.dumps({"path": str(path)}))
        print(cli("endpoint", "list").stdout)
        print(cli("endpoint", "instance", "list", "cloud-a").stdout)

        common = ["--origin-endpoint", "cloud-a", "--destination-endpoint", "cloud-b",
                  "--source-environment", '{"snapshot": true}',
                  "--network-map", '{"lan": "prod"}']

        step("Migration of web1 (qcow2) to cloud-b, storage backend ssd (qcow2)")
        started = time.monotonic()
        mig = cli("migration", "create", *common, "--instance", "web1",
                  "--destination-environment", '{"storage_backend": "ssd"}',
                  "--skip-os-morphing", "-f", "json").json()
        wait(server, ["migration", "show", mig["id"]])
        print(f"    migration {mig['id']} COMPLETED in {time.monotonic() - started:.1f}s")
        compare(disks_of(src, "web1"), disks_of(dst, "web1"))

        step("Replica of db1 (raw) to cloud-b, storage backend hdd (raw)")
        rep = cli("replica", "create", *common, "--instance", "db1",
                  "--destination-environment", '{"storage_backend": "hdd"}',
                  "-f", "json").json()
        for n in (1, 2):
            if n == 2:
                print("    changing 16 random 64 KiB blocks of db1's disk")
                scribble(disks_of(src, "db1")[0])
            started = time.monotonic()
            ex = cli("replica", "execute", rep["id"], "-f", "json").json()
            done = wait(server, ["replica", "execution", "show", rep["id"], ex["id"]])
            print(f"    execution {n} {done['status']} in {time.monotonic() - started:.1f}s")

        step("Deploying the replica into an instance")
        dep = cli("migration", "deploy", "replica", rep["id"], "--skip-os-morphing",
                  "-f", "json").json()
        wait(server, ["migration", "show", dep["id"]])
        compare(disks_of(src, "db1"), disks_of(dst, "db1"))
        print(cli("migration", "list").stdout)
        step("Done: every destination disk is identical to its source")
    finally:
        stop_server(server)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
