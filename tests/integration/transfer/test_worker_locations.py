"""The worker's task runners over locations, on a real worker (its task runners, its event
sink recorded), a real local cloud on each side and a real writer agent process: the copy
goes through the agent, what the tasks return, their events and their errors never hold the
agent key, and a too-small target fails the copy naming the disk."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coriolis import constants as c
from coriolis.bus.base import EndpointRef, TaskMessage
from coriolis.cmd.local_cloud import add_instance, init_cloud
from coriolis.config import Settings
from coriolis.harness import RunningWriter, start_writer, stop_server
from coriolis.worker.service import Worker


class Recorder:
    """The conductor's side of a task (TaskEventSink): records what the worker reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda task_id, *args, **kwargs: self.events.append((name, args))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[dict]:
    settings = Settings(data_dir=tmp_path / "data")
    root = settings.local_roots_for("p1")[0]
    src, dst = init_cloud(root / "src"), init_cloud(root / "dst")
    add_instance(src, "vm1", disk_size="6M", allocated_fraction=0.5, seed=4)
    agent = start_writer(tmp_path / "agent", [dst])
    try:
        yield {"settings": settings, "src": src, "dst": dst, "agent": agent,
               "worker": Worker("h", tmp_path / "data" / "worker", settings)}
    finally:
        stop_server(agent)


def run(setup: dict, task_type: str, info: dict, recorder: Recorder) -> dict:
    agent: RunningWriter = setup["agent"]
    message = TaskMessage(
        task_id=f"t-{len(recorder.events)}", execution_id="e1", task_type=task_type,
        instance="vm1", task_info=info,
        origin=EndpointRef("local", {"path": str(setup["src"])}, project_id="p1"),
        destination=EndpointRef("local", {"path": str(setup["dst"]), "writer": {
            **agent.details, "mode": "always"}}, project_id="p1", environment={
                "transfer_compression": "zstd"}))
    setup["worker"].run_task(message, recorder, threading.Event())  # type: ignore[arg-type]
    kind, args = recorder.events[-1]
    if kind == "task_failed":
        return {"error": args[0]}
    assert kind == "task_completed", recorder.events[-3:]
    info.update(args[0])
    return dict(args[0])


def test_a_copy_through_the_agent_never_reports_its_key(setup: dict) -> None:
    key = setup["agent"].details["key"]
    recorder, info = Recorder(), {}
    for task_type in (c.TASK_TYPE_GET_INSTANCE_INFO, c.TASK_TYPE_CREATE_INSTANCE_DISKS,
                      c.TASK_TYPE_DEPLOY_MIGRATION_SOURCE_RESOURCES,
                      c.TASK_TYPE_DEPLOY_MIGRATION_TARGET_RESOURCES,
                      c.TASK_TYPE_REPLICATE_DISKS):
        assert "error" not in run(setup, task_type, info, recorder)
    assert info["target_resources"]["disks"]["disk0"]["kind"] == "agent"
    source = setup["src"] / "instances" / "vm1" / "disk0.raw"
    assert Path(info["volumes_info"][0]["path"]).read_bytes() == source.read_bytes()
    said = json.dumps(recorder.events)
    assert "writing through the writer agent at " + setup["agent"].details["url"] in said
    assert "MiB on the wire" in said

    # A target smaller than the volume: the copy fails naming the disk, not the key.
    with open(info["volumes_info"][0]["path"], "r+b") as f:
        f.truncate(1024 * 1024)
    failed = run(setup, c.TASK_TYPE_REPLICATE_DISKS, info, recorder)
    assert "destination disk disk0 is smaller" in failed["error"]
    assert run(setup, c.TASK_TYPE_DELETE_MIGRATION_TARGET_RESOURCES, info, recorder) == {
        "target_resources": {}}
    assert key not in json.dumps(info) and key not in json.dumps(recorder.events)
