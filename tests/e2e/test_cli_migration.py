"""The embedded slice end to end: the real `coriolis` CLI against a real all-in-one server,
migrating real disk images between two `local` clouds."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from coriolis.harness import RunningServer, local_cloud, parse_tasks

pytestmark = pytest.mark.e2e

FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}


@pytest.fixture(scope="module")
def clouds(server: RunningServer) -> dict[str, Path]:
    src, dst = server.cloud_dir("src"), server.cloud_dir("dst")
    local_cloud("init", str(src), "--network", "lan", "--network", "dmz")
    local_cloud("add-instance", str(src), "vm1", "--disk-size", "96M",
                "--disk-format", "raw", "--network", "lan")
    local_cloud("add-instance", str(src), "vm2", "--disk-size", "80M",
                "--disk-format", "qcow2", "--disks", "2", "--network", "dmz")
    local_cloud("add-instance", str(src), "vm3", "--disk-size", "16M", "--network", "lan")
    local_cloud("init", str(dst), "--network", "prod",
                "--storage", "fast:qcow2", "--storage", "bulk:raw")
    return {"src": src, "dst": dst}


@pytest.fixture(scope="module")
def endpoints(server: RunningServer, clouds: dict[str, Path], tmp_path_factory) -> dict[str, str]:
    conn_file = tmp_path_factory.mktemp("conn") / "dst.json"
    conn_file.write_text(json.dumps({"path": str(clouds["dst"])}))
    src = server.cli("endpoint", "create", "--name", "src", "--provider", "local",
                     "--connection", json.dumps({"path": str(clouds["src"])}),
                     "-f", "value", "-c", "id").stdout.strip()
    dst = server.cli("endpoint", "create", "--name", "dst", "--provider", "local",
                     "--description", "destination cloud",
                     "--connection-file", str(conn_file), "-f", "value", "-c", "id").stdout.strip()
    return {"src": src, "dst": dst}


def disk_files(cloud: Path, instance: str) -> list[Path]:
    desc = json.loads((cloud / "instances" / instance / "instance.json").read_text())
    return [(cloud / "instances" / instance / d["file"]).resolve() for d in desc["disks"]]


def qemu_compare(a: Path, b: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", "compare", str(a), str(b)],
                          capture_output=True, text=True)


def test_providers_and_schemas(server: RunningServer) -> None:
    providers = server.cli("provider", "list", "-f", "json").json()
    local = [p for p in providers if p["Platform"] == "local"]
    assert local and "Replica Source" in local[0]["Supported Actions"]
    schemas = server.cli("provider", "schema", "list", "local", "connection", "-f", "json").json()
    assert schemas[0]["Schema Type"] == "connection_info_schema"
    assert "path" in schemas[0]["Schema"]["properties"]


def test_endpoint_crud_and_listings(server: RunningServer, endpoints: dict[str, str]) -> None:
    rows = server.cli("endpoint", "list", "-f", "json").json()
    assert {r["Name"] for r in rows} >= {"src", "dst"}
    shown = server.cli("endpoint", "show", "dst", "-f", "json").json()
    assert shown["id"] == endpoints["dst"] and shown["description"] == "destination cloud"
    server.cli("endpoint", "validate", "connection", "src")

    instances = server.cli("endpoint", "instance", "list", "src", "-f", "json").json()
    assert {i["Name"] for i in instances} == {"vm1", "vm2", "vm3"}
    vm2 = server.cli("endpoint", "instance", "show", "src", "vm2", "-f", "json").json()
    assert len(vm2["Disks"]) == 2

    nets = server.cli("endpoint", "network", "list", "dst", "-f", "json").json()
    assert [n["Name"] for n in nets] == ["prod"]
    storage = server.cli("endpoint", "storage", "list", "dst", "-f", "json").json()
    assert sorted(s["Name"] for s in storage) == ["bulk", "fast"]
    opts = server.cli("endpoint", "destination", "options", "list", "dst", "-f", "json").json()
    backend_opt = [o for o in opts if o["Option Name"] == "storage_backend"][0]
    assert sorted(backend_opt["Possible Values"]) == ["bulk", "fast"]
    src_opts = server.cli("endpoint", "source", "options", "list", "src", "-f", "json").json()
    assert "snapshot" in {o["Option Name"] for o in src_opts}

    server.cli("endpoint", "update", endpoints["dst"], "--description", "dest")
    assert server.cli("endpoint", "show", "dst", "-f", "value", "-c", "description"
                      ).stdout.strip() == "dest"


def migrate(server: RunningServer, endpoints: dict[str, str], instance: str,
            *extra: str) -> dict:
    created = server.cli(
        "migration", "create", "--origin-endpoint", "src", "--destination-endpoint", "dst",
        "--instance", instance,
        "--source-environment", json.dumps({"snapshot": False}),
        "--destination-environment", json.dumps({"storage_backend": "bulk"}),
        "--network-map", json.dumps({"lan": "prod", "dmz": "prod"}),
        "--skip-os-morphing", *extra, "-f", "json",
    ).json()
    return server.wait_for(["migration", "show", created["id"]],
                           lambda m: m["status"] in FINAL)


def test_migration_copies_disks_bit_for_bit(
    server: RunningServer, endpoints: dict[str, str], clouds: dict[str, Path]
) -> None:
    done = migrate(server, endpoints, "vm1", "--replication-count", "1")
    assert done["status"] == "COMPLETED", done["tasks"]
    tasks = parse_tasks(done["tasks"])
    assert {t["status"] for t in tasks} == {"COMPLETED"}
    copy = [t for t in tasks if t["task_type"] == "REPLICATE_DISKS"]
    assert len(copy) == 1 and "100%" in copy[0]["progress_updates"]
    for src_disk, dst_disk in zip(disk_files(clouds["src"], "vm1"),
                                  disk_files(clouds["dst"], "vm1"), strict=True):
        assert qemu_compare(src_disk, dst_disk).returncode == 0
    desc = json.loads((clouds["dst"] / "instances" / "vm1" / "instance.json").read_text())
    assert [n["network"] for n in desc["nics"]] == ["prod"]

    listed = server.cli("migration", "list", "-f", "json").json()
    assert done["id"] in {m["ID"] for m in listed}
    server.cli("migration", "delete", done["id"])
    assert done["id"] not in {m["ID"] for m in server.cli("migration", "list", "-f", "json").json()}


def test_migration_with_storage_mapping_to_qcow2(
    server: RunningServer, endpoints: dict[str, str], clouds: dict[str, Path]
) -> None:
    done = migrate(server, endpoints, "vm2", "--default-storage-backend", "fast")
    assert done["status"] == "COMPLETED", done["tasks"]
    dst = disk_files(clouds["dst"], "vm2")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(dst[0])],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2"
    for a, b in zip(disk_files(clouds["src"], "vm2"), dst, strict=True):
        assert qemu_compare(a, b).returncode == 0


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"instance": "nope"}, "nope"),
        ({"dest_env": {"storage_backend": "missing-backend"}}, "missing-backend"),
        ({"network_map": {"elsewhere": "prod"}}, "lan"),
    ],
)
def test_bad_migration_input_is_refused(
    server: RunningServer, endpoints: dict[str, str], change: dict, expected: str
) -> None:
    before = server.cli("migration", "list", "-f", "json").json()
    res = server.cli(
        "migration", "create", "--origin-endpoint", "src", "--destination-endpoint", "dst",
        "--instance", change.get("instance", "vm3"),
        "--source-environment", json.dumps({"snapshot": False}),
        "--destination-environment",
        json.dumps(change.get("dest_env", {"storage_backend": "bulk"})),
        "--network-map", json.dumps(change.get("network_map", {"lan": "prod"})),
        "--skip-os-morphing", check=False,
    )
    assert res.returncode == 1
    assert "HTTP 400" in res.stderr and expected in res.stderr
    assert "Traceback" not in res.stderr
    assert server.cli("migration", "list", "-f", "json").json() == before


def test_bad_endpoint_input(server: RunningServer) -> None:
    res = server.cli("endpoint", "create", "--name", "x", "--provider", "nosuch",
                     "--connection", '{"path": "/tmp"}', check=False)
    assert res.returncode == 1 and "nosuch" in res.stderr and "Traceback" not in res.stderr
    res = server.cli("endpoint", "create", "--name", "x", "--provider", "local",
                     "--connection", '{"path": ', check=False)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    missing = server.cloud_dir("does-not-exist")
    res = server.cli("endpoint", "create", "--name", "gone", "--provider", "local",
                     "--connection", json.dumps({"path": str(missing)}), check=False)
    assert res.returncode == 1 and str(missing) in res.stderr
    res = server.cli("endpoint", "show", "00000000-0000-0000-0000-000000000000", check=False)
    assert res.returncode == 1 and "HTTP 404" in res.stderr


def test_missing_disk_file_fails_before_data_moves(
    server: RunningServer, endpoints: dict[str, str], clouds: dict[str, Path]
) -> None:
    local_cloud("add-instance", str(clouds["src"]), "broken", "--disk-size", "16M",
                "--network", "lan")
    disk_files(clouds["src"], "broken")[0].unlink()
    res = server.cli(
        "migration", "create", "--origin-endpoint", "src", "--destination-endpoint", "dst",
        "--instance", "broken", "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "bulk"}',
        "--network-map", '{"lan": "prod"}', "--skip-os-morphing", check=False,
    )
    assert res.returncode == 1 and "broken" in res.stderr
    assert not (clouds["dst"] / "instances" / "broken").exists()


def test_cancel_migration_cleans_up(
    server: RunningServer, endpoints: dict[str, str], clouds: dict[str, Path]
) -> None:
    local_cloud("add-instance", str(clouds["src"]), "big", "--disk-size", "1G",
                "--allocated", "0.6", "--network", "lan")
    created = server.cli(
        "migration", "create", "--origin-endpoint", "src", "--destination-endpoint", "dst",
        "--instance", "big", "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "bulk"}',
        "--network-map", '{"lan": "prod"}', "--skip-os-morphing", "-f", "json",
    ).json()
    # Cancelled at once, while it runs (a copy cancelled mid-chunk is covered by
    # tests/integration/engine, which can watch the task more closely than a CLI poll).
    assert created["status"] == "RUNNING"
    server.cli("migration", "cancel", created["id"])
    done = server.wait_for(["migration", "show", created["id"]], lambda m: m["status"] in FINAL)
    assert done["status"] == "CANCELED"
    assert not (clouds["dst"] / "instances" / "big" / "instance.json").exists()
    assert not list((clouds["dst"] / "storage").glob("**/big*"))


def test_seed_v2_login_example_works(server: RunningServer, endpoints: dict[str, str]) -> None:
    v2 = {"OS_AUTH_URL": server.url + "/identity/v2.0", "OS_TENANT_NAME": "admin",
          "OS_IDENTITY_API_VERSION": "2", "OS_PROJECT_NAME": "", "OS_USER_DOMAIN_NAME": "",
          "OS_PROJECT_DOMAIN_NAME": ""}
    rows = server.cli("endpoint", "list", "-f", "json", env=v2).json()
    assert {r["ID"] for r in rows} >= set(endpoints.values())
    bad = server.cli("endpoint", "list", env={**v2, "OS_PASSWORD": "wrong"}, check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


# ------------------------------------------------------------- confinement of local instances
@pytest.fixture(scope="module")
def odd_cloud(server: RunningServer, endpoints: dict[str, str]) -> Path:
    """A source cloud (endpoint "odd") for instances that are malformed on purpose."""
    cloud = server.cloud_dir("odd")
    local_cloud("init", str(cloud), "--network", "lan")
    server.local_endpoint("odd", cloud)
    return cloud


def edit_disk(cloud: Path, instance: str, **changes: str) -> Path:
    """Change disk 0 of ``instance``'s instance.json; returns the instance folder."""
    folder = cloud / "instances" / instance
    desc = json.loads((folder / "instance.json").read_text())
    desc["disks"][0].update(changes)
    (folder / "instance.json").write_text(json.dumps(desc))
    return folder


