"""The typed API on a real all-in-one server (issue 12, items 6-8): malformed bodies are 400s
naming the field and store nothing; bodies over the size limit are 413s refused before they
are read whole; /v1/openapi.json documents what the server really takes and answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from coriolis.harness import RunningServer, local_cloud

MiB = 1024 * 1024


class Api:
    def __init__(self, server: RunningServer) -> None:
        auth = v3.Password(auth_url=server.env["OS_AUTH_URL"], username="admin",
                           password=server.env["OS_PASSWORD"], project_name="admin",
                           user_domain_name="Default", project_domain_name="Default")
        sess = ks_session.Session(auth=auth)
        self.token = sess.get_token()
        self.url = sess.get_endpoint(service_type="migration", interface="public").rstrip("/")
        self.root = server.url

    def call(self, method: str, path: str, body: Any = None, raw: str | None = None,
             root: bool = False) -> requests.Response:
        headers = {"X-Auth-Token": self.token}
        kwargs: dict[str, Any] = {"json": body}
        if raw is not None:
            headers["Content-Type"] = "application/json"
            kwargs = {"data": raw.encode()}
        return requests.request(method, (self.root if root else self.url) + path,
                                headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def api(server: RunningServer) -> Api:
    return Api(server)


@pytest.fixture(scope="module")
def ids(api: Api, server: RunningServer) -> dict[str, str]:
    """Two endpoints, a replica (never executed) and one of its schedules."""
    src, dst = server.cloud_dir("src"), server.cloud_dir("dst")
    local_cloud("init", str(src), "--network", "lan")
    local_cloud("add-instance", str(src), "vm1", "--disk-size", "8M", "--network", "lan")
    local_cloud("init", str(dst), "--network", "lan")
    out: dict[str, str] = {}
    for name, path in (("src", src), ("dst", dst)):
        resp = api.call("POST", "/endpoints", {"endpoint": {
            "name": name, "type": "local", "connection_info": {"path": str(path)}}})
        assert resp.status_code == 200, resp.text
        out[name] = resp.json()["endpoint"]["id"]
    resp = api.call("POST", "/replicas", {"replica": transfer(out)})
    assert resp.status_code == 200, resp.text
    out["replica"] = resp.json()["replica"]["id"]
    resp = api.call("POST", f"/replicas/{out['replica']}/schedules", {"schedule": {"minute": 1}})
    assert resp.status_code == 200, resp.text
    out["schedule"] = resp.json()["schedule"]["id"]
    return out


def transfer(ids: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Body M1/R1 as python-coriolisclient sends it."""
    return {"origin_endpoint_id": ids["src"], "destination_endpoint_id": ids["dst"],
            "instances": ["vm1"], "network_map": {"lan": "lan"}, "source_environment": {},
            "destination_environment": {}, "notes": None, "storage_mappings": {},
            "user_scripts": {"global": {}, "instances": {}}, **extra}


def state(api: Api) -> dict[str, Any]:
    """Everything a request could have stored."""
    replicas = api.call("GET", "/replicas").json()["replicas"]
    return {
        "endpoints": api.call("GET", "/endpoints").json(),
        "migrations": api.call("GET", "/migrations").json(),
        "replicas": [api.call("GET", f"/replicas/{r['id']}").json() for r in replicas],
        "schedules": [api.call("GET", f"/replicas/{r['id']}/schedules").json()
                      for r in replicas],
        "regions": api.call("GET", "/regions").json(),
        # (not updated_at, which heartbeats move)
        "services": [(s["id"], s["host"], s["enabled"], s["mapped_regions"])
                     for s in api.call("GET", "/services").json()["services"]],
        "secrets": api.call("GET", "/key-manager/v1/secrets", root=True).json()["total"],
    }


