"""Block devices as destination volumes, end to end through the CLI: a migration and a
replica (executed twice, the second after source blocks changed) to a local cloud whose
storage backend is a set of loop devices leave each device bit-identical to the source disk;
deleting the replica disks or a failed migration releases the devices (zeroed, no claim
left); a device too small or read-only is a 400 naming it, with nothing stored."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.harness import RunningServer, local_cloud
from tests import loop_devices
from tests.e2e.conftest import server_with_faults

pytestmark = pytest.mark.e2e
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
MiB = 1024 * 1024
DISK = 48 * MiB
BLOCK = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose tasks can be made to fail on demand (``faults`` file, ``fail``)."""
    reason = loop_devices.unavailable()
    if reason:
        pytest.skip(reason)
    yield from server_with_faults(tmp_path_factory.mktemp("blockdev-server"))


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Loop devices over files full of 0xa5 (what a previous user left): two that fit the
    disks, one too small, one read-only."""
    folder = tmp_path_factory.mktemp("loop-backing")
    made: dict[str, str] = {}
    try:
        for name, size, read_only in (("a", 64 * MiB, False), ("b", 64 * MiB, False),
                                      ("small", 32 * MiB, False), ("ro", 64 * MiB, True)):
            backing = folder / f"{name}.img"
            backing.write_bytes(b"\xa5" * size)
            made[name] = loop_devices.attach(backing, read_only)
        yield made
    finally:
        for device in made.values():
            loop_devices.detach(device)


@pytest.fixture(scope="module")
def clouds(server: RunningServer, devices: dict[str, str]) -> dict[str, Path]:
    src, dst = server.cloud_dir("bd-src"), server.cloud_dir("bd-dst")
    local_cloud("init", str(src), "--network", "lan")
    for i, name in enumerate(("vm1", "db", "doomed", "big")):
        local_cloud("add-instance", str(src), name, "--disk-size", "48M", "--allocated", "0.4",
                    "--network", "lan", "--seed", str(10 + i))
    local_cloud("init", str(dst), "--network", "lan")
    local_cloud("add-storage", str(dst), "dev", "--block-device", devices["a"],
                "--block-device", devices["b"])
    local_cloud("add-storage", str(dst), "small", "--block-device", devices["small"])
    # add-storage refuses a read-only device: listed by hand, as an operator might.
    config = json.loads((dst / "cloud.json").read_text())
    config["storage"].append({"name": "ro", "format": "raw", "block_devices": [devices["ro"]]})
    (dst / "cloud.json").write_text(json.dumps(config))
    server.local_endpoint("bd-src", src)
    server.local_endpoint("bd-dst", dst)
    return {"src": src, "dst": dst}


def source_disk(clouds: dict[str, Path], instance: str) -> Path:
    return clouds["src"] / "instances" / instance / "disk0.raw"


def identical(source: Path, device: str) -> bool:
    """``cmp`` of the device against the source image over the source's size, and the rest
    of the device zeroes (it was zeroed when claimed)."""
    size = source.stat().st_size
    same = subprocess.run(["cmp", "-n", str(size), str(source), device],
                          capture_output=True).returncode == 0
    with open(device, "rb") as f:
        f.seek(size)
        rest = f.read()
    return same and rest == bytes(len(rest))


def claims(clouds: dict[str, Path], backend: str = "dev") -> list[dict]:
    folder = clouds["dst"] / "storage" / backend / "claims"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.claim"))]


def zeroed(device: str) -> bool:
    with open(device, "rb") as f:
        return f.read() == bytes(64 * MiB)


def create_migration(server: RunningServer, instance: str, backend: str = "dev",
                     check: bool = True):  # type: ignore[no-untyped-def]
    return server.cli(
        "migration", "create", "--origin-endpoint", "bd-src", "--destination-endpoint",
        "bd-dst", "--instance", instance, "--source-environment", '{"snapshot": false}',
        "--destination-environment", json.dumps({"storage_backend": backend}),
        "--network-map", '{"lan": "lan"}', "--skip-os-morphing", "-f", "json", check=check)


def test_migration_to_a_device_is_bit_identical(server: RunningServer, clouds: dict[str, Path],
                                                devices: dict[str, str]) -> None:
    created = create_migration(server, "vm1").json()
    done = server.wait_for(["migration", "show", created["id"]], lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    desc = json.loads((clouds["dst"] / "instances" / "vm1" / "instance.json").read_text())
    device = desc["disks"][0]["file"]
    assert device in (devices["a"], devices["b"])
    assert identical(source_disk(clouds, "vm1"), device)
    assert [c["device"] for c in claims(clouds)] == [device]  # the instance keeps it


def test_replica_to_a_device_twice_then_disks_deleted(
        server: RunningServer, clouds: dict[str, Path]) -> None:
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "bd-src", "--destination-endpoint", "bd-dst",
        "--instance", "db", "--source-environment", '{"snapshot": true}',
        "--destination-environment", '{"storage_backend": "dev"}',
        "--network-map", '{"lan": "lan"}', "-f", "json").json()["id"]

    def execute() -> dict:
        ex = server.cli("replica", "execute", replica, "-f", "json").json()
        done = server.wait_for(["replica", "execution", "show", replica, ex["id"]],
                               lambda e: e["status"] in FINAL)
        assert done["status"] == "COMPLETED", done["tasks"]
        shown = server.cli("replica", "show", replica, "--show-instances-data", "-f",
                           "json").json()
        return dict(shown["instances-data"]["db"]["volumes_info"][0])

    volume = execute()
    device = volume["path"]
    assert volume["block_device"] is True and volume["volume_id"]
    assert identical(source_disk(clouds, "db"), device)
    # Its undo journal and commit record are in the cloud's storage folder.
    assert Path(volume["state_base"]).parent == clouds["dst"] / "storage" / "dev" / "claims"
    assert not [p for p in os.listdir(os.path.dirname(device))
                if p.startswith(f"{os.path.basename(device)}.")]

    disk = source_disk(clouds, "db")
    blocks = sorted(random.Random(9).sample(range(DISK // BLOCK), 10))
    with open(disk, "r+b") as f:
        for block in blocks:
            f.seek(block * BLOCK)
            f.write(os.urandom(BLOCK))
    volume = execute()
    assert volume["path"] == device
    assert volume["bytes_sent"] == len(blocks) * BLOCK
    assert identical(disk, device)

    deleted = server.cli("replica", "disks", "delete", replica, "-f", "json").json()
    done = server.wait_for(["replica", "execution", "show", replica, deleted["id"]],
                           lambda e: e["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    assert device not in [c["device"] for c in claims(clouds)]
    assert zeroed(device)
    leftovers = [p.name for p in (clouds["dst"] / "storage" / "dev" / "claims").iterdir()
                 if volume["volume_id"] in p.name]
    assert leftovers == []
    server.cli("replica", "delete", replica)


def test_a_failed_migration_releases_its_device(server: RunningServer,
                                                clouds: dict[str, Path]) -> None:
    before = claims(clouds)
    server.faults.write_text("REPLICATE_DISKS:fail")  # type: ignore[attr-defined]
    created = create_migration(server, "doomed").json()
    done = server.wait_for(["migration", "show", created["id"]], lambda m: m["status"] in FINAL)
    assert done["status"] == "ERROR"
    assert "injected failure" in json.dumps(done["tasks"])
    assert claims(clouds) == before
    free = {c["device"] for c in before} ^ {v for v in json.loads(
        (clouds["dst"] / "cloud.json").read_text())["storage"][1]["block_devices"]}
    assert all(zeroed(d) for d in free)
    assert not (clouds["dst"] / "instances" / "doomed").exists()


@pytest.mark.parametrize("backend, device, reason", [
    ("small", "small", r"has no block device of at least 50331648 bytes"),
    ("ro", "ro", "is read-only"),
])
def test_an_unusable_device_is_a_400_naming_it(
        server: RunningServer, clouds: dict[str, Path], devices: dict[str, str],
        backend: str, device: str, reason: str) -> None:
    before = server.cli("migration", "list", "-f", "json").json()
    res = create_migration(server, "big", backend, check=False)
    assert res.returncode == 1 and "HTTP 400" in res.stderr, res.stderr
    assert devices[device] in res.stderr and reason in res.stderr
    assert "Traceback" not in res.stderr
    assert server.cli("migration", "list", "-f", "json").json() == before
    assert claims(clouds, backend) == []
    with open(devices[device], "rb") as f:
        assert f.read(4) == b"\xa5" * 4  # untouched