def storage_files(cloud: Path) -> set[Path]:
    return {p for p in (cloud / "storage").rglob("*") if p.is_file()}


def refused_migration(server: RunningServer, instance: str) -> str:
    """``coriolis migration create`` of ``instance`` from "odd"; asserts a 400 that stores
    nothing; returns the CLI's error output."""
    before = server.cli("migration", "list", "-f", "json").json()
    res = server.cli(
        "migration", "create", "--origin-endpoint", "odd", "--destination-endpoint", "dst",
        "--instance", instance, "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "bulk"}',
        "--network-map", '{"lan": "prod"}', "--skip-os-morphing", check=False)
    assert res.returncode == 1 and "HTTP 400" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert server.cli("migration", "list", "-f", "json").json() == before
    return res.stderr


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlinked-file", "symlinked-folder",
                                  "backing-file"])
def test_instance_files_out_of_the_instance_folder_are_refused(
    server: RunningServer, odd_cloud: Path, clouds: dict[str, Path], kind: str
) -> None:
    """A disk entry that reaches the server's key ring (``..``, an absolute path, a symlinked
    disk file, a symlinked instance folder, a qcow2 backing file) is a 400 naming the instance
    and the disk; nothing reaches the destination (it used to copy the key ring there)."""
    secret = server.data_dir / "secret.keys"
    name = f"escape-{kind}"
    local_cloud("add-instance", str(odd_cloud), name, "--disk-size", "4M", "--network", "lan",
                "--disk-format", "qcow2" if kind == "backing-file" else "raw")
    folder = odd_cloud / "instances" / name
    disk = disk_files(odd_cloud, name)[0]
    shown = disk.name
    if kind == "relative":
        shown = os.path.relpath(secret, folder)
        edit_disk(odd_cloud, name, file=shown)
    elif kind == "absolute":
        shown = str(secret)
        edit_disk(odd_cloud, name, file=shown)
    elif kind == "symlinked-file":
        disk.unlink()
        disk.symlink_to(secret)
    elif kind == "symlinked-folder":
        outside = server.data_dir.parent / f"outside-{name}"
        folder.rename(outside)  # an instance kept out of the cloud, whose disk is its own
        folder.symlink_to(outside)
        shown = "its folder"
    else:
        subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", str(secret),
                        "-F", "raw", str(disk)], check=True)
    before = storage_files(clouds["dst"])
    error = refused_migration(server, name)
    assert name in error and shown in error and "leads out of" in error
    assert storage_files(clouds["dst"]) == before
    # the listing goes on, and names it
    listed = server.cli("endpoint", "instance", "list", "odd", "-f", "json").json()
    assert name in {i["Name"] for i in listed}


@pytest.mark.parametrize("kind", ["text-declared-qcow2", "truncated-qcow2"])
def test_a_corrupt_source_disk_is_a_400_with_qemu_img_s_reason(
    server: RunningServer, odd_cloud: Path, kind: str
) -> None:
    name = f"corrupt-{kind.split('-')[0]}"
    local_cloud("add-instance", str(odd_cloud), name, "--disk-size", "16M", "--network", "lan",
                "--allocated", "0.5", "--disk-format",
                "raw" if kind == "text-declared-qcow2" else "qcow2")
    disk = disk_files(odd_cloud, name)[0]
    if kind == "text-declared-qcow2":
        disk.write_text("this is not a disk image\n")
        edit_disk(odd_cloud, name, format="qcow2")
        reason = "Image is not in qcow2 format"
    else:
        os.truncate(disk, disk.stat().st_size // 2)
        reason = "corrupted clusters"
    error = refused_migration(server, name)
    assert name in error and disk.name in error and reason in error
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "odd", "--destination-endpoint", "dst",
        "--instance", name, "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "bulk"}',
        "--network-map", '{"lan": "prod"}', check=False)
    assert replica.returncode == 1 and "HTTP 400" in replica.stderr
    assert name in replica.stderr and reason in replica.stderr
