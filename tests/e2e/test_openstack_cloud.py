"""The openstack provider against a real OpenStack (Keystone, Glance, Cinder with the NFS
driver on a bind mount, Neutron, Placement, Nova with the fake compute driver: the cloud of
``coriolis.openstack_cloud``) through the real CLI and server:

- local → OpenStack: every Cinder volume holds exactly the source disk's bytes (then zeroes
  to the whole GiB), the Nova server exists ACTIVE with the flavor and a port on the mapped
  network keeping the source MAC; OpenStack → local back, bit-identical.
- a replica local → OpenStack: two executions (the second sends no block: nothing changed;
  then one changed block), and a deploy booting a server from clones.
- after success, failure (unknown flavor, network, volume type) and cancel, the project's
  Cinder volumes and snapshots, Glance images, Neutron ports and Nova servers are what they
  were: a cancel while the copy runs (held there by the ``REPLICATE_DISKS:hold`` fault hook)
  removes the destination volumes of local → OpenStack, and the Glance image and temporary
  volume of a server booted from an image (OpenStack → local);
- an endpoint with a Keystone application credential, through the CLI: validated, listing
  servers; a wrong secret is refused without showing it.

The cloud is the session fixture ``openstack_cloud`` (tests/openstack_cloud.py). The fake
compute driver runs no guest: the server's disks are checked in Cinder, not booted.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis.harness import RunningServer, local_cloud, start_server, stop_server
from coriolis.providers.local.cloud import LocalCloud
from coriolis.providers.openstack.connection import connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
MAC = "fa:16:3e:0a:0b:01"
NET = "private"  # networks, flavors and volume types of tests/openstack_cloud.py
FLAVOR = "m1.small"
GiB = 1024 ** 3


@pytest.fixture(scope="module")
def osc(openstack_cloud: Any, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("osprov")
    cloud = openstack_cloud
    server: RunningServer | None = None
    try:
        auth = {k: v for k, v in cloud.auth.items() if k != "identity_api_version"}
        ci = {**auth, "nfs_mount_point_base": str(cloud.work / "cinder" / "mnt")}
        data = work / "data"
        server = start_server(data, {"CORIOLIS_OPENSTACK_MOUNT_ROOTS": str(cloud.work),
                                     "CORIOLIS_TEST_CRASH_AT": f"@{work / 'faults'}"})
        src = server.cloud_dir("os-src")
        local_cloud("init", str(src), "--network", "lan")
        local_cloud("add-instance", str(src), "vm1", "--disk-size", "24M", "--disks", "2",
                    "--disk-format", "raw", "--network", "lan", "--mac", MAC, "--cpus", "2",
                    "--memory-mb", "200")
        local_cloud("add-instance", str(src), "vmrep", "--disk-size", "16M",
                    "--disk-format", "raw", "--network", "lan")
        back = server.cloud_dir("os-back")
        local_cloud("init", str(back), "--network", "lan")
        (work / "os.json").write_text(json.dumps(ci))
        server.cli("endpoint", "create", "--name", "os-src", "--provider", "local",
                   "--connection", json.dumps({"path": str(src)}))
        server.cli("endpoint", "create", "--name", "os-back", "--provider", "local",
                   "--connection", json.dumps({"path": str(back)}))
        server.cli("endpoint", "create", "--name", "os", "--provider", "openstack",
                   "--connection-file", str(work / "os.json"))
        yield {"cloud": cloud, "ci": ci, "server": server, "src": src, "back": back,
               "faults": work / "faults", "work": work}
    finally:
        if server is not None:
            stop_server(server)


def inventory(ci: dict[str, Any]) -> set[str]:
    """Every volume, snapshot, image, port and server of the project, by kind, id and
    status."""
    with connect(ci) as conn:
        return ({f"volume {v.id} {v.status}" for v in conn.block_storage.volumes()}
                | {f"snapshot {s.id}" for s in conn.block_storage.snapshots()}
                | {f"image {i.id} {i.status}" for i in conn.image.images()}
                | {f"port {p.id}" for p in conn.network.ports()
                   if not (p.device_owner or "").startswith("network:")}
                | {f"server {s.id}" for s in conn.compute.servers()})


def volume_file(ci: dict[str, Any], volume_id: str) -> str:
    from coriolis.providers.openstack import volumes
    with connect(ci) as conn:
        path, fmt, _folder = volumes.open_file(conn, ci, volume_id, "test")
        volumes.close_file(conn, ci, volume_id)
    assert fmt == "raw"
    return path


def same(a: Path | str, b: Path | str) -> bool:
    """Equal bytes; the longer one's tail all zeroes (qemu-img compare without -s)."""
    return subprocess.run(["qemu-img", "compare", "-q", "-U", "-f", "raw", "-F", "raw",
                           str(a), str(b)]).returncode == 0


