"""One runner per task type. A runner reads the instance's task_info and returns what it adds
to it; it talks to the platforms only through the provider interfaces."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coriolis import constants as c
from coriolis import exceptions, task_types
from coriolis.bus.base import EndpointRef, TaskEventSink, TaskMessage
from coriolis.minions.transfers import KEY_REFS, MINION_KEY_REF, ROLE_OSMORPHING, ROLE_SOURCE
from coriolis.osmorphing import appliance
from coriolis.osmorphing.helper import helper_address, job_id_for, morph_on_helper
from coriolis.osmorphing.isolated import MorphRequest, morph_in_child
from coriolis.providers import registry
from coriolis.providers.base import MinionOsMorphingProvider, missing_capability
from coriolis.task_types import Side
from coriolis.transfer import locations
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.manifest import UNKNOWN, ZERO, BlockManifest
from coriolis.transfer.manifests import ManifestStore
from coriolis.transfer.options import TransferOptions
from coriolis.worker import faults

# Change-detection granularity of block manifests (copies still move 4 MiB chunks).
MANIFEST_BLOCK = 64 * 1024
MiB = 1024 * 1024

JSON = dict[str, Any]


class TaskContext:
    """What a runner gets: the task's message, its instance's ``task_info`` and the provider
    of each endpoint of the task's side (``task_types``), loaded only when touched."""

    def __init__(self, message: TaskMessage, sink: TaskEventSink, cancel_flag: threading.Event,
                 data_dir: Path) -> None:
        self.message = message
        self.instance = message.instance
        self.info: JSON = message.task_info
        self.row = task_types.TASK_TYPES[message.task_type]
        self.origin_conn = message.origin.connection_info
        self.origin_env = message.origin.environment
        self.dest_conn = message.destination.connection_info
        self.dest_env = message.destination.environment
        self.data_dir = data_dir
        self._sink = sink
        self._cancel = cancel_flag

    def _provider(self, side: Side, endpoint: EndpointRef) -> Any:
        """The provider of ``side``'s endpoint; ``ProviderError`` if the task's side is not
        it (a runner touching the other side is a bug) or if the provider lacks the row's
        capability (the API refuses such transfers; a provider changed since is caught)."""
        if side not in task_types.sides(self.message.task_type):
            raise exceptions.ProviderError(
                f"task {self.message.task_type} touches the {self.row.side} side only, not "
                f"the {side}'s provider ({endpoint.platform})")
        provider = registry.get_provider(endpoint.platform)
        if self.row.capability is not None:
            missing = missing_capability(provider, self.row.capability)
            if missing:
                raise exceptions.ProviderError(
                    f"task {self.message.task_type}: {side} {missing}")
        return provider

    @functools.cached_property
    def origin(self) -> Any:
        """The source endpoint's provider (a task of the source side, or both)."""
        return self._provider(Side.SOURCE, self.message.origin)

    @functools.cached_property
    def destination(self) -> Any:
        """The destination endpoint's provider (a task of the destination side, or both)."""
        return self._provider(Side.DESTINATION, self.message.destination)

    def progress(self, current: int, total: int | None, message: str) -> None:
        self._sink.task_progress(self.message.task_id, current, total, message)

    def event(self, message: str, level: str = c.TASK_EVENT_INFO) -> None:
        self._sink.task_event(self.message.task_id, level, message)

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def require(self, key: str) -> Any:
        value = self.info.get(key)
        if value is None:
            raise exceptions.ProviderError(f"task_info of {self.instance} lacks '{key}'")
        return value


Runner = Callable[[TaskContext], JSON]


def nothing(ctx: TaskContext) -> JSON:
    return {}




def get_instance_info(ctx: TaskContext) -> JSON:
    return {"export_info": ctx.origin.get_instance(ctx.origin_conn, ctx.origin_env,
                                                   ctx.instance)}


def validate_source(ctx: TaskContext) -> JSON:
    ctx.origin.validate_source_inputs(ctx.origin_conn, ctx.origin_env, ctx.instance)
    return {}


