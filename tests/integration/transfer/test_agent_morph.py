"""OS morphing on the writer agent's host (its cloud's helper machine), the agent a real
process on loopback over TLS with the real libguestfs appliance: the key is required and never
echoed, disks must be under the agent's roots (backing files too), the guest's failure comes
back by name, and a cancel kills the appliance on the agent."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from coriolis import exceptions
from coriolis.harness import RunningWriter, processes_naming
from coriolis.osmorphing.guest import MorphingFailed
from coriolis.osmorphing.helper import helper_address, morph_on_helper
from coriolis.osmorphing.isolated import MorphRequest
from coriolis.transfer.remote import AgentAddress, AgentError
from tests.integration.osmorphing.test_isolated import blank_disk, request_for

pytestmark = pytest.mark.timeout(600)


def address(agent: RunningWriter, key: str | None = None) -> AgentAddress:
    return AgentAddress.from_json({**agent.details, "key": key or agent.details["key"]})


def morph(agent: AgentAddress, request: MorphRequest, events: list[str] | None = None,
          cancelled: threading.Event | None = None) -> None:
    morph_on_helper(agent, "job-1", request, (events if events is not None else []).append,
                    (cancelled or threading.Event()).is_set)


def test_a_wrong_key_is_refused_without_echoing_it(writer: RunningWriter) -> None:
    disk = blank_disk(writer.roots[0] / "blank.raw")
    wrong = "not-the-agent-key-3141592653"
    with pytest.raises(AgentError) as refused:
        morph(address(writer, wrong), request_for(disk))
    message = str(refused.value)
    assert "(401)" in message and "agent key is required to run OS morphing" in message
    assert wrong not in message and writer.details["key"] not in message


def test_a_key_ref_that_names_nothing_is_named_not_its_neighbours() -> None:
    helper = {"url": "https://127.0.0.1:1", "fingerprint": ":".join(["ab"] * 32),
              "key_ref": "writer.key"}
    with pytest.raises(exceptions.ProviderError) as missing:
        helper_address(helper, {"path": "/x", "writer": {"url": "u", "secret": "s3cr3t"}})
    assert "no agent key at 'writer.key'" in str(missing.value)
    assert "s3cr3t" not in str(missing.value)


def test_disks_outside_the_agents_roots_are_refused(writer: RunningWriter,
                                                     tmp_path: Path) -> None:
    outside = blank_disk(tmp_path / "outside.raw")
    with pytest.raises(AgentError) as refused:
        morph(address(writer), request_for(outside))
    assert f"disks.0.path '{outside}' is outside the directories this agent serves" \
        in str(refused.value)
    # A disk under the roots whose backing file is not: the appliance would read it.
    overlay = writer.roots[0] / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(outside), "-F", "raw",
                    str(overlay)], check=True)
    with pytest.raises(AgentError) as refused:
        morph(address(writer), request_for(overlay, "qcow2"))
    assert "disks.0.path (a file it is made of)" in str(refused.value)
    assert str(outside) in str(refused.value)
    escaping = writer.roots[0] / "link.raw"
    escaping.symlink_to(outside)
    with pytest.raises(AgentError, match="outside the directories this agent serves"):
        morph(address(writer), request_for(escaping))
    with pytest.raises(AgentError, match="does not exist on the writer agent's host"):
        morph(address(writer), request_for(writer.roots[0] / "missing.raw"))
    assert processes_naming(str(outside)) == []


def test_the_guests_failure_comes_back_with_the_events(writer: RunningWriter) -> None:
    disk = blank_disk(writer.roots[0] / "blank.raw")
    with pytest.raises(MorphingFailed) as failed:
        morph(address(writer), request_for(disk))
    assert "no operating system found on disk0 [raw]; file systems there: /dev/sda ext4" \
        in str(failed.value)
    assert processes_naming(str(disk)) == []
    assert "OS morphing job job-1: failed" in writer.log_path.read_text()


def test_cancel_kills_the_appliance_on_the_agent(writer: RunningWriter) -> None:
    disk = blank_disk(writer.roots[0] / "blank.raw")
    cancelled = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            morph(address(writer), request_for(disk), cancelled=cancelled)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not [p for p in processes_naming(str(disk)) if "qemu-system" in p]:  # the appliance
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.2)
    cancelled.set()
    asked = time.monotonic()
    thread.join(60)
    assert isinstance(outcome[0], exceptions.TaskCanceled), outcome
    assert time.monotonic() - asked < 10
    assert processes_naming(str(disk)) == []  # stopped before the worker's task ended
    assert "OS morphing job job-1: canceled (stopped by its worker)" \
        in writer.log_path.read_text()