SURROGATE = "\\ud800"  # a lone surrogate as JSON escapes it: no UTF-8 text can hold it
# (method, path, body or raw JSON text, the field the 400 must name). {x} = ids[x].
MALFORMED: list[tuple[str, str, Any, str]] = [
    ("POST", "/endpoints", {"endpoint": {"name": "e", "type": "local", "description": {"a": 1},
                                         "connection_info": {"path": "/tmp"}}},
     "endpoint.description"),
    ("POST", "/endpoints", {"endpoint": {"name": "e", "type": "local", "mapped_regions": [{}],
                                         "connection_info": {"path": "/tmp"}}},
     "endpoint.mapped_regions.0"),
    ("POST", "/endpoints", '{"endpoint": {"name": "' + SURROGATE + '", "type": "local", '
     '"connection_info": {"path": "/tmp"}}}', "endpoint.name"),
    ("POST", "/endpoints", {"endpoint": {"name": "e", "type": "local",
                                         "connection_info": {"path": "/tmp\x00"}}},
     "endpoint.connection_info"),
    ("PUT", "/endpoints/{src}", {"endpoint": {"name": None}}, "endpoint.name"),
    ("PUT", "/endpoints/{src}", {"endpoint": {"description": ["x"]}}, "endpoint.description"),
    ("POST", "/migrations", {"migration": "transfer:notes={}"}, "migration.notes"),
    ("POST", "/migrations", {"migration": "transfer:origin_minion_pool_id={}"},
     "migration.origin_minion_pool_id"),
    ("POST", "/migrations", {"migration": "transfer:notes=" + "n" * 1025}, "migration.notes"),
    ("POST", "/migrations", {"migration": "transfer:replication_count=11"},
     "migration.replication_count"),
    ("POST", "/migrations", {"migration": "transfer:skip_os_morphing=yes"},
     "migration.skip_os_morphing"),
    ("POST", "/migrations", {"migration": "transfer:instances=[]"}, "migration.instances"),
    ("POST", "/migrations", {"migration": "transfer:user_scripts={\"global\": {\"dos\": \"x\"}}"},
     "migration.user_scripts.global.dos"),
    ("POST", "/migrations", {"migration": {"replica_id": {}}}, "migration.replica_id"),
    ("POST", "/migrations", {"migration": "transfer:storage_mappings={\"default\": 1}"},
     "migration.storage_mappings.default"),
    ("POST", "/deployments", {"deployment": {"replica_id": 5}}, "deployment.replica_id"),
    ("POST", "/replicas", {"replica": "transfer:scenario=\"nope\""}, "replica.scenario"),
    ("POST", "/replicas", {"replica": "transfer:description=\"x\""}, "replica.description"),
    ("PUT", "/replicas/{replica}", {"replica": {"notes": {}}}, "replica.notes"),
    ("PUT", "/replicas/{replica}", {"replica": {"instances": ["vm2"]}}, "replica.instances"),
    ("POST", "/replicas/{replica}/executions", {"execution": "yes"}, "execution"),
    ("POST", "/replicas/{replica}/executions", {"execution": {"shutdown_instances": "yes"}},
     "execution.shutdown_instances"),
    ("POST", "/replicas/{replica}/actions", {"delete-disks": None, "x": 1}, "x"),
    ("POST", "/replicas/{replica}/schedules",
     {"schedule": {"minute": 1}, "expiration_date": "9999-12-31T23:59:59-14:00"},
     "expiration_date"),
    ("POST", "/replicas/{replica}/schedules",
     {"schedule": {"minute": 1}, "expiration_date": "2001-01-01T00:00:00Z"}, "expiration_date"),
    ("POST", "/replicas/{replica}/schedules", {"schedule": {"minute": 60}}, "schedule.minute"),
    ("POST", "/replicas/{replica}/schedules", {"schedule": {}}, "schedule"),
    ("PUT", "/replicas/{replica}/schedules/{schedule}", {"enabled": "yes"}, "enabled"),
    ("PUT", "/replicas/{replica}/schedules/{schedule}", {"enabled": None}, "enabled"),
    ("POST", "/regions", '{"region": {"name": "' + SURROGATE + '"}}', "region.name"),
    ("POST", "/regions", {"region": {"name": "r", "description": {"a": 1}}},
     "region.description"),
    ("POST", "/services", {"service": {"host": {}, "binary": "b", "topic": "t"}},
     "service.host"),
    ("POST", "/minion_pools", {"minion_pool": {
        "name": "p", "endpoint_id": "{src}", "platform": "source", "os_type": "linux",
        "environment_options": {}, "notes": {}}}, "minion_pool.notes"),
    ("POST", "/endpoints/{src}/actions", {"validate-connection": None, "other": None}, "other"),
    ("POST", "/key-manager/v1/secrets", {"payload": "p", "name": {"a": 1}}, "name"),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("transfer:"):
        key, raw = value[len("transfer:"):].split("=", 1)
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        return transfer(ids, **{key: parsed})
    if isinstance(value, str):
        return value.format(**ids) if "{" in value and "\"" not in value else value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize("method, path, body, field", MALFORMED,
                         ids=[f"{m} {p} {f}" for m, p, _, f in MALFORMED])
def test_malformed_body_is_a_400_naming_the_field(api: Api, ids: dict[str, str], method: str,
                                                  path: str, body: Any, field: str) -> None:
    before = state(api)
    root = path.startswith("/key-manager")
    if isinstance(body, str):
        resp = api.call(method, path.format(**ids), raw=body, root=root)
    else:
        resp = api.call(method, path.format(**ids), _fill(body, ids), root=root)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == 400 and error["fault"] == "badRequest"
    assert f"{field}:" in error["message"], error["message"]
    assert state(api) == before


def test_well_formed_bodies_still_work(api: Api, ids: dict[str, str]) -> None:
    """The shapes python-coriolisclient sends (shared/reference/coriolis-v1-api.md) pass."""
    replica = ids["replica"]
    resp = api.call("PUT", f"/replicas/{replica}/schedules/{ids['schedule']}", {
        "schedule": {"hour": 3}, "shutdown_instance": False,
        "expiration_date": "2999-01-02T01:04:05Z"})
    assert resp.status_code == 200, resp.text
    shown = resp.json()["schedule"]
    assert shown["schedule"] == {"hour": 3} and shown["expiration_date"].startswith("2999-01-02")
    resp = api.call("PUT", f"/replicas/{replica}/schedules/{ids['schedule']}",
                    {"expiration_date": None})
    assert resp.status_code == 200 and resp.json()["schedule"]["expiration_date"] is None
    resp = api.call("POST", "/regions", {"region": {"name": "eu", "description": ""}})
    assert resp.status_code == 200, resp.text
    region = resp.json()["region"]["id"]
    resp = api.call("PUT", f"/endpoints/{ids['dst']}", {"endpoint": {
        "description": "dest", "mapped_regions": [region]}})
    assert resp.status_code == 200 and resp.json()["endpoint"]["mapped_regions"] == [region]
    resp = api.call("POST", f"/endpoints/{ids['src']}/actions", {"validate-connection": None})
    assert resp.json() == {"validate-connection": {"valid": True, "message": None}}


def test_identity_bodies_are_typed(server: RunningServer) -> None:
    url = server.url + "/identity"
    for path, body, field in [
        ("/v3/auth/tokens", {"auth": {"identity": {"methods": ["password"],
                                                   "password": "x"}}}, "auth.identity.password"),
        ("/v3/auth/tokens", {"auth": {"identity": {"methods": "password"}}},
         "auth.identity.methods"),
        ("/v3/auth/tokens", {"auth": {"identity": {"methods": ["password"], "password": {
            "user": {"name": {"a": 1}, "password": "p"}}}}}, "auth.identity.password.user.name"),
        ("/v2.0/tokens", {"auth": {"passwordCredentials": []}}, "auth.passwordCredentials"),
        ("/v2.0/tokens", {"auth": {"tenantName": 5}}, "auth.tenantName"),
    ]:
        resp = requests.post(url + path, json=body, timeout=30)
        assert resp.status_code == 400, (path, body, resp.text)
        assert f"{field}:" in resp.json()["error"]["message"], resp.text


# --- the request body limit -----------------------------------------------------------------
def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _raw_post(api: Api, path: str, head: dict[str, str], chunks: Iterator[bytes]
              ) -> tuple[int, dict[str, Any], int]:
    """POST with a body sent from ``chunks`` while the answer is read: (status, JSON body,
    bytes the server let us send before it answered)."""
    parts = urlsplit(api.url + path)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}",
             f"X-Auth-Token: {api.token}", "Content-Type: application/json",
             *[f"{k}: {v}" for k, v in head.items()]]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    sent = 0

    def send() -> None:
        nonlocal sent
        try:
            for chunk in chunks:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed: what this test wants

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    reply = b""
    while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < int(
            [h for h in reply.split(b"\r\n") if h.lower().startswith(b"content-length:")]
            [0].split(b":")[1]) if b"\r\n\r\n" in reply else True:
        data = sock.recv(65536)
        if not data:
            break
        reply += data
    answered_after = sent
    sock.close()
    sender.join(30)
    status = int(reply.split(b" ", 2)[1])
    return status, json.loads(reply.split(b"\r\n\r\n", 1)[1]), answered_after