def validate_migration_destination(ctx: TaskContext) -> JSON:
    ctx.destination.validate_destination_inputs(ctx.dest_conn, ctx.dest_env,
                                                ctx.require("export_info"))
    return {}


def validate_replica_destination(ctx: TaskContext) -> JSON:
    ctx.destination.validate_destination_inputs(ctx.dest_conn, ctx.dest_env,
                                                ctx.require("export_info"),
                                                check_name_clash=False)
    return {}


def validate_deployment(ctx: TaskContext) -> JSON:
    ctx.require("volumes_info")
    ctx.destination.validate_destination_inputs(ctx.dest_conn, ctx.dest_env,
                                                ctx.require("export_info"))
    return {}


def create_disks(ctx: TaskContext) -> JSON:
    """Replica disks that exist are first brought to a committed state (``_settle``)."""
    volumes = ctx.info.get("volumes_info") or []
    if ctx.message.task_type == c.TASK_TYPE_DEPLOY_REPLICA_DISKS and volumes:
        volumes = _settle(ctx, volumes)
    volumes = ctx.destination.create_disks(ctx.dest_conn, ctx.dest_env,
                                           ctx.require("export_info"), volumes,
                                           transfer_id=ctx.info.get("action_id"))
    ctx.event(f"{len(volumes)} destination disk(s) ready")
    return {"volumes_info": volumes}


def _committed_tokens(ctx: TaskContext) -> list[str]:
    """The source change-tracking tokens of the tracking point in force: those the replica
    disks were last committed with (a pending one is not in force)."""
    return [v["cbt"] for v in ctx.info.get("volumes_info") or [] if v.get("cbt")]


def deploy_source_resources(ctx: TaskContext) -> JSON:
    """Replicas (not migrations) track changes natively where the platform can. With a
    source minion reserved (``task_info["source_minion"]``), the disks are read through its
    agent (``minion_source_resources``: ``agent`` source locations). The
    resources' ``events`` (a provider's warnings, e.g. a full read after a lost change-tracking
    point) are reported as warning events and not kept."""
    replica = ctx.message.task_type == c.TASK_TYPE_DEPLOY_REPLICA_SOURCE_RESOURCES
    tracking = {"tracking_id": ctx.info.get("action_id") if replica else None,
                "transfer_id": ctx.info.get("action_id"),
                "keep_tokens": _committed_tokens(ctx)}
    minion = ctx.info.get(ROLE_SOURCE)
    if minion:
        if "source" not in getattr(ctx.origin, "minion_pool_platforms", ()):
            raise exceptions.ProviderError(
                f"the {ctx.message.origin.platform} provider reads no source disks through "
                "pool minions")
        ctx.event(f"source disks are read through minion {minion['machine_id']} of pool "
                  f"{minion['pool_id']}")
        resources = dict(ctx.origin.minion_source_resources(
            ctx.origin_conn, ctx.origin_env, ctx.require("export_info"), minion,
            KEY_REFS[ROLE_SOURCE], **tracking))
    else:
        resources = dict(ctx.origin.deploy_source_resources(
            ctx.origin_conn, ctx.origin_env, ctx.require("export_info"), **tracking))
    for message in resources.pop("events", None) or []:
        ctx.event(str(message), c.TASK_EVENT_WARNING)
    return {"source_resources": resources}


def delete_source_resources(ctx: TaskContext) -> JSON:
    """Keeps the change-tracking tokens of the tracking point in force: the new ones after a
    committed execution, the previous ones after a rolled-back one (the replica graph runs
    this after the commit or the roll-back)."""
    replica = ctx.message.task_type == c.TASK_TYPE_DELETE_REPLICA_SOURCE_RESOURCES
    ctx.origin.delete_source_resources(ctx.origin_conn, ctx.origin_env, {
        **(ctx.info.get("source_resources") or {}), "keep_tokens": _committed_tokens(ctx),
        "export_info": ctx.info.get("export_info"), "transfer_id": ctx.info.get("action_id"),
        "tracking_id": ctx.info.get("action_id") if replica else None})
    return {"source_resources": {}}


