"""Third-party providers with some capabilities only, installed as a plugin is (an entry
point in the ``coriolis.providers`` group, tests/fixtures/plugins on the server's
PYTHONPATH), through the real CLI: the type bits they show, the schemas they have, a
migration from the source-only one, and the 400s of what they lack."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.harness import RunningServer, local_cloud, parse_tasks, start_server, stop_server
from tests import plugin_providers

pytestmark = pytest.mark.e2e

FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    if not shutil.which("qemu-img"):
        pytest.fail("qemu-img is required (./dev setup installs qemu-utils)")
    path = os.pathsep.join(p for p in (plugin_providers.server_env()["PYTHONPATH"],
                                       os.environ.get("PYTHONPATH")) if p)
    srv = start_server(tmp_path_factory.mktemp("plugins") / "data", env={"PYTHONPATH": path})
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="module")
def clouds(server: RunningServer) -> dict[str, Path]:
    src, dst = server.cloud_dir("src"), server.cloud_dir("dst")
    local_cloud("init", str(src), "--network", "lan")
    local_cloud("add-instance", str(src), "vm1", "--disk-size", "40M", "--network", "lan")
    local_cloud("init", str(dst), "--network", "prod", "--storage", "bulk:raw")
    for platform, name, path in (("srconly", "plug-src", src), ("dstonly", "plug-dst", dst),
                                 ("local", "local-dst", dst)):
        server.cli("endpoint", "create", "--name", name, "--provider", platform,
                   "--connection", json.dumps({"path": str(path)}))
    return {"src": src, "dst": dst}


def actions(server: RunningServer, platform: str) -> str:
    rows = server.cli("provider", "list", "-f", "json").json()
    return next(r["Supported Actions"] for r in rows if r["Platform"] == platform)


def test_provider_list_shows_the_bits_of_each_capability(server: RunningServer) -> None:
    src, dst, local = (actions(server, p) for p in ("srconly", "dstonly", "local"))
    assert "Migration Source" in src and "Listing Instances" in src
    assert "Replica Source" not in src and "Migration Destination" not in src
    assert "Migration Destination" in dst and "OSMorphing" in dst
    assert "Replica Destination" not in dst and "Listing Instances" not in dst
    assert "OSMorphing" in local and "Replica Source" in local


def test_schemas_only_for_what_a_provider_has(server: RunningServer) -> None:
    """The CLI asks by the replica bits (upstream's): a migration-only provider answers them
    with its environment schemas (the same for migrations and replicas); a side it lacks is a
    400 naming the capability."""
    def schema(platform: str, kind: str) -> dict:
        rows = server.cli("provider", "schema", "list", platform, kind, "-f", "json").json()
        return rows[0]["Schema"]

    local = schema("local", "destination")["properties"]
    # The transfer options come with every import provider, from transfer/options.py.
    transfer = {"transfer_compression", "transfer_bandwidth_limit_mib", "writer_agent"}
    assert {"storage_backend", *transfer} <= set(local)
    assert "snapshot" in schema("local", "source")["properties"]
    assert "path" in schema("srconly", "connection")["properties"]
    assert "snapshot" in schema("srconly", "source")["properties"]
    assert {"storage_backend", *transfer} <= set(schema("dstonly", "destination")["properties"])
    for platform, kind, capability in (("srconly", "destination", "import"),
                                       ("dstonly", "source", "export")):
        res = server.cli("provider", "schema", "list", platform, kind, check=False)
        assert res.returncode == 1, res.stdout
        assert f"provider '{platform}' lacks the '{capability}' capability" in res.stderr
        assert "Traceback" not in res.stderr
    providers = server.bindings().providers
    source = providers.schemas_list("srconly", 2).provider_schemas[0]
    assert source["type"] == "source_environment_schema"
    assert "snapshot" in source["schema"]["properties"]
    dest = providers.schemas_list("dstonly", 1).provider_schemas[0]
    assert dest["type"] == "destination_environment_schema"
    assert {"storage_backend", *transfer} <= set(dest["schema"]["properties"])


def test_a_migration_from_a_source_only_provider(server: RunningServer,
                                                 clouds: dict[str, Path]) -> None:
    created = server.cli(
        "migration", "create", "--origin-endpoint", "plug-src",
        "--destination-endpoint", "local-dst", "--instance", "vm1",
        "--source-environment", json.dumps({"snapshot": False}),
        "--destination-environment",
        json.dumps({"storage_backend": "bulk", "transfer_compression": "none"}),
        "--network-map", json.dumps({"lan": "prod"}), "--skip-os-morphing", "-f", "json",
    ).json()
    done = server.wait_for(["migration", "show", created["id"]],
                           lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    assert {t["status"] for t in parse_tasks(done["tasks"])} == {"COMPLETED"}
    assert (clouds["dst"] / "instances" / "vm1" / "instance.json").exists()


@pytest.mark.parametrize("args, needle", [
    (["replica", "create", "--origin-endpoint", "plug-src", "--destination-endpoint",
      "local-dst"],
     "source endpoint 'plug-src': provider 'srconly' lacks the 'replica_export' capability"),
    (["migration", "create", "--origin-endpoint", "plug-dst", "--destination-endpoint",
      "local-dst", "--skip-os-morphing"],
     "source endpoint 'plug-dst': provider 'dstonly' lacks the 'instances' capability"),
])
def test_a_transfer_needing_a_missing_capability_is_a_400(
        server: RunningServer, clouds: dict[str, Path], args: list[str], needle: str) -> None:
    before = {kind: server.cli(kind, "list", "-f", "json").json()
              for kind in ("replica", "migration")}
    res = server.cli(*args, "--instance", "vm1", "--network-map", json.dumps({"lan": "prod"}),
                     "--source-environment", json.dumps({"snapshot": False}),
                     "--destination-environment", json.dumps({"storage_backend": "bulk"}),
                     check=False)
    assert res.returncode == 1 and "HTTP 400" in res.stderr and needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert {kind: server.cli(kind, "list", "-f", "json").json()
            for kind in ("replica", "migration")} == before


@pytest.mark.parametrize("args, needle", [
    (["endpoint", "storage", "list", "plug-src"], "'srconly' lacks the 'storage' capability"),
    (["endpoint", "instance", "list", "plug-dst"],
     "'dstonly' lacks the 'instances' capability"),
])
def test_a_listing_without_its_capability_is_a_400(server: RunningServer,
                                                   clouds: dict[str, Path], args: list[str],
                                                   needle: str) -> None:
    res = server.cli(*args, check=False)
    assert res.returncode == 1 and "HTTP 400" in res.stderr and needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
