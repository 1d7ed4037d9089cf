"""A SOURCE minion pool of a libvirt endpoint against a running server and the real system
libvirtd (TCG, one minion): a shut-off domain's qcow2 disk attached read-only to the minion
domain and read through its agent into a local cloud, bit-identical; the disk detached and the
minion released afterwards; a running domain refused by name, the minion released."""

from __future__ import annotations

import json
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis.harness import RunningServer, local_cloud
from tests.e2e.test_libvirt_minion_pools import machines, show, wait_settled
from tests.e2e.test_os_morphing import task_events
from tests.integration.libvirt.conftest import make_image
from tests.libvirt_host import libvirt_host

pytestmark = pytest.mark.e2e
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def lv(server: RunningServer, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    with libvirt_host() as host:  # in /tmp: the minion's qemu must reach the images
        host.prefix = f"mn-{host.prefix[2:]}"
        request.addfinalizer(lambda: [p.unlink(missing_ok=True) for p in Path(
            "/var/log/libvirt/qemu").glob(f"{host.prefix}-*.log")])
        host.add_pool("pool")
        net = host.add_network("lan")
        image = make_image(host.root / "src.qcow2", "qcow2", "24M",
                           [(0x61, 0, MiB), (0x62, 17 * MiB, 64 * 1024), (0x63, 23 * MiB, MiB)])
        dom = host.define_domain("src", [(image, "qcow2")], net.name())
        dst = server.cloud_dir("lvs-dst")
        local_cloud("init", str(dst), "--network", "lan", "--storage", "bulk:raw")
        server.cli("endpoint", "create", "--name", "lvs-src", "--provider", "libvirt",
                   "--connection", json.dumps(host.connection_info(scratch=False)))
        server.cli("endpoint", "create", "--name", "lvs-dst", "--provider", "local",
                   "--connection", json.dumps({"path": str(dst)}))
        yield {"host": host, "dom": dom, "image": image, "dst": dst, "net": net.name()}


def migrate(server: RunningServer, lv: dict[str, Any], pool_id: str, name: str) -> Any:
    created = server.cli(
        "migration", "create", "--origin-endpoint", "lvs-src", "--destination-endpoint",
        "lvs-dst", "--origin-minion-pool-id", pool_id, "--instance", lv["dom"].name(),
        "--source-environment", '{"shutdown_timeout": 5}', "--destination-environment",
        json.dumps({"storage_backend": "bulk", "instance_name": name}), "--network-map",
        json.dumps({lv["net"]: "lan"}), "--skip-os-morphing", "-f", "json").json()
    return server.wait_for(["migration", "show", created["id"]],
                           lambda m: m["status"] in FINAL, timeout=600)


def test_a_shut_off_domain_is_read_through_a_libvirt_source_minion(
        server: RunningServer, lv: dict[str, Any]) -> None:
    host = lv["host"]
    env = {"storage_pool": host.name("pool"), "name_prefix": host.prefix}
    started = time.monotonic()
    pool_id = server.cli(
        "minion", "pool", "create", "--pool-endpoint", "lvs-src", "--pool-platform", "source",
        "--pool-os-type", "linux", "--environment-options", json.dumps(env),
        "--minimum-minions", "1", "--maximum-minions", "1", "--minion-max-idle-time", "3600",
        "lvs-pool", "-f", "json").json()["ID"]
    data = wait_settled(server, pool_id)
    assert data["Pool Status"] == "ALLOCATED", data["Events"]
    print(f"source pool of 1 libvirt minion allocated in {time.monotonic() - started:.0f} s")
    (minion,) = machines(data)
    props = minion["provider_properties"]
    try:
        done = migrate(server, lv, pool_id, "moved")
        assert done["status"] == "COMPLETED", done["tasks"]
        folder = lv["dst"] / "instances" / "moved"
        desc = json.loads((folder / "instance.json").read_text())
        copy = (folder / desc["disks"][0]["file"]).resolve()
        assert subprocess.run(["qemu-img", "compare", "-q", "-U", "-f", "qcow2",
                               str(lv["image"]), str(copy)]).returncode == 0
        # Read through the minion's agent (its serial console logs every request) from a
        # disk attached read-only, detached afterwards; the minion released.
        log = Path(props["serial_log"]).read_text(errors="replace")
        assert "opened read-only" in log and "/v1/reads/" in log, log[-3000:]
        assert f"source disks are read through minion {minion['id']}" in "\n".join(
            task_events(server, done["id"], "DEPLOY_MIGRATION_SOURCE_RESOURCES"))
        minion_dom = host.conn.lookupByName(props["domain"])
        assert ET.fromstring(minion_dom.XMLDesc(0)).findall(
            "./devices/disk/target[@bus='scsi']") == []
        data = show(server, pool_id)
        assert f"released by migration {done['id']}" in data["Events"]
        assert machines(data)[0]["allocation_status"] == "AVAILABLE"
        assert not lv["dom"].isActive()

        # A running domain is refused by name; the minion is released all the same.
        lv["dom"].create()
        try:
            done = migrate(server, lv, pool_id, "moved-live")
        finally:
            lv["dom"].destroy()
        assert done["status"] == "ERROR", done["tasks"]
        assert f"domain {lv['dom'].name()} is running" in json.dumps(done["tasks"])
        data = show(server, pool_id)
        assert f"released by migration {done['id']}" in data["Events"]
        assert machines(data)[0]["allocation_status"] == "AVAILABLE"
    finally:
        server.cli("minion", "pool", "deallocate", pool_id, "--force")
        assert wait_settled(server, pool_id)["Pool Status"] == "DEALLOCATED"
        server.cli("minion", "pool", "delete", pool_id)