def _description_body(size: int, chunk: int = MiB) -> Iterator[bytes]:
    """An endpoint body whose description is ``size`` bytes, in ``chunk``-byte pieces."""
    yield b'{"endpoint": {"name": "big", "type": "local", "connection_info": {}, ' \
          b'"description": "'
    for _ in range(size // chunk):
        yield b"x" * chunk
    yield b'"}}'


def test_a_100_mb_description_is_a_413_and_nothing_is_stored(api: Api, ids: dict[str, str],
                                                             server: RunningServer) -> None:
    before = state(api)
    rss_before = _rss_kib(server.process.pid)
    size = 100 * MiB
    # Declared length: refused from the headers, before a byte of the body is read.
    status, body, _ = _raw_post(api, "/endpoints", {"Content-Length": str(size + 80)},
                                iter(()))
    assert status == 413 and body["error"]["code"] == 413, body
    assert "limit of 1048576 bytes" in body["error"]["message"]

    # Chunked (no declared length): refused once more than the limit has arrived.
    def chunked() -> Iterator[bytes]:
        for piece in _description_body(size, 64 * 1024):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    started = time.monotonic()
    status, body, sent = _raw_post(api, "/endpoints", {"Transfer-Encoding": "chunked"},
                                   chunked())
    assert status == 413 and body["error"]["code"] == 413, body
    assert sent < 20 * MiB, f"the server read {sent} bytes before refusing"
    assert time.monotonic() - started < 30
    assert state(api) == before
    grown = _rss_kib(server.process.pid) - rss_before
    assert grown < 30 * 1024, f"the server grew by {grown} KiB"


def test_a_body_under_the_limit_is_accepted(api: Api) -> None:
    payload = "s" * (MiB - 4096)
    resp = api.call("POST", "/key-manager/v1/secrets", {"payload": payload}, root=True)
    assert resp.status_code == 201, resp.text[:200]
    resp = api.call("POST", "/key-manager/v1/secrets", {"payload": payload + "s" * 8192},
                    root=True)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == 413


# --- the OpenAPI document ---------------------------------------------------------------------
def test_openapi_document_declares_parameters_bodies_security_and_errors(
        server: RunningServer) -> None:
    doc = requests.get(server.url + "/v1/openapi.json", timeout=30).json()
    schemes = doc["components"]["securitySchemes"]
    assert list(schemes.values()) == [{"type": "apiKey", "in": "header", "name": "X-Auth-Token",
                                       "description": schemes["token"]["description"]}]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    error_ref = {"$ref": "#/components/schemas/Error"}
    with_project = bodies = 0
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "path"}
            for name in (n[1:-1] for n in path.split("/") if n.startswith("{")):
                assert params.get(name, {}).get("required") is True, (where, name)
            with_project += "{project_id}" in path
            assert op["security"] == [{"token": []}], where
            responses = op["responses"]
            assert "422" not in responses, where
            for code in ("401", "403"):
                assert responses[code]["content"]["application/json"]["schema"] == error_ref
            if len(params) > ("project_id" in params):
                assert "404" in responses, where
            if "requestBody" in op:
                bodies += 1
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                assert "$ref" in schema, (where, schema)
                assert "400" in responses and "413" in responses, where
    text = json.dumps(doc)
    assert '"title": "Body"' not in text and '"Body"' not in text
    assert with_project >= 61 and bodies >= 30
    migration = doc["components"]["schemas"]["MigrationCreate"]
    assert migration["properties"]["notes"]["anyOf"][0] == {"type": "string", "maxLength": 1024}
    assert set(migration["required"]) == {"origin_endpoint_id", "destination_endpoint_id",
                                          "instances"}


