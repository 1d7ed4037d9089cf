"""The libvirt source's exports on a real libvirtd: cold (qemu-nbd, read-only, the domain
cannot start meanwhile), live (checkpoints and pull-mode backups), and their cleanup."""

from __future__ import annotations

import subprocess
import time

import pytest

from coriolis.providers.libvirt import backup
from coriolis.providers.libvirt.provider import LibvirtProvider
from coriolis.transfer.extents import merge
from coriolis.transfer.locations import open_reader
from tests.integration.libvirt.conftest import make_image, raw_bytes, read_all
from tests.libvirt_host import LibvirtHost

MiB = 1024 * 1024
BLOCK = 64 * 1024
TRACKING = "0123456789abcdef-replica"


def test_cold_export_is_bit_identical_and_locks_the_domain(
        host: LibvirtHost, provider: LibvirtProvider) -> None:
    pool = host.add_pool("cold")
    vol = pool.createXML(f"<volume><name>{host.name('c2')}.raw</name><capacity unit='MiB'>"
                         "8</capacity><target><format type='raw'/></target></volume>", 0)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 192k", vol.path()],
                   check=True, capture_output=True)
    qcow = make_image(host.root / "cold.qcow2", "qcow2", "16M",
                      [(0x21, 0, MiB), (0x22, 9 * MiB, 128 * 1024)])
    dom = host.define_domain("cold", [(qcow, "qcow2")], None, extra_devices=(
        f"<disk type='volume' device='disk'><driver name='qemu' type='raw'/><source "
        f"pool='{pool.name()}' volume='{vol.name()}'/><target dev='vdb' bus='virtio'/></disk>"))
    conn = host.connection_info()
    before = host.inventory()
    info = provider.get_instance(conn, {}, host.name("cold"))
    expected = {"vda": raw_bytes(qcow, "qcow2"), "vdb": raw_bytes(vol.path(), "raw")}
    res = provider.deploy_source_resources(conn, {}, info, transfer_id="t-cold")
    try:
        assert res["mode"] == "cold" and res["cbt"] == {}
        for dev, data in expected.items():
            assert read_all(res["disks"][dev]["uri"], len(data)) == data, dev
        with pytest.raises(host.libvirt.libvirtError, match="lock"):
            dom.create()
        # a repeated call (same transfer) replaces what the first one left
        again = provider.deploy_source_resources(conn, {}, info, transfer_id="t-cold")
        assert again["folder"] == res["folder"]
        assert read_all(again["disks"]["vda"]["uri"], len(expected["vda"])) == expected["vda"]
    finally:
        provider.delete_source_resources(conn, {}, {**res, "export_info": info,
                                                    "transfer_id": "t-cold"})
    assert host.inventory() == before
    assert subprocess.run(["pgrep", "-f", res["folder"]], capture_output=True).returncode == 1
    assert raw_bytes(qcow, "qcow2") == expected["vda"]  # never written
    # the image lock is gone: a writer may open the image again
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read 0 512", str(qcow)], check=True,
                   capture_output=True)
    assert dom.isActive() == 0


def test_crashed_cold_deploy_is_found_by_delete(host: LibvirtHost,
                                                provider: LibvirtProvider) -> None:
    qcow = make_image(host.root / "crash.qcow2", "qcow2", "4M", [])
    host.define_domain("crash", [(qcow, "qcow2")], None)
    conn = host.connection_info()
    before = host.inventory()
    info = provider.get_instance(conn, {}, host.name("crash"))
    provider.deploy_source_resources(conn, {}, info, transfer_id="t-crash")
    # the worker died before it recorded the resources: it only knows the transfer
    provider.delete_source_resources(conn, {}, {"export_info": info, "transfer_id": "t-crash"})
    provider.delete_source_resources(conn, {}, {"export_info": info, "transfer_id": "t-crash"})
    assert host.inventory() == before


@pytest.fixture(scope="module")
def live(host: LibvirtHost) -> dict:
    qcow = make_image(host.root / "live.qcow2", "qcow2", "16M",
                      [(0x31, 0, 2 * MiB), (0x32, 10 * MiB, MiB)])
    dom = host.define_domain("live", [(qcow, "qcow2")], None, running=True)
    return {"dom": dom, "qcow": qcow}


def dirty(location: dict, since: str | None) -> list[tuple[int, int]]:
    reader = open_reader(location)
    try:
        return [(e.offset, e.length) for e in merge(reader.extents(since=since))
                if not e.zero]
    finally:
        reader.close()


