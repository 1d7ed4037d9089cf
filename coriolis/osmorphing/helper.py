"""OS morphing on a helper machine: the worker's side.

For clouds whose volumes cannot be attached to the worker, a provider's
``deploy_os_morphing_resources`` names a *helper* beside the disks: ``{"url", "fingerprint",
"key_ref"}``, a writer agent (``coriolis-server writer``) on a machine that has them. The
worker starts the morphing there (``transfer.agent.WriterAgent.start_morph``) and relays the
job's events until it ends; a cancel of the task stops the appliance on the helper.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from coriolis import exceptions
from coriolis.osmorphing.guest import EventLog, MorphingFailed
from coriolis.osmorphing.isolated import MorphRequest
from coriolis.transfer.remote import AgentAddress, AgentSession, key_from_ref

LOG = logging.getLogger(__name__)
POLL_WAIT = 2.0  # seconds the helper holds a poll for a new event (the cancel latency)


def helper_address(helper: dict[str, Any], connection_info: dict[str, Any]) -> AgentAddress:
    """The helper's address with its agent key, looked up by ``key_ref`` in the destination
    endpoint's ``connection_info``."""
    return AgentAddress.from_json({"url": helper["url"], "fingerprint": helper["fingerprint"],
                                   "key": key_from_ref(connection_info, helper["key_ref"])})


def job_id_for(task_id: str) -> str:
    """A job id the agent accepts, the same for every attempt of a task (a new attempt stops
    what an earlier one left running)."""
    return re.sub(r"[^a-z0-9_-]", "_", task_id.lower())[:128]


def morph_on_helper(agent: AgentAddress, job_id: str, request: MorphRequest, log: EventLog,
                    cancelled: Callable[[], bool]) -> None:
    """Run ``request`` on the helper ``agent`` (its disk paths are the helper's); its events go
    to ``log``. ``MorphingFailed`` with the helper's reason, ``TaskCanceled`` once
    ``cancelled()`` (the appliance on the helper is stopped first), ``AgentError`` when the
    helper refuses the job (wrong key, a disk outside its roots, no libguestfs there)."""
    path = f"/v1/morphs/{job_id}"
    with AgentSession(agent, timeout=120.0) as session:
        view = session.call("PUT", path, "start OS morphing", json.loads(request.to_json()))
        try:
            while True:
                for event in view["events"]:
                    log(event)
                if view["state"] != "running":
                    break
                if cancelled():
                    raise exceptions.TaskCanceled("OS morphing cancelled")
                view = session.call("GET", f"{path}?after={view['next']}&wait={POLL_WAIT:g}",
                                    "report OS morphing progress")
        finally:
            _stop(session, path)
    if view["state"] == "failed":
        raise MorphingFailed(view["error"])
    if view["state"] == "canceled":
        raise MorphingFailed(f"OS morphing on the helper at {agent.url} was {view['error']}")


def _stop(session: AgentSession, path: str) -> None:
    """Stop the job on the helper (its appliance is gone when this returns) and forget it;
    a failure is logged, not raised over the error that may be on its way."""
    try:
        session.call("DELETE", path, "stop OS morphing")
    except exceptions.CoriolisError as exc:
        LOG.warning("could not stop OS morphing job %s: %s", path.rsplit("/", 1)[1], exc)