def deploy_target_resources(ctx: TaskContext) -> JSON:
    """Where each volume is written (a target location per disk); after the replica disks'
    snapshot, so a location names the undo journal the writes must fill. With a destination
    minion reserved (``task_info["destination_minion"]``), locations on its agent."""
    minion = ctx.info.get("destination_minion")
    if minion:
        ctx.event(f"destination disks are written through minion {minion['machine_id']}")
        return {"target_resources": ctx.destination.minion_target_resources(
            ctx.dest_conn, ctx.dest_env, ctx.require("export_info"),
            ctx.info.get("volumes_info") or [], minion, MINION_KEY_REF)}
    return {"target_resources": ctx.destination.deploy_target_resources(
        ctx.dest_conn, ctx.dest_env, ctx.require("export_info"),
        ctx.info.get("volumes_info") or [], transfer_id=ctx.info.get("action_id"))}


def delete_target_resources(ctx: TaskContext) -> JSON:
    ctx.destination.delete_target_resources(ctx.dest_conn, ctx.dest_env,
                                            ctx.info.get("target_resources") or {})
    return {"target_resources": {}}


def shutdown_instance(ctx: TaskContext) -> JSON:
    ctx.origin.shutdown_instance(ctx.origin_conn, ctx.origin_env, ctx.require("export_info"))
    ctx.event(f"instance {ctx.instance} shut down")
    return {}


def _manifests(ctx: TaskContext) -> ManifestStore:
    """The block manifests of destination volumes on this worker."""
    return ManifestStore(ctx.data_dir / "manifests")


def _apply_outcome(ctx: TaskContext, outcome: JSON) -> list[JSON]:
    """Move each volume's change-tracking point (source bitmap token, manifest generation)
    to what its pending copy recorded when the disks committed that copy's execution, or
    drop it when they did not; say what a settle found."""
    volumes = []
    manifests = _manifests(ctx)
    for volume in outcome["volumes_info"]:
        volume = dict(volume)
        pending = volume.pop("pending", None)
        if pending and pending["execution"] == outcome["committed"]:
            if pending.get("cbt"):
                volume["cbt"] = pending["cbt"]
            volume["manifest_generation"] = pending["manifest_generation"]
            volume["manifest"] = str(manifests.path(volume))
        manifests.prune(volume)
        volumes.append(volume)
    if outcome.get("rolled_back"):
        ctx.event(f"Rolled back what execution {outcome['rolled_back']} wrote to the replica "
                  f"disks and never committed ({outcome.get('bytes_restored', 0) / MiB:.1f} "
                  "MiB restored from its undo journal, or its disk copy or qcow2 snapshot "
                  "put back): they hold the last committed execution's data",
                  c.TASK_EVENT_WARNING)
    elif outcome.get("finished_commit"):
        ctx.event(f"Finished the interrupted commit of execution {outcome['committed']} on "
                  "the replica disks (its snapshots dropped)", c.TASK_EVENT_WARNING)
    return volumes


def _settle(ctx: TaskContext, volumes: list[JSON]) -> list[JSON]:
    """Bring replica disks to a committed state before anything else touches them: an undo
    journal or qcow2 snapshot that an interrupted execution left is rolled back (or, if that
    execution had committed, dropped)."""
    return _apply_outcome(ctx, ctx.destination.restore_disk_snapshots(
        ctx.dest_conn, ctx.dest_env, volumes))


def _location(resources: JSON, side: str, disk_id: str) -> JSON:
    location = (resources.get("disks") or {}).get(disk_id)
    if location is None:
        raise exceptions.ProviderError(f"the {side} resources have no location for disk "
                                       f"{disk_id}")
    return dict(location)


# Power states (as providers report them, lower-cased) in which nothing writes to the disks.
_STOPPED_STATES = {"stopped", "shutoff", "shutdown", "poweredoff", "off"}