def test_live_replica_checkpoints(host: LibvirtHost, provider: LibvirtProvider,
                                  live: dict) -> None:
    conn, dom = host.connection_info(), live["dom"]
    info = provider.get_instance(conn, {}, host.name("live"))
    assert info["power_state"] == "running"
    prefix = backup.checkpoint_prefix(TRACKING)

    # execution 1: a full backup, a new checkpoint
    res1 = provider.deploy_source_resources(conn, {}, info, tracking_id=TRACKING,
                                            transfer_id=TRACKING)
    token1 = res1["cbt"]["vda"]["token"]
    assert token1.startswith(prefix) and res1["mode"] == "live" and res1["events"] == []
    loc = res1["disks"]["vda"]
    assert loc["dirty_bitmap"] is None and loc["uri"].startswith("nbd+unix:///vda?socket=")
    full = read_all(loc["uri"], 16 * MiB)
    host.guest_write(dom, [(0x77, 4 * MiB, BLOCK)])  # after the backup's start: not in it
    assert read_all(loc["uri"], 16 * MiB) == full
    assert full[:2 * MiB] == b"\x31" * (2 * MiB)
    provider.delete_source_resources(conn, {}, {**res1, "export_info": info,
                                                "transfer_id": TRACKING,
                                                "tracking_id": TRACKING,
                                                "keep_tokens": [token1]})
    assert [c.getName() for c in dom.listAllCheckpoints(0)] == [token1]

    # execution 2: incremental since token1: only the blocks written since
    host.guest_write(dom, [(0x78, 8 * MiB + BLOCK, 2 * BLOCK)])
    res2 = provider.deploy_source_resources(conn, {}, info, tracking_id=TRACKING,
                                            transfer_id=TRACKING, keep_tokens=[token1])
    token2 = res2["cbt"]["vda"]["token"]
    loc2 = res2["disks"]["vda"]
    assert loc2["bitmap_since"] == token1 and loc2["dirty_bitmap"] == "backup-vda"
    assert dirty(loc2, token1) == [(4 * MiB, BLOCK), (8 * MiB + BLOCK, 2 * BLOCK)]
    data = read_all(loc2["uri"], 16 * MiB)
    assert data[4 * MiB:4 * MiB + BLOCK] == b"\x77" * BLOCK
    assert data[8 * MiB + BLOCK:8 * MiB + 3 * BLOCK] == b"\x78" * (2 * BLOCK)
    # execution 2 committed: token2 in force, token1 goes
    provider.delete_source_resources(conn, {}, {**res2, "export_info": info,
                                                "transfer_id": TRACKING,
                                                "tracking_id": TRACKING,
                                                "keep_tokens": [token2]})
    assert [c.getName() for c in dom.listAllCheckpoints(0)] == [token2]

    # a lost checkpoint: full read and a warning
    res3 = provider.deploy_source_resources(conn, {}, info, tracking_id=TRACKING,
                                            transfer_id=TRACKING, keep_tokens=[token1])
    assert res3["disks"]["vda"]["dirty_bitmap"] is None and res3["incremental_from"] is None
    assert len(res3["events"]) == 1 and token1 in res3["events"][0]
    token3 = res3["cbt"]["vda"]["token"]
    assert [c.getName() for c in dom.listAllCheckpoints(0)] == [token3]  # token2 not kept
    provider.delete_source_resources(conn, {}, {**res3, "export_info": info,
                                                "transfer_id": TRACKING,
                                                "tracking_id": TRACKING,
                                                "keep_tokens": [token3]})


def test_live_cancel_leaves_nothing(host: LibvirtHost, provider: LibvirtProvider,
                                    live: dict) -> None:
    conn, dom = host.connection_info(), live["dom"]
    info = provider.get_instance(conn, {}, host.name("live"))
    keep = [c.getName() for c in dom.listAllCheckpoints(0)]
    before = host.inventory()
    tid = "fedcba9876543210-cancel"
    res = provider.deploy_source_resources(conn, {}, info, tracking_id=tid, transfer_id=tid)
    assert host.libvirt.VIR_DOMAIN_JOB_NONE != dom.jobInfo()[0]
    # a deploy repeated after a crash replaces the first one's job and checkpoint
    res = provider.deploy_source_resources(conn, {}, info, tracking_id=tid, transfer_id=tid)
    assert len([c for c in dom.listAllCheckpoints(0)
                if c.getName().startswith(backup.checkpoint_prefix(tid))]) == 1
    # the execution failed: delete with what was in force before (nothing of this id)
    provider.delete_source_resources(conn, {}, {"export_info": info, "transfer_id": tid,
                                                "tracking_id": tid, "keep_tokens": []})
    deadline = time.monotonic() + 10
    while dom.jobInfo()[0] != host.libvirt.VIR_DOMAIN_JOB_NONE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.inventory() == before
    assert [c.getName() for c in dom.listAllCheckpoints(0)] == keep
    assert not (host.root / "scratch" / res["folder"]).exists()


