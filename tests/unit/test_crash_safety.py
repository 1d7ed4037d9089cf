"""The crash-safety declarations (task_types.TASK_TYPES) cover every task type, and the fault
hook of the crash tests (coriolis/worker/faults.py) fires each armed item once."""

from __future__ import annotations

from pathlib import Path

import pytest

from coriolis import constants as c
from coriolis import exceptions, task_types
from coriolis.engine import graphs
from coriolis.worker import faults


def test_every_task_type_says_whether_it_may_run_again() -> None:
    types = {v for k, v in vars(c).items() if k.startswith("TASK_TYPE_")}
    assert types == set(task_types.TASK_TYPES)
    in_graphs = {s.task_type for specs in (
        graphs.migration_graph(2, True, False), graphs.replica_execution_graph(True),
        graphs.replica_deploy_graph(False, False), graphs.replica_deploy_graph(True, True),
        graphs.replica_disks_delete_graph(), graphs.replica_update_graph()) for s in specs}
    assert in_graphs <= task_types.RERUNNABLE_TASK_TYPES
    assert task_types.FINISH_WHEN_CANCELLED_TASK_TYPES <= task_types.RERUNNABLE_TASK_TYPES


def test_the_fault_hook_is_off_without_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENV, raising=False)
    with faults.running(c.TASK_TYPE_REPLICATE_DISKS, lambda: False):
        faults.crash_point()
    faults.finished(c.TASK_TYPE_REPLICATE_DISKS)


def test_armed_items_fire_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    arm = tmp_path / "arm"
    arm.write_text(f"{c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT}:fail,OTHER:after")
    monkeypatch.setenv(faults.ENV, f"@{arm}")
    with faults.running(c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT, lambda: False):
        pass  # the runner runs: the task fails after it
    with pytest.raises(exceptions.ProviderError, match="injected failure"):
        faults.finished(c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT)
    assert arm.read_text() == "OTHER:after"
    faults.finished(c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT)  # consumed: nothing happens
    arm.write_text(f"{c.TASK_TYPE_REPLICATE_DISKS}:hold")
    calls = iter([False, False, True])
    with pytest.raises(exceptions.TaskCanceled), \
            faults.running(c.TASK_TYPE_REPLICATE_DISKS, lambda: next(calls)):
        pass
    assert arm.read_text() == ""
