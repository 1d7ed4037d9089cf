"""Minions of a local cloud: each one a writer agent process (``coriolis-server writer``) with
its own directory, port, certificate and key, serving the cloud's directory.

A minion lives in ``CLOUD/.coriolis/minions/<pool id>/<machine id>/``: ``writer.json`` (its
URL, certificate fingerprint and key, written by the agent), ``pid``, ``agent.log`` (the
agent's log, with every request it served). The process runs in its own session, so it
outlives the worker that started it; deleting or powering off the minion stops it
(SIGTERM, then SIGKILL) after checking that the pid is still this minion's agent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from coriolis import exceptions
from coriolis.providers.base import JSON, require_linux_pool
from coriolis.providers.local import replica_disks
from coriolis.providers.local.cloud import LocalCloud
from coriolis.transfer import locations
from coriolis.transfer.locations import AgentLocation
from coriolis.transfer.remote import AgentAddress, probe_agent

ENV_SCHEMA: JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "verbose": {"type": "boolean", "default": True,
                    "description": "The agents log every request they serve (agent.log)"},
        "start_timeout": {"type": "number", "minimum": 1, "maximum": 300, "default": 30,
                          "description": "Seconds a minion's agent may take to start"},
    },
    "additionalProperties": False,
}

# Popen objects of the agents this process started (reaped when they end).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _safe_part(value: str, what: str) -> str:
    if not value or "/" in value or value in (".", "..") or len(value) > 64:
        raise exceptions.InvalidInput(f"{what}: not a valid name part")
    return value


def minion_dir(connection_info: JSON, pool_id: str, machine_id: str,
               create: bool = True) -> Path:
    """``CLOUD/.coriolis/minions/<pool>/<machine>`` (made when ``create``)."""
    cloud = LocalCloud(connection_info)
    base = cloud.scratch_dir() / "minions" / _safe_part(pool_id, "pool id") \
        / _safe_part(machine_id, "machine id")
    if create:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return False
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _agent_pid(directory: Path) -> int | None:
    """The pid of this minion's agent if it runs (its command line names the directory)."""
    try:
        pid = int((directory / "pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if str(directory).encode() not in cmdline or not _alive(pid):
        return None
    return pid


def _stop(directory: Path, timeout: float = 10.0) -> None:
    pid = _agent_pid(directory)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
    (directory / "pid").unlink(missing_ok=True)


def _start(connection_info: JSON, env: JSON, directory: Path) -> JSON:
    """Start the agent of ``directory`` (stopping a stale one first); its connection info."""
    _stop(directory)
    details_file = directory / "writer.json"
    details_file.unlink(missing_ok=True)
    cloud_path = os.path.realpath(connection_info["path"])
    cmd = [sys.executable, "-m", "coriolis.cmd.server", "writer", "--host", "127.0.0.1",
           "--port", "0", "--data-dir", str(directory), "--root", cloud_path]
    if env.get("verbose", True):
        cmd.append("-v")
    with open(directory / "agent.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    _CHILDREN[proc.pid] = proc
    (directory / "pid").write_text(str(proc.pid))
    deadline = time.monotonic() + float(env.get("start_timeout", 30))
    while not details_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(directory, 2.0)
            raise exceptions.ProviderError(
                f"the minion agent in {directory.name} did not start (see its agent.log)")
        time.sleep(0.05)
    details = json.loads(details_file.read_text())
    return {"url": details["url"], "fingerprint": details["fingerprint"],
            "key": details["key"]}


class LocalMinionPools:
    """The local provider's ``MinionPoolProvider`` methods (mixed into ``LocalProvider``): a
    minion is a writer agent serving the cloud's directory, which writes destination disks
    (destination pools) or serves the instances' disks read-only (source pools:
    ``LocalProvider.minion_source_resources``)."""

    minion_pool_platforms = frozenset({"source", "destination"})

    def minion_pool_environment_schema(self) -> JSON:
        return ENV_SCHEMA

    def validate_minion_pool_options(self, connection_info: JSON, env: JSON,
                                     pool_platform: str, os_type: str) -> None:
        require_linux_pool("local", self.minion_pool_platforms, pool_platform, os_type)
        LocalCloud(connection_info).validate()

    def set_up_pool_shared_resources(self, connection_info: JSON, env: JSON,
                                     pool_id: str) -> JSON:
        cloud = LocalCloud(connection_info)
        folder = cloud.scratch_dir() / "minions" / _safe_part(pool_id, "pool id")
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return {"folder": str(folder)}

    def tear_down_pool_shared_resources(self, connection_info: JSON, env: JSON, pool_id: str,
                                        shared_resources: JSON | None) -> None:
        cloud = LocalCloud(connection_info)
        folder = cloud.scratch_dir() / "minions" / _safe_part(pool_id, "pool id")
        if folder.exists():
            for machine in folder.iterdir():
                if machine.is_dir():
                    _stop(machine)
            shutil.rmtree(folder, ignore_errors=True)

    def create_minion(self, connection_info: JSON, env: JSON, pool_id: str, machine_id: str,
                      shared_resources: JSON | None) -> JSON:
        directory = minion_dir(connection_info, pool_id, machine_id)
        info = _start(connection_info, env, directory)
        return {"provider_properties": {"directory": str(directory),
                                        "pid": int((directory / "pid").read_text()),
                                        "url": info["url"]},
                "connection_info": info}

    def delete_minion(self, connection_info: JSON, env: JSON, pool_id: str, machine_id: str,
                      provider_properties: JSON) -> None:
        directory = minion_dir(connection_info, pool_id, machine_id, create=False)
        if directory.exists():
            _stop(directory)
            shutil.rmtree(directory, ignore_errors=True)

    def power_off_minion(self, connection_info: JSON, env: JSON, pool_id: str,
                         machine_id: str, provider_properties: JSON) -> JSON:
        directory = minion_dir(connection_info, pool_id, machine_id, create=False)
        if directory.exists():
            _stop(directory)
        return {**provider_properties, "pid": None}

    def power_on_minion(self, connection_info: JSON, env: JSON, pool_id: str,
                        machine_id: str, provider_properties: JSON) -> JSON:
        return self.create_minion(connection_info, env, pool_id, machine_id, None)

    def healthcheck_minion(self, connection_info: JSON, env: JSON, pool_id: str,
                           machine_id: str, provider_properties: JSON,
                           minion_connection_info: JSON) -> None:
        directory = minion_dir(connection_info, pool_id, machine_id, create=False)
        if _agent_pid(directory) is None:
            raise exceptions.ProviderError(f"minion {machine_id}: its agent process is gone")
        roots = probe_agent(AgentAddress.from_json(minion_connection_info), retry_seconds=2.0)
        real = os.path.realpath(connection_info["path"])
        if real not in roots:
            raise exceptions.ProviderError(
                f"minion {machine_id}: its agent does not serve the cloud")

    def minion_target_resources(self, connection_info: JSON, env: JSON, export_info: JSON,
                                volumes_info: list[JSON], minion_connection_info: JSON,
                                key_ref: str) -> JSON:
        disks: dict[str, Any] = {}
        for volume in volumes_info or []:
            location = AgentLocation(
                url=minion_connection_info["url"],
                fingerprint=minion_connection_info["fingerprint"], key_ref=key_ref,
                path=volume["path"], format=volume["format"], mode="always",
                journal=replica_disks.journal_of(volume),
                what=f"destination disk {volume['disk_id']} (through minion)")
            disks[volume["disk_id"]] = locations.to_json(location)
        return {"disks": disks}