def test_live_migration_backup_has_no_checkpoint(host: LibvirtHost,
                                                 provider: LibvirtProvider,
                                                 live: dict) -> None:
    conn = host.connection_info()
    info = provider.get_instance(conn, {}, host.name("live"))
    before = host.inventory()
    res = provider.deploy_source_resources(conn, {}, info, transfer_id="mig")
    try:
        assert res["cbt"] == {} and res["checkpoint"] is None
        assert inventory_checkpoints(host) == {c for c in before if c.startswith("checkpoint")}
        assert dirty(res["disks"]["vda"], None)[0] == (0, 2 * MiB)
    finally:
        provider.delete_source_resources(conn, {}, {**res, "export_info": info,
                                                    "transfer_id": "mig"})
    assert host.inventory() == before


def inventory_checkpoints(host: LibvirtHost) -> set[str]:
    return {c for c in host.inventory() if c.startswith("checkpoint")}


def test_shutdown_instance(host: LibvirtHost, provider: LibvirtProvider) -> None:
    qcow = make_image(host.root / "stop.qcow2", "qcow2", "4M", [])
    dom = host.define_domain("stop", [(qcow, "qcow2")], None, running=True)
    conn = host.connection_info()
    info = provider.get_instance(conn, {}, host.name("stop"))
    started = time.monotonic()
    provider.shutdown_instance(conn, {"shutdown_timeout": 1}, info)
    assert not dom.isActive() and time.monotonic() - started < 10
    provider.shutdown_instance(conn, {"shutdown_timeout": 1}, info)  # nothing to do
    assert not dom.isActive()


def test_checkpoints_of_a_shut_off_domain_are_dropped(host: LibvirtHost,
                                                      provider: LibvirtProvider) -> None:
    from coriolis.transfer.extents import qcow2_bitmaps

    qcow = make_image(host.root / "off.qcow2", "qcow2", "4M", [])
    dom = host.define_domain("off", [(qcow, "qcow2")], None, running=True)
    conn = host.connection_info()
    info = provider.get_instance(conn, {}, host.name("off"))
    tid = "0ff0ff0ff-replica"
    res = provider.deploy_source_resources(conn, {}, info, tracking_id=tid, transfer_id=tid)
    token = res["cbt"]["vda"]["token"]
    provider.delete_source_resources(conn, {}, {**res, "export_info": info, "tracking_id": tid,
                                                "transfer_id": tid, "keep_tokens": [token]})
    dom.destroy()
    assert qcow2_bitmaps(str(qcow)) == [token]
    # the execution was rolled back after the domain was shut off: its checkpoint goes
    provider.delete_source_resources(conn, {}, {"export_info": info, "tracking_id": tid,
                                                "transfer_id": tid, "keep_tokens": []})
    assert dom.listAllCheckpoints(0) == [] and qcow2_bitmaps(str(qcow)) == []


def test_remote_hosts_are_refused_by_name(provider: LibvirtProvider) -> None:
    from coriolis import exceptions

    with pytest.raises(exceptions.ProviderError, match="kvm7.example"):
        provider.deploy_source_resources({"uri": "qemu+ssh://root@kvm7.example/system"}, {},
                                         {"id": "x", "name": "vm"})


def test_a_domain_that_vanished_mid_transfer(host: LibvirtHost,
                                             provider: LibvirtProvider) -> None:
    from coriolis import exceptions

    qcow = make_image(host.root / "gone.qcow2", "qcow2", "4M", [])
    dom = host.define_domain("vanish", [(qcow, "qcow2")], None)
    conn = host.connection_info()
    before = host.inventory()
    info = provider.get_instance(conn, {}, host.name("vanish"))
    res = provider.deploy_source_resources(conn, {}, info, transfer_id="t-vanish")
    dom.undefine()
    provider.delete_source_resources(conn, {}, {**res, "export_info": info,
                                                "transfer_id": "t-vanish"})
    assert host.inventory() == before - {f"domain:{host.name('vanish')}"}
    with pytest.raises(exceptions.InstanceNotFound, match=host.name("vanish")):
        provider.deploy_source_resources(conn, {}, info, transfer_id="t-vanish")
