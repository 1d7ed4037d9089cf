"""The execution state machine and the task graphs, as pure functions."""

from __future__ import annotations

import pytest

from coriolis import constants as c
from coriolis.engine import graphs
from coriolis.engine.state import TaskState, advance, execution_status

S, P, R, OK, ERR = (c.TASK_STATUS_SCHEDULED, c.TASK_STATUS_PENDING, c.TASK_STATUS_RUNNING,
                    c.TASK_STATUS_COMPLETED, c.TASK_STATUS_ERROR)
OEO, UNS, CXL = c.TASK_STATUS_ON_ERROR_ONLY, c.TASK_STATUS_UNSCHEDULED, c.TASK_STATUS_CANCELED


def chain(*statuses: str) -> list[TaskState]:
    return [TaskState(f"t{i}", s, [f"t{i - 1}"] if i else []) for i, s in enumerate(statuses)]


def test_roots_are_ready_and_children_wait() -> None:
    step = advance(chain(S, S))
    assert step.ready == ["t0"] and step.changes == {"t0": P}


def test_child_runs_only_after_parent_completed() -> None:
    assert advance(chain(OK, S)).ready == ["t1"]
    assert advance(chain(R, S)).ready == []


def test_failed_parent_skips_descendants() -> None:
    step = advance(chain(ERR, S, S))
    assert step.changes == {"t1": UNS, "t2": UNS} and step.ready == []


def test_cleanup_runs_if_any_parent_completed() -> None:
    tasks = [TaskState("a", OK), TaskState("b", ERR),
             TaskState("clean", S, ["a", "b"], on_error=True),
             TaskState("nothing", S, ["b"], on_error=True)]
    step = advance(tasks)
    assert step.ready == ["clean"] and step.changes["nothing"] == UNS


def test_on_error_only_stays_hidden_on_success_and_runs_on_failure() -> None:
    success = [TaskState("a", OK), TaskState("undo", OEO, ["a"], on_error_only=True)]
    assert advance(success).changes == {}
    assert execution_status([OK, OEO]) == c.EXECUTION_STATUS_COMPLETED
    failure = [TaskState("a", OK), TaskState("b", ERR, ["a"]),
               TaskState("undo", OEO, ["a", "b"], on_error_only=True)]
    assert advance(failure).ready == ["undo"]


def test_cancelling_cancels_pending_work_but_runs_cleanups() -> None:
    tasks = [TaskState("a", OK), TaskState("next", S, ["a"]),
             TaskState("clean", S, ["a"], on_error=True),
             TaskState("undo", OEO, ["a"], on_error_only=True)]
    step = advance(tasks, cancelling=True)
    assert step.changes["next"] == CXL
    assert sorted(step.ready) == ["clean", "undo"]


@pytest.mark.parametrize("statuses, cancelling, expected", [
    ([OK, R], False, c.EXECUTION_STATUS_RUNNING),
    ([OK, R], True, c.EXECUTION_STATUS_CANCELLING),
    ([OK, S], False, c.EXECUTION_STATUS_DEADLOCKED),
    ([ERR, CXL, OK], False, c.EXECUTION_STATUS_ERROR),
    ([CXL, OK], False, c.EXECUTION_STATUS_CANCELED),
    ([OK, OK], True, c.EXECUTION_STATUS_CANCELED),
    ([OK, OK, OEO], False, c.EXECUTION_STATUS_COMPLETED),
])
def test_execution_status(statuses: list[str], cancelling: bool, expected: str) -> None:
    assert execution_status(statuses, cancelling) == expected


def _types(specs: list[graphs.TaskSpec]) -> list[str]:
    return [s.task_type for s in specs]


def test_migration_graph_chains_syncs_with_shutdown_before_the_last() -> None:
    specs = graphs.migration_graph(3, shutdown_instances=True, skip_os_morphing=True)
    by_key = {s.key: s for s in specs}
    syncs = [s for s in specs if s.task_type == c.TASK_TYPE_REPLICATE_DISKS]
    assert len(syncs) == 3
    assert syncs[1].key in syncs[2].depends_on or any(
        by_key[d].task_type == c.TASK_TYPE_SHUTDOWN_INSTANCE for d in syncs[2].depends_on)
    shutdown = [s for s in specs if s.task_type == c.TASK_TYPE_SHUTDOWN_INSTANCE]
    assert len(shutdown) == 1 and syncs[2].depends_on == [shutdown[0].key]
    assert syncs[1].key in shutdown[0].depends_on
    assert c.TASK_TYPE_OS_MORPHING not in _types(specs)
    assert c.TASK_TYPE_OS_MORPHING in _types(graphs.migration_graph(1))


@pytest.mark.parametrize("specs", [
    graphs.migration_graph(2, True, False), graphs.replica_execution_graph(True),
    graphs.replica_deploy_graph(False, False), graphs.replica_deploy_graph(True, True),
    graphs.replica_disks_delete_graph(), graphs.replica_update_graph(),
])
def test_every_graph_is_acyclic_and_closed(specs: list[graphs.TaskSpec]) -> None:
    graphs.check_graph(specs)


def test_check_graph_rejects_cycles_and_unknown_parents() -> None:
    with pytest.raises(ValueError, match="cycle"):
        graphs.check_graph([graphs.TaskSpec("a", "X", ["b"]), graphs.TaskSpec("b", "X", ["a"])])
    with pytest.raises(ValueError, match="unknown"):
        graphs.check_graph([graphs.TaskSpec("a", "X", ["ghost"])])


@pytest.mark.parametrize("graph", [graphs.migration_graph(), graphs.replica_deploy_graph()])
def test_failed_os_morphing_never_finalizes_the_instance(graph: list[graphs.TaskSpec]) -> None:
    """Finalizing depends on OS_MORPHING itself, not only on its cleanup (which runs after a
    failure too): a guest that could not be morphed is cleaned up, never made final."""
    statuses = {s.key: OK for s in graph}
    by_type = {s.task_type: s for s in graph}
    finalize = next(s for s in graph if s.task_type.startswith("FINALIZE"))
    morph = by_type[c.TASK_TYPE_OS_MORPHING]
    statuses.update({morph.key: ERR, finalize.key: S})
    tasks = [TaskState(s.key, statuses[s.key], s.depends_on, on_error=s.on_error,
                       on_error_only=s.on_error_only) for s in graph]
    assert advance(tasks).changes.get(finalize.key) == UNS
