"""The vmware_vsphere provider end to end through the CLI against a real server and a real
vcsim (govmomi's vCenter simulator, built by ``coriolis.vcsim``): endpoint create/validate
(also from a stored secret), listings, a migration vcsim -> local that is bit-identical, a
replica whose second execution sends only the changed blocks (vcsim has no CBT: the block
manifests find them), the transfer snapshot removed and the user's kept."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis import vcsim
from coriolis.harness import RunningServer, local_cloud
from tests.integration.libvirt.conftest import raw_bytes
from tests.vcsim_host import (
    PORTGROUP,
    create_vm,
    delta_chain,
    destroy_vm,
    put,
    session,
    snapshot_names,
    vcsim_server,
    vmdk_raw,
    write_disk,
)

pytestmark = pytest.mark.e2e
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
MiB = 1024 * 1024
BLOCK = 64 * 1024
SOURCE_ENV = '{"shutdown_timeout": 5}'
__all__ = ["vcsim_server"]


@pytest.fixture(scope="module")
def setup(server: RunningServer, vcsim_server: vcsim.Vcsim) -> Iterator[dict]:
    dst = server.cloud_dir("vs-dst")
    local_cloud("init", str(dst), "--network", "lan", "--storage", "pool:raw")
    create(server, "vs-src", vcsim_server.connection_info(), dst.parent)
    server.cli("endpoint", "create", "--name", "vs-dst", "--provider", "local",
               "--connection", json.dumps({"path": str(dst)}))
    made: list[str] = []
    yield {"dst": dst, "made": made}
    with session(vcsim_server) as si:
        for name in made:
            from coriolis.providers.vmware_vsphere import inventory
            destroy_vm(si, inventory.find_vm(si, name))


def create(server: RunningServer, name: str, info: dict, tmp: Path, *extra: str,
           check: bool = True) -> object:
    """``endpoint create`` with the connection info in a file (the password stays out of
    argv); create validates the connection unless ``--skip-validation``."""
    conn_file = tmp / f"{name}.json"
    conn_file.write_text(json.dumps(info))
    return server.cli("endpoint", "create", "--name", name, "--provider", "vmware_vsphere",
                      "--connection-file", str(conn_file), *extra, check=check)


def make_vm(vc: vcsim.Vcsim, setup: dict, name: str, size: int, data: bytes,
            user_snapshot: bool = False) -> None:
    with session(vc) as si:
        vm = create_vm(si, name, [size])
        setup["made"].append(name)
        write_disk(vc, si, name, 0, data)
        if user_snapshot:
            from coriolis.providers.vmware_vsphere import connection as conn
            conn.wait_task(si, vm.CreateSnapshot_Task(name="before-upgrade", description="",
                                                      memory=False, quiesce=False), "snap")


def snapshots(vc: vcsim.Vcsim, name: str) -> list[str]:
    from coriolis.providers.vmware_vsphere import inventory
    with session(vc) as si:
        return snapshot_names(si, inventory.find_vm(si, name))


def test_endpoint_validate_and_listings(server: RunningServer, setup: dict) -> None:
    out = server.cli("endpoint", "validate", "connection", "vs-src").stdout
    assert out.startswith("vCenter: VMware vCenter Server 6.5.0") and "127.0.0.1" in out, out
    listed = server.cli("endpoint", "instance", "list", "vs-src", "-f", "json").json()
    assert {"DC0_H0_VM0", "DC0_C0_RP0_VM0"} <= {i["Name"] for i in listed}
    networks = server.cli("endpoint", "network", "list", "vs-src", "-f", "json").json()
    assert PORTGROUP in {n["Name"] for n in networks}
    # (vcsim does not mark its uplink portgroup as one, so it is listed here; real vSphere
    # sets config.uplink and the provider leaves uplinks out)
    storage = server.cli("endpoint", "storage", "list", "vs-src", "-f", "json").json()
    assert [s["Name"] for s in storage] == ["LocalDS_0"]


def test_wrong_password_is_reported_without_it(server: RunningServer,
                                               vcsim_server: vcsim.Vcsim,
                                               tmp_path: Path) -> None:
    bad = vcsim_server.connection_info(password="not-the-password-xyz")
    create(server, "vs-bad", bad, tmp_path, "--skip-validation")
    checked = server.cli("endpoint", "validate", "connection", "vs-bad", check=False)
    assert checked.returncode != 0
    assert "wrong username or password" in checked.stderr, checked.stderr
    assert "not-the-password-xyz" not in checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr


def test_untrusted_certificate_needs_a_choice(server: RunningServer,
                                              vcsim_server: vcsim.Vcsim,
                                              tmp_path: Path) -> None:
    strict = vcsim_server.connection_info(allow_untrusted=False)
    refused = create(server, "vs-strict", strict, tmp_path, check=False)
    assert refused.returncode != 0  # type: ignore[attr-defined]
    err = refused.stderr  # type: ignore[attr-defined]
    assert "not trusted" in err and "allow_untrusted" in err and "Traceback" not in err, err
    # the certificate pinned by its SHA-256 fingerprint, or its CA given: accepted
    create(server, "vs-pinned", {**strict, "thumbprint": vcsim_server.fingerprint}, tmp_path)
    create(server, "vs-ca", {**strict, "ca_bundle": vcsim_server.cert_file.read_text()},
           tmp_path)
    wrong = {**strict, "thumbprint": "ab" * 32}
    refused = create(server, "vs-wrong-pin", wrong, tmp_path, check=False)
    assert "does not match connection_info.thumbprint" in refused.stderr  # type: ignore


def test_connection_secret(server: RunningServer, vcsim_server: vcsim.Vcsim) -> None:
    http = server.bindings().session  # the admin's keystoneauth session
    stored = http.post(f"{server.url}/key-manager/v1/secrets", json={
        "payload": json.dumps(vcsim_server.connection_info()),
        "payload_content_type": "text/plain"}).json()
    server.cli("endpoint", "create", "--name", "vs-secret", "--provider", "vmware_vsphere",
               "--connection-secret", stored["secret_ref"])
    shown = server.cli("endpoint", "show", "vs-secret", "-f", "json")
    assert vcsim_server.password not in shown.stdout
    listed = server.cli("endpoint", "instance", "list", "vs-secret", "-f", "json").json()
    assert "DC0_H0_VM0" in {i["Name"] for i in listed}


def migrate_to_local(server: RunningServer, setup: dict, name: str) -> bytes:
    """Migrate VM ``name`` to the local endpoint ``vs-dst`` through the CLI; its copied
    disk's bytes."""
    created = server.cli(
        "migration", "create", "--origin-endpoint", "vs-src", "--destination-endpoint",
        "vs-dst", "--instance", name, "--source-environment", SOURCE_ENV,
        "--destination-environment", '{"storage_backend": "pool"}',
        "--network-map", json.dumps({PORTGROUP: "lan"}),
        "--skip-os-morphing", "-f", "json").json()
    done = server.wait_for(["migration", "show", created["id"]],
                           lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    folder = setup["dst"] / "instances" / name
    desc = json.loads((folder / "instance.json").read_text())
    return raw_bytes((folder / desc["disks"][0]["file"]).resolve(), "raw")


def test_migration_to_local_is_bit_identical(server: RunningServer, vcsim_server: vcsim.Vcsim,
                                             setup: dict) -> None:
    data = os.urandom(5 * MiB) + bytes(2 * MiB) + os.urandom(MiB // 2)
    make_vm(vcsim_server, setup, "vs-mig", 12 * MiB, data, user_snapshot=True)
    assert migrate_to_local(server, setup, "vs-mig") == data + bytes(12 * MiB - len(data))
    # the transfer's snapshot is gone, the user's is untouched
    assert snapshots(vcsim_server, "vs-mig") == ["before-upgrade"]


def test_migration_of_a_snapshot_delta_chain_is_bit_identical(
        server: RunningServer, vcsim_server: vcsim.Vcsim, setup: dict, tmp_path: Path) -> None:
    """A VM under a user snapshot whose disk is a delta over a parent (the ESXi layout,
    built by qemu-img and PUT through /folder: vcsim's snapshots make no delta files) is
    migrated to local: the worker reads the chain through qemu's vmdk driver over nbdkit
    curl, and the copy holds the child's grains over the parent's."""
    size = 16 * MiB
    with session(vcsim_server) as si:
        vm = create_vm(si, "vs-delta", [size])
        setup["made"].append("vs-delta")
        files = delta_chain(tmp_path, "vs-delta_0", size,
                            [(0x51, 0, 3 * MiB), (0x52, 9 * MiB, MiB)],
                            [(0x53, 2 * MiB, 2 * MiB), (0x54, size - 64 * 1024, 64 * 1024)])
        for file in files:
            put(vcsim_server, si, f"vs-delta/{file.name}", file)
        from coriolis.providers.vmware_vsphere import connection as conn
        conn.wait_task(si, vm.CreateSnapshot_Task(name="before-upgrade", description="",
                                                  memory=False, quiesce=False), "snap")
    expected = vmdk_raw(files[0], tmp_path / "expected.raw")
    assert migrate_to_local(server, setup, "vs-delta") == expected
    assert snapshots(vcsim_server, "vs-delta") == ["before-upgrade"]


def replica_counters(server: RunningServer, replica: str, instance: str) -> dict:
    shown = server.cli("replica", "show", replica, "--show-instances-data", "-f", "json").json()
    return shown["instances-data"][instance]["volumes_info"][0]


def execute(server: RunningServer, replica: str) -> dict:
    ex = server.cli("replica", "execute", replica, "-f", "json").json()
    return server.wait_for(["replica", "execution", "show", replica, ex["id"]],
                           lambda e: e["status"] in FINAL)


def test_replica_second_execution_sends_only_changed_blocks(
        server: RunningServer, vcsim_server: vcsim.Vcsim, setup: dict) -> None:
    size = 16 * MiB
    data = bytearray(os.urandom(size))
    make_vm(vcsim_server, setup, "vs-rep", size, bytes(data))
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "vs-src", "--destination-endpoint", "vs-dst",
        "--instance", "vs-rep", "--source-environment", SOURCE_ENV,
        "--destination-environment", '{"storage_backend": "pool"}',
        "--network-map", json.dumps({PORTGROUP: "lan"}), "-f", "json").json()["id"]
    first = execute(server, replica)
    assert first["status"] == "COMPLETED", first["tasks"]
    assert replica_counters(server, replica, "vs-rep")["bytes_sent"] == size

    blocks = sorted(random.Random(11).sample(range(size // BLOCK), 9))
    for block in blocks:
        data[block * BLOCK:(block + 1) * BLOCK] = os.urandom(BLOCK)
    with session(vcsim_server) as si:
        write_disk(vcsim_server, si, "vs-rep", 0, bytes(data))
    second = execute(server, replica)
    assert second["status"] == "COMPLETED", second["tasks"]
    counters = replica_counters(server, replica, "vs-rep")
    assert counters["bytes_sent"] == len(blocks) * BLOCK
    assert raw_bytes(Path(counters["path"]), counters["format"]) == bytes(data)
    assert snapshots(vcsim_server, "vs-rep") == []
