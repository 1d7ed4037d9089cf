"""What the `coriolis` CLI sends on the wire, checked against a recording HTTP server that plays
Keystone and the Coriolis API (bodies as in shared/reference/coriolis-v1-api.md)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from coriolisclient.cli import shell

PROJECT = "p1"
EP1 = "11111111-1111-1111-1111-111111111111"
EP2 = "22222222-2222-2222-2222-222222222222"
STAMP = "2026-01-01T00:00:00.000000"


class Recorder(ThreadingHTTPServer):
    requests: list[dict[str, Any]]
    replies: dict[tuple[str, str], tuple[int, Any]]


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        if self.path.endswith("/v3/auth/tokens"):
            port = self.server.server_address[1]
            reply = {"token": {"expires_at": "2999-01-01T00:00:00Z", "catalog": [{
                "type": "migration", "name": "coriolis", "id": "c", "endpoints": [{
                    "interface": "public", "region": "RegionOne", "region_id": "RegionOne",
                    "id": "e", "url": f"http://127.0.0.1:{port}/v1/{PROJECT}"}]}]}}
            self._send(201, reply, {"X-Subject-Token": "tok"})
            return
        self.server.requests.append({"method": method, "path": self.path, "body": body,
                                     "token": self.headers.get("X-Auth-Token")})
        path = self.path.split("?")[0]
        code, reply = self.server.replies.get((method, path), (200, {}))
        self._send(code, reply)

    def _send(self, code: int, reply: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(reply).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    server = Recorder(("127.0.0.1", 0), Handler)
    server.requests, server.replies = [], {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for key in list(__import__("os").environ):
        if key.startswith("OS_") or key.startswith("CORIOLIS_"):
            monkeypatch.delenv(key)
    # Each command logs in: these tests read the requests in order (the token cache has
    # tests of its own, tests/e2e/test_cli_token_cache.py).
    monkeypatch.setenv("CORIOLIS_TOKEN_CACHE", "0")
    monkeypatch.setenv("OS_AUTH_URL", f"http://127.0.0.1:{server.server_address[1]}/v3")
    monkeypatch.setenv("OS_USERNAME", "u")
    monkeypatch.setenv("OS_PASSWORD", "p")
    monkeypatch.setenv("OS_PROJECT_NAME", "proj")
    monkeypatch.setenv("OS_PROJECT_DOMAIN_NAME", "Default")
    monkeypatch.setenv("OS_USER_DOMAIN_NAME", "Default")
    yield server
    server.shutdown()


def migration(**extra: Any) -> dict[str, Any]:
    base = {k: None for k in ("reservation_id", "notes", "origin_minion_pool_id",
                              "destination_minion_pool_id", "replica_id", "transfer_result")}
    return {**base, "id": "m1", "last_execution_status": "RUNNING", "created_at": STAMP,
            "updated_at": None, "instances": ["vm1"], "origin_endpoint_id": EP1,
            "destination_endpoint_id": EP2, "tasks": [], **extra}


def test_migration_create_sends_body_m1(api: Recorder, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    api.replies[("POST", f"/v1/{PROJECT}/migrations")] = (200, {"migration": migration()})
    rc = shell.main(["migration", "create", "--origin-endpoint", EP1, "--destination-endpoint",
                     EP2, "--instance", "vm1", "--source-environment", '{"s": 1}',
                     "--destination-environment", '{"d": 1}', "--network-map", '{"n": "m"}',
                     "--skip-os-morphing", "--shutdown-instances", "--replication-count", "3",
                     "--disk-storage-mapping", "disk0=fast", "--user-script-global",
                     "linux=", "-f", "json"])
    assert rc == 0
    sent = api.requests[-1]
    assert sent["token"] == "tok" and sent["method"] == "POST"
    assert sent["body"] == {"migration": {
        "origin_endpoint_id": EP1, "destination_endpoint_id": EP2,
        "destination_environment": {"d": 1}, "instances": ["vm1"], "network_map": {"n": "m"},
        "notes": None, "storage_mappings": {"disk_mappings": [
            {"disk_id": "disk0", "destination": "fast"}]},
        "user_scripts": {"global": {"linux": None}, "instances": {}},
        "source_environment": {"s": 1}, "skip_os_morphing": True, "shutdown_instances": True,
        "replication_count": 3}}
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == "m1" and shown["status"] == "RUNNING"
    assert list(shown)[:4] == ["id", "status", "created", "last_updated"]


def test_deploy_replica_sends_body_m2(api: Recorder) -> None:
    api.replies[("POST", f"/v1/{PROJECT}/migrations")] = (200, {"migration": migration()})
    assert shell.main(["migration", "deploy", "replica", "r1", "--dont-clone-disks"]) == 0
    assert api.requests[-1]["body"] == {"migration": {
        "replica_id": "r1", "clone_disks": False, "force": False, "skip_os_morphing": False,
        "user_scripts": {"global": {}, "instances": {}},
        "instance_osmorphing_minion_pool_mappings": {}}}


def test_endpoint_name_lookup_and_env_encoding(api: Recorder) -> None:
    api.replies[("GET", f"/v1/{PROJECT}/endpoints")] = (200, {"endpoints": [
        {"id": EP1, "name": "src", "type": "local", "description": None, "mapped_regions": [],
         "created_at": STAMP}]})
    api.replies[("GET", f"/v1/{PROJECT}/endpoints/{EP1}/instances")] = (200, {"instances": []})
    assert shell.main(["endpoint", "instance", "list", "src", "--environment", '{"k":1}']) == 0
    assert api.requests[-1]["path"] == f"/v1/{PROJECT}/endpoints/{EP1}/instances?env=eyJrIjogMX0%3D"


def test_schedule_create_is_unwrapped_with_utc_expiry(api: Recorder) -> None:
    api.replies[("POST", f"/v1/{PROJECT}/replicas/r1/schedules")] = (200, {"schedule": {
        "id": "s1", "replica_id": "r1", "schedule": {}, "created_at": STAMP, "updated_at": None,
        "enabled": False, "expiration_date": None, "shutdown_instance": True}})
    assert shell.main(["replica", "schedule", "create", "r1", "-M", "5", "-H", "3", "--disabled",
                       "--shutdown-instance", "--expires-at", "2030-01-02T03:04:05+02:00"]) == 0
    assert api.requests[-1]["body"] == {
        "schedule": {"minute": 5, "hour": 3}, "enabled": False, "shutdown_instance": True,
        "expiration_date": "2030-01-02T01:04:05Z"}


def test_service_update_sends_regions_only_when_given(api: Recorder) -> None:
    api.replies[("PUT", f"/v1/{PROJECT}/services/s1")] = (200, {"service": {
        "id": "s1", "host": "h", "binary": "b", "topic": "t", "enabled": False, "status": "UP",
        "mapped_regions": [], "created_at": STAMP, "updated_at": None}})
    assert shell.main(["service", "update", "s1", "--disabled"]) == 0
    assert api.requests[-1]["body"] == {"service": {"enabled": False}}
    assert shell.main(["service", "update", "s1", "--coriolis-region", "r1"]) == 0
    assert api.requests[-1]["body"] == {"service": {"mapped_regions": ["r1"]}}


def test_server_error_is_reported_without_traceback(api: Recorder,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    api.replies[("GET", f"/v1/{PROJECT}/replicas/r404")] = (404, {"error": {
        "code": 404, "message": "Replica r404 could not be found"}})
    assert shell.main(["replica", "show", "r404"]) == 1
    err = capsys.readouterr().err
    assert "ERROR: Replica r404 could not be found (HTTP 404)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["endpoint", "create", "--name", "x", "--provider", "local", "--connection", "{bad"],
     "--connection is not valid JSON"),
    # --source-environment is optional ('{}' too); an empty destination one is not.
    (["migration", "create", "--origin-endpoint", EP1, "--destination-endpoint", EP2,
      "--instance", "vm1", "--source-environment", "{}", "--destination-environment", "{}",
      "--network-map", "{}"], "--destination-environment[-file] is required"),
    (["replica", "schedule", "create", "r1"], "at least one of"),
])
def test_client_side_validation(api: Recorder, capsys: pytest.CaptureFixture[str],
                                argv: list[str], message: str) -> None:
    assert shell.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not [r for r in api.requests if r["method"] != "GET"]


def test_argument_errors_exit_2(api: Recorder) -> None:
    with pytest.raises(SystemExit) as exc:
        shell.main(["replica", "schedule", "create", "r1", "-M", "61"])
    assert exc.value.code == 2


TRANSFER = ["--origin-endpoint", EP1, "--destination-endpoint", EP2, "--instance", "vm1"]
JSON_OPTIONS = {
    "--connection": ["endpoint", "create", "--name", "x", "--provider", "local"],
    "--environment": ["endpoint", "instance", "list", EP1],
    "--environment-options": ["minion", "pool", "create", "p", "--platform", "source",
                              "--endpoint-id", EP1, "--os-type", "linux"],
}


def _transfer_argv(command: list[str], option: str, value: str) -> list[str]:
    options = {"--source-environment": '{"s": 1}', "--destination-environment": '{"d": 1}',
               "--network-map": '{"n": "m"}', option: value}
    return [*command, *[x for kv in options.items() for x in kv]]


@pytest.mark.parametrize("value, kind", [('"default"', "a string"), ("[1]", "a list"),
                                         ("3", "a number"), ("null", "null")])
@pytest.mark.parametrize("argv_of", [
    *[lambda v, o=o, c=c: [*c, o, v] for o, c in JSON_OPTIONS.items()],
    *[lambda v, o=o, c=c: _transfer_argv(c, o, v)
      for o in ("--source-environment", "--destination-environment", "--network-map")
      for c in (["migration", "create", *TRANSFER], ["replica", "create", *TRANSFER],
                ["replica", "update", "r1"])],
    lambda v: ["endpoint", "network", "list", EP1, "--environment", v],
    lambda v: ["endpoint", "storage", "list", EP1, "--environment", v],
    lambda v: ["endpoint", "destination", "options", "list", EP1, "--environment", v],
    lambda v: ["minion", "pool", "update", "p1", "--environment-options", v],
])
def test_json_object_options_refuse_other_json(api: Recorder, capsys: pytest.CaptureFixture[str],
                                               argv_of: Any, value: str, kind: str) -> None:
    """Every JSON-object option (issue 12: `--destination-environment '"default"'` printed a
    Python error): a clear error naming the option, exit 1, no traceback, nothing sent."""
    argv = argv_of(value)
    option = argv[argv.index(value) - 1]
    assert shell.main(argv) == 1
    err = capsys.readouterr().err
    assert f"{option} must be a JSON object" in err and kind in err, err
    assert "Traceback" not in err and "attribute" not in err
    assert not [r for r in api.requests if r["method"] != "GET"]


def test_json_object_file_option_is_named(api: Recorder, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Any) -> None:
    path = tmp_path / "env.json"
    path.write_text('"default"')
    argv = _transfer_argv(["migration", "create", *TRANSFER], "--network-map", '{"n": "m"}')
    argv[argv.index("--destination-environment")] = "--destination-environment-file"
    argv[argv.index("--destination-environment-file") + 1] = str(path)
    assert shell.main(argv) == 1
    err = capsys.readouterr().err
    assert "--destination-environment-file must be a JSON object" in err
    assert not [r for r in api.requests if r["method"] != "GET"]
