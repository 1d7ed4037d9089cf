"""Minion pools of a libvirt endpoint through the CLI against a running server and the real
system libvirtd (TCG): a pool of 2 helper domains booted from the project's minion image,
three local → libvirt migrations naming it (one waits for a minion), the data written by the
minions' agents (their serial consoles show it) into bit-identical volumes, the volumes
detached after; a destroyed minion domain found by the health check and replaced;
deallocation leaving nothing of the pool's names on the host; the agent key nowhere in the
domain XML, the API output or the serial console."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from coriolis import exceptions
from coriolis.harness import RunningServer, local_cloud, transfer_summary
from coriolis.providers.libvirt import volumes
from coriolis.providers.libvirt.provider import LibvirtProvider
from coriolis.providers.local.cloud import LocalCloud
from coriolis.transfer.remote import AgentAddress, RemoteDiskWriter, probe_agent
from tests.libvirt_host import libvirt_host

pytestmark = pytest.mark.e2e

FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
FINAL_POOL = {"ALLOCATED", "DEALLOCATED", "ERROR"}


@pytest.fixture(scope="module")
def lv(server: RunningServer, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    with libvirt_host() as host:
        host.prefix = f"mn-{host.prefix[2:]}"  # this suite's libvirt names start with mn-
        request.addfinalizer(lambda: [p.unlink(missing_ok=True) for p in Path(
            "/var/log/libvirt/qemu").glob(f"{host.prefix}-*.log")])
        host.add_pool("pool")
        host.add_network("net")
        src = server.cloud_dir("mn-src")
        local_cloud("init", str(src), "--network", "lan")
        for i in range(3):
            local_cloud("add-instance", str(src), f"vm{i}", "--disk-size", "16M",
                        "--disk-format", "raw", "--network", "lan", "--seed", str(70 + i))
        server.cli("endpoint", "create", "--name", "mn-src", "--provider", "local",
                   "--connection", json.dumps({"path": str(src)}))
        server.cli("endpoint", "create", "--name", "mn-dst", "--provider", "libvirt",
                   "--connection", json.dumps(host.connection_info(scratch=False)))
        yield {"host": host, "src": src}


def show(server: RunningServer, pool_id: str) -> dict[str, Any]:
    return server.cli("minion", "pool", "show", pool_id, "-f", "json").json()


def machines(data: dict[str, Any]) -> list[dict[str, Any]]:
    value = data["Minion Machines"]
    return json.loads(value) if isinstance(value, str) else value or []


def wait_settled(server: RunningServer, pool_id: str, timeout: float = 600) -> dict[str, Any]:
    return server.wait_for(["minion", "pool", "show", pool_id],
                           lambda d: d["Pool Status"] in FINAL_POOL, timeout=timeout)


def pool_objects(lv: dict[str, Any], base: str) -> set[str]:
    """Every libvirt object (and serial log) named after the pool."""
    found = {x for x in lv["host"].inventory() if base in x}
    found.update(f"log:{p.name}" for p in Path("/var/log/libvirt/qemu").glob(f"{base}*"))
    return found


def same(a: Path | str, b: Path | str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", "-U", str(a), str(b)]).returncode == 0


def config_key(config_disk: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(Path(config_disk).read_bytes())) as tar:
        member = tar.extractfile("agent/writer-agent-key")
        assert member is not None
        return member.read().decode().strip()


def migrate(server: RunningServer, lv: dict[str, Any], i: int, pool_id: str) -> Any:
    host = lv["host"]
    return server.cli(
        "migration", "create", "--origin-endpoint", "mn-src", "--destination-endpoint",
        "mn-dst", "--destination-minion-pool-id", pool_id, "--instance", f"vm{i}",
        "--source-environment", '{"snapshot": false}', "--destination-environment",
        json.dumps({"storage_backend": host.name("pool"), "domain_type": "qemu",
                    "instance_name": host.name(f"vm{i}")}),
        "--network-map", json.dumps({"lan": host.name("net")}), "--skip-os-morphing",
        "-f", "json").json()


def test_libvirt_pool_serves_migrations_heals_and_cleans_up(
        server: RunningServer, lv: dict[str, Any]) -> None:
    host = lv["host"]
    env = {"storage_pool": host.name("pool"), "name_prefix": host.prefix}
    started = time.monotonic()
    pool_id = server.cli(
        "minion", "pool", "create", "--pool-endpoint", "mn-dst", "--pool-platform", "destination",
        "--pool-os-type", "linux", "--environment-options", json.dumps(env),
        "--minimum-minions", "2", "--maximum-minions", "2", "--minion-max-idle-time", "3600",
        "mn-pool", "-f", "json").json()["ID"]
    data = wait_settled(server, pool_id)
    assert data["Pool Status"] == "ALLOCATED", data["Events"]
    print(f"pool of 2 libvirt minions allocated in {time.monotonic() - started:.0f} s")
    base = f"{host.prefix}-{pool_id[:8]}"
    minions = machines(data)
    assert len(minions) == 2
    props = [m["provider_properties"] for m in minions]
    print("boot to agent ready (s):", [p["boot_seconds"] for p in props])
    objects = pool_objects(lv, base)
    assert {f"domain:{p['domain']}" for p in props} <= objects
    assert f"network:{base}-net" in objects
    assert f"volume:{host.name('pool')}/{base}-rootfs.qcow2" in objects
    for p in props:
        dom = host.conn.lookupByName(p["domain"])
        assert dom.isActive()
        xml = ET.fromstring(dom.XMLDesc(0))
        assert xml.get("type") == "qemu"
        # The agent key and TLS key travel on the config disk only.
        key = config_key(p["config_disk"])
        assert key not in dom.XMLDesc(0) and key not in json.dumps(data)
        assert "PRIVATE KEY" not in dom.XMLDesc(0)
    assert all(m["connection_info"] == "***" for m in minions)

    with ThreadPoolExecutor(3) as ex:
        created = list(ex.map(lambda i: migrate(server, lv, i, pool_id), range(3)))
    assert [m["status"] for m in created].count("AWAITING_MINION_ALLOCATIONS") >= 1, \
        [m["status"] for m in created]
    done = [server.wait_for(["migration", "show", m["id"]], lambda d: d["status"] in FINAL,
                            timeout=600) for m in created]
    assert all(d["status"] == "COMPLETED" for d in done), \
        "\n".join(transfer_summary(d) for d in done) + "\n" + server.log_tail(80)
    events = show(server, pool_id)["Events"].splitlines()
    assert sum(" reserved for " in e for e in events) == 3
    cloud = LocalCloud({"path": str(lv["src"])})
    for i in range(3):
        dom = host.conn.lookupByName(host.name(f"vm{i}"))
        (target,) = [d.get("file") for d in
                     ET.fromstring(dom.XMLDesc(0)).findall("./devices/disk/source")]
        desc = cloud.load_instance(f"vm{i}")
        assert same(cloud.disk_path(f"vm{i}", desc["disks"][0]), target)
    # The data went through both minions' agents (their serial consoles log every request);
    # the volumes were detached from them afterwards.
    for p in props:
        log = Path(p["serial_log"]).read_text(errors="replace")
        assert "/v1/transfers/" in log, log[-2000:]
        assert config_key(p["config_disk"]) not in log
        disks = ET.fromstring(host.conn.lookupByName(p["domain"]).XMLDesc(0)).findall(
            "./devices/disk/target[@bus='scsi']")
        assert disks == []

    # Destroy a minion's domain: the health check (refresh runs it) marks it; it is replaced.
    dead = minions[0]
    host.conn.lookupByName(dead["provider_properties"]["domain"]).destroy()
    server.cli("minion", "pool", "refresh", pool_id)
    data = wait_settled(server, pool_id)
    assert f"Minion {dead['id']} failed its health check" in data["Events"], data["Events"]
    now = machines(data)
    assert len(now) == 2 and dead["id"] not in {m["id"] for m in now}
    assert all(host.conn.lookupByName(m["provider_properties"]["domain"]).isActive()
               for m in now)

    server.cli("minion", "pool", "deallocate", pool_id)
    assert wait_settled(server, pool_id)["Pool Status"] == "DEALLOCATED"
    assert pool_objects(lv, base) == set()
    server.cli("minion", "pool", "delete", pool_id)


def test_libvirt_pool_bad_input_makes_nothing(server: RunningServer,
                                              lv: dict[str, Any]) -> None:
    host = lv["host"]
    before = lv["host"].inventory()

    def refused(env: dict[str, Any], *args: str) -> str:
        result = server.cli("minion", "pool", "create", "--pool-endpoint", "mn-dst",
                            "--environment-options", json.dumps(env), *args, "bad",
                            check=False)
        assert result.returncode != 0, result.stdout
        return result.stderr

    ok = {"memory_mb": 384}
    assert "source pool must be 'linux'" in refused(ok, "--pool-platform", "source",
                                                    "--pool-os-type", "windows")
    assert "name_prefix" in refused({"name_prefix": "Bad Prefix!"}, "--pool-platform",
                                    "destination", "--pool-os-type", "linux")
    assert f"{host.name('nope')}" in refused({"storage_pool": host.name("nope")},
                                             "--pool-platform", "destination", "--pool-os-type",
                                             "linux")
    assert lv["host"].inventory() == before


def scsi_disks(dom: Any) -> list[str]:
    return [t.get("dev") for t in ET.fromstring(dom.XMLDesc(0)).findall(
        "./devices/disk/target[@bus='scsi']")]


def attach_write_detach(host: Any, provider: LibvirtProvider, ci: dict[str, Any],
                        machine_id: str, minion: dict[str, Any]) -> None:
    """A volume hot-plugged into the minion, written through its agent at the location the
    provider gives, a leftover attachment (a transfer that never cleaned up) detached by the
    next use, and the volume detached by ``delete_target_resources``."""
    pool = host.conn.storagePoolLookupByName(host.name("pool"))
    volume = volumes.create(pool, f"{host.prefix}-attach.raw", 8 * 2**20, "raw", "d0")
    held = {"machine_id": machine_id, "url": minion["url"],
            "fingerprint": minion["fingerprint"]}
    dom = host.conn.lookupByName(_machine_name(host, machine_id))
    provider.minion_target_resources(ci, {}, {}, [volume], held, "k")
    assert len(scsi_disks(dom)) == 1
    target = provider.minion_target_resources(ci, {}, {}, [volume], held, "k")
    assert len(scsi_disks(dom)) == 1  # the leftover was detached first
    location = target["disks"]["d0"]
    assert location["path"].startswith("/dev/disk/by-id/") and minion["key"] not in \
        json.dumps(target)
    payload = bytes(range(256)) * 4096  # 1 MiB
    writer = RemoteDiskWriter(AgentAddress.from_json(minion), f"t{uuid.uuid4().hex[:8]}",
                              location["path"], "raw")
    assert writer.size == 8 * 2**20
    writer.write(2**20, payload)
    writer.flush()
    writer.close()
    provider.delete_target_resources(ci, {}, target)
    assert scsi_disks(dom) == []
    with open(volume["path"], "rb") as f:
        f.seek(2**20)
        assert f.read(len(payload)) == payload
    volumes.delete(host.conn, volume)


def _machine_name(host: Any, machine_id: str) -> str:
    (dom,) = [d for d in host.conn.listAllDomains(0) if d.name().endswith(machine_id[:8])]
    return str(dom.name())


def test_libvirt_minion_retention_power_off_on_delete(lv: dict[str, Any]) -> None:
    """The provider calls the upkeep makes for retention, on a real minion: power off shuts
    the domain off (defined still, the health check says so), power on boots it with a new
    certificate and key (the old ones open nothing), delete and tear-down leave nothing."""
    host = lv["host"]
    provider = LibvirtProvider()
    ci = host.connection_info(scratch=False)
    env = {"storage_pool": host.name("pool"), "name_prefix": host.prefix}
    pool_id, machine_id = uuid.uuid4().hex, uuid.uuid4().hex
    base = f"{host.prefix}-{pool_id[:8]}"
    shared = provider.set_up_pool_shared_resources(ci, env, pool_id)
    try:
        made = provider.create_minion(ci, env, pool_id, machine_id, shared)
        props = made["provider_properties"]
        dom = host.conn.lookupByName(props["domain"])
        attach_write_detach(host, provider, ci, machine_id, made["connection_info"])
        off = provider.power_off_minion(ci, env, pool_id, machine_id, props)
        assert not dom.isActive() and f"domain:{props['domain']}" in pool_objects(lv, base)
        with pytest.raises(exceptions.ProviderError, match="not running"):
            provider.healthcheck_minion(ci, env, pool_id, machine_id, off,
                                        made["connection_info"])
        on = provider.power_on_minion(ci, env, pool_id, machine_id, off)
        assert host.conn.lookupByName(props["domain"]).isActive()  # defined anew
        assert on["connection_info"]["key"] != made["connection_info"]["key"]
        assert on["connection_info"]["fingerprint"] != made["connection_info"]["fingerprint"]
        provider.healthcheck_minion(ci, env, pool_id, machine_id, on["provider_properties"],
                                    on["connection_info"])
        stale = {**made["connection_info"], "url": on["connection_info"]["url"]}
        with pytest.raises(exceptions.CoriolisError):
            probe_agent(AgentAddress.from_json(stale), retry_seconds=1.0)
        provider.delete_minion(ci, env, pool_id, machine_id, on["provider_properties"])
        left = pool_objects(lv, base)
        assert not any(x.startswith("domain:") or "config" in x for x in left), left
    finally:
        provider.tear_down_pool_shared_resources(ci, env, pool_id, shared)
    assert pool_objects(lv, base) == set()
