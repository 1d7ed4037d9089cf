"""Against a real Keystone and a real Barbican (PyPI, SQLite, uWSGI on loopback): the server
validates Keystone tokens and takes project and roles from them; the `coriolis` CLI logs in
through Keystone's catalog; the `barbican` CLI stores connection info that
`--connection-secret` then uses, read later through a Keystone trust."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from coriolis import openstack_services as ops
from coriolis.harness import RunningServer, local_cloud, start_server, stop_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
SERVICE_PASSWORD = "coriolis-service-pw"


@dataclass
class Cloud:
    keystone: ops.Keystone
    barbican: ops.Barbican
    server: RunningServer
    projects: dict[str, str]
    src: Path

    def env(self, user: str, project: str) -> dict[str, str]:
        return {"OS_AUTH_URL": self.keystone.url, "OS_USERNAME": user,
                "OS_PASSWORD": f"{user}-pw" if user != "admin" else ops.ADMIN_PASSWORD,
                "OS_PROJECT_NAME": project, "OS_USER_DOMAIN_NAME": "Default",
                "OS_PROJECT_DOMAIN_NAME": "Default", "OS_IDENTITY_API_VERSION": "3"}

    def cli(self, user: str, project: str, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return self.server.cli(*args, env=self.env(user, project), check=check)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    work = tmp_path_factory.mktemp("openstack")
    keystone = ops.start_keystone(work / "keystone")
    stack: list = [keystone.stop]
    try:
        keystone.user("coriolis", SERVICE_PASSWORD, "service", ("service",))
        keystone.user("alice", "alice-pw", "projA", ("member",))
        keystone.user("bob", "bob-pw", "projB", ("member",))
        barbican = ops.start_barbican(work / "barbican", keystone)
        stack.append(barbican.stop)
        data = work / "coriolis"
        data.mkdir()
        (data / "coriolis.conf").write_text(
            f"[keystone]\nauth_url = {keystone.url}\nusername = coriolis\n"
            f"password = {SERVICE_PASSWORD}\nproject_name = service\ncache_seconds = 1\n\n"
            f"[barbican]\nurl = {barbican.url}\n\n"
            f"[local]\nroot = {work}/{{project_id}}\n  {work}/src\n")
        server = start_server(data)
        stack.append(lambda: stop_server(server))
        keystone.catalog("migration", "coriolis", server.url + "/v1/%(tenant_id)s")
        src = work / "src"
        local_cloud("init", str(src), "--network", "lan")
        local_cloud("add-instance", str(src), "vm1", "--disk-size", "8M", "--network", "lan")
        yield Cloud(keystone, barbican, server,
                    {p: keystone.project(p) for p in ("projA", "projB")}, src)
    finally:
        for stop in reversed(stack):
            stop()


def test_cli_logs_in_through_keystone_and_projects_are_isolated(cloud: Cloud) -> None:
    created = cloud.cli("alice", "projA", "endpoint", "create", "--name", "a-src",
                        "--provider", "local", "--connection",
                        json.dumps({"path": str(cloud.src)}), "-f", "json").json()
    listed = cloud.cli("alice", "projA", "endpoint", "list", "-f", "json").json()
    assert [e["ID"] for e in listed] == [created["id"]]
    instances = cloud.cli("alice", "projA", "endpoint", "instance", "list", "a-src",
                          "-f", "json").json()
    assert [i["Name"] for i in instances] == ["vm1"]

    assert cloud.cli("bob", "projB", "endpoint", "list", "-f", "json").json() == []
    stolen = cloud.cli("bob", "projB", "endpoint", "show", created["id"], check=False)
    assert stolen.returncode != 0 and "Traceback" not in stolen.stderr

    refused = cloud.cli("alice", "projA", "region", "create", "eu", check=False)
    assert refused.returncode != 0 and "regions:create" in refused.stderr
    region = cloud.cli("admin", "admin", "region", "create", "eu", "-f", "json").json()
    assert "eu" in region.values()


def test_revoked_expired_and_forged_keystone_tokens_are_401(cloud: Cloud) -> None:
    token = cloud.keystone.token("alice", "alice-pw", "projA")
    url = f"{cloud.server.url}/v1/{cloud.projects['projA']}/endpoints"

    def status(tok: str) -> int:
        return requests.get(url, headers={"X-Auth-Token": tok}, timeout=30).status_code

    assert status(token) == 200
    cloud.keystone.revoke(token)
    time.sleep(1.5)  # the validation cache_seconds of this server
    assert status(token) == 401
    assert status(token[:-6] + "AAAAAA") == 401
    assert status("not-a-token") == 401


def test_dashboard_logs_in_through_keystone(cloud: Cloud) -> None:
    """The web dashboard's login asks the same Keystone and scopes its pages to the project
    of the token it gets (tests/e2e/test_dashboard.py drives the rest in Chromium)."""
    cloud.cli("alice", "projA", "endpoint", "create", "--name", "dash-a", "--provider",
              "local", "--connection", json.dumps({"path": str(cloud.src)}))
    login = f"{cloud.server.url}/dashboard/login"
    with requests.Session() as alice:
        wrong = alice.post(login, data={"username": "alice", "password": "bob-pw",
                                        "project": "projA"}, allow_redirects=False, timeout=30)
        assert wrong.status_code == 401 and "bob-pw" not in wrong.text
        answer = alice.post(login, data={"username": "alice", "password": "alice-pw",
                                         "project": "projA", "domain": "Default"},
                            allow_redirects=False, timeout=30)
        assert answer.status_code == 303, answer.text
        page = alice.get(f"{cloud.server.url}/dashboard/data/endpoints", timeout=30)
        assert page.status_code == 200 and "dash-a" in page.text
    with requests.Session() as bob:
        assert bob.post(login, data={"username": "bob", "password": "bob-pw",
                                     "project": "projB"}, allow_redirects=False,
                        timeout=30).status_code == 303
        page = bob.get(f"{cloud.server.url}/dashboard/data/endpoints", timeout=30)
        assert page.status_code == 200 and "dash-a" not in page.text


def test_connection_info_in_real_barbican(cloud: Cloud) -> None:
    payload = json.dumps({"path": str(cloud.src)})
    stored = cloud.barbican.cli(cloud.keystone, "alice", "alice-pw", "projA", "secret",
                                "store", "--payload", payload, "--payload-content-type",
                                "text/plain", "-f", "json")
    assert stored.returncode == 0, stored.stderr
    href = ops.secret_href(stored.stdout)
    assert href.startswith(cloud.barbican.url)
    got = cloud.barbican.cli(cloud.keystone, "alice", "alice-pw", "projA", "secret", "get",
                             "--payload", href, "-f", "json")
    assert json.loads(got.stdout)["Payload"] == payload

    endpoint = cloud.cli("alice", "projA", "endpoint", "create", "--name", "via-barbican",
                         "--provider", "local", "--connection-secret", href,
                         "-f", "json").json()
    assert endpoint["connection_info"] == {"secret_ref": href}  # no trust id, no payload
    # The conductor reads the secret through the trust to send the listing to the worker.
    instances = cloud.cli("alice", "projA", "endpoint", "instance", "list", "via-barbican",
                          "-f", "json").json()
    assert [i["Name"] for i in instances] == ["vm1"]

    for user, project, ref in (("bob", "projB", href),
                               ("alice", "projA", href[:-6] + "000000"),
                               ("alice", "projA", "http://169.254.169.254/v1/secrets/x")):
        failed = cloud.cli(user, project, "endpoint", "create", "--name", "bad",
                           "--provider", "local", "--connection-secret", ref, check=False)
        assert failed.returncode != 0 and ref in failed.stderr, failed.stderr
        listed = cloud.cli(user, project, "endpoint", "list", "-f", "json").json()
        assert "bad" not in {e["Name"] for e in listed}

    cloud.cli("alice", "projA", "endpoint", "delete", endpoint["id"])
