"""Placement by the task table's side: a task is placed by its side's endpoint only (its
regions, and a worker carrying its provider); the disk copy by both."""

from __future__ import annotations

import pytest

from coriolis import constants as c
from coriolis import exceptions
from coriolis.db import models
from coriolis.scheduling import placement
from coriolis.service import Services


def test_only_the_sides_endpoint_is_checked(services: Services) -> None:
    with services.db.session() as session:
        region = models.Region(name="r-dst")
        origin = models.Endpoint(project_id="p", name="plug-src", type="srconly",
                                 connection_info_encrypted=b"x")
        destination = models.Endpoint(project_id="p", name="dst", type="local",
                                      connection_info_encrypted=b"x", regions=[region])
        # w-src carries the source's plugin but is in no region; w-dst is in the
        # destination's region but lacks the plugin; the in-process worker has neither.
        w_src = models.Service(host="w-src", binary=c.WORKER_BINARY, topic="t",
                               status=c.SERVICE_STATUS_UP, last_heartbeat=models.utcnow(),
                               providers={"local": 1, "srconly": 1})
        w_dst = models.Service(host="w-dst", binary=c.WORKER_BINARY, topic="t",
                               status=c.SERVICE_STATUS_UP, last_heartbeat=models.utcnow(),
                               providers={"local": 1}, regions=[region])
        session.add_all([region, origin, destination, w_src, w_dst])
        session.flush()

        def place(task_type: str) -> str:
            return placement.choose_worker(
                session, placement.task_endpoints(task_type, origin, destination), 30.0)

        for task_type in (c.TASK_TYPE_GET_INSTANCE_INFO, c.TASK_TYPE_SHUTDOWN_INSTANCE,
                          c.TASK_TYPE_DELETE_MIGRATION_SOURCE_RESOURCES):
            assert place(task_type) == "w-src", task_type
        for task_type in (c.TASK_TYPE_CREATE_INSTANCE_DISKS,
                          c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT,
                          c.TASK_TYPE_DEPLOY_MIGRATION_TARGET_RESOURCES):
            assert place(task_type) == "w-dst", task_type
        with pytest.raises(exceptions.NoEligibleWorker,
                           match=r"endpoint 'plug-src' \(srconly\) with no region and "
                                 r"endpoint 'dst' \(local\) in regions \[r-dst\]"):
            place(c.TASK_TYPE_REPLICATE_DISKS)
        w_src.regions.append(region)
        session.flush()
        assert place(c.TASK_TYPE_REPLICATE_DISKS) == "w-src"