def test_an_endpoint_of_deleted_transfers_can_be_deleted(api: Api, ids: dict[str, str],
                                                         server: RunningServer) -> None:
    """Found by schemathesis: deleting an endpoint that only deleted (hidden) replicas still
    referenced was a 500 (a foreign key)."""
    path = server.cloud_dir("dst2")
    local_cloud("init", str(path), "--network", "lan")
    dst = api.call("POST", "/endpoints", {"endpoint": {
        "name": "dst2", "type": "local", "connection_info": {"path": str(path)}}}
                   ).json()["endpoint"]["id"]
    replica = api.call("POST", "/replicas", {"replica": transfer({**ids, "dst": dst})}).json()
    assert api.call("DELETE", f"/replicas/{replica['replica']['id']}").status_code == 204
    resp = api.call("DELETE", f"/endpoints/{dst}")
    assert resp.status_code == 204, resp.text
    assert api.call("GET", f"/endpoints/{dst}").status_code == 404
    assert api.call("GET", f"/endpoints/{ids['src']}").status_code == 200


def test_a_provider_crash_in_an_endpoint_call_is_a_400(api: Api, server: RunningServer
                                                       ) -> None:
    """Found by probing what schemathesis reaches: a local cloud path the file system refuses
    (a name longer than 255 bytes: ENAMETOOLONG) made every listing of the endpoint a 500.
    An unexpected provider error in an endpoint call is now the caller's 400, naming the
    operation."""
    long_name = server.cloud_dir("a" * 300)
    resp = api.call("POST", "/endpoints", {"endpoint": {
        "name": "odd", "type": "local", "connection_info": {"path": str(long_name)}}})
    assert resp.status_code == 200, resp.text
    endpoint = resp.json()["endpoint"]["id"]
    for sub in ("instances", "instances/dm0x", "networks", "storage", "destination-options"):
        resp = api.call("GET", f"/endpoints/{endpoint}/{sub}")
        # (an instance the provider cannot read is the API's 404 for that instance)
        assert resp.status_code == (404 if "/" in sub else 400), (sub, resp.text)
        assert "could not" in resp.json()["error"]["message"]
        assert "aaaa" not in resp.text
    resp = api.call("POST", f"/endpoints/{endpoint}/actions", {"validate-connection": None})
    assert resp.status_code == 200 and resp.json()["validate-connection"]["valid"] is False
