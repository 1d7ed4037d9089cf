"""The HTTP API of a real all-in-one server: identity, error shapes, project isolation,
roles and secret handling, through keystoneauth1 and plain HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from coriolis.harness import RunningServer, local_cloud

SERVER_BIN = str(Path(sys.executable).parent / "coriolis-server")



def login(server: RunningServer, user: str, password: str, project: str) -> tuple[str, str]:
    auth = v3.Password(auth_url=server.env["OS_AUTH_URL"], username=user, password=password,
                       project_name=project, user_domain_name="Default",
                       project_domain_name="Default")
    sess = ks_session.Session(auth=auth)
    url = sess.get_endpoint(service_type="migration", interface="public")
    return sess.get_token(), url


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> tuple[str, str]:
    return login(server, "admin", server.env["OS_PASSWORD"], "admin")


@pytest.fixture(scope="module")
def member_b(server: RunningServer) -> tuple[str, str]:
    subprocess.run([SERVER_BIN, "user", "create", "bob", "--password", "bob-pass", "--project",
                    "team-b", "--data-dir", str(server.data_dir)], check=True,
                   capture_output=True)
    return login(server, "bob", "bob-pass", "team-b")


def call(method: str, url: str, token: str | None, **kwargs) -> requests.Response:  # type: ignore[no-untyped-def]
    headers = {**kwargs.pop("headers", {}), **({"X-Auth-Token": token} if token else {})}
    return requests.request(method, url, headers=headers, timeout=30, **kwargs)


def assert_error(resp: requests.Response, code: int, *words: str) -> None:
    assert resp.status_code == code, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"]


def test_catalog_points_at_project_scoped_v1(admin: tuple[str, str]) -> None:
    token, url = admin
    assert url.rstrip("/").split("/")[-2] == "v1"
    assert call("GET", f"{url}/endpoints", token).json() == {"endpoints": []}


def test_missing_and_forged_tokens_are_401(admin: tuple[str, str]) -> None:
    _, url = admin
    assert_error(call("GET", f"{url}/endpoints", None), 401)
    assert_error(call("GET", f"{url}/endpoints", "gAAAAABforged"), 401, "invalid")


def test_wrong_password_is_401(server: RunningServer) -> None:
    resp = requests.post(f"{server.url}/identity/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": "wrong"}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}, timeout=30)
    assert resp.status_code == 401 and "X-Subject-Token" not in resp.headers


def test_v2_tokens(server: RunningServer) -> None:
    resp = requests.post(f"{server.url}/identity/v2.0/tokens", json={"auth": {
        "tenantName": "admin", "passwordCredentials": {
            "username": "admin", "password": server.env["OS_PASSWORD"]}}}, timeout=30)
    access = resp.json()["access"]
    url = access["serviceCatalog"][0]["endpoints"][0]["publicURL"]
    assert call("GET", f"{url}/providers", access["token"]["id"]).status_code == 200


def test_errors_name_the_field_and_never_echo_secrets(admin: tuple[str, str],
                                                      server: RunningServer) -> None:
    token, url = admin
    assert_error(call("POST", f"{url}/endpoints", token, json={"name": "x"}), 400, "endpoint")
    assert_error(call("POST", f"{url}/endpoints", token, data="{not json",
                      headers={"Content-Type": "application/json"}), 400)
    assert_error(call("POST", f"{url}/endpoints", token, json={"endpoint": {
        "name": "x", "type": "nosuch", "connection_info": {}}}), 404, "nosuch")
    secret = "hunter2-very-secret"
    resp = call("POST", f"{url}/endpoints", token, json={"endpoint": {
        "name": "x", "type": "local", "connection_info": {"path": "/tmp", "password": secret}}})
    assert_error(resp, 400, "connection_info")
    assert secret not in resp.text
    assert secret not in (server.data_dir / "coriolis.log").read_text()
    assert_error(call("GET", f"{url}/endpoints/00000000-0000-0000-0000-00000000dead", token),
                 404, "00000000-0000-0000-0000-00000000dead")
    assert_error(call("GET", f"{url}/migrations/nope", token), 404, "nope")


def project_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def test_projects_are_isolated(admin: tuple[str, str], member_b: tuple[str, str],
                               server: RunningServer) -> None:
    token_a, url_a = admin
    token_b, url_b = member_b
    cloud = server.cloud_dir("a-only", project_of(url_a))
    cloud.mkdir(parents=True)
    created = call("POST", f"{url_a}/endpoints", token_a, json={"endpoint": {
        "name": "a-only", "type": "local", "connection_info": {"path": str(cloud)}}})
    assert created.status_code == 200, created.text
    endpoint_id = created.json()["endpoint"]["id"]
    # B cannot see, read, change or delete it, by its own URL or by A's
    assert endpoint_id not in {e["id"] for e in call("GET", f"{url_b}/endpoints",
                                                     token_b).json()["endpoints"]}
    for method in ("GET", "DELETE"):
        assert_error(call(method, f"{url_b}/endpoints/{endpoint_id}", token_b), 404)
    assert_error(call("PUT", f"{url_b}/endpoints/{endpoint_id}", token_b,
                      json={"endpoint": {"name": "stolen"}}), 404)
    assert call("GET", f"{url_a}/endpoints/{endpoint_id}", token_b).status_code == 403
    # the owner sees its connection info; lists never carry it
    shown = call("GET", f"{url_a}/endpoints/{endpoint_id}", token_a).json()["endpoint"]
    assert shown["connection_info"] == {"path": str(cloud)}
    listed = call("GET", f"{url_a}/endpoints", token_a).json()["endpoints"]
    assert all("connection_info" not in e for e in listed)


def test_admin_only_operations(admin: tuple[str, str], member_b: tuple[str, str]) -> None:
    token_a, url_a = admin
    token_b, url_b = member_b
    assert_error(call("POST", f"{url_b}/regions", token_b,
                      json={"region": {"name": "r"}}), 403)
    assert_error(call("GET", f"{url_b}/diagnostics", token_b), 403)
    region = call("POST", f"{url_a}/regions", token_a, json={"region": {"name": "eu"}})
    assert region.status_code == 200 and region.json()["region"]["enabled"] is True
    services = call("GET", f"{url_a}/services", token_a).json()["services"]
    assert [s["binary"] for s in services] == ["coriolis-worker"]
    assert services[0]["status"] == "UP"


def test_connection_info_is_encrypted_at_rest(admin: tuple[str, str],
                                              server: RunningServer) -> None:
    token, url = admin
    marker = str(server.cloud_dir("marker-dir-name", project_of(url)))
    created = call("POST", f"{url}/endpoints", token, json={"endpoint": {
        "name": "enc", "type": "local", "connection_info": {"path": marker}}})
    assert created.status_code == 200, created.text
    raw = b"".join(p.read_bytes() for p in server.data_dir.glob("coriolis.db*"))
    assert marker.encode() not in raw
    assert json.dumps(marker).encode() not in raw


def test_connection_secret_in_the_embedded_secret_store(admin: tuple[str, str],
                                                        member_b: tuple[str, str],
                                                        server: RunningServer,
                                                        tmp_path: Path) -> None:
    token_a, url_a = admin
    token_b, url_b = member_b
    cloud = server.cloud_dir("cloud", project_of(url_a))
    cloud.mkdir(parents=True)
    stored = call("POST", f"{server.url}/key-manager/v1/secrets", token_a, json={
        "payload": json.dumps({"path": str(cloud)}), "payload_content_type": "text/plain"})
    assert stored.status_code == 201
    ref = stored.json()["secret_ref"]
    assert call("GET", f"{ref}/payload", token_a).text == json.dumps({"path": str(cloud)})
    assert call("GET", f"{ref}/payload", token_b).status_code == 404

    # the CLI's --connection-secret, as the seed README shows it
    shown = server.cli("endpoint", "create", "--name", "via-secret", "--provider", "local",
                       "--connection-secret", ref, "-f", "json").json()
    assert shown["connection_info"] == {"secret_ref": ref}
    listed = server.cli("endpoint", "instance", "list", "via-secret", "-f", "json")
    assert listed.returncode == 0

    for token, url in ((token_b, url_b), (token_a, url_a)):
        bad_ref = ref if token is token_b else ref[:-4] + "0000"
        resp = call("POST", f"{url}/endpoints", token, json={"endpoint": {
            "name": "stolen", "type": "local", "connection_info": {"secret_ref": bad_ref}}})
        assert_error(resp, 400, bad_ref)
    assert "stolen" not in {e["name"] for e in call("GET", f"{url_b}/endpoints",
                                                    token_b).json()["endpoints"]}


def test_local_clouds_are_confined_to_the_projects_root(admin: tuple[str, str],
                                                        member_b: tuple[str, str],
                                                        server: RunningServer) -> None:
    """A member of project B can neither register A's cloud directory (nor '/', a relative
    path, a '..' or a symlink out of B's root) nor, through a path that later leads there,
    list or migrate A's instances: each is a 400 naming connection_info.path and B's root."""
    token_a, url_a = admin
    token_b, url_b = member_b
    a_cloud = server.cloud_dir("a-cloud", project_of(url_a))
    local_cloud("init", str(a_cloud), "--network", "lan")
    local_cloud("add-instance", str(a_cloud), "a-vm", "--disk-size", "4M", "--network", "lan")
    b_root = server.cloud_dir("", project_of(url_b))
    b_dst = b_root / "dst"
    local_cloud("init", str(b_dst), "--network", "lan")
    (b_root / "link-out").symlink_to(a_cloud)

    made: list[str] = []

    def create(path: str) -> requests.Response:  # names are unique per project
        made.append(path)
        return call("POST", f"{url_b}/endpoints", token_b, json={"endpoint": {
            "name": f"b{len(made)}", "type": "local", "connection_info": {"path": path}}})

    for path in (str(a_cloud), "/", "relative/dir", f"{b_root}/../{a_cloud.parent.name}/a-cloud",
                 str(b_root / "link-out")):
        assert_error(create(path), 400, "connection_info.path", str(b_root.resolve()))
    dst_id = create(str(b_dst)).json()["endpoint"]["id"]
    assert_error(call("PUT", f"{url_b}/endpoints/{dst_id}", token_b, json={"endpoint": {
        "connection_info": {"path": str(a_cloud)}}}), 400, "connection_info.path")
    # through the embedded secret store too
    ref = call("POST", f"{server.url}/key-manager/v1/secrets", token_b, json={
        "payload": json.dumps({"path": str(a_cloud)}),
        "payload_content_type": "text/plain"}).json()["secret_ref"]
    resp = call("POST", f"{url_b}/endpoints", token_b, json={"endpoint": {
        "name": "b", "type": "local", "connection_info": {"secret_ref": ref}}})
    assert_error(resp, 400, "connection_info.path")

    # A path of B's own that leads to A's cloud once stored: every call checks it again
    moving = b_root / "moving"
    moving.symlink_to(b_dst)
    src_id = create(str(moving)).json()["endpoint"]["id"]
    moving.unlink()
    moving.symlink_to(a_cloud)
    assert_error(call("GET", f"{url_b}/endpoints/{src_id}/instances", token_b), 400,
                 "connection_info.path")
    assert_error(call("POST", f"{url_b}/endpoints/{src_id}/actions", token_b,
                      json={"validate-connection": None}), 400, "connection_info.path")
    migration = call("POST", f"{url_b}/migrations", token_b, json={"migration": {
        "origin_endpoint_id": src_id, "destination_endpoint_id": dst_id,
        "instances": ["a-vm"], "destination_environment": {}, "network_map": {"lan": "lan"},
        "skip_os_morphing": True}})
    assert_error(migration, 400, "connection_info.path", str(b_root.resolve()))
    assert call("GET", f"{url_b}/migrations", token_b).json()["migrations"] == []
    assert list(b_dst.joinpath("instances").iterdir()) == []


def test_local_cloud_init_makes_a_cloud_in_the_project_root(admin: tuple[str, str],
                                                           server: RunningServer) -> None:
    """`coriolis-server local-cloud init --project ID NAME` prints the connection info of a
    new cloud in the project's root; the endpoint made from it validates."""
    token, url = admin
    printed = local_cloud("init", "--project", project_of(url), "--data-dir",
                          str(server.data_dir), "--network", "lan", "made-by-init")
    connection = json.loads(printed)
    assert connection == {"path": str(server.cloud_dir("made-by-init", project_of(url))
                                      .resolve())}
    created = call("POST", f"{url}/endpoints", token, json={"endpoint": {
        "name": "made-by-init", "type": "local", "connection_info": connection}})
    endpoint_id = created.json()["endpoint"]["id"]
    valid = call("POST", f"{url}/endpoints/{endpoint_id}/actions", token,
                 json={"validate-connection": None}).json()["validate-connection"]
    assert valid == {"valid": True, "message": None}
    with pytest.raises(RuntimeError, match="must be a name"):
        local_cloud("init", "--project", project_of(url), "--data-dir", str(server.data_dir),
                    "../escape")


