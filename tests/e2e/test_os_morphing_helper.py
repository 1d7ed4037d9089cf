"""OS morphing on a helper machine: the destination cloud is served by a writer agent (mode
"always", so the agent's host is the cloud's helper even on this one host) and the libguestfs
appliance runs in the agent, not in the worker, and the guest is morphed there.

Kept to one appliance run for CI's time: that the morphed guest boots is shown by
test_os_morphing (the morphers are the same code wherever the appliance runs), and that a
cancel stops the appliance on the agent by
tests/integration/transfer/test_agent_morph.py::test_cancel_kills_the_appliance_on_the_agent
(the worker's relay against a real agent)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from coriolis.harness import (
    RunningServer,
    RunningWriter,
    local_cloud,
    start_writer,
    stop_server,
)
from coriolis.providers.local.cloud import LocalCloud
from tests.e2e.test_os_morphing import (
    FINAL,
    sha256,
    task_events,
    vmware_like_cloud,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def setup(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("helper")
    src, dst = server.cloud_dir("helper-src"), server.cloud_dir("helper-dst")
    vmware_like_cloud(src)
    local_cloud("init", str(dst), "--network", "kvmnet", "--storage", "default:qcow2")
    agent = start_writer(base / "agent", [dst])
    server.cli("endpoint", "create", "--name", "h-src", "--provider", "local",
               "--connection", json.dumps({"path": str(src)}))
    server.cli("endpoint", "create", "--name", "h-dst", "--provider", "local", "--connection",
               json.dumps({"path": str(dst), "writer": {**agent.details, "mode": "always"}}))
    source_disk = LocalCloud({"path": str(src)}).disk_path("debian-vm", {"file": "disk0.qcow2"})
    try:
        yield {"src": src, "dst": dst, "base": base, "agent": agent,
               "source_disk": source_disk, "source_sha": sha256(source_disk)}
    finally:
        stop_server(agent)


def start_migration(server: RunningServer, name: str) -> str:
    return str(server.cli(
        "migration", "create", "--origin-endpoint", "h-src", "--destination-endpoint", "h-dst",
        "--network-map", '{"vmnet": "kvmnet"}', "--source-environment", '{"snapshot": false}',
        "--destination-environment", json.dumps({"storage_backend": "default",
                                                 "instance_name": name}),
        "--instance", "debian-vm", "-f", "json").json()["id"])


def test_os_morphing_runs_on_the_writer_agent(server: RunningServer, setup: dict) -> None:
    agent: RunningWriter = setup["agent"]
    migration = start_migration(server, "debian-helper")
    done = server.wait_for(["migration", "show", migration], lambda m: m["status"] in FINAL,
                           timeout=1200)
    assert done["status"] == "COMPLETED", done["tasks"]
    events = task_events(server, migration, "OS_MORPHING")
    text = "\n".join(events)
    assert f"starting the libguestfs appliance on 1 disk(s) on the helper at " \
           f"{agent.details['url']}" in text
    assert f"OS morphing done on the helper at {agent.details['url']}" in text
    assert "found Debian 12" in text
    assert "fstab: /dev/sda1 → UUID=" in text
    assert "initramfs: added virtio_pci virtio_blk" in text
    assert agent.details["key"] not in json.dumps(done)
    log = agent.log_path.read_text()
    assert "OS morphing job" in log and ": done" in log  # the agent ran it
    assert sha256(setup["source_disk"]) == setup["source_sha"]
