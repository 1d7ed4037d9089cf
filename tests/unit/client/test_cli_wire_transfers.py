"""What the `coriolis transfer|deployment` commands send on the wire (the newer API
generation's bodies), against test_cli_wire's recording server."""

from __future__ import annotations

from typing import Any

import pytest

from coriolisclient.cli import shell
from tests.unit.client.test_cli_wire import PROJECT, STAMP, Recorder, api, migration

__all__ = ["api"]  # the recording server fixture

EXECUTION = {"execution": {"id": "e1", "action_id": "t1", "status": "RUNNING", "tasks": [],
                           "created_at": STAMP, "updated_at": None}}


def schedule(**extra: Any) -> dict[str, Any]:
    return {"schedule": {"id": "s1", "replica_id": "t1", "schedule": {"minute": 5},
                         "created_at": STAMP, "updated_at": None, "enabled": True,
                         "expiration_date": None, "shutdown_instance": False, **extra}}


def test_deployment_create_sends_transfer_id(api: Recorder) -> None:
    api.replies[("POST", f"/v1/{PROJECT}/deployments")] = (
        200, {"deployment": migration(replica_scenario_type=None)})
    assert shell.main(["deployment", "create", "t1", "--skip-os-morphing",
                       "--origin-minion-pool-id", "p1"]) == 0
    assert api.requests[-1]["body"] == {"deployment": {
        "transfer_id": "t1", "clone_disks": True, "force": False, "skip_os_morphing": True,
        "user_scripts": {"global": {}, "instances": {}},
        "instance_osmorphing_minion_pool_mappings": {}, "origin_minion_pool_id": "p1"}}


def test_transfer_execute_auto_deploy(api: Recorder) -> None:
    api.replies[("POST", f"/v1/{PROJECT}/transfers/t1/executions")] = (200, EXECUTION)
    assert shell.main(["transfer", "execute", "t1", "--auto-deploy"]) == 0
    assert api.requests[-1]["body"] == {"execution": {"shutdown_instances": False,
                                                      "auto_deploy": True}}
    assert shell.main(["transfer", "execute", "t1"]) == 0
    assert api.requests[-1]["body"] == {"execution": {"shutdown_instances": False,
                                                      "auto_deploy": False}}
    # The older generation has no such option.
    with pytest.raises(SystemExit) as exc:
        shell.main(["replica", "execute", "t1", "--auto-deploy"])
    assert exc.value.code == 2


def test_transfer_schedule_auto_deploy(api: Recorder) -> None:
    api.replies[("POST", f"/v1/{PROJECT}/transfers/t1/schedules")] = (
        200, schedule(auto_deploy=True))
    api.replies[("PUT", f"/v1/{PROJECT}/transfers/t1/schedules/s1")] = (200, schedule())
    assert shell.main(["transfer", "schedule", "create", "t1", "-M", "5",
                       "--auto-deploy"]) == 0
    assert api.requests[-1]["body"] == {"schedule": {"minute": 5}, "enabled": True,
                                        "shutdown_instance": False, "auto_deploy": True}
    assert shell.main(["transfer", "schedule", "update", "t1", "s1",
                       "--dont-auto-deploy"]) == 0
    assert api.requests[-1]["body"] == {"shutdown_instance": False, "auto_deploy": False}
    assert shell.main(["transfer", "schedule", "update", "t1", "s1", "--enabled"]) == 0
    assert "auto_deploy" not in api.requests[-1]["body"]


def test_transfer_update_sends_deployment_defaults(api: Recorder) -> None:
    api.replies[("PUT", f"/v1/{PROJECT}/transfers/t1")] = (200, EXECUTION)
    assert shell.main(["transfer", "update", "t1", "--skip-os-morphing",
                       "--dont-clone-disks"]) == 0
    sent = api.requests[-1]["body"]["transfer"]
    assert (sent["skip_os_morphing"], sent["clone_disks"]) == (True, False)
    assert shell.main(["transfer", "update", "t1", "--notes", "n"]) == 0
    sent = api.requests[-1]["body"]["transfer"]
    assert "skip_os_morphing" not in sent and "clone_disks" not in sent
    with pytest.raises(SystemExit) as exc:
        shell.main(["replica", "update", "t1", "--skip-os-morphing"])
    assert exc.value.code == 2
