"""Project isolation and roles on every route the server serves, listed from the server's own
OpenAPI document (so a new route cannot be forgotten: one with a path parameter this table
does not know fails the test).

Two projects, three users: alice (member of A) owns one of every resource; bob (member of B)
and the admin (admin of project "admin") must get 404 for each of them on every route and
never see them in a list; members get 403 on the admin-only routes.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from coriolis.harness import RunningServer, local_cloud

SERVER_BIN = str(Path(sys.executable).parent / "coriolis-server")
# Admin-only routes (coriolis.identity.policy): members may only read regions.
ADMIN_ONLY = ("regions", "services", "diagnostics")
MEMBERS_READ = ("regions",)
# Routes that are not a project's resources: the same for everybody.
SHARED = ("providers",)
FINAL = {"COMPLETED", "ERROR", "CANCELED"}


class Caller:
    def __init__(self, server: RunningServer, user: str, password: str, project: str) -> None:
        auth = v3.Password(auth_url=server.env["OS_AUTH_URL"], username=user,
                           password=password, project_name=project,
                           user_domain_name="Default", project_domain_name="Default")
        sess = ks_session.Session(auth=auth)
        self.token = sess.get_token()
        self.project_id = sess.get_project_id()
        self.base = server.url
        self.env = {"OS_USERNAME": user, "OS_PASSWORD": password, "OS_PROJECT_NAME": project}

    def call(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        return requests.request(method, self.base + path, headers={"X-Auth-Token": self.token},
                                json=body, timeout=60)


@pytest.fixture(scope="module")
def users(server: RunningServer) -> dict[str, Caller]:
    for user, project in (("alice", "projA"), ("bob", "projB")):
        subprocess.run([SERVER_BIN, "user", "create", user, "--password", f"{user}-pw",
                        "--project", project, "--data-dir", str(server.data_dir)],
                       check=True, capture_output=True)
    return {"admin": Caller(server, "admin", server.env["OS_PASSWORD"], "admin"),
            "alice": Caller(server, "alice", "alice-pw", "projA"),
            "bob": Caller(server, "bob", "bob-pw", "projB")}


@pytest.fixture(scope="module")
def owned(server: RunningServer, users: dict[str, Caller]) -> dict[str, str]:
    """One of every resource, made by alice in project A (and a region by the admin)."""
    alice = users["alice"]
    base = server.cloud_dir("", alice.project_id)
    local_cloud("init", str(base / "src"), "--network", "lan")
    local_cloud("add-instance", str(base / "src"), "vm1", "--disk-size", "8M", "--network", "lan")
    local_cloud("init", str(base / "dst"), "--network", "lan")

    def cli(*args: str) -> dict:
        return server.cli(*args, "-f", "json", env=alice.env).json()

    def completed(*args: str) -> None:
        done = server.wait_for(list(args), lambda r: r["status"] in FINAL, timeout=120,
                               env=alice.env)
        assert done["status"] == "COMPLETED", done

    ids = {"secret": alice.call("POST", "/key-manager/v1/secrets", {
        "payload": json.dumps({"path": str(base / "src")}),
        "payload_content_type": "text/plain"}).json()["secret_ref"].rsplit("/", 1)[1]}
    for name in ("src", "dst"):
        ids[f"endpoint_{name}"] = cli("endpoint", "create", "--name", f"a-{name}",
                                      "--provider", "local", "--connection",
                                      json.dumps({"path": str(base / name)}))["id"]
    transfer = ("--origin-endpoint", ids["endpoint_src"], "--destination-endpoint",
                ids["endpoint_dst"], "--instance", "vm1", "--network-map", '{"lan": "lan"}',
                "--source-environment", '{"snapshot": false}')
    ids["migration"] = cli("migration", "create", *transfer, "--skip-os-morphing",
                           "--destination-environment", '{"instance_name": "migrated"}')["id"]
    completed("migration", "show", ids["migration"])
    ids["replica"] = cli("replica", "create", *transfer, "--destination-environment",
                         '{"instance_name": "deployed"}')["id"]
    ids["execution"] = cli("replica", "execute", ids["replica"])["id"]
    completed("replica", "execution", "show", ids["replica"], ids["execution"])
    ids["deployment"] = cli("migration", "deploy", "replica", ids["replica"],
                            "--skip-os-morphing")["id"]
    completed("migration", "show", ids["deployment"])
    ids["schedule"] = cli("replica", "schedule", "create", ids["replica"], "--minute", "0")["id"]
    admin = users["admin"]
    ids["region"] = admin.call("POST", f"/v1/{admin.project_id}/regions",
                               {"region": {"name": "eu"}}).json()["region"]["id"]
    ids["service"] = admin.call("GET", f"/v1/{admin.project_id}/services"
                                ).json()["services"][0]["id"]
    return ids


def routes(server: RunningServer) -> list[tuple[str, str]]:
    doc = requests.get(server.url + "/v1/openapi.json", timeout=30).json()
    return sorted((method.upper(), path) for path, ops in doc["paths"].items() for method in ops)


def fill(path: str, owned: dict[str, str], project_id: str) -> str:
    """The route's URL with project A's resources (``project_id`` is the caller's)."""
    kind = path.split("/")[3] if path.startswith("/v1/{project_id}") else path.split("/")[2]

    def value(param: str) -> str:
        if param == "action_id":
            return owned["migration" if kind == "migrations" else "deployment"]
        table = {
            "project_id": project_id, "endpoint_id": owned["endpoint_src"],
            "replica_id": owned["replica"], "execution_id": owned["execution"],
            "schedule_id": owned["schedule"], "secret_id": owned["secret"],
            "instance_b64": base64.b64encode(b"vm1").decode(),
            # A pool of project A: tests/e2e/test_cli_minion_pools.py checks its isolation.
            "pool_id": str(uuid.uuid4()),
            "region_id": owned["region"], "service_id": owned["service"],
            "platform_name": "local", "provider_type": "1",
        }
        if param not in table:
            pytest.fail(f"route {path} has a path parameter '{param}' this test does not know: "
                        "add it to the table (and check its isolation)")
        return table[param]

    return re.sub(r"\{(\w+)\}", lambda m: value(m.group(1)), path)


def category(path: str) -> str:
    parts = [p for p in path.split("/") if p and p not in ("v1", "{project_id}")]
    if parts[0] in ADMIN_ONLY:
        return "admin"
    if parts[0] in SHARED:
        return "shared"
    return "resource" if any(p.startswith("{") for p in parts) else "collection"


def test_every_route_isolates_projects_and_checks_roles(
        server: RunningServer, users: dict[str, Caller], owned: dict[str, str]) -> None:
    admin, alice, bob = users["admin"], users["alice"], users["bob"]
    secrets_of_a = {v for k, v in owned.items() if k not in ("region", "service")}
    checked: list[str] = []
    for method, path in routes(server):
        kind = category(path)
        if kind == "admin":
            members_read = method == "GET" and any(f"/{r}" in path for r in MEMBERS_READ)
            for caller in (alice, bob):
                resp = caller.call(method, fill(path, owned, caller.project_id), {})
                expected = 200 if members_read else 403
                assert resp.status_code == expected, (caller.env, method, path, resp.text)
            if method == "GET":
                resp = admin.call(method, fill(path, owned, admin.project_id))
                assert resp.status_code == 200, (method, path, resp.text)
        elif kind == "resource":
            if method == "GET" and "pool_id" not in path:
                resp = alice.call(method, fill(path, owned, alice.project_id))
                assert resp.status_code == 200, ("owner", method, path, resp.text)
            for caller in (bob, admin):
                resp = caller.call(method, fill(path, owned, caller.project_id), {})
                assert resp.status_code == 404, (caller.env, method, path, resp.text)
        elif kind == "collection" and method == "GET":
            for caller in (bob, admin):
                resp = caller.call(method, fill(path, owned, caller.project_id))
                assert resp.status_code == 200, (method, path, resp.text)
                leaked = [i for i in secrets_of_a if i in resp.text]
                assert not leaked, (caller.env, path, leaked)
        checked.append(f"{method} {path}")
    # Every resource route was tried, with both the /v1/{project_id} and /v1 prefixes.
    assert any("/v1/{project_id}/replicas/{replica_id}/schedules/{schedule_id}" in c
               for c in checked)
    assert any(c.startswith("GET /key-manager/v1/secrets/{secret_id}") for c in checked)
    assert len(checked) >= 100


def test_foreign_endpoints_cannot_be_used_in_a_transfer(users: dict[str, Caller],
                                                         owned: dict[str, str]) -> None:
    bob = users["bob"]
    resp = bob.call("POST", f"/v1/{bob.project_id}/migrations", {"migration": {
        "origin_endpoint_id": owned["endpoint_src"],
        "destination_endpoint_id": owned["endpoint_dst"], "instances": ["vm1"],
        "network_map": {"lan": "lan"}, "source_environment": {},
        "destination_environment": {}}})
    assert resp.status_code == 404, resp.text
    assert owned["endpoint_src"] in resp.json()["error"]["message"]
