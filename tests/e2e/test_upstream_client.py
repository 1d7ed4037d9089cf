"""The upstream `python-coriolisclient` (last version with `migration` commands), unchanged,
against our server.

The upstream client cannot be installed in CI (it is not on PyPI at that version and CI has no
other network), so this test runs only where ``CORIOLIS_UPSTREAM_CLI`` names its `coriolis`
executable (installed in its own virtualenv: it shares the `coriolisclient` package name with
ours). How to get one is in README.md, "Compatibility with the upstream client".
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from coriolis.harness import RunningServer, local_cloud, parse_tasks

UPSTREAM = os.environ.get("CORIOLIS_UPSTREAM_CLI")
# The current upstream client (transfers/deployments generation), in a virtualenv of its own.
UPSTREAM_NEW = os.environ.get("CORIOLIS_UPSTREAM_CLI_NEW")
pytestmark = pytest.mark.e2e
needs_upstream = pytest.mark.skipif(not UPSTREAM, reason="CORIOLIS_UPSTREAM_CLI is not set")
needs_upstream_new = pytest.mark.skipif(not UPSTREAM_NEW,
                                        reason="CORIOLIS_UPSTREAM_CLI_NEW is not set")


def upstream(server: RunningServer, *args: str, cli: str | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run an upstream ``coriolis``; asserts it succeeded with nothing on stderr (no
    warning either, e.g. about the logging endpoint)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    full_env.update(server.env)
    full_env.update(env or {})
    proc = subprocess.run([cli or UPSTREAM or "", *args], capture_output=True, text=True,
                          env=full_env, timeout=300)
    assert proc.returncode == 0, f"upstream coriolis {' '.join(args)}:\n{proc.stderr}"
    assert proc.stderr == "", f"upstream coriolis {' '.join(args)} wrote:\n{proc.stderr}"
    return proc


def check_logs(server: RunningServer, tmp_path: Path, cli: str | None = None,
               env: dict[str, str] | None = None) -> None:
    """`log list` and `log download` through an upstream client."""
    logs = json.loads(upstream(server, "log", "list", "-f", "json", cli=cli, env=env).stdout)
    assert {"Log name": "coriolis"} in logs
    out = tmp_path / "coriolis.log"
    # Unix seconds: upstream's client warns (itself) before it reads a period such as 1d.
    upstream(server, "log", "download", "coriolis", "--out-file", str(out),
             "--start-time", str(int(time.time()) - 86400), cli=cli, env=env)
    assert out.read_bytes() == (server.data_dir / "coriolis.log").read_bytes()


@needs_upstream
def test_upstream_client_migrates(server: RunningServer, tmp_path: Path) -> None:
    src, dst = server.cloud_dir("a"), server.cloud_dir("b")
    local_cloud("init", str(src), "--network", "lan")
    local_cloud("add-instance", str(src), "up1", "--disk-size", "48M", "--network", "lan")
    local_cloud("init", str(dst), "--network", "lan")

    for name, path in (("up-src", src), ("up-dst", dst)):
        upstream(server, "endpoint", "create", "--name", name, "--provider", "local",
                 "--connection", json.dumps({"path": str(path)}))
    rows = json.loads(upstream(server, "endpoint", "list", "-f", "json").stdout)
    assert {"up-src", "up-dst"} <= {r["Name"] for r in rows}
    instances = json.loads(upstream(server, "endpoint", "instance", "list", "up-src",
                                    "-f", "json").stdout)
    assert [i["Name"] for i in instances] == ["up1"]
    upstream(server, "provider", "list")
    upstream(server, "endpoint", "storage", "list", "up-dst")
    upstream(server, "endpoint", "network", "list", "up-dst")
    upstream(server, "endpoint", "destination", "options", "list", "up-dst")

    created = json.loads(upstream(
        server, "migration", "create", "--origin-endpoint", "up-src",
        "--destination-endpoint", "up-dst", "--instance", "up1",
        "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "default"}',
        "--network-map", '{"lan": "lan"}', "--skip-os-morphing", "-f", "json").stdout)
    shown = server.wait_for(["migration", "show", created["id"]],
                            lambda m: m["status"] in {"COMPLETED", "ERROR", "CANCELED"})
    assert shown["status"] == "COMPLETED"
    upstream_view = json.loads(upstream(server, "migration", "show", created["id"],
                                        "-f", "json").stdout)
    assert upstream_view["status"] == "COMPLETED"
    assert {t["status"] for t in parse_tasks(upstream_view["tasks"])} == {"COMPLETED"}
    listed = json.loads(upstream(server, "migration", "list", "-f", "json").stdout)
    assert created["id"] in {m["ID"] for m in listed}
    check_logs(server, tmp_path)
    # Identity v2.0, as the seed README logs in (the v2.0 catalog has the logger too).
    v2 = {"OS_AUTH_URL": server.url + "/identity/v2.0", "OS_TENANT_NAME": "admin",
          "OS_IDENTITY_API_VERSION": "2", "OS_PROJECT_NAME": "", "OS_USER_DOMAIN_NAME": "",
          "OS_PROJECT_DOMAIN_NAME": ""}
    upstream(server, "endpoint", "list", env=v2)
    check_logs(server, tmp_path, env=v2)


@needs_upstream_new
def test_current_upstream_client_without_warnings(server: RunningServer,
                                                  tmp_path: Path) -> None:
    new = UPSTREAM_NEW
    upstream(server, "provider", "list", cli=new)
    check_logs(server, tmp_path, cli=new)
    src, dst = server.cloud_dir("new-a"), server.cloud_dir("new-b")
    local_cloud("init", str(src), "--network", "lan")
    local_cloud("add-instance", str(src), "nu1", "--disk-size", "8M", "--network", "lan")
    local_cloud("init", str(dst), "--network", "lan")
    for name, path in (("new-src", src), ("new-dst", dst)):
        upstream(server, "endpoint", "create", "--name", name, "--provider", "local",
                 "--connection", json.dumps({"path": str(path)}), cli=new)
    transfer = json.loads(upstream(
        server, "transfer", "create", "--origin-endpoint", "new-src",
        "--destination-endpoint", "new-dst", "--instance", "nu1",
        "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "default"}',
        "--network-map", '{"lan": "lan"}', "--scenario", "replica", "-f", "json",
        cli=new).stdout)
    assert transfer["id"] in {t["ID"] for t in json.loads(upstream(
        server, "transfer", "list", "-f", "json", cli=new).stdout)}
    execution = json.loads(upstream(server, "transfer", "execute", transfer["id"],
                                    "-f", "json", cli=new).stdout)
    done = server.wait_for(["replica", "execution", "show", transfer["id"], execution["id"]],
                           lambda e: e["status"] in {"COMPLETED", "ERROR", "CANCELED"})
    assert done["status"] == "COMPLETED"
    upstream(server, "transfer", "execution", "list", transfer["id"], cli=new)
    upstream(server, "transfer", "show", transfer["id"], cli=new)
    deployment = json.loads(upstream(server, "deployment", "create", transfer["id"],
                                     "--skip-os-morphing", "-f", "json", cli=new).stdout)
    finished = server.wait_for(["deployment", "show", deployment["id"]],
                               lambda m: m["status"] in {"COMPLETED", "ERROR", "CANCELED"})
    assert finished["status"] == "COMPLETED"
    upstream(server, "deployment", "show", deployment["id"], cli=new)
    assert deployment["id"] in {d["ID"] for d in json.loads(upstream(
        server, "deployment", "list", "-f", "json", cli=new).stdout)}
    upstream(server, "deployment", "delete", deployment["id"], cli=new)
    upstream(server, "transfer", "delete", transfer["id"], cli=new)