def reads_point_in_time(export_info: JSON, source_resources: JSON) -> bool:
    """Whether the source disks hold still while they are read: the source resources are a
    point-in-time copy (``point_in_time``: a snapshot), or the instance was shut off when its
    info was taken. Only a running instance read live needs ``replication_count`` passes."""
    state = str(export_info.get("power_state") or "").lower().replace(" ", "")
    return bool(source_resources.get("point_in_time")) or state in _STOPPED_STATES


def replicate_disks(ctx: TaskContext) -> JSON:
    """Copy every disk from its source location to its target location (``transfer.
    locations``), sending only blocks whose hash differs from what the destination holds
    according to the volume's block manifest (a new volume holds zeroes). The new
    change-tracking point (this execution's bitmap token and manifest) is recorded as the
    volume's ``pending`` one: it is in force only once the execution commits.

    A source read at one point in time (``reads_point_in_time``) is copied once per
    execution: the later passes of a migration's ``replication_count`` find the
    ``point_in_time_copy`` this one recorded and return at once, saying so."""
    export_info = ctx.require("export_info")
    execution = ctx.message.execution_id
    if ctx.info.get("point_in_time_copy") == execution:
        ctx.event("The source disks were copied from a point in time (a snapshot, or the "
                  "instance shut off): nothing can have changed, this pass copies nothing")
        return {}
    volumes = [dict(v) for v in ctx.require("volumes_info")]
    sources = ctx.info.get("source_resources") or {}
    targets = ctx.info.get("target_resources") or {}
    options = TransferOptions.from_env(ctx.dest_env)
    manifests = _manifests(ctx)

    def platform_reader(location: locations.PlatformLocation, conn: JSON) -> Any:
        return ctx.origin.open_platform_reader(conn, ctx.origin_env, location)

    for volume in volumes:
        disk_id = volume["disk_id"]
        source = _location(sources, "source", disk_id)
        target = _location(targets, "target", disk_id)
        committed_file = manifests.path(volume)
        # A copy run again after a crash goes on from its own manifest, if it saved one.
        work_file = manifests.path(volume, execution)
        work_file.parent.mkdir(parents=True, exist_ok=True)
        tracking = (sources.get("cbt") or {}).get(disk_id)
        since = volume.get("cbt") if tracking else None
        if source.get("kind") == "agent":
            ctx.event(f"Disk {disk_id}: reading through the agent at {source.get('url')}")
        reader = locations.open_reader(source, since=since, connection_info=ctx.origin_conn,
                                       platform_opener=platform_reader)
        try:
            transfer_id = re.sub(r"[^a-z0-9_-]", "_", f"{ctx.message.task_id}-{disk_id}".lower())
            agent_url = locations.writes_through_agent(target, options)
            if agent_url:
                ctx.event(f"Disk {disk_id}: writing through the writer agent at {agent_url}")
            writer = locations.open_writer(target, options=options, transfer_id=transfer_id,
                                           connection_info=ctx.dest_conn,
                                           size=volume.get("size_bytes"))
            wire_summary = getattr(writer, "wire_summary", None)
            try:
                known = next((f for f in (work_file, committed_file) if f.exists()), None)
                if known is not None:
                    manifest = BlockManifest.load_or_new(known, MANIFEST_BLOCK, reader.size)
                else:  # a new (blank) volume, or one whose manifest was lost: resend all
                    manifest = BlockManifest(MANIFEST_BLOCK, reader.size,
                                             fill=UNKNOWN if volume.get("manifest") else ZERO)

                def progress(done: int, scan_total: int, rate: float,
                             _id: str = disk_id) -> None:
                    ctx.progress(done, scan_total or 1,
                                 f"Disk {_id}: {done / MiB:.1f} of {scan_total / MiB:.1f} MiB "
                                 f"allocated data scanned, {rate / MiB:.1f} MiB/s")
                    if done:
                        faults.crash_point(ctx.message.task_type)

                try:
                    stats = copy_disk(reader, writer, since=since, manifest=manifest,
                                      progress=progress, cancel=ctx.cancelled,
                                      dest_is_blank=False)
                finally:
                    # Even after a failure the manifest describes the destination exactly
                    # (blocks being written are UNKNOWN), so a re-run here resends only
                    # what it must.
                    manifest.save(work_file)
            finally:
                writer.close()
        finally:
            reader.close()
        changed = stats.bytes_written + stats.bytes_zeroed
        volume["pending"] = {"execution": execution, "manifest_generation": execution,
                             "cbt": tracking["token"] if tracking else None}
        volume.update({"bytes_scanned": stats.bytes_scanned,
                       "bytes_changed": changed, "bytes_sent": stats.bytes_written,
                       "bytes_unchanged": stats.bytes_skipped_unchanged})
        # The last progress update of a disk is its summary (the CLI shows progress updates).
        total = stats.bytes_scanned or 1
        ctx.progress(total, total,
                     f"Disk {disk_id}: scanned {stats.bytes_scanned / MiB:.1f} MiB, changed "
                     f"{changed / MiB:.1f} MiB, sent {stats.bytes_written / MiB:.1f} MiB "
                     f"in {stats.seconds:.2f}s" + (
                         f" ({wire_summary()}, {stats.bytes_resumed / MiB:.1f} MiB resumed)"
                         if wire_summary else ""))
    result: JSON = {"volumes_info": volumes}
    if reads_point_in_time(export_info, sources):
        result["point_in_time_copy"] = execution
    if not any(v.get("snapshot") for v in volumes):
        # A migration's copy (no snapshot, nothing to commit): in force at once.
        result["volumes_info"] = _apply_outcome(ctx, {"volumes_info": volumes,
                                                      "committed": execution})
    return result


