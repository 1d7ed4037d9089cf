"""The embedded identity's life cycle on a real server: users, projects and roles managed
with `coriolis-server`, token revocation (one token, or all of a user's when their password,
enabled flag or roles change), token expiry, and encryption key rotation while the server
runs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from coriolis.harness import RunningServer, start_server, stop_server

SERVER_BIN = str(Path(sys.executable).parent / "coriolis-server")


def admin_cmd(server: RunningServer, *args: str, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SERVER_BIN, *args, "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True, check=check)


def token(server: RunningServer, user: str, password: str, project: str) -> tuple[str, str]:
    auth = v3.Password(auth_url=server.env["OS_AUTH_URL"], username=user, password=password,
                       project_name=project, user_domain_name="Default",
                       project_domain_name="Default")
    sess = ks_session.Session(auth=auth)
    return sess.get_token(), sess.get_endpoint(service_type="migration", interface="public")


def status(url: str, tok: str) -> int:
    return requests.get(f"{url}/endpoints", headers={"X-Auth-Token": tok}, timeout=30
                        ).status_code



def test_user_project_and_role_commands(server: RunningServer) -> None:
    admin_cmd(server, "project", "create", "ops")
    assert "already exists" in admin_cmd(server, "project", "create", "ops",
                                         check=False).stderr
    admin_cmd(server, "user", "create", "carol", "--password", "carol-1", "--project", "ops")
    admin_cmd(server, "role", "add", "admin", "--user", "carol", "--project", "ops")
    listing = admin_cmd(server, "user", "list").stdout
    assert any(line.startswith("carol\t") and "ops:admin ops:member" in line
               for line in listing.splitlines())
    failed = admin_cmd(server, "role", "remove", "reader", "--user", "carol", "--project",
                       "ops", check=False)
    assert failed.returncode == 1 and "has no role 'reader'" in failed.stderr
    assert "Traceback" not in failed.stderr
    # The password is hashed (argon2) in the database.
    with sqlite3.connect(server.data_dir / "coriolis.db") as db:
        stored = db.execute("SELECT password_hash FROM users WHERE name='carol'").fetchone()[0]
    assert stored.startswith("$argon2") and "carol-1" not in stored


def test_revoking_one_token(server: RunningServer) -> None:
    admin_cmd(server, "user", "create", "dave", "--password", "dave-1", "--project", "ops2")
    first, url = token(server, "dave", "dave-1", "ops2")
    second, _ = token(server, "dave", "dave-1", "ops2")
    resp = requests.delete(f"{server.url}/identity/v3/auth/tokens",
                           headers={"X-Auth-Token": first, "X-Subject-Token": first}, timeout=30)
    assert resp.status_code == 204
    assert status(url, first) == 401
    assert status(url, second) == 200
    check = requests.get(f"{server.url}/identity/v3/auth/tokens",
                         headers={"X-Auth-Token": second, "X-Subject-Token": first}, timeout=30)
    assert check.status_code == 404


@pytest.mark.parametrize("change", [
    ("user", "set", "erin", "--password", "erin-2"),
    ("user", "set", "erin", "--disable"),
    ("role", "remove", "member", "--user", "erin", "--project", "ops3"),
])
def test_changes_to_a_user_revoke_their_tokens(server: RunningServer,
                                               change: tuple[str, ...]) -> None:
    admin_cmd(server, "user", "delete", "erin", check=False)
    admin_cmd(server, "user", "create", "erin", "--password", "erin-1", "--project", "ops3")
    tok, url = token(server, "erin", "erin-1", "ops3")
    assert status(url, tok) == 200
    admin_cmd(server, *change)
    assert status(url, tok) == 401


def test_expired_and_forged_tokens_are_401(tmp_path: Path) -> None:
    import os

    # 6 s: long enough to use the token once on a loaded machine (2 s was not), short
    # enough to wait out.
    os.environ["CORIOLIS_TOKEN_TTL"] = "6"
    try:
        srv = start_server(tmp_path / "data")
    finally:
        del os.environ["CORIOLIS_TOKEN_TTL"]
    try:
        tok, url = token(srv, "admin", srv.env["OS_PASSWORD"], "admin")
        issued = time.monotonic()
        assert status(url, tok) == 200
        time.sleep(max(0.0, issued + 6.5 - time.monotonic()))
        resp = requests.get(f"{url}/endpoints", headers={"X-Auth-Token": tok}, timeout=30)
        assert resp.status_code == 401 and "expired" in resp.json()["error"]["message"]
        forged = tok[:-8] + ("A" * 8 if not tok.endswith("A" * 8) else "B" * 8)
        assert status(url, forged) == 401
    finally:
        stop_server(srv)


def test_key_rotation_while_the_server_runs(server: RunningServer) -> None:
    tok, url = token(server, "admin", server.env["OS_PASSWORD"], "admin")
    headers = {"X-Auth-Token": tok}
    cloud = server.cloud_dir("rot")
    created = requests.post(f"{url}/endpoints", headers=headers, timeout=30, json={
        "endpoint": {"name": "rot", "type": "local",
                     "connection_info": {"path": str(cloud)}}}).json()["endpoint"]
    before = admin_cmd(server, "keys", "list").stdout.splitlines()[1].split("\t")
    rotated = admin_cmd(server, "keys", "rotate").stdout
    assert f"dropped keys: {before[0]}" in rotated
    after = admin_cmd(server, "keys", "list").stdout.splitlines()
    assert len(after) == 2 and after[1].split("\t")[0] != before[0]
    # The running server reads the value re-encrypted with a key it did not start with, and
    # writes new values with it.
    shown = requests.get(f"{url}/endpoints/{created['id']}", headers=headers, timeout=30)
    assert shown.json()["endpoint"]["connection_info"] == {"path": str(cloud)}
    updated = requests.put(f"{url}/endpoints/{created['id']}", headers=headers, timeout=30,
                           json={"endpoint": {"connection_info": {"path": str(cloud / "x")}}})
    assert updated.status_code == 200, updated.text
    ring = json.loads((server.data_dir / "secret.keys").read_text())
    assert list(ring["keys"]) == [ring["primary"]] == [after[1].split("\t")[0]]
    counts = admin_cmd(server, "keys", "list").stdout.splitlines()[1].split("\t")
    assert int(counts[2]) >= 1


def test_policy_overrides_from_the_configuration_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "coriolis.conf").write_text("[policy]\nregions:list = admin\n")
    srv = start_server(data)
    try:
        admin_cmd(srv, "user", "create", "fred", "--password", "fred-1", "--project", "p")
        tok, url = token(srv, "fred", "fred-1", "p")
        resp = requests.get(f"{url}/regions", headers={"X-Auth-Token": tok}, timeout=30)
        assert resp.status_code == 403 and "regions:list" in resp.json()["error"]["message"]
        admin_tok, admin_url = token(srv, "admin", srv.env["OS_PASSWORD"], "admin")
        assert requests.get(f"{admin_url}/regions", headers={"X-Auth-Token": admin_tok},
                            timeout=30).status_code == 200
    finally:
        stop_server(srv)
    (data / "coriolis.conf").write_text("[policy]\nregion:list = admin\n")
    bad = subprocess.run([SERVER_BIN, "all-in-one", "--port", "0", "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "unknown rules region:list" in bad.stderr
    assert "Traceback" not in bad.stderr
