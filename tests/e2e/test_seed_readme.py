"""The seed README (upstream python-coriolisclient's README.rst) taken literally, through our
`coriolis` CLI against a real all-in-one server: its login example, `service update
--enabled/--disabled`, `migration deploy replica` with pool ids, and the log service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coriolis.harness import RunningServer, local_cloud

pytestmark = pytest.mark.e2e
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
OS_KEYS = ("OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD", "OS_PROJECT_NAME", "OS_TENANT_NAME",
           "OS_USER_DOMAIN_NAME", "OS_PROJECT_DOMAIN_NAME", "OS_IDENTITY_API_VERSION",
           "OS_PROJECT_ID", "OS_TENANT_ID", "OS_USER_ID", "OS_AUTH_TOKEN")


def only(**values: str) -> dict[str, str]:
    """An environment with exactly these OS_* variables (every other one blanked)."""
    return {**{k: "" for k in OS_KEYS}, **values}


def test_seed_login_example_v2_with_nothing_else(server: RunningServer) -> None:
    # The seed: OS_AUTH_URL=http://HOST:PORT/v2.0, OS_USERNAME, OS_PASSWORD, OS_TENANT_NAME.
    # Our server's identity serves Keystone v2.0 under /identity/v2.0.
    env = only(OS_AUTH_URL=server.url + "/identity/v2.0", OS_USERNAME="admin",
               OS_PASSWORD=server.env["OS_PASSWORD"], OS_TENANT_NAME="admin")
    res = server.cli("provider", "list", "-f", "json", env=env)
    assert "local" in {p["Platform"] for p in res.json()}
    assert res.stderr == ""
    # The trailing slash spelling too.
    env["OS_AUTH_URL"] += "/"
    assert server.cli("endpoint", "list", env=env).returncode == 0
    # An explicit version still wins: v3 against a v2.0 URL fails (no v3 scope given).
    bad = server.cli("endpoint", "list", env={**env, "OS_IDENTITY_API_VERSION": "3"},
                     check=False)
    assert bad.returncode == 1 and "Identity v3 needs" in bad.stderr


def test_v3_inferred_from_the_auth_url(server: RunningServer) -> None:
    env = only(OS_AUTH_URL=server.url + "/identity/v3", OS_USERNAME="admin",
               OS_PASSWORD=server.env["OS_PASSWORD"], OS_PROJECT_NAME="admin",
               OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default")
    assert server.cli("endpoint", "list", env=env).returncode == 0


def test_service_update_enabled_keeps_regions(server: RunningServer) -> None:
    region = server.cli("region", "create", "--enabled", "--description", "public clouds",
                        "seed-public", "-f", "json").json()["ID"]
    service = server.cli("service", "create", "--host", "seed-host", "--binary",
                         "coriolis-worker", "--topic", "seed", "--coriolis-region", region,
                         "-f", "json").json()["ID"]
    try:
        disabled = server.cli("service", "update", "--disabled", service, "-f", "json").json()
        assert disabled["Enabled"] is False
        assert disabled["Mapped Region IDs"] == [region]
        enabled = server.cli("service", "update", "--enabled", service, "-f", "json").json()
        assert enabled["Enabled"] is True and enabled["Mapped Region IDs"] == [region]
        # Regions are replaced when given.
        other = server.cli("region", "create", "seed-other", "-f", "json").json()["ID"]
        moved = server.cli("service", "update", "--coriolis-region", other, service,
                           "-f", "json").json()
        assert moved["Mapped Region IDs"] == [other]
    finally:
        server.cli("service", "delete", service)


@pytest.fixture(scope="module")
def replica(server: RunningServer) -> str:
    src, dst = server.cloud_dir("seed-src"), server.cloud_dir("seed-dst")
    local_cloud("init", str(src), "--network", "lan")
    local_cloud("add-instance", str(src), "seedvm", "--disk-size", "8M", "--network", "lan")
    local_cloud("init", str(dst), "--network", "lan")
    for name, path in (("seed-src", src), ("seed-dst", dst)):
        server.local_endpoint(name, path)
    created = server.cli(
        "replica", "create", "--origin-endpoint", "seed-src", "--destination-endpoint",
        "seed-dst", "--instance", "seedvm", "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "default"}',
        "--network-map", '{"lan": "lan"}', "-f", "json").json()
    execution = server.cli("replica", "execute", created["id"], "-f", "json").json()
    done = server.wait_for(["replica", "execution", "show", created["id"], execution["id"]],
                           lambda e: e["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    return created["id"]


def test_deploy_replica_with_the_seed_s_pool_options(server: RunningServer, replica: str,
                                                     tmp_path: Path) -> None:
    origin, destination = "6b3a4a5e-0000-4000-8000-00000000000a", \
        "6b3a4a5e-0000-4000-8000-00000000000b"
    deployed = server.cli(
        "migration", "deploy", "replica", "--destination-minion-pool-id", destination,
        "--origin-minion-pool-id", origin, "--skip-os-morphing", replica, "-f", "json").json()
    assert deployed["origin_minion_pool_id"] == origin
    assert deployed["destination_minion_pool_id"] == destination
    done = server.wait_for(["migration", "show", deployed["id"]],
                           lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED"
    assert (done["origin_minion_pool_id"], done["destination_minion_pool_id"]) == (
        origin, destination)
    # Without the options, nothing is sent and nothing recorded.
    plain = server.cli("deployment", "create", "--skip-os-morphing", replica,
                       "-f", "json").json()
    assert plain["origin_minion_pool_id"] is None
    server.wait_for(["deployment", "show", plain["id"]], lambda m: m["status"] in FINAL)
    for mid in (deployed["id"], plain["id"]):
        server.cli("migration", "delete", mid)
    assert json.loads(server.cli("migration", "list", "-f", "json").stdout or "[]") == []