def snapshot_disks(ctx: TaskContext) -> JSON:
    """Settle the replica disks, then snapshot them for this execution; for a deploy on the
    replica disks themselves (a deploy's task_info names its ``replica_id``; ``clone_disks``
    false), a snapshot that undoes any write, not only the disk writer's."""
    in_place = bool(ctx.info.get("replica_id")) and not ctx.info.get("clone_disks", True)
    outcome = ctx.destination.snapshot_disks(ctx.dest_conn, ctx.dest_env,
                                             ctx.require("volumes_info"),
                                             snapshot_id=ctx.message.execution_id,
                                             for_deploy=in_place)
    return {"volumes_info": _apply_outcome(ctx, outcome)}


def restore_snapshots(ctx: TaskContext) -> JSON:
    """Roll the replica disks back to the last committed execution, unless this execution
    committed already (then there is nothing to roll back)."""
    outcome = ctx.destination.restore_disk_snapshots(ctx.dest_conn, ctx.dest_env,
                                                     ctx.require("volumes_info"))
    volumes = _apply_outcome(ctx, {**outcome, "rolled_back": None})
    if outcome["rolled_back"]:
        ctx.event("replica disks rolled back to the last completed execution")
    else:
        ctx.event("nothing to roll back: the replica disks hold a committed execution")
    return {"volumes_info": volumes}


def delete_snapshots(ctx: TaskContext) -> JSON:
    """The commit point of a replica execution: its writes stay, and its change-tracking
    point comes into force."""
    outcome = ctx.destination.delete_disk_snapshots(ctx.dest_conn, ctx.dest_env,
                                                    ctx.require("volumes_info"))
    return {"volumes_info": _apply_outcome(ctx, outcome)}


def deploy_instance(ctx: TaskContext) -> JSON:
    clone = (ctx.message.task_type == c.TASK_TYPE_DEPLOY_REPLICA_INSTANCE_RESOURCES
             and bool(ctx.info.get("clone_disks", True)))
    return {"instance_deployment_info": ctx.destination.deploy_instance(
        ctx.dest_conn, ctx.dest_env, ctx.require("export_info"), ctx.require("volumes_info"),
        clone_disks=clone, transfer_id=ctx.info.get("action_id"))}


def finalize(ctx: TaskContext) -> JSON:
    result = ctx.destination.finalize_instance(ctx.dest_conn, ctx.dest_env,
                                               ctx.require("instance_deployment_info"))
    ctx.event(f"instance {ctx.instance} deployed")
    return {"transfer_result": result}


