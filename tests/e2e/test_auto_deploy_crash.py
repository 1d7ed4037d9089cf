"""auto_deploy across a kill -9: the all-in-one server dies after one of the last tasks of a
transfer execution started with `--auto-deploy` did its work, before its result was recorded
(CORIOLIS_TEST_CRASH_AT, coriolis/worker/faults.py). After the restart the task runs again,
the execution completes, and the transfer is deployed exactly once."""

from __future__ import annotations

import pytest

from coriolis.harness import stop_server
from tests.e2e import test_replica_crash
from tests.e2e.test_replica_crash import FINAL, World

# The replica crash tests' fixture, under this module's name for it.
crash_world = test_replica_crash.world

pytestmark = pytest.mark.e2e


def test_auto_deploy_after_a_kill_deploys_once(crash_world: World) -> None:
    w = crash_world
    for name, path in (("src", w.src), ("dst", w.dst)):
        w.server.local_endpoint(name, path)
    transfer = w.server.cli(
        "transfer", "create", "--skip-os-morphing", "--origin-endpoint", "src",
        "--destination-endpoint", "dst", "--instance", "db",
        "--source-environment", '{"snapshot": true}',
        "--destination-environment", '{"storage_backend": "pool"}',
        "--network-map", '{"lan": "lan"}', "-f", "json").json()["id"]
    # Either clean-up may be the execution's last task: the first to finish kills.
    w.faults.write_text("DELETE_REPLICA_SOURCE_RESOURCES:after,"
                        "DELETE_REPLICA_TARGET_RESOURCES:after")
    execution = w.server.cli("transfer", "execute", "--auto-deploy", transfer,
                             "-f", "json").json()["id"]
    assert w.server.process.wait(timeout=240) < 0, w.server.log_tail()
    w.faults.write_text("")  # the other item must not fire after the restart
    w.server = w.start()
    done = w.server.wait_for(["transfer", "execution", "show", transfer, execution],
                             lambda e: e["status"] in FINAL, timeout=240)
    assert done["status"] == "COMPLETED", done["tasks"]
    deployments = w.server.cli("deployment", "list", "-f", "json").json()
    assert len(deployments) == 1, deployments
    deployed = w.server.wait_for(["deployment", "show", deployments[0]["ID"]],
                                 lambda m: m["status"] in FINAL, timeout=240)
    assert deployed["status"] == "COMPLETED" and deployed["replica_id"] == transfer
    assert (w.dst / "instances" / "db").is_dir()
    # A restart once all is done makes nothing more.
    stop_server(w.server)
    w.server = w.start()
    assert len(w.server.cli("deployment", "list", "-f", "json").json()) == 1
