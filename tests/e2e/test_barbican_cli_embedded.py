"""The real `barbican` command line (python-barbicanclient) against the embedded secret
store of an all-in-one server, found through the embedded identity's catalog, and the secret
then used by `coriolis endpoint create --connection-secret`."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from coriolis import openstack_services as ops
from coriolis.harness import RunningServer, local_cloud

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def barbican(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    cli = ops.venv("barbican", ops.BARBICAN_PACKAGES) / "bin" / "barbican"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    return subprocess.run([str(cli), *args], capture_output=True, text=True, timeout=120,
                          env={**env, **server.env, "PYTHONWARNINGS": "ignore"})


def test_barbican_cli_stores_a_secret_the_endpoint_uses(server: RunningServer) -> None:
    cloud = server.cloud_dir("cloud")
    local_cloud("init", str(cloud), "--network", "lan")
    local_cloud("add-instance", str(cloud), "vm1", "--disk-size", "8M", "--network", "lan")
    payload = json.dumps({"path": str(cloud)})
    stored = barbican(server, "secret", "store", "--payload", payload,
                      "--payload-content-type", "text/plain", "-f", "json")
    assert stored.returncode == 0, stored.stderr
    href = ops.secret_href(stored.stdout)
    assert href.startswith(server.url + "/key-manager/v1/secrets/")
    got = barbican(server, "secret", "get", "--payload", href, "-f", "json")
    assert json.loads(got.stdout)["Payload"] == payload, got.stderr

    server.cli("endpoint", "create", "--name", "from-barbican", "--provider", "local",
               "--connection-secret", href)
    instances = server.cli("endpoint", "instance", "list", "from-barbican", "-f", "json").json()
    assert [i["Name"] for i in instances] == ["vm1"]