def test_logger_in_both_catalogs_with_version_discovery(server: RunningServer,
                                                        admin: tuple[str, str],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from keystoneauth1 import discover
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    auth = v3.Password(auth_url=server.env["OS_AUTH_URL"], username="admin",
                       password=server.env["OS_PASSWORD"], project_name="admin",
                       user_domain_name="Default", project_domain_name="Default")
    sess = ks_session.Session(auth=auth)
    logger = sess.get_endpoint(service_type="coriolis-logger", interface="public")
    assert logger == f"{server.url}/logger/api/v1"
    v2 = requests.post(f"{server.url}/identity/v2.0/tokens", json={"auth": {
        "tenantName": "admin", "passwordCredentials": {
            "username": "admin", "password": server.env["OS_PASSWORD"]}}}, timeout=30).json()
    assert {s["type"]: s["endpoints"][0]["publicURL"]
            for s in v2["access"]["serviceCatalog"]}["coriolis-logger"] == logger
    # keystoneauth's discovery, from the unversioned root and from the versioned URL,
    # finds v1 with its self link, and warns about nothing.
    with caplog.at_level("WARNING"):
        for url in (f"{server.url}/logger", logger):
            found = discover.get_version_data(sess, url)
            assert found[0]["id"] == "v1" and found[0]["links"][0]["href"] == logger + "/"
        data = sess.get_endpoint_data(service_type="coriolis-logger", interface="public",
                                      min_version="1", max_version="1.latest")
        assert data is not None and data.url.rstrip("/") == logger
    assert not [r for r in caplog.records if r.levelno >= 30]
    token, _ = admin
    assert_error(call("GET", f"{logger}/logs/", None), 401)
    assert call("GET", f"{logger}/logs/", token).json() == {"logs": [{"log_name": "coriolis"}]}
    assert_error(call("GET", f"{logger}/logs/coriolis/?start_date=soon", token), 400,
                 "start_date")
    ws = logger.replace("http://", "ws://") + "/ws"
    for query, status in (("severity=loud", 400), ("app_name=other", 404)):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{ws}?{query}", additional_headers={"X-Auth-Token": token}).close()
        assert refused.value.response.status_code == status
    with pytest.raises(InvalidStatus) as refused:
        connect(ws).close()
    assert refused.value.response.status_code == 401
