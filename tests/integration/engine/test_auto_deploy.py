"""auto_deploy (the newer API generation's executions and schedules): a COMPLETED execution
deploys its replica once, with the replica's stored deployment defaults, in the transaction
that completes it; a failed one deploys nothing; schedules pass the flag on."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from sqlalchemy import select

from coriolis import constants as c
from coriolis.config import Settings
from coriolis.db import models
from coriolis.scheduling.replica_cron import ReplicaCron
from coriolis.service import Services, build_all_in_one
from tests.integration.engine.test_capabilities import transfer
from tests.integration.engine.test_conductor import body, wait_execution
from tests.integration.engine.test_replica_cron import MONDAY_0305, add_schedule


def deployments(services: Services, replica_id: str) -> list[models.TransferAction]:
    with services.db.session() as session:
        return list(session.scalars(select(models.TransferAction).where(
            models.TransferAction.replica_id == replica_id)))


def test_completed_execution_deploys_once_with_the_stored_defaults(services, ctx, endpoints,
                                                                    clouds) -> None:
    # The replica's defaults: no OS morphing (the local provider has none), take the disks.
    replica_id = services.conductor.create_replica(ctx, body(endpoints, "vm1",
                                                             clone_disks=False))
    execution_id = services.conductor.execute_replica(ctx, replica_id, False,
                                                      auto_deploy=True)
    assert wait_execution(services, replica_id).status == c.EXECUTION_STATUS_COMPLETED
    [deployment] = deployments(services, replica_id)
    assert (deployment.skip_os_morphing, deployment.clone_disks) == (True, False)
    assert deployment.user_id == ctx.user_id and deployment.project_id == ctx.project_id
    assert wait_execution(services, deployment.id).status == c.EXECUTION_STATUS_COMPLETED
    assert (clouds["dst"] / "instances" / "vm1").is_dir()

    # A report of the execution's last task delivered again (a worker retrying after a
    # restart) finds the execution finished: no second deployment.
    with services.db.session() as session:
        last = session.get(models.Execution, execution_id).tasks[-1].id
    services.conductor.task_completed(last, {})
    assert [d.id for d in deployments(services, replica_id)] == [deployment.id]


def test_failed_execution_deploys_nothing(services, ctx, endpoints, clouds) -> None:
    replica_id = services.conductor.create_replica(ctx, body(endpoints, "vm1"))
    shutil.rmtree(clouds["src"] / "instances" / "vm1")  # the source instance is gone
    services.conductor.execute_replica(ctx, replica_id, False, auto_deploy=True)
    assert wait_execution(services, replica_id).status == c.EXECUTION_STATUS_ERROR
    assert deployments(services, replica_id) == []


def test_schedules_pass_auto_deploy_on(services, ctx, endpoints) -> None:
    replica_id = services.conductor.create_replica(ctx, body(endpoints, "vm1"))
    add_schedule(services, replica_id, auto_deploy=True)
    [execution_id] = ReplicaCron(services.db, services.conductor).tick(MONDAY_0305)
    with services.db.session() as session:
        assert session.get(models.Execution, execution_id).auto_deploy is True
    assert wait_execution(services, replica_id).status == c.EXECUTION_STATUS_COMPLETED
    wait_execution(services, deployments(services, replica_id)[0].id)


def test_plain_executions_do_not_deploy(services, ctx, endpoints) -> None:
    replica_id = services.conductor.create_replica(ctx, body(endpoints, "vm1"))
    add_schedule(services, replica_id)
    ReplicaCron(services.db, services.conductor).tick(MONDAY_0305 + dt.timedelta(days=7))
    assert wait_execution(services, replica_id).status == c.EXECUTION_STATUS_COMPLETED
    assert deployments(services, replica_id) == []


def test_a_deployment_that_cannot_be_made_leaves_the_execution_completed(
        plugin_providers: None, tmp_path: Path, ctx, clouds) -> None:
    # A destination without OS morphing, and a replica whose deployments need it: the
    # execution completes, its auto-deploy is refused (rolled back to its savepoint alone).
    svc = build_all_in_one(Settings(data_dir=tmp_path / "data"))
    try:
        replica_id = svc.conductor.create_replica(
            ctx, transfer(ctx, svc, clouds, "local", "nomorph", skip_os_morphing=False))
        svc.conductor.execute_replica(ctx, replica_id, False, auto_deploy=True)
        done = wait_execution(svc, replica_id)
        assert done.status == c.EXECUTION_STATUS_COMPLETED
        assert deployments(svc, replica_id) == []
        with svc.db.session() as session:  # the execution's own results were kept
            assert session.get(models.TransferAction, replica_id).info["vm1"]["volumes_info"]
    finally:
        svc.close()