def source_disks(root: Path, instance: str) -> list[Path]:
    cloud = LocalCloud({"path": str(root)})
    return [cloud.disk_path(instance, d) for d in cloud.load_instance(instance)["disks"]]


def migrate(server: RunningServer, origin: str, dest: str, instance: str,
            env: dict[str, Any], network_map: dict[str, Any], *extra: str,
            check: bool = True) -> Any:
    """The finished migration; with ``check`` false, the CLI result when it is refused."""
    created = server.cli(
        "migration", "create", "--origin-endpoint", origin, "--destination-endpoint", dest,
        "--instance", instance, "--destination-environment", json.dumps(env),
        "--network-map", json.dumps(network_map), "--skip-os-morphing",
        "--source-environment", json.dumps(
            {"snapshot": False} if origin != "os" else {"shutdown_timeout": 60}), *extra,
        "-f", "json", check=check)
    if not check and created.returncode != 0:
        return created
    return server.wait_for(["migration", "show", created.json()["id"]],
                           lambda m: m["status"] in FINAL, timeout=900)


def migrated_server(conn: Any, name: str, flavor: str, mac: str, network: str
                    ) -> tuple[Any, list[Any]]:
    """The Nova server ``name`` and its Cinder volumes, checked ACTIVE with ``flavor`` and
    one port on ``network`` keeping ``mac``."""
    [srv] = [s for s in conn.compute.servers(details=True) if s.name == name]
    assert srv.status == "ACTIVE"
    assert srv.flavor.original_name == flavor
    ports = list(conn.network.ports(device_id=srv.id))
    assert [p.mac_address for p in ports] == [mac]
    assert conn.network.get_network(ports[0].network_id).name == network
    return srv, [conn.block_storage.get_volume(a["id"]) for a in srv.attached_volumes]


def test_local_to_openstack_and_back_bit_identical(osc: dict[str, Any]) -> None:
    server, ci = osc["server"], osc["ci"]
    before = inventory(ci)
    done = migrate(server, "os-src", "os", "vm1",
                   {"flavor_name": FLAVOR, "instance_name": "osprov-vm1",
                    "preserve_mac_addresses": True}, {"lan": NET})
    assert done["status"] == "COMPLETED", done["tasks"]
    with connect(ci) as conn:
        srv, vols = migrated_server(conn, "osprov-vm1", FLAVOR, MAC, NET)
    assert len(vols) == 2 and all(v.size == 1 for v in vols)
    by_disk = {v.metadata.get("coriolis_disk"): v for v in vols}
    cloud = LocalCloud({"path": str(osc["src"])})
    for i, disk in enumerate(cloud.load_instance("vm1")["disks"]):
        volume = by_disk[f"disk{i}"]  # the local provider's disk ids
        assert same(cloud.disk_path("vm1", disk), volume_file(ci, volume.id))
    # only the new server, its ports and volumes were added
    added = inventory(ci) - before
    assert {a.split()[0] for a in added} == {"server", "port", "volume"}
    assert len(added) == 1 + 1 + 2

    with connect(ci) as conn:  # a stopped server: its volumes hold still
        conn.compute.stop_server(srv)
        conn.compute.wait_for_server(srv, status="SHUTOFF", wait=300)
    back = migrate(server, "os", "os-back", "osprov-vm1", {"instance_name": "osprov-vm1"},
                   {NET: "lan"})
    assert back["status"] == "COMPLETED", back["tasks"]
    after_export = inventory(ci)
    assert after_export == before | added  # temporary snapshots and volumes gone
    new = source_disks(osc["back"], "osprov-vm1")
    assert len(new) == 2
    for vol, disk_file in zip(sorted(vols, key=lambda v: v.id),
                              sorted(new, key=lambda p: p.name), strict=True):
        assert os.path.getsize(disk_file) == GiB
        assert same(volume_file(ci, vol.id), disk_file)
    remove_server(ci, srv.id)  # the user's now; gone so that later tests start clean


def remove_server(ci: dict[str, Any], server_id: str) -> None:
    """Delete a server the tests deployed, then its ports and volumes."""
    with connect(ci) as conn:
        srv = conn.compute.get_server(server_id)
        ports = [p.id for p in conn.network.ports(device_id=srv.id)]
        vols = [a["id"] for a in srv.attached_volumes or []]
        conn.compute.delete_server(srv)
        conn.compute.wait_for_delete(srv, wait=300)
        for port in ports:
            conn.network.delete_port(port, ignore_missing=True)
        for vid in vols:
            vol = conn.block_storage.get_volume(vid)
            conn.block_storage.wait_for_status(vol, "available", failures=["error"], wait=300)
            conn.block_storage.delete_volume(vol)
            conn.block_storage.wait_for_delete(vol, wait=300)