def cleanup_failed_instance(ctx: TaskContext) -> JSON:
    ctx.destination.cleanup_failed_instance(ctx.dest_conn, ctx.dest_env,
                                            ctx.info.get("instance_deployment_info") or {})
    return {"instance_deployment_info": None}


def delete_disks(ctx: TaskContext) -> JSON:
    volumes = ctx.info.get("volumes_info") or []
    ctx.destination.delete_disks(ctx.dest_conn, ctx.dest_env, volumes)
    manifests = _manifests(ctx)
    for volume in volumes:
        manifests.forget(volume)
    ctx.event(f"{len(volumes)} destination disk(s) deleted")
    return {"volumes_info": []}


def deploy_os_morphing_resources(ctx: TaskContext) -> JSON:
    """A worker without libguestfs says so when the appliance would run here (no
    ``helper``), undoing what the provider just made. With an OS-morphing minion reserved
    (``task_info["osmorphing_minion"]``), the minion is the helper."""
    minion = ctx.info.get(ROLE_OSMORPHING)
    if minion:
        if not isinstance(ctx.destination, MinionOsMorphingProvider):
            raise exceptions.ProviderError(
                f"the {ctx.message.destination.platform} provider cannot morph guests on pool "
                "minions")
        ctx.event(f"the guest is morphed on minion {minion['machine_id']} of pool "
                  f"{minion['pool_id']}")
        resources = ctx.destination.minion_os_morphing_resources(
            ctx.dest_conn, ctx.dest_env, ctx.require("instance_deployment_info"), minion,
            KEY_REFS[ROLE_OSMORPHING])
    else:
        resources = ctx.destination.deploy_os_morphing_resources(
            ctx.dest_conn, ctx.dest_env, ctx.require("instance_deployment_info"))
    if not resources.get("helper"):
        try:
            appliance.load_guestfs()
        except BaseException:
            ctx.destination.delete_os_morphing_resources(ctx.dest_conn, ctx.dest_env,
                                                         resources)
            raise
    ctx.event(f"{len(resources['disks'])} disk(s) of the new instance ready for OS morphing")
    return {"os_morphing_resources": resources}


def os_morphing(ctx: TaskContext) -> JSON:
    """Open the new instance's disks in a libguestfs appliance and morph the guest for the
    destination; every change is a task event. The appliance runs on this worker, or on the
    resources' ``helper`` (a writer agent beside the disks) when they name one."""
    export_info = ctx.require("export_info")
    resources = ctx.require("os_morphing_resources")
    profile = ctx.destination.os_morphing_profile(
        ctx.dest_conn, ctx.dest_env, export_info, ctx.require("instance_deployment_info"))
    disks = [appliance.GuestDisk(d["path"], d["format"], d["name"]) for d in resources["disks"]]
    request = MorphRequest(
        disks=disks, profile=profile, instance=ctx.instance,
        source_macs=[n.get("mac_address") for n in export_info["devices"]["nics"]],
        user_scripts=ctx.info.get("user_scripts") or {})
    helper = resources.get("helper")
    if helper:
        agent = helper_address(helper, ctx.dest_conn)
        ctx.event(f"starting the libguestfs appliance on {len(disks)} disk(s) on the helper "
                  f"at {agent.url}")
        morph_on_helper(agent, job_id_for(ctx.message.task_id), request, ctx.event,
                        ctx.cancelled)
        ctx.event(f"OS morphing done on the helper at {agent.url}")
        return {}
    ctx.event(f"starting the libguestfs appliance on {len(disks)} disk(s)")
    morph_in_child(request, ctx.event, ctx.cancelled)
    ctx.event("OS morphing done")
    return {}


def delete_os_morphing_resources(ctx: TaskContext) -> JSON:
    ctx.destination.delete_os_morphing_resources(ctx.dest_conn, ctx.dest_env,
                                                 ctx.info.get("os_morphing_resources") or {})
    return {"os_morphing_resources": None}


# Task type → runner, from the table (tests/unit/test_task_types.py: every name exists).
TASK_RUNNERS: dict[str, Runner] = {
    name: globals()[row.runner] for name, row in task_types.TASK_TYPES.items()}
