"""The task table (coriolis/task_types.py) is complete and consistent: every task type of
the constants and of every graph has a row, every runner exists, sides and capabilities
agree, and a task loads only the providers of its side, checking the row's capability."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path
from typing import Any

import pytest

from coriolis import constants as c
from coriolis import exceptions, task_types
from coriolis.bus.base import EndpointRef, TaskMessage
from coriolis.engine import graphs
from coriolis.providers.base import Capability
from coriolis.task_types import Side
from coriolis.worker import tasks

SOURCE_CAPS = {Capability.INSTANCES, Capability.EXPORT, Capability.REPLICA_EXPORT}
DESTINATION_CAPS = {Capability.IMPORT, Capability.REPLICA_IMPORT, Capability.OS_MORPHING}


def every_graph() -> list[list[graphs.TaskSpec]]:
    """Every graph builder of engine/graphs.py with every combination of its flags."""
    built = []
    for name, fn in vars(graphs).items():
        if not inspect.isfunction(fn) or name.startswith("_") \
                or inspect.signature(fn).return_annotation != "list[TaskSpec]":
            continue
        params = list(inspect.signature(fn).parameters.values())
        for bits in range(2 ** len(params)):
            args = [1 + (bits >> i & 1) if p.annotation == "int" else bool(bits >> i & 1)
                    for i, p in enumerate(params)]
            built.append(fn(*args))
    assert len(built) > 6
    return built


def test_guard_every_task_type_has_a_row_and_a_runner() -> None:
    constants = {v for k, v in vars(c).items() if k.startswith("TASK_TYPE_")}
    in_graphs = {s.task_type for specs in every_graph() for s in specs}
    assert in_graphs <= constants
    assert set(task_types.TASK_TYPES) == constants
    for row in task_types.TASK_TYPES.values():
        assert inspect.isfunction(getattr(tasks, row.runner, None)), row
        assert tasks.TASK_RUNNERS[row.name] is getattr(tasks, row.runner)
    assert set(tasks.TASK_RUNNERS) == constants


def test_sides_and_capabilities_agree() -> None:
    for row in task_types.TASK_TYPES.values():
        if row.side == Side.SOURCE:
            assert row.capability in SOURCE_CAPS, row
        elif row.side == Side.DESTINATION:
            assert row.capability in DESTINATION_CAPS, row
        else:
            assert row.capability is None, row
        if row.finish_when_cancelled:
            assert row.rerun, row
    assert task_types.sides(c.TASK_TYPE_REPLICATE_DISKS) == (Side.SOURCE, Side.DESTINATION)
    assert task_types.sides(c.TASK_TYPE_SHUTDOWN_INSTANCE) == (Side.SOURCE,)


def test_needed_capabilities_of_the_graphs() -> None:
    migration = task_types.needed_capabilities(
        s.task_type for s in graphs.migration_graph(1, False, True))
    assert set(migration[Side.SOURCE]) == {Capability.INSTANCES, Capability.EXPORT}
    assert set(migration[Side.DESTINATION]) == {Capability.IMPORT}
    morphing = task_types.needed_capabilities(
        s.task_type for s in graphs.migration_graph(1, False, False))
    assert morphing[Side.DESTINATION][Capability.OS_MORPHING] \
        == c.TASK_TYPE_DEPLOY_OS_MORPHING_RESOURCES
    replica = task_types.needed_capabilities(
        s.task_type for s in graphs.replica_execution_graph(True))
    assert Capability.REPLICA_EXPORT in replica[Side.SOURCE]
    assert Capability.REPLICA_IMPORT in replica[Side.DESTINATION]


class Sink:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def context(task_type: str, origin: str = "local", destination: str = "local",
            tmp: Path = Path("/nonexistent")) -> tasks.TaskContext:
    def ref(platform: str) -> EndpointRef:
        return EndpointRef(platform=platform, connection_info={"path": "/x"}, environment={},
                           project_id="p")
    message = TaskMessage(task_id="t", execution_id="e", task_type=task_type, instance="vm",
                          origin=ref(origin), destination=ref(destination), task_info={})
    return tasks.TaskContext(message, Sink(), threading.Event(), tmp)  # type: ignore[arg-type]


def test_a_task_loads_only_the_providers_of_its_side() -> None:
    src = context(c.TASK_TYPE_SHUTDOWN_INSTANCE, destination="no-such-platform")
    assert src.origin.platform == "local"
    with pytest.raises(exceptions.ProviderError,
                       match="touches the source side only, not the destination's provider "
                             r"\(no-such-platform\)"):
        _ = src.destination
    dst = context(c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT, origin="no-such-platform")
    assert dst.destination.platform == "local"
    with pytest.raises(exceptions.ProviderError, match="not the source's provider"):
        _ = dst.origin
    both = context(c.TASK_TYPE_REPLICATE_DISKS)
    assert both.origin.platform == both.destination.platform == "local"


@pytest.mark.usefixtures("plugin_providers")
def test_a_task_checks_its_rows_capability() -> None:
    ctx = context(c.TASK_TYPE_DEPLOY_REPLICA_SOURCE_RESOURCES, origin="srconly")
    with pytest.raises(exceptions.ProviderError,
                       match="DEPLOY_REPLICA_SOURCE_RESOURCES: source provider 'srconly' "
                             "lacks the 'replica_export' capability"):
        _ = ctx.origin
    assert context(c.TASK_TYPE_DEPLOY_MIGRATION_SOURCE_RESOURCES,
                   origin="srconly").origin.platform == "srconly"