@pytest.mark.parametrize("env,network_map,field", [
    ({"flavor_name": "no-such-flavor"}, {"lan": NET}, "unknown flavor 'no-such-flavor'"),
    ({"flavor_name": FLAVOR}, {"lan": "no-such-net"}, "unknown network 'no-such-net'"),
    ({"flavor_name": FLAVOR, "volume_type": "no-such-type"}, {"lan": NET},
     "unknown volume type 'no-such-type'"),
])
def test_bad_input_names_it_and_leaves_nothing(osc: dict[str, Any], env: dict,
                                               network_map: dict, field: str) -> None:
    server, ci = osc["server"], osc["ci"]
    before = inventory(ci)
    done = migrate(server, "os-src", "os", "vmrep", {**env, "instance_name": "osprov-bad"},
                   network_map, check=False)
    if isinstance(done, dict):  # refused by a task
        assert done["status"] == "ERROR"
        assert field in json.dumps(done["tasks"])
    else:  # refused at creation (the destination inputs are validated then)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert field in done.stderr
    assert inventory(ci) == before


def test_replica_two_executions_then_deploy(osc: dict[str, Any]) -> None:
    server, ci = osc["server"], osc["ci"]
    before = inventory(ci)
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "os-src", "--destination-endpoint", "os",
        "--instance", "vmrep", "--network-map", json.dumps({"lan": NET}),
        "--source-environment", '{"snapshot": false}',
        "--destination-environment", json.dumps({"flavor_name": FLAVOR,
                                                 "instance_name": "osprov-rep"}),
        "-f", "json").json()["id"]
    sent = []
    for step in range(3):
        if step == 2:  # one changed block
            [disk] = source_disks(osc["src"], "vmrep")
            with open(disk, "r+b") as f:
                f.seek(5 * 1024 * 1024)
                f.write(b"\x5a" * 4096)
        ex = server.cli("replica", "execute", replica, "-f", "json").json()
        done = server.wait_for(["replica", "execution", "show", replica, ex["id"]],
                               lambda e: e["status"] in FINAL, timeout=900)
        assert done["status"] == "COMPLETED", done["tasks"]
        shown = server.cli("replica", "show", replica, "--show-instances-data",
                           "-f", "json").json()
        volumes = shown["instances-data"]["vmrep"]["volumes_info"]
        sent.append(volumes[0]["bytes_sent"])
        [disk] = source_disks(osc["src"], "vmrep")
        assert same(disk, volume_file(ci, volumes[0]["volume_id"]))
    assert sent[0] > 0 and sent[1] == 0 and 0 < sent[2] <= 1024 * 1024
    with connect(ci) as conn:  # the replica's snapshots were committed and dropped
        assert list(conn.block_storage.snapshots(volume_id=volumes[0]["volume_id"])) == []
    deployed = server.cli("migration", "deploy", "replica", replica, "--skip-os-morphing",
                          "-f", "json").json()
    done = server.wait_for(["migration", "show", deployed["id"]],
                           lambda m: m["status"] in FINAL, timeout=900)
    assert done["status"] == "COMPLETED", done["tasks"]
    with connect(ci) as conn:
        [srv] = [s for s in conn.compute.servers(details=True) if s.name == "osprov-rep"]
        assert srv.status == "ACTIVE"
        [attached] = srv.attached_volumes
        assert attached["id"] != volumes[0]["volume_id"]  # a clone of the replica's
    [disk] = source_disks(osc["src"], "vmrep")
    assert same(disk, volume_file(ci, attached["id"]))
    server.cli("migration", "delete", deployed["id"], check=False)
    with connect(ci) as conn:  # the deployed server and its port are the user's now
        ports = [p.id for p in conn.network.ports(device_id=srv.id)]
        conn.compute.delete_server(srv)
        conn.compute.wait_for_delete(srv, wait=300)
        for port in ports:
            conn.network.delete_port(port)
    deleted = server.cli("replica", "disks", "delete", replica, "-f", "json").json()
    done = server.wait_for(["replica", "execution", "show", replica, deleted["id"]],
                           lambda e: e["status"] in FINAL, timeout=600)
    assert done["status"] == "COMPLETED", done["tasks"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        left = {a for a in inventory(ci) - before if not a.startswith("volume ") or
                a.split()[1] != attached["id"]}
        if not left:
            break
        time.sleep(3)
    assert left == set()


def _held_then_cancelled(server: RunningServer, created: Any) -> None:
    """Wait until the migration's copy runs (held by the fault hook), then cancel it."""
    mid = created.json()["id"]
    server.wait_for(["migration", "show", mid], lambda m: any(
        t["task_type"] == "REPLICATE_DISKS" and t["status"] == "RUNNING" for t in m["tasks"]),
        timeout=900)


def _cancel(server: RunningServer, mid: str) -> None:
    server.cli("migration", "cancel", mid)
    done = server.wait_for(["migration", "show", mid], lambda m: m["status"] in FINAL,
                           timeout=900)
    assert done["status"] == "CANCELED", done["tasks"]


def test_cancel_leaves_nothing_local_to_openstack(osc: dict[str, Any]) -> None:
    server, ci = osc["server"], osc["ci"]
    before = inventory(ci)
    osc["faults"].write_text("REPLICATE_DISKS:hold")  # the copy stays RUNNING until cancelled
    created = server.cli(
        "migration", "create", "--origin-endpoint", "os-src", "--destination-endpoint", "os",
        "--instance", "vmrep", "--destination-environment",
        json.dumps({"flavor_name": FLAVOR, "instance_name": "osprov-cancel"}),
        "--network-map", json.dumps({"lan": NET}), "--skip-os-morphing",
        "--source-environment", '{"snapshot": false}', "-f", "json")
    _held_then_cancelled(server, created)
    made = inventory(ci) - before
    assert {m.split()[0] for m in made} == {"volume"}  # the destination volume exists now
    _cancel(server, created.json()["id"])
    assert inventory(ci) == before


def test_cancel_leaves_nothing_image_backed_to_local(osc: dict[str, Any]) -> None:
    server, ci, cloud = osc["server"], osc["ci"], osc["cloud"]
    with connect(ci) as conn:
        base = conn.image.create_image(name="osprov-cancel-base", disk_format="raw",
                                       container_format="bare", data=b"\x07" * (1 << 20))
        srv = conn.compute.create_server(
            name="osprov-imgsrc", image_id=base.id, flavor_id=cloud.flavors["m1.tiny"],
            networks=[{"uuid": cloud.network_id}])
        srv = conn.compute.wait_for_server(srv, status="ACTIVE", wait=300)
    try:
        before = inventory(ci)
        osc["faults"].write_text("REPLICATE_DISKS:hold")
        created = server.cli(
            "migration", "create", "--origin-endpoint", "os", "--destination-endpoint",
            "os-back", "--instance", "osprov-imgsrc", "--destination-environment",
            '{"instance_name": "osprov-imgsrc"}', "--network-map", json.dumps({NET: "lan"}),
            "--skip-os-morphing", "--source-environment", "{}", "-f", "json")
        _held_then_cancelled(server, created)
        made = inventory(ci) - before
        # the Glance image of the instance and the temporary volume made from it
        assert sorted(m.split()[0] for m in made) == ["image", "volume"], made
        _cancel(server, created.json()["id"])
        assert inventory(ci) == before
        assert not (osc["back"] / "instances" / "osprov-imgsrc" / "instance.json").exists()
    finally:
        with connect(ci) as conn:
            conn.compute.delete_server(srv)
            conn.compute.wait_for_delete(srv, wait=300)
            conn.image.delete_image(base)


def test_endpoint_with_an_application_credential(osc: dict[str, Any]) -> None:
    server, ci = osc["server"], osc["ci"]
    with connect(ci) as conn:
        cred = conn.identity.create_application_credential(
            user=conn.session.get_user_id(), name="osprov-cli-cred")
    try:
        app = {"auth_url": ci["auth_url"], "application_credential_id": cred.id,
               "application_credential_secret": cred.secret, "region_name": "RegionOne",
               "interface": "public", "nfs_mount_point_base": ci["nfs_mount_point_base"]}
        path = osc["work"] / "os-app.json"
        path.write_text(json.dumps(app))
        server.cli("endpoint", "create", "--name", "os-app", "--provider", "openstack",
                   "--connection-file", str(path))  # create validates
        out = server.cli("endpoint", "validate", "connection", "os-app").stdout
        # Keystone's token names the credential's user and project
        assert "user admin, project admin" in out, out
        names = {s["Name"] for s in server.cli("endpoint", "instance", "list", "os-app",
                                              "-f", "json").json()}
        with connect(ci) as conn:
            assert names == {s.name for s in conn.compute.servers()}
        path.write_text(json.dumps({**app, "application_credential_secret": "wrong-e7c1"}))
        bad = server.cli("endpoint", "create", "--name", "os-app-bad", "--provider",
                         "openstack", "--connection-file", str(path), check=False)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr
        assert cred.id in bad.stderr
        for text in (bad.stderr, bad.stdout, server.log_path.read_text()):
            assert "wrong-e7c1" not in text and cred.secret not in text
    finally:
        server.cli("endpoint", "delete", "os-app", check=False)
        with connect(ci) as conn:
            conn.identity.delete_application_credential(conn.session.get_user_id(), cred)
