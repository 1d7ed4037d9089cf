"""Issue 20, goal 5: the `coriolis` CLI keeps its Keystone token between commands
(coriolisclient/token_cache.py), checked with the real CLI against a real all-in-one server
whose access log shows every login (``POST /identity/v3/auth/tokens``)."""

from __future__ import annotations

import json
import re
import stat
import time
import urllib.request
from pathlib import Path

import pytest

from coriolis.harness import RunningServer

LOGIN = "POST /identity/v3/auth/tokens 201"
ACCESS = re.compile(r"\] (GET|POST|DELETE) (\S+) (\d+) ")


class AccessLog:
    """The server's access lines written since ``mark()``."""

    def __init__(self, server: RunningServer) -> None:
        self.path = server.log_path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def lines(self, expected: int = 0) -> list[str]:
        """Access lines since the mark (waiting up to 5 s for at least ``expected``: a
        line is written once its answer went out)."""
        deadline = time.monotonic() + 5
        while True:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                text = f.read().decode(errors="replace")
            found = [f"{m.group(1)} {m.group(2)} {m.group(3)}" for m in ACCESS.finditer(text)]
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def logins(self, expected: int = 0) -> int:
        return sum(1 for line in self.lines(expected) if line.startswith(LOGIN))


@pytest.fixture
def log(server: RunningServer) -> AccessLog:
    access = AccessLog(server)
    access.mark()
    return access


def only_file(directory: Path) -> Path:
    files = list(directory.glob("*.json"))
    assert len(files) == 1, files
    return files[0]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"CORIOLIS_TOKEN_CACHE_DIR": str(tmp_path / "tokens"), **extra}


def test_token_kept_0600_and_reused(server: RunningServer, log: AccessLog,
                                    tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    server.cli("endpoint", "list", env=env)
    server.cli("endpoint", "list", env=env)
    lines = log.lines(expected=3)
    assert sum(1 for line in lines if line.startswith(LOGIN)) == 1, lines
    assert sum(1 for line in lines if line.endswith("/endpoints 200")) == 2, lines
    directory = tmp_path / "tokens"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    token_file = only_file(directory)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    text = token_file.read_text()
    state = json.loads(text)
    # keystoneauth1's auth state: the token and Keystone's answer, nothing else.
    assert set(state) == {"auth_token", "body"}
    assert state["body"]["token"]["user"]["name"] == server.env["OS_USERNAME"]
    assert server.env["OS_PASSWORD"] not in text
    assert not list(directory.glob(".token-*"))  # no temporary file left behind


def revoke(server: RunningServer, token: str) -> None:
    request = urllib.request.Request(
        f"{server.env['OS_AUTH_URL']}/auth/tokens", method="DELETE",
        headers={"X-Auth-Token": token, "X-Subject-Token": token})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 204


def test_revoked_token_replaced_transparently(server: RunningServer, log: AccessLog,
                                              tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    server.cli("endpoint", "list", env=env)
    token_file = only_file(tmp_path / "tokens")
    old = json.loads(token_file.read_text())["auth_token"]
    revoke(server, old)
    log.mark()
    result = server.cli("endpoint", "list", "-f", "json", env=env)
    assert isinstance(result.json(), list) and result.stderr == ""
    # The stored token was refused once, the CLI logged in again and retried.
    lines = [line for line in log.lines(expected=4) if not line.startswith("DELETE")]
    assert lines[0].endswith("/endpoints 401") and lines[1].startswith(LOGIN), lines
    assert lines[2].endswith("/endpoints 200"), lines
    new = json.loads(token_file.read_text())["auth_token"]
    assert new != old
    log.mark()
    server.cli("endpoint", "list", env=env)
    assert log.logins(expected=1) == 0


def test_expired_token_replaced_without_a_refusal(server: RunningServer, log: AccessLog,
                                                  tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    server.cli("endpoint", "list", env=env)
    token_file = only_file(tmp_path / "tokens")
    state = json.loads(token_file.read_text())
    old = state["auth_token"]
    state["body"]["token"]["expires_at"] = "2020-01-01T00:00:00.000000Z"
    token_file.write_text(json.dumps(state))
    log.mark()
    server.cli("endpoint", "list", env=env)
    lines = log.lines(expected=2)
    assert lines[0].startswith(LOGIN) and lines[1].endswith("/endpoints 200"), lines
    assert not any(line.endswith(" 401") for line in lines), lines
    fresh = json.loads(token_file.read_text())
    assert fresh["auth_token"] != old
    assert not fresh["body"]["token"]["expires_at"].startswith("2020")


def test_another_password_never_reuses_the_token(server: RunningServer,
                                                 tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    server.cli("endpoint", "list", env=env)
    bad = server.cli("endpoint", "list", env={**env, "OS_PASSWORD": "wrong"}, check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "401" in bad.stderr or "uthoriz" in bad.stderr, bad.stderr
    only_file(tmp_path / "tokens")  # the good login's token is still there


def test_readable_by_others_is_ignored_and_rewritten(server: RunningServer, log: AccessLog,
                                                     tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    server.cli("endpoint", "list", env=env)
    token_file = only_file(tmp_path / "tokens")
    token_file.chmod(0o644)
    log.mark()
    server.cli("endpoint", "list", env=env)
    assert log.logins(expected=2) == 1
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("how", ["env", "option"])
def test_cache_off_logs_in_each_time(server: RunningServer, log: AccessLog, tmp_path: Path,
                                     how: str) -> None:
    env = cli_env(tmp_path, **({"CORIOLIS_TOKEN_CACHE": "0"} if how == "env" else {}))
    args = ["--no-token-cache"] if how == "option" else []
    server.cli(*args, "endpoint", "list", env=env)
    server.cli(*args, "endpoint", "list", env=env)
    assert log.logins(expected=4) == 2
    assert not (tmp_path / "tokens").exists()
