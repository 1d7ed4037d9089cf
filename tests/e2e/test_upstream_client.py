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

import pytest

from coriolis.harness import RunningServer, local_cloud, parse_tasks

UPSTREAM = os.environ.get("CORIOLIS_UPSTREAM_CLI")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not UPSTREAM, reason="CORIOLIS_UPSTREAM_CLI is not set"),
]


def upstream(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(server.env)
    proc = subprocess.run([UPSTREAM or "", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, f"upstream coriolis {' '.join(args)}:\n{proc.stderr}"
    return proc


def test_upstream_client_migrates(server: RunningServer) -> None:
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
